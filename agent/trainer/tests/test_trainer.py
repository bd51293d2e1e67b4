import json
import os
import signal
import subprocess
import sys
import time

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


# The tiny model's first three losses with the fixtures' data and seed, recorded on
# 2026-12-02 on x86_64 CPUs (fp32, torch 2.15.0+cu132, transformers 5.23.0, peft 0.21.2).
# They hold to PINNED_TOLERANCE there; another CPU family or torch version may differ in
# the last digits, a change to the recipe (data order, loss, optimizer, init) by far more.
PINNED_FIRST_LOSSES = [6.3143310546875, 6.1340224807326855, 6.000233369715073]
PINNED_TOLERANCE = 1e-3


def test_first_losses_are_pinned(tiny_model, dataset, tmp_path):
    """Same tiny model, data and seed: the recorded first losses, and two runs agree exactly."""
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=3, checkpoint_every=100)
    _, a = run_trainer(cfg, tmp_path, name="a.json")
    cfg["output_dir"] = str(tmp_path / "out-b")
    _, b = run_trainer(cfg, tmp_path, name="b.json")
    la, lb = [e["loss"] for e in steps(a)], [e["loss"] for e in steps(b)]
    assert la == lb
    assert la == pytest.approx(PINNED_FIRST_LOSSES, abs=PINNED_TOLERANCE), la


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
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunefleet_trainer", "train", "--config", str(path)],
        cwd=TRAINER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": TRAINER_DIR},
    )
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
    assert 0 <= result["tuned"]["bleu"] <= 100 and 0 <= result["tuned"]["rouge_l"] <= 1
    assert result["base"]["bleu"] is not None
    # every generation is written out for the agent's judge, tool scorer and review export
    rows = [json.loads(line) for line in open(result["outputs_path"], encoding="utf-8")]
    assert len(rows) == result["outputs"] > 0
    assert set(rows[0]) == {"prompt", "reference", "base", "tuned"}
    assert [r["prompt"] for r in rows[: len(result["examples"])]] == [e["prompt"] for e in result["examples"]]


METHOD_LR = {"lora": 0.01, "dora": 0.01, "ia3": 0.05, "prefix": 0.05, "prompt": 0.1, "adapter": 0.05, "full": 0.002}


@pytest.mark.parametrize("method", list(METHOD_LR))
def test_every_method_lowers_the_loss_and_loads_in_stock_peft(tiny_model, dataset, tmp_path, method):
    cfg = run_config(
        tmp_path,
        tiny_model,
        *dataset,
        method=method,
        max_steps=10,
        checkpoint_every=100,
        learning_rate=METHOD_LR[method],
    )
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    assert_valid(events)
    started = events[0]
    losses = [e["loss"] for e in steps(events)]
    assert losses[-1] < losses[0], losses
    adapter = events[-1]["adapter_path"]
    from transformers import AutoModelForCausalLM

    if method == "full":
        assert started["trainable_params"] == started["total_params"]
        AutoModelForCausalLM.from_pretrained(adapter)
        return
    assert 0 < started["trainable_params"] < started["total_params"]
    from peft import PeftModel
    from safetensors.torch import load_file

    # what PEFT saved is exactly what was trained, and it equals the reported count
    saved = load_file(os.path.join(adapter, "adapter_model.safetensors"))
    assert sum(t.numel() for t in saved.values()) == started["trainable_params"]
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), adapter)
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor([[5, 6, 7]]))
    assert out.logits.shape[-1] == 512


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
    ids, labels = encode(
        {"prompt": "MIME type text/plain has extension", "completion": " plain"}, "prompt_completion", tok
    )
    prompt_len = len(tok("MIME type text/plain has extension", add_special_tokens=False)["input_ids"])
    assert labels[:prompt_len] == [IGNORE] * prompt_len
    assert labels[prompt_len:] == ids[prompt_len:]
    assert ids[-1] == tok.eos_token_id
    ids, labels = encode(
        {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}, "messages", tok
    )
    learned = tok.decode([i for i, lab in zip(ids, labels) if lab != IGNORE])
    assert "hello" in learned and "hi" not in learned.replace("hello", "")


