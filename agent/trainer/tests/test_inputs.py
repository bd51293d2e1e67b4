"""Bad input gets a clear error naming what and where; the loss mask."""

from conftest import run_config, run_trainer, run_trainer_process, write_jsonl


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


def test_empty_dataset_and_missing_fields_are_named(tiny_model, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    proc, events = run_trainer(run_config(tmp_path, tiny_model, str(empty), None), tmp_path)
    assert proc.returncode == 2 and events[-1]["code"] == "DATASET_EMPTY" and "empty.jsonl" in events[-1]["message"]
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "completion": "b"}, {"prompt": "only a prompt"}])
    proc, events = run_trainer(run_config(tmp_path, tiny_model, bad, None), tmp_path)
    assert proc.returncode == 2 and events[-1]["code"] == "DATASET_INVALID" and "bad.jsonl:2" in events[-1]["message"]


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
