import json
import os
import subprocess
import sys

import pytest

TRAINER_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, TRAINER_DIR)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    from tunefleet_trainer import tiny

    out = str(tmp_path_factory.mktemp("tiny") / "model")
    tiny.main(out, seed=0)
    return out


EXTS = ["json", "pdf", "plain", "png", "mpeg", "html", "xml", "zip"]


def write_jsonl(path, records):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.fixture
def dataset(tmp_path):
    train = [
        {"prompt": f"MIME type application/{EXTS[i % 8]} number {i} has extension", "completion": " " + EXTS[i % 8]}
        for i in range(48)
    ]
    evals = [
        {"prompt": f"MIME type application/{EXTS[i % 8]} number {i} has extension", "completion": " " + EXTS[i % 8]}
        for i in range(48, 56)
    ]
    return write_jsonl(tmp_path / "train.jsonl", train), write_jsonl(tmp_path / "eval.jsonl", evals)


def run_config(tmp_path, model, train, evals, **training):
    cfg = {
        "model_path": model,
        "train_path": train,
        "eval_path": evals,
        "output_dir": str(tmp_path / "out"),
        "method": training.pop("method", "lora"),
        "training": {
            "max_steps": 6,
            "batch_size": 8,
            "micro_batch_size": 4,
            "learning_rate": 0.01,
            "checkpoint_every": 3,
            # these tests reason about records; packing (on by default where exact) has tests of its own
            "packing": False,
            **training,
        },
        "evaluation": {"max_new_tokens": 4},
    }
    return cfg


class Result:
    def __init__(self, returncode, stderr=""):
        self.returncode = returncode
        self.stderr = stderr


def run_trainer(cfg, tmp_path, command="train", name="run.json"):
    """Run a session in this process through the trainer's own entry (imports once: fast):
    the same config file, error mapping, events and exit codes as `python -m
    tunefleet_trainer`; stderr is kept on the result."""
    import contextlib
    import io

    from tunefleet_trainer import events
    from tunefleet_trainer.__main__ import run_session

    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    got = []
    err = io.StringIO()
    events.set_sink(got.append)
    try:
        with contextlib.redirect_stderr(err):
            code = run_session(command, str(path))
    finally:
        events.set_sink(None)
    return Result(code, err.getvalue()), got


def run_trainer_process(cfg, tmp_path, command="train", name="run.json", timeout=300):
    """Run `python -m tunefleet_trainer` as the agent does."""
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "tunefleet_trainer", command, "--config", str(path)],
        cwd=TRAINER_DIR,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "PYTHONPATH": TRAINER_DIR},
    )
    events = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    return proc, events


SCHEMA = json.load(open(os.path.join(TRAINER_DIR, "tunefleet_trainer", "events.schema.json")))


def assert_valid(events):
    import jsonschema

    for e in events:
        jsonschema.validate(e, SCHEMA)


def train_process(config_path):
    """`python -m tunefleet_trainer train` on a config file as a child process (events on its stdout, as text)."""
    return subprocess.Popen(
        [sys.executable, "-m", "tunefleet_trainer", "train", "--config", str(config_path)],
        cwd=TRAINER_DIR,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONPATH": TRAINER_DIR},
    )


def steps(events):
    return [e for e in events if e["type"] == "step"]
