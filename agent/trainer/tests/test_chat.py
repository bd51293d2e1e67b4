"""chat: one model load, a turn per stdin line rendered with the chat template, greedy answers equal to
generate's on the same rendered conversation; bad lines and conversations over the context named."""

import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import EXTS, TRAINER_DIR, assert_valid, run_config, run_trainer, write_jsonl


def chat_process(cfg, tmp_path, turns, name="chat.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    proc = subprocess.run(
        [sys.executable, "-m", "tunefleet_trainer", "chat", "--config", str(path)],
        cwd=TRAINER_DIR,
        input="".join(t if isinstance(t, str) else json.dumps(t) + "\n" for t in turns),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": TRAINER_DIR},
    )
    return proc, [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]


def conversation(i):
    kind = ("application", "text", "image")[i % 3]
    return {
        "messages": [
            {"role": "user", "content": f"MIME type {kind}/{EXTS[i % 8]}: extension?"},
            {"role": "assistant", "content": EXTS[i % 8]},
        ]
    }


@pytest.fixture(scope="module")
def chat_cfg(tiny_model, tmp_path_factory):
    """An adapter trained on conversations (messages records), as one fine-tuned for chat is (one per module)."""
    tmp_path = tmp_path_factory.mktemp("chat")
    train = write_jsonl(tmp_path / "chat-train.jsonl", [conversation(i) for i in range(48)])
    evals = write_jsonl(tmp_path / "chat-eval.jsonl", [conversation(i) for i in range(48, 56)])
    cfg = run_config(tmp_path, tiny_model, train, evals, max_steps=6, checkpoint_every=100)
    proc, trained = run_trainer(cfg, tmp_path, name="train.json")
    assert proc.returncode == 0, trained[-1]
    return dict(cfg, adapter_path=trained[-1]["adapter_path"], generation={"max_new_tokens": 6})


def test_chat_answers_each_turn_as_generate_answers_the_rendered_conversation(tiny_model, chat_cfg, tmp_path):
    from transformers import AutoTokenizer

    cfg = chat_cfg
    first = [
        {"role": "system", "content": "Name extensions."},
        {"role": "user", "content": "MIME type text/html: extension?"},
    ]
    proc, events = chat_process(cfg, tmp_path, [{"turn": 0, "messages": first}])
    assert proc.returncode == 0, proc.stderr
    assert_valid(events)
    answers = [e for e in events if e["type"] == "answer"]
    assert [(a["prompt"], a["side"]) for a in answers] == [(0, "tuned")]
    one = answers[0]["text"]
    assert "".join(e["text"] for e in events if e["type"] == "token") == one
    assert one and 0 < answers[0]["tokens"] <= 6, (answers[0]["tokens"], proc.stderr[-2000:])

    # turn 2 carries turn 1's answer; each turn's answer is generate's answer to the rendered conversation
    second = first + [
        {"role": "assistant", "content": one},
        {"role": "user", "content": "MIME type image/png: extension?"},
    ]
    proc, events = chat_process(cfg, tmp_path, [{"turn": 0, "messages": first}, "\n", {"turn": 1, "messages": second}])
    assert proc.returncode == 0, proc.stderr
    answers = {e["prompt"]: e["text"] for e in events if e["type"] == "answer"}
    assert answers[0] == one
    tok = AutoTokenizer.from_pretrained(tiny_model)
    rendered = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in (first, second)]
    assert rendered[1].startswith(rendered[0]) and "<|im_start|>assistant\n" + one in rendered[1]
    gen = dict(cfg, generation={"prompts": rendered, "max_new_tokens": 6})
    proc, generated = run_trainer(gen, tmp_path, command="generate", name="gen.json")
    assert proc.returncode == 0, generated[-1]
    assert [e["text"] for e in generated if e["type"] == "answer"] == [answers[0], answers[1]]


def test_bad_turns_are_named():
    from tunefleet_trainer.chat import parse_turn
    from tunefleet_trainer.errors import TrainerError

    hi = [{"role": "user", "content": "hi"}]
    bad = {
        "not JSON": "nope",
        "exactly turn and messages": json.dumps({"turn": 0, "messages": hi, "extra": 1}),
        "turn must be a whole number": json.dumps({"turn": -1, "messages": hi}),
        "messages must be a non-empty list": json.dumps({"turn": 0, "messages": []}),
        "messages[0] must be": json.dumps({"turn": 0, "messages": [{"role": "robot", "content": "x"}]}),
        "the last message must be the user's": json.dumps(
            {"turn": 0, "messages": hi + [{"role": "assistant", "content": "x"}]}
        ),
    }
    for why, line in bad.items():
        with pytest.raises(TrainerError) as e:
            parse_turn(line, 7)
        assert e.value.message.startswith("chat input line 7: ") and why in e.value.message, (why, e.value.message)
    assert parse_turn(json.dumps({"turn": 3, "messages": hi}), 1) == (3, hi)


def test_a_bad_line_or_a_conversation_over_the_context_ends_the_chat_with_exit_2(tiny_model, chat_cfg, tmp_path):
    hi = [{"role": "user", "content": "hi"}]
    proc, events = chat_process(
        chat_cfg, tmp_path, [{"turn": 0, "messages": hi}, "nope\n", {"turn": 1, "messages": hi}]
    )
    assert proc.returncode == 2
    assert [e["prompt"] for e in events if e["type"] == "answer"] == [0]
    assert events[-1]["type"] == "error" and events[-1]["code"] == "CONFIG_INVALID"
    assert events[-1]["message"].startswith("chat input line 2: not JSON"), events[-1]
    with open(f"{tiny_model}/config.json") as f:
        limit = json.load(f)["max_position_embeddings"]
    long = [{"role": "user", "content": " ".join(["word"] * limit)}]
    proc, events = chat_process(chat_cfg, tmp_path, [{"turn": 0, "messages": hi}, {"turn": 1, "messages": long}])
    assert proc.returncode == 2
    assert [e["prompt"] for e in events if e["type"] == "answer"] == [0]
    msg = events[-1]["message"]
    assert msg.startswith("turn 2: the conversation: ") and f"context length of {limit} tokens" in msg, msg


def test_a_tokenizer_without_a_chat_template_is_refused(tiny_model, chat_cfg, tmp_path):
    cfg = chat_cfg
    plain = str(tmp_path / "plain")
    shutil.copytree(tiny_model, plain)
    with open(f"{plain}/tokenizer_config.json") as f:
        tc = json.load(f)
    tc.pop("chat_template", None)
    with open(f"{plain}/tokenizer_config.json", "w") as f:
        json.dump(tc, f)
    for extra in ("chat_template.jinja", "chat_template.json"):
        if os.path.exists(f"{plain}/{extra}"):
            os.remove(f"{plain}/{extra}")
    proc, events = chat_process(dict(cfg, model_path=plain), tmp_path, [])
    assert proc.returncode == 2
    assert "has no chat template" in events[-1]["message"]
