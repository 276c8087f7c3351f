"""`cwtool train`: a dense starting point for compress, recording the rows it was trained on."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import typer

from toolchain.cli.options import (ArchKwargsOpt, ClassNamesOpt, DataOpt, ImageOptions, ImageSizeOpt, InputShapeOpt, LabelColumnOpt, TestOpt,
                                   TrainingInput, ValOpt, config_error, parse_kwargs, seed_option, with_config)
from toolchain.errors import UserError, describe, one_line


@with_config(ImageOptions, TrainingInput)
def train(
    arch: str = typer.Option(..., help="Architecture: a built-in name, module:Class or path/to/file.py:Class."),
    data: str = DataOpt,
    out: Path = typer.Option(..., help="Where to write the trained model (a cwtool checkpoint)."),
    arch_kwargs: Optional[str] = ArchKwargsOpt,
    epochs: int = typer.Option(10, help="Training epochs."),
    lr: float = typer.Option(1e-3, help="Peak learning rate (Adam, one-cycle)."),
    batch_size: int = typer.Option(128, help="Batch size."),
    seed: int = seed_option("Seed of training and of the data split."),
    device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda[:N]."),
    train_precision: str = typer.Option("auto", help="Training arithmetic: auto (bf16 autocast where the CPU runs bf16 in "
                                        "hardware; on a GPU, the faster of the two, timed), fp32 or bf16."),
    label_column: Optional[str] = LabelColumnOpt,
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    input_shape: Optional[str] = InputShapeOpt,
    val: Optional[Path] = ValOpt,
    test: Optional[Path] = TestOpt,
    image_options: ImageOptions = None,
    training_input: TrainingInput = None,
):
    """Train a dense model (Adam, one-cycle) on the train split: a starting point for compress."""
    from toolchain.data.given import load_with_given_rows
    from toolchain.data.identity import training_record
    from toolchain.data.options import parse_augment, parse_image_size, parse_input_shape
    from toolchain.data.labels import declared_names
    from toolchain.evaluate import check_output_width, probe_outputs
    from toolchain.output_paths import check_output_file
    from toolchain.input_paths import input_paths
    from toolchain.rundir import RunDir
    from toolchain.metrics import evaluate_logits
    from toolchain.provenance import file_sha256
    from toolchain.models.loading import build_arch, is_cwtool_checkpoint, save_checkpoint
    from toolchain.config import TRAIN_PRECISIONS
    from toolchain.models.fast_paths import arithmetic_label, autocast_dtype, precision_choice, resolved_precision
    from toolchain.models.memory import check_training_fits
    from toolchain.models.train import TrainConfig, pick_device, predict_logits, seed_everything, train as run_train
    from toolchain.report.consoles import RunLog, log_console, progress_bar
    from toolchain.report.pace import EpochPace

    if epochs < 1:
        raise UserError("--epochs must be at least 1")
    if train_precision not in TRAIN_PRECISIONS:
        raise UserError(f"--train-precision '{train_precision}' is not one of {', '.join(TRAIN_PRECISIONS)}")
    try:
        config = TrainConfig(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed, augment=parse_augment(training_input.augment),
                             workers=training_input.workers, precision=train_precision)
    except ValueError as exc:
        raise config_error(exc, TrainConfig) from exc
    inputs = input_paths(data, val, test, arch=arch)
    check_output_file(out, "--out", inputs=inputs)
    log_path = out.with_name(out.name + ".log")
    check_output_file(log_path, "the training log (--out's name + .log)", inputs=inputs + ([out] if out.exists() else []))
    if out.is_file() and not is_cwtool_checkpoint(out):
        raise UserError(f"--out '{out}' exists and is not a cwtool checkpoint: refusing to overwrite it, give a new path")
    if log_path.is_symlink():  # a new log replaces a link's target: another run's log, or any file
        raise UserError(f"'{log_path}' (the training log) is a symbolic link: remove it or give another --out")
    if log_path.is_file() and log_path.stat().st_size and not _is_training_log(log_path):  # an empty file holds nothing to lose
        raise UserError(f"'{log_path}' (the training log) exists and is not a cwtool training log: refusing to overwrite it, "
                        "move it or give another --out")
    kwargs = parse_kwargs(arch_kwargs)
    torch_device = pick_device(device)
    dataset = load_with_given_rows(data, val and str(val), test and str(test), seed=seed, label_column=label_column,
                                   class_names=class_names, image_size=parse_image_size(image_size),
                                   input_shape=parse_input_shape(input_shape), **image_options.load_args())
    declared = declared_names(dataset.class_names)
    kwargs = _sized_to_data(arch, kwargs, dataset.input_shape, len(declared) if declared else dataset.num_classes)
    seed_everything(seed)
    model = build_arch(arch, kwargs)
    if kwargs.get("num_classes") == 1:  # a built-in asked for one output: probe_outputs' advice (wrap the model) does not fit
        raise UserError(f"--arch-kwargs num_classes 1 gives --arch '{arch}' one output; cwtool needs one logit per class: set "
                        f"num_classes to {len(declared) if declared else dataset.num_classes}")
    num_outputs = probe_outputs(model, dataset.input_shape)
    if declared is not None and num_outputs != len(declared) and "num_classes" not in kwargs:
        model, num_outputs, kwargs = _one_output_per_class(arch, kwargs, len(declared), dataset.input_shape, seed) or (model, num_outputs, kwargs)
    if dataset.num_classes > num_outputs or (declared is not None and num_outputs != len(declared)):
        classes = len(declared or []) or dataset.num_classes
        fix = (f"set num_classes to {classes} in --arch-kwargs" if "num_classes" in kwargs and dataset.num_classes <= num_outputs
               else "set num_classes in --arch-kwargs" if dataset.num_classes > num_outputs
               else "give an architecture with one output per class (or one that takes num_classes)")
        raise UserError(f"--arch '{arch}' has {num_outputs} outputs but the data has {classes} classes: {fix}")
    check_output_width(num_outputs, dataset.y_train, declared, f"--arch '{arch}'")
    console = log_console()
    earlier = file_sha256(out) if out.is_file() else None  # read before this log replaces the earlier training's
    earlier_log = _earlier_log(log_path) if earlier is not None else None
    held = _hold_log(log_path, out)  # the earlier training's log, then this one's: a second train to --out is refused
    try:
        log = _fresh_log(RunLog(console), log_path)
        held = _hold_log(log_path, out, held)
    except BaseException:
        RunDir.release(held)
        raise
    try:  # from here on, the log says how the run ended (a check that refuses too)
        log.print(f"training --arch {arch} on {data}, {len(dataset.y_train):,} train rows, {epochs} epoch{'s' if epochs != 1 else ''}; log: {log_path}")
        if earlier is not None:  # a training killed before its end leaves this log beside the earlier checkpoint: said here,
            # and on the console: the file may be the model a compress run was made from (its --resume then refuses it)
            log.print(f"{one_line(out)} is an earlier training's checkpoint (sha256 {earlier[:12]}) until this one writes it: "
                      "it is replaced at the end (give another --out to keep it)")
        log.print(f"data: {dataset.name}: {dataset.preprocessing.note}")
        filled = {k: v for k, v in kwargs.items() if k not in parse_kwargs(arch_kwargs)}
        if filled:
            log.print(f"--arch '{arch}' built for the data: {', '.join(f'{k} {v}' for k, v in filled.items())} (--arch-kwargs sets {'them' if len(filled) != 1 else 'it'})")
        check_training_fits(model, dataset.x_train, batch_size, torch_device, autocast_dtype(train_precision, torch_device) is not None)
        low_precision, why = precision_choice(model, dataset.x_train, train_precision, torch_device, batch_size)
        config = dataclasses.replace(config, precision=resolved_precision(low_precision))  # one arithmetic: timed once on a GPU
        log.print(f"training on {torch_device} in {arithmetic_label(low_precision)}" + (f" ({why})" if why else ""))

        pace = EpochPace(epochs)
        losses: list[float] = []

        def epoch_done(epoch: int, _model) -> None:  # the loss says whether it still learns (its absence hid a stalled run)
            loss = (f"mean training loss {losses[-1]:.4f}" if losses[-1] == losses[-1] else
                    "no training step ran (a model with BatchNorm skips batches of one row: give a larger --batch-size)")
            log.progress(f"{pace.line(epoch)}; {loss}")

        with progress_bar(console) as progress:
            run_train(model, dataset.x_train, dataset.y_train, config, device=torch_device, progress=progress, description=f"training {arch}",
                      on_epoch_end=epoch_done, epoch_losses=losses, say_pace=log.progress)
        model = model.cpu().eval()
        val_logits = predict_logits(model, dataset.x_val)
        score = evaluate_logits(dataset.y_val, val_logits, [0], num_outputs)
        train_accuracy, train_balanced = _train_accuracy(model, dataset)
        record = training_record(data, dataset)
        if (dataset.held_out_origin or {}).get("test") == "given":  # evaluate's default judges a --test folder whole, as for
            from toolchain.judged_rows import given_test_record  # a compress run's pruned.pt (the dense model's check judged
            from toolchain.provenance import rows_sha256  # a seeded 60 of 402 rows, the pruned one's all: not comparable)

            record["test_rows"] = given_test_record(dataset, rows_sha256(*dataset.split("test")))
        save_checkpoint(out, model, arch, kwargs, dataset.input_shape, extra={"data": record})
    except BaseException as exc:  # the log says how the run ended, and that --out is what it was
        log.record(f"stopped ({describe(exc)}); {one_line(out)} was not written")
        if earlier_log is not None:
            _restore_earlier_log(log_path, earlier_log)
        raise
    finally:
        RunDir.release(held)
    log.record(f"{one_line(out)} written (sha256 {file_sha256(out)[:12]})")
    log.print(f"{out}: validation accuracy {score['accuracy']:.4f} (on training rows {train_accuracy:.4f})")
    by_heart = train_balanced - balanced_accuracy(dataset.y_val, val_logits.argmax(1)) >= BY_HEART
    learned_nothing = _learned_nothing(val_logits, dataset, config, train_accuracy if by_heart else None)
    if learned_nothing:
        log.print(f"warning: {learned_nothing}")
    elif by_heart:
        log.print(f"warning: the model scores {train_accuracy:.4f} on its training rows and {score['accuracy']:.4f} on validation: it "
                  f"learnt its training rows more than the classes; {BY_HEART_ADVICE}")


BY_HEART = 0.25  # balanced accuracy this much higher on training rows than on validation: learnt by heart
BY_HEART_ADVICE = "more epochs will not help: try --augment, more training rows, a smaller model or fewer epochs"
TRAIN_ROWS_SCORED = 2_000  # an evenly spaced sample: a folder of 20,000 images is not read twice for one number


def balanced_accuracy(y, predicted) -> float:
    """The mean of the classes' recalls over the classes present: alike for a model that answers the commonest class
    whatever the classes' shares (plain accuracy compared a 90/10 training set with a balanced --val as learning)."""
    import numpy as np

    y, predicted = np.asarray(y), np.asarray(predicted)
    return float(np.mean([np.mean(predicted[y == k] == k) for k in np.unique(y)])) if len(y) else 0.0


