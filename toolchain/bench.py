"""`cwtool bench`: batch-1 latency of an exported artifact in its own runtime on THIS machine.

numpy and the runtimes only (no torch): it runs on the device too, which is where its numbers mean
most. With a target profile it adds an ESTIMATED latency on that device, from MACs and the profile.
"""

from __future__ import annotations

import os
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError
from toolchain.report.pace import RowPace
from toolchain.runtimes.base import check_threads

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
    "rss_delta: resident set size (/proc/self/statm) after loading and running minus before loading, each file in a "
    "Python process of its own with its runtime's library imported first (the library is a profile's runtime_overhead_mb); "
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
    if not len(shape):  # an input of no declared rank, or a batch axis alone: no sample to time
        declared = getattr(runner, "input_shape", None)
        what = f"an input of shape {tuple(declared)}" if declared else "an input of no declared shape"
        raise UserError(f"{runner.path.name} takes {what}, no sample axes after a batch axis: export it with a batch axis "
                        "and a fixed sample shape")
    if any(int(d) <= 0 for d in shape):
        raise UserError(f"{runner.path.name} has a dynamic input shape {tuple(shape)}: export it with a fixed sample shape")
    return np.random.default_rng(seed).standard_normal((1, *shape)).astype(np.float32)


MAX_RUNS = 10_000_000  # a week of 60 ms calls: beyond, a typo
MAX_MACS = 10**15  # a thousand times the largest vision model's


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
    return bench_many([path], threads=threads, runs=runs, warmup=warmup, target=target, macs=macs, rounds=1)[0]


_MEMORY_PROBE = """
import json, signal, sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # not the working folder (cwtool's own is on PYTHONPATH)
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})  # blocked in cwtool: a kill of
# this child by itself, or cwtool's group after a kill -9, did nothing
from toolchain.bench import _rss_bytes, _sample
from toolchain.runtimes import load_runner
if sys.argv[1].lower().endswith(".onnx"):  # the runtime's library first: its cost is the profile's runtime_overhead_mb
    import onnxruntime
else:
    from toolchain.runtimes.litert import interpreter_class
    interpreter_class()
before = _rss_bytes()
runner = load_runner(sys.argv[1], threads=int(sys.argv[2]))
runner.predict(_sample(runner), batch_size=1)
after = _rss_bytes()
print(json.dumps(None if before is None or after is None else after - before))
"""