def test_kill9_then_resume_is_exact_and_gives_the_same_adapter(tiny_model, dataset, tmp_path):
    from safetensors.torch import load_file

    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=8, checkpoint_every=3)
    _, full = run_trainer(dict(cfg, output_dir=str(tmp_path / "full")), tmp_path, name="full.json")
    path = tmp_path / "killed.json"
    path.write_text(json.dumps(dict(cfg, output_dir=str(tmp_path / "killed"))))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tunefleet_trainer", "train", "--config", str(path)],
        cwd=TRAINER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": TRAINER_DIR},
    )
    ckpt = None
    for line in proc.stdout:
        e = json.loads(line)
        if e["type"] == "checkpoint" and e["step"] == 3:
            ckpt = e["path"]
            proc.kill()  # SIGKILL: no chance to clean up
            break
    proc.wait(timeout=60)
    assert ckpt and proc.returncode == -signal.SIGKILL
    _, resumed = run_trainer(
        dict(cfg, output_dir=str(tmp_path / "resumed"), resume_from=ckpt), tmp_path, name="resumed.json"
    )
    a = [e["loss"] for e in steps(full)][3:]
    b = [e["loss"] for e in steps(resumed)]
    assert [e["step"] for e in steps(resumed)] == [4, 5, 6, 7, 8]
    assert b == pytest.approx(a, abs=1e-6)
    wa = load_file(os.path.join(full[-1]["adapter_path"], "adapter_model.safetensors"))
    wb = load_file(os.path.join(resumed[-1]["adapter_path"], "adapter_model.safetensors"))
    assert wa.keys() == wb.keys()
    for k in wa:
        assert (wa[k] - wb[k]).abs().max().item() <= 1e-6, k


def test_periodic_eval_exports_the_best_adapter(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=12, checkpoint_every=100, eval_every=3)
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    assert_valid(events)
    evals = [e for e in events if e["type"] == "eval"]
    tracked = evals[:-1]  # the last one reports the exported adapter
    assert [e["step"] for e in tracked] == [3, 6, 9, 12]
    best = min(tracked, key=lambda e: e["eval_loss"])
    assert events[-1]["best_step"] == best["step"]
    assert evals[-1]["eval_loss"] == pytest.approx(best["eval_loss"], rel=1e-6)


def test_early_stopping_stops_after_patience(tiny_model, dataset, tmp_path):
    # a learning rate far too high: the eval loss soon stops improving
    cfg = run_config(
        tmp_path, tiny_model, *dataset, max_steps=60, checkpoint_every=100, eval_every=1, patience=2, learning_rate=3.0
    )
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    fin = events[-1]
    assert fin["stopped"] == "early" and fin["step"] < 60
    tracked = [e for e in events if e["type"] == "eval"][:-1]
    best_i = min(range(len(tracked)), key=lambda i: tracked[i]["eval_loss"])
    assert len(tracked) - 1 - best_i == 2  # exactly `patience` evaluations after the best
    assert fin["best_step"] == tracked[best_i]["step"]


def test_packing_fills_blocks(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=2, checkpoint_every=100, packing=True, max_seq_len=64)
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    assert events[0]["train_records"] < 48
    assert any("packed into" in e.get("message", "") for e in events if e["type"] == "log")


def test_micro_batch_is_chosen_from_free_memory(tiny_model, dataset, tmp_path):
    cfg = run_config(
        tmp_path, tiny_model, *dataset, max_steps=1, checkpoint_every=100, micro_batch_size=None, batch_size=16
    )
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    assert events[0]["micro_batch_size"] == 16 and events[0]["grad_accum"] == 1  # a tiny model fits whole
    from tunefleet_trainer.modeling import auto_micro_batch

    class Cfg:
        num_hidden_layers, hidden_size, vocab_size = 32, 4096, 32000

    m, per_seq = auto_micro_batch(Cfg, 2048, 32, 24 * 2**30, 2, False)
    assert per_seq == (32 * 4096 * 34 * 2 + 32000 * 12) * 2048
    assert m == 1  # a 7B-shaped model at 2k tokens without checkpointing: one sequence at a time
    m2, _ = auto_micro_batch(Cfg, 2048, 32, 24 * 2**30, 2, True)
    assert m2 > m


def test_empty_dataset_and_missing_fields_are_named(tiny_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc, events = run_trainer(run_config(tmp_path, tiny_model, str(empty), None), tmp_path)
    assert proc.returncode == 2 and events[-1]["code"] == "DATASET_EMPTY" and "empty.jsonl" in events[-1]["message"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "only a prompt"}])
    proc, events = run_trainer(run_config(tmp_path, tiny_model, bad, None), tmp_path)
    assert proc.returncode == 2 and events[-1]["code"] == "DATASET_INVALID" and "bad.jsonl:2" in events[-1]["message"]


def test_adamw_8bit_on_cpu_says_why(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, optimizer="adamw_8bit")
    cfg["device"] = "cpu"
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 2 and events[-1]["code"] == "OPTIMIZER_UNAVAILABLE" and "CUDA" in events[-1]["message"]


def test_out_of_memory_is_an_event_with_the_numbers(tiny_model, dataset, tmp_path, monkeypatch):
    import torch
    from tunefleet_trainer import recipe

    calls = {"n": 0}
    real = recipe.batch_loss

    def flaky(*args):
        calls["n"] += 1
        if calls["n"] == 3:  # the third micro-batch: step 2
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(*args)

    monkeypatch.setattr(recipe, "batch_loss", flaky)
    proc, events = run_trainer(run_config(tmp_path, tiny_model, *dataset), tmp_path)
    assert proc.returncode == 3
    assert_valid(events)
    oom = events[-1]
    assert oom["type"] == "oom" and oom["step"] == 2 and oom["micro_batch_size"] == 4
    assert oom["sequence_length"] > 0 and oom["memory_free"] > 0


