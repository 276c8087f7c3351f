"""The mobile architectures at 224 px: parameters and MACs before and after pruning to half the parameters,
int8 bytes, batch-1 latency of every file in onnxruntime and LiteRT (1 thread), and each file's protected FN
on test against the pruned model's. Size, speed and agreement, not accuracy: the images are generated
(3 classes of smooth patterns) and every model is trained for one epoch from random weights.

Per architecture: `cwtool train` (1 epoch), `cwtool compress -p 0 --keep-params 0.5` (one round, 1 epoch of
retraining; int8 and fp32 ONNX and TFLite, each re-run on test), then `toolchain.bench.bench_many` on the
four files, interleaved. Work files go to cwtool-bench/zoo_224/.

    OMP_NUM_THREADS=1 python reproduce/zoo_224.py --summary reproduce/results/zoo_224.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ARCHS = ["mobilenetv2", "mobilenetv3-large", "efficientnet-b0", "shufflenetv2", "resnet18", "resnet50"]
SIZE = 224
CLASSES = 3


def generate_images(root: Path, count: int, seed: int = 0) -> Path:
    """``count`` PNGs in 3 class folders: stripes across, stripes down, rings; random frequency, phase,
    colour and noise. Made once; a finished folder is reused."""
    from PIL import Image

    done = root / ".complete"
    if done.is_file():
        return root
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    for i in range(count):
        c = i % CLASSES
        f, ph = rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
        base = (np.sin(2 * np.pi * f * xx + ph), np.sin(2 * np.pi * f * yy + ph),
                np.sin(2 * np.pi * f * np.hypot(xx - 0.5, yy - 0.5) + ph))[c]
        rgb = np.stack([base * rng.uniform(0.5, 1) for _ in range(3)], -1) + rng.normal(0, 0.3, (SIZE, SIZE, 3))
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray((np.clip(rgb * 0.25 + 0.5, 0, 1) * 255).round().astype(np.uint8)).save(folder / f"{i:04d}.png")
    done.write_text(str(count))
    return root


def cwtool(log: Path, *args) -> tuple[int, float]:
    """Exit code and seconds of one CLI run, one thread; what it prints goes to ``log``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    start = time.perf_counter()
    with open(log, "w") as out:
        code = subprocess.run([sys.executable, "-m", "toolchain", *map(str, args)], env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    return code, time.perf_counter() - start


def protected_fn(evaluation: dict) -> int:
    return int(evaluation["protected"][0]["fn"])


def measure(arch: str, images: Path, work: Path, epochs: int, runs: int) -> dict:
    from toolchain.bench import bench_many

    folder = work / arch
    folder.mkdir(parents=True, exist_ok=True)
    dense, run = folder / "dense.pt", folder / "run"
    row: dict = {"arch": arch}
    if not dense.is_file():
        code, row["train_seconds"] = cwtool(folder / "train.log", "train", "--arch", arch, "--arch-kwargs", json.dumps({"num_classes": CLASSES}),
                                            "--data", images, "--epochs", epochs, "--batch-size", 32, "--device", "cpu", "--out", dense)
        if code != 0:
            return {**row, "error": f"train exited {code} (see {folder / 'train.log'})"}
    if not (run / "report.json").is_file():
        code, row["compress_seconds"] = cwtool(folder / "compress.log", "compress", dense, "--data", images, "-p", 0, "--keep-params", 0.5,
                                               "--epochs", epochs, "--batch-size", 32, "--calibration-size", 64,
                                               "--device", "cpu", "--out", run)
        row["compress_exit"] = code
        if code not in (0, 1):  # 1: the gate's verdict; anything else is a failure to report
            return {**row, "error": f"compress exited {code} (see {folder / 'compress.log'})"}
    report = json.loads((run / "report.json").read_text())
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    base = report["baseline"]
    row.update({
        "gate_passed": report["gate"]["passed"],
        "params": {"dense": base["params"], "pruned": shrunk["params"]},
        "macs": {"dense": base["macs"], "pruned": shrunk["macs"]},
        "protected_fn_test": {"dense": protected_fn(base["test"]), "pruned": protected_fn(shrunk["test"])},
        "test_rows": shrunk["test"]["n"],
        "report_seconds": report["seconds"],
        "files": {},
    })
    arts = report["artifacts"]
    timed = bench_many([run / a["path"] for a in arts], threads=1, runs=runs, warmup=3, rounds=5)
    for a, t in zip(arts, timed):
        row["files"][f"{a['format']} {a['precision']}"] = {
            "path": a["path"],
            "bytes": a["bytes"],
            "runtime": a["runtime"],
            "latency_ms_p50": t["runtime_latency_ms"]["p50"],
            "protected_fn_test": protected_fn(a["evaluation"]),
            "fn_minus_pruned": protected_fn(a["evaluation"]) - row["protected_fn_test"]["pruned"],
            "agreement_with_pruned": a["agreement"],
        }
    for fmt in ("onnx", "tflite"):  # the finding the issue asks for: an int8 file slower than its own fp32 twin
        f32, i8 = row["files"].get(f"{fmt} fp32"), row["files"].get(f"{fmt} int8")
        if f32 and i8:
            row[f"{fmt}_int8_speedup"] = round(f32["latency_ms_p50"] / i8["latency_ms_p50"], 3)
    return row


def machine() -> str:
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()} {platform.machine()}, Python {platform.python_version()}"


