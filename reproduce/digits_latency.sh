#!/usr/bin/env bash
# Bytes and batch-1 latency of the demo's files against the dense demo CNN (reproduce/README.md, "Size and
# speed: the digits demo"). Run from the repository root with cwtool installed; a few minutes.
# Writes cwtool-demo/ (the demo's run), cwtool-bench/digits_latency/ and reproduce/results/digits_latency.json.
set -euo pipefail
W=cwtool-bench/digits_latency
mkdir -p "$W" reproduce/results
export OMP_NUM_THREADS=1
cwtool demo || [ $? -eq 1 ]
python - "$W" <<'PY'
import sys, torch
from toolchain.demo import demo_model_path
from toolchain.export.onnx import export_onnx
from toolchain.export.tflite import export_tflite
from toolchain.models.loading import load_model
m, x, w = load_model(demo_model_path()).module, torch.zeros(1, 1, 8, 8), sys.argv[1]
export_onnx(m, x, f"{w}/dense_fp32.onnx", num_classes=10)
export_tflite(m, x, f"{w}/dense_fp32.tflite", "fp32", "NCHW", num_classes=10)
PY
cwtool bench "$W/dense_fp32.onnx" cwtool-demo/artifacts/model_fp32.onnx cwtool-demo/artifacts/model_int8.onnx \
  "$W/dense_fp32.tflite" cwtool-demo/artifacts/model_fp32_nchw.tflite cwtool-demo/artifacts/model_int8_nchw.tflite \
  --threads 1 --runs 3000 --rounds 30 --json "$W/bench.json"
python reproduce/bench_summary.py "$W/bench.json" --strip "$W/" --out reproduce/results/digits_latency.json
