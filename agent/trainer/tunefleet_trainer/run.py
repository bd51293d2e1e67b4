"""A training run as one typed object: what setup() builds from the run config and the
train loop, checkpoints and export read (recipe.py, resume.py)."""

import math
import os
from dataclasses import dataclass, field
from typing import Any, List, Optional

from .config import RunConfig
from .data import pack, read_jsonl, tokenize_all
from .distributed import Dist
from .distributed import from_env as dist_from_env
from .distributed import init as dist_init
from .errors import TrainerError, read_json
from .modeling import (
    auto_micro_batch,
    check_model_dir,
    compile_layers,
    keeps_records_apart,
    load_base,
    load_tokenizer,
    loss_head,
    memory_free,
    pick_device,
    pick_dtype,
    require_bitsandbytes,
    wrap,
)
from .resume import restore, seed_all
from .tensorboard import LOG_DIR, EventWriter


@dataclass
class TrainState:
    """What changes step by step, saved in every checkpoint's state.json."""

    step: int = 0
    best_eval_loss: Optional[float] = None
    best_step: Optional[int] = None
    evals_without_improvement: int = 0
    losses: List[float] = field(default_factory=list)

    def saved(self):
        return {
            "step": self.step,
            "best_eval_loss": self.best_eval_loss,
            "best_step": self.best_step,
            "evals_without_improvement": self.evals_without_improvement,
            "losses": self.losses,
        }

    def restore(self, saved):
        self.step = saved["step"]
        self.best_eval_loss = saved.get("best_eval_loss")
        self.best_step = saved.get("best_step")
        self.evals_without_improvement = saved.get("evals_without_improvement", 0)
        self.losses = saved.get("losses", [])


@dataclass
class Run:
    cfg: RunConfig
    device: Any
    dtype: Any
    tokenizer: Any
    model: Any
    train: list
    eval: list
    truncated: int
    records_used: int
    optimizer: Any = None
    scheduler: Any = None
    scaler: Any = None
    micro: int = 1
    accum: int = 1
    steps_total: int = 1
    trainable: int = 0
    total: int = 0
    micro_note: Optional[str] = None
    packing_note: Optional[str] = None
    # the choices "auto" resolved for this run: packed train blocks, gradient checkpointing, compiled layers
    packing: bool = False
    grad_ckpt: bool = False
    compiled: int = 0
    # the output head the chunked loss computes from (modeling.loss_head); None: the plain loss
    head: Any = None
    # recipe.PhaseClock when a benchmark times the phases of each step
    clock: Any = None
    state: TrainState = field(default_factory=TrainState)
    dist: Dist = field(default_factory=Dist)
    # the model wrapped for data-parallel training (DDP), or None for a trainer alone
    ddp: Any = None
    # tensorboard.EventWriter of rank 0 (None on the other ranks)
    tb: Any = None

    @property
    def batch(self):
        """Sequences per optimizer step, over all processes."""
        return self.micro * self.accum * self.dist.world

    @property
    def net(self):
        """What the train step runs forward and backward through."""
        return self.ddp if self.ddp is not None else self.model

    @property
    def amp(self):
        """The autocast dtype: None for fp32 (no autocast)."""
        return amp_dtype(self.dtype)

    @property
    def log_dir(self):
        """The run's TensorBoard event files (tensorboard.py)."""
        return os.path.join(self.cfg.output_dir, LOG_DIR)

    @property
    def best_dir(self):
        """The best weights seen by periodic evaluation."""
        return os.path.join(self.cfg.output_dir, "best")

    def release(self):
        """Drop the model, optimizer and data so their memory can be freed."""
        self.model = self.ddp = self.optimizer = self.scheduler = self.scaler = self.tokenizer = None
        self.train, self.eval = [], []


def amp_dtype(dtype):
    """The autocast dtype for a model loaded in dtype: None for fp32 (no autocast)."""
    import torch

    return None if dtype == torch.float32 else dtype


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


