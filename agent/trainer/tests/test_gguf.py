"""GGUF export: llama.cpp's converter on the merged model, read back by the gguf reader and by transformers,
generated from by llama.cpp; a tokenizer the converter does not know is refused with its reason."""

import json
import os

import pytest

HOME = os.environ.get("TUNEFLEET_HOME") or os.path.expanduser("~/.tunefleet")
TOOLS = os.path.join(HOME, "gguf-tools")
SMOLLM2 = os.path.join(HOME, "models", "SmolLM2-135M-Instruct")

needs_tools = pytest.mark.skipif(
    not os.path.isfile(os.path.join(TOOLS, "convert_hf_to_gguf.py")), reason=f"no GGUF tools in {TOOLS}"
)


def random_lora(model_path, out, seed=0):
    """A LoRA adapter with random (non-zero) weights on every attention projection: a real change to fold in."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    targets = ["q_proj", "k_proj", "v_proj", "o_proj"]
    peft = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False))
    peft.save_pretrained(out)
    return out


@needs_tools
def test_a_tokenizer_llama_cpp_does_not_know_is_refused_with_the_converters_reason(tiny_model, tmp_path):
    from tunefleet_trainer.errors import TrainerError
    from tunefleet_trainer.ggufexport import export_gguf

    adapter = random_lora(tiny_model, str(tmp_path / "adapter"))
    with pytest.raises(TrainerError) as e:
        export_gguf(tiny_model, adapter, str(tmp_path / "out"), "float32", TOOLS)
    assert e.value.code == "METHOD_UNSUPPORTED"
    assert "llama.cpp's converter refused the merged model" in e.value.message
    assert "pre-tokenizer was not recognized" in e.value.message, e.value.message
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "out.tmp")


def test_missing_tools_and_a_bad_dtype_are_named(tiny_model, tmp_path):
    from tunefleet_trainer.errors import TrainerError
    from tunefleet_trainer.ggufexport import export_gguf

    with pytest.raises(TrainerError, match="llama.cpp's converter is not installed in '/nowhere'"):
        export_gguf(tiny_model, str(tmp_path), str(tmp_path / "out"), "float32", "/nowhere")
    with pytest.raises(TrainerError, match="--dtype int4: one of auto, float32, float16, bfloat16, q8_0"):
        export_gguf(tiny_model, str(tmp_path), str(tmp_path / "out"), "int4", TOOLS)


@needs_tools
@pytest.mark.skipif(not os.path.isfile(os.path.join(SMOLLM2, "config.json")), reason=f"no base model at {SMOLLM2}")
def test_smollm2_with_an_adapter_exports_to_gguf_that_llama_cpp_and_transformers_read_as_the_merged_model(tmp_path):
    import numpy as np
    import torch
    from gguf import GGUFReader
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from tunefleet_trainer.ggufexport import export_gguf
    from tunefleet_trainer.merge import export_merged

    adapter = random_lora(SMOLLM2, str(tmp_path / "adapter"))
    out = str(tmp_path / "gguf")
    assert export_gguf(SMOLLM2, adapter, out, "float32", TOOLS) == 0
    assert sorted(os.listdir(out)) == ["gguf-check.json", "model.gguf"]
    with open(os.path.join(out, "gguf-check.json")) as f:
        report = json.load(f)
    # llama.cpp tokenizes the probe as transformers does and answers it greedily with the same 8 tokens
    assert report["architecture"] == "llama" and report["vocab"] == 49152 and report["chat_template"]
    assert report["tokenizer_agrees"] and report["greedy_agrees"] == report["greedy_tokens"] == 8, report

    # the merged model, as export --merged writes it: the reference
    export_merged(SMOLLM2, adapter, str(tmp_path / "merged"), "float32")
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged"), dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "merged"))
    # the gguf reader: the merged value projection of layer 0, bit for bit (llama.cpp permutes q and k, not v)
    reader = GGUFReader(os.path.join(out, "model.gguf"))
    assert len(reader.tensors) == report["tensors"]
    v = next(t for t in reader.tensors if t.name == "blk.0.attn_v.weight")
    want = merged.model.layers[0].self_attn.v_proj.weight.detach().numpy()
    assert np.array_equal(np.asarray(v.data).reshape(want.shape), want)
    base_v = AutoModelForCausalLM.from_pretrained(SMOLLM2, dtype=torch.float32).model.layers[0].self_attn.v_proj.weight
    assert not np.allclose(base_v.detach().numpy(), want), "the adapter changed the weights"
    # transformers loads the GGUF file back: the merged model's logits
    back = AutoModelForCausalLM.from_pretrained(out, gguf_file="model.gguf", dtype=torch.float32)
    ids = tok("MIME type application/pdf has extension", return_tensors="pt").input_ids
    with torch.no_grad():
        diff = (back(ids).logits - merged(ids).logits).abs().max().item()
    assert diff < 1e-4, diff
