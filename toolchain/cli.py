"""The `cwtool` command line: each command is a thin call into the library.

Exit codes: 0 done / gate passed; 1 gate failed; 2 bad input or usage (one line, no traceback
unless --debug); 3 an internal error (a bug: please report it with the --debug traceback).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.errors import UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compress a classifier for the edge without losing the cases that matter.",
)
_state = {"debug": False}

ProtectOpt = typer.Option(..., "--protect-class", "-p", help="Class index or name whose false negatives matter (repeatable).")
DataOpt = typer.Option(..., "--data", "-d", help="digits, breast-cancer, fashion-mnist, a .npz, a .csv, an idx folder or an ImageFolder folder.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")):
    _state["debug"] = debug


def _parse_kwargs(text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--arch-kwargs is not valid JSON ({exc.msg}): give e.g. '{{\"width\": 16}}'") from exc
    if not isinstance(value, dict):
        raise UserError("--arch-kwargs must be a JSON object, e.g. '{\"width\": 16}'")
    return value


@app.command()
def evaluate(
    model: Path = typer.Argument(..., help="Model file: state_dict (+ --arch), cwtool checkpoint, pickled module or TorchScript."),
    data: str = DataOpt,
    protect_class: List[str] = ProtectOpt,
    arch: Optional[str] = typer.Option(None, help="Architecture: a built-in name, module:Class or path/to/file.py:Class."),
    arch_kwargs: Optional[str] = typer.Option(None, help="JSON keyword arguments for --arch."),
    trust_model: bool = typer.Option(False, help="Allow a full pickle (runs code from the file). Only for files you trust."),
    split: str = typer.Option("test", help="train, val, test or all."),
    label_column: Optional[str] = typer.Option(None, help="CSV label column (default: the last)."),
    seed: int = typer.Option(0, help="Seed of the train/val/test split when the data has none."),
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the evaluation as JSON here."),
):
    """Per-class false negatives of a PyTorch model on one split of the data."""
    from toolchain.data import load_data
    from toolchain.evaluate import evaluate_torch
    from toolchain.io import atomic_write_json
    from toolchain.models.loading import load_model
    from toolchain.report.console import print_evaluation

    if split not in ("train", "val", "test", "all"):
        raise UserError(f"--split '{split}' is not one of train, val, test, all")
    dataset = load_data(data, seed=seed, label_column=label_column)
    loaded = load_model(model, arch=arch, arch_kwargs=_parse_kwargs(arch_kwargs), trust_model=trust_model)
    result = evaluate_torch(loaded.module, dataset, protect_class, split=split)
    print_evaluation(result.metrics, result.class_names, title=f"{model.name} on {dataset.name} [{split}]")
    if json_out is not None:
        atomic_write_json(json_out, result.metrics)


@app.command()
def demo(
    protect_class: List[str] = typer.Option(["3"], "--protect-class", "-p", help="Protected class of the digits demo."),
    retrain: bool = typer.Option(False, help="Ignore the cached demo model and train it again."),
):
    """Train (or reuse) the demo CNN on the bundled digits data and evaluate it."""
    from toolchain.demo import run_demo

    run_demo(protect_class, retrain=retrain)


def main(argv: Optional[list[str]] = None) -> None:
    import click

    try:
        code = app(args=argv, prog_name="cwtool", standalone_mode=False)
    except UserError as exc:
        if _state["debug"]:
            raise
        print(f"cwtool: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except click.exceptions.Abort:
        print("cwtool: aborted", file=sys.stderr)
        sys.exit(130)
    except click.exceptions.ClickException as exc:
        exc.show()
        sys.exit(2)
    except Exception as exc:  # a bug, not bad input
        if _state["debug"]:
            raise
        print(f"cwtool: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (rerun with --debug for the traceback)", file=sys.stderr)
        sys.exit(3)
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
