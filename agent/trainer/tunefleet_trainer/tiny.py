"""A tiny Llama (2 layers, hidden 64, random weights) with a real BPE tokenizer, for tests.

Built from a config in seconds and fully offline: the tokenizer is trained on a fixed
corpus here, the weights come from a seeded initialisation. Same seed, same files.
"""

import json
import os

from .events import log

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _corpus():
    words = (
        "the a of to and in is it you that he was for on are with as his they be at one have this from or had "
        "by word but what some we can out other were all there when up use your how said an each she which do "
        "their time if will way about many then them write would like so these her long make thing see him "
        "two has look more day could go come did number sound no most people my over know water than call "
        "first who may down side been now find any new work part take get place made live where after back "
        "little only round man year came show every good me give our under name very through just form "
        "sentence great think say help low line differ turn cause much mean before move right boy old too "
        "same tell does set three want air well also play small end put home read hand port large spell add "
        "even land here must big high such follow act why ask men change went light kind off need house "
        "picture try us again animal point mother world near build self earth father"
    ).split()
    extra = [
        f"{a}/{b}"
        for a in ("application", "text", "image", "audio", "video")
        for b in ("json", "pdf", "plain", "png", "mpeg", "html", "xml", "zip")
    ]
    lines = []
    for i in range(400):
        lines.append(" ".join(words[(i * 7 + j * 13) % len(words)] for j in range(12)))
    lines += [f"MIME type {e} has extension {e.split('/')[1]}" for e in extra]
    lines += [str(n) for n in range(1000)]
    return lines


def main(out, seed=0):
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    os.makedirs(out, exist_ok=True)
    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(
        _corpus(),
        trainers.BpeTrainer(
            vocab_size=512,
            special_tokens=special,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(out)

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(fast),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        bos_token_id=fast.bos_token_id,
        eos_token_id=fast.eos_token_id,
        pad_token_id=fast.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    model.save_pretrained(out, safe_serialization=True)
    with open(os.path.join(out, "tunefleet-tiny.json"), "w", encoding="utf-8") as f:
        json.dump({"seed": seed, "purpose": "tests only: random weights"}, f)
    log(f"tiny model: {sum(p.numel() for p in model.parameters()):,} parameters, vocab {len(fast)} -> {out}")
    return 0
