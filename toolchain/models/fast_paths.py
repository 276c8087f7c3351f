"""How a model trains and infers fast on this device, and in which arithmetic: bf16 autocast where it pays (the
hardware's rule on CPUs, a timing on GPUs), channels-last memory order where the model takes it. Each choice is
probed on the model itself, and nothing the model holds changes."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.models.modes import evaluating, in_mode


def native_bf16(device: torch.device) -> bool:
    """Whether ``device`` runs bf16 matrix arithmetic in hardware: a CUDA GPU that says so, or a CPU with AMX tiles
    or AVX-512 BF16 (where oneDNN's bf16 convolutions run about twice as fast as fp32; elsewhere they are emulated
    and slower)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    try:
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    except AttributeError:  # a torch without these probes: assume none
        return False


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The forward's autocast dtype in training (None: fp32). Weights, optimizer state and the loss stay fp32;
    evaluation and export always run fp32, so operating points and the gate never depend on it."""
    if precision == "bf16" or (precision == "auto" and native_bf16(device)):
        return torch.bfloat16
    return None


TIMED_DEVICES = ("cuda",)  # where auto times both arithmetics; CPUs follow the hardware rule (reproduce/precision_steps.py)


def is_timed(precision: str, device: torch.device) -> bool:
    """Whether auto chooses the arithmetic by timing it here (a GPU), not by the hardware's rule."""
    return precision == "auto" and device.type in TIMED_DEVICES


def training_dtype(model: nn.Module, x, precision: str, device: torch.device, batch_size: int = 128) -> torch.dtype | None:
    """``precision_choice``'s dtype."""
    return precision_choice(model, x, precision, device, batch_size)[0]


def precision_choice(model: nn.Module, x, precision: str, device: torch.device, batch_size: int = 128) -> tuple[torch.dtype | None, str]:
    """``autocast_dtype``, checked on ``model``, and why (a clause for the log, "" when there is nothing to say). A
    forward that cannot run under bf16 autocast (``index_add_`` or ``scatter`` of bf16 activations into an fp32
    tensor, numpy inside the forward) runs in fp32 under auto; asked for by name, it is a clear error. On a GPU, auto
    times a few training steps of ``batch_size`` rows each way (``faster_of`` decides): a small model's steps are bound
    by kernel launches, which autocast's casts add to, and it trains faster in fp32 there."""
    dtype = autocast_dtype(precision, device)
    if dtype is None or len(x) == 0:
        return dtype, ""
    probe = probe_rows(x, device)
    try:
        with evaluating(model.to(device)), torch.no_grad(), autocast(dtype, device):
            model(probe)
    except Exception as exc:  # noqa: BLE001 - any failure means: this forward is not for bf16
        if precision == "auto":
            return None, "its forward does not run under bf16 autocast"
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        raise UserError(f"--train-precision bf16: the model's forward fails under bf16 autocast ({type(exc).__name__}: {reason}); "
                        "use --train-precision fp32 (or auto, which falls back to it)") from exc
    rows = min(batch_size, len(x))
    if not is_timed(precision, device) or rows < 2:  # one row: batch norm cannot train on it
        return dtype, ""
    ms = step_times(model, x, device, rows)
    if not math.isfinite(ms[None]):  # a training step that fails in fp32 fails in training too, which says why
        return dtype, ""
    if not math.isfinite(ms[dtype]):
        return None, "its training step does not run under bf16 autocast"
    return faster_of(ms, dtype, rows)


BF16_GAIN = 0.95  # bf16 autocast rounds more than fp32: auto takes it for a step at most this fraction of fp32's


def faster_of(ms: dict, dtype: torch.dtype, rows: int) -> tuple[torch.dtype | None, str]:
    """The arithmetic ``step_times``' ``ms`` favour: bf16 where its step is clearly faster (``BF16_GAIN``, above the
    timing's noise, which must not flip a run's arithmetic), else fp32; and the timing."""
    timing = f"a training step of {rows} rows took {ms[dtype]:.2f} ms in bf16 autocast, {ms[None]:.2f} ms in fp32"
    return (dtype, timing) if ms[dtype] <= BF16_GAIN * ms[None] else (None, timing)


