"""GGUF -> Hugging Face directory (safetensors + tokenizer), done once at bootstrap.

transformers dequantises GGUF weights on load but refuses to save a model it marks as
GGUF-quantised, so the weights are copied into a plain model built from the same config.
"""

import os

from .errors import TrainerError
from .events import log


def main(gguf, out):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not os.path.isfile(gguf):
        raise TrainerError("MODEL_MISSING", f"{gguf}: no such GGUF file")
    d, name = os.path.split(os.path.abspath(gguf))
    src = AutoModelForCausalLM.from_pretrained(d, gguf_file=name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(d, gguf_file=name)
    cfg = src.config
    if hasattr(cfg, "quantization_config"):
        del cfg.quantization_config
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.float32)
    model.load_state_dict(src.state_dict(), strict=True)
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    n = sum(p.numel() for p in model.parameters())
    log(f"converted {name}: {type(model).__name__}, {n:,} parameters -> {out}")
    return 0
