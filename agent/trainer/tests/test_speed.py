"""What makes a step cheaper must not change what it computes: packing without cross-talk, the chunked loss,
compiled layers."""

import json
import sys

import pytest
from conftest import run_config, run_trainer, steps
from tunefleet_trainer.data import IGNORE, device_batch, pack, read_jsonl, tokenize_all


def _model_and_examples(tiny_model, train):
    import torch
    from transformers import AutoModelForCausalLM
    from tunefleet_trainer.modeling import load_tokenizer

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    tok = load_tokenizer(tiny_model)
    records, fmt = read_jsonl(train)
    examples, _ = tokenize_all(records, fmt, tok, 512)
    return model, tok, examples


def _only(block, k):
    """The packed block with labels kept only on its k-th record."""
    ids, labels, positions = block
    starts = [i for i, p in enumerate(positions) if p == 0] + [len(ids)]
    a, b = starts[k], starts[k + 1]
    return ids, [lab if a <= i < b else IGNORE for i, lab in enumerate(labels)], positions


@pytest.mark.parametrize("chunked", [False, True])
def test_each_packed_record_has_its_unpacked_loss(tiny_model, dataset, chunked):
    import torch
    from tunefleet_trainer.modeling import batch_loss, keeps_records_apart, loss_head

    model, tok, examples = _model_and_examples(tiny_model, dataset[0])
    cpu = torch.device("cpu")
    assert keeps_records_apart(model, cpu)
    head = loss_head(model, cpu) if chunked else None
    assert (head is not None) == chunked
    blocks = pack(examples, 64)
    assert len(blocks) < len(examples) and all(len(b[0]) <= 64 for b in blocks)
    assert sum(b[2].count(0) for b in blocks) == len(examples)  # whole records, each once
    checked = 0
    with torch.no_grad():
        # two blocks of different lengths in one batch: the shorter is padded, padding must not matter either
        batch = blocks[:2]
        for row in range(2):
            for k in range(batch[row][2].count(0)):
                masked = [_only(b, k) if r == row else (b[0], [IGNORE] * len(b[1]), b[2]) for r, b in enumerate(batch)]
                packed = float(batch_loss(model, device_batch(masked, tok.pad_token_id, cpu), None, head))
                alone = float(batch_loss(model, device_batch([examples[checked]], tok.pad_token_id, cpu), None, head))
                assert packed == pytest.approx(alone, rel=1e-5, abs=1e-6), (row, k)
                checked += 1
    assert checked == sum(b[2].count(0) for b in batch) and checked >= 4


def test_flex_attention_keeps_packed_records_apart(tiny_model, dataset, tmp_path):
    """The CUDA default for packed blocks: transformers' FlexAttention document mask, checked here on the CPU's
    forward (torch has no FlexAttention backward on the CPU, so training with it there is refused)."""
    import torch
    from transformers import AutoModelForCausalLM
    from tunefleet_trainer.modeling import keeps_records_apart

    model = AutoModelForCausalLM.from_pretrained(tiny_model, attn_implementation="flex_attention")
    assert model.config._attn_implementation == "flex_attention"
    assert keeps_records_apart(model, torch.device("cpu"))
    cfg = run_config(tmp_path, tiny_model, *dataset, attention="flex_attention")
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 2 and "flex_attention trains only on CUDA" in events[-1]["message"]


def test_records_apart_check_sees_records_that_attend_to_each_other(tiny_model, monkeypatch):
    """The check can fail: transformers made to read a packed block as one sequence (as a version without packed
    sequence detection would) lets the second record attend to the first, and the check says so."""
    import torch
    import transformers.masking_utils
    from transformers import AutoModelForCausalLM
    from tunefleet_trainer.modeling import keeps_records_apart

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    assert keeps_records_apart(model, torch.device("cpu"))
    monkeypatch.setattr(transformers.masking_utils, "find_packed_sequence_indices", lambda *a, **k: None)
    assert not keeps_records_apart(model, torch.device("cpu"))


