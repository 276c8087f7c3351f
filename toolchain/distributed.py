"""Retraining on several processes with PyTorch's own engine: `torchrun --nproc-per-node N -m toolchain compress ...`.

torchrun starts N copies of the command and sets RANK, WORLD_SIZE and LOCAL_RANK; cwtool then joins
a process group (gloo on CPU, NCCL on CUDA) and every training loop wraps its model in
DistributedDataParallel, each process taking its share of every batch (a distributed sampler over
the same seeded order, so the global batches are the single process's). Everything else -- the
plan search, the operating point, the export -- is the same computation on every process; only
rank 0 writes the run directory and talks, the others wait for it at barriers. Without torchrun
nothing here is used: one process is the default and needs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Group", "current", "start", "is_main", "speaks_for_its_node", "barrier", "stop"]


@dataclass(frozen=True)
class Group:
    rank: int
    world: int
    local_rank: int
    backend: str


_group: Group | None = None


def _torchrun_env() -> tuple[int, int, int] | None:
    try:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
    except ValueError:
        return None
    return (rank, world, local) if world > 1 else None


def start() -> Group | None:
    """Join the process group torchrun set up (once); None when running as one process."""
    global _group
    if _group is not None:
        return _group
    env = _torchrun_env()
    if env is None:
        return None
    import torch
    import torch.distributed as dist

    rank, world, local = env
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    _group = Group(rank, world, local, backend)
    return _group


def current() -> Group | None:
    return _group


def is_main() -> bool:
    return _group is None or _group.rank == 0


def speaks_for_its_node() -> bool:
    """Whether this process says a bad input or a stop: process 0, and the first process of every other machine. Every
    process meets the same input and the same torchrun stop, but each machine's torchrun has a terminal of its own, and a
    path missing on machine 2 alone was said nowhere (its processes left in silence, process 0 then lost its peers)."""
    return _group is None or _group.rank == 0 or _group.local_rank == 0


def barrier() -> None:
    if _group is not None:
        import torch.distributed as dist

        dist.barrier()


def stop() -> None:
    global _group
    if _group is not None:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()
        _group = None


_PEER_LOSS = ("Connection closed by peer", "Connection reset by peer", "Broken pipe", "NCCL communicator was aborted",
              "Socket Timeout", "Timed out")


def peer_lost(exc: BaseException) -> bool:
    """Whether ``exc`` is the collective failing because another torchrun process stopped (killed, out of memory):
    an interruption of the run, not a bug in it."""
    if current() is None:
        return False
    import torch.distributed as dist

    backend_error = getattr(dist, "DistBackendError", ())
    return isinstance(exc, backend_error) or (isinstance(exc, RuntimeError) and any(s in str(exc) for s in _PEER_LOSS))
