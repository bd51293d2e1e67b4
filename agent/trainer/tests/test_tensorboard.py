"""TensorBoard event files: the record framing and encoding, every step logged once across a
kill -9 and a resume elsewhere. (TensorBoard's own reader loads a finished job's files in
test/integration/tensorboard.test.ts; here a small decoder checks the bytes.)"""

import json
import os
import signal
import struct

import pytest
from conftest import run_config, run_trainer, steps, train_process
from tunefleet_trainer import tensorboard as tb


def _varint(data, i):
    shift = n = 0
    while True:
        b = data[i]
        i += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return n, i


def _fields(data):
    """(field number, wire type, value) of a protobuf message: varints, 64/32-bit as bytes, length-delimited."""
    i, out = 0, []
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == 0:
            v, i = _varint(data, i)
        elif wire == 1:
            v, i = data[i : i + 8], i + 8
        elif wire == 5:
            v, i = data[i : i + 4], i + 4
        else:
            n, i = _varint(data, i)
            v, i = data[i : i + n], i + n
        out.append((number, wire, v))
    return out


def read_events(path):
    """Every event of a file: (step, {tag: value}) or ('version', text); the CRCs checked."""
    data = open(path, "rb").read()
    i, out = 0, []
    while i < len(data):
        length = data[i : i + 8]
        (n,) = struct.unpack("<Q", length)
        assert struct.unpack("<I", data[i + 8 : i + 12])[0] == tb.masked_crc(length)
        body = data[i + 12 : i + 12 + n]
        assert struct.unpack("<I", data[i + 12 + n : i + 16 + n])[0] == tb.masked_crc(body)
        i += 16 + n
        fields = _fields(body)
        step = next((v for f, _, v in fields if f == 2), 0)
        version = next((v.decode() for f, _, v in fields if f == 3), None)
        if version:
            out.append(("version", version))
            continue
        summary = next(v for f, _, v in fields if f == 5)
        values = {}
        for _, _, value in _fields(summary):
            vf = {f: v for f, _, v in _fields(value)}
            values[vf[1].decode()] = struct.unpack("<f", vf[2])[0]
        out.append((step, values))
    return out


def read_dir(log_dir):
    """The scalar events of every file in name order (as TensorBoard reads a directory)."""
    events = []
    for name in sorted(os.listdir(log_dir)):
        assert name.startswith("events.out.tfevents.")
        file_events = read_events(os.path.join(log_dir, name))
        assert file_events[0] == ("version", "brain.Event:2")
        events += file_events[1:]
    return events


def test_crc32c_and_framing():
    assert tb.crc32c(b"123456789") == 0xE3069283  # the CRC-32C check value
    assert tb.crc32c(b"") == 0
    rec = tb.record(b"abc")
    assert len(rec) == 8 + 4 + 3 + 4 and rec[12:15] == b"abc"


def test_a_run_logs_every_step_and_each_eval(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=6, eval_every=3)
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    fin = events[-1]
    log_dir = fin["logs_path"]
    assert [f["name"] for f in fin["log_files"]] == sorted(os.listdir(log_dir))
    logged = read_dir(log_dir)
    train = [(s, v) for s, v in logged if "train/loss" in v]
    assert [s for s, _ in train] == [1, 2, 3, 4, 5, 6]
    for (_, v), e in zip(train, steps(events)):
        assert v["train/loss"] == pytest.approx(e["loss"], rel=1e-6)
        assert v["train/learning_rate"] == pytest.approx(e["lr"], rel=1e-6)
        assert v["train/grad_norm"] == pytest.approx(e["grad_norm"], rel=1e-6)
        assert set(v) == {"train/loss", "train/learning_rate", "train/grad_norm", "train/tokens_per_s", "train/epoch"}
    evals = [(s, v["eval/loss"]) for s, v in logged if "eval/loss" in v]
    reported = [e for e in events if e["type"] == "eval"]
    assert [s for s, _ in evals] == [3, 6]
    assert [v for _, v in evals] == pytest.approx([e["eval_loss"] for e in reported[:2]], rel=1e-6)
    adapter = [v for _, v in logged if "adapter/loss" in v]
    assert len(adapter) == 1 and adapter[0]["adapter/loss"] == pytest.approx(reported[-1]["eval_loss"], rel=1e-6)
    # every checkpoint carries the logs up to its step
    ckpt = next(e["path"] for e in events if e["type"] == "checkpoint" and e["step"] == 3)
    upto = read_dir(os.path.join(ckpt, tb.LOG_DIR))
    assert sorted({s for s, v in upto if "train/loss" in v}) == [1, 2, 3]


def test_after_kill9_and_a_resume_elsewhere_each_step_is_logged_once(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=8, checkpoint_every=3)
    _, full = run_trainer(dict(cfg, output_dir=str(tmp_path / "full")), tmp_path, name="full.json")
    path = tmp_path / "killed.json"
    path.write_text(json.dumps(dict(cfg, output_dir=str(tmp_path / "killed"))))
    proc = train_process(path)
    ckpt = None
    for line in proc.stdout:
        e = json.loads(line)
        if e["type"] == "step" and e["step"] == 4:  # killed after step 4 was logged; the commit is step 3
            proc.kill()
            break
        if e["type"] == "checkpoint" and e["step"] == 3:
            ckpt = e["path"]
    proc.wait(timeout=600)
    assert ckpt and proc.returncode == -signal.SIGKILL
    # on the new machine the output directory holds only the downloaded checkpoint
    _, resumed = run_trainer(
        dict(cfg, output_dir=str(tmp_path / "resumed"), resume_from=ckpt), tmp_path, name="resumed.json"
    )
    logged = read_dir(resumed[-1]["logs_path"])
    train = [(s, v["train/loss"]) for s, v in logged if "train/loss" in v]
    assert [s for s, _ in train] == list(range(1, 9))
    assert [v for _, v in train] == pytest.approx([e["loss"] for e in steps(full)], rel=1e-5)
    assert len(os.listdir(resumed[-1]["logs_path"])) == 2  # the first attempt's file, then the resumed one's


def test_values_that_are_not_finite_are_left_out(tmp_path):
    w = tb.EventWriter(str(tmp_path / "logs"))
    w.scalars(1, {"a": float("nan"), "b": None})
    assert not os.path.exists(tmp_path / "logs")  # nothing to write: no file
    w.scalars(2, {"a": float("inf"), "b": 1.5})
    w.close()
    assert read_dir(str(tmp_path / "logs")) == [(2, {"b": 1.5})]
