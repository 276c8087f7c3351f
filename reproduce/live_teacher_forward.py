#!/usr/bin/env python
"""One forward of the dense model as the live teacher of augmented retraining, one thread: fp32 on contiguous weights
(fed channels-last batches, as the teacher ran before toolchain.prune.loss.LiveTeacher), fp32 channels-last, and bf16
autocast channels-last (LiveTeacher on a CPU with native bf16). Random weights and inputs: only the time matters.

    python reproduce/live_teacher_forward.py fmnist-cnn 28 128
    python reproduce/live_teacher_forward.py mobilenetv2 224 32
"""
import copy
import sys
import time

import torch

from toolchain.models.fast_paths import autocast
from toolchain.models.registry import create

if len(sys.argv) != 4 or not sys.argv[2].isdigit() or not sys.argv[3].isdigit():
    sys.exit(__doc__)
torch.set_num_threads(1)
arch, side, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
channels = 1 if arch == "fmnist-cnn" else 3
model = create(arch, **({} if arch == "fmnist-cnn" else {"num_classes": 2})).eval()
x = torch.randn(batch, channels, side, side).contiguous(memory_format=torch.channels_last)
last = copy.deepcopy(model).to(memory_format=torch.channels_last)
cpu = torch.device("cpu")
ways = [("fp32, weights contiguous (before)", model, None), ("fp32 channels-last", last, None),
        ("bf16 channels-last (LiveTeacher)", last, torch.bfloat16)]


def best_ms(m, dtype, repeats=5):
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        with torch.no_grad(), autocast(dtype, cpu):
            m(x).float()
        times.append(time.perf_counter() - start)
    return min(times) * 1000


for _, m, dtype in ways:
    best_ms(m, dtype, 2)  # warm-up
print(arch, side, batch)
for _ in range(2):  # interleaved: a slow spell hits every way alike
    for name, m, dtype in ways:
        print(f"  {name}: {best_ms(m, dtype):.1f} ms")
