"""Shared fixtures: the digits data, one small dense model trained on it per test session, an
untrained one for tests that only need a graph (export, latency, fit checks), and one compress run of
the trained model for raspberry-pi-4 (read by test_report_run and test_compress)."""

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


@pytest.fixture(scope="session")
def pi4_run(trained_digits, tmp_path_factory):
    """(exit code, run directory, stdout, stderr) of a fast compress for raspberry-pi-4 on digits (one round): the report,
    not the ticket, is under test (an accuracy budget one epoch reaches: a run outside it names no file to deploy, and
    the choice went untested). Shared by test_report_run and test_compress: read it, never write in it (copy it first)."""
    import contextlib
    import io

    from toolchain.cli import main

    out = tmp_path_factory.mktemp("pi4") / "run"
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr), pytest.raises(SystemExit) as exc:
        main(["compress", str(trained_digits[0]), "--data", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
              "--max-fn-increase", "2", "--confidence", "0.8", "--max-accuracy-drop", "0.5", "--target", "raspberry-pi-4",
              "--out", str(out)])
    return exc.value.code, out, stdout.getvalue(), stderr.getvalue()
