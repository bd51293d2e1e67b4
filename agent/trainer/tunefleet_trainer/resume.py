"""Exact resume: what a checkpoint holds beyond its manifest, written and read back.

A checkpoint holds the trained weights (weights.py), the optimizer state, the LR
scheduler, every RNG state and the training state (step, best eval, losses). The data
order is a pure function of (seed, epoch) and step s always consumes examples
[s*B, (s+1)*B) of it (data.examples_for_step), so a resumed run sees the same batches
and continues the same loss trajectory. Files are committed by checkpoint.py: complete
or absent, never half.
"""

import errno
import json
import os
import random
import shutil
import time

from . import checkpoint as ckpt
from .errors import TrainerError, read_json
from .events import emit
from .tensorboard import LOG_DIR, copy_logs
from .weights import checkpoint_weights_dir, load_weights, save_weights

STATE_FILE = "state.json"
RNG_FILE = "rng.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


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


def restore(run, path):
    """Load the checkpoint at `path` (its manifest verified first) into the run's model, optimizer and state."""
    import torch
    from safetensors.torch import load_file

    manifest = ckpt.verify(path)
    load_weights(run.model, run.cfg.method, checkpoint_weights_dir(path, run.cfg.method))
    run.optimizer.load_state_dict(torch.load(os.path.join(path, OPTIMIZER_FILE), weights_only=True, map_location="cpu"))
    saved = read_json(os.path.join(path, STATE_FILE), "CHECKPOINT_CORRUPT")
    run.scheduler.load_state_dict(saved["scheduler"])
    _set_rng_state(load_file(os.path.join(path, RNG_FILE)), saved["rng"])
    run.state.restore(saved)
    if saved["step"] != manifest["step"]:
        raise TrainerError(
            "CHECKPOINT_CORRUPT", f"{path}: state.json says step {saved['step']}, manifest says {manifest['step']}"
        )
    if run.dist.main:  # the event files up to this step; what a lost attempt logged after it is dropped
        copy_logs(os.path.join(path, LOG_DIR), run.log_dir)
    best = os.path.join(path, "best")
    if os.path.isdir(best):
        shutil.rmtree(run.best_dir, ignore_errors=True)
        shutil.copytree(best, run.best_dir)


def _write_files(run, tmp):
    import torch
    from safetensors.torch import save_file

    cfg, state = run.cfg, run.state
    save_weights(run.model, cfg.method, checkpoint_weights_dir(tmp, cfg.method))
    torch.save(run.optimizer.state_dict(), os.path.join(tmp, OPTIMIZER_FILE))
    tensors, meta = _rng_state()
    save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(tmp, RNG_FILE))
    if os.path.isdir(run.best_dir):
        shutil.copytree(run.best_dir, os.path.join(tmp, "best"))
    copy_logs(run.log_dir, os.path.join(tmp, LOG_DIR))
    saved = {
        **state.saved(),
        "steps_total": run.steps_total,
        "batch_size": run.batch,
        "data_position": state.step * run.batch,
        "scheduler": run.scheduler.state_dict(),
        "rng": meta,
        "method": cfg.method,
        "seed": cfg.training.seed,
        # the data order is over packed blocks or over records: a resume must use the same (run._packing)
        "packing": run.packing,
    }
    with open(os.path.join(tmp, STATE_FILE), "w", encoding="utf-8") as f:
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
    """Write, commit and announce a checkpoint of the run at its current step; returns its directory (None on a
    data-parallel rank other than 0: rank 0 writes the job's checkpoints, and they hold what any world size needs)."""
    if not run.dist.main:
        return None
    t_start = time.time()
    step = run.state.step
    root = os.path.join(run.cfg.output_dir, "checkpoints")
    os.makedirs(root, exist_ok=True)
    name = f"step-{step:08d}"
    tmp = os.path.join(root, name + ".tmp")
    final = os.path.join(root, name)
    # every write goes to tmp; a failure anywhere (a full disk above all) removes tmp and
    # leaves the checkpoints already committed as they were
    try:
        shutil.rmtree(tmp, ignore_errors=True)
        os.makedirs(tmp)
        _write_files(run, tmp)
        files = ckpt.commit(tmp, final, step)
        seconds = time.time() - t_start
    except Exception as e:  # noqa: BLE001 - OSError, or torch's / safetensors' wrapping of it
        shutil.rmtree(tmp, ignore_errors=True)
        if os.path.isdir(final) and not os.path.isfile(os.path.join(final, ckpt.MANIFEST)):
            shutil.rmtree(final, ignore_errors=True)  # renamed but its manifest never written: not a checkpoint
        if _no_space(e, root):
            free = shutil.disk_usage(root).free
            raise TrainerError(
                "DISK_FULL",
                f"no space left for checkpoint step {step} under {root} ({free / 2**20:.1f} MiB free); "
                "the previous checkpoint is intact",
            ) from e
        if not isinstance(e, OSError):
            raise
        raise TrainerError("CHECKPOINT_WRITE_FAILED", f"{final}: {e.strerror or e}") from e
    emit("checkpoint", step=step, path=os.path.abspath(final), files=files, reason=reason, save_seconds=seconds)
    return final
