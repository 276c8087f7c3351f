"""Batches of a split's inputs as torch tensors, read ahead by DataLoader worker processes when they are read
on demand (an ImageFolder decoded per sample, a mapped .npz), so decoding overlaps training and inference.

The caller fixes which rows make each batch (a list of index arrays, in order): the batches come back in
that order whatever the number of workers, so results do not depend on it. Arrays held in memory are
indexed directly (no loader, no copies beyond the batch). A worker that hits bad input (an unreadable image)
hands its one-line message back instead of raising, and the main process raises it as a `UserError`.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from toolchain.data.samples import is_lazy
from toolchain.errors import UserError
from toolchain.limits import usable_cores

__all__ = ["MAX_AUTO_WORKERS", "BatchReader", "auto_workers", "give_back_freed_memory"]

MAX_AUTO_WORKERS = 4


def auto_workers(x, batches: int, processes: int = 1) -> int:
    """Worker processes for reading ``batches`` batches of ``x``: none for arrays held in memory or a handful
    of batches (starting a worker costs more), else one per CPU core left beside the training processes
    (``processes``), at most MAX_AUTO_WORKERS."""
    if not is_lazy(x) or batches < 4:
        return 0
    cores = usable_cores()
    return max(0, min(MAX_AUTO_WORKERS, cores // max(1, processes) - 1))


def give_back_freed_memory() -> None:
    """Return the heap's free pages to the OS after a pass over a split (glibc's malloc_trim; elsewhere
    nothing). A pass allocates batch-sized blocks (16 MB of input, as much again in activations); glibc
    raises its mmap threshold after the first ones are freed, so later ones come from the heap, and the
    holes they leave are not given back: without this, a process's resident memory grew with every pass
    and with the number of images (3.0 GB for one compress round on 20,000 224-px images, 0.5 GB for
    evaluate)."""
    global _LIBC
    if _LIBC is None:
        import ctypes
        import ctypes.util

        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):  # not glibc (macOS, musl): the allocator keeps its own ways
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC = None


class _Rows(torch.utils.data.Dataset):
    """Item ``index`` (an index array) -> (float32 batch, None), or (None, message) on bad input."""

    def __init__(self, x):
        self.x = x

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, index):
        try:
            return torch.from_numpy(np.ascontiguousarray(self.x[index], dtype=np.float32)), None
        except UserError as exc:
            return None, str(exc)


class _Plan(torch.utils.data.Sampler):
    """The index arrays of the current pass, set before each pass (persistent workers keep running)."""

    def __init__(self):
        self.plan: Sequence[np.ndarray] = []

    def __iter__(self):
        return iter(self.plan)

    def __len__(self) -> int:
        return len(self.plan)


def _as_is(item):
    return item


def _die_with_parent(parent: int, worker_id: int) -> None:
    """A worker's first act: ask Linux to kill it when the process that started it dies. Without this a worker of a
    process killed with kill -9 (or by the OOM killer) goes on reading images until its own check of its parent,
    every 5 s. Elsewhere (no prctl) that check stays the only one."""
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGKILL), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the request was in place
        os._exit(0)


def _worker_lost(exc: RuntimeError) -> str | None:
    """The line for a DataLoader worker that died (the kernel's out-of-memory killer ends one with SIGKILL), which
    torch raises as a RuntimeError; None for any other error."""
    text = str(exc)
    if not text.startswith("DataLoader worker") or not ("killed by signal" in text or "exited unexpectedly" in text):
        return None
    said = text.split(". ")[0].strip().rstrip(".")  # "DataLoader worker (pid 123) is killed by signal: Killed"
    return (f"a process reading the data ended before its batches were read ({said}); the system may be out of "
            "memory: run again with fewer --workers (0 reads in this process)")


class BatchReader:
    """Reads the batches of one split, pass after pass, with ``workers`` processes (0: in this process)."""

    def __init__(self, x, workers: int = 0, pin_memory: bool = False):
        self.x = x
        self.workers = int(workers) if is_lazy(x) else 0
        self._plan = _Plan()
        self._loader = None
        if self.workers:
            self._loader = torch.utils.data.DataLoader(
                _Rows(x), batch_size=None, sampler=self._plan, num_workers=self.workers, collate_fn=_as_is,
                persistent_workers=True, prefetch_factor=2, pin_memory=pin_memory,
                worker_init_fn=functools.partial(_die_with_parent, os.getpid()))
        elif is_lazy(x):
            self._rows = _Rows(x)

    def read(self, plan: Sequence[np.ndarray]) -> Iterator[torch.Tensor]:
        """The batches ``x[index]`` for each index array of ``plan``, in order, as float32 tensors."""
        if not is_lazy(self.x):
            for index in plan:
                yield torch.from_numpy(np.ascontiguousarray(self.x[index], dtype=np.float32))
            return
        if self._loader is None:
            items = (self._rows[index] for index in plan)
        else:
            self._plan.plan = [np.asarray(i, dtype=np.int64) for i in plan]
            items = iter(self._loader)
        try:
            for batch, problem in items:
                if problem is not None:
                    raise UserError(problem)
                yield batch
        except RuntimeError as exc:
            lost = _worker_lost(exc)
            if lost is None:
                raise
            raise UserError(lost) from exc

    def close(self) -> None:
        """Stop the worker processes (they also stop when the reader is garbage-collected)."""
        loader, self._loader = self._loader, None
        if loader is not None:
            iterator = getattr(loader, "_iterator", None)
            if iterator is not None:
                iterator._shutdown_workers()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