def _read_data(cfg, tokenizer):
    t = cfg.training
    records, fmt = read_jsonl(cfg.train_path)
    train, truncated = tokenize_all(records, fmt, tokenizer, t.max_seq_len)
    if not train:
        raise TrainerError("DATASET_EMPTY", f"{cfg.train_path}: no record has a token to learn from")
    records_used = len(train)
    evals = []
    if cfg.eval_path:
        erecs, efmt = read_jsonl(cfg.eval_path)
        evals, etrunc = tokenize_all(erecs, efmt, tokenizer, t.max_seq_len)
        truncated += etrunc
    return train, evals, truncated, records_used


def _load(cfg, dtype, device):
    """The base model with the attention kernels asked for (auto: FlexAttention for packed blocks on CUDA, where
    its document mask skips the blocks no record attends to; SDPA otherwise). -> (model, note or None)"""
    from .config import PACKABLE

    t = cfg.training
    asked = t.attention
    packs = t.packing is True or (t.packing == "auto" and cfg.method in PACKABLE)
    if asked == "auto":
        if not (packs and device.type == "cuda"):
            return load_base(cfg.model_path, dtype, device, cfg.method), None
        try:
            return load_base(cfg.model_path, dtype, device, cfg.method, "flex_attention"), None
        except (ImportError, ValueError) as e:
            note = f"attention: sdpa (flex_attention unavailable: {str(e).splitlines()[0][:200]})"
            return load_base(cfg.model_path, dtype, device, cfg.method, "sdpa"), note
    if asked == "flex_attention" and device.type != "cuda":
        raise TrainerError(
            "CONFIG_INVALID",
            "training.attention: flex_attention trains only on CUDA (torch has no "
            "FlexAttention backward on the CPU); use auto or sdpa on this agent",
        )
    try:
        return load_base(cfg.model_path, dtype, device, cfg.method, asked), None
    except (ImportError, ValueError) as e:
        raise TrainerError("CONFIG_INVALID", f"training.attention: {asked} cannot be used here: {e}") from e


def _packing(cfg, model, device):
    """Pack the train records? -> (yes, a note when auto chose not to). auto packs where it is exact: a method whose
    tokens are the records' own, and a model that keeps packed records apart (tried on a probe)."""
    from .config import PACKABLE

    asked = cfg.training.packing
    if cfg.resume_from:  # the data order continues over what the checkpoint trained on: blocks or records
        saved = read_json(os.path.join(cfg.resume_from, "state.json"), "CHECKPOINT_CORRUPT").get("packing", False)
        if saved and not keeps_records_apart(model, device):
            raise TrainerError(
                "CHECKPOINT_MISMATCH",
                f"{cfg.resume_from}: trained on packed blocks, but on this agent {type(model).__name__} would let "
                "packed records attend to each other (another transformers version?); resume it where it was trained",
            )
        return bool(saved), None
    if asked is False or (asked == "auto" and cfg.method not in PACKABLE):
        return False, None
    if keeps_records_apart(model, device):
        return True, None
    if asked is True:
        raise TrainerError(
            "CONFIG_INVALID",
            f"training.packing: {type(model).__name__} lets packed records attend to each other (it ignores "
            "restarting position ids); use packing: false or auto",
        )
    return False, f"records not packed: {type(model).__name__} would let packed records attend to each other"


def _per_process(cfg, dist):
    """Sequences of each step one process takes: batch_size, shared equally by a data-parallel run's processes."""
    b = cfg.training.batch_size
    if b % dist.world:
        raise TrainerError(
            "CONFIG_INVALID", f"training.batch_size {b} does not divide over {dist.world} data-parallel processes"
        )
    return b // dist.world