def _train_accuracy(model, dataset) -> tuple[float, float]:
    """The trained model's accuracy and balanced accuracy on up to TRAIN_ROWS_SCORED of its training rows (an evenly
    spaced sample)."""
    import numpy as np

    from toolchain.data.samples import subset
    from toolchain.models.train import predict_logits

    n = len(dataset.y_train)
    index = np.unique(np.linspace(0, n - 1, min(n, TRAIN_ROWS_SCORED)).astype(np.int64))
    logits = predict_logits(model, subset(dataset.x_train, index))
    y = np.asarray(dataset.y_train)[index]
    return float(np.mean(logits.argmax(1) == y)), balanced_accuracy(y, logits.argmax(1))


def _learned_nothing(val_logits, dataset, config, train_accuracy: float | None = None) -> str | None:
    """Where the trained model answers one class for every validation row, or scores within 5 points of always answering
    the commonest class, what to try (``train_accuracy``: given where it learnt its training rows by heart): a run of 3 steps an epoch ended "validation accuracy 0.3333" and nothing else (a new
    user's finding)."""
    import math

    import numpy as np

    y = np.asarray(dataset.y_val)
    if len(y) < 10:
        return None
    answers = np.unique(val_logits.argmax(1))
    if len(np.unique(y)) < 2:  # one class in validation: no balanced accuracy tells learning from guessing
        return None
    chance = 1 / len(np.unique(y))  # the balanced accuracy of always answering one class, whatever the classes' shares
    balanced = balanced_accuracy(y, val_logits.argmax(1))
    # 5 points over that, balanced: plain accuracy against the commonest class's share asked 97% of a model of a class of
    # 8% (a sepsis model of AUC 0.98 was told it learned nothing)
    if len(answers) > 1 and balanced >= chance + 0.05:
        return None
    steps = math.ceil(len(dataset.y_train) / config.batch_size)
    said = (f"it answers class {dataset.class_names[int(answers[0])] if dataset.class_names else int(answers[0])} for every "
            "validation row" if len(answers) == 1 else f"its balanced accuracy (the mean of the classes' recalls) {balanced:.4f} is "
            + ("within 5 points of" if balanced >= chance - 0.05 else "below") + f" always answering one class ({chance:.4f})")
    if train_accuracy is not None:  # learnt by heart (BY_HEART): more epochs was the wrong advice there
        return (f"the model learned nothing useful for new rows: {said}, where it scores {train_accuracy:.4f} on its training rows: it "
                f"learnt those by heart; {BY_HEART_ADVICE}")
    return (f"the model learned nothing useful: {said}. {_count(config.epochs, 'epoch')} of {_count(steps, 'step')} ({len(dataset.y_train):,} rows, "
            f"--batch-size {config.batch_size}) may be too few: try more --epochs, a smaller --batch-size or another --lr "
            f"(now {config.lr:g}); or check the data's preprocessing")


