"""The fine-tuning recipe: setup (run.py), the train loop, periodic evaluation, export.

Resuming is exact (resume.py): the checkpoint holds the weights, optimizer, LR
scheduler, every RNG state and the step, and the data order is a pure function of
(seed, epoch) (data.examples_for_step), so a resumed run continues the same loss
trajectory.
"""

import math
import os
import shutil
import signal
import time

from . import checkpoint as ckpt
from .data import IGNORE, device_batch, examples_for_step
from .errors import TrainerError
from .events import emit, log
from .modeling import batch_loss, memory_free
from .resume import save_checkpoint
from .run import setup
from .weights import export, load_weights, save_weights


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


class OutOfMemory(Exception):
    """Raised after the `oom` event: the process exits 3 so the caller can retry smaller."""


def label_tokens(examples):
    """Tokens the loss is computed on (labels other than IGNORE, after the shift)."""
    return sum(sum(1 for x in example[1][1:] if x != IGNORE) for example in examples)


def evaluate_loss(model, examples, micro, pad_id, device, amp=None, head=None):
    """Mean token loss over `examples`."""
    return evaluate_loss_sum(model, examples, micro, pad_id, device, amp, head) / max(1, label_tokens(examples))


def evaluate_loss_sum(model, examples, micro, pad_id, device, amp=None, head=None):
    """Summed token loss over `examples` (a data-parallel rank's share adds up with the others'); `head`: the
    chunked loss's output head (modeling.loss_head), None for the plain loss."""
    import torch

    model.eval()
    total = 0.0
    said = time.time()
    with torch.no_grad():
        for i in range(0, len(examples), micro):
            if time.time() - said > 5:  # keeps the agent's progress heartbeat going through a long evaluation
                log(f"evaluating: {i} of {len(examples)} examples")
                said = time.time()
            total += float(batch_loss(model, device_batch(examples[i : i + micro], pad_id, device), amp, head))
    model.train()
    return total


