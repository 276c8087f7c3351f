"""Which file to deploy. Every exported file is timed at batch 1 in its own runtime on this machine
(interleaved, toolchain.bench.bench_many, so a slow spell hits all files alike), and per format the
fastest file that keeps the promise on validation (and fits the --target) is chosen; a file within TIE of
the fastest that is smaller wins, since bytes then decide. The test split re-checks that choice and
does not make it: a chosen file that fails its re-check is not recommended, and its twin is not named in
its place (the test rows would then have chosen it).

An int8 file slower than its fp32 twin is a finding, said out loud: on small layers the quantize and
dequantize around each operator can cost more than int8 arithmetic saves (onnxruntime's QDQ files on
CPUs without VNNI), and then the int8 file buys bytes, not speed. The numbers are this machine's: the
device's own `cwtool bench` decides where they differ.

numpy and the runtimes only (no torch), like bench.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from toolchain.limits import usable_cores

__all__ = ["deploy_choice", "time_files", "recommend", "TIE", "TIMING_BUDGET_S"]

TIE = 0.05  # latencies within 5% are a tie on one machine's timer
TIMING_BUDGET_S = 3.0  # per file: slow files (224 px models) get fewer calls, never fewer than MIN_RUNS
MIN_RUNS = 10


def time_files(root: Path, entries: list[dict], threads: int, runs: int) -> dict[str, dict]:
    """{entry path: bench result} for every file, batch 1, ``threads`` threads, at most ``runs`` timed
    calls each (fewer for slow files, within TIMING_BUDGET_S)."""
    from toolchain.bench import bench_many
    from toolchain.runtimes import load_runner

    if runs < 1 or not entries:
        return {}
    paths = [root / e["path"] for e in entries]
    slowest = 0.0
    for path in paths:  # one untimed call each: the budget's measure, and a first warm-up
        runner = load_runner(path, threads=threads)
        sample = np.zeros((1, *runner.dataset_sample_shape()), dtype=np.float32)
        runner.predict(sample, batch_size=1)
        t0 = time.perf_counter()
        runner.predict(sample, batch_size=1)
        slowest = max(slowest, time.perf_counter() - t0)
    runs = max(MIN_RUNS, min(runs, int(TIMING_BUDGET_S / max(slowest, 1e-6))))
    results = bench_many(paths, threads=threads, runs=runs, warmup=max(2, runs // 10), rounds=min(10, runs),
                         memory=False)  # the choice reads latency alone: no process a file to read memory it never uses
    return {e["path"]: r for e, r in zip(entries, results)}


def _eligible(entry: dict) -> bool:
    """Whether a file may be chosen: on validation (an int8 file's own offsets and float layers within budget there; a
    float file is the run's model) and on the device's limits. Not its test re-check: that judges the choice."""
    within = (entry.get("quantization") or {}).get("within_budget_on_val", True)
    return within is not False and entry.get("fit", {}).get("fits", True)


def _twin(entry: dict, entries: list[dict]) -> dict | None:
    """The fp32 file of the same format and input layout as an int8 file."""
    return next((e for e in entries if e["format"] == entry["format"] and e.get("layout") == entry.get("layout")
                 and e["precision"] == "fp32"), None)


def _ms(timing: dict) -> float:
    return float(timing["runtime_latency_ms"]["p50"])


def _failed_recheck(pick: dict, why: str) -> dict:
    """The choice of a format whose chosen file failed its re-check on test: none, and why."""
    return {"format": pick["format"], "file": None, "failed_recheck": pick["path"],
            "why": f"{Path(pick['path']).name}, {why}, failed its re-check on test, so no file is recommended (the test rows "
                   f"judge the choice made on validation; they do not choose its twin instead){_accuracy_alone([pick])}"}


def _accuracy_alone(files: list[dict]) -> str:
    """Where the file chosen (or every file, untimed) failed the test split's accuracy floor and nothing else, what that
    means and what to do: a new user whose FN were all within budget got "none" and no next step."""
    gates = [f["gate"] for f in files]
    alone = gates and all((g.get("accuracy") or {}).get("passed") is False and not g.get("collapse")
                          and all(c.get("passed") for c in g.get("checks") or []) for g in gates)
    n = next((f["evaluation"].get("n") for f in files if isinstance(f.get("evaluation"), dict)), None)
    if not alone or not isinstance(n, int) or n <= 0:
        return ""
    measured = [g["accuracy"] for g in gates if isinstance(g["accuracy"].get("value"), float) and isinstance(g["accuracy"].get("floor"), float)]
    worst = min(measured, key=lambda a: a["value"] - a["floor"]) if measured else None
    short_rows = (worst["floor"] - worst["value"]) * n if worst else 0.0
    noise_rows = 2 * (n * worst["value"] * (1 - worst["value"])) ** 0.5 if worst else 0.0  # two sd of one draw's count
    who = "it" if len(files) == 1 else "every file"
    if worst and short_rows > max(noise_rows, 2):  # more than one test draw explains: say so, not "one row is 0.56 points"
        return (f": {who} kept its FN within budget and failed on test accuracy alone, {100 * (worst['floor'] - worst['value']):.2g} "
                f"points (about {short_rows:.0f} of {n:,} test rows) under the floor, more than one test draw explains: the "
                "accuracy validation showed did not carry over; check that the validation rows are like the test rows and "
                "hold every class (accuracy lost on a class validation lacks is never seen), or give a --max-accuracy-drop "
                "your use can take")
    return (f": {who} kept its FN within budget and failed on test accuracy alone; on {n:,} test rows one row is "
            f"{100 / n:.2g} points, and the test split re-checks the choice made on validation, it does not make it: give more "
            "test rows for a tighter re-check, or a --max-accuracy-drop your use can take")


def _estimate_ms(entry: dict) -> float | None:
    """The --target profile's latency estimate of a file on the device, or None."""
    value = ((entry.get("fit") or {}).get("estimated_latency") or {}).get("estimate_ms")
    return float(value) if isinstance(value, (int, float)) else None


def _choice(fmt: str, entries: list[dict], latency: dict[str, float]) -> dict:
    """The file of format ``fmt`` to deploy: the fastest within budget on validation (and that fits), a smaller one within
    TIE of it, where it passed its re-check on test (else none).
    With a --target whose profile estimates every such file, fastest on the target by that estimate: this machine's timing
    had named the fp32 file where the same report estimated the int8 one twice as fast on the device (a reviewer's
    finding)."""
    files = [e for e in entries if e["format"] == fmt]
    targeted = any("fit" in e for e in files)
    ok = [e for e in files if _eligible(e)]
    if not ok:
        return _none_passed(fmt, files)
    on_target = all(_estimate_ms(e) is not None for e in ok)
    speed = {e["path"]: _estimate_ms(e) for e in ok} if on_target else latency
    fastest = min(ok, key=lambda e: speed[e["path"]])
    near = [e for e in ok if speed[e["path"]] <= speed[fastest["path"]] * (1 + TIE)]
    pick = min(near, key=lambda e: (e["bytes"], speed[e["path"]]))
    if on_target:
        why = (f"the fastest on the target by its profile's estimate ({speed[pick['path']]:.3g} ms per call; here "
               f"{latency[pick['path']]:.3g} ms)" if pick is fastest else
               f"within {TIE:.0%} of the fastest on the target by its profile's estimate ({Path(fastest['path']).name}) and smaller")
    else:
        why = (f"the fastest here ({latency[pick['path']]:.3g} ms per call)" if pick is fastest
               else f"within {TIE:.0%} of the fastest ({Path(fastest['path']).name}) and smaller")
    why += " of the files within budget on validation" + (" that fit the target" if targeted else "")
    if not pick["gate"]["passed"]:
        return _failed_recheck(pick, why)
    why += ", and it passed its re-check on test"
    if on_target:
        why += "; an estimate, not a measurement: `cwtool bench` on the device decides"
    return {"format": fmt, "file": pick["path"], "latency_ms": latency[pick["path"]], "bytes": pick["bytes"], "why": why}


def _untimed_choice(fmt: str, entries: list[dict]) -> dict:
    """Per format where nothing was timed: none chosen; the files within budget on validation (and fitting the target) that
    passed their re-check on test, or none where no file may be chosen."""
    files = [e for e in entries if e["format"] == fmt]
    ok = [e for e in files if _eligible(e)]
    if not ok:
        return _none_passed(fmt, files)
    passed = [e["path"] for e in ok if e["gate"]["passed"]]
    if not passed:
        return {"format": fmt, "file": None, "why": "no file of this format within budget on validation passed its re-check on test"
                + _accuracy_alone(ok)}
    return {"format": fmt, "file": None, "why": "not timed, so none chosen", "passed": passed}


def _none_passed(fmt: str, files: list[dict]) -> dict:
    """The choice of a format none of whose ``files`` may be chosen: none within budget on validation (and fitting the
    target, where one is given)."""
    targeted = any("fit" in e for e in files)
    return {"format": fmt, "file": None, "why": "no file of this format kept the promise on validation" + (" and fits the target" if targeted else "")}


def recommend(entries: list[dict], timings: dict[str, dict], threads: int, withheld: str | None = None) -> dict:
    """report.json's "deploy": each file's batch-1 latency here, per format the file to deploy and why,
    and the findings (int8 slower than its fp32 twin). ``withheld``: why no file is recommended at all (a run
    whose promise failed on validation, whatever each file's own re-check says)."""
    formats = list(dict.fromkeys(e["format"] for e in entries))
    withheld_choices = None if withheld is None else [{"format": fmt, "file": None, "why": withheld} for fmt in formats]
    if not timings:  # nothing to choose by; a withheld run still says that no file is recommended, and a failed one which
        # format has none that passed (a failed run's report said only "files not timed", a new user's finding)
        return {"timed": False, "note": "files not timed (--time-runs 0)", "findings": [],
                "choices": withheld_choices or [_untimed_choice(fmt, entries) for fmt in formats]}
    latency = {p: _ms(t) for p, t in timings.items()}
    findings, twins = [], []
    for e in entries:
        twin = _twin(e, entries) if e["precision"] == "int8" else None
        if twin is not None and latency[e["path"]] > latency[twin["path"]] * (1 + TIE):
            ratio = latency[e["path"]] / latency[twin["path"]]
            smaller = twin["bytes"] / max(e["bytes"], 1)
            buys = (f"int8 buys {smaller:.1f}x fewer bytes, not speed" if smaller >= 1.05 else
                    f"int8 buys neither speed nor bytes ({e['bytes']:,} against {twin['bytes']:,}: the quantization's scales "
                    "outweigh the weights of so small a model)")
            there = ""
            if _estimate_ms(e) is not None and _estimate_ms(twin) is not None and _estimate_ms(e) < _estimate_ms(twin):
                there = (f"; the target's profile estimates it faster there ({_estimate_ms(e):.3g} ms vs {_estimate_ms(twin):.3g} ms), "
                         "so this CPU's timing does not decide for the device")
            findings.append(
                f"{Path(e['path']).name} ran {ratio:.2f}x slower than its fp32 twin {Path(twin['path']).name} here "
                f"({latency[e['path']]:.3g} ms vs {latency[twin['path']]:.3g} ms per call): {buys}, on this CPU{there}")
            twins.append(twin["path"])
    choices = withheld_choices if withheld_choices is not None else [_choice(fmt, entries, latency) for fmt in formats]
    first = next(iter(timings.values()))
    return {
        "timed": True, "threads": threads, "runs": first["runs"], "machine": first["machine"],
        "note": "batch-1 p50 of the runtime's own call on this machine, interleaved; on the device, `cwtool bench` decides",
        "latency_ms": latency, "choices": choices, "findings": findings,
        "findings_fp32": twins,  # each finding's fp32 twin: report.md advises it only where it is the file recommended
    }


def deploy_choice(entries: list[dict], root: Path, threads: int, runs: int, log=None, withheld: str | None = None) -> dict:
    """time_files, then recommend: report.json's "deploy" for the files under ``root``. ``threads`` (a target's profile's)
    beyond this machine's cores are cut to its cores: a 4-thread run on 2 cores times the scheduler as much as the files
    (a small model's int8 TFLite file: 3.3x its fp32 twin's p50 at 4 threads on 2 cores, 2.6x at 1 thread)."""
    cores = usable_cores()
    timed_with = max(1, min(threads, cores))
    if log is not None and runs and entries:
        log(f"timing {len(entries)} file{'s' if len(entries) != 1 else ''} at batch 1 on this machine" + (", to name the file to deploy" if withheld is None else "")
            + (f", {timed_with} threads for the profile's {threads} (this machine has {cores} cores)" if timed_with < threads else "")
            + " (--time-runs 0 skips)")
    deploy = recommend(entries, time_files(root, entries, timed_with, runs), timed_with, withheld)
    if deploy["timed"] and timed_with < threads:
        deploy["threads_asked"] = threads
        deploy["note"] += (f"; timed with {timed_with} threads, not the target profile's {threads}: this machine has {cores} "
                           "cores, and more threads than cores time the machine's scheduling, not the file")
    return deploy
