#!/usr/bin/env bash
# The fixed cost of one batch-1 call in each runtime: a 28x28 input through a single Linear 784->10
# (7,840 MACs), as fp32 and int8 ONNX and TFLite. A pruned model's latency cannot go below this floor,
# which caps the speed-up over the dense model however small the model gets.
# Run from the repository root; writes cwtool-bench/floor/ and benchmarks/results/call_floor.json.
set -euo pipefail
. .venv/bin/activate
mkdir -p cwtool-bench/floor
python - <<'PY'
import numpy as np, torch
from toolchain.export.onnx import export_onnx
from toolchain.export.tflite import export_tflite
from toolchain.quantize.onnx_int8 import quantize_onnx
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(784, 10)).eval()
x = torch.zeros(1, 1, 28, 28)
calib = np.random.default_rng(0).random((64, 1, 28, 28), dtype=np.float32)
out = "cwtool-bench/floor"
export_onnx(m, x, f"{out}/linear_fp32.onnx", num_classes=10)
quantize_onnx(f"{out}/linear_fp32.onnx", f"{out}/linear_int8.onnx", calib)
export_tflite(m, x, f"{out}/linear_fp32.tflite", "fp32", num_classes=10)
export_tflite(m, x, f"{out}/linear_int8.tflite", "int8", calibration_x=calib, num_classes=10)
PY
cwtool bench cwtool-bench/fmnist_dense_fp32.onnx cwtool-bench/floor/linear_fp32.onnx cwtool-bench/floor/linear_int8.onnx \
  cwtool-bench/floor/linear_fp32.tflite cwtool-bench/floor/linear_int8.tflite \
  --threads 1 --runs 3000 --rounds 30 --json benchmarks/results/call_floor.json