def step_times(model: nn.Module, x, device: torch.device, batch_size: int, repeats: int = 3, steps: int = 3) -> dict:
    """Milliseconds of one forward and backward of ``batch_size`` rows, in fp32 (key None) and in bf16 autocast: the
    best of ``repeats`` interleaved runs of ``steps`` steps each, after a warm-up step each (kernel choice); infinite for
    an arithmetic whose step fails. Nothing the model holds changes: gradients are returned, not stored; batch-norm
    statistics and the random state are restored."""
    import time

    params = [p for p in model.parameters() if p.requires_grad]
    rows = torch.as_tensor(np.asarray(x[np.arange(min(batch_size, len(x)))]), dtype=torch.float32).to(device)
    already = in_channels_last(model)
    moved = not already and runs_channels_last(model, x, device)  # as train() will run it
    if moved or already:
        rows = rows.contiguous(memory_format=torch.channels_last)
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    best = {None: math.inf, torch.bfloat16: math.inf}
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run(dtype, n: int) -> float:
        sync()
        t0 = time.perf_counter()
        for _ in range(n):
            with autocast(dtype, device):
                out = model(rows)
            if params:
                torch.autograd.grad(out.float().sum(), params, allow_unused=True)
        sync()
        return (time.perf_counter() - t0) * 1000 / n

    failed = set()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.enable_grad(), in_mode(model, True):
            for i, n in enumerate([1] + [steps] * repeats):  # the first: a warm-up, not counted
                for dtype in best:
                    if dtype in failed:
                        continue
                    try:
                        ms = run(dtype, n)
                    except Exception:  # noqa: BLE001 - a step training cannot run either (a tuple out, a bf16-only failure)
                        failed.add(dtype)
                        best[dtype] = math.inf
                        continue
                    if i:
                        best[dtype] = min(best[dtype], ms)
    finally:
        with torch.no_grad():
            for name, b in model.named_buffers():
                b.copy_(buffers[name])
        if moved:
            model.to(memory_format=torch.contiguous_format)
    return best


def resolved_precision(dtype: torch.dtype | None) -> str:
    """The --train-precision that reproduces a choice of ``precision_choice``: fixed once a run has made it, so that
    every round and the teacher's logits use one arithmetic."""
    return "bf16" if dtype is not None else "fp32"


def arithmetic_label(dtype: torch.dtype | None) -> str:
    return "bf16 autocast" if dtype is not None else "fp32"


def fp32_hint(dtype: torch.dtype | None) -> str:
    """What a diverged training under bf16 autocast can also change (bf16's 8-bit mantissa may be the cause)."""
    return ", or train in fp32 (--train-precision fp32: this ran under bf16 autocast)" if dtype is not None else ""


def autocast(dtype: torch.dtype | None, device: torch.device):
    """Autocast to ``dtype`` on ``device``; a no-op context for None (fp32)."""
    return torch.autocast(device_type=device.type, dtype=dtype or torch.bfloat16, enabled=dtype is not None)


def probe_rows(x, device: torch.device) -> torch.Tensor:
    """The first two rows as a float32 batch: what a probe of a model's forward runs on."""
    return torch.as_tensor(np.asarray(x[np.arange(min(2, len(x)))]), dtype=torch.float32).to(device)


def runs_channels_last(model: nn.Module, x, device: torch.device) -> bool:
    """Train a conv net on image batches in channels-last memory order: oneDNN's CPU convolutions (and cuDNN's
    under bf16) run its forward and backward faster (about 1.3x a step for fmnist-cnn's round shapes on an AVX-512 Xeon). The
    weights move to it here, and back when training ends. A model whose forward cannot take it (``.view(N, -1)``
    of a conv's output, common in older model code) is found by a probe on two rows and keeps the default order."""
    if len(x.shape) != 4 or not any(isinstance(m, nn.Conv2d) for m in model.modules()):
        return False
    probe = probe_rows(x, device)
    try:
        model.to(memory_format=torch.channels_last)  # refused by a model holding a 5-D tensor (a Conv3d after a 2-D stem)
        with evaluating(model), torch.no_grad():  # no BatchNorm statistics move
            model(probe.contiguous(memory_format=torch.channels_last))
        return True
    except Exception:  # noqa: BLE001 - any failure means: train in the default order
        model.to(memory_format=torch.contiguous_format)
        return False


def in_channels_last(model: nn.Module) -> bool:
    """Whether the conv weights are in channels-last order (a 1x1 or one-channel kernel is both: the first that is
    only one of them tells)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            w = m.weight
            if w.is_contiguous() != w.is_contiguous(memory_format=torch.channels_last):
                return w.is_contiguous(memory_format=torch.channels_last)
    return False
