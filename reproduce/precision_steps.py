"""Does auto's arithmetic pay for each architecture? Per model: one training step in fp32 and in bf16 autocast, as
auto times it on a GPU (toolchain.models.fast_paths.step_times), beside the images/s of whole training epochs in each
(toolchain.models.train.train, the second of two epochs each, interleaved). Random rows of the input shape: speed
does not depend on the pixels.

    OMP_NUM_THREADS=2 python reproduce/precision_steps.py --json reproduce/results/precision_steps_cpu.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

ARCHS = ("mobilenetv2", "mobilenetv3-large", "efficientnet-b0", "shufflenetv2", "resnet18", "resnet50")


def main() -> None:
    import numpy as np
    import torch

    from toolchain.models import registry
    from toolchain.models.fast_paths import native_bf16, step_times
    from toolchain.models.train import TrainConfig, pick_device, train

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--archs", default=",".join(ARCHS))
    parser.add_argument("--shape", default="3,224,224", help="C,H,W")
    parser.add_argument("--rows", type=int, default=64, help="rows of a training epoch")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    device = pick_device(args.device)
    shape = tuple(int(v) for v in args.shape.split(","))
    rng = np.random.default_rng(0)
    x = rng.random((args.rows, *shape), dtype=np.float32)
    y = rng.integers(0, 2, args.rows)
    rows = []
    for arch in args.archs.split(","):
        model = registry.create(arch, in_channels=shape[0], num_classes=2)
        ms = step_times(model, x, device, args.batch_size)
        rates: dict[str, list[float]] = {}
        for precision in ("fp32", "bf16") * 2:
            t0 = time.perf_counter()
            train(model, x, y, TrainConfig(epochs=1, batch_size=args.batch_size, precision=precision), device=device)
            rates.setdefault(precision, []).append(len(x) / (time.perf_counter() - t0))
        row = {"arch": arch, "step_ms_fp32": ms[None], "step_ms_bf16": ms[torch.bfloat16],
               "images_per_s_fp32": rates["fp32"][-1], "images_per_s_bf16": rates["bf16"][-1]}
        rows.append(row)
        print(f"{arch:18s} step fp32 {row['step_ms_fp32']:7.0f} ms, bf16 {row['step_ms_bf16']:7.0f} ms | epoch images/s fp32 "
              f"{row['images_per_s_fp32']:7.1f}, bf16 {row['images_per_s_bf16']:7.1f}", flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"device": str(device), "cpu": platform.processor() or platform.machine(), "native_bf16": native_bf16(device),
                                         "threads": torch.get_num_threads(), "shape": shape, "batch_size": args.batch_size, "rows": args.rows,
                                         "runs": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
