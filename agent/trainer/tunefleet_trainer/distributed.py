"""Data-parallel training: one process per device, started by torchrun, on one host or a gang of hosts.

`python -m tunefleet_trainer train --config run.json --processes N` (N > 1) is the
launcher: it runs torchrun --standalone --nproc-per-node N in this process (so it dies
with the agent like a lone trainer does, and its workers die with it), and each worker
trains with torch.distributed (NCCL on CUDA, gloo on CPU) wrapped in DDP.

Every process holds the same data; step s still consumes examples_for_step(s) of the
global batch, and rank r takes its r-th equal share of them. The loss is normalised by
the step's label tokens over all ranks, so the gradient DDP averages (times the world
size) is the one-process gradient of the same batch: the loss curve, the checkpoints and
the data position do not depend on the number of processes, and a job trained on four
devices resumes on two or one. Only rank 0 writes checkpoints, the best weights, the
adapter and events (other ranks report only their own error or oom).

A gang (`--nnodes M --node-rank R --master-addr A --master-port P`) runs the same on M
hosts: torchrun's static rendezvous at rank 0's address (its TCP store on port P), every
host's processes in one process group. The first process of each other host (local rank
0) reports its own steps too, to its own agent, so that every member's agent heartbeats
its own progress. Rank 0 checkpoints right after the step's closing collective (the
loss and token sums every rank contributes to), so every rank has finished the step
when the checkpoint is written: it is complete across ranks (model, optimizer,
scheduler, RNG and data position, which all ranks share).
"""

import os
import sys
from dataclasses import dataclass

from .errors import TrainerError

LAUNCHER_PID = "TUNEFLEET_LAUNCHER_PID"
# what the first process of a gang's other hosts reports to its agent: its progress and its own failure
NODE_LEADER_EVENTS = ("started", "step", "error", "oom")


@dataclass
class Gang:
    """This host's place in a gang of hosts (torchrun --nnodes with a static rendezvous at rank 0)."""

    nodes: int
    node_rank: int
    master_addr: str
    master_port: int


@dataclass
class Dist:
    """This process's place in the run: world 1 for a trainer alone."""

    world: int = 1
    rank: int = 0
    local_rank: int = 0

    @property
    def main(self):
        return self.rank == 0

    @property
    def on(self):
        return self.world > 1

    def reduce_sum(self, values, device):
        """Sums of `values` (floats) over all processes, in one collective."""
        if not self.on:
            return list(values)
        import torch
        import torch.distributed as td

        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
        td.all_reduce(t, op=td.ReduceOp.SUM)
        return t.tolist()

    def reduce_min(self, value, device):
        if not self.on:
            return value
        import torch
        import torch.distributed as td

        t = torch.tensor([int(value)], dtype=torch.int64, device=device)
        td.all_reduce(t, op=td.ReduceOp.MIN)
        return int(t.item())

    def shard(self, items):
        """This rank's equal, contiguous share of `items` (the step's batch)."""
        per = len(items) // self.world
        return items[self.rank * per : (self.rank + 1) * per]

    def close(self):
        if self.on:
            import torch.distributed as td

            if td.is_initialized():
                td.destroy_process_group()


def from_env(env=os.environ):
    """The run's shape from torchrun's environment (WORLD_SIZE, RANK, LOCAL_RANK)."""
    try:
        world = int(env.get("WORLD_SIZE", "1"))
        rank = int(env.get("RANK", "0"))
        local = int(env.get("LOCAL_RANK", str(rank)))
    except ValueError as e:
        raise TrainerError("CONFIG_INVALID", f"torchrun environment: {e}") from e
    if world < 1 or not 0 <= rank < world:
        raise TrainerError("CONFIG_INVALID", f"torchrun environment: rank {rank} of world size {world}")
    return Dist(world=world, rank=rank, local_rank=local)


def init(dist, device):
    """Join the process group (NCCL on CUDA, gloo on CPU); rank 0 alone speaks on stdout from here on."""
    if not dist.on:
        return
    import datetime

    import torch.distributed as td

    from . import events

    events.speak_only(dist.main, NODE_LEADER_EVENTS if dist.local_rank == 0 else ("error", "oom"))
    backend = "nccl" if device.type == "cuda" else "gloo"
    td.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=10))


def launch(command, config_path, processes, gang=None):
    """Run `processes` workers of `command` under torchrun in this process: --standalone, or as node
    `gang.node_rank` of a gang. -> exit code.

    A worker's failure ends the run (torchrun stops the others); the exit code is the
    first failed worker's (3 out of memory, 2 bad input), so the agent reads it as it
    reads a lone trainer's.
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    os.environ[LAUNCHER_PID] = str(os.getpid())
    # torchrun passes the agent's SIGTERM on to its workers (they checkpoint and stop) and waits for them; the agent's
    # own grace period, not torchrun's 30 s, decides when they are killed
    os.environ.setdefault("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", "86400")
    where = ["--standalone"]
    if gang is not None:
        where = [
            f"--nnodes={gang.nodes}",
            f"--node-rank={gang.node_rank}",
            f"--master-addr={gang.master_addr}",
            f"--master-port={gang.master_port}",
            "--rdzv-backend=static",
        ]
    args = get_args_parser().parse_args(
        [
            *where,
            f"--nproc-per-node={processes}",
            "--max-restarts=0",
            "--monitor-interval=0.5",
            "-m",
            "tunefleet_trainer",
            command,
            "--config",
            config_path,
        ]
    )
    try:
        run(args)
    except SignalException as e:
        print(f"tunefleet_trainer: {e}; the workers were told to checkpoint and stop", file=sys.stderr)
        return 128 + int(e.sigval)
    except ChildFailedError as e:
        rank, failure = e.get_first_failure()
        code = failure.exitcode
        print(f"tunefleet_trainer: rank {rank} of {processes} failed (exit {code})", file=sys.stderr)
        return code if code > 0 else 1
    return 0