def _memory_alone(path: Path, threads: int) -> int | None:
    """Resident set after loading and running ``path`` once, minus before loading, in a Python process of its own: in one
    process shared with other files the reading depended on the order (a runtime's one-time cost, memory an earlier file
    freed and this one reused: the same file read 3.35 MiB first, 0.33 MiB after). None where it cannot be read."""
    import json
    import subprocess

    import toolchain

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(Path(toolchain.__file__).resolve().parents[1]),
                                                                      os.environ.get("PYTHONPATH")]))}
    try:
        proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(path), str(threads)], capture_output=True, text=True,
                              timeout=600, env=env)
        value = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.returncode == 0 and proc.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def bench_many(
    paths: list[str | Path],
    threads: int = 1,
    runs: int = 200,
    warmup: int = 20,
    target=None,
    macs: int | None = None,
    rounds: int = 10,
    memory: bool = True,
) -> list[dict[str, Any]]:
    """`bench` for several artifacts, interleaved: the runs are split into ``rounds`` blocks and every
    artifact runs one block per round, so a slow spell of the machine (frequency, a neighbour) hits all
    of them alike and their ratios hold. Each result carries its speed-up over the first artifact.
    ``memory`` False: no file's memory is read (a process each), where only the timings are wanted."""
    from toolchain.runtimes import artifact_info, load_runner

    if not 1 <= runs <= MAX_RUNS:
        raise UserError(f"--runs {runs}: give 1 to {MAX_RUNS:,} timed runs")
    if not 0 <= warmup <= MAX_RUNS:
        raise UserError(f"--warmup {warmup}: give 0 to {MAX_RUNS:,} warm-up runs")
    if macs is not None and not 1 <= macs <= MAX_MACS:
        raise UserError(f"--macs {macs}: give the multiply-accumulates of one sample, 1 to {MAX_MACS:.0e}")
    threads = check_threads(threads)  # 1..256: the runners check it too
    if rounds < 1:
        raise UserError(f"--rounds {rounds}: give at least 1 round")
    if target is not None and isinstance(target, (str, Path)):
        from toolchain.targets import load_target

        target = load_target(target)  # a bad name fails before the timing, not after
    infos = [artifact_info(Path(p)) for p in paths]  # every path checked before any timing
    # the estimates too: a file whose MACs cannot be counted was said after minutes of timing, with no table
    estimates = [device_estimate(target, p, info.get("precision"), macs) for p, info in zip(paths, infos)] if target is not None else None
    loaded = []
    for path, info in zip(map(Path, paths), infos):
        t0 = time.perf_counter()
        runner = load_runner(path, threads=threads)
        load_ms = (time.perf_counter() - t0) * 1e3
        x = _sample(runner)
        predict = lambda runner=runner, x=x: runner.predict(x, batch_size=1)  # noqa: E731
        call = runner.bound_call(x)
        _timed(predict, 0, warmup)
        _timed(call, 0, warmup)
        rss_delta = _memory_alone(path, threads) if memory else None
        loaded.append((path, info, runner, load_ms, rss_delta, predict, call))
    blocks = [len(b) for b in np.array_split(np.arange(runs), min(rounds, runs))]
    times = [[] for _ in loaded]
    runtime_times = [[] for _ in loaded]
    pace, done = RowPace("bench", 2 * runs * len(loaded), unit="timed calls"), 0  # a 224-px net on a Pi: a second a call
    for block in blocks:
        for i, (*_, predict, call) in enumerate(loaded):
            times[i].append(_timed(predict, block, 0))
            runtime_times[i].append(_timed(call, block, 0))
            done += 2 * block
            pace(done)
    results = []
    for i, (path, info, runner, load_ms, rss_delta, _, _) in enumerate(loaded):
        t, rt = np.concatenate(times[i]), np.concatenate(runtime_times[i])
        mean = float(t.mean())
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
            "rounds": len(blocks),
            "load_ms": round(load_ms, 3),
            "latency_ms": _summary(t),
            "throughput_per_s": round(1e3 / mean, 2) if mean > 0 else None,
            "timing": TIMING_NOTE,
            "runtime_latency_ms": _summary(rt),
            "runtime_timing": RUNTIME_TIMING_NOTE,
            "memory": {"rss_delta_bytes": rss_delta, "peak_rss_bytes": _maxrss_bytes(), "method": MEMORY_NOTE},
            "machine": {"platform": sys.platform, "cpus": os.cpu_count()},
        }
        if estimates is not None:
            result["estimate"] = estimates[i]
        results.append(result)
    first = results[0]
    for r in results:  # p50 ratios: > 1 means faster than the first artifact
        r["speedup_vs_first"] = {
            "artifact": first["artifact"],
            "latency_p50": round(first["latency_ms"]["p50"] / r["latency_ms"]["p50"], 3),
            "runtime_latency_p50": round(first["runtime_latency_ms"]["p50"] / r["runtime_latency_ms"]["p50"], 3),
        }
    return results


def device_estimate(target, path: str | Path, precision: str | None, macs: int | None = None) -> dict[str, Any]:
    """The ESTIMATED batch-1 latency of ``path`` on ``target`` (a Target or a name/path)."""
    from toolchain.runtimes import describe_graph
    from toolchain.device_fit import LATENCY_NOTE, estimate_latency_ms
    from toolchain.targets import PRECISIONS, Target, load_target

    t = target if isinstance(target, Target) else load_target(target)
    source = "given (--macs)"
    if macs is None:
        macs = describe_graph(path).get("macs")
        source = "read from the artifact graph (Conv/Gemm/MatMul/FC layers only)"
        if macs == 0:  # read, and nothing counted ("here" read as a missing package)
            raise UserError(f"counted no MACs in {Path(path).name} (no Conv, Gemm, MatMul or fully connected layer with constant "
                            "weights): pass --macs N (from `cwtool compress`'s report)")
        if not macs:
            import importlib.util

            why = (" (it reads an ONNX graph with the onnx package, not installed here: pip install onnx, or"
                   if Path(path).suffix.lower() == ".onnx" and importlib.util.find_spec("onnx") is None else ":")
            raise UserError(f"cannot count MACs in {Path(path).name} here{why} pass --macs N (from `cwtool compress`'s report)"
                            + (")" if why != ":" else ""))
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
        **_format_warning(t, path),
    }


def _format_warning(t, path) -> dict[str, str]:
    """{"warning": ...} where the device runs another format than ``path``'s: its estimate is for a file it cannot run."""
    from toolchain.runtimes.formats import device_format

    fmt = device_format(path).name
    if fmt == t.format:
        return {}
    return {"warning": f"{t.name} runs {t.format} files ({t.runtime}), not {fmt}: this estimate is for a file it does not run"}
