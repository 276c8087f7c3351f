#!/usr/bin/env bash
# How the shipped point's false positives depend on the size: Fashion-MNIST, Shirt, compress's defaults at 10%, 15%,
# 20% and 30% of the parameters, two seeds, validation only (no export); then what the guard costs the dense model
# itself. Two lanes, one core each (~45 min on 2 cores). Needs the Debian package dataset-fashion-mnist.
# Writes cwtool-bench/fmnist_sizes/ and reproduce/results/fn_promise_sizes_fmnist.json.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ -f .venv/bin/activate ]; then . .venv/bin/activate; fi  # else: cwtool as installed (python, cwtool on PATH)
export OMP_NUM_THREADS=1
W=cwtool-bench/fmnist_sizes
mkdir -p "$W"

lane() {
  local s=$1
  [ -f "$W/dense_s$s.pt" ] || cwtool train --arch fmnist-cnn --data fashion-mnist --epochs 7 --lr 1e-3 --seed "$s" --out "$W/dense_s$s.pt"
  for keep in 0.1 0.15 0.2 0.3; do
    [ -f "$W/keep${keep}_s$s/report.json" ] || cwtool compress "$W/dense_s$s.pt" --data fashion-mnist -p Shirt --seed "$s" \
      --keep-params "$keep" --skip-export --out "$W/keep${keep}_s$s" || true
  done
  python reproduce/guard_floor.py "$W/dense_s$s.pt" --data fashion-mnist -p Shirt --seed "$s" --json "$W/guard_floor_s$s.json"
}

lane 0 > "$W/lane0.log" 2>&1 &
lane 1 > "$W/lane1.log" 2>&1 &
wait
runs=()
for s in 0 1; do for keep in 0.1 0.15 0.2 0.3; do runs+=("seed $s, $keep=$W/keep${keep}_s$s"); done; done
python reproduce/fn_promise_levers.py "${runs[@]}" --json "$W/sizes.json"
python - "$W" <<'PY'
import json, sys
from pathlib import Path
w = Path(sys.argv[1])
out = {"runs": json.loads((w / "sizes.json").read_text()),
       "guard_floor": [json.loads((w / f"guard_floor_s{s}.json").read_text()) for s in (0, 1)]}
Path("reproduce/results/fn_promise_sizes_fmnist.json").write_text(json.dumps(out, indent=2) + "\n")
PY
