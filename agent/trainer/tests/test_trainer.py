import json
import os
import signal
import subprocess
import sys

import pytest

from conftest import TRAINER_DIR, run_config, run_trainer, run_trainer_process, write_jsonl

SCHEMA = json.load(open(os.path.join(TRAINER_DIR, "tunefleet_trainer", "events.schema.json")))


def assert_valid(events):
    import jsonschema

    for e in events:
        jsonschema.validate(e, SCHEMA)


def steps(events):
    return [e for e in events if e["type"] == "step"]


def test_train_emits_valid_events_and_a_peft_adapter(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset)
    proc, events = run_trainer_process(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_valid(events)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished"
    assert [e["step"] for e in steps(events)] == [1, 2, 3, 4, 5, 6]
    assert [e["step"] for e in events if e["type"] == "checkpoint"] == [3, 6]
    finished = events[-1]
    names = {f["name"] for f in finished["adapter_files"]}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= names
    # stock PEFT loads what the trainer wrote
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = PeftModel.from_pretrained(base, finished["adapter_path"])
    assert sum(p.numel() for n, p in model.named_parameters() if "lora_" in n) == events[0]["trainable_params"]


def test_loss_falls_on_a_learnable_task(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=12, checkpoint_every=100)
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    losses = [e["loss"] for e in steps(events)]
    assert losses[-1] < losses[0] - 0.5


def test_first_losses_are_pinned(tiny_model, dataset, tmp_path):
    """Same tiny model, data and seed: the same first losses (guards silent recipe changes)."""
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=3, checkpoint_every=100)
    _, a = run_trainer(cfg, tmp_path, name="a.json")
    cfg["output_dir"] = str(tmp_path / "out-b")
    _, b = run_trainer(cfg, tmp_path, name="b.json")
    la, lb = [e["loss"] for e in steps(a)], [e["loss"] for e in steps(b)]
    assert la == lb
    assert 5.5 < la[0] < 7.0  # about ln(512) for a random 512-token model


def test_resume_continues_the_same_loss_trajectory(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset)
    proc, full = run_trainer(cfg, tmp_path, name="full.json")
    assert proc.returncode == 0
    ckpt = next(e["path"] for e in full if e["type"] == "checkpoint" and e["step"] == 3)
    cfg2 = dict(cfg, resume_from=ckpt, output_dir=str(tmp_path / "resumed"))
    proc, resumed = run_trainer(cfg2, tmp_path, name="resumed.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert resumed[0]["resumed_from_step"] == 3
    assert [e["step"] for e in steps(resumed)] == [4, 5, 6]
    assert [e["loss"] for e in steps(resumed)] == [e["loss"] for e in steps(full)][3:]


def test_a_tampered_checkpoint_is_refused(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset)
    _, events = run_trainer(cfg, tmp_path)
    ckpt = next(e["path"] for e in events if e["type"] == "checkpoint" and e["step"] == 3)
    with open(os.path.join(ckpt, "adapter", "adapter_model.safetensors"), "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0xFF]))
    proc, ev = run_trainer(dict(cfg, resume_from=ckpt, output_dir=str(tmp_path / "r")), tmp_path, name="r.json")
    assert proc.returncode == 2
    assert ev[-1]["type"] == "error" and ev[-1]["code"] == "CHECKPOINT_CORRUPT"
    assert "adapter_model.safetensors" in ev[-1]["message"]


def test_sigterm_checkpoints_and_exits(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=100000, checkpoint_every=100000)
    path = tmp_path / "run.json"
    path.write_text(json.dumps(cfg))
    proc = subprocess.Popen([sys.executable, "-m", "tunefleet_trainer", "train", "--config", str(path)], cwd=TRAINER_DIR,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env={**os.environ, "PYTHONPATH": TRAINER_DIR})
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "step" and events[-1]["step"] == 2:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert_valid(events)
    ck = [e for e in events if e["type"] == "checkpoint"]
    assert len(ck) == 1 and ck[0]["reason"] == "signal" and ck[0]["step"] >= 2
    assert events[-1]["type"] == "finished" and events[-1]["stopped"] == "signal"
    from tunefleet_trainer import checkpoint

    assert checkpoint.verify(ck[0]["path"])["step"] == ck[0]["step"]


def test_evaluate_compares_base_and_tuned(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=12, checkpoint_every=100)
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0
    trained_eval = next(e for e in events if e["type"] == "eval")
    cfg["adapter_path"] = events[-1]["adapter_path"]
    proc, ev = run_trainer(cfg, tmp_path, command="evaluate", name="eval.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_valid(ev)
    result = ev[-1]
    assert result["type"] == "evaluation"
    assert result["tuned"]["eval_loss"] < result["base"]["eval_loss"]
    assert result["tuned"]["eval_loss"] == pytest.approx(trained_eval["eval_loss"], rel=1e-5)
    assert result["base"]["samples"] == 8
    assert 0 <= result["tuned"]["exact_match"] <= 1


@pytest.mark.parametrize("method", ["dora", "ia3", "full"])
def test_other_methods_train(tiny_model, dataset, tmp_path, method):
    cfg = run_config(tmp_path, tiny_model, *dataset, method=method, max_steps=2, checkpoint_every=100)
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_valid(events)
    started = events[0]
    if method == "full":
        assert started["trainable_params"] == started["total_params"]
    else:
        assert 0 < started["trainable_params"] < started["total_params"]


def test_qlora_on_cpu_says_why(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, method="qlora")
    cfg["device"] = "cpu"
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 2
    assert events[-1]["code"] == "QLORA_UNAVAILABLE" and "CUDA" in events[-1]["message"]


def test_a_pickle_only_model_is_refused(dataset, tmp_path):
    model = tmp_path / "evil"
    model.mkdir()
    (model / "config.json").write_text("{}")
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    cfg = run_config(tmp_path, str(model), *dataset)
    proc, events = run_trainer_process(cfg, tmp_path)
    assert proc.returncode == 2
    assert events[-1]["code"] == "MODEL_UNSAFE" and "pickle" in events[-1]["message"]


def test_unknown_config_keys_are_refused(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset)
    cfg["training"]["learning_rat"] = 0.1
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 2
    assert "learning_rat" in events[-1]["message"] and "learning_rate" in events[-1]["message"]


def test_a_bad_record_names_file_and_line(tiny_model, tmp_path):
    train = write_jsonl(tmp_path / "t.jsonl", [{"text": "fine"}])
    with open(train, "a") as f:
        f.write("{broken\n")
    cfg = run_config(tmp_path, tiny_model, train, None)
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 2
    assert events[-1]["code"] == "DATASET_INVALID" and "t.jsonl:2" in events[-1]["message"]


def test_loss_is_only_on_the_completion(tiny_model):
    from tunefleet_trainer.data import IGNORE, encode
    from tunefleet_trainer.modeling import load_tokenizer

    tok = load_tokenizer(tiny_model)
    ids, labels = encode({"prompt": "MIME type text/plain has extension", "completion": " plain"}, "prompt_completion", tok)
    prompt_len = len(tok("MIME type text/plain has extension", add_special_tokens=False)["input_ids"])
    assert labels[:prompt_len] == [IGNORE] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert ids[-1] == tok.eos_token_id
    ids, labels = encode({"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "messages", tok)
    learned = tok.decode([i for i, l in zip(ids, labels) if l != IGNORE])
    assert "hello" in learned and "hi" not in learned.replace("hello", "")
