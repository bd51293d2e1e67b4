"""Data-parallel training (torchrun, gloo on the CPU): the same losses, checkpoints and adapter
as one process, and a checkpoint written by two processes resumes on one."""

import json
import os
import subprocess
import sys

import pytest
from conftest import TRAINER_DIR, assert_valid, run_config, run_trainer, steps


def _train(cfg, tmp_path, name, processes=1, resume_from=None):
    """One process: in this process (the trainer's own entry); several: `python -m tunefleet_trainer --processes`."""
    d = tmp_path / name
    d.mkdir()
    cfg = {**cfg, "output_dir": str(d / "out"), "lora": {"dropout": 0.0}}
    if resume_from:
        cfg["resume_from"] = resume_from
    if processes == 1:
        result, events = run_trainer(cfg, d)
        return result, events, str(d / "out")
    (d / "run.json").write_text(json.dumps(cfg))
    args = [sys.executable, "-m", "tunefleet_trainer", "train", "--config", str(d / "run.json")]
    args += ["--processes", str(processes)]
    # one CPU thread per process: two processes on a 2-core machine do not fight over cores
    env = {**os.environ, "PYTHONPATH": TRAINER_DIR, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(args, cwd=TRAINER_DIR, capture_output=True, text=True, timeout=600, env=env)
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events, str(d / "out")


def _tensors(adapter_dir):
    from safetensors.torch import load_file

    return load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))


def _max_diff(a, b):
    ta, tb = _tensors(a), _tensors(b)
    assert ta.keys() == tb.keys()
    return max(float((ta[k].float() - tb[k].float()).abs().max()) for k in ta)


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_model):
    """One process and two processes, batch 8 (micro 2: 4 micro-batches, or 2 on each of 2 processes)."""
    from conftest import EXTS, write_jsonl

    tmp = tmp_path_factory.mktemp("ddp")
    recs = [
        {"prompt": f"MIME type application/{EXTS[i % 8]} number {i} has extension", "completion": " " + EXTS[i % 8]}
        for i in range(56)
    ]
    train, evals = write_jsonl(tmp / "train.jsonl", recs[:48]), write_jsonl(tmp / "eval.jsonl", recs[48:])
    cfg = run_config(tmp, tiny_model, train, evals, micro_batch_size=2)
    return tmp, cfg, _train(cfg, tmp, "one"), _train(cfg, tmp, "two", processes=2)


def test_two_processes_train_the_same_steps_as_one(runs):
    _, _, (p1, e1, _), (p2, e2, _) = runs
    assert p1.returncode == 0, p1.stderr[-2000:]
    assert p2.returncode == 0, p2.stderr[-2000:]
    assert_valid(e2)
    # rank 0 alone speaks for the job: one started, one finished, each step once
    assert [e["type"] for e in e2].count("started") == 1
    assert [e["type"] for e in e2].count("finished") == 1
    started = next(e for e in e2 if e["type"] == "started")
    assert started["world_size"] == 2 and started["micro_batch_size"] == 2 and started["grad_accum"] == 2
    l1, l2 = [s["loss"] for s in steps(e1)], [s["loss"] for s in steps(e2)]
    assert [s["step"] for s in steps(e2)] == [1, 2, 3, 4, 5, 6]
    for a, b in zip(l1, l2):
        assert abs(a - b) <= 1e-4 * abs(a), (l1, l2)
    assert l2[-1] < l2[0]


def test_the_two_process_adapter_loads_in_stock_peft_with_the_reported_eval_loss(runs, tiny_model):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tunefleet_trainer.data import read_jsonl, tokenize_all
    from tunefleet_trainer.recipe import evaluate_loss

    _, cfg, (_, e1, out1), (_, e2, out2) = runs
    reported = [e["eval_loss"] for e in e2 if e["type"] == "eval"][-1]
    assert abs(reported - [e["eval_loss"] for e in e1 if e["type"] == "eval"][-1]) <= 1e-4 * reported
    base = AutoModelForCausalLM.from_pretrained(tiny_model, torch_dtype=torch.float32)
    model = PeftModel.from_pretrained(base, os.path.join(out2, "adapter"))
    tok = AutoTokenizer.from_pretrained(tiny_model)
    records, fmt = read_jsonl(cfg["eval_path"])
    examples, _ = tokenize_all(records, fmt, tok, 512)
    loss = evaluate_loss(model, examples, 4, tok.pad_token_id, torch.device("cpu"))
    assert abs(loss - reported) <= 1e-4 * reported
    assert _max_diff(os.path.join(out1, "adapter"), os.path.join(out2, "adapter")) < 1e-4


