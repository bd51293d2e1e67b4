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


def _answer_all(model, tokenizer, encoded, g, device, side):
    import torch

    model.eval()
    for i, ids in enumerate(encoded):
        if g.temperature > 0:
            torch.manual_seed(g.seed + i)
        sampling = {"do_sample": True, "temperature": g.temperature} if g.temperature > 0 else {"do_sample": False}
        inputs = torch.tensor([ids], device=device)
        with torch.no_grad():
            out = model.generate(
                input_ids=inputs,
                attention_mask=torch.ones_like(inputs),
                max_new_tokens=g.max_new_tokens,
                pad_token_id=tokenizer.pad_token_id,
                streamer=_streamer(tokenizer, i, side),
                **sampling,
            )
        new = out[0, inputs.shape[1] :]
        emit("answer", prompt=i, side=side, text=tokenizer.decode(new, skip_special_tokens=True), tokens=len(new))


def main(cfg):
    g = cfg.generation
    if not g.prompts:
        raise TrainerError("CONFIG_INVALID", "generate needs generation.prompts")
    if not cfg.adapter_path or not os.path.isdir(cfg.adapter_path):
        raise TrainerError("CONFIG_INVALID", f"generate needs adapter_path, a directory (got {cfg.adapter_path!r})")
    check_model_dir(cfg.model_path)
    tokenizer = load_tokenizer(cfg.model_path)
    encoded = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in g.prompts]
    limit = context_length(cfg.model_path)
    for i, ids in enumerate(encoded):
        if not ids:
            raise TrainerError("CONFIG_INVALID", f"prompt {i + 1} is empty")
        if limit is not None and len(ids) + g.max_new_tokens > limit:
            raise TrainerError(
                "CONFIG_INVALID",
                f"prompt {i + 1}: {len(ids)} tokens + max_new_tokens {g.max_new_tokens} = "
                f"{len(ids) + g.max_new_tokens}, more than the model's context length of {limit} tokens",
            )
    device = pick_device(cfg)
    dtype = pick_dtype(cfg.training.precision, device)
    model = load_base(cfg.model_path, dtype, device, "qlora" if cfg.method == "qlora" else "lora")
    if g.base:
        _answer_all(model, tokenizer, encoded, g, device, "base")
    if cfg.method == "full":
        del model
        model = load_base(cfg.adapter_path, dtype, device, "full")
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.adapter_path)
        model.to(device)
    _answer_all(model, tokenizer, encoded, g, device, "tuned")
    log(f"answered {len(encoded)} prompt(s){' with the base model beside' if g.base else ''}")
    return 0