def test_records_apart_check_ignores_kernels_that_round_by_length(tiny_model):
    """Kernels chosen by the number of tokens round differently (bitsandbytes' 4-bit kernels on an H200 did: QLoRA
    was refused packing there). Here the final norm scales its output by the sequence's length; records are still
    kept apart, and the check compares blocks of one length, so it still says so."""
    import torch
    from transformers import AutoModelForCausalLM
    from tunefleet_trainer.modeling import keeps_records_apart

    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model.model.norm.register_forward_hook(lambda module, args, out: out * (1 + 0.03 * (out.shape[1] % 7)))
    assert keeps_records_apart(model, torch.device("cpu"))


def test_naive_concatenation_would_not_be_exact(tiny_model, dataset):
    """The check above can fail: the same block without restarting positions lets records see each other."""
    import torch
    from tunefleet_trainer.modeling import batch_loss

    model, tok, examples = _model_and_examples(tiny_model, dataset[0])
    ids, labels, positions = _only(pack(examples, 64)[0], 1)
    cpu = torch.device("cpu")
    with torch.no_grad():
        naive = device_batch([(ids, labels)], tok.pad_token_id, cpu)
        alone = float(batch_loss(model, device_batch([examples[1]], tok.pad_token_id, cpu)))
        assert abs(float(batch_loss(model, naive)) - alone) > 1e-3


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_chunked_loss_and_gradients_equal_the_plain_ones(dtype):
    """float64: the same computation to rounding; float32 (what training uses): within 1e-6 (relative, per tensor:
    a weight gradient sums hundreds of rows, and fp32 sums in another order differ by that much)."""
    import torch
    import torch.nn.functional as F
    from tunefleet_trainer import modeling

    torch.manual_seed(0)
    n, hidden, vocab = 300, 48, 1000
    dt = getattr(torch, dtype)
    h = torch.randn(n, hidden, dtype=dt, requires_grad=True)
    head = torch.nn.Linear(hidden, vocab, bias=True).to(dt)
    targets = torch.randint(0, vocab, (n,))
    targets[::7] = IGNORE
    plain = F.cross_entropy(head(h), targets, ignore_index=IGNORE, reduction="sum")
    want = torch.autograd.grad(plain, [h, head.weight, head.bias])
    saved = modeling.CHUNK_ELEMENTS
    modeling.CHUNK_ELEMENTS = 64 * vocab  # several chunks, the last one partial
    try:
        chunked = modeling.linear_cross_entropy(h, head, targets) * 0.5  # the caller's scaling reaches the grads
        got = torch.autograd.grad(chunked, [h, head.weight, head.bias])
    finally:
        modeling.CHUNK_ELEMENTS = saved
    tol = 1e-12 if dtype == "float64" else 1e-6
    assert float(chunked.detach()) * 2 == pytest.approx(float(plain.detach()), rel=tol)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype
        assert float((g * 2 - w).norm() / w.norm()) <= tol


def test_chunked_loss_trains_like_the_plain_loss(tiny_model, dataset, tmp_path):
    """LoRA on the tiny model in fp32: the same losses and adapter either way (the adapter within 1e-4 relative:
    Adam's first steps divide by the gradients' size, so fp32 rounding of a tiny gradient moves a weight by more)."""
    base = run_config(tmp_path, tiny_model, *dataset, max_steps=4, checkpoint_every=100, micro_batch_size=8)
    runs = {}
    for chunked in (True, False):
        cfg = json.loads(json.dumps(base))
        cfg["training"]["chunked_loss"] = chunked
        cfg["output_dir"] = str(tmp_path / f"out-{chunked}")
        proc, events = run_trainer(cfg, tmp_path, name=f"{chunked}.json")
        assert proc.returncode == 0, events[-1]
        said = [e["message"] for e in events if e["type"] == "log"]
        assert any(("loss in chunks" if chunked else "plain loss") in m for m in said), said
        runs[chunked] = ([e["loss"] for e in steps(events)], events[-1]["adapter_path"])
    assert runs[True][0] == pytest.approx(runs[False][0], rel=1e-6)
    from safetensors.torch import load_file

    a, b = (load_file(f"{runs[k][1]}/adapter_model.safetensors") for k in (True, False))
    assert a.keys() == b.keys()
    for k in a:
        assert float((a[k] - b[k]).norm() / a[k].norm()) < 1e-4, k


