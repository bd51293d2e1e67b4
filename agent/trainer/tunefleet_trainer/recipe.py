"""The fine-tuning recipe: setup, train, save_checkpoint, cleanup. One file, no inheritance.

Resuming is exact: the checkpoint holds the adapter, optimizer, LR scheduler, every RNG
state and the step. The data order is a pure function of (seed, epoch), and step s
always consumes examples [s*B, (s+1)*B) of that order, so a resumed run sees the same
batches and continues the same loss trajectory.
"""

import errno
import json
import math
import os
import random
import shutil
import signal
import time

from . import checkpoint as ckpt
from .data import IGNORE, device_batch, pack, read_jsonl, tokenize_all
from .errors import TrainerError
from .events import emit, log
from .modeling import (
    auto_micro_batch,
    batch_loss,
    check_model_dir,
    load_base,
    load_tokenizer,
    memory_free,
    pick_device,
    pick_dtype,
    wrap,
)


class _Stop:
    """SIGTERM/SIGINT: finish the current optimizer step, checkpoint, exit."""

    def __init__(self):
        self.requested = False

    def install(self):
        def handler(signum, _frame):
            self.requested = True

        self.previous = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}

    def uninstall(self):
        for s, h in getattr(self, "previous", {}).items():
            signal.signal(s, h)


def lr_lambda(kind, warmup, total):
    def f(step):
        if warmup > 0 and step < warmup:
            return (step + 1) / warmup
        if kind == "constant" or total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return f


def epoch_order(n, seed, epoch):
    import torch

    g = torch.Generator()
    g.manual_seed(seed * 1_000_003 + epoch)
    return torch.randperm(n, generator=g).tolist()


def examples_for_step(step, batch_size, n, seed):
    """Indices of the examples optimizer step `step` (0-based) trains on."""
    out, orders = [], {}
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n)
        if epoch not in orders:
            orders[epoch] = epoch_order(n, seed, epoch)
        out.append(orders[epoch][i])
    return out


def seed_all(seed):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _rng_state():
    import numpy as np
    import torch

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    py = random.getstate()
    npst = np.random.get_state()
    meta = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [npst[0], npst[1].tolist(), int(npst[2]), int(npst[3]), float(npst[4])],
    }
    return tensors, meta


def _set_rng_state(tensors, meta):
    import numpy as np
    import torch

    torch.set_rng_state(tensors["torch_cpu"])
    if torch.cuda.is_available():
        cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("torch_cuda_"))]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)
    py = meta["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = meta["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), n[2], n[3], n[4]))


