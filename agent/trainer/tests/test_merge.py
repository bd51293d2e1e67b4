"""A trained adapter merged into its base: plain transformers loads it, with the adapter's eval loss and answers."""

import json
import subprocess
import sys

from conftest import TRAINER_DIR, run_config, run_trainer


def merge(model, adapter, out, *extra):
    return subprocess.run(
        [sys.executable, "-m", "tunefleet_trainer", "export-merged", "--model", model, "--adapter", adapter]
        + ["--out", str(out), *extra],
        cwd=TRAINER_DIR,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_merged_model_equals_base_plus_adapter(tiny_model, dataset, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    from tunefleet_trainer.data import prompt_of, read_jsonl, tokenize_all
    from tunefleet_trainer.evaluate import generate
    from tunefleet_trainer.modeling import load_tokenizer
    from tunefleet_trainer.recipe import evaluate_loss

    proc, events = run_trainer(run_config(tmp_path, tiny_model, *dataset, checkpoint_every=100), tmp_path)
    assert proc.returncode == 0, events[-1]
    adapter = events[-1]["adapter_path"]
    out = tmp_path / "merged"
    done = merge(tiny_model, adapter, out, "--dtype", "float32")
    assert done.returncode == 0, done.stderr[-2000:]
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in out.iterdir()}

    tok = load_tokenizer(tiny_model)
    records, fmt = read_jsonl(dataset[1])
    examples, _ = tokenize_all(records, fmt, tok, 512)
    prompts = [p for p, _ in (prompt_of(r, fmt, tok) for r in records)]
    cpu = torch.device("cpu")
    merged = AutoModelForCausalLM.from_pretrained(str(out))  # plain transformers, no PEFT
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    a = evaluate_loss(merged, examples, 4, tok.pad_token_id, cpu)
    b = evaluate_loss(peft, examples, 4, tok.pad_token_id, cpu)
    assert abs(a - b) < 1e-4, (a, b)
    assert generate(merged, tok, prompts, 6, 4, cpu) == generate(peft, tok, prompts, 6, 4, cpu)


def test_prompt_tuning_has_nothing_to_merge(tiny_model, dataset, tmp_path):
    proc, events = run_trainer(
        run_config(tmp_path, tiny_model, *dataset, method="prompt", max_steps=1, checkpoint_every=100), tmp_path
    )
    assert proc.returncode == 0, events[-1]
    done = merge(tiny_model, events[-1]["adapter_path"], tmp_path / "merged")
    assert done.returncode == 2
    error = json.loads([line for line in done.stdout.splitlines() if line.startswith("{")][-1])
    assert error["code"] == "METHOD_UNSUPPORTED" and "PROMPT_TUNING" in error["message"]
    assert not (tmp_path / "merged").exists()
