"""Run the cwtool CLI in-process and capture what it says (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import pytest


def run_cli(args, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `cwtool ARGS`; the CLI always ends in SystemExit."""
    from toolchain.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def trained_briefly(model, data=None, epochs: int = 5, seed: int = 0, lr: float = 3e-3):
    """``model`` trained a few seconds on ``data`` (a Dataset; digits when None) and returned in eval mode. compress refuses a
    model that detects nothing of the protected class (its "no more missed" would be empty): the tests of what compress does
    with an architecture start from a model that has learnt something."""
    from toolchain.data import load_data
    from toolchain.models.train import TrainConfig, seed_everything, train

    data = data if data is not None else load_data("digits", seed=0)
    seed_everything(seed)
    return train(model, data.x_train, data.y_train, TrainConfig(epochs=epochs, lr=lr, batch_size=32, seed=seed))


def one_line_error(code, err, *words):
    """Bad input, as cwtool's contract says: exit 2 and one line on stderr, naming each of ``words``."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert lines[-1].startswith("cwtool: error: ") and "Traceback" not in err, err
    for word in words:
        assert word in lines[-1], err
