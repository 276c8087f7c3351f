#!/usr/bin/env bash
# Longer retraining than a CPU affords, on one lent GPU: does more compute buy the FP the FN promise's pruning goal
# asks for (Fashion-MNIST, Shirt, 10% of the parameters, FP <= 1.15x the dense model's)? Every arm runs at once on the
# GPU (a 28x28 CNN keeps an H200 mostly idle: a step is launch-bound), fp32 (faster than bf16 autocast there for
# this model: reproduce/README.md, "Retraining with 1 and 2 processes"). Arms are chosen on validation only.
#
#   reproduce/gpu_prepare.sh DENSE_s0.pt   # here (.gpu/: torch-pruning's wheel, Fashion-MNIST, seed 0's dense model)
#   reproduce/gpu_recipes.sh               # there: $OUT/recipes.tgz (each arm's compress.log, report.json, console)
set -u
OUT=${OUT:-/tmp/gpu_out}
WORK=${WORK:-/tmp/gpu_recipes}
LIMIT=${LIMIT:-440}  # seconds for every arm, the seed-1 dense model's training included
LOGS=$WORK/logs
mkdir -p "$OUT" "$LOGS"
. "$(dirname "$0")/gpu_env.sh"
export OMP_NUM_THREADS=2
start=$(date +%s)

arm() {  # arm NAME DENSE SEED FLAGS...: one compress, in the background
  local name=$1 dense=$2 seed=$3
  shift 3
  timeout $(( LIMIT - ($(date +%s) - start) )) python3 -m toolchain compress "$dense" --data fashion-mnist -p Shirt --seed "$seed" \
    --format onnx --time-runs 0 --train-precision fp32 --out "$WORK/$name" "$@" > "$LOGS/$name.console" 2>&1 &
}

arm s0_defaults "$CARRIED/dense_s0.pt" 0
arm s0_e16 "$CARRIED/dense_s0.pt" 0 --epochs 16
arm s0_e16_f16 "$CARRIED/dense_s0.pt" 0 --epochs 16 --final-epochs 16
arm s0_oneshot_e48 "$CARRIED/dense_s0.pt" 0 --rate 0.9 --epochs 48
arm s0_plain_e16 "$CARRIED/dense_s0.pt" 0 --epochs 16 --no-class-aware
(
  timeout 120 python3 -m toolchain train --arch fmnist-cnn --data fashion-mnist --epochs 7 --seed 1 --train-precision fp32 \
    --out "$WORK/dense_s1.pt" > "$LOGS/dense_s1.console" 2>&1 || exit
  arm s1_defaults "$WORK/dense_s1.pt" 1
  arm s1_e16 "$WORK/dense_s1.pt" 1 --epochs 16
  arm s1_e16_f16 "$WORK/dense_s1.pt" 1 --epochs 16 --final-epochs 16
  wait
) &
while [ -n "$(jobs -r)" ]; do
  sleep 20
  for run in "$WORK"/s*/; do
    name=$(basename "$run")
    for f in compress.log report.json; do [ -f "$run$f" ] && cp "$run$f" "$LOGS/$name.$f"; done
  done
  tar czf "$OUT/recipes.tgz" -C "$WORK" logs
  echo "$(( $(date +%s) - start )) s: $(ls "$LOGS"/*.report.json 2>/dev/null | wc -l) arms finished"
done
