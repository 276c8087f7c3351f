"""Why cwtool's ONNX int8 weights use 7 of their 8 bits. On an x86 CPU without VNNI, onnxruntime's int8
kernels multiply u8 x s8 pairs with VPMADDUBSW, whose 16-bit pair sums saturate when the weights use the
full int8 range; with 7-bit weights they cannot. This quantizes one fp32 ONNX file twice (quantize_onnx,
weight_bits 8 and 7, every layer int8, no offset) and reports, on the test split, accuracy and argmax
agreement with the fp32 file: under onnxruntime's optimized kernels and as plain QDQ arithmetic (graph
optimizations off, which computes what the file says). Run it on the CPU in question.

    python reproduce/int8_weight_bits.py RUN/artifacts/model_fp32.onnx --data fashion-mnist \
        --calibration RUN/calibration.npz [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from toolchain.data import load_data
from toolchain.export.onnx_int8 import quantize_onnx
from toolchain.quantize.calibration import load_calibration

from bench_summary import machine  # reproduce/ is this script's folder


def logits(path: Path, x: np.ndarray, optimized: bool) -> np.ndarray:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.log_severity_level = 1, 3
    if not optimized:
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return np.concatenate([session.run(None, {name: x[i:i + 256]})[0] for i in range(0, len(x), 256)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("fp32", type=Path)
    ap.add_argument("--data", required=True)
    ap.add_argument("--seed", type=int, default=0, help="the data split's seed (the compress run's)")
    ap.add_argument("--calibration", type=Path, help="a calibration set (.npz); default: 256 training rows")
    ap.add_argument("--work", type=Path, default=Path("cwtool-bench/weight_bits"))
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    dataset = load_data(args.data, seed=args.seed)
    x, y = dataset.split("test")
    x = np.ascontiguousarray(x, dtype=np.float32)
    calib = load_calibration(args.calibration)[0] if args.calibration else dataset.split("train")[0][:256].astype(np.float32)
    args.work.mkdir(parents=True, exist_ok=True)
    ref = logits(args.fp32, x, True).argmax(1)
    rows = {"fp32": {"accuracy": round(float(np.mean(ref == y)), 4)}, "machine": machine(), "onnxruntime": ort.__version__}
    for bits in (8, 7):
        path = quantize_onnx(args.fp32, args.work / f"int8_w{bits}.onnx", calib, weight_bits=bits)
        for optimized in (True, False):
            pred = logits(path, x, optimized).argmax(1)
            rows[f"w{bits}_{'optimized' if optimized else 'qdq_arithmetic'}"] = {
                "accuracy": round(float(np.mean(pred == y)), 4), "agreement": round(float(np.mean(pred == ref)), 4)}
    print(json.dumps(rows, indent=1))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
