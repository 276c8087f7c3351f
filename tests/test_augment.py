"""Batch augmentation for retraining, and the live teacher that sees the augmented batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from toolchain.models.augment import augmenter, shift_flip
from toolchain.models.train import TrainConfig, train
from toolchain.prune.loss import ClassDependentLoss


def _images(n=32, size=12, border=2, seed=0):
    """Random images with a zero border of ``border`` pixels, so a shift of at most that loses nothing."""
    x = torch.zeros(n, 1, size, size)
    x[:, :, border:-border, border:-border] = torch.rand(n, 1, size - 2 * border, size - 2 * border, generator=torch.Generator().manual_seed(seed))
    return x


def test_shift_moves_each_image_by_at_most_shift_pixels_and_keeps_its_content():
    x = _images()
    out = shift_flip(x, torch.Generator().manual_seed(1), shift=2)
    assert out.shape == x.shape
    moved = 0
    for a, b in zip(x, out):
        # the content is intact: some shift within +-2 maps the original onto the output exactly
        matches = [(dy, dx) for dy in range(-2, 3) for dx in range(-2, 3) if torch.equal(torch.roll(a, (dy, dx), (1, 2)), b)]
        assert matches, "an output image is not a shifted copy of its input"
        moved += (0, 0) not in matches
    assert moved > len(x) // 2  # 24 of 25 offsets move the image


def test_flip_mirrors_about_half_of_the_images_and_shift_flip_is_repeatable():
    x = _images(n=64)
    out = shift_flip(x, torch.Generator().manual_seed(2), shift=0, flip=True)
    mirrored = [torch.equal(b, a.flip(-1)) for a, b in zip(x, out)]
    assert all(torch.equal(b, a) or m for a, b, m in zip(x, out, mirrored))
    assert 16 < sum(mirrored) < 48
    again = shift_flip(x, torch.Generator().manual_seed(2), shift=0, flip=True)
    assert torch.equal(out, again)


def test_augmenter_kinds():
    assert augmenter("none") is None
    x = _images(n=16)
    shifted = augmenter("shift")(x, torch.Generator().manual_seed(0))
    assert not torch.equal(shifted, x)
    assert torch.equal(augmenter("shift", shift=0)(x, torch.Generator()), x)  # "shift" never mirrors
    with pytest.raises(ValueError, match="augment must be one of"):
        augmenter("rotate")


def test_train_hands_the_augmented_batch_to_the_model_and_the_loss():
    seen = []
    marker = 7.0

    def augment(xb, generator):
        return torch.full_like(xb, marker)

    def loss_fn(logits, targets, idx, inputs):
        seen.append(float(inputs.unique().item()))
        return torch.nn.functional.cross_entropy(logits, targets)

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    x = np.zeros((10, 1, 2, 2), dtype=np.float32)
    y = np.array([0, 1] * 5)
    train(model, x, y, TrainConfig(epochs=1, batch_size=4), loss_fn=loss_fn, device=torch.device("cpu"), augment=augment)
    assert seen == [marker] * 3


def test_live_teacher_gives_the_cached_teachers_loss_on_the_same_inputs():
    torch.manual_seed(0)
    teacher = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(6, 4))
    x = torch.randn(8, 1, 2, 3)
    logits = torch.randn(8, 4)
    targets = torch.tensor([0, 1, 2, 3, 1, 1, 0, 2])
    idx = torch.arange(8)
    with torch.no_grad():
        cached = ClassDependentLoss(4, [1], teacher_logits=teacher(x), distill_weight=1.0)(logits, targets, idx)
    live = ClassDependentLoss(4, [1], teacher=teacher, distill_weight=1.0)(logits, targets, idx, x)
    elsewhere = ClassDependentLoss(4, [1], teacher=teacher, distill_weight=1.0)(logits, targets, idx, x.flip(-1))
    assert torch.allclose(cached, live) and not torch.allclose(live, elsewhere)
    with pytest.raises(ValueError, match="needs the batch inputs"):
        ClassDependentLoss(4, [1], teacher=teacher, distill_weight=1.0)(logits, targets, idx)
