"""Loading the base model and wrapping it for a method; the loss both train and evaluate use."""

import contextlib
import os

from .data import IGNORE
from .errors import TrainerError


def pick_device(cfg, local_rank=None):
    """CPU or CUDA; a data-parallel rank gets the CUDA device of its local rank (its own device)."""
    import torch

    if cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise TrainerError("DEVICE_UNAVAILABLE", "device 'cuda' was asked for but torch sees no CUDA device")
        if local_rank is None:
            return torch.device("cuda")
        if local_rank >= torch.cuda.device_count():
            raise TrainerError(
                "DEVICE_UNAVAILABLE",
                f"process {local_rank} needs its own CUDA device; torch sees {torch.cuda.device_count()}",
            )
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def pick_dtype(precision, device):
    import torch

    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    if device.type == "cpu" and precision == "fp16":
        raise TrainerError("PRECISION_UNSUPPORTED", "fp16 training needs a CUDA device; use bf16 or fp32 on CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]


def check_model_dir(path):
    """The base model must be safetensors: a directory with only pickles is refused."""
    if not os.path.isdir(path):
        raise TrainerError("MODEL_MISSING", f"{path}: no such model directory")
    names = os.listdir(path)
    if not any(n.endswith(".safetensors") for n in names):
        pickles = [n for n in names if n.endswith((".bin", ".pt", ".pth", ".ckpt", ".pkl"))]
        why = f"only pickle files ({', '.join(sorted(pickles))}), which are never loaded" if pickles else "no weights"
        raise TrainerError("MODEL_UNSAFE", f"{path}: {why}; convert the model to safetensors")


def load_tokenizer(path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def require_bitsandbytes(code, what):
    """Import bitsandbytes (4-bit kernels, 8-bit optimizers) or say which feature needs it."""
    try:
        import bitsandbytes
    except Exception as e:  # pragma: no cover - depends on the host
        raise TrainerError(code, f"{what} needs bitsandbytes, which failed to import: {e}") from e
    return bitsandbytes


def load_base(path, dtype, device, method="lora", attention=None):
    """The base model on its device; `attention`: transformers' attn_implementation (None: its default)."""
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    kwargs = {"dtype": dtype, "use_safetensors": True}
    if attention:
        kwargs["attn_implementation"] = attention
    if method == "qlora":
        if device.type != "cuda":
            raise TrainerError(
                "QLORA_UNAVAILABLE",
                "qlora needs a CUDA GPU: bitsandbytes 4-bit kernels do not train on CPU; use lora on this agent",
            )
        require_bitsandbytes("QLORA_UNAVAILABLE", "qlora")
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype
        )
        kwargs["device_map"] = {"": device.index or 0}
    model = AutoModelForCausalLM.from_pretrained(path, **kwargs)
    if method != "qlora":
        model.to(device)
    return model


def prepare_quantized(model):
    """Freeze a 4-bit base for QLoRA. Unlike PEFT's prepare_model_for_kbit_training, the
    non-quantized weights (norms, embeddings, head) stay in the compute dtype when that is
    bf16: upcasting them to fp32 turns every activation fp32 and, measured on an H200, took
    QLoRA's peak to 1.8x LoRA bf16's. fp16 keeps PEFT's fp32 upcast (fp16 norms overflow)."""
    import torch

    floats = [p for p in model.parameters() if p.__class__.__name__ != "Params4bit" and p.dtype.is_floating_point]
    upcast = any(p.dtype == torch.float16 for p in floats)
    for p in model.parameters():
        p.requires_grad_(False)
    if upcast:
        for p in floats:
            p.data = p.data.to(torch.float32)


def wrap(model, cfg):
    """Apply the method; -> (model, trainable_params, total_params) as PEFT counts them."""
    method = cfg.method
    if method == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        n = sum(p.numel() for p in model.parameters())
        return model, n, n
    from peft import (
        AdaptionPromptConfig,
        IA3Config,
        LoraConfig,
        PrefixTuningConfig,
        PromptTuningConfig,
        PromptTuningInit,
        TaskType,
        get_peft_model,
    )

    if method == "qlora":
        prepare_quantized(model)
    if method in ("lora", "dora", "qlora"):
        pc = LoraConfig(
            task_type=TaskType.CAUSAL_LM,
            r=cfg.lora.r,
            lora_alpha=cfg.lora.alpha,
            lora_dropout=cfg.lora.dropout,
            target_modules=cfg.lora.target_modules or "all-linear",
            use_dora=(method == "dora"),
        )
    elif method == "ia3":
        pc = IA3Config(task_type=TaskType.CAUSAL_LM, target_modules=cfg.lora.target_modules)
    elif method == "prefix":
        pc = PrefixTuningConfig(task_type=TaskType.CAUSAL_LM, num_virtual_tokens=cfg.prompt.num_virtual_tokens)
    elif method == "prompt":
        pc = PromptTuningConfig(
            task_type=TaskType.CAUSAL_LM,
            num_virtual_tokens=cfg.prompt.num_virtual_tokens,
            prompt_tuning_init=PromptTuningInit.RANDOM,
        )
    elif method == "adapter":
        # LLaMA-Adapter through PEFT (AdaptionPrompt): Llama-family models only
        layers = getattr(model.config, "num_hidden_layers", cfg.adapter.adapter_layers)
        pc = AdaptionPromptConfig(
            task_type=TaskType.CAUSAL_LM,
            adapter_len=cfg.adapter.adapter_len,
            adapter_layers=min(cfg.adapter.adapter_layers, layers),
        )
    else:
        raise TrainerError("METHOD_UNSUPPORTED", f"method '{method}' is not supported")
    if cfg.init_adapter:  # its configuration rules (on a resume the checkpoint's weights are then loaded over it)
        model = _from_adapter(model, cfg.init_adapter, pc)
        trainable, total = model.get_nb_trainable_parameters()
        return model, int(trainable), int(total)
    try:
        model = get_peft_model(model, pc)
    except (ValueError, KeyError, TypeError) as e:
        raise TrainerError("METHOD_UNSUPPORTED", f"method '{method}' cannot wrap {type(model).__name__}: {e}") from e
    trainable, total = model.get_nb_trainable_parameters()
    return model, int(trainable), int(total)


def _from_adapter(model, path, pc):
    """The base model with a trained adapter loaded for further training: its own configuration (rank, targets)
    rules; the kind must be the method's."""
    from peft import PeftConfig, PeftModel

    try:
        saved = PeftConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise TrainerError("CONFIG_INVALID", f"init_adapter {path}: not a PEFT adapter ({e})") from e
    if saved.peft_type != pc.peft_type or getattr(saved, "use_dora", False) != getattr(pc, "use_dora", False):
        kind = f"{saved.peft_type}{' (DoRA)' if getattr(saved, 'use_dora', False) else ''}"
        raise TrainerError("CONFIG_INVALID", f"init_adapter {path}: a {kind} adapter, not one this method trains")
    try:
        return PeftModel.from_pretrained(model, path, is_trainable=True)
    except (ValueError, KeyError, RuntimeError) as e:
        raise TrainerError("CONFIG_INVALID", f"init_adapter {path}: does not load on this base model: {e}") from e


def memory_free(device):
    """Bytes free for activations now: on CUDA what the driver says, on CPU the available RAM."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


def auto_micro_batch(model_config, seq_len, batch_size, free_bytes, dtype_bytes, grad_ckpt, chunked_loss=False):
    """The largest power of two micro-batch whose activations fit in half the free memory.

    Per token: each layer keeps about 34 x hidden activations for backward (2 x hidden with
    gradient checkpointing), plus for the loss either the logits over the vocabulary in fp32
    (value, softmax, gradient) or, chunked, the last hidden state and its gradient (the
    chunk's logits are a fixed amount). -> (micro_batch, bytes_per_sequence)
    """
    layers = getattr(model_config, "num_hidden_layers", 12)
    hidden = getattr(model_config, "hidden_size", 768)
    vocab = getattr(model_config, "vocab_size", 32000)
    loss = 2 * hidden * dtype_bytes if chunked_loss else vocab * 4 * 3
    per_token = layers * hidden * (2 if grad_ckpt else 34) * dtype_bytes + loss
    per_seq = per_token * max(1, seq_len)
    fixed = CHUNK_ELEMENTS * 4 * 3 if chunked_loss else 0
    fit = int(max(0, free_bytes * 0.5 - fixed) // per_seq)
    m = 1
    while m * 2 <= min(fit, batch_size, 64):
        m *= 2
    return m, per_seq


# logits elements one chunk of the loss holds at a time: 32 Mi, 128 MiB in fp32 (682 tokens of a 49k vocabulary)
CHUNK_ELEMENTS = 2**25


def chunk_tokens(vocab):
    """Tokens per chunk of the loss for a vocabulary of `vocab` entries."""
    return max(64, CHUNK_ELEMENTS // max(1, vocab))


@contextlib.contextmanager
def _hidden_out(head):
    """The output head passes its input through: the model returns its last hidden state as
    "logits" (through PEFT and DDP wrappers alike, which call the same module)."""
    head.forward = _identity
    try:
        yield
    finally:
        del head.forward


def _identity(x):
    return x


def loss_head(model, device):
    """The model's output projection when the chunked loss can stand in for it, else None.

    It can when the head is a plain nn.Linear (not an adapted one) and the model's logits are
    that head applied to the hidden state it returns: checked here on a short probe, so a model
    that scales or caps its logits after the head keeps the plain loss."""
    import torch

    head = model.get_output_embeddings()
    if type(head) is not torch.nn.Linear:
        return None
    probe = torch.arange(1, 9, device=device).unsqueeze(0) % head.out_features
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            logits = model(input_ids=probe, use_cache=False).logits
            with _hidden_out(head):
                hidden = model(input_ids=probe, use_cache=False).logits
    finally:
        model.train(was_training)
    if hidden.shape[-1] != head.in_features:
        return None
    again = torch.nn.functional.linear(hidden, head.weight, head.bias)
    return head if torch.allclose(again.float(), logits.float(), rtol=1e-3, atol=1e-3) else None


def keeps_records_apart(model, device):
    """Whether the model keeps packed records apart: in a block of two records with restarting position ids (and
    no mask), the second record's logits must not depend on the first record's tokens.

    Two blocks of the same shape that differ only in the first record are compared, so the same kernels round the
    same way: a comparison with each record run alone mixes in how other kernels round (on an H200, bitsandbytes'
    4-bit kernels picked for 5, 7 and 12 tokens put QLoRA's difference past any fixed share of the logits). The
    same two blocks read as one sequence (positions not restarting) show how far attending across records moves
    the second record: kept apart, it moves by under a thousandth of that (nothing, with deterministic kernels)."""
    import torch

    vocab = model.get_output_embeddings().weight.shape[0]
    first = [torch.arange(3, 10) % vocab, torch.arange(40, 47) % vocab]
    second = torch.arange(20, 25) % vocab
    n = len(first[0])
    restarting = torch.cat([torch.arange(n), torch.arange(len(second))])
    one_sequence = torch.arange(n + len(second))

    def logits_of_second(a, positions):
        ids = torch.cat([a, second]).unsqueeze(0).to(device)
        out = model(input_ids=ids, position_ids=positions.unsqueeze(0).to(device), use_cache=False).logits
        return out[0, n:].float()

    def moved(positions):
        return float((logits_of_second(first[0], positions) - logits_of_second(first[1], positions)).abs().max())

    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            packed, attending = moved(restarting), moved(one_sequence)
    finally:
        model.train(was_training)
    return packed <= 1e-3 * attending


def compile_layers(model):
    """torch.compile each decoder layer in place (regional compilation: the layers share one graph, so
    compile time is one layer's; parameter names and checkpoints are unchanged). -> layers compiled.
    Random ops (LoRA dropout) use torch's own generator, as in eager mode, so a run resumes exactly."""
    import torch
    import torch._inductor.config as inductor

    inductor.fallback_random = True
    n = getattr(model.config, "num_hidden_layers", None)
    layers = next(
        (m for m in model.modules() if isinstance(m, torch.nn.ModuleList) and len(m) == n and n),
        None,
    )
    if layers is None:
        return 0
    for layer in layers:
        layer.compile()
    return len(layers)


def _linear_ce_chunks(h, weight, bias, targets, chunk, dtype, grads):
    """Summed cross-entropy of (h @ weight.T + bias) against targets, chunk rows at a time; with
    `grads` also the gradients of that sum (softmax - one-hot, through the projection), so the
    backward pass needs no logits: -> (loss, grad_h, grad_weight, grad_bias)."""
    import torch

    w = weight.to(dtype)
    acc = torch.promote_types(dtype, torch.float32)  # softmax and sums: fp32 at least, as the plain loss
    total = torch.zeros((), dtype=acc, device=h.device)
    gh = torch.empty_like(h) if grads[0] else None
    gw = torch.zeros(weight.shape, dtype=acc, device=h.device) if grads[1] else None
    gb = torch.zeros(bias.shape, dtype=acc, device=h.device) if grads[2] else None
    for i in range(0, h.size(0), chunk):
        hc, t = h[i : i + chunk].to(dtype), targets[i : i + chunk]
        logits = (hc @ w.T).to(acc)
        if bias is not None:
            logits += bias.to(acc)
        lse = torch.logsumexp(logits, dim=-1)
        total += (lse - logits.gather(1, t.unsqueeze(1)).squeeze(1)).sum()
        if not any(grads):
            continue
        g = logits.sub_(lse.unsqueeze(1)).exp_()  # softmax, in place of the logits
        g[torch.arange(g.size(0), device=g.device), t] -= 1
        gc = g.to(dtype)
        if gh is not None:
            gh[i : i + chunk] = (gc @ w).to(h.dtype)
        if gw is not None:
            gw += (gc.T @ hc).to(acc)
        if gb is not None:
            gb += g.sum(0)
    return total, gh, gw, gb


def _linear_ce_function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """The loss and its gradients in one pass over chunks (the fused linear cross-entropy of
        Liger and Apple's cut-cross-entropy, in plain torch): full logits are never held."""

        @staticmethod
        def forward(ctx, h, weight, bias, targets, chunk, dtype):
            needs = (h.requires_grad, weight.requires_grad, bias is not None and bias.requires_grad)
            total, gh, gw, gb = _linear_ce_chunks(h, weight, bias, targets, chunk, dtype, needs)
            ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)
            ctx.save_for_backward(gh, gw, gb)
            return total

        @staticmethod
        def backward(ctx, grad_out):
            gh, gw, gb = ctx.saved_tensors
            return (
                None if gh is None else gh * grad_out.to(gh.dtype),
                None if gw is None else (gw * grad_out).to(ctx.dtypes[0]),
                None if gb is None else (gb * grad_out).to(ctx.dtypes[1]),
                None,
                None,
                None,
            )

    return LinearCrossEntropy


_LINEAR_CE = []


def linear_cross_entropy(h, head, targets, amp=None):
    """sum over rows of cross_entropy(head(h), targets), rows ignored where targets == IGNORE;
    equal to the plain loss (logits in the autocast dtype, softmax in fp32) and its gradients."""
    import torch

    keep = targets != IGNORE
    rows, targets = h[keep], targets[keep]
    dtype = amp or head.weight.dtype
    chunk = chunk_tokens(head.out_features)
    needs = torch.is_grad_enabled() and (rows.requires_grad or head.weight.requires_grad)
    if not needs:
        return _linear_ce_chunks(rows, head.weight, head.bias, targets, chunk, dtype, (False, False, False))[0]
    if not _LINEAR_CE:
        _LINEAR_CE.append(_linear_ce_function())
    return _LINEAR_CE[0].apply(rows, head.weight, head.bias, targets, chunk, dtype)


def batch_loss(model, batch, amp=None, head=None):
    """-> sum of token cross-entropy over label tokens, as a tensor (no host sync).

    mask None means no padding: the model then runs plain causal attention (SDPA's flash
    kernel); a materialised all-ones mask sent it to a slower kernel that stores the
    attention weights (measured on an H200: 26.3 vs 20.9 GiB peak for the HF baseline).
    A packed batch carries position ids that restart per record and no mask. With `head`
    (loss_head), the loss is computed in chunks from the last hidden state (full logits
    are never materialised); without it, from the model's logits."""
    import torch
    import torch.nn.functional as F

    # no KV cache: nothing reuses it, and transformers reads restarting position ids as packed records only without one
    inputs = {"input_ids": batch.input_ids, "attention_mask": batch.mask, "use_cache": False}
    if batch.position_ids is not None:
        inputs["position_ids"] = batch.position_ids
    n = batch.input_ids.size(1)
    # amp (bf16/fp16): run the forward under autocast, as HF Trainer does. Without it the fp32
    # LoRA weights pull every adapted layer's input up to fp32 (measured on an H200: 1.2x the
    # baseline's peak memory, 0.83x its tokens/s).
    with torch.autocast(batch.input_ids.device.type, dtype=amp, enabled=amp is not None):
        with _hidden_out(head) if head is not None else contextlib.nullcontext():
            out = model(**inputs).logits
    # prompt tuning prepends virtual tokens to the sequence: keep the positions of real tokens
    if out.size(1) > n:
        out = out[:, -n:, :]
    shift_labels = batch.labels[:, 1:].reshape(-1)
    if head is not None:
        return linear_cross_entropy(out[:, :-1, :].reshape(-1, out.size(-1)), head, shift_labels, amp)
    shift_logits = out[:, :-1, :].float()
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels, ignore_index=IGNORE, reduction="sum"
    )