class PhaseClock:
    """Seconds a step spends in data, forward, backward and optimizer, summed over the steps timed (for the
    benchmarks: set run.clock; on CUDA each mark waits for the device, which a normal run never does)."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"
        self.totals = {"data": 0.0, "forward": 0.0, "backward": 0.0, "optimizer": 0.0}
        self.last = None

    def mark(self, phase):
        if self.cuda:
            import torch

            torch.cuda.synchronize()
        now = time.perf_counter()
        if phase is not None and self.last is not None:
            self.totals[phase] += now - self.last
        self.last = now


class _NoClock:
    def mark(self, phase):
        pass


_NO_CLOCK = _NoClock()


def _step(run, params, stop):
    """One optimizer step over the step's examples (gradient accumulation; a data-parallel rank takes its share):
    -> (loss, grad norm, tokens seen, stop agreed by every process)."""
    import contextlib

    import torch

    t, opt, scaler, dist = run.cfg.training, run.optimizer, run.scaler, run.dist
    batch = [run.train[i] for i in examples_for_step(run.state.step, run.batch, len(run.train), t.seed)]
    # normalised by the label tokens of the whole step, over all processes: DDP averages the ranks' gradients, so
    # each rank's loss is scaled by the world size and the sum is the one-process gradient
    tokens_in_step = label_tokens(batch)
    mine = dist.shard(batch)
    chunks = [c for c in (mine[m * run.micro : (m + 1) * run.micro] for m in range(run.accum)) if c]
    opt.zero_grad(set_to_none=True)
    clock = run.clock or _NO_CLOCK
    # the step's loss stays on the device until the step is queued: one host sync per step
    loss_sum, seen_tokens = None, 0
    for m, chunk in enumerate(chunks):
        clock.mark(None)
        b = device_batch(chunk, run.tokenizer.pad_token_id, run.device)
        clock.mark("data")
        # gradients are all-reduced once per step, on its last micro-batch
        quiet = run.ddp.no_sync() if run.ddp is not None and m < len(chunks) - 1 else contextlib.nullcontext()
        try:
            with quiet:
                s = batch_loss(run.net, b, run.amp, run.head)
                loss = s * dist.world / max(1, tokens_in_step)
                clock.mark("forward")
                (scaler.scale(loss) if scaler else loss).backward()
                clock.mark("backward")
        except getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError):
            _report_oom(run, run.state.step + 1, b.input_ids.shape)
            raise OutOfMemory() from None
        loss_sum = s.detach() if loss_sum is None else loss_sum + s.detach()
        seen_tokens += b.tokens
    if scaler:
        scaler.unscale_(opt)
    norm = torch.nn.utils.clip_grad_norm_(params, t.max_grad_norm)
    if scaler:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()
    clock.mark("optimizer")
    local = float(loss_sum) if loss_sum is not None else 0.0
    # one collective for what the processes report together: the loss, the tokens and a stop request any got
    total, seen, stopping = dist.reduce_sum([local, seen_tokens, float(stop.requested)], run.device)
    return total / max(1, tokens_in_step), float(norm), int(seen), stopping > 0


def train(run, stop):
    """Steps until steps_total (or pause_at), early stop or a stop request.
    -> 'completed' | 'early' | 'signal' | 'paused'."""
    t, state = run.cfg.training, run.state
    run.model.train()
    params = [p for p in run.model.parameters() if p.requires_grad]
    # a data-parallel run stops at a step every process agreed on (the request seen after a step, by any of them)
    agreed = False
    limit = min(run.steps_total, run.cfg.pause_at or run.steps_total)
    while state.step < limit:
        if agreed or (stop.requested and not run.dist.on):
            save_checkpoint(run, "signal")
            return "signal"
        t0 = time.time()
        lr = run.scheduler.get_last_lr()[0]
        step_loss, grad_norm, seen_tokens, agreed = _step(run, params, stop)
        run.scheduler.step()
        state.step += 1
        if not math.isfinite(step_loss):
            raise TrainerError(
                "LOSS_NOT_FINITE",
                f"loss became {step_loss} at step {state.step}; lower the learning rate or use fp32",
            )
        state.losses.append(round(step_loss, 6))
        epoch = state.step * run.batch / len(run.train)
        tokens_per_s = seen_tokens / max(1e-9, time.time() - t0)
        norm = grad_norm if math.isfinite(grad_norm) else None
        emit(
            "step",
            step=state.step,
            steps_total=run.steps_total,
            epoch=epoch,
            loss=step_loss,
            lr=lr,
            grad_norm=norm,
            tokens_per_s=tokens_per_s,
        )
        if run.tb:
            run.tb.scalars(
                state.step,
                {
                    "train/loss": step_loss,
                    "train/learning_rate": lr,
                    "train/grad_norm": norm,
                    "train/tokens_per_s": tokens_per_s,
                    "train/epoch": epoch,
                },
            )
        if t.eval_every and state.step % t.eval_every == 0 and state.step < run.steps_total and run.eval:
            if _evaluate_and_track(run):
                save_checkpoint(run, "final")
                return "early"
        if state.step % t.checkpoint_every == 0 and state.step < limit:
            save_checkpoint(run, "interval")
    return "completed" if state.step >= run.steps_total else "paused"


def _report_oom(run, step, shape):
    import torch

    device = run.device
    fields = {
        "step": step,
        "micro_batch_size": run.micro,
        "sequence_length": int(shape[1]),
        "gradient_checkpointing": run.grad_ckpt,
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


def _emit_eval(run, eval_loss, tag="eval"):
    """Report an evaluation; TensorBoard gets it under `tag` (eval: periodic; adapter: the exported weights)."""
    s = run.state
    if run.tb:
        run.tb.scalars(s.step, {f"{tag}/loss": eval_loss, f"{tag}/perplexity": math.exp(min(eval_loss, 50))})
    emit(
        "eval",
        step=s.step,
        eval_loss=eval_loss,
        perplexity=math.exp(min(eval_loss, 50)),
        best_eval_loss=s.best_eval_loss,
        best_step=s.best_step,
    )


def _eval_loss(run, shared=True):
    """The eval split's loss; `shared`: every process of a data-parallel run evaluates its share of the records."""
    dist = run.dist
    mine = run.eval[dist.rank :: dist.world] if shared else run.eval
    part = evaluate_loss_sum(run.model, mine, run.micro, run.tokenizer.pad_token_id, run.device, run.amp, run.head)
    (total,) = dist.reduce_sum([part], run.device) if shared else (part,)
    return total / max(1, label_tokens(run.eval))


def _evaluate_and_track(run):
    """Evaluate now; keep the best weights in output_dir/best. -> True when patience ran out."""
    s = run.state
    el = _eval_loss(run)
    if s.best_eval_loss is None or el < s.best_eval_loss:
        s.best_eval_loss, s.best_step, s.evals_without_improvement = el, s.step, 0
        if run.dist.main:
            _save_best(run)
    else:
        s.evals_without_improvement += 1
    _emit_eval(run, el)
    patience = run.cfg.training.patience
    return bool(patience and s.evals_without_improvement >= patience)


def _save_best(run):
    tmp = run.best_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_weights(run.model, run.cfg.method, tmp)
    shutil.rmtree(run.best_dir, ignore_errors=True)
    os.rename(tmp, run.best_dir)


