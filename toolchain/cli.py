"""The `cwtool` command line: each command is a thin call into the library.

Exit codes: 0 done / gate passed; 1 gate failed; 2 bad input or usage (one line, no traceback
unless --debug); 3 an internal error (a bug: please report it with the --debug traceback).
"""

from __future__ import annotations

import json
import math
import re
import sys
import traceback
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.errors import Interrupted, UserError

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compress a classifier for the edge without losing the cases that matter.",
)
_state = {"debug": False}

ProtectOpt = typer.Option(..., "--protect-class", "-p", help="Class index or name whose false negatives matter (repeatable).")
DataOpt = typer.Option(..., "--data", "-d", help="digits, breast-cancer, fashion-mnist, a .npz, a .csv, an idx folder or an ImageFolder folder.")
ClassNamesOpt = typer.Option(None, "--class-names", help="Comma-separated class names in label order (CSV string labels: sets their numbering).")
ImageSizeOpt = typer.Option(None, "--image-size", help="ImageFolder: resize every image to HEIGHTxWIDTH (or one side); without it all images must share one size.")
ValOpt = typer.Option(None, "--val", help="Validation rows (.npz with x, y) the model has not seen, in place of cwtool's split of --data.")
TestOpt = typer.Option(None, "--test", help="Test rows (.npz with x, y) the model has not seen, in place of cwtool's split of --data.")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors.")):
    _state["debug"] = debug


# Config dataclasses name their fields in errors; the user typed flags.
_FLAG_FIELDS = ("keep_params", "keep_macs", "rate", "granularity", "rewind", "final_epochs", "epochs", "lr", "batch_size", "gamma", "rank_weight", "distill_weight", "distill_uniform", "gamma_rule",
                "taylor_weight", "increase_weight", "round_to", "max_fn_increase", "max_accuracy_drop", "confidence", "device")


def _config_error(exc: ValueError) -> UserError:
    pattern = r"\b(" + "|".join(_FLAG_FIELDS) + r")\b"
    parts = re.split(r"('[^']*')", str(exc))  # quoted parts are the user's own values: left alone
    return UserError("".join(p if i % 2 else re.sub(pattern, lambda m: "--" + m.group(1).replace("_", "-"), p) for i, p in enumerate(parts)))


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
    split: str = typer.Option("auto", help="auto, train, val, test or all (auto: every row of an x/y .npz, else test; the rows verify judges)."),
    label_column: Optional[str] = typer.Option(None, help="CSV label column (default: the last)."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of the train/val/test split when the data has none."),
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the evaluation as JSON here."),
):
    """Per-class false negatives of a PyTorch model on one split of the data."""
    from toolchain.data.identity import seen_rows
    from toolchain.data.options import parse_image_size
    from toolchain.evaluate import evaluate_rows
    from toolchain.io import atomic_write_json, check_output_file, input_paths
    from toolchain.models.loading import load_model
    from toolchain.report.console import print_evaluation
    from toolchain.report.consoles import log_console
    from toolchain.verify import SPLITS, describe_rows, load_rows_for

    check_output_file(json_out, "--json", inputs=input_paths(model, data, arch=arch))
    if split not in SPLITS:
        raise UserError(f"--split '{split}' is not one of {', '.join(SPLITS)}")
    rows = load_rows_for(data, split, seed, label_column, class_names=class_names, image_size=parse_image_size(image_size))
    loaded = load_model(model, arch=arch, arch_kwargs=_parse_kwargs(arch_kwargs), trust_model=trust_model, input_shape=tuple(rows["x"].shape[1:]))
    result = evaluate_rows(loaded.module, rows["x"], rows["y"], rows["class_names"], protect_class)
    log_console().print(f"rows: {describe_rows(rows, result.metrics['rows_sha256'])}; {rows['note']}")
    seen = seen_rows(loaded.extra.get("data"), rows["x"], rows["y"])
    if seen:
        log_console().print(f"warning: '{model}' was trained on {seen:,} of these {len(rows['y']):,} rows: its numbers here overstate "
                            "what it does on new data (evaluate the split it has not seen: --split, --seed, or other --data)")
    print_evaluation(result.metrics, result.class_names, title=f"{model.name} on {rows['name']} [{rows['split']}]")
    if json_out is not None:
        atomic_write_json(json_out, {**result.metrics, "rows": {"split": rows["split"], "seed": rows["seed"], "name": rows["name"]}})


