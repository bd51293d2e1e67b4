"""Records to token ids with loss masks.

Three formats, one per file: {"text"}, {"prompt", "completion"}, {"messages": [...]}.
Loss is computed only on completion / assistant tokens (labels -100 elsewhere). The
end-of-sequence token is appended to completions so the model learns where to stop.
"""

import json

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
    """Concatenate examples (each ends with EOS) and cut into blocks of max_len tokens.

    Labels travel with their tokens, so completion-only loss still holds inside a block.
    The last, shorter block is kept. Attention is not reset at example boundaries (the
    usual naive packing): use it for many short records, not where cross-talk matters.
    """
    ids, labels, blocks = [], [], []
    for example_ids, example_labels in examples:
        ids.extend(example_ids)
        labels.extend(example_labels)
        while len(ids) >= max_len:
            blocks.append((ids[:max_len], labels[:max_len]))
            ids, labels = ids[max_len:], labels[max_len:]
    if ids and any(lab != IGNORE for lab in labels[1:]):
        blocks.append((ids, labels))
    return blocks


def collate(batch, pad_id):
    import torch

    n = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), n), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), n), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(batch), n), dtype=torch.long)
    for i, (ids, lab) in enumerate(batch):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        labels[i, : len(lab)] = torch.tensor(lab)
        mask[i, : len(ids)] = 1
    return input_ids, labels, mask


def device_batch(batch, pad_id, device):
    """collate, then move to the device -> (input_ids, labels, mask or None, tokens).

    The mask is dropped when nothing is padded (packed blocks, equal lengths), so attention
    stays plain causal; tokens (not padding) is counted here on the host, without a sync."""
    input_ids, labels, mask = collate(batch, pad_id)
    tokens = int(mask.sum())
    full = tokens == mask.numel()
    return input_ids.to(device), labels.to(device), None if full else mask.to(device), tokens


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
