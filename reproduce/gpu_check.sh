#!/usr/bin/env bash
# cwtool on one CUDA GPU, in one prepared go (a lent GPU machine: no network, its own python3 and torch).
#
#   reproduce/gpu_prepare.sh            # here: the carried folder .gpu/ (torch-pruning's wheel, Fashion-MNIST, a dense model)
#   reproduce/gpu_check.sh              # there, from the repository root: $OUT/results.tgz, $OUT/steps.txt
#
# Steps, each under its own time limit so that one failure leaves the others' results:
#   ddp       retraining images/s, 1 GPU against the machine's own CPU (reproduce/ddp_throughput.py)
#   compress  the Fashion-MNIST defaults (seed 0, Shirt, ONNX files) on the GPU, wall time
#   anchor    the 3-epoch anchor with onnxruntime int8 on the GPU, wall time
#   torchrun  digits: a dense model trained, then compressed under torchrun (one process: cwtool's single-process path)
#   zoo       retraining images/s of mobilenetv2 and resnet50 at 224 px, fp32 against bf16 autocast, on the GPU
#             (random rows: does bf16 pay where a model keeps the GPU busy? fmnist-cnn's steps are launch-bound)
set -u
OUT=${OUT:-/tmp/gpu_out}
WORK=${WORK:-/tmp/gpu_work}
QUICK=${QUICK:-}  # a dry run's shortened flags for the Fashion-MNIST compress (e.g. "--rate 0.9 --epochs 1"); empty on the GPU
LOGS=$WORK/logs  # packed into $OUT/results.tgz after every step: a machine's call returns at most 8 files
mkdir -p "$OUT" "$LOGS"
. "$(dirname "$0")/gpu_env.sh"
{ nvidia-smi -L; nproc; python3 -c 'import torch, onnxruntime, torch_pruning; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "ort", onnxruntime.__version__, "tp", torch_pruning.__version__)'; } 2>&1 | tee "$LOGS/machine.txt"

pack() {
  for f in run/report.json run/compress.log digits_run/report.json; do
    if [ -f "$WORK/$f" ]; then cp "$WORK/$f" "$LOGS/$(echo "$f" | tr / _)"; fi
  done
  tar czf "$OUT/results.tgz" -C "$WORK" logs
}

step() {  # step NAME SECONDS COMMAND...: its output in NAME.log, its exit code and wall time in $OUT/steps.txt
  local name=$1 limit=$2 start rc
  shift 2
  start=$(date +%s%N)
  timeout "$limit" "$@" > "$LOGS/$name.log" 2>&1
  rc=$?
  echo "$name rc=$rc ms=$(( ($(date +%s%N) - start) / 1000000 ))" | tee -a "$OUT/steps.txt"
  pack
}

step ddp 110 python3 reproduce/ddp_throughput.py --data fashion-mnist --rows 25600 --gpu --cpu-threads "${CPU_THREADS:-$(nproc)}" \
  --json "$LOGS/ddp_gpu.json"
step compress 300 python3 -m toolchain compress "$CARRIED/dense_s0.pt" --data fashion-mnist -p Shirt --seed 0 --format onnx \
  --out "$WORK/run" $QUICK
step anchor 90 python3 reproduce/fn_promise_anchor.py --dense "$CARRIED/dense_s0.pt" --data fashion-mnist -p Shirt --seed 0 \
  --epochs 3 --int8 "$WORK/anchor" --json "$LOGS/anchor.json"
step train_digits 30 python3 -m toolchain train --arch digits-cnn --data digits --epochs 10 --out "$WORK/digits.pt"
step torchrun 60 python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m toolchain compress "$WORK/digits.pt" \
  --data digits -p 3 --max-fn-increase 2 --confidence 0.8 --format onnx --out "$WORK/digits_run"
for arch in mobilenetv2 resnet50; do
  step "zoo_$arch" 90 python3 reproduce/ddp_throughput.py --arch "$arch" --synthetic 3,224,224 --rows 4096 --batch-size 64 \
    --gpu --cpu-threads none --json "$LOGS/zoo_$arch.json"
done
exit 0