@app.command()
def train(
    arch: str = typer.Option(..., help="Architecture: a built-in name, module:Class or path/to/file.py:Class."),
    data: str = DataOpt,
    out: Path = typer.Option(..., help="Where to write the trained model (a cwtool checkpoint)."),
    arch_kwargs: Optional[str] = typer.Option(None, help="JSON keyword arguments for --arch."),
    epochs: int = typer.Option(10),
    lr: float = typer.Option(1e-3),
    batch_size: int = typer.Option(128),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of training and of the data split."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    label_column: Optional[str] = typer.Option(None, help="CSV label column (default: the last)."),
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    val: Optional[Path] = ValOpt,
    test: Optional[Path] = TestOpt,
):
    """Train a dense model (Adam, one-cycle) on the train split: a starting point for compress."""
    from toolchain.data import load_data
    from toolchain.data.given import with_given_rows
    from toolchain.data.identity import training_record
    from toolchain.data.options import parse_image_size
    from toolchain.evaluate import probe_outputs
    from toolchain.io import check_output_file, input_paths
    from toolchain.metrics import evaluate_logits
    from toolchain.models.loading import build_arch, is_cwtool_checkpoint, save_checkpoint
    from toolchain.models.train import TrainConfig, pick_device, predict_logits, seed_everything, train as run_train
    from toolchain.report.consoles import log_console, progress_bar

    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    try:
        config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    except ValueError as exc:
        raise _config_error(exc) from exc
    check_output_file(out, "--out", inputs=input_paths(data, val, test, arch=arch))
    if out.is_file() and not is_cwtool_checkpoint(out):
        raise UserError(f"--out '{out}' exists and is not a cwtool checkpoint: refusing to overwrite it, give a new path")
    kwargs = _parse_kwargs(arch_kwargs)
    torch_device = pick_device(device)
    dataset = with_given_rows(load_data(data, seed=seed, label_column=label_column, class_names=class_names,
                                        image_size=parse_image_size(image_size)), val and str(val), test and str(test))
    seed_everything(seed)
    model = build_arch(arch, kwargs)
    num_outputs = probe_outputs(model, dataset.input_shape)
    if dataset.num_classes > num_outputs:
        raise UserError(f"--arch '{arch}' has {num_outputs} outputs but the data has {dataset.num_classes} classes: set num_classes in --arch-kwargs")
    console = log_console()
    console.print(f"data: {dataset.name}: {dataset.preprocessing.note}")
    with progress_bar(console) as progress:
        run_train(model, dataset.x_train, dataset.y_train, config, device=torch_device, progress=progress, description=f"training {arch}")
    model = model.cpu().eval()
    val = evaluate_logits(dataset.y_val, predict_logits(model, dataset.x_val), [0], num_outputs)
    save_checkpoint(out, model, arch, kwargs, dataset.input_shape, extra={"data": training_record(data, dataset)})
    console.print(f"{out}: validation accuracy {val['accuracy']:.4f}")