def setup(cfg):
    import torch

    t = cfg.training
    device = pick_device(cfg)
    dtype = pick_dtype(t.precision, device)
    seed_all(t.seed)
    check_model_dir(cfg.model_path)
    tokenizer = load_tokenizer(cfg.model_path)

    records, fmt = read_jsonl(cfg.train_path)
    train, truncated = tokenize_all(records, fmt, tokenizer, t.max_seq_len)
    if not train:
        raise TrainerError("DATASET_EMPTY", f"{cfg.train_path}: no record has a token to learn from")
    records_used = len(train)
    if t.packing:
        train = pack(train, t.max_seq_len)
    evals = []
    if cfg.eval_path:
        erecs, efmt = read_jsonl(cfg.eval_path)
        evals, etrunc = tokenize_all(erecs, efmt, tokenizer, t.max_seq_len)
        truncated += etrunc

    model = load_base(cfg.model_path, dtype, device, cfg.method)
    if t.gradient_checkpointing:
        model.gradient_checkpointing_enable()
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model, trainable, total = wrap(model, cfg)

    micro_note = None
    if t.micro_batch_size:
        micro = min(t.micro_batch_size, t.batch_size)
    else:
        longest = max(len(ids) for ids, _ in train)
        free = memory_free(device)
        if cfg.memory_budget:
            free = min(free, cfg.memory_budget)  # other sessions may share this device: stay inside the reservation
        micro, per_seq = auto_micro_batch(
            model.config, longest, t.batch_size, free, torch.finfo(dtype).bits // 8, t.gradient_checkpointing
        )
        micro_note = (
            f"micro-batch {micro} chosen from {free / 2**30:.1f} GiB free "
            f"({per_seq / 2**20:.1f} MiB of activations per sequence of {longest} tokens)"
        )
    accum = max(1, t.batch_size // micro)
    batch = micro * accum
    steps_total = t.max_steps or max(1, math.ceil(t.epochs * len(train) / batch))
    params = [p for p in model.parameters() if p.requires_grad]
    if t.optimizer == "adamw_8bit":
        if device.type != "cuda":
            raise TrainerError(
                "OPTIMIZER_UNAVAILABLE",
                "adamw_8bit needs a CUDA GPU (bitsandbytes 8-bit optimizer states); use adamw on this agent",
            )
        try:
            import bitsandbytes as bnb
        except Exception as e:  # pragma: no cover - depends on the host
            raise TrainerError(
                "OPTIMIZER_UNAVAILABLE", f"adamw_8bit needs bitsandbytes, which failed to import: {e}"
            ) from e
        optimizer = bnb.optim.AdamW8bit(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    else:
        # fused: one kernel for the whole update on CUDA (the state dict is the same, so
        # checkpoints move between agents)
        optimizer = torch.optim.AdamW(
            params, lr=t.learning_rate, weight_decay=t.weight_decay, fused=device.type == "cuda" or None
        )
    warmup = int(round(t.warmup_ratio * steps_total))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(t.lr_scheduler, warmup, steps_total))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 and cfg.method != "full" else None

    state = {"step": 0, "best_eval_loss": None, "best_step": None, "evals_without_improvement": 0, "losses": []}
    if cfg.resume_from:
        _restore(cfg.resume_from, model, optimizer, scheduler, state, cfg.method)
        best = os.path.join(cfg.resume_from, "best")
        if os.path.isdir(best):
            shutil.rmtree(os.path.join(cfg.output_dir, "best"), ignore_errors=True)
            shutil.copytree(best, os.path.join(cfg.output_dir, "best"))

    return {
        "cfg": cfg,
        "device": device,
        "dtype": dtype,
        "tokenizer": tokenizer,
        "model": model,
        "fmt": fmt,
        "train": train,
        "eval": evals,
        "truncated": truncated,
        "optimizer": optimizer,
        "scheduler": scheduler,
        "scaler": scaler,
        "amp": amp_dtype(dtype),
        "micro": micro,
        "accum": accum,
        "batch": batch,
        "steps_total": steps_total,
        "trainable": trainable,
        "total": total,
        "state": state,
        "records_used": records_used,
        "micro_note": micro_note,
    }


def amp_dtype(dtype):
    """The autocast dtype for a model loaded in dtype: None for fp32 (no autocast)."""
    import torch

    return None if dtype == torch.float32 else dtype


def _restore(path, model, optimizer, scheduler, state, method):
    import torch
    from safetensors.torch import load_file

    manifest = ckpt.verify(path)
    if method == "full":
        from safetensors.torch import load_model

        load_model(model, os.path.join(path, "model.safetensors"), strict=True)
    else:
        from peft import set_peft_model_state_dict

        weights = load_file(os.path.join(path, "adapter", "adapter_model.safetensors"))
        result = set_peft_model_state_dict(model, weights)
        if getattr(result, "unexpected_keys", None):
            raise TrainerError(
                "CHECKPOINT_MISMATCH", f"{path}: adapter keys do not match the model: {result.unexpected_keys[:3]}"
            )
    optimizer.load_state_dict(torch.load(os.path.join(path, "optimizer.pt"), weights_only=True, map_location="cpu"))
    with open(os.path.join(path, "state.json"), encoding="utf-8") as f:
        saved = json.load(f)
    scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(load_file(os.path.join(path, "rng.safetensors")), saved["rng"])
    state.update(
        step=saved["step"],
        best_eval_loss=saved.get("best_eval_loss"),
        best_step=saved.get("best_step"),
        evals_without_improvement=saved.get("evals_without_improvement", 0),
        losses=saved.get("losses", []),
    )
    if saved["step"] != manifest["step"]:
        raise TrainerError(
            "CHECKPOINT_CORRUPT", f"{path}: state.json says step {saved['step']}, manifest says {manifest['step']}"
        )


def _write_checkpoint_files(run, tmp):
    import torch
    from safetensors.torch import save_file

    cfg, state, model = run["cfg"], run["state"], run["model"]
    if cfg.method == "full":
        from safetensors.torch import save_model

        save_model(model, os.path.join(tmp, "model.safetensors"))
    else:
        model.save_pretrained(os.path.join(tmp, "adapter"), safe_serialization=True)
    torch.save(run["optimizer"].state_dict(), os.path.join(tmp, "optimizer.pt"))
    tensors, meta = _rng_state()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(tmp, "rng.safetensors"))
    best = os.path.join(cfg.output_dir, "best")
    if os.path.isdir(best):
        shutil.copytree(best, os.path.join(tmp, "best"))
    saved = {
        "step": state["step"],
        "steps_total": run["steps_total"],
        "batch_size": run["batch"],
        "data_position": state["step"] * run["batch"],
        "best_eval_loss": state["best_eval_loss"],
        "best_step": state["best_step"],
        "evals_without_improvement": state["evals_without_improvement"],
        "losses": state["losses"],
        "scheduler": run["scheduler"].state_dict(),
        "rng": meta,
        "method": cfg.method,
        "seed": cfg.training.seed,
    }
    with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as f:
        json.dump(saved, f)


