"""Latency of channel shapes, without training: the dense Fashion-MNIST CNN's weights shrunk to given
channel counts, exported int8 (float stem) as ONNX and TFLite, then benched interleaved against the
dense fp32 ONNX. Latency hardly depends on the weights' values, so this prices a shape before any
pruning run is spent on it. Accuracy of these files is meaningless (untrained).

    python benchmarks/shape_latency.py 8-24-32-48 8-16-32-56 8-8-32-64
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from toolchain.export.onnx import export_onnx  # noqa: E402
from toolchain.export.tflite import export_tflite, thin_input_modules  # noqa: E402
from toolchain.models.loading import load_model  # noqa: E402
from toolchain.models.profile import count_macs, count_params  # noqa: E402
from toolchain.prune.graph import channel_groups  # noqa: E402
from toolchain.prune.shrink import shrink  # noqa: E402
from toolchain.quantize.onnx_int8 import quantize_onnx, thin_input_convs  # noqa: E402


def main(shapes: list[str], dense_path: str = "cwtool-bench/fmnist_dense.pt", out: str = "cwtool-bench/shapes") -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    dense = load_model(dense_path).module.eval()
    example = torch.zeros(1, 1, 28, 28)
    groups = channel_groups(dense, example)
    calib = np.random.default_rng(0).random((256, 1, 28, 28), dtype=np.float32)
    files = []
    for shape in shapes:
        widths = [int(w) for w in shape.split("-")]
        if len(widths) != len(groups):
            raise SystemExit(f"{shape}: give {len(groups)} channel counts ({', '.join(g.key for g in groups)})")
        model = shrink(dense, {g.key: list(range(w, g.size)) for g, w in zip(groups, widths)}, example).eval()
        print(f"{shape}: {count_params(model):,} parameters, {count_macs(model, example):,} MACs", flush=True)
        fp32 = export_onnx(model, example, out_dir / f"{shape}_fp32.onnx", num_classes=10)
        files.append(quantize_onnx(fp32, out_dir / f"{shape}_int8.onnx", calib, nodes_to_exclude=thin_input_convs(fp32)))
        files.append(export_tflite(model, example, out_dir / f"{shape}_int8.tflite", "int8", calibration_x=calib, num_classes=10,
                                   float_modules=thin_input_modules(model, example)))
    dense_onnx = export_onnx(dense, example, out_dir / "dense_fp32.onnx", num_classes=10)
    subprocess.run([sys.executable, "-m", "toolchain", "bench", str(dense_onnx), *map(str, files), "--threads", "1", "--runs", "3000", "--rounds", "30",
                    "--json", str(out_dir / "bench.json")], check=True)


if __name__ == "__main__":
    main(sys.argv[1:] or ["8-24-32-48", "8-16-32-56", "8-8-32-64"])
