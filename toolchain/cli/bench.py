"""`cwtool bench ARTIFACT...`: batch-1 latency and memory of artifacts in their own runtime. No torch here."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from toolchain.errors import UserError
from toolchain.limits import usable_cores
from toolchain.report.consoles import log_console, out_console

MIB = 1024 * 1024


def _mb(n) -> str:
    return "-" if n is None else f"{n / MIB:.2f}"


def bench(
    artifacts: List[Path] = typer.Argument(..., metavar="ARTIFACT", help="One or more .onnx / .tflite files."),
    threads: int = typer.Option(1, "--threads", "-t", help="Runtime threads."),
    runs: int = typer.Option(200, "--runs", "-n", help="Timed batch-1 runs per artifact."),
    warmup: int = typer.Option(20, "--warmup", help="Untimed runs first."),
    target: Optional[str] = typer.Option(None, "--target", help="Also ESTIMATE latency on this device profile (name or .toml)."),
    macs: Optional[int] = typer.Option(None, "--macs", help="MACs per sample for the estimate (default: counted from the graph)."),
    rounds: int = typer.Option(10, "--rounds", help="Split the runs into this many blocks, interleaved across the artifacts (fair ratios on a noisy machine)."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the results as JSON here."),
):
    """Batch-1 latency p50/p90/p99, throughput and memory of artifacts in their own runtime on this machine.

    Give the baseline (e.g. the dense fp32 ONNX) first: the speed-up column is relative to it."""
    from rich.table import Table

    from toolchain.bench import bench_many
    from toolchain.io import json_text, write_named_output
    from toolchain.output_paths import check_json_replaceable, check_output_file
    from toolchain.input_paths import input_paths
    from toolchain.report.pace import saying_progress
    from toolchain.targets import load_target

    if target is not None and not target.strip():  # `--target "$TARGET"` with TARGET unset in CI: not silently no target
        raise UserError("--target is empty (an unset variable?): give a profile name or a .toml path, or leave --target out")
    tgt = load_target(target) if target else None
    inputs = input_paths(tgt and tgt.path, artifacts=artifacts)
    check_output_file(json_out, "--json", inputs=inputs)
    check_json_replaceable(json_out, "bench")
    if macs is not None and target is None:
        raise UserError("--macs feeds the --target latency estimate: give --target too (or drop --macs)")
    with saying_progress(log_console().print):  # on stderr: 200 calls of a 224-px net on a device's CPU take minutes a file
        results = bench_many(artifacts, threads=threads, runs=runs, warmup=warmup, target=tgt, macs=macs, rounds=rounds)
    cores = usable_cores()
    if threads > cores:  # timed as asked (the device may have the cores), but these numbers are the scheduler's as much;
        # said once the arguments were found good (a bad input's line stands alone)
        log_console().print(f"note: --threads {threads} on a machine of {cores} cores: more threads than cores time the machine's "
                            "scheduling as much as the files; on the device, give its own thread count")
    table = Table(title=f"cwtool bench: batch 1, {threads} thread(s), {runs:,} runs after {warmup:,} warm-up "
                        f"in {results[0]['rounds']} interleaved rounds, this machine")
    table.add_column("artifact", overflow="fold", min_width=22)
    columns = ["runtime", "prec.", "KB", "p50 ms", "p99 ms", "call p50 ms", "RSS +MiB"]  # p90, throughput: in --json
    if len(results) > 1:
        columns.append("speed-up")
    for c in columns:
        table.add_column(c, no_wrap=True)
    if tgt is not None:
        table.add_column("est. ms", no_wrap=True)
    from toolchain.verify_inputs import distinct_names

    shown = dict(zip((r["artifact"] for r in results), distinct_names([r["artifact"] for r in results])))  # dense/ and run/ files of one name
    for r in results:
        lat = r["latency_ms"]
        row = [
            shown[r["artifact"]], r["runtime"].split()[0], str(r["precision"]), f"{r['bytes'] / 1000:,.1f}",
            f"{lat['p50']:.3f}", f"{lat['p99']:.3f}",
            f"{r['runtime_latency_ms']['p50']:.3f}", _mb(r["memory"]["rss_delta_bytes"]),
        ]
        if len(results) > 1:
            row.append(f"{r['speedup_vs_first']['runtime_latency_p50']:.1f}x")
        if tgt is not None:
            row.append(f"~{r['estimate']['latency_ms']:.3f}")
        table.add_row(*row)
    console = out_console()
    console.print(table)
    console.print("p50/p99: Runner.predict per sample (checks, layout, int8 I/O in numpy); call p50: the runtime's own call on a prepared input")
    if len(results) > 1:
        console.print(f"speed-up: call p50 of {shown[results[0]['artifact']]} / call p50 of each")
    if tgt is not None:
        console.print(f"est. ms: ESTIMATED latency on {tgt.name} (at its profile's {tgt.threads} threads, whatever --threads measures here) = "
                      f"MACs / {tgt.name}'s effective GMAC/s + its per-call overhead ({tgt.overhead_ms:g} ms), not a measurement; source: "
                      f"{tgt.throughput_source}")
        for r in results:
            if r["estimate"].get("warning"):
                log_console().print(f"warning: {shown[r['artifact']]}: {r['estimate']['warning']}")
    if json_out is not None:
        write_named_output(json_out, json_text({"schema_version": 1, "results": results}), "--json", inputs)