def test_a_checkpoint_of_two_processes_resumes_on_one_with_the_same_data_order(runs):
    tmp, cfg, (_, e1, out1), (_, e2, out2) = runs
    # the two-process run committed step 3 (checkpoint_every 3): resume it alone
    ckpt = os.path.join(out2, "checkpoints", "step-00000003")
    assert os.path.isfile(os.path.join(ckpt, "manifest.json"))
    proc, events, out = _train(cfg, tmp, "resumed", resume_from=ckpt)
    assert proc.returncode == 0, proc.stderr[-2000:]
    started = next(e for e in events if e["type"] == "started")
    assert started["resumed_from_step"] == 3 and started["world_size"] == 1
    # steps after the resume are trained once, with the uninterrupted run's losses
    assert [s["step"] for s in steps(events)] == [4, 5, 6]
    for a, b in zip([s["loss"] for s in steps(e2)][3:], [s["loss"] for s in steps(events)]):
        assert abs(a - b) <= 1e-4 * abs(a)
    assert _max_diff(os.path.join(out2, "adapter"), os.path.join(out, "adapter")) < 1e-4


def test_a_batch_that_does_not_divide_over_the_processes_is_refused(runs):
    from tunefleet_trainer import config
    from tunefleet_trainer.distributed import Dist
    from tunefleet_trainer.errors import TrainerError
    from tunefleet_trainer.run import _per_process

    tmp, cfg, _, _ = runs
    path = tmp / "odd.json"
    path.write_text(json.dumps({**cfg, "training": {**cfg["training"], "batch_size": 7, "micro_batch_size": 1}}))
    with pytest.raises(TrainerError) as e:
        _per_process(config.load(str(path)), Dist(world=2, rank=1))
    assert e.value.code == "CONFIG_INVALID"
    assert "batch_size 7 does not divide over 2" in e.value.message


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _gang(cfg, tmp_path, name, nodes=2):
    """A gang of `nodes` hosts on this machine: one launcher per node (--nnodes, static rendezvous at node 0), each
    with its own run.json and output directory, as each member's agent runs it. -> [(proc, events, out)] by rank."""
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": TRAINER_DIR, "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in range(nodes):
        d = tmp_path / f"{name}-node{rank}"
        d.mkdir()
        (d / "run.json").write_text(json.dumps({**cfg, "output_dir": str(d / "out"), "lora": {"dropout": 0.0}}))
        args = [sys.executable, "-m", "tunefleet_trainer", "train", "--config", str(d / "run.json")]
        args += ["--processes", "1", "--nnodes", str(nodes), "--node-rank", str(rank)]
        args += ["--master-addr", "127.0.0.1", "--master-port", str(port)]
        procs.append(
            (
                subprocess.Popen(
                    args, cwd=TRAINER_DIR, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
                ),
                str(d / "out"),
            )
        )
    out = []
    for p, o in procs:
        stdout, stderr = p.communicate(timeout=600)
        p.stderr_text = stderr
        out.append((p, [json.loads(line) for line in stdout.splitlines() if line.startswith("{")], o))
    return out


def test_a_gang_of_two_hosts_trains_the_steps_of_one_process_and_each_host_reports_its_steps(runs):
    tmp, cfg, (_, e1, out1), _ = runs
    (p0, e0, o0), (p1, ev1, o1) = _gang(cfg, tmp, "gang")
    assert p0.returncode == 0, p0.stderr_text[-2000:]
    assert p1.returncode == 0, p1.stderr_text[-2000:]
    assert_valid(e0)
    assert_valid(ev1)
    # rank 0 speaks for the job; node 1's first process reports its own start and steps (its agent heartbeats them)
    assert [e["type"] for e in e0].count("finished") == 1
    assert {e["type"] for e in ev1} <= {"started", "step"}, {e["type"] for e in ev1}
    assert next(e for e in e0 if e["type"] == "started")["world_size"] == 2
    l1, l0, lr1 = ([s["loss"] for s in steps(e)] for e in (e1, e0, ev1))
    assert [s["step"] for s in steps(ev1)] == [1, 2, 3, 4, 5, 6]
    for a, b, c in zip(l1, l0, lr1):
        assert abs(a - b) <= 1e-4 * abs(a), (l1, l0)
        assert b == c
    # rank 0 alone writes checkpoints and the adapter, which equals the one-process adapter
    assert not os.path.exists(os.path.join(o1, "checkpoints")) and not os.path.exists(os.path.join(o1, "adapter"))
    assert _max_diff(os.path.join(out1, "adapter"), os.path.join(o0, "adapter")) < 1e-4


def test_a_gang_without_a_rendezvous_is_refused(tmp_path):
    args = [sys.executable, "-m", "tunefleet_trainer", "train", "--config", str(tmp_path / "run.json")]
    proc = subprocess.run(
        args + ["--nnodes", "2", "--node-rank", "1"],
        cwd=TRAINER_DIR,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": TRAINER_DIR},
    )
    assert proc.returncode == 2
    error = json.loads(proc.stdout.splitlines()[-1])
    assert error["code"] == "CONFIG_INVALID" and "--master-addr" in error["message"]
