#!/usr/bin/env bash
# Fashion-MNIST end to end on this machine's CPU: dense CNN (7 epochs Adam), compress to 10% of the
# parameters protecting Shirt, then bytes and batch-1 latency of the dense fp32 ONNX vs the artifacts.
# Needs the Debian package dataset-fashion-mnist. Writes cwtool-bench/ and benchmarks/results/fmnist_bench_r8s.json.
set -euo pipefail
. .venv/bin/activate
mkdir -p cwtool-bench
[ -f cwtool-bench/fmnist_dense.pt ] || cwtool train --arch fmnist-cnn --data fashion-mnist --epochs 7 --lr 1e-3 --out cwtool-bench/fmnist_dense.pt
rm -rf cwtool-bench/fmnist_r8s
# channels rounded to multiples of 8 (the CPU kernels' block): same size, faster int8
cwtool compress cwtool-bench/fmnist_dense.pt --data fashion-mnist -p Shirt --keep-params 0.1 --epochs 6 --round-to 8 --out cwtool-bench/fmnist_r8s || true
python - <<'PY'
import torch
from toolchain.export.onnx import export_onnx
from toolchain.models.loading import load_model
m = load_model("cwtool-bench/fmnist_dense.pt").module
export_onnx(m, torch.zeros(1, 1, 28, 28), "cwtool-bench/fmnist_dense_fp32.onnx", num_classes=10)
PY
# the dense baseline first: the speed-up column is relative to it; run on an otherwise idle machine
cwtool bench cwtool-bench/fmnist_dense_fp32.onnx cwtool-bench/fmnist_r8s/artifacts/*.onnx cwtool-bench/fmnist_r8s/artifacts/*.tflite \
  --threads 1 --runs 3000 --rounds 30 --json benchmarks/results/fmnist_bench_r8s.json

# With a MAC goal beside the parameter goal (docs/BENCHMARKS.md, "H."): ~40 min of pruning on one core.
rm -rf cwtool-bench/fmnist_macgoal
cwtool compress cwtool-bench/fmnist_dense.pt --data fashion-mnist -p Shirt --keep-params 0.1 --keep-macs 0.07 --rate 0.3 --epochs 3 \
  --final-epochs 20 --round-to 8 --out cwtool-bench/fmnist_macgoal || true
cwtool bench cwtool-bench/fmnist_dense_fp32.onnx cwtool-bench/fmnist_macgoal/artifacts/*.onnx cwtool-bench/fmnist_macgoal/artifacts/*.tflite \
  --threads 1 --runs 3000 --rounds 30 --json benchmarks/results/fmnist_bench_macgoal.json
