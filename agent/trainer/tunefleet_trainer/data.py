"""Records to token ids with loss masks.

Three formats, one per file: {"text"}, {"prompt", "completion"}, {"messages": [...]}.
Loss is computed only on completion / assistant tokens (labels -100 elsewhere). The
end-of-sequence token is appended to completions so the model learns where to stop.
"""

import json
from typing import Any, NamedTuple

from .errors import TrainerError

IGNORE = -100


def detect_format(record):
    if "messages" in record:
        return "messages"
    if "prompt" in record and "completion" in record:
        return "prompt_completion"
    if "text" in record:
        return "text"
    return None


def read_jsonl(path):
    records, fmt = [], None
    with open(path, "rb") as f:
        for lineno, raw in enumerate(f, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise TrainerError("DATASET_INVALID", f"{path}:{lineno}: not a JSON line ({e})") from e
            kind = detect_format(rec) if isinstance(rec, dict) else None
            if kind is None:
                raise TrainerError(
                    "DATASET_INVALID", f"{path}:{lineno}: a record needs text, prompt+completion or messages"
                )
            if fmt is None:
                fmt = kind
            elif kind != fmt:
                raise TrainerError("DATASET_INVALID", f"{path}:{lineno}: format {kind} in a {fmt} file")
            records.append(rec)
    return records, fmt


def _eos(tokenizer):
    return [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []


def prompt_of(record, fmt, tokenizer):
    """The text given to the model when generating, and the reference answer."""
    if fmt == "prompt_completion":
        return record["prompt"], record["completion"]
    if fmt == "messages":
        msgs = record["messages"]
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
        if last is None:
            return None, None
        text = tokenizer.apply_chat_template(msgs[:last], tokenize=False, add_generation_prompt=True)
        return text, msgs[last]["content"]
    return None, None


def _ids(tokenizer, text):
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode(record, fmt, tokenizer):
    """-> (input_ids, labels) before truncation."""
    if fmt == "text":
        ids = _ids(tokenizer, record["text"]) + _eos(tokenizer)
        return ids, list(ids)
    if fmt == "prompt_completion":
        p = _ids(tokenizer, record["prompt"])
        c = _ids(tokenizer, record["completion"]) + _eos(tokenizer)
        return p + c, [IGNORE] * len(p) + c
    # messages: render growing prefixes with the chat template; assistant turns carry loss
    msgs = record["messages"]
    ids, labels = [], []
    for i, m in enumerate(msgs):
        upto = tokenizer.apply_chat_template(msgs[: i + 1], tokenize=False)
        full = _ids(tokenizer, upto)
        new = full[len(ids) :]
        ids = full
        labels += list(new) if m.get("role") == "assistant" else [IGNORE] * len(new)
    return ids, labels


def tokenize_all(records, fmt, tokenizer, max_len):
    out, truncated = [], 0
    for rec in records:
        ids, labels = encode(rec, fmt, tokenizer)
        if len(ids) > max_len:
            truncated += 1
            ids, labels = ids[:max_len], labels[:max_len]
        if any(lab != IGNORE for lab in labels[1:]):
            out.append((ids, labels))
    return out, truncated


def pack(examples, max_len):
    """Whole records into blocks of at most max_len tokens, in order (a record that does not fit the
    block starts the next one; none is ever split: each is at most max_len after truncation).

    -> [(ids, labels, positions)]: positions restart at 0 with every record, which is how the model
    keeps records apart (transformers reads restarting position ids as packed sequences and gives
    each record its own causal block of attention, SDPA, FlexAttention and varlen flash attention
    alike), and the label of each record's first token is IGNORE, so the end of one record never
    predicts the start of the next: each record's loss equals its loss unpacked."""
    blocks, ids, labels, positions = [], [], [], []
    for example_ids, example_labels in examples:
        if ids and len(ids) + len(example_ids) > max_len:
            blocks.append((ids, labels, positions))
            ids, labels, positions = [], [], []
        ids.extend(example_ids)
        labels.append(IGNORE)
        labels.extend(example_labels[1:])
        positions.extend(range(len(example_ids)))
    if ids:
        blocks.append((ids, labels, positions))
    return blocks


class Batch(NamedTuple):
    """A micro-batch on its device. mask is None when nothing is padded or the batch is packed
    (then position_ids restart per record and attention stays inside each); tokens counts real
    tokens, on the host."""

    input_ids: Any
    labels: Any
    mask: Any
    position_ids: Any
    tokens: int


def collate(batch, pad_id):
    """Right-padded tensors -> (input_ids, labels, mask, position_ids or None). Packed examples
    (ids, labels, positions) get position ids; their padding continues as one more sequence of
    its own, which no real token can see (it comes after them, attention is causal)."""
    import torch

    n = max(len(example[0]) for example in batch)
    input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    packed = len(batch[0]) == 3
    position_ids = torch.arange(n).repeat(len(batch), 1) if packed else None
    for i, example in enumerate(batch):
        ids, lab = example[0], example[1]
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
        if packed:
            position_ids[i, : len(ids)] = torch.tensor(example[2])
            position_ids[i, len(ids) :] = torch.arange(n - len(ids))
    return input_ids, labels, mask, position_ids


def device_batch(batch, pad_id, device):
    """collate, then move to the device -> Batch.

    The mask is dropped when nothing is padded (equal lengths) or the batch is packed, so
    attention stays plain causal (per record when packed); tokens (not padding) is counted
    here on the host, without a sync."""
    input_ids, labels, mask, position_ids = collate(batch, pad_id)
    tokens = int(mask.sum())
    plain = tokens == mask.numel() or position_ids is not None
    return Batch(
        input_ids.to(device),
        labels.to(device),
        None if plain else mask.to(device),
        None if position_ids is None else position_ids.to(device),
        tokens,
    )


def epoch_order(n, seed, epoch):
    """The order of the n training examples in `epoch`: a pure function of (seed, epoch)."""
    import torch

    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def examples_for_step(step, batch_size, n, seed):
    """Indices of the examples optimizer step `step` (0-based) trains on: [s*B, (s+1)*B) of the epochs' orders."""
    out, orders = [], {}
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n)
        if epoch not in orders:
            orders[epoch] = epoch_order(n, seed, epoch)
        out.append(orders[epoch][i])
    return out
