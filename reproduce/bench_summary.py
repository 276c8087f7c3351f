"""A small summary of `cwtool bench --json` runs, for reproduce/results/: per run and file, the bytes, the
runtime's own call p50 and the runner's p50 (`Runner.predict`, with its numpy I/O), and both speed-ups over
the run's first file. The raw bench files (every percentile, memory, settings) stay in the work folder.

    python reproduce/bench_summary.py cwtool-bench/x/bench_1.json cwtool-bench/x/bench_2.json \
        --strip cwtool-bench/x/ --out reproduce/results/x.json

--strip removes a prefix from the files' paths; --rename OLD=NEW replaces one part of them; --model
NAME=RUN_DIR adds the parameters and MACs of a compress run's pruned model (from its report.json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from pathlib import Path


def machine() -> str:
    """This machine in one line: CPU model, whether it has VNNI, CPU count."""
    model, vnni = platform.machine(), ""
    try:
        info = Path("/proc/cpuinfo").read_text()
        model = next((line.split(":", 1)[1].strip() for line in info.splitlines() if line.startswith("model name")), model)
        vnni = ", VNNI" if "vnni" in info else (", no VNNI" if " avx2" in info else "")
    except OSError:
        pass
    return f"{model}{vnni}, {os.cpu_count()} CPUs"


def model_row(run_dir: Path) -> dict:
    """Parameters and MACs of a compress run's pruned model, and the dense model's parameters."""
    report = json.loads((Path(run_dir) / "report.json").read_text())
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    return {"params": shrunk["params"], "param_fraction": round(shrunk["param_fraction"], 4), "macs": shrunk["macs"],
            "dense_params": report["baseline"]["params"]}


def summarise(paths: list[Path], strip: str = "", rename: dict[str, str] | None = None, machine_line: str | None = None,
              models: dict[str, dict] | None = None) -> dict:
    def name(path: str) -> str:
        path = path[len(strip):] if strip and path.startswith(strip) else path
        for old, new in (rename or {}).items():
            path = path.replace(old, new)
        return path

    runs = []
    for path in paths:
        results = json.loads(Path(path).read_text())["results"]
        base_call = results[0]["runtime_latency_ms"]["p50"]
        base_runner = results[0]["latency_ms"]["p50"]
        runs.append([{
            "file": name(r["artifact"]), "precision": r["precision"], "bytes": r["bytes"], "runtime": r["runtime"],
            "call_p50_ms": round(r["runtime_latency_ms"]["p50"], 4), "runner_p50_ms": round(r["latency_ms"]["p50"], 4),
            "call_speedup": round(base_call / r["runtime_latency_ms"]["p50"], 2), "runner_speedup": round(base_runner / r["latency_ms"]["p50"], 2),
        } for r in results])
    first = json.loads(Path(paths[0]).read_text())["results"][0]
    summary = {"machine": machine_line or machine(), "threads": first["threads"], "batch": 1, "runs_per_file": first["runs"],
               "rounds": first.get("rounds"), "runs": runs}
    if models:
        summary["models"] = models
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bench", nargs="+", type=Path, help="cwtool bench --json files, one per interleaved run")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--strip", default="")
    ap.add_argument("--rename", action="append", default=[], metavar="OLD=NEW")
    ap.add_argument("--model", action="append", default=[], metavar="NAME=RUN_DIR")
    ap.add_argument("--machine", help="the machine in one line (default: read from this one)")
    args = ap.parse_args()
    rename = dict(r.split("=", 1) for r in args.rename)
    models = {name: model_row(Path(run)) for name, run in (m.split("=", 1) for m in args.model)}
    summary = summarise(args.bench, args.strip, rename, args.machine, models)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    for i, run in enumerate(summary["runs"], 1):
        print(f"run {i}: " + "; ".join(f"{r['file']} {r['bytes']:,} B {r['call_p50_ms']:.3f} ms ({r['call_speedup']}x)" for r in run))


if __name__ == "__main__":
    main()
