#!/usr/bin/env bash
# Bytes and batch-1 single-thread latency: dense fp32 vs the pruned artifacts of `cwtool demo`.
# Run from the repository root after ./scripts/demo (which writes cwtool-demo/).
set -euo pipefail
. .venv/bin/activate
python - <<'PY'
import glob, torch
from toolchain.demo import demo_model_path
from toolchain.export.onnx import export_onnx
from toolchain.export.tflite import export_tflite
from toolchain.models.loading import load_model
m = load_model(demo_model_path()).module
export_onnx(m, torch.zeros(1, 1, 8, 8), "cwtool-demo/dense_fp32.onnx", num_classes=10)
export_tflite(m, torch.zeros(1, 1, 8, 8), "cwtool-demo/dense_fp32.tflite", "fp32", "NCHW", num_classes=10)
PY
cwtool bench cwtool-demo/dense_fp32.onnx cwtool-demo/artifacts/model_fp32.onnx cwtool-demo/artifacts/model_int8.onnx \
  cwtool-demo/dense_fp32.tflite cwtool-demo/artifacts/model_fp32_nchw.tflite cwtool-demo/artifacts/model_int8_nchw.tflite \
  --threads 1 --runs 3000 --rounds 30 --json benchmarks/results/digits_bench.json
