"""A registered adapter merged into its base model: one plain transformers model directory.

`python -m tunefleet_trainer export-merged --model BASE --adapter ADAPTER --out DIR [--dtype auto|float32|...]`
loads the base in fp32 on the CPU, applies the adapter, folds its weights into the base's (PEFT's
merge_and_unload) and writes safetensors, config and tokenizer to DIR. `auto` keeps the base's own
stored dtype; float32 keeps the merged weights exact (the adapter's eval loss to float rounding),
a 16-bit dtype rounds them. Methods without weights to fold (prompt and prefix tuning, LLaMA-Adapter)
are refused: their virtual tokens exist only with PEFT.
"""

import json
import os
import shutil

from .errors import TrainerError
from .events import log
from .modeling import check_model_dir, load_tokenizer

MERGEABLE = ("LORA", "IA3")
DTYPES = ("auto", "float32", "bfloat16", "float16")


def export_merged(model_path, adapter_path, out, dtype="auto"):
    import torch
    from peft import PeftConfig, PeftModel
    from transformers import AutoModelForCausalLM

    if dtype not in DTYPES:
        raise TrainerError("CONFIG_INVALID", f"--dtype {dtype}: one of {', '.join(DTYPES)}")
    if os.path.exists(out):
        raise TrainerError("CONFIG_INVALID", f"{out} already exists")
    check_model_dir(model_path)
    try:
        pc = PeftConfig.from_pretrained(adapter_path)
    except (OSError, ValueError) as e:
        raise TrainerError("CONFIG_INVALID", f"{adapter_path}: not a PEFT adapter ({e})") from e
    kind = str(getattr(pc.peft_type, "value", pc.peft_type))
    if kind not in MERGEABLE:
        raise TrainerError(
            "METHOD_UNSUPPORTED",
            f"a {kind} adapter has no weights to merge into the base (its virtual tokens exist only with PEFT); "
            "use the adapter as it is",
        )
    with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
        config = json.load(f)
    stored = config.get("torch_dtype") or config.get("dtype")
    name = dtype if dtype != "auto" else stored if stored in DTYPES[1:] else "float32"
    target = getattr(torch, name)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, use_safetensors=True)
    try:
        model = PeftModel.from_pretrained(base, adapter_path)
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainerError("CONFIG_INVALID", f"{adapter_path}: does not load on {model_path}: {e}") from e
    merged = model.merge_and_unload()
    merged.to(target)
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp, safe_serialization=True)
    load_tokenizer(model_path).save_pretrained(tmp)
    os.rename(tmp, out)
    files = sorted(os.listdir(out))
    size = sum(os.path.getsize(os.path.join(out, n)) for n in files)
    log(f"merged the {kind} adapter into {model_path}: {out}, {len(files)} files, {size / 2**20:.1f} MiB, {name}")
    return 0
