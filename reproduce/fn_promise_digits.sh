#!/usr/bin/env bash
# The FN promise where validation is small: digits (about 27 threes in validation), the demo's run (cwtool demo: 10% of
# the parameters, fp32), its held-out rows re-split 200 times; the guard with the edge sample counted as missed (as it
# ships) and as caught (before), at budget 1 and 2. About 3 minutes on one core.
# Writes cwtool-bench/digits_promise/ and reproduce/results/fn_promise_coverage_digits_b{1,2}.json.
set -euo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export OMP_NUM_THREADS=1
W=cwtool-bench/digits_promise
mkdir -p "$W"
(cd "$W" && cwtool demo > demo.log 2>&1 || true)  # exit 1 would still leave its run; the coverage reads the ticket
python reproduce/fn_promise_coverage.py "$W/cwtool-demo" --draws 200 --budget 1 --confidence 0.65 0.9 --json reproduce/results/fn_promise_coverage_digits_b1.json
python reproduce/fn_promise_coverage.py "$W/cwtool-demo" --draws 200 --budget 2 --confidence 0.8 0.9 --json reproduce/results/fn_promise_coverage_digits_b2.json
