"""Loading the base model and wrapping it for a method; the loss both train and evaluate use."""

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


def load_base(path, dtype, device, method="lora"):
    from transformers import AutoModelForCausalLM

    check_model_dir(path)
    kwargs = {"dtype": dtype, "use_safetensors": True}
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
    try:
        model = get_peft_model(model, pc)
    except (ValueError, KeyError, TypeError) as e:
        raise TrainerError("METHOD_UNSUPPORTED", f"method '{method}' cannot wrap {type(model).__name__}: {e}") from e
    trainable, total = model.get_nb_trainable_parameters()
    return model, int(trainable), int(total)


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


def auto_micro_batch(model_config, seq_len, batch_size, free_bytes, dtype_bytes, grad_ckpt):
    """The largest power of two micro-batch whose activations fit in half the free memory.

    Per token: each layer keeps about 34 x hidden activations for backward (2 x hidden with
    gradient checkpointing), plus the logits over the vocabulary in fp32 (value, softmax,
    gradient). -> (micro_batch, bytes_per_sequence)
    """
    layers = getattr(model_config, "num_hidden_layers", 12)
    hidden = getattr(model_config, "hidden_size", 768)
    vocab = getattr(model_config, "vocab_size", 32000)
    per_token = layers * hidden * (2 if grad_ckpt else 34) * dtype_bytes + vocab * 4 * 3
    per_seq = per_token * max(1, seq_len)
    fit = int((free_bytes * 0.5) // per_seq)
    m = 1
    while m * 2 <= min(fit, batch_size, 64):
        m *= 2
    return m, per_seq


def batch_loss(model, input_ids, labels, mask, amp=None):
    """-> sum of token cross-entropy over label tokens, as a tensor (no host sync).

    mask None means no padding: the model then runs plain causal attention (SDPA's flash
    kernel); a materialised all-ones mask sent it to a slower kernel that stores the
    attention weights (measured on an H200: 26.3 vs 20.9 GiB peak for the HF baseline)."""
    import torch
    import torch.nn.functional as F

    # amp (bf16/fp16): run the forward under autocast, as HF Trainer does. Without it the fp32
    # LoRA weights pull every adapted layer's input up to fp32 (measured on an H200: 1.2x the
    # baseline's peak memory, 0.83x its tokens/s).
    with torch.autocast(input_ids.device.type, dtype=amp, enabled=amp is not None):
        logits = model(input_ids=input_ids, attention_mask=mask).logits
    # prompt tuning prepends virtual tokens to the sequence: keep the positions of real tokens
    if logits.size(1) > input_ids.size(1):
        logits = logits[:, -input_ids.size(1) :, :]
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, 1:]
    return F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.size(-1)), shift_labels.reshape(-1), ignore_index=IGNORE, reduction="sum"
    )
