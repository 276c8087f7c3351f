"""Images per second of cwtool's retraining (toolchain.models.train.train with compress's loss) with 1 and
N processes under torchrun (gloo on CPU, NCCL on CUDA), or on one GPU against the CPU.

One process per run; every process gets OMP_NUM_THREADS=--threads, so 2 processes of 1 thread use the
same cores as 1 process of 2 threads, and both are measured:

    python reproduce/ddp_throughput.py --data fashion-mnist --rows 12800 --json reproduce/results/ddp_throughput.json

The model is a pruned Fashion-MNIST CNN when --model is given (a compress round), else the registry's
--arch (fmnist-cnn), untrained (speed does not depend on the weights). The first epoch is a warm-up; the
second is timed. Rates count the global batch: rows of the split / seconds of the timed epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def worker(args) -> None:
    """Inside one process (torchrun's or plain): time one epoch after a warm-up epoch."""
    import numpy as np
    import torch

    from toolchain import distributed
    from toolchain.data import load_data
    from toolchain.models.loading import load_model
    from toolchain.models.registry import create
    from toolchain.models.fast_paths import arithmetic_label, precision_choice, resolved_precision
    from toolchain.models.train import TrainConfig, pick_device, predict_logits, train
    from toolchain.prune.loss import ClassDependentLoss

    group = distributed.start(args.device)  # --device cpu on a GPU machine: gloo
    if args.synthetic:  # random rows of a shape: speed does not depend on the pixels (a 224-px zoo model, no data set)
        shape, classes = [int(v) for v in args.synthetic.split(",")], 2
        rng = np.random.default_rng(0)
        x = rng.random((args.rows, *shape), dtype=np.float32)
        y = np.arange(args.rows) % classes
    else:
        dataset = load_data(args.data, seed=0)
        x, y = dataset.x_train[: args.rows], dataset.y_train[: args.rows]
        shape, classes = dataset.input_shape, dataset.num_classes
    model = (load_model(args.model).module if args.model else create(args.arch, in_channels=shape[0], num_classes=classes)).float()
    device = torch.device(args.device) if args.device != "auto" else pick_device()
    teacher = torch.as_tensor(predict_logits(model.to(device), x, device=device))
    loss = ClassDependentLoss(classes, [min(6, classes - 1)], gamma=5.0, rank_weight=1.0, teacher_logits=teacher, distill_weight=1.0,
                              temperature=4.0)
    low_precision, why = precision_choice(model, x, args.precision, device, args.batch_size)  # auto on a GPU: timed here, once
    low_precision = distributed.agreed(low_precision)
    config = TrainConfig(epochs=1, lr=2e-3, batch_size=args.batch_size, seed=0, precision=resolved_precision(low_precision))
    train(model, x, y, config, loss_fn=loss, device=device)  # warm-up: allocator, kernels, process group
    distributed.barrier()
    t0 = time.perf_counter()
    train(model, x, y, config, loss_fn=loss, device=device)
    distributed.barrier()
    seconds = time.perf_counter() - t0
    if distributed.is_main():
        print(json.dumps({"processes": group.world if group else 1, "device": device.type, "rows": len(x), "seconds": seconds,
                          "precision": args.precision, "arithmetic": arithmetic_label(low_precision), "why": why,
                          "images_per_s": len(x) / seconds, "backend": group.backend if group else None}))
    distributed.stop()


def launch(args, processes: int, threads: int, device: str, precision: str) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    inner = [__file__, "--worker", "--data", args.data, "--rows", str(args.rows), "--batch-size", str(args.batch_size),
             "--device", device, "--arch", args.arch, "--precision", precision] + (["--model", args.model] if args.model else []) \
        + (["--synthetic", args.synthetic] if args.synthetic else [])
    cmd = ([sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *inner]
           if processes > 1 else [sys.executable, *inner])
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"{processes} process(es) on {device}, {precision}: exit {done.returncode}\n{done.stderr[-4000:]}")
    out = done.stdout
    row = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])
    return {**row, "threads_per_process": threads}


def _gpu_name() -> str | None:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--model", help="a cwtool checkpoint (e.g. a compress round); default: fmnist-cnn, untrained")
    parser.add_argument("--arch", default="fmnist-cnn", help="a registry name, used without --model")
    parser.add_argument("--rows", type=int, default=12800)
    parser.add_argument("--synthetic", help="C,H,W: random rows of this shape and 2 classes instead of --data "
                                            "(e.g. 3,224,224 for --arch mobilenetv2)")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--gpu", action="store_true", help="also one GPU against the CPU")
    parser.add_argument("--cpu-threads", default="1,2",
                        help="CPU rows: one process of each of these thread counts, and 2 processes of 1 thread "
                             "when 1 is among them; 'none' for the GPU row alone (a GPU machine's own CPU: e.g. 16)")
    parser.add_argument("--precision", default="fp32,auto", help="training arithmetics to time, comma-separated (fp32, bf16, auto)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    cores = os.cpu_count() or 1
    threads = [] if args.cpu_threads == "none" else [min(int(t), cores) for t in args.cpu_threads.split(",")]
    runs = []
    for precision in args.precision.split(","):
        runs += [launch(args, 1, t, "cpu", precision) for t in threads]
        if 1 in threads and cores > 1:
            runs.append(launch(args, 2, 1, "cpu", precision))
        if args.gpu:
            runs.append(launch(args, 1, 1, "cuda", precision))
    print(f"{'processes':>9} {'threads each':>12} {'device':>6} {'arithmetic':>13} {'images/s':>9}")
    for r in runs:
        print(f"{r['processes']:>9} {r['threads_per_process']:>12} {r['device']:>6} {r['arithmetic']:>13} {r['images_per_s']:>9.0f}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"cpus": cores, "gpu": _gpu_name() if args.gpu else None, "arch": args.model or args.arch,
                                         "input": args.synthetic or args.data, "rows": args.rows, "batch_size": args.batch_size, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