def _no_space(e, root):
    """Did this write fail for want of disk space? (torch and safetensors wrap the OSError)"""
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    return (
        "No space left" in str(e)
        or "file write failed" in str(e)
        or (os.path.isdir(root) and shutil.disk_usage(root).free < 2**20)
    )


def save_checkpoint(run, reason):
    t_start = time.time()
    cfg, state = run["cfg"], run["state"]
    root = os.path.join(cfg.output_dir, "checkpoints")
    os.makedirs(root, exist_ok=True)
    name = f"step-{state['step']:08d}"
    tmp = os.path.join(root, name + ".tmp")
    final = os.path.join(root, name)
    # every write goes to tmp; a failure anywhere (a full disk above all) removes tmp and
    # leaves the checkpoints already committed as they were
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        _write_checkpoint_files(run, tmp)
        files = ckpt.commit(tmp, final, state["step"])
        seconds = time.time() - t_start
    except Exception as e:  # noqa: BLE001 - OSError, or torch's / safetensors' wrapping of it
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(final) and not os.path.isfile(os.path.join(final, ckpt.MANIFEST)):
            shutil.rmtree(final, ignore_errors=True)  # renamed but its manifest never written: not a checkpoint
        if _no_space(e, root):
            free = shutil.disk_usage(root).free
            raise TrainerError(
                "DISK_FULL",
                f"no space left for checkpoint step {state['step']} under {root} ({free / 2**20:.1f} MiB free); "
                "the previous checkpoint is intact",
            ) from e
        if not isinstance(e, OSError):
            raise
        raise TrainerError("CHECKPOINT_WRITE_FAILED", f"{final}: {e.strerror or e}") from e
    emit(
        "checkpoint", step=state["step"], path=os.path.abspath(final), files=files, reason=reason, save_seconds=seconds
    )
    return final


def evaluate_loss(model, examples, micro, pad_id, device, amp=None):
    import torch

    model.eval()
    total, count = 0.0, 0
    said = time.time()
    with torch.no_grad():
        for i in range(0, len(examples), micro):
            if time.time() - said > 5:  # keeps the agent's progress heartbeat going through a long evaluation
                log(f"evaluating: {i} of {len(examples)} examples")
                said = time.time()
            chunk = examples[i : i + micro]
            ids, labels, mask, _ = device_batch(chunk, pad_id, device)
            total += float(batch_loss(model, ids, labels, mask, amp))
            count += sum(sum(1 for x in lab[1:] if x != IGNORE) for _, lab in chunk)
    model.train()
    return total / max(1, count)