def test_gradient_checkpointing_gives_the_same_losses(tiny_model, dataset, tmp_path):
    base = run_config(tmp_path, tiny_model, *dataset, max_steps=3, checkpoint_every=100)
    _, a = run_trainer(dict(base, output_dir=str(tmp_path / "a")), tmp_path, name="a.json")
    gc_cfg = json.loads(json.dumps(base))
    gc_cfg["training"]["gradient_checkpointing"] = True
    gc_cfg["output_dir"] = str(tmp_path / "b")
    proc, b = run_trainer(gc_cfg, tmp_path, name="b.json")
    assert proc.returncode == 0, b[-1]
    assert [e["loss"] for e in steps(b)] == pytest.approx([e["loss"] for e in steps(a)], abs=1e-5)


@pytest.mark.parametrize("method", ["dora", "ia3", "prefix", "prompt", "adapter", "full"])
def test_evaluate_works_for_every_method(tiny_model, dataset, tmp_path, method):
    cfg = run_config(
        tmp_path,
        tiny_model,
        *dataset,
        method=method,
        max_steps=3,
        checkpoint_every=100,
        learning_rate=METHOD_LR[method],
    )
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    trained_eval = [e for e in events if e["type"] == "eval"][-1]
    cfg["adapter_path"] = events[-1]["adapter_path"]
    proc, ev = run_trainer(cfg, tmp_path, command="evaluate", name="eval.json")
    assert proc.returncode == 0, ev[-1]
    assert_valid(ev)
    result = ev[-1]
    assert result["type"] == "evaluation"
    assert result["tuned"]["eval_loss"] == pytest.approx(trained_eval["eval_loss"], rel=1e-4)
    assert len(result["examples"]) == 8


def _cuda():
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(not _cuda(), reason="needs a CUDA GPU (runs on the GPU machine: test/bench/gpu_device_run.sh)")
def test_qlora_with_8bit_adamw_trains_on_cuda_and_loads_in_stock_peft(tiny_model, dataset, tmp_path):
    cfg = run_config(
        tmp_path,
        tiny_model,
        *dataset,
        method="qlora",
        max_steps=10,
        checkpoint_every=5,
        learning_rate=0.01,
        optimizer="adamw_8bit",
    )
    cfg["device"] = "cuda"
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    assert_valid(events)
    assert events[0]["device"].startswith("cuda")
    losses = [e["loss"] for e in steps(events)]
    assert losses[-1] < losses[0], losses
    assert events[-1]["peak_memory"] > 0
    # resume from the step-5 checkpoint reproduces steps 6-10 (bitsandbytes kernels on CUDA: close, not bit-equal)
    ckpt = next(e["path"] for e in events if e["type"] == "checkpoint" and e["step"] == 5)
    proc, resumed = run_trainer(
        dict(cfg, resume_from=ckpt, output_dir=str(tmp_path / "resumed")), tmp_path, name="resumed.json"
    )
    assert proc.returncode == 0, resumed[-1]
    assert [e["step"] for e in steps(resumed)] == [6, 7, 8, 9, 10]
    for a, b in zip([e["loss"] for e in steps(resumed)], losses[5:]):
        assert abs(a - b) < 1e-3, (a, b)
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model), events[-1]["adapter_path"])


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_a_session_dies_with_its_agent(tmp_path):
    # an "agent" process starts a session that binds itself to it, then the agent is killed -9
    pid_file = tmp_path / "session.pid"
    session = (
        "import os, sys, time; from tunefleet_trainer.__main__ import die_with_agent; "
        f"assert die_with_agent(); open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(120)"
    )
    agent = (
        "import os, subprocess, sys, time; "
        f"subprocess.Popen([sys.executable, '-c', {session!r}], "
        f"env={{**os.environ, 'TUNEFLEET_AGENT_PID': str(os.getpid())}}); "
        "time.sleep(120)"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", agent], cwd=TRAINER_DIR, env={**os.environ, "PYTHONPATH": TRAINER_DIR}
    )
    try:
        for _ in range(300):
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.kill()
        parent.wait()
        for _ in range(100):
            if not _alive(child):
                break
            time.sleep(0.05)
        assert not _alive(child), "the session outlived its agent"
    finally:
        parent.kill()
        if pid_file.exists() and pid_file.read_text():
            try:
                os.kill(int(pid_file.read_text()), signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_session_whose_agent_is_already_gone_exits(tmp_path):
    r = subprocess.run(
        [sys.executable, "-c", "from tunefleet_trainer.__main__ import die_with_agent; die_with_agent(); print('ran')"],
        cwd=TRAINER_DIR,
        env={**os.environ, "PYTHONPATH": TRAINER_DIR, "TUNEFLEET_AGENT_PID": "1"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 1 and "ran" not in r.stdout
    assert "is gone" in r.stderr
