#!/usr/bin/env bash
# cwtool on one CUDA GPU, in one prepared go (a lent GPU machine: no network, its own python3 and torch).
#
#   reproduce/gpu_prepare.sh            # here: the carried folder .gpu/ (torch-pruning's wheel, Fashion-MNIST, a dense model)
#   reproduce/gpu_check.sh              # there, from the repository root: $OUT/results.tgz, $OUT/steps.txt
#
# Steps, each under its own time limit so that one failure leaves the others' results (STEPS="a b": only those):
#   ddp        retraining images/s, 1 GPU against the machine's own CPU (reproduce/ddp_throughput.py)
#   precision  retraining images/s in fp32, bf16 autocast and auto (which times both on a GPU and keeps the faster):
#              fmnist-cnn at 28 px, the 224-px zoo, mobilenetv2 at 64 px (random rows: speed does not depend on pixels)
#   compress   the Fashion-MNIST defaults (seed 0, Shirt, ONNX files) on the GPU, wall time
#   anchor     the 3-epoch anchor with onnxruntime int8 on the GPU, wall time
#   train_digits  a dense digits model, for the steps below
#   torchrun   digits compressed under torchrun, one process: cwtool's single-process path
#   nccl_one   the same through DistributedDataParallel over NCCL, a one-process group (reproduce/nccl_one_rank.py)
#   two_gpu    torchrun with 2 processes on a 1-GPU machine: refused in one line (each process exits 2, torchrun 1)
#   two_cpu    torchrun with 2 processes and --device cpu on the GPU machine: gloo, not NCCL
set -u
OUT=${OUT:-/tmp/gpu_out}
WORK=${WORK:-/tmp/gpu_work}
QUICK=${QUICK:-}  # a dry run's shortened flags for the Fashion-MNIST compress (e.g. "--rate 0.9 --epochs 1"); empty on the GPU
LOGS=$WORK/logs  # packed into $OUT/results.tgz after every step: a machine's call returns at most 8 files
mkdir -p "$OUT" "$LOGS"
. "$(dirname "$0")/gpu_env.sh"
{ nvidia-smi -L; nproc; python3 -c 'import torch, onnxruntime, torch_pruning; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-", "ort", onnxruntime.__version__, "tp", torch_pruning.__version__)'; } 2>&1 | tee "$LOGS/machine.txt"

pack() {
  for f in run/report.json run/compress.log digits_run/report.json nccl_run/report.json two_cpu_run/report.json; do
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

want() { [ -z "${STEPS:-}" ] || [[ " $STEPS " == *" $1 "* ]]; }
ON_GPU=${ON_GPU:---gpu --cpu-threads none}  # a dry run on a CPU machine: ON_GPU="--cpu-threads 2"

want ddp && step ddp 110 python3 reproduce/ddp_throughput.py --data fashion-mnist --rows 25600 --gpu --cpu-threads "${CPU_THREADS:-$(nproc)}" \
  --json "$LOGS/ddp_gpu.json"
if want precision; then
  # name arch C,H,W batch rows precisions
  while read -r name arch shape batch rows precisions; do
    step "precision_$name" 90 python3 reproduce/ddp_throughput.py --arch "$arch" --synthetic "$shape" --batch-size "$batch" --rows "$rows" \
      --precision "$precisions" $ON_GPU --json "$LOGS/precision_$name.json"
  done <<'ROWS'
fmnist-cnn fmnist-cnn 1,28,28 128 25600 fp32,bf16,auto
mobilenetv2 mobilenetv2 3,224,224 64 2048 fp32,bf16,auto
resnet50 resnet50 3,224,224 64 2048 fp32,bf16,auto
mobilenetv2_64 mobilenetv2 3,64,64 128 8192 auto
resnet18 resnet18 3,224,224 64 2048 auto
efficientnet-b0 efficientnet-b0 3,224,224 64 2048 auto
shufflenetv2 shufflenetv2 3,224,224 64 2048 auto
mobilenetv3-large mobilenetv3-large 3,224,224 64 2048 auto
ROWS
fi
DIGITS=(--data digits -p 3 --max-fn-increase 2 --confidence 0.8)
want train_digits && step train_digits 30 python3 -m toolchain train --arch digits-cnn --data digits --epochs 10 --out "$WORK/digits.pt"
want torchrun && step torchrun 60 python3 -m torch.distributed.run --standalone --nproc-per-node 1 -m toolchain compress "$WORK/digits.pt" \
  "${DIGITS[@]}" --format onnx --out "$WORK/digits_run"
want nccl_one && step nccl_one 60 python3 -m torch.distributed.run --standalone --nproc-per-node 1 reproduce/nccl_one_rank.py compress \
  "$WORK/digits.pt" "${DIGITS[@]}" --format onnx --out "$WORK/nccl_run"
want two_gpu && step two_gpu 60 python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m toolchain compress "$WORK/digits.pt" \
  "${DIGITS[@]}" --skip-export --out "$WORK/two_gpu_run"
want two_cpu && step two_cpu 90 python3 -m torch.distributed.run --standalone --nproc-per-node 2 -m toolchain compress "$WORK/digits.pt" \
  "${DIGITS[@]}" --skip-export --device cpu --out "$WORK/two_cpu_run"
want compress && step compress 300 python3 -m toolchain compress "$CARRIED/dense_s0.pt" --data fashion-mnist -p Shirt --seed 0 --format onnx \
  --out "$WORK/run" $QUICK
want anchor && step anchor 90 python3 reproduce/fn_promise_anchor.py --dense "$CARRIED/dense_s0.pt" --data fashion-mnist -p Shirt --seed 0 \
  --epochs 3 --int8 "$WORK/anchor" --json "$LOGS/anchor.json"
exit 0
