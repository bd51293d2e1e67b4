"""Step benchmark (CPU): where a training step's time and memory go, and what the chunked loss and the
compiled layers change, in the same run on the same machine.

SmolLM2-135M-Instruct (vocabulary 49,152), LoRA r=8 on every linear layer, fp32, 8 packed blocks of 512 tokens
per step (the demo's MIME-type records, whole records per block). Each configuration runs in its own fresh
process through the trainer's own setup and step (recipe._step), timed by recipe.PhaseClock: data (collate and
copy), forward (model and loss), backward, optimizer (clipping and AdamW). Peak RSS is the process's; "above
setup" is the peak minus the RSS once the model, data and optimizer are ready, i.e. what the steps added.

    $TUNEFLEET_HOME/bin/python test/bench/step_bench.py [--steps 4] [--warmup 2]
Appends its table to test/bench/RESULTS.md.
"""

import argparse
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINER = os.path.join(ROOT, "agent", "trainer")
sys.path.insert(0, TRAINER)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
HOME = os.environ.get("TUNEFLEET_HOME", os.path.expanduser("~/.tunefleet"))
MODEL = os.path.join(HOME, "models", "SmolLM2-135M-Instruct")

CONFIGS = {
    "plain": {"chunked_loss": False, "compile": False},
    "chunked": {"chunked_loss": True, "compile": False},
    "chunked+compiled": {"chunked_loss": True, "compile": True},
}


def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def measure(cfg_dict, warmup, steps):
    """Set a run up from a trainer config (dict) and time its steps phase by phase (after `warmup` steps)."""
    from tunefleet_trainer import config, events, recipe
    from tunefleet_trainer.run import setup

    events.set_sink(lambda e: None)
    run = setup(config.from_dict(cfg_dict))
    blocks = [len(b[0]) for b in run.train]
    params = [p for p in run.model.parameters() if p.requires_grad]
    stop = recipe._Stop()
    cuda = run.device.type == "cuda"
    if cuda:
        import torch

        torch.cuda.reset_peak_memory_stats()
    set_up = rss()
    t0 = time.perf_counter()
    for _ in range(warmup):  # first steps: allocator growth, and the compile when compiled
        recipe._step(run, params, stop)
        run.state.step += 1
    first = time.perf_counter() - t0
    run.clock = recipe.PhaseClock(run.device)
    t0 = time.perf_counter()
    tokens = 0
    losses = []
    for _ in range(steps):
        loss, _norm, seen, _ = recipe._step(run, params, stop)
        losses.append(loss)
        tokens += seen
        run.state.step += 1
    secs = time.perf_counter() - t0
    out = {
        "s_per_step": secs / steps,
        "tokens_per_s": tokens / secs,
        "phases": {k: v / steps for k, v in run.clock.totals.items()},
        "warmup_s": first,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "rss_set_up": set_up,
        "blocks": len(blocks),
        "block_tokens": sum(blocks) / len(blocks),
        "losses": losses,
        "compiled": run.compiled,
        "chunked": run.head is not None,
        "packing": run.packing,
        "gradient_checkpointing": run.grad_ckpt,
    }
    if cuda:
        out["peak_memory"] = torch.cuda.max_memory_allocated(run.device)
    events.set_sink(None)
    return out


def child(name, data_path, steps, warmup, seq, micro):
    cfg = {
        "model_path": MODEL,
        "train_path": data_path,
        "output_dir": tempfile.mkdtemp(prefix=f"step-bench-{name}-"),
        "method": "lora",
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "training": {
            "max_steps": warmup + steps,
            "batch_size": micro,
            "micro_batch_size": micro,
            "max_seq_len": seq,
            "precision": "fp32",
            "packing": True,
            "checkpoint_every": 10**9,
            **CONFIGS[name],
        },
    }
    print("RESULT " + json.dumps(measure(cfg, warmup, steps)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--child", choices=list(CONFIGS))
    ap.add_argument("--data")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if a.child:
        return child(a.child, a.data, a.steps, a.warmup, a.seq, a.micro)
    from trainer_bench import records, write_results

    data = os.path.join(tempfile.mkdtemp(prefix="step-bench-data-"), "train.jsonl")
    with open(data, "w") as f:
        for r in records(n=1200):
            f.write(json.dumps(r) + "\n")
    results = {}
    for name in CONFIGS:
        argv = [sys.executable, __file__, "--child", name, "--data", data]
        argv += ["--steps", str(a.steps), "--warmup", str(a.warmup), "--seq", str(a.seq), "--micro", str(a.micro)]
        p = subprocess.run(argv, capture_output=True, text=True, cwd=TRAINER, env={**os.environ, "PYTHONPATH": TRAINER})
        line = next((out for out in p.stdout.splitlines() if out.startswith("RESULT ")), None)
        if p.returncode != 0 or not line:
            sys.exit(f"{name} failed:\n{p.stderr[-3000:]}")
        results[name] = json.loads(line[7:])
        print(name, json.dumps(results[name]), flush=True)
    import peft
    import torch
    import transformers

    base = results["plain"]
    mib = 2**20
    machine = (
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}"
    )
    rows = [
        f"### Training step on CPU, {datetime.date.today()} — {machine}",
        "",
        f"SmolLM2-135M-Instruct (vocabulary 49,152), LoRA r=8 on all linear layers, fp32, {a.micro} packed blocks of "
        f"{a.seq} tokens per step (about {base['block_tokens']:.0f} tokens each: whole records), {a.steps} steps timed "
        f"after {a.warmup}; `test/bench/step_bench.py`. Phases in ms per step.",
        "",
        "| loss, layers | s/step | tokens/s | data | forward | backward | optimizer | first steps s "
        "| peak RSS MiB | above setup MiB |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results.items():
        ph = r["phases"]
        rows.append(
            f"| {name} | {r['s_per_step']:.2f} | {r['tokens_per_s']:.0f} | {ph['data'] * 1e3:.0f} "
            f"| {ph['forward'] * 1e3:.0f} | {ph['backward'] * 1e3:.0f} | {ph['optimizer'] * 1e3:.0f} "
            f"| {r['warmup_s']:.1f} | {r['peak_rss'] / mib:.0f} | {(r['peak_rss'] - r['rss_set_up']) / mib:.0f} |"
        )
    ch = results["chunked"]
    co = results["chunked+compiled"]
    drift = max(abs(x - y) / abs(y) for x, y in zip(ch["losses"], base["losses"]))
    rows += [
        "",
        f"Chunked / plain: peak RSS {ch['peak_rss'] / base['peak_rss']:.2f}x, above setup "
        f"{(ch['peak_rss'] - ch['rss_set_up']) / max(1, base['peak_rss'] - base['rss_set_up']):.2f}x, tokens/s "
        f"{ch['tokens_per_s'] / base['tokens_per_s']:.2f}x; largest relative loss difference {drift:.1e}. "
        f"Compiled / eager (chunked): tokens/s {co['tokens_per_s'] / ch['tokens_per_s']:.2f}x, first "
        f"{a.warmup} steps {co['warmup_s']:.0f} s vs {ch['warmup_s']:.0f} s.",
    ]
    table = "\n".join(rows)
    print(table)
    write_results(table)


if __name__ == "__main__":
    main()
