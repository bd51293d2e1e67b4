"""Checkpoints and exact resume; how a session ends (SIGTERM, kill -9, its agent gone)."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import TRAINER_DIR, assert_valid, run_config, run_trainer, steps, train_process


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
    proc = train_process(path)
    events = []
    for line in proc.stdout:
        events.append(json.loads(line))
        if events[-1]["type"] == "step" and events[-1]["step"] == 2:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=600) == 0
    assert_valid(events)
    ck = [e for e in events if e["type"] == "checkpoint"]
    assert len(ck) == 1 and ck[0]["reason"] == "signal" and ck[0]["step"] >= 2
    assert events[-1]["type"] == "finished" and events[-1]["stopped"] == "signal"
    from tunefleet_trainer import checkpoint

    assert checkpoint.verify(ck[0]["path"])["step"] == ck[0]["step"]


def test_kill9_then_resume_is_exact_and_gives_the_same_adapter(tiny_model, dataset, tmp_path):
    from safetensors.torch import load_file

    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=8, checkpoint_every=3)
    _, full = run_trainer(dict(cfg, output_dir=str(tmp_path / "full")), tmp_path, name="full.json")
    path = tmp_path / "killed.json"
    path.write_text(json.dumps(dict(cfg, output_dir=str(tmp_path / "killed"))))
    proc = train_process(path)
    ckpt = None
    for line in proc.stdout:
        e = json.loads(line)
        if e["type"] == "checkpoint" and e["step"] == 3:
            ckpt = e["path"]
            proc.kill()  # SIGKILL: no chance to clean up
            break
    proc.wait(timeout=600)
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
        # generous deadlines: `npm test` runs this suite at low CPU priority beside the others
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if pid_file.exists() and pid_file.read_text():
                break
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _alive(child)
        parent.kill()
        parent.wait()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
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
        timeout=600,
    )
    assert r.returncode == 1 and "ran" not in r.stdout
    assert "is gone" in r.stderr


def test_a_paused_run_resumes_as_if_never_paused(tiny_model, dataset, tmp_path):
    """pause_at (a sweep's rung): checkpoint, eval, exit 0 without an adapter; resumed (and paused again) from that
    checkpoint, every later step's loss equals an uninterrupted run's and so does the adapter's eval loss."""
    cfg = run_config(tmp_path, tiny_model, *dataset, checkpoint_every=2)
    proc, full = run_trainer(cfg, tmp_path, name="full.json")
    assert proc.returncode == 0
    losses = [e["loss"] for e in steps(full)]

    proc, first = run_trainer(dict(cfg, pause_at=3, output_dir=str(tmp_path / "a")), tmp_path, name="a.json")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert_valid(first)
    assert [e["loss"] for e in steps(first)] == losses[:3]
    # the interval checkpoint at step 2, then the pause's at 3; no adapter
    assert [(e["step"], e["reason"]) for e in first if e["type"] == "checkpoint"] == [(2, "interval"), (3, "pause")]
    paused = first[-1]
    assert paused["type"] == "paused" and paused["step"] == 3 and paused["steps_total"] == 6
    assert [e["eval_loss"] for e in first if e["type"] == "eval"] == [paused["eval_loss"]]
    assert not [e for e in first if e["type"] == "finished"]
    pause3 = next(e["path"] for e in first if e["type"] == "checkpoint" and e["step"] == 3)

    # promoted to the next rung (5), then to the end
    second_cfg = dict(cfg, resume_from=pause3, pause_at=5, output_dir=str(tmp_path / "b"))
    proc, second = run_trainer(second_cfg, tmp_path, name="b.json")
    assert proc.returncode == 0 and second[-1]["type"] == "paused" and second[-1]["step"] == 5
    pause5 = next(e["path"] for e in second if e["type"] == "checkpoint" and e["reason"] == "pause")
    proc, last = run_trainer(dict(cfg, resume_from=pause5, output_dir=str(tmp_path / "c")), tmp_path, name="c.json")
    assert proc.returncode == 0 and last[-1]["type"] == "finished"
    resumed = [e["loss"] for e in steps(second)] + [e["loss"] for e in steps(last)]
    assert [e["step"] for e in steps(second) + steps(last)] == [4, 5, 6]
    for got, want in zip(resumed, losses[3:]):
        assert abs(got - want) < 1e-4, (resumed, losses)
    final = [e["eval_loss"] for e in full if e["type"] == "eval"][-1]
    assert abs([e["eval_loss"] for e in last if e["type"] == "eval"][-1] - final) < 1e-4
    # a pause at or past the last step is no pause
    proc, whole = run_trainer(dict(cfg, pause_at=6, output_dir=str(tmp_path / "d")), tmp_path, name="d.json")
    assert proc.returncode == 0 and whole[-1]["type"] == "finished"
