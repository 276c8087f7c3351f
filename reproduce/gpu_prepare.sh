#!/usr/bin/env bash
# Here, before reproduce/gpu_check.sh runs on a GPU machine: the folder it carries (.gpu/, ignored by git).
#   reproduce/gpu_prepare.sh DENSE.pt       # a Fashion-MNIST dense model (see "The FN promise" in reproduce/README.md)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dense=${1:?a Fashion-MNIST dense model (cwtool train --arch fmnist-cnn --data fashion-mnist ...)}
cd "$root"
grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
mkdir -p .gpu/whl .gpu/fashion-mnist
# torch-pruning is pure Python; the GPU machine's image has torch, onnx, onnxruntime, scikit-learn and the rest
python3 -m pip download -q --no-deps --only-binary=:all: -d .gpu/whl torch-pruning==1.6.1 pytorchcv==0.0.74
cp /usr/share/datasets/fashion-mnist/*.gz .gpu/fashion-mnist/
cp "$dense" .gpu/dense_s0.pt
du -sh .gpu
