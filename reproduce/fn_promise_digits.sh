#!/usr/bin/env bash
# The FN promise where validation is small: digits (about 27 threes in validation). Two tickets: a digits-cnn pruned to
# half and retrained one epoch (a candidate that disagrees with the dense model near the edge), and the demo's (10% of
# the parameters, 10 epochs). Each run's held-out rows re-split 200 times; the guard with the edge sample counted as
# missed (as it ships) and as caught (before). About 4 minutes on one core.
# Writes cwtool-bench/digits_promise/ and reproduce/results/fn_promise_coverage_digits_{brief,demo}.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi  # else: cwtool as installed (python, cwtool on PATH)
export OMP_NUM_THREADS=1
W=cwtool-bench/digits_promise
mkdir -p "$W"
[ -f "$W/dense.pt" ] || cwtool train --arch digits-cnn --data digits --epochs 10 --lr 3e-3 --out "$W/dense.pt" > "$W/train.log" 2>&1
[ -f "$W/brief/report.json" ] || cwtool compress "$W/dense.pt" --data digits -p 3 --keep-params 0.5 --epochs 1 --max-fn-increase 1 \
  --confidence 0.65 --max-accuracy-drop 0.5 --skip-export --out "$W/brief" > "$W/brief.log" 2>&1 || true
python reproduce/fn_promise_coverage.py "$W/brief" --draws 200 --confidence 0.65 0.9 --json reproduce/results/fn_promise_coverage_digits_brief.json
[ -f "$W/cwtool-demo/report.json" ] || (cd "$W" && cwtool demo > demo.log 2>&1 || true)
python reproduce/fn_promise_coverage.py "$W/cwtool-demo" --draws 200 --budget 1 --confidence 0.65 0.9 --json reproduce/results/fn_promise_coverage_digits_demo_b1.json
python reproduce/fn_promise_coverage.py "$W/cwtool-demo" --draws 200 --confidence 0.8 0.9 --json reproduce/results/fn_promise_coverage_digits_demo.json
