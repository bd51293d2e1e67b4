"""generate: answers streamed as token events, greedy equal to the evaluation's, context length refused with numbers."""

import json

from conftest import assert_valid, run_config, run_trainer


def test_generate_streams_greedy_answers_equal_to_the_evaluation(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, checkpoint_every=100)
    proc, trained = run_trainer(cfg, tmp_path, name="train.json")
    assert proc.returncode == 0, trained[-1]
    adapter = trained[-1]["adapter_path"]
    proc, evaluated = run_trainer(dict(cfg, adapter_path=adapter), tmp_path, command="evaluate", name="eval.json")
    assert proc.returncode == 0, evaluated[-1]
    rows = next(e for e in evaluated if e["type"] == "evaluation")["examples"]

    prompts = [r["prompt"] for r in rows[:3]]
    gen = dict(cfg, adapter_path=adapter, generation={"prompts": prompts, "base": True, "max_new_tokens": 4})
    proc, events = run_trainer(gen, tmp_path, command="generate", name="gen.json")
    assert proc.returncode == 0, events[-1]
    assert_valid(events)
    answers = {(e["prompt"], e["side"]): e for e in events if e["type"] == "answer"}
    assert set(answers) == {(i, s) for i in range(3) for s in ("base", "tuned")}
    for (i, side), a in answers.items():
        streamed = "".join(e["text"] for e in events if e["type"] == "token" and (e["prompt"], e["side"]) == (i, side))
        assert streamed == a["text"] and 0 < a["tokens"] <= 4
        # the evaluation cuts an answer at its first line when the reference has one line
        first = a["text"].lstrip().split("\n", 1)[0]
        assert first == rows[i][side], (i, side, a["text"], rows[i][side])
    # the base answers first, then the fine-tuned model
    sides = [e["side"] for e in events if e["type"] == "answer"]
    assert sides == ["base"] * 3 + ["tuned"] * 3


def test_a_prompt_over_the_context_length_is_refused_with_the_numbers(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=1, checkpoint_every=100)
    proc, trained = run_trainer(cfg, tmp_path, name="train.json")
    assert proc.returncode == 0
    with open(f"{tiny_model}/config.json") as f:
        limit = json.load(f)["max_position_embeddings"]
    long = " ".join(["word"] * (limit + 10))
    gen = dict(cfg, adapter_path=trained[-1]["adapter_path"], generation={"prompts": ["hi", long], "max_new_tokens": 8})
    proc, events = run_trainer(gen, tmp_path, command="generate", name="gen.json")
    assert proc.returncode == 2
    assert events[-1]["type"] == "error" and events[-1]["code"] == "CONFIG_INVALID"
    assert "prompt 2: " in events[-1]["message"] and f"context length of {limit} tokens" in events[-1]["message"]
    assert not [e for e in events if e["type"] == "token"]
