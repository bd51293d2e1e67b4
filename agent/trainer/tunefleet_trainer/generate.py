"""Ask a fine-tuned model (and with generation.base its base model) the prompts of a run config.

Each prompt is answered alone, token by token: every piece of text is a `token` event as it is
generated (the agent forwards them, the CLI prints them), and each finished answer an `answer`
event. Greedy (temperature 0) unless asked otherwise; sampling is seeded. The base model answers
first, then the same weights with the adapter on them, as the evaluation step does. A prompt
whose tokens and max_new_tokens do not fit the model's context length is refused with the numbers
before the model is loaded.
"""

import json
import os

from .errors import TrainerError
from .events import emit, log
from .modeling import check_model_dir, load_base, load_tokenizer, pick_device, pick_dtype


def context_length(model_path):
    with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int):
            return config[key]
    return None


def _streamer(tokenizer, prompt, side):
    from transformers import TextStreamer

    class Events(TextStreamer):
        def on_finalized_text(self, text, stream_end=False):
            if text:
                emit("token", prompt=prompt, side=side, text=text)

    return Events(tokenizer, skip_prompt=True, skip_special_tokens=True)


def answer(model, tokenizer, ids, g, device, index, side, seed):
    """Generate one answer to the token ids, each piece of text a token event, the whole an answer event."""
    import torch

    if g.temperature > 0:
        torch.manual_seed(seed)
    sampling = {"do_sample": True, "temperature": g.temperature} if g.temperature > 0 else {"do_sample": False}
    inputs = torch.tensor([ids], device=device)
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=g.max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            streamer=_streamer(tokenizer, index, side),
            **sampling,
        )
    new = out[0, inputs.shape[1] :]
    text = tokenizer.decode(new, skip_special_tokens=True)
    emit("answer", prompt=index, side=side, text=text, tokens=len(new))
    return text


def _answer_all(model, tokenizer, encoded, g, device, side):
    model.eval()
    for i, ids in enumerate(encoded):
        answer(model, tokenizer, ids, g, device, i, side, g.seed + i)


def with_adapter(cfg, model, dtype, device):
    """The fine-tuned model: the base with the adapter on it (full fine-tuning: its own weights instead)."""
    if cfg.method == "full":
        del model
        return load_base(cfg.adapter_path, dtype, device, "full")
    from peft import PeftModel

    model = PeftModel.from_pretrained(model, cfg.adapter_path)
    model.to(device)
    return model


def check_adapter(cfg):
    if not cfg.adapter_path or not os.path.isdir(cfg.adapter_path):
        raise TrainerError("CONFIG_INVALID", f"{cfg.adapter_path!r}: adapter_path must be a directory")


def check_fits(what, n, max_new_tokens, limit):
    if limit is not None and n + max_new_tokens > limit:
        raise TrainerError(
            "CONFIG_INVALID",
            f"{what}: {n} tokens + max_new_tokens {max_new_tokens} = "
            f"{n + max_new_tokens}, more than the model's context length of {limit} tokens",
        )


def main(cfg):
    g = cfg.generation
    if not g.prompts:
        raise TrainerError("CONFIG_INVALID", "generate needs generation.prompts")
    check_adapter(cfg)
    check_model_dir(cfg.model_path)
    tokenizer = load_tokenizer(cfg.model_path)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in g.prompts]
    limit = context_length(cfg.model_path)
    for i, ids in enumerate(encoded):
        if not ids:
            raise TrainerError("CONFIG_INVALID", f"prompt {i + 1} is empty")
        check_fits(f"prompt {i + 1}", len(ids), g.max_new_tokens, limit)
    device = pick_device(cfg)
    dtype = pick_dtype(cfg.training.precision, device)
    model = load_base(cfg.model_path, dtype, device, "qlora" if cfg.method == "qlora" else "lora")
    if g.base:
        _answer_all(model, tokenizer, encoded, g, device, "base")
    model = with_adapter(cfg, model, dtype, device)
    _answer_all(model, tokenizer, encoded, g, device, "tuned")
    log(f"answered {len(encoded)} prompt(s){' with the base model beside' if g.base else ''}")
    return 0
