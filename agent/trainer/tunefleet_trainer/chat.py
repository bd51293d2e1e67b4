"""A conversation with a fine-tuned model: loaded once, then one turn per line read from stdin.

`python -m tunefleet_trainer chat --config run.json` loads the base model and the adapter as
`generate` does, says `ready`, then reads JSON lines `{"turn": N, "messages": [{"role", "content"}, ...]}`
(the whole conversation so far, ending with the user's turn; N counted from 0). Each is rendered with the
tokenizer's chat template (add_generation_prompt, as the trainer renders `messages` records) and
answered like a generate prompt: every piece of text a `token` event, the whole an `answer` event, both
with `prompt` = N. End of input ends the session (exit 0). A tokenizer without a chat template, a
malformed line and a conversation that no longer fits the context length are errors (exit 2) naming
what and the numbers.
"""

import json
import sys

from .errors import TrainerError
from .events import log
from .generate import answer, check_adapter, check_fits, context_length, with_adapter
from .modeling import check_model_dir, load_base, load_tokenizer, pick_device, pick_dtype

ROLES = ("system", "user", "assistant")


def parse_turn(line, lineno):
    """A turn line as the agent writes it: its number and messages; anything else is named."""
    where = f"chat input line {lineno}"
    try:
        turn = json.loads(line)
    except ValueError as e:
        raise TrainerError("CONFIG_INVALID", f"{where}: not JSON ({e})") from e
    if not isinstance(turn, dict) or set(turn) != {"turn", "messages"}:
        raise TrainerError("CONFIG_INVALID", f"{where}: expected an object with exactly turn and messages")
    n, msgs = turn["turn"], turn["messages"]
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise TrainerError("CONFIG_INVALID", f"{where}: turn must be a whole number >= 0")
    if not isinstance(msgs, list) or not msgs:
        raise TrainerError("CONFIG_INVALID", f"{where}: messages must be a non-empty list")
    for i, m in enumerate(msgs):
        ok = isinstance(m, dict) and set(m) == {"role", "content"} and m["role"] in ROLES
        if not ok or not isinstance(m["content"], str):
            raise TrainerError(
                "CONFIG_INVALID", f"{where}: messages[{i}] must be {{role: {'|'.join(ROLES)}, content: text}}"
            )
    if msgs[-1]["role"] != "user":
        raise TrainerError("CONFIG_INVALID", f"{where}: the last message must be the user's")
    return n, msgs


def render(tokenizer, msgs):
    """The conversation as the model sees it: the chat template's text, tokenized as training tokenizes it."""
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def main(cfg, lines=None):
    g = cfg.generation
    check_adapter(cfg)
    check_model_dir(cfg.model_path)
    tokenizer = load_tokenizer(cfg.model_path)
    if not getattr(tokenizer, "chat_template", None):
        raise TrainerError(
            "CONFIG_INVALID",
            f"the tokenizer of {cfg.model_path} has no chat template: a chat needs one (tunefleet generate "
            "takes plain prompts)",
        )
    limit = context_length(cfg.model_path)
    device = pick_device(cfg)
    dtype = pick_dtype(cfg.training.precision, device)
    base = load_base(cfg.model_path, dtype, device, "qlora" if cfg.method == "qlora" else "lora")
    model = with_adapter(cfg, base, dtype, device)
    model.eval()
    log(f"chat ready on {device} (context length {limit})")
    turns = 0
    for lineno, line in enumerate(lines if lines is not None else sys.stdin, start=1):
        if not line.strip():
            continue
        n, msgs = parse_turn(line, lineno)
        ids = render(tokenizer, msgs)
        check_fits(f"turn {n + 1}: the conversation", len(ids), g.max_new_tokens, limit)
        answer(model, tokenizer, ids, g, device, n, "tuned", g.seed + n)
        turns += 1
    log(f"chat ended after {turns} turn(s)")
    return 0