def peak_memory(device):
    import resource

    import torch

    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux reports KiB


def main(cfg):
    stop = _Stop()
    stop.install()
    run = None
    try:
        run = setup(cfg)
        return _main(run, stop)
    finally:
        stop.uninstall()
        if run is not None:
            run.dist.close()


def stack_versions():
    """The versions of what trained the model (recorded with the registered adapter)."""
    import platform

    import peft
    import torch
    import transformers

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
    }


def _announce(run):
    import torch

    cfg = run.cfg
    emit(
        "started",
        method=cfg.method,
        device=str(run.device),
        dtype=str(run.dtype).replace("torch.", ""),
        trainable_params=run.trainable,
        total_params=run.total,
        train_records=len(run.train),
        eval_records=len(run.eval),
        steps_total=run.steps_total,
        micro_batch_size=run.micro,
        grad_accum=run.accum,
        truncated_records=run.truncated,
        resumed_from_step=run.state.step,
        visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"),
        cuda_devices=torch.cuda.device_count() if torch.cuda.is_available() else 0,
        world_size=run.dist.world,
        versions=stack_versions(),
    )
    processes = f" x {run.dist.world} processes" if run.dist.on else ""
    log(
        f"{run.trainable:,} trainable of {run.total:,} parameters ({100 * run.trainable / run.total:.3f}%); "
        f"{run.batch} sequences per step ({run.micro} x {run.accum} accumulation{processes}); {run.steps_total} steps"
        + (f"; {run.records_used} records packed into {len(run.train)} blocks" if run.packing else "")
    )
    choices = [
        f"attention {getattr(run.model.config, '_attn_implementation', None) or 'default'}",
        "loss in chunks" if run.head is not None else "plain loss",
        f"{run.compiled} layers compiled" if run.compiled else "not compiled",
        "gradient checkpointing" if run.grad_ckpt else "no gradient checkpointing",
    ]
    log("; ".join(choices))
    for note in (run.packing_note, run.micro_note):
        if note:
            log(note)


def _main(run, stop):
    import gc

    cfg = run.cfg
    _announce(run)
    if cfg.init_adapter and not cfg.resume_from and run.eval:
        # where a continued adapter starts: its parent's eval loss (with periodic evaluation, the best to beat)
        if cfg.training.eval_every:
            _evaluate_and_track(run)
        else:
            _emit_eval(run, _eval_loss(run))
    try:
        outcome = train(run, stop)
    except OutOfMemory:
        run.release()
        gc.collect()
        return 3
    state = run.state
    if outcome == "paused":
        # the checkpoint first: it holds the state an uninterrupted run has after this step (then the evaluation)
        save_checkpoint(run, "pause")
        eval_loss = _eval_loss(run) if run.eval else None
        if run.dist.main:
            if eval_loss is not None:
                _emit_eval(run, eval_loss)
            emit("paused", step=state.step, steps_total=run.steps_total, eval_loss=eval_loss)
            if run.tb:
                run.tb.close()
        run.release()
        gc.collect()
        return 0
    done = outcome in ("completed", "early")
    if outcome == "completed":
        if cfg.training.eval_every and run.eval:
            _evaluate_and_track(run)
        save_checkpoint(run, "final")
    if not run.dist.main:  # rank 0 exports the adapter and reports the result
        run.release()
        gc.collect()
        return 0
    if done and state.best_step is not None:
        load_weights(run.model, cfg.method, run.best_dir)
        log(f"exporting the best adapter: step {state.best_step}, eval loss {state.best_eval_loss:.4f}")
    if done and run.eval:
        _emit_eval(run, _eval_loss(run, shared=False), "adapter")
    if run.tb:
        run.tb.close()
    adapter_dir = os.path.join(cfg.output_dir, "adapter")
    tmp = adapter_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    export(run.model, run.tokenizer, cfg.method, tmp)
    shutil.rmtree(adapter_dir, ignore_errors=True)
    os.rename(tmp, adapter_dir)
    emit(
        "finished",
        step=state.step,
        adapter_path=os.path.abspath(adapter_dir),
        adapter_files=ckpt.file_entries(adapter_dir),
        logs_path=os.path.abspath(run.log_dir),
        log_files=ckpt.file_entries(run.log_dir) if os.path.isdir(run.log_dir) else [],
        train_loss=state.losses[-1] if state.losses else None,
        stopped=outcome,
        best_step=state.best_step,
        peak_memory=peak_memory(run.device),
    )
    run.release()
    gc.collect()
    return 0
