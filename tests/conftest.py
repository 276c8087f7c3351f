"""Shared fixtures: the digits data, one small dense model trained on it per test session, and an
untrained one for tests that only need a graph (export, latency, fit checks)."""

from __future__ import annotations

import os

import pytest

# The suite reads what cwtool writes to a pipe; FORCE_COLOR (set by some CI systems) would colour it
os.environ.pop("FORCE_COLOR", None)


@pytest.fixture(scope="session")
def digits_dataset():
    from toolchain.data import load_data

    return load_data("digits", seed=0)


@pytest.fixture(scope="session")
def trained_digits(tmp_path_factory, digits_dataset):
    """(checkpoint path, model) of a digits-cnn trained for a few seconds, seeded."""
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint
    from toolchain.models.train import TrainConfig, seed_everything, train

    seed_everything(0)
    model = registry.create("digits-cnn")
    train(model, digits_dataset.x_train, digits_dataset.y_train, TrainConfig(epochs=10, lr=3e-3, batch_size=64, seed=0))
    path = tmp_path_factory.mktemp("dense") / "digits_cnn.pt"
    save_checkpoint(path, model, "digits-cnn", {}, digits_dataset.input_shape)
    return path, model.eval()


@pytest.fixture(scope="session")
def untrained_digits():
    """(model, example input) of an untrained, seeded digits-cnn in eval mode: fast to export."""
    import torch

    from toolchain.models import registry

    torch.manual_seed(0)
    return registry.create("digits-cnn").eval(), torch.randn(4, 1, 8, 8)
