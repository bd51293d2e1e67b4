"""Trainer benchmark (CPU): the tunefleet recipe against a plain Hugging Face Trainer + PEFT
script with identical settings, in the same run on the same machine.

SmolLM2-135M-Instruct, LoRA r=8 alpha=16 dropout 0.05 on every linear layer, fp32,
micro-batch 8 (records; for the packed row, blocks of whole records), no accumulation,
AdamW lr 1e-3 cosine, the same tokenised records (the demo's MIME-type prompt/completion
pairs, completion-only loss). Each side runs in its own
fresh process; tokens/s counts non-padding tokens over the steps after the warm-up ones;
peak memory is the process's peak RSS.

    $TUNEFLEET_HOME/bin/python test/bench/trainer_bench.py [--steps 20] [--warmup 3]
Appends its table to test/bench/RESULTS.md.
"""

import argparse
import datetime
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TRAINER = os.path.join(ROOT, "agent", "trainer")
sys.path.insert(0, TRAINER)
HOME = os.environ.get("TUNEFLEET_HOME", os.path.expanduser("~/.tunefleet"))
MODEL = os.path.join(HOME, "models", "SmolLM2-135M-Instruct")


def records(n=400, seed=0):
    rows = []
    with open("/etc/mime.types", encoding="utf-8") as f:
        for line in f:
            parts = line.split()
            if len(parts) >= 2 and not line.startswith("#"):
                rows.append({"prompt": f"MIME type: {parts[0]}\nFile extension:", "completion": " " + parts[1]})
    random.Random(seed).shuffle(rows)
    return rows[:n]


def write_results(table):
    """Put a table at the top of test/bench/RESULTS.md, below its title and introduction."""
    path = os.path.join(ROOT, "test", "bench", "RESULTS.md")
    head = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    title, _, rest = head.partition("\n\n")
    intro, _, rest2 = rest.partition("\n\n")
    with open(path, "w") as f:
        f.write("\n\n".join(x for x in [title, intro, table, rest2.rstrip("\n")] if x) + "\n")


def run_ours(data_path, out_dir, steps, micro, packing=False):
    from tunefleet_trainer import config, events, recipe

    seen = []
    events.set_sink(seen.append)
    cfg = config.from_dict(
        {
            "model_path": MODEL,
            "train_path": data_path,
            "output_dir": out_dir,
            "method": "lora",
            "lora": {"r": 8, "alpha": 16, "dropout": 0.05},
            "training": {
                "max_steps": steps,
                "batch_size": micro,
                "micro_batch_size": micro,
                "learning_rate": 1e-3,
                "warmup_ratio": 0.0,
                "checkpoint_every": 10**9,
                "max_seq_len": 128,
                "precision": "fp32",
                "packing": packing,
            },
        }
    )
    recipe.main(cfg)
    events.set_sink(None)
    step_times = [e["time"] for e in seen if e["type"] == "step"]
    # tokens per step: the same batches the recipe drew (its data order is a pure function of the seed)
    from tunefleet_trainer.data import examples_for_step, pack, read_jsonl, tokenize_all
    from tunefleet_trainer.modeling import load_tokenizer

    tok = load_tokenizer(MODEL)

    recs, fmt = read_jsonl(data_path)
    ex, _ = tokenize_all(recs, fmt, tok, 128)
    if packing:
        ex = pack(ex, 128)
    tokens = [sum(len(ex[i][0]) for i in examples_for_step(s, micro, len(ex), 42)) for s in range(steps)]
    return step_times, tokens


