#!/usr/bin/env bash
# Bytes and batch-1 latency of Fashion-MNIST files (reproduce/README.md, "Size and speed: Fashion-MNIST"):
# the dense CNN, then three compress runs protecting Shirt -- a parameter goal of 10%, of 4%, and 10% with a
# MAC goal of 7% -- and three interleaved `cwtool bench` runs plus three bare session.run runs of the files.
# Run from the repository root with cwtool installed, on an otherwise idle machine (the compress runs take
# about 45 min each on one core). Needs the Debian package dataset-fashion-mnist.
# Writes cwtool-bench/fmnist_latency/ and reproduce/results/fmnist_latency.json, fmnist_bare_session_run.json.
set -euo pipefail
W=cwtool-bench/fmnist_latency
mkdir -p "$W" reproduce/results
export OMP_NUM_THREADS=1

[ -f "$W/dense.pt" ] || cwtool train --arch fmnist-cnn --data fashion-mnist --epochs 7 --lr 1e-3 --out "$W/dense.pt"
[ -f "$W/dense_fp32.onnx" ] || python - "$W" <<'PY'
import sys, torch
from toolchain.export.onnx import export_onnx
from toolchain.models.loading import load_model
export_onnx(load_model(f"{sys.argv[1]}/dense.pt").module, torch.zeros(1, 1, 28, 28), f"{sys.argv[1]}/dense_fp32.onnx", num_classes=10)
PY

run() {  # run NAME FLAGS...: a finished run is kept; exit 1 (gate or promise not met) still leaves the files
  local name=$1; shift
  [ -f "$W/$name/report.json" ] || cwtool compress "$W/dense.pt" --data fashion-mnist -p Shirt --rate 0.3 --epochs 3 \
    --final-epochs 20 --round-to 8 --out "$W/$name" "$@" || [ $? -eq 1 ]
}
run params10 --keep-params 0.1
run params04 --keep-params 0.04
run macs07 --keep-params 0.1 --keep-macs 0.07 --max-accuracy-drop 0.03

files=("$W/dense_fp32.onnx" "$W"/macs07/artifacts/model_int8.onnx "$W"/macs07/artifacts/model_int8_nchw.tflite
       "$W"/macs07/artifacts/model_fp32.onnx "$W"/macs07/artifacts/model_fp32_nchw.tflite
       "$W"/params04/artifacts/model_int8.onnx "$W"/params04/artifacts/model_int8_nchw.tflite
       "$W"/params10/artifacts/model_int8.onnx "$W"/params10/artifacts/model_int8_nchw.tflite)
for i in 1 2 3; do
  cwtool bench "${files[@]}" --threads 1 --runs 3000 --rounds 30 --json "$W/bench_$i.json"
done
python reproduce/bench_summary.py "$W"/bench_{1,2,3}.json --strip "$W/" --model macs07="$W/macs07" --model params04="$W/params04" \
  --model params10="$W/params10" --out reproduce/results/fmnist_latency.json
python reproduce/bare_session_run.py "$W/dense_fp32.onnx" "$W"/macs07/artifacts/model_int8.onnx "$W"/params10/artifacts/model_int8.onnx \
  --repeat 3 --strip "$W/" --json reproduce/results/fmnist_bare_session_run.json
