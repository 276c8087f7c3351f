"""Retraining on several processes with PyTorch's own engine: `torchrun --nproc-per-node N -m toolchain compress ...`.

torchrun starts N copies of the command and sets RANK, WORLD_SIZE and LOCAL_RANK; cwtool then joins
a process group (gloo on CPU, NCCL on CUDA) and every training loop wraps its model in
DistributedDataParallel, each process taking its share of every batch (a distributed sampler over
the same seeded order, so the global batches hold the single process's samples; each process's BatchNorm and
class-aware losses see its share alone, as in any DistributedDataParallel run). Everything else -- the
plan search, the operating point, the export -- is the same computation on every process; only
rank 0 writes the run directory and talks, the others wait for it at barriers. Without torchrun
nothing here is used: one process is the default and needs nothing.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["Group", "current", "start", "device_of_this_process", "is_main", "rank_of_this_process", "speaks_for_its_node", "under_torchrun", "barrier", "agreed", "stop"]


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


def start(device: str = "auto") -> Group | None:
    """Join the process group torchrun set up (once); None when running as one process. ``device`` is the run's
    --device: NCCL where it is a GPU (each process takes the GPU of its LOCAL_RANK), gloo on CPU."""
    global _group
    import torch.distributed as dist

    if _group is not None and dist.is_initialized():
        return _group
    env = _torchrun_env()
    if env is None:
        return None
    import torch

    from toolchain.config import device_problem
    from toolchain.errors import UserError

    rank, world, local = env
    on_gpu = device != "cpu" and torch.cuda.is_available()
    backend = "nccl" if on_gpu else "gloo"
    _group = Group(rank, world, local, backend)  # before the checks: a bad input is then said once a machine
    problem = device_problem(device)
    if problem is not None:  # a value cwtool does not run on is said as such
        raise UserError(problem)
    if on_gpu:
        if device not in ("auto", "cuda"):
            raise UserError(f"--device {device} under torchrun: each process takes the GPU of its LOCAL_RANK; "
                            "give --device auto (or cuda), or cpu")
        gpus = torch.cuda.device_count()
        here = _int_env("LOCAL_WORLD_SIZE", local + 1)
        if max(here, local + 1) > gpus:
            raise UserError(f"torchrun started {here} processes on this machine, which has {gpus} GPU(s): each process "
                            f"takes the GPU of its LOCAL_RANK; give --nproc-per-node {gpus} at most, or --device cpu")
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        if "TORCHELASTIC_RUN_ID" in os.environ:  # torchrun's agent set up the rendezvous, and started every peer
            dist.init_process_group(backend=backend)
        else:
            _join_without_torchrun(backend, rank, world)
    return _group


JOIN_TIMEOUT_S = 300.0  # how long a process that torchrun did not start waits for the others WORLD_SIZE names


def _join_without_torchrun(backend: str, rank: int, world: int) -> None:
    """Join a group that RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT describe, set by a launcher other than torchrun
    (a cluster's job operator) or left over in a shell: said at once, and waited for within JOIN_TIMEOUT_S, not the 30
    minutes of torch's rendezvous (a stale WORLD_SIZE=2 waited that long, with nothing said)."""
    import sys
    from datetime import timedelta

    import torch.distributed as dist

    from toolchain.errors import UserError

    unset = "unset WORLD_SIZE and RANK to run as one process, or start cwtool with torchrun"
    if world > MAX_PROCESSES:
        raise UserError(f"WORLD_SIZE={world} is more processes than a group can hold ({MAX_PROCESSES:,} at most): {unset}")
    if rank < 0:
        raise UserError(f"RANK={rank} is negative (a process's rank counts from 0): {unset}")
    if rank >= world:
        raise UserError(f"RANK={rank} is not below WORLD_SIZE={world}: {unset}")
    addr, port = os.environ.get("MASTER_ADDR", "").strip(), os.environ.get("MASTER_PORT", "").strip()
    if not addr or not port.isdigit() or not 0 < int(port) < 65536:
        missing = "MASTER_ADDR is not set" if not addr else f"MASTER_PORT {port!r} is not a port number"
        raise UserError(f"WORLD_SIZE={world} and RANK={rank} are set, but torchrun did not start this process and {missing}: {unset}")
    _resolved(addr, port, unset)
    if speaks_for_its_node():
        print(f"cwtool: WORLD_SIZE={world} and RANK={rank} are set (not by torchrun): waiting up to {JOIN_TIMEOUT_S:.0f} s "
              f"for the other processes at {addr}:{port} ({unset})", file=sys.stderr, flush=True)
    try:
        store = dist.TCPStore(addr, int(port), world, rank == 0, timeout=timedelta(seconds=JOIN_TIMEOUT_S), wait_for_workers=True)
    except (RuntimeError, OSError) as exc:
        raise UserError(f"the other processes of WORLD_SIZE={world} did not join at {addr}:{port} within {JOIN_TIMEOUT_S:.0f} s "
                        f"({' '.join(str(exc).split())[:200]}): {unset}") from exc
    dist.init_process_group(backend=backend, store=store, rank=rank, world_size=world)


MAX_PROCESSES = 1_000_000  # torch's store counts its workers in an int: a 20-digit WORLD_SIZE ended in a TypeError


def _resolved(addr: str, port: str, unset: str) -> None:
    """MASTER_ADDR looked up once, before the wait: a name no resolver knows (or 256.1.1.1) waited the whole JOIN_TIMEOUT_S,
    printing a line of torch's every few seconds."""
    import socket

    from toolchain.errors import UserError, one_line

    try:
        socket.getaddrinfo(addr, int(port), type=socket.SOCK_STREAM)
    except (OSError, UnicodeError) as exc:
        raise UserError(f"MASTER_ADDR {one_line(addr)[:200]!r} is not an address this machine can reach "
                        f"({one_line(str(exc))[:200]}): {unset}") from exc


def _int_env(name: str, default: int) -> int:
    try:
        return int(os.environ.get(name, default))
    except ValueError:
        return default


def device_of_this_process():
    """The GPU of this process's LOCAL_RANK under an NCCL group; None otherwise (the run's --device holds)."""
    if _group is None or _group.backend != "nccl":
        return None
    import torch

    return torch.device("cuda", _group.local_rank)


def current() -> Group | None:
    return _group


def is_main() -> bool:
    return _group is None or _group.rank == 0


def _started_by_torchrun() -> Group | None:
    """This process's place among those torchrun started, before it joins their group (torchrun's agent sets
    TORCHELASTIC_RUN_ID; a process that only inherited RANK and WORLD_SIZE, in a pod or a script, was not started so)."""
    env = _torchrun_env()
    if env is None or "TORCHELASTIC_RUN_ID" not in os.environ:
        return None
    rank, world, local = env
    return Group(rank, world, local, "")


def under_torchrun() -> bool:
    """Whether torchrun started this process as one of several."""
    return _started_by_torchrun() is not None


def rank_of_this_process() -> int:
    """0 for a single process; under torchrun the process's global rank, joined or not yet."""
    place = _group or _started_by_torchrun()
    return place.rank if place is not None else 0


def speaks_for_its_node() -> bool:
    """Whether this process says a bad input or a stop: process 0, and the first process of every other machine. Every
    process meets the same input and the same torchrun stop, but each machine's torchrun has a terminal of its own, and a
    path missing on machine 2 alone was said nowhere (its processes left in silence, process 0 then lost its peers). A
    bad input found before the group is joined (a flag, a missing file) is said the same way."""
    place = _group or _started_by_torchrun()
    return place is None or place.rank == 0 or place.local_rank == 0


def barrier() -> None:
    if _group is not None:
        import torch.distributed as dist

        dist.barrier()


def agreed(value):
    """Process 0's ``value`` on every process (a choice made from a timing, which each process would make alone)."""
    if _group is None:
        return value
    import torch.distributed as dist

    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def mean_over_processes(value):
    """The mean over the processes of ``value``, a tensor of which each process holds its own share (a loss summed
    over its part of every batch), on every process."""
    if _group is None:
        return value
    import torch.distributed as dist

    dist.all_reduce(value, op=dist.ReduceOp.SUM)
    return value / _group.world


def same_buffers(model) -> None:
    """One set of buffers on every process: BatchNorm's running statistics, updated by each process on its own share of
    every batch, are averaged; every other buffer (counters, a mask's fill value near float32's limit, which a sum would
    overflow) is process 0's. DistributedDataParallel keeps the weights alike
    and broadcasts process 0's buffers before each forward, not after the last: the processes then judged validation
    with different statistics, decided differently and lost each other (a reviewer's finding)."""
    if _group is None:
        return
    import torch.distributed as dist
    from torch.nn.modules.batchnorm import _NormBase

    statistics = {id(getattr(m, name)) for m in model.modules() if isinstance(m, _NormBase)
                  for name in ("running_mean", "running_var") if getattr(m, name, None) is not None}
    for buffer in model.buffers():
        if id(buffer) in statistics:
            dist.all_reduce(buffer, op=dist.ReduceOp.SUM)
            buffer.div_(_group.world)
        else:
            dist.broadcast(buffer, src=0)


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