def train(run, stop):
    import torch

    cfg, state, model = run["cfg"], run["state"], run["model"]
    t = cfg.training
    opt, sched, scaler, device = run["optimizer"], run["scheduler"], run["scaler"], run["device"]
    pad_id = run["tokenizer"].pad_token_id
    n = len(run["train"])
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    while state["step"] < run["steps_total"]:
        if stop.requested:
            save_checkpoint(run, "signal")
            return "signal"
        t0 = time.time()
        idx = examples_for_step(state["step"], run["batch"], n, t.seed)
        batch = [run["train"][i] for i in idx]
        tokens_in_step = sum(sum(1 for x in lab[1:] if x != IGNORE) for _, lab in batch)
        opt.zero_grad(set_to_none=True)
        # the step's loss and gradient norm stay on the device until the step is queued: one host sync per step
        loss_sum = None
        seen_tokens = 0
        for m in range(run["accum"]):
            chunk = batch[m * run["micro"] : (m + 1) * run["micro"]]
            if not chunk:
                break
            ids, labels, mask, tokens = device_batch(chunk, pad_id, device)
            try:
                s = batch_loss(model, ids, labels, mask, run["amp"])
                loss = s / max(1, tokens_in_step)
                (scaler.scale(loss) if scaler else loss).backward()
            except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError):
                _report_oom(run, state["step"] + 1, ids.shape)
                raise OutOfMemory() from None
            loss_sum = s.detach() if loss_sum is None else loss_sum + s.detach()
            seen_tokens += tokens
        if scaler:
            scaler.unscale_(opt)
        norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        grad_norm = float(norm)
        lr = sched.get_last_lr()[0]
        sched.step()
        state["step"] += 1
        step_loss = float(loss_sum) / max(1, tokens_in_step)
        if not math.isfinite(step_loss):
            raise TrainerError(
                "LOSS_NOT_FINITE",
                f"loss became {step_loss} at step {state['step']}; lower the learning rate or use fp32",
            )
        state["losses"].append(round(step_loss, 6))
        dt = max(1e-9, time.time() - t0)
        emit(
            "step",
            step=state["step"],
            steps_total=run["steps_total"],
            epoch=state["step"] * run["batch"] / n,
            loss=step_loss,
            lr=lr,
            grad_norm=grad_norm if math.isfinite(grad_norm) else None,
            tokens_per_s=seen_tokens / dt,
        )
        if t.eval_every and state["step"] % t.eval_every == 0 and state["step"] < run["steps_total"] and run["eval"]:
            if _evaluate_and_track(run):
                save_checkpoint(run, "final")
                return "early"
        if state["step"] % t.checkpoint_every == 0 and state["step"] < run["steps_total"]:
            save_checkpoint(run, "interval")
    return "completed"


class OutOfMemory(Exception):
    """Raised after the `oom` event: the process exits 3 so the caller can retry smaller."""


def _report_oom(run, step, shape):
    import torch

    device = run["device"]
    fields = {
        "step": step,
        "micro_batch_size": run["micro"],
        "sequence_length": int(shape[1]),
        "gradient_checkpointing": bool(run["cfg"].training.gradient_checkpointing),
        "device": str(device),
    }
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        fields.update(
            memory_total=int(total),
            memory_free=int(free),
            memory_allocated=int(torch.cuda.memory_allocated(device)),
            memory_peak=int(torch.cuda.max_memory_allocated(device)),
        )
    else:
        fields.update(memory_total=None, memory_free=memory_free(device), memory_allocated=None, memory_peak=None)
    emit("oom", **fields)


