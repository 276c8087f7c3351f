"""Shared fixtures: one small dense model trained on digits per test session."""

from __future__ import annotations

import pytest


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