def _micro_batch(run):
    """The micro-batch: the spec's, or the largest that fits the free memory (inside the session's reservation)."""
    import torch

    t, cfg = run.cfg.training, run.cfg
    share = _per_process(cfg, run.dist)
    if t.micro_batch_size:
        return min(t.micro_batch_size, share), None
    longest = max(len(example[0]) for example in run.train)
    free = memory_free(run.device)
    if cfg.memory_budget:
        free = min(free, cfg.memory_budget)  # other sessions may share this device: stay inside the reservation
    micro, per_seq = auto_micro_batch(
        run.model.config, longest, share, free, torch.finfo(run.dtype).bits // 8, run.grad_ckpt, run.head is not None
    )
    micro = run.dist.reduce_min(micro, run.device)  # every process steps with the same micro-batch
    note = (
        f"micro-batch {micro} chosen from {free / 2**30:.1f} GiB free "
        f"({per_seq / 2**20:.1f} MiB of activations per sequence of {longest} tokens)"
    )
    return micro, note


def _optimizer(run, params):
    import torch

    t = run.cfg.training
    if t.optimizer == "adamw_8bit":
        if run.device.type != "cuda":
            raise TrainerError(
                "OPTIMIZER_UNAVAILABLE",
                "adamw_8bit needs a CUDA GPU (bitsandbytes 8-bit optimizer states); use adamw on this agent",
            )
        bnb = require_bitsandbytes("OPTIMIZER_UNAVAILABLE", "adamw_8bit")
        return bnb.optim.AdamW8bit(params, lr=t.learning_rate, weight_decay=t.weight_decay)
    # fused: one kernel for the whole update on CUDA (the state dict is the same, so checkpoints move between agents)
    fused = run.device.type == "cuda" or None
    return torch.optim.AdamW(params, lr=t.learning_rate, weight_decay=t.weight_decay, fused=fused)


def setup(cfg):
    """Load the data, the model and its adapter, choose the micro-batch, build the optimizer; resume if asked."""
    import torch

    t = cfg.training
    dist = dist_from_env()
    device = pick_device(cfg, dist.local_rank if dist.on else None)
    dist_init(dist, device)
    dtype = pick_dtype(t.precision, device)
    seed_all(t.seed)
    check_model_dir(cfg.model_path)
    tokenizer = load_tokenizer(cfg.model_path)
    train, evals, truncated, records_used = _read_data(cfg, tokenizer)

    model, attention_note = _load(cfg, dtype, device)
    packing, packing_note = _packing(cfg, model, device)
    if packing:
        train = pack(train, t.max_seq_len)
    grad_ckpt = t.gradient_checkpointing if t.gradient_checkpointing != "auto" else cfg.method == "qlora"
    if grad_ckpt:
        # DDP and reentrant checkpointing do not mix (a parameter would be marked ready twice)
        model.gradient_checkpointing_enable(
            **({"gradient_checkpointing_kwargs": {"use_reentrant": False}} if dist.on else {})
        )
        if hasattr(model, "enable_input_require_grads"):
            model.enable_input_require_grads()
    model, trainable, total = wrap(model, cfg)
    run = Run(cfg, device, dtype, tokenizer, model, train, evals, truncated, records_used, dist=dist)
    run.trainable, run.total = trainable, total
    run.packing, run.grad_ckpt = packing, grad_ckpt
    run.packing_note = "; ".join(n for n in (attention_note, packing_note) if n) or None
    run.head = loss_head(model, device) if t.chunked_loss else None
    if t.compile is True or (t.compile == "auto" and device.type == "cuda"):
        run.compiled = compile_layers(model)
    run.micro, run.micro_note = _micro_batch(run)
    run.accum = max(1, _per_process(cfg, dist) // run.micro)
    run.steps_total = t.max_steps or max(1, math.ceil(t.epochs * len(train) / run.batch))
    run.optimizer = _optimizer(run, [p for p in model.parameters() if p.requires_grad])
    warmup = int(round(t.warmup_ratio * run.steps_total))
    run.scheduler = torch.optim.lr_scheduler.LambdaLR(run.optimizer, lr_lambda(t.lr_scheduler, warmup, run.steps_total))
    run.scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 and cfg.method != "full" else None
    if cfg.resume_from:
        restore(run, cfg.resume_from)
    if dist.main:
        run.tb = EventWriter(run.log_dir)
    if dist.on:
        from torch.nn.parallel import DistributedDataParallel

        # every process loaded the same weights (and checkpoint); DDP still starts them from rank 0's
        run.ddp = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    return run