def _is_training_log(path) -> bool:
    """Whether ``path`` starts as the logs train writes do (a time stamp, then "training --arch"): only such a file is
    replaced by the next training to the same --out."""
    import re

    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline(400)
    except (OSError, UnicodeDecodeError):
        return False
    return re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+ *\d+\.\ds training --arch ", first) is not None


def _earlier_log(path: Path) -> str | None:
    """The log of the training whose checkpoint --out holds, where it is one (up to 16 MB): kept if this one stops."""
    from toolchain.errors import UserError
    from toolchain.small_files import read_small_file

    try:
        return read_small_file(path, 16 << 20, "log", "").decode("utf-8", "replace") if _is_training_log(path) else None
    except (OSError, UserError):
        return None


def _restore_earlier_log(path: Path, earlier: str) -> None:
    """A stopped training leaves the checkpoint it did not replace with its own log first (an interrupted run's log had
    taken its place: a new user's finding), then this run's lines, which say it stopped. Best effort."""
    from toolchain import interrupts
    from toolchain.io import atomic_write_text

    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            this_run = f.read(16 << 20)
        with interrupts.writing_after_stop():
            atomic_write_text(path, earlier.rstrip("\n") + "\n" + this_run)
    except Exception:
        pass


def _hold_log(path: Path, out: Path, before: int | None = None) -> int | None:
    """A lock on the training log at ``path`` (then ``before``, the lock on the log it replaced, is let go): two
    trainings to one --out had both said they wrote it, their epochs interleaved in one log. None where there is no
    log yet, or no flock (not POSIX)."""
    from toolchain.rundir import RunDir

    try:
        import fcntl
    except ImportError:
        return None
    for _ in range(5):  # the log may be replaced between its open and its lock: the lock must be on what the path names
        try:
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        except OSError:
            return before
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            RunDir.release(before)
            raise UserError(f"--out '{out}' is being trained by another cwtool process now (it holds {path.name}): wait for it "
                            "to end, or give another --out") from None
        held, named = os.fstat(fd), os.stat(path, follow_symlinks=False)
        if (held.st_dev, held.st_ino) == (named.st_dev, named.st_ino):
            RunDir.release(before)
            return fd
        os.close(fd)  # another training replaced it meanwhile: its new log is the one to try
    RunDir.release(before)
    raise UserError(f"--out '{out}': its log {path.name} is being replaced over and over by other processes: give another --out")


