#!/usr/bin/env bash
# The pruning goal at the shipped point: Fashion-MNIST, Shirt, 10% of the parameters, two seeds, compress's
# defaults (the guarded operating point at 0.95) beside the plain arm (same distillation) and the anchor given
# the same guard; then coverage by resampling on seed 0's run. Two lanes, one core each (~1.5 h on 2 cores).
# Needs the Debian package dataset-fashion-mnist. Writes cwtool-bench/fmnist_promise/ and
# reproduce/results/fn_promise_*.json; `python reproduce/fn_promise_table.py` prints the table.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi  # else: cwtool as installed (python, cwtool on PATH)
export OMP_NUM_THREADS=1
W=cwtool-bench/fmnist_promise
mkdir -p "$W" reproduce/results

lane() {
  local s=$1
  [ -f "$W/dense_s$s.pt" ] || cwtool train --arch fmnist-cnn --data fashion-mnist --epochs 7 --lr 1e-3 --seed "$s" --out "$W/dense_s$s.pt"
  # the table's rows: the defaults retrained in fp32 and in bf16 (auto picks by the machine: named here, so every machine makes both)
  [ -f "$W/defaults_s$s/report.json" ] || cwtool compress "$W/dense_s$s.pt" --data fashion-mnist -p Shirt --seed "$s" --train-precision fp32 --out "$W/defaults_s$s" || true
  [ -f "$W/defaults_bf16_s$s/report.json" ] || cwtool compress "$W/dense_s$s.pt" --data fashion-mnist -p Shirt --seed "$s" --train-precision bf16 --out "$W/defaults_bf16_s$s" || true
  if [ "$s" = 0 ]; then
    python reproduce/fn_promise_coverage.py "$W/defaults_s0" --draws 1000 --json reproduce/results/fn_promise_coverage_fmnist_s0.json
  fi
  [ -f "$W/plain_s$s/report.json" ] || cwtool compress "$W/dense_s$s.pt" --data fashion-mnist -p Shirt --seed "$s" --no-class-aware --skip-export --out "$W/plain_s$s" || true
  [ -f "$W/anchor_s$s.json" ] || python reproduce/fn_promise_anchor.py --dense "$W/dense_s$s.pt" --data fashion-mnist -p Shirt --seed "$s" --json "$W/anchor_s$s.json"
  [ -f "$W/anchor_e6_s$s.json" ] || python reproduce/fn_promise_anchor.py --dense "$W/dense_s$s.pt" --data fashion-mnist -p Shirt --seed "$s" --epochs 6 --json "$W/anchor_e6_s$s.json"
}

lane 0 > "$W/lane0.log" 2>&1 &
lane 1 > "$W/lane1.log" 2>&1 &
wait
python reproduce/fn_promise_table.py "$W" --json reproduce/results/fn_promise_fmnist.json
