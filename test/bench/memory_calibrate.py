"""Measure the trainer's peak GPU memory for a grid of jobs, to calibrate shared/memory.ts.

    python test/bench/memory_calibrate.py [--out DIR]      # on an NVIDIA host (a few minutes)
    python test/bench/memory_calibrate.py --cpu-smoke      # checks the script itself

For each row: two Llama-shaped models with random weights (SmolLM2-135M's shape and a
1.1B shape), a method, micro-batch, sequence length (packed, so every sequence is full),
gradient checkpointing on or off; 4 optimizer steps through the real recipe. Writes
memory-calibration.json: the model's config, the job's settings, the trainer's reported
peak (torch.cuda.max_memory_allocated) and the allocator's peak reservation. The
TypeScript benchmark test/bench/memory.bench.ts compares shared/memory.ts with it.
"""

import argparse
import json
import os
import random
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "agent", "trainer"))

SHAPES = {
    "smollm2-135m": dict(
        vocab_size=49152,
        hidden_size=576,
        intermediate_size=1536,
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        tie_word_embeddings=True,
    ),
    "llama-1.1b": dict(
        vocab_size=32000,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        tie_word_embeddings=False,
    ),
}
# (shape, method, micro, seq, gradient checkpointing, optimizer[, chunked loss: default True]); the trainer's other
# choices are its defaults (on CUDA: compiled layers, FlexAttention for packed blocks)
GRID = [
    # each plain-loss row beside its chunked-loss twin first: the chunked loss's saving at a 49k and a 32k vocabulary
    ("smollm2-135m", "lora", 8, 1024, False, "adamw", False),
    ("smollm2-135m", "lora", 8, 1024, False, "adamw"),
    ("llama-1.1b", "lora", 4, 1024, False, "adamw", False),
    ("llama-1.1b", "lora", 4, 1024, False, "adamw"),
    ("smollm2-135m", "lora", 4, 512, False, "adamw"),
    ("smollm2-135m", "lora", 8, 1024, True, "adamw"),
    ("smollm2-135m", "qlora", 8, 1024, False, "adamw"),
    ("smollm2-135m", "full", 4, 512, False, "adamw"),
    ("llama-1.1b", "lora", 8, 1024, True, "adamw"),
    ("llama-1.1b", "lora", 2, 2048, False, "adamw"),
    ("llama-1.1b", "qlora", 4, 1024, False, "adamw"),
    ("llama-1.1b", "qlora", 8, 1024, True, "adamw"),
    ("llama-1.1b", "full", 2, 512, False, "adamw"),
    ("llama-1.1b", "full", 2, 512, False, "adamw_8bit"),
]


def make_model(out, shape, smoke):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from tunefleet_trainer import tiny

    tiny.main(out)  # tokenizer (512 tokens) and a tiny model, replaced below
    kw = dict(SHAPES[shape], max_position_embeddings=4096)
    if smoke:
        kw.update(
            hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2
        )
    torch.manual_seed(0)
    LlamaForCausalLM(LlamaConfig(**kw)).to(torch.float32 if smoke else torch.bfloat16).save_pretrained(
        out, safe_serialization=True
    )
    return kw


def make_data(path, n):
    rnd = random.Random(0)
    words = "the a of to and in is it you that he was for on are with as his they be at one have this from".split()
    with open(path, "w") as f:
        for _ in range(n):
            f.write(json.dumps({"text": " ".join(rnd.choice(words) for _ in range(200))}) + "\n")


def run(model_dir, data, out, method, micro, seq, gc, optimizer, smoke, chunked=True):
    import torch
    from tunefleet_trainer import config, events, recipe

    seen = []
    events.set_sink(seen.append)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    cfg = config.from_dict(
        {
            "model_path": model_dir,
            "train_path": data,
            "output_dir": out,
            "method": method,
            "device": "cpu" if smoke else "cuda",
            "lora": {"r": 16, "alpha": 32, "dropout": 0.0},
            "training": {
                "max_steps": 4,
                "batch_size": micro,
                "micro_batch_size": micro,
                "learning_rate": 1e-4,
                "warmup_ratio": 0.0,
                "checkpoint_every": 100,
                "max_seq_len": seq,
                "packing": True,
                "gradient_checkpointing": gc,
                "optimizer": optimizer,
                "chunked_loss": chunked,
                "precision": "fp32" if smoke else "bf16",
            },
        }
    )
    code = recipe.main(cfg)
    events.set_sink(None)
    fin = seen[-1]
    row = {
        "exit": code,
        "trainable_params": seen[0].get("trainable_params"),
        "total_params": seen[0].get("total_params"),
        "peak_allocated": fin.get("peak_memory"),
        "event": fin["type"],
    }
    if torch.cuda.is_available():
        row["peak_reserved"] = int(torch.cuda.max_memory_reserved())
    if code != 0:
        row["error"] = fin
    return row


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=os.environ.get("OUT", "."))
    ap.add_argument("--cpu-smoke", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch

    if not a.cpu_smoke and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run on an NVIDIA host, or use --cpu-smoke to check the script")
    work = tempfile.mkdtemp(prefix="mem-cal-")
    data = os.path.join(work, "data.jsonl")
    make_data(data, 200 if a.cpu_smoke else 2000)
    grid = [g for g in GRID if g[5] == "adamw" and g[1] != "qlora"][1:3] if a.cpu_smoke else GRID
    models, rows = {}, []
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (smoke)"
    for i, (shape, method, micro, seq, gc, opt, *rest) in enumerate(grid):
        chunked = rest[0] if rest else True
        if shape not in models:
            models[shape] = (os.path.join(work, shape), make_model(os.path.join(work, shape), shape, a.cpu_smoke))
        model_dir, kw = models[shape]
        r = run(
            model_dir,
            data,
            os.path.join(work, f"run{i}"),
            method,
            micro,
            64 if a.cpu_smoke else seq,
            gc,
            opt,
            a.cpu_smoke,
            chunked,
        )
        row = {
            "shape": shape,
            "model": kw,
            "method": method,
            "precision": "fp32" if a.cpu_smoke else "bf16",
            "micro_batch_size": micro,
            "seq_len": 64 if a.cpu_smoke else seq,
            "gradient_checkpointing": gc,
            "optimizer": opt,
            "chunked_loss": chunked,
            "lora_r": 16,
            **r,
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
        # written after every row, so a run stopped by its time limit still leaves what it measured
        with open(os.path.join(a.out, "memory-calibration.json"), "w") as f:
            json.dump({"device": device, "torch": torch.__version__, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