@app.command()
def compress(
    model: Path = typer.Argument(..., help="The trained dense model (state_dict + --arch, pickled module + --arch, or cwtool checkpoint)."),
    data: str = DataOpt,
    protect_class: List[str] = ProtectOpt,
    arch: Optional[str] = typer.Option(None, help="Architecture: a built-in name, module:Class or path/to/file.py:Class."),
    arch_kwargs: Optional[str] = typer.Option(None, help="JSON keyword arguments for --arch."),
    trust_model: bool = typer.Option(False, help="Allow a full pickle (runs code from the file)."),
    out: Optional[Path] = typer.Option(None, help="Run directory (default: cwtool-runs/<arch>-<hash of inputs and settings>)."),
    resume: bool = typer.Option(False, help="Finish a run that was interrupted, from its last saved round."),
    keep_params: float = typer.Option(0.1, help="Size goal: fraction of the dense parameters to keep."),
    keep_macs: float = typer.Option(1.0, help="Latency goal: fraction of the dense multiply-accumulates to keep as well (small CPUs pay per MAC and per operator, not per parameter; 1: no MAC goal)."),
    rate: float = typer.Option(0.5, help="Fraction of the remaining parameters removed per round."),
    granularity: str = typer.Option("channel", help="channel (physically removed) or weight (unstructured masks)."),
    rewind: str = typer.Option("none", help="none (fine-tune survivors), early (late rewinding) or init."),
    epochs: int = typer.Option(8, help="Retraining epochs per round."),
    final_epochs: int = typer.Option(0, help="More epochs for the selected ticket alone after the rounds (same loss, half the peak lr), before its operating point is set."),
    lr: float = typer.Option(2e-3, help="Peak learning rate of the retraining (Adam, one-cycle)."),
    batch_size: int = typer.Option(128),
    class_aware: bool = typer.Option(True, "--class-aware/--no-class-aware", help="Class-dependent loss and importance, or the plain baseline (the same distillation, uniform over samples)."),
    gamma: float = typer.Option(5.0, help="CE weight of the protected classes from round 2 on."),
    rank_weight: float = typer.Option(1.0, help="Weight of the squared-hinge rank (AUC) loss."),
    distill_weight: float = typer.Option(1.0, help="Weight of distillation from the dense model."),
    distill_uniform: bool = typer.Option(False, help="Distillation weighs every sample alike (default: protected classes' samples by their CE weight)."),
    gamma_rule: str = typer.Option("fixed", help="fixed: --gamma from round 2 on; lagrange: each protected class's CE weight is a multiplier that rises while its validation FN is over budget."),
    taylor_weight: float = typer.Option(0.0, help="Weight of the protected-class Taylor term in channel importance (0: magnitude only)."),
    increase_weight: float = typer.Option(0.0, help="Weight of the paper's magnitude increase |W_T| - |W_0| over the last retraining in the importance (from round 2; 0: off)."),
    round_to: Optional[int] = typer.Option(None, help="Round each layer's surviving channels to a multiple of this (CPU kernels work in blocks of 8). Default: the --target's channel_multiple, else 1 (off)."),
    max_fn_increase: int = typer.Option(0, help="FN budget per protected class over the dense model's, on new data."),
    confidence: float = typer.Option(0.95, help="Probability that the FN promise (FN <= dense FN + budget on new data of the validation split's size) holds: sets the guarded operating point."),
    max_accuracy_drop: float = typer.Option(0.02, help="Accuracy budget (fraction, 0.02 = 2 points)."),
    seed: int = typer.Option(0, min=0, max=2**31 - 1, help="Seed of training, pruning and the data split."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
    label_column: Optional[str] = typer.Option(None, help="CSV label column (default: the last)."),
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    val: Optional[Path] = ValOpt,
    test: Optional[Path] = TestOpt,
    target: Optional[str] = typer.Option(None, help="Device profile (cwtool targets): sets format, precision and layout, and checks fit."),
    layout: Optional[str] = typer.Option(None, help="TFLite input layout, NCHW (default) or NHWC (a --target sets it)."),
    calibration_size: int = typer.Option(256, help="Calibration rows drawn from the train split (protected classes enriched)."),
    calibration_method: str = typer.Option("minmax", help="minmax, entropy or percentile (ONNX int8)."),
    calibration: Optional[Path] = typer.Option(None, help="A saved calibration .npz, for identical re-quantization."),
    float_input_conv: Optional[bool] = typer.Option(None, "--float-input-conv/--int8-input-conv", help="int8 ONNX and TFLite: keep a 1-4 channel input conv in float (onnxruntime and XNNPACK run it faster so). Default: on, off for a --target with full-integer int8 I/O."),
    skip_export: bool = typer.Option(False, help="Stop after pruning (no quantization or export)."),
):
    """Prune (class-aware lottery tickets), shrink, quantize, export, and gate the protected classes' FN on every file."""
    from toolchain.config import PruneConfig
    from toolchain.data.options import parse_image_size
    from toolchain.io import check_output_dir, input_paths
    from toolchain.pipeline import CompressRequest, compress as run_compress, finish
    from toolchain.targets import load_target

    profile = load_target(target) if target else None
    check_output_dir(out, "--out", inputs=input_paths(model, data, calibration, val, test, profile and profile.path, arch=arch))
    if round_to is None:
        round_to = profile.channel_multiple if profile else 1
    try:
        config = PruneConfig(keep_params=keep_params, keep_macs=keep_macs, rate=rate, granularity=granularity, rewind=rewind, epochs=epochs, final_epochs=final_epochs,
                             lr=lr, batch_size=batch_size, class_aware=class_aware, gamma=gamma, rank_weight=rank_weight,
                             distill_weight=distill_weight, distill_uniform=distill_uniform, gamma_rule=gamma_rule, taylor_weight=taylor_weight, increase_weight=increase_weight, round_to=round_to, max_fn_increase=max_fn_increase, max_accuracy_drop=max_accuracy_drop,
                             confidence=confidence, seed=seed, device=device)
    except ValueError as exc:
        raise _config_error(exc) from exc
    request = CompressRequest(str(model), data, list(protect_class), arch, _parse_kwargs(arch_kwargs), trust_model,
                              str(out) if out else None, resume, label_column, seed, class_names, parse_image_size(image_size),
                              val and str(val), test and str(test))
    export = _export_settings(target, layout, calibration_size, calibration_method, calibration, skip_export, float_input_conv)
    report, run_dir = run_compress(request, config, export=export)
    if target:
        _fit(report, run_dir, target)
    finish(report, run_dir)
    _print_summary(report, run_dir)
    return 0 if report["gate"]["passed"] else 1


def _export_settings(target, layout, calibration_size, calibration_method, calibration, skip_export, float_input_conv=None):
    from toolchain.export.stage import DEFAULT_ARTIFACTS, ExportSettings

    if layout not in (None, "NCHW", "NHWC"):
        raise UserError(f"--layout '{layout}' is not NCHW or NHWC")
    if calibration_method not in ("minmax", "entropy", "percentile"):
        raise UserError(f"--calibration-method '{calibration_method}' is not minmax, entropy or percentile")
    if calibration is not None and calibration.is_dir():
        raise UserError(f"--calibration '{calibration}' is a folder: give the calibration .npz file")
    if calibration is not None and not calibration.is_file():
        raise UserError(f"--calibration file '{calibration}' does not exist")
    if calibration_size < 1:
        raise UserError("--calibration-size must be at least 1")
    artifacts, threads = DEFAULT_ARTIFACTS, 1
    if target:
        from toolchain.targets import target_export_plan

        plan = target_export_plan(target)
        if layout is not None and layout != plan["layout"]:
            raise UserError(f"--layout {layout} contradicts --target {target}, which runs {plan['layout']}: drop --layout")
        artifacts = tuple((fmt, p) for fmt in plan["formats"] for p in dict.fromkeys(["fp32", plan["precision"]]))
        layout, threads = plan["layout"], plan["threads"]
        if float_input_conv is None:  # a full-integer target promises int8 input tensors: no float stem in front
            float_input_conv = plan["int8_scheme"] != "full-integer"
    return ExportSettings(artifacts=() if skip_export else artifacts, layout=layout or "NCHW", calibration_size=calibration_size,
                          calibration_method=calibration_method, calibration_file=str(calibration) if calibration else None,
                          threads=1 if not target else threads, float_input_conv=float_input_conv is not False)


def _fit(report: dict, run_dir: Path, target: str) -> None:
    from toolchain.targets import fit_check

    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    for art in report["artifacts"]:
        art["fit"] = fit_check(target, run_dir / art["path"], macs=shrunk["macs"])
    report["target"] = {"name": target, "fits": bool(report["artifacts"]) and all(a["fit"]["fits"] for a in report["artifacts"])}


def _print_summary(report: dict, run_dir: Path) -> None:
    from rich.console import Console
    from rich.markdown import Markdown

    from toolchain.report.consoles import log_console, quiet_broken_stream
    from toolchain.report.markdown import render_report

    console, text = Console(), render_report(report)
    if console.is_terminal:
        console.print(Markdown(text))
    else:  # a log or a pipe gets the Markdown itself: rich would wrap its tables at 80 columns
        try:
            sys.stdout.write(text if text.endswith("\n") else text + "\n")
            sys.stdout.flush()
        except BrokenPipeError:  # `| head`: the reader has what it wanted
            quiet_broken_stream(sys.stdout)
    log_console().print(f"run directory: {run_dir} (report.json, report.md)")


@app.command()
def demo(
    protect_class: List[str] = typer.Option(["3"], "--protect-class", "-p", help="Protected class of the digits demo."),
    retrain: bool = typer.Option(False, help="Ignore the cached demo model and train it again."),
):
    """The whole compression on the bundled digits data: train (or reuse) the demo CNN, prune, export, verify."""
    from toolchain.demo import run_demo

    report, run_dir = run_demo(protect_class, retrain=retrain)
    _print_summary(report, run_dir)
    return 0 if report["gate"]["passed"] else 1


def _register_commands() -> None:
    from toolchain.cli_targets import register as register_targets
    from toolchain.cli_verify import register as register_verify

    register_verify(app)
    register_targets(app)


_register_commands()


def _usage_error_line(exc) -> str:
    ctx = getattr(exc, "ctx", None)
    message = " ".join(exc.format_message().split())
    if ctx is None:
        return f"cwtool: error: {message}"
    return f"{ctx.command_path}: error: {message} (see '{ctx.command_path} --help')"


def _finite_floats(group) -> None:
    """Every float option of every command refuses NaN and inf (the parser takes both, and a `--lr nan`
    would train nothing and pass every `<` check): checked on the parsed values, before the command runs."""
    import functools

    for command in getattr(group, "commands", {}).values():
        run = command.callback
        if run is None or getattr(run, "_finite_floats", False):
            continue

        @functools.wraps(run)
        def checked(*args, __run=run, **kwargs):
            for name, value in kwargs.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise UserError(f"--{name.replace('_', '-')} {value} is not a finite number")
            return __run(*args, **kwargs)

        checked._finite_floats = True
        command.callback = checked


def _raise_interrupted(signum, frame) -> None:
    import signal

    raise Interrupted(signal.Signals(signum).name)


def _catch_signals(handler=None) -> dict:
    """SIGINT and SIGTERM unwind the stack (every staged file is removed on the way) instead of
    killing the process where it stands. Returns the handlers it replaced."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler or _raise_interrupted) for sig in (signal.SIGINT, signal.SIGTERM)}


def _interrupted_line(signal_name: str, run_dir) -> str:
    line = f"cwtool: interrupted by {signal_name}; temporary files removed"
    if run_dir is not None:
        line += f"; the finished rounds are kept in '{run_dir}': rerun the same command with --resume to finish the run"
    return line


def main(argv: Optional[list[str]] = None) -> None:
    import signal

    from toolchain.interrupts import Watcher

    watcher = Watcher(lambda name: _interrupted_line(name, None))
    previous = _catch_signals(lambda signum, frame: watcher.deliver(signum))
    try:
        with watcher:
            _main(argv)
    except Interrupted as exc:  # arrived as the command was finishing: its files are whole, but the caller asked to stop
        print(_interrupted_line(exc.signal_name, exc.run_dir), file=sys.stderr)
        sys.exit(130 if exc.signal_name == "SIGINT" else 143)
    finally:  # in-process callers (tests, notebooks) get their own handlers back
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _main(argv: Optional[list[str]]) -> None:
    import warnings

    if "--debug" not in (sys.argv[1:] if argv is None else argv):
        warnings.simplefilter("ignore")  # library warnings would break "one line on bad input"; --debug shows them
    try:
        _run(argv)
    finally:
        warnings.resetwarnings()


def _run(argv: Optional[list[str]]) -> None:
    try:  # typer >= 0.29 vendors click as typer._click; older typers depend on click itself
        from typer._click.exceptions import ClickException
        from typer.exceptions import Abort
    except ImportError:
        from click.exceptions import Abort, ClickException

    try:
        command = typer.main.get_command(app)
        _finite_floats(command)
        code = command(args=argv, prog_name="cwtool", standalone_mode=False)
    except UserError as exc:
        if _state["debug"]:
            traceback.print_exc()
        print(f"cwtool: error: {exc}", file=sys.stderr)
        sys.exit(2)
    except Interrupted as exc:
        print(_interrupted_line(exc.signal_name, exc.run_dir), file=sys.stderr)
        sys.exit(130 if exc.signal_name == "SIGINT" else 143)
    except Abort as exc:  # a KeyboardInterrupt that reached the parser before our handler was in place
        cause = exc.__cause__ or exc.__context__
        print(_interrupted_line("SIGINT", getattr(cause, "run_dir", None)), file=sys.stderr)
        sys.exit(130)
    except ClickException as exc:  # usage errors: one line, like every other bad input
        print(_usage_error_line(exc), file=sys.stderr)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        hint = _install_hint(exc.name or "")
        if hint is None:
            raise_as_bug(exc)
        if _state["debug"]:
            traceback.print_exc()
        print(f"cwtool: error: {hint}", file=sys.stderr)
        sys.exit(2)
    except Exception as exc:  # a bug, not bad input
        raise_as_bug(exc)
    sys.exit(code if isinstance(code, int) else 0)


def raise_as_bug(exc: BaseException) -> None:
    """Exit 3 with one line; the traceback too under --debug (the exit code stays what it means)."""
    if _state["debug"]:
        traceback.print_exception(exc)
    print(f"cwtool: internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]} (rerun with --debug for the traceback)", file=sys.stderr)
    sys.exit(3)


# Packages of the full install that a light one (numpy, typer and one runtime: `cwtool verify` on a
# device) lacks: a command that needs one says what to install instead of failing as a bug.
_PACKAGES = {"torch": "torch==2.13.0", "sklearn": "scikit-learn", "PIL": "pillow", "onnx": "onnx", "onnxscript": "onnxscript",
             "onnxruntime": "onnxruntime", "torch_pruning": "torch-pruning", "litert_torch": "litert-torch",
             "matplotlib": "matplotlib", "ai_edge_litert": "ai-edge-litert"}


def _install_hint(module: str) -> str | None:
    package = _PACKAGES.get(module.split(".")[0])
    if package is None:
        return None
    full = "pip install torch==2.13.0, then pip install 'cwtool[compress]'" if package != "onnxruntime" else "pip install 'cwtool[onnx]'"
    return f"this command needs {package}, which is not installed here: {full} (or pip install {package})"


if __name__ == "__main__":
    main()