def _evaluate_and_track(run):
    """Evaluate now; keep the best adapter in output_dir/best. -> True when patience ran out."""
    cfg, state, model = run["cfg"], run["state"], run["model"]
    el = evaluate_loss(model, run["eval"], run["micro"], run["tokenizer"].pad_token_id, run["device"], run["amp"])
    improved = state["best_eval_loss"] is None or el < state["best_eval_loss"]
    if improved:
        state.update(best_eval_loss=el, best_step=state["step"], evals_without_improvement=0)
        best = os.path.join(cfg.output_dir, "best")
        tmp = best + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        if cfg.method == "full":
            from safetensors.torch import save_model

            os.makedirs(tmp)
            save_model(model, os.path.join(tmp, "model.safetensors"))
        else:
            model.save_pretrained(tmp, safe_serialization=True)
        shutil.rmtree(best, ignore_errors=True)
        os.rename(tmp, best)
    else:
        state["evals_without_improvement"] += 1
    emit(
        "eval",
        step=state["step"],
        eval_loss=el,
        perplexity=math.exp(min(el, 50)),
        best_eval_loss=state["best_eval_loss"],
        best_step=state["best_step"],
    )
    patience = cfg.training.patience
    return bool(patience and state["evals_without_improvement"] >= patience)


def _load_best(run):
    """Put the best weights seen by periodic evaluation back into the model."""
    from safetensors.torch import load_file

    cfg, model = run["cfg"], run["model"]
    best = os.path.join(cfg.output_dir, "best")
    if cfg.method == "full":
        from safetensors.torch import load_model

        load_model(model, os.path.join(best, "model.safetensors"), strict=True)
    else:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(os.path.join(best, "adapter_model.safetensors")))


def peak_memory(device):
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def cleanup(run):
    import gc

    run.clear()
    gc.collect()


def main(cfg):
    stop = _Stop()
    stop.install()
    try:
        return _main(cfg, stop)
    finally:
        stop.uninstall()


def _main(cfg, stop):
    run = setup(cfg)
    emit(
        "started",
        method=cfg.method,
        device=str(run["device"]),
        dtype=str(run["dtype"]).replace("torch.", ""),
        trainable_params=run["trainable"],
        total_params=run["total"],
        train_records=len(run["train"]),
        eval_records=len(run["eval"]),
        steps_total=run["steps_total"],
        micro_batch_size=run["micro"],
        grad_accum=run["accum"],
        truncated_records=run["truncated"],
        resumed_from_step=run["state"]["step"],
    )
    log(
        f"{run['trainable']:,} trainable of {run['total']:,} parameters "
        f"({100 * run['trainable'] / run['total']:.3f}%); "
        f"{run['batch']} sequences per step ({run['micro']} x {run['accum']} accumulation); {run['steps_total']} steps"
        + (f"; {run['records_used']} records packed into {len(run['train'])} blocks" if cfg.training.packing else "")
    )
    if run["micro_note"]:
        log(run["micro_note"])
    try:
        outcome = train(run, stop)
    except OutOfMemory:
        cleanup(run)
        return 3
    state = run["state"]
    if outcome == "completed":
        if cfg.training.eval_every and run["eval"]:
            _evaluate_and_track(run)
        save_checkpoint(run, "final")
    if outcome in ("completed", "early") and state["best_step"] is not None:
        _load_best(run)
        log(f"exporting the best adapter: step {state['best_step']}, eval loss {state['best_eval_loss']:.4f}")
    if outcome in ("completed", "early") and run["eval"]:
        el = evaluate_loss(
            run["model"], run["eval"], run["micro"], run["tokenizer"].pad_token_id, run["device"], run["amp"]
        )
        emit(
            "eval",
            step=state["step"],
            eval_loss=el,
            perplexity=math.exp(min(el, 50)),
            best_eval_loss=state["best_eval_loss"],
            best_step=state["best_step"],
        )
    adapter_dir = os.path.join(cfg.output_dir, "adapter")
    tmp = adapter_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    run["model"].save_pretrained(tmp, safe_serialization=True)
    if cfg.method == "full":
        run["tokenizer"].save_pretrained(tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.rename(tmp, adapter_dir)
    losses = run["state"]["losses"]
    emit(
        "finished",
        step=run["state"]["step"],
        adapter_path=os.path.abspath(adapter_dir),
        adapter_files=ckpt.file_entries(adapter_dir),
        train_loss=losses[-1] if losses else None,
        stopped=outcome,
        best_step=state["best_step"],
        peak_memory=peak_memory(run["device"]),
    )
    cleanup(run)
    return 0