def _fresh_log(log, path: Path):
    """``log`` writing to a new file at ``path``: the log of the latest training to --out, ending with how it ended.
    A new file, not the old one emptied: a hard link's other name keeps its contents."""
    from toolchain.io import atomic_write_text

    atomic_write_text(path, "")
    log.attach(path)
    return log


def _sized_to_data(arch: str, kwargs: dict, input_shape: tuple, classes: int) -> dict:
    """A built-in architecture's input width and output count taken from the data where --arch-kwargs leaves them
    (its defaults are the demo's: an MLP of 30 features and 2 classes met rows of 20 features and 10 classes, and
    training stopped at the first batch). A model of the user's own is built as they wrote it."""
    import math

    from toolchain.models.arch import built_in_parameters

    accepted = built_in_parameters(arch)
    if accepted is None:
        return kwargs
    sized = dict(kwargs)
    wanted = {"in_features": math.prod(input_shape),  # the built-in that takes features flattens what it is given
              "in_channels": input_shape[0] if len(input_shape) == 3 else None, "num_classes": classes}
    for name, value in wanted.items():
        if name in accepted and name not in sized and value is not None and value != accepted[name].default:
            sized[name] = int(value)
    return sized


def _one_output_per_class(arch: str, kwargs: dict, classes: int, input_shape, seed: int):
    """(model, outputs, kwargs) of ``arch`` built with num_classes set to the data's named classes, or None where the
    architecture takes no such argument: a model trained on 4 named classes with 10 outputs is one that evaluate,
    export and verify then refuse."""
    from toolchain.evaluate import probe_outputs
    from toolchain.models.loading import build_arch
    from toolchain.models.train import seed_everything

    with_classes = {**kwargs, "num_classes": classes}
    try:
        seed_everything(seed)
        model = build_arch(arch, with_classes)
        outputs = probe_outputs(model, input_shape)
    except (TypeError, UserError):
        return None
    return (model, outputs, with_classes) if outputs == classes else None


def _count(n: int, noun: str) -> str:
    return f"{n:,} {noun}{'' if n == 1 else 's'}"