def run_hf(data_path, out_dir, steps, micro):
    import torch
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, Trainer, TrainerCallback, TrainingArguments

    tok = AutoTokenizer.from_pretrained(MODEL)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    rows = [json.loads(row) for row in open(data_path)]
    data = []
    for r in rows:  # the same encoding: prompt masked, completion + EOS learned
        p = tok(r["prompt"], add_special_tokens=False)["input_ids"]
        c = tok(r["completion"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        data.append({"input_ids": (p + c)[:128], "labels": ([-100] * len(p) + c)[:128]})
    step_tokens = []

    def collate(batch):
        n = max(len(b["input_ids"]) for b in batch)
        ids = torch.full((len(batch), n), tok.pad_token_id)
        lab = torch.full((len(batch), n), -100)
        att = torch.zeros((len(batch), n), dtype=torch.long)
        for i, b in enumerate(batch):
            ids[i, : len(b["input_ids"])] = torch.tensor(b["input_ids"])
            lab[i, : len(b["labels"])] = torch.tensor(b["labels"])
            att[i, : len(b["input_ids"])] = 1
        step_tokens.append(int(att.sum()))
        return {"input_ids": ids, "labels": lab, "attention_mask": att}

    model = AutoModelForCausalLM.from_pretrained(MODEL, dtype=torch.float32)
    model = get_peft_model(
        model,
        LoraConfig(task_type=TaskType.CAUSAL_LM, r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear"),
    )
    times = []

    class Clock(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            times.append(time.time())

    args = TrainingArguments(
        output_dir=out_dir,
        per_device_train_batch_size=micro,
        gradient_accumulation_steps=1,
        max_steps=steps,
        learning_rate=1e-3,
        lr_scheduler_type="cosine",
        warmup_steps=0,
        logging_steps=10**9,
        save_strategy="no",
        report_to="none",
        use_cpu=True,
        dataloader_num_workers=0,
        seed=42,
        remove_unused_columns=False,
    )
    Trainer(model=model, args=args, train_dataset=data, data_collator=collate, callbacks=[Clock()]).train()
    return times, step_tokens[: len(times)]


def child(which, data_path, steps, micro):
    out = tempfile.mkdtemp(prefix=f"bench-{which}-")
    if which == "hf":
        times, tokens = run_hf(data_path, out, steps, micro)
    else:
        times, tokens = run_ours(data_path, out, steps, micro, packing=which == "packed")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print("RESULT " + json.dumps({"times": times, "tokens": tokens, "peak_rss": peak}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--micro", type=int, default=8)
    ap.add_argument("--child", choices=["ours", "packed", "hf"])
    ap.add_argument("--data")
    a = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    if a.child:
        return child(a.child, a.data, a.steps, a.micro)
    data = os.path.join(tempfile.mkdtemp(prefix="bench-data-"), "train.jsonl")
    with open(data, "w") as f:
        for r in records():
            f.write(json.dumps(r) + "\n")
    results = {}
    for which in ("hf", "ours", "packed"):  # baseline first
        p = subprocess.run(
            [
                sys.executable,
                __file__,
                "--child",
                which,
                "--data",
                data,
                "--steps",
                str(a.steps),
                "--micro",
                str(a.micro),
            ],
            capture_output=True,
            text=True,
            cwd=TRAINER,
            env={**os.environ, "PYTHONPATH": TRAINER},
        )
        line = next((out for out in p.stdout.splitlines() if out.startswith("RESULT ")), None)
        if p.returncode != 0 or not line:
            sys.exit(f"{which} failed:\n{p.stderr[-3000:]}")
        r = json.loads(line[7:])
        t, tok = r["times"], r["tokens"]
        w = a.warmup
        secs = t[-1] - t[w - 1]
        results[which] = {
            "tokens_per_s": sum(tok[w:]) / secs,
            "s_per_step": secs / (len(t) - w),
            "peak_rss": r["peak_rss"],
        }
    o, h, pk = results["ours"], results["hf"], results["packed"]
    import peft
    import torch
    import transformers

    machine = (
        f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"transformers {transformers.__version__}, peft {peft.__version__}"
    )
    table = "\n".join(
        [
            f"### Trainer on CPU, {datetime.date.today()} — {machine}",
            "",
            f"SmolLM2-135M-Instruct, LoRA r=8 on all linear layers, fp32, micro-batch {a.micro}, "
            f"{a.steps} steps ({a.warmup} warm-up steps not timed), 400 MIME-type records.",
            "",
            "| run | tokens/s | s/step | peak RSS MiB |",
            "|---|---|---|---|",
            f"| HF Trainer + PEFT (baseline) | {h['tokens_per_s']:.0f} | {h['s_per_step']:.2f} "
            f"| {h['peak_rss'] / 2**20:.0f} |",
            f"| tunefleet recipe, unpacked | {o['tokens_per_s']:.0f} | {o['s_per_step']:.2f} "
            f"| {o['peak_rss'] / 2**20:.0f} |",
            f"| tunefleet recipe, packed (the default) | {pk['tokens_per_s']:.0f} | {pk['s_per_step']:.2f} "
            f"| {pk['peak_rss'] / 2**20:.0f} |",
            "",
            f"Ratio tunefleet / baseline: tokens/s {o['tokens_per_s'] / h['tokens_per_s']:.2f}x unpacked "
            "(goal >= 1.0x), "
            f"{pk['tokens_per_s'] / h['tokens_per_s']:.2f}x packed (blocks of 128 tokens of whole records: no padding, "
            f"each record attending only to itself); peak RSS {o['peak_rss'] / h['peak_rss']:.2f}x unpacked, "
            f"{pk['peak_rss'] / h['peak_rss']:.2f}x packed.",
        ]
    )
    print(table)
    write_results(table)


if __name__ == "__main__":
    main()
