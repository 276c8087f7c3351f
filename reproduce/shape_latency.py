"""Latency of channel shapes, without training: the dense Fashion-MNIST CNN's weights shrunk to given
channel counts (each layer keeps its first channels), exported int8 (float stem) as ONNX and TFLite, then
benched interleaved against the dense fp32 ONNX. Latency hardly depends on the weights' values, so this
prices a shape before any pruning run is spent on it. Accuracy of these files is meaningless (untrained).

    python reproduce/shape_latency.py 16-16-32-48 8-16-16-32 8-8-16-16 8-8-8-8 \
        --dense cwtool-bench/fmnist_latency/dense.pt --summary reproduce/results/fmnist_shapes.json

The dense model comes from reproduce/fmnist_latency.sh (any fmnist-cnn checkpoint will do).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from toolchain.export.onnx import export_onnx
from toolchain.export.onnx_int8 import quantize_onnx, thin_input_convs
from toolchain.export.tflite import export_tflite
from toolchain.export.tflite_int8 import thin_input_modules
from toolchain.models.loading import load_model
from toolchain.models.profile import count_macs, count_params
from toolchain.prune.graph import channel_groups
from toolchain.prune.shrink import shrink

from bench_summary import summarise  # reproduce/ is this script's folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("shapes", nargs="+", help="channel counts per prunable layer, e.g. 8-24-32-48")
    ap.add_argument("--dense", default="cwtool-bench/fmnist_latency/dense.pt")
    ap.add_argument("--work", type=Path, default=Path("cwtool-bench/shapes"))
    ap.add_argument("--summary", type=Path, help="write a small summary (reproduce/bench_summary.py) here")
    args = ap.parse_args()
    if not Path(args.dense).is_file():
        ap.error(f"--dense {args.dense}: no such file (reproduce/fmnist_latency.sh trains it)")
    args.work.mkdir(parents=True, exist_ok=True)
    dense = load_model(args.dense).module.eval()
    example = torch.zeros(1, 1, 28, 28)
    groups = channel_groups(dense, example)
    calib = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    files = []
    for shape in args.shapes:
        widths = [int(w) for w in shape.split("-")]
        if len(widths) != len(groups):
            raise SystemExit(f"{shape}: give {len(groups)} channel counts ({', '.join(g.key for g in groups)})")
        model = shrink(dense, {g.key: list(range(w, g.size)) for g, w in zip(groups, widths)}, example).eval()
        print(f"{shape}: {count_params(model):,} parameters, {count_macs(model, example):,} MACs", flush=True)
        fp32 = export_onnx(model, example, args.work / f"{shape}_fp32.onnx", num_classes=10)
        files.append(quantize_onnx(fp32, args.work / f"{shape}_int8.onnx", calib, nodes_to_exclude=thin_input_convs(fp32)))
        files.append(export_tflite(model, example, args.work / f"{shape}_int8.tflite", "int8", calibration_x=calib, num_classes=10,
                                   float_modules=thin_input_modules(model, example)))
    dense_onnx = export_onnx(dense, example, args.work / "dense_fp32.onnx", num_classes=10)
    bench = args.work / "bench.json"
    subprocess.run([sys.executable, "-m", "toolchain", "bench", str(dense_onnx), *map(str, files), "--threads", "1", "--runs", "3000",
                    "--rounds", "30", "--json", str(bench)], check=True)
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(summarise([bench], strip=f"{args.work}/"), indent=1) + "\n")


if __name__ == "__main__":
    main()
