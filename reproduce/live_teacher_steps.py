#!/usr/bin/env python
"""Fifty flipped retraining steps (6,400 Fashion-MNIST train rows, batch 128, bf16 autocast, the defaults' class-dependent
loss with distillation) of a full-size student, one thread: the dense model itself as the live teacher (fp32, contiguous
weights: before toolchain.prune.loss.LiveTeacher) against LiveTeacher, three interleaved pairs.

    python reproduce/live_teacher_steps.py DENSE.pt      # a fmnist-cnn from cwtool train --arch fmnist-cnn --data fashion-mnist
"""
import copy
import sys
import time

import torch

from toolchain.data import load_data
from toolchain.data.dataset import Augment
from toolchain.models.loading import load_model
from toolchain.models.train import TrainConfig, train
from toolchain.prune.loss import ClassDependentLoss, LiveTeacher

if len(sys.argv) != 2 or sys.argv[1].startswith("-"):
    sys.exit(__doc__)
torch.set_num_threads(1)
data = load_data("fashion-mnist", seed=0)
x, y = data.x_train[:6400], data.y_train[:6400]
dense = load_model(sys.argv[1]).module.eval()


def epoch_seconds(teacher) -> float:
    student = copy.deepcopy(dense)
    loss = ClassDependentLoss(10, [6], gamma=5.0, rank_weight=1.0, teacher_model=teacher, distill_weight=1.0)
    start = time.perf_counter()
    train(student, x, y, TrainConfig(epochs=1, lr=1e-3, batch_size=128, seed=0, augment=Augment(crop_scale=None, flip=True),
                                     precision="bf16"), loss_fn=loss)
    return time.perf_counter() - start


live = LiveTeacher(dense, x, torch.bfloat16, torch.device("cpu"))
epoch_seconds(live)  # warm-up
for _ in range(3):
    print(f"dense model as teacher: {epoch_seconds(dense):.1f} s   LiveTeacher: {epoch_seconds(live):.1f} s", flush=True)
