"""The anchor's latency measure: bare onnxruntime ``session.run`` with a numpy input (no io_binding,
no cwtool runner), 1 thread, batch 1, interleaved across files in 30 rounds of 100 calls. The first
file is the baseline of the speed-up column. --repeat N makes N such runs, one after the other.

    python reproduce/bare_session_run.py dense_fp32.onnx run/artifacts/model_int8.onnx --repeat 3 --json out.json
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import onnxruntime as ort


def one_run(files: list[str]) -> dict:
    calls = {}
    for path in files:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads, opts.log_severity_level = 1, 1, 3
        session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        inp = session.get_inputs()[0]
        shape = [1 if not isinstance(d, int) else d for d in inp.shape]
        feed = {inp.name: np.random.default_rng(0).standard_normal(shape).astype(np.float32)}
        calls[path] = (lambda s=session, f=feed: s.run(None, f), [])
    for call, _ in calls.values():
        for _ in range(20):
            call()
    for _ in range(30):
        for call, times in calls.values():
            for _ in range(100):
                t = time.perf_counter()
                call()
                times.append(time.perf_counter() - t)
    base = float(np.median(calls[files[0]][1]))
    return {p: {"p50_ms": round(float(np.median(t)) * 1e3, 4), "speedup": round(base / float(np.median(t)), 2)} for p, (_, t) in calls.items()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--strip", default="", help="a prefix removed from the files' names in the output")
    ap.add_argument("--json")
    args = ap.parse_args()
    runs = []
    for i in range(args.repeat):
        rows = {p[len(args.strip):] if p.startswith(args.strip) else p: row for p, row in one_run(args.files).items()}
        runs.append(rows)
        for path, row in rows.items():
            print(f"run {i + 1}: {path}: session.run p50 {row['p50_ms']:.4f} ms, {row['speedup']:.1f}x")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"measure": "bare session.run, numpy input, 1 thread, batch 1, 30 rounds of 100 calls", "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