def table(rows: list[dict]) -> str:
    out = ["| arch | params dense -> pruned | MACs dense -> pruned | int8 bytes (ONNX / TFLite) | ONNX ms fp32 / int8 | "
           "LiteRT ms fp32 / int8 | protected FN on test: pruned; ONNX fp32, int8; TFLite fp32, int8 |",
           "|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        if "error" in r:
            out.append(f"| {r['arch']} | {r['error']} | | | | | |")
            continue
        f = r["files"]
        ms = lambda k: f"{f[k]['latency_ms_p50']:.2f}" if k in f else "-"  # noqa: E731
        fn = lambda k: str(f[k]["protected_fn_test"]) if k in f else "-"  # noqa: E731
        out.append(
            f"| {r['arch']} | {r['params']['dense'] / 1e6:.2f} M -> {r['params']['pruned'] / 1e6:.2f} M "
            f"| {r['macs']['dense'] / 1e6:.0f} M -> {r['macs']['pruned'] / 1e6:.0f} M "
            f"| {f['onnx int8']['bytes'] / 1e6:.2f} MB / {f['tflite int8']['bytes'] / 1e6:.2f} MB "
            f"| {ms('onnx fp32')} / {ms('onnx int8')} | {ms('tflite fp32')} / {ms('tflite int8')} "
            f"| {r['protected_fn_test']['pruned']}; {fn('onnx fp32')}, {fn('onnx int8')}; {fn('tflite fp32')}, {fn('tflite int8')} |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", action="append", choices=ARCHS, help="one architecture (repeatable; default: all six)")
    ap.add_argument("--images", type=int, default=300, help="generated 224-px images (3 classes)")
    ap.add_argument("--epochs", type=int, default=1, help="dense training and retraining epochs")
    ap.add_argument("--runs", type=int, default=20, help="timed batch-1 runs per file")
    ap.add_argument("--work", type=Path, default=Path("cwtool-bench/zoo_224"))
    ap.add_argument("--summary", type=Path, help="write the summary JSON here")
    args = ap.parse_args()
    images = generate_images(args.work / "images", args.images)
    rows, start = [], time.perf_counter()
    for arch in args.arch or ARCHS:
        t0 = time.perf_counter()
        rows.append(measure(arch, images, args.work, args.epochs, args.runs))
        rows[-1]["seconds"] = round(time.perf_counter() - t0, 1)
        print(f"{arch}: {rows[-1]['seconds']} s", flush=True)
    summary = {
        "what": "mobile architectures at 224 px: pruned to half the parameters, int8/fp32 ONNX and TFLite, batch-1 latency, "
                "protected FN on test",
        "command": " ".join(["OMP_NUM_THREADS=1", "python", *sys.argv]),
        "machine": machine(),
        "images": args.images, "epochs": args.epochs, "runs": args.runs, "threads": 1,
        "latency": "p50 of the runtime's own call on an input prepared once (toolchain.bench runtime_latency_ms)",
        "seconds": round(time.perf_counter() - start, 1),
        "rows": rows,
    }
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summary, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
