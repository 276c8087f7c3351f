"""`cwtool bench`: batch-1 latency of an exported artifact in its own runtime on THIS machine.

numpy and the runtimes only (no torch): it runs on the device too, which is where its numbers mean
most. With a target profile it adds an ESTIMATED latency on that device, from MACs and the profile.
"""

from __future__ import annotations

import gc
import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError

TIMING_NOTE = (
    "wall clock of Runner.predict on one sample (batch 1) after warm-up, on this machine; includes the "
    "runner's input checks, layout transpose and int8 quantize/dequantize of I/O"
)
RUNTIME_TIMING_NOTE = (
    "wall clock of the runtime's own call on an input prepared once (onnxruntime: run_with_iobinding and "
    "the output copy; LiteRT: set_tensor, invoke, get_tensor), batch 1, on this machine: what an application "
    "that keeps its buffers pays per inference"
)
MEMORY_NOTE = (
    "rss_delta: resident set size (/proc/self/statm) after loading and running minus before loading; "
    "peak_rss: the process's high-water mark (getrusage ru_maxrss), including Python and earlier work"
)


def _rss_bytes() -> int | None:
    """Current resident set size (Linux /proc), else None."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError, AttributeError):
        return None


def _maxrss_bytes() -> int:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # bytes on macOS, KiB on Linux


def _sample(runner, seed: int = 0) -> np.ndarray:
    shape = runner.dataset_sample_shape()
    if any(int(d) <= 0 for d in shape):
        raise UserError(f"{runner.path.name} has a dynamic input shape {tuple(shape)}: export it with a fixed sample shape")
    return np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)


def _timed(call, runs: int, warmup: int) -> np.ndarray:
    """Milliseconds of ``runs`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    times = np.empty(runs, dtype=np.float64)
    clock = time.perf_counter
    for i in range(runs):
        t = clock()
        call()
        times[i] = clock() - t
    return times * 1e3


def _summary(times: np.ndarray) -> dict[str, float]:
    p50, p90, p99 = (float(v) for v in np.percentile(times, [50, 90, 99]))
    return {"p50": round(p50, 4), "p90": round(p90, 4), "p99": round(p99, 4), "mean": round(float(times.mean()), 4),
            "min": round(float(times.min()), 4), "max": round(float(times.max()), 4)}


def bench(
    path: str | Path,
    threads: int = 1,
    runs: int = 200,
    warmup: int = 20,
    target=None,
    macs: int | None = None,
) -> dict[str, Any]:
    """Latency percentiles (ms), throughput and memory of one artifact; plus, with ``target`` (a Target
    or its name), an estimated on-device latency from ``macs`` (or the MACs read from the graph)."""
    from toolchain.runtimes import artifact_info, load_runner

    if runs < 1:
        raise UserError(f"--runs {runs}: give at least 1 timed run")
    if warmup < 0:
        raise UserError(f"--warmup {warmup}: give 0 or more warm-up runs")
    if threads < 1:
        raise UserError(f"--threads {threads}: give at least 1 thread")
    if target is not None and isinstance(target, (str, Path)):
        from toolchain.targets import load_target

        target = load_target(target)  # a bad name fails before the timing, not after
    path = Path(path)
    info = artifact_info(path)
    gc.collect()
    rss0 = _rss_bytes()
    t0 = time.perf_counter()
    runner = load_runner(path, threads=threads)
    load_ms = (time.perf_counter() - t0) * 1e3
    x = _sample(runner)
    times = _timed(lambda: runner.predict(x, batch_size=1), runs, warmup)
    runtime_times = _timed(runner.bound_call(x), runs, warmup)
    rss1 = _rss_bytes()
    mean = float(times.mean())
    result: dict[str, Any] = {
        "artifact": str(path),
        "format": info["format"],
        "precision": info.get("precision"),
        "bytes": int(info["bytes"]),
        "runtime": runner.runtime,
        "layout": runner.layout,
        "input_shape": list(runner.input_shape),
        "threads": int(threads),
        "runs": int(runs),
        "warmup": int(warmup),
        "load_ms": round(load_ms, 3),
        "latency_ms": _summary(times),
        "throughput_per_s": round(1e3 / mean, 2) if mean > 0 else None,
        "timing": TIMING_NOTE,
        "runtime_latency_ms": _summary(runtime_times),
        "runtime_timing": RUNTIME_TIMING_NOTE,
        "memory": {
            "rss_delta_bytes": (rss1 - rss0) if rss0 is not None and rss1 is not None else None,
            "peak_rss_bytes": _maxrss_bytes(),
            "method": MEMORY_NOTE,
        },
        "machine": {"platform": sys.platform, "cpus": os.cpu_count()},
    }
    if target is not None:
        result["estimate"] = device_estimate(target, path, info.get("precision"), macs)
    del runner
    return result


def device_estimate(target, path: str | Path, precision: str | None, macs: int | None = None) -> dict[str, Any]:
    """The ESTIMATED batch-1 latency of ``path`` on ``target`` (a Target or a name/path)."""
    from toolchain.targets import LATENCY_NOTE, PRECISIONS, Target, analyze_artifact, estimate_latency_ms, load_target

    t = target if isinstance(target, Target) else load_target(target)
    source = "given (--macs)"
    if macs is None:
        macs = analyze_artifact(path).get("macs")
        source = "read from the artifact graph (Conv/Gemm/MatMul/FC layers only)"
        if not macs:
            raise UserError(f"cannot count MACs in {Path(path).name} here: pass --macs N (from `cwtool compress`'s report)")
    elif macs <= 0:
        raise UserError(f"--macs {macs}: give the model's multiply-accumulates per sample (> 0)")
    prec = precision if precision in PRECISIONS else "fp32"
    return {
        "target": t.name,
        "latency_ms": round(estimate_latency_ms(t, int(macs), prec), 4),
        "is_estimate": True,
        "macs": int(macs),
        "macs_source": source,
        "precision": prec,
        "threads": t.threads,
        "gmacs": t.gmacs(prec),
        "note": LATENCY_NOTE,
        "throughput_source": t.throughput_source,
    }