def test_packing_is_the_default_where_exact(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, max_steps=2, checkpoint_every=100, max_seq_len=64)
    cfg["training"].pop("packing")
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 0, events[-1]
    assert events[0]["train_records"] < 48
    assert any("48 records packed into" in e.get("message", "") for e in events if e["type"] == "log")
    # prompt tuning prepends virtual tokens to every sequence: auto leaves its records apart, true is refused
    cfg["method"] = "prompt"
    cfg["output_dir"] = str(tmp_path / "prompt")
    proc, events = run_trainer(cfg, tmp_path, name="prompt.json")
    assert proc.returncode == 0, events[-1]
    assert events[0]["train_records"] == 48
    cfg["training"]["packing"] = True
    proc, events = run_trainer(cfg, tmp_path, name="prompt-packed.json")
    assert proc.returncode == 2 and events[-1]["code"] == "CONFIG_INVALID"
    assert "training.packing" in events[-1]["message"] and "prompt" in events[-1]["message"]


def test_a_packed_run_resumes_exactly_and_keeps_packing(tiny_model, dataset, tmp_path):
    """The checkpoint says whether its data order is over packed blocks: a resume follows it, whatever the config
    asks now, and continues the same losses."""
    cfg = run_config(tmp_path, tiny_model, *dataset, packing="auto", max_seq_len=64, batch_size=4, micro_batch_size=2)
    proc, full = run_trainer(cfg, tmp_path, name="full.json")
    assert proc.returncode == 0, full[-1]
    assert full[0]["train_records"] < 48  # packed
    ckpt = next(e["path"] for e in full if e["type"] == "checkpoint" and e["step"] == 3)
    with open(f"{ckpt}/state.json") as f:
        assert json.load(f)["packing"] is True
    cfg2 = json.loads(json.dumps(cfg))
    cfg2["training"]["packing"] = False
    cfg2.update(resume_from=ckpt, output_dir=str(tmp_path / "resumed"))
    proc, resumed = run_trainer(cfg2, tmp_path, name="resumed.json")
    assert proc.returncode == 0, resumed[-1]
    assert resumed[0]["train_records"] == full[0]["train_records"]
    assert [e["loss"] for e in steps(resumed)] == [e["loss"] for e in steps(full)][3:]


def test_choices_take_only_true_false_or_auto(tiny_model, dataset, tmp_path):
    cfg = run_config(tmp_path, tiny_model, *dataset, compile="yes", gradient_checkpointing=1, attention="flash")
    proc, events = run_trainer(cfg, tmp_path)
    assert proc.returncode == 2
    msg = events[-1]["message"]
    assert "training.compile: must be true, false or auto" in msg
    assert "training.gradient_checkpointing: must be true, false or auto" in msg
    assert "training.attention: 'flash' is not one of auto, sdpa, flex_attention" in msg


@pytest.mark.skipif(sys.platform != "linux", reason="inductor's CPU backend is exercised on Linux")
def test_compiled_layers_give_the_eager_losses(tiny_model, dataset, tmp_path):
    """Regional compilation (each decoder layer, torch.compile's inductor; on the CPU it builds C++) against eager:
    the first 5 losses within 1e-4, and the checkpoint loads into an eager run (names unchanged)."""
    base = run_config(tmp_path, tiny_model, *dataset, max_steps=5, checkpoint_every=5, packing="auto")
    runs = {}
    for compiled in (True, False):
        cfg = json.loads(json.dumps(base))
        cfg["training"]["compile"] = compiled
        cfg["output_dir"] = str(tmp_path / f"out-{compiled}")
        proc, events = run_trainer(cfg, tmp_path, name=f"{compiled}.json")
        assert proc.returncode == 0, events[-1]
        said = " ".join(e["message"] for e in events if e["type"] == "log")
        assert ("2 layers compiled" in said) == compiled, said
        runs[compiled] = [e["loss"] for e in steps(events)]
    assert len(runs[True]) == 5
    assert runs[True] == pytest.approx(runs[False], rel=1e-4)
