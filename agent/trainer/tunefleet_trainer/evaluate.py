"""Base model and fine-tuned model side by side on the eval split.

Every generation (prompt, reference, base, fine-tuned) is written to outputs.jsonl in the
output directory; the agent scores it with the judge and the tool scorer.

Loss and perplexity over completion / assistant tokens (text records: all tokens); on
greedy generations for the eval prompts: exact match, corpus BLEU (sacrebleu) and mean
ROUGE-L F1 (rouge-score) against the reference completion. A generation is cut at its
first newline when the reference has none (the usual stop sequence); exact match then
compares after trimming whitespace and lower-casing.
"""

import json
import math
import os

from .data import prompt_of, read_jsonl, tokenize_all
from .errors import TrainerError
from .events import emit, log
from .modeling import check_model_dir, load_base, load_tokenizer, loss_head, pick_device, pick_dtype
from .recipe import evaluate_loss
from .run import amp_dtype


def normalise(text):
    return " ".join(text.strip().split()).lower()


def generate(model, tokenizer, prompts, max_new_tokens, micro, device):
    import torch

    outs = []
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    model.eval()
    try:
        for i in range(0, len(prompts), micro):
            chunk = prompts[i : i + micro]
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                gen = model.generate(
                    **enc, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id
                )
            for row in gen[:, enc["input_ids"].shape[1] :]:
                outs.append(tokenizer.decode(row, skip_special_tokens=True))
    finally:
        tokenizer.padding_side = side
    return outs


def _metrics(model, tokenizer, examples, pairs, cfg, device, amp):
    micro = cfg.training.micro_batch_size or 8
    head = loss_head(model, device) if cfg.training.chunked_loss else None  # as training computed it
    loss = evaluate_loss(model, examples, micro, tokenizer.pad_token_id, device, amp, head)
    em = bleu = rouge_l = None
    hyps = []
    if cfg.evaluation.exact_match and pairs:
        outputs = generate(model, tokenizer, [p for p, _ in pairs], cfg.evaluation.max_new_tokens, micro, device)
        refs = [r for _, r in pairs]
        hyps = [out.lstrip().split("\n", 1)[0] if "\n" not in ref.strip() else out for ref, out in zip(refs, outputs)]
        em = sum(normalise(h) == normalise(r) for h, r in zip(hyps, refs)) / len(pairs)
        bleu, rouge_l = text_metrics(hyps, refs)
    return {
        "eval_loss": loss,
        "perplexity": math.exp(min(loss, 50)),
        "exact_match": em,
        "bleu": bleu,
        "rouge_l": rouge_l,
        "samples": len(examples),
    }, hyps


def text_metrics(hyps, refs):
    """-> (corpus BLEU 0-100, mean ROUGE-L F1 0-1)."""
    from rouge_score import rouge_scorer
    from sacrebleu.metrics import BLEU

    # effective order: answers of one or two words have no 3- and 4-grams, which would
    # otherwise zero the score whatever the match
    bleu = BLEU(effective_order=True).corpus_score([h.strip() for h in hyps], [[r.strip() for r in refs]]).score
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    rouge = sum(scorer.score(r.strip(), h.strip())["rougeL"].fmeasure for h, r in zip(hyps, refs)) / max(1, len(refs))
    return float(bleu), float(rouge)


def main(cfg):
    if not cfg.eval_path:
        raise TrainerError("CONFIG_INVALID", "evaluate needs eval_path")
    if not cfg.adapter_path or not os.path.isdir(cfg.adapter_path):
        raise TrainerError("CONFIG_INVALID", f"evaluate needs adapter_path, a directory (got {cfg.adapter_path!r})")
    device = pick_device(cfg)
    dtype = pick_dtype(cfg.training.precision, device)
    check_model_dir(cfg.model_path)
    tokenizer = load_tokenizer(cfg.model_path)
    records, fmt = read_jsonl(cfg.eval_path)
    if cfg.evaluation.max_samples:
        records = records[: cfg.evaluation.max_samples]
    examples, _ = tokenize_all(records, fmt, tokenizer, cfg.training.max_seq_len)
    pairs = [p for p in (prompt_of(r, fmt, tokenizer) for r in records) if p[0] is not None]

    base_method = "qlora" if cfg.method == "qlora" else "lora"
    model = load_base(cfg.model_path, dtype, device, base_method)
    base, base_out = _metrics(model, tokenizer, examples, pairs, cfg, device, amp_dtype(dtype))
    log(
        f"base: eval loss {base['eval_loss']:.4f}, exact match {base['exact_match']}, "
        f"BLEU {base['bleu']}, ROUGE-L {base['rouge_l']}"
    )
    if cfg.method == "full":
        del model
        model = load_base(cfg.adapter_path, dtype, device, "full")
    else:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, cfg.adapter_path)
        model.to(device)
    tuned, tuned_out = _metrics(model, tokenizer, examples, pairs, cfg, device, amp_dtype(dtype))
    log(
        f"fine-tuned: eval loss {tuned['eval_loss']:.4f}, exact match {tuned['exact_match']}, "
        f"BLEU {tuned['bleu']}, ROUGE-L {tuned['rouge_l']}"
    )
    rows = [{"prompt": p, "reference": r, "base": b, "tuned": t} for (p, r), b, t in zip(pairs, base_out, tuned_out)]
    # every generation, for the agent's judge and tool scorer and for human review
    outputs_path = os.path.join(cfg.output_dir, "outputs.jsonl")
    os.makedirs(cfg.output_dir, exist_ok=True)
    with open(outputs_path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    emit(
        "evaluation",
        base=base,
        tuned=tuned,
        examples=rows[:20],
        outputs_path=os.path.abspath(outputs_path),
        outputs=len(rows),
    )
    return 0
