"""The options commands share, and options made from the config dataclasses' fields (OpenLTH's
hparams become flags the same way): a field with ``flag`` metadata (toolchain.config.flag) is one
option, with its default, help and --help group; the command receives the filled dataclass."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import json
import re
import typing
from dataclasses import dataclass, field
from typing import Optional

import typer

from toolchain.config import flag
from toolchain.errors import UserError

INPUTS = "Inputs"

ProtectOpt = typer.Option(..., "--protect-class", "-p", metavar="CLASS", help="Class name or index whose false negatives matter (repeatable); a number is a name only where the data names a class so.",
                          rich_help_panel=INPUTS)


def stripped_data(value):
    """--data without the spaces around it, for every use of it alike (the loader, the row files of verify, the
    check of outputs against inputs): 'rows.npz ' read as rows.npz by one and as no file by another judged other rows.
    An empty one names nothing (the loader would read the working folder, unchecked against the outputs)."""
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise typer.BadParameter("is empty: give a data set name, a file or a folder ('.' for this folder)")
    return value


DataOpt = typer.Option(..., "--data", "-d", help="digits, breast-cancer, fashion-mnist, a .npz, a .csv, an idx folder or an "
                       "ImageFolder folder.", rich_help_panel=INPUTS, callback=stripped_data)
ArchOpt = typer.Option(None, help="Architecture: a built-in name, module:Class or path/to/file.py:Class.", rich_help_panel=INPUTS)
ArchKwargsOpt = typer.Option(None, help="JSON keyword arguments for --arch.", rich_help_panel=INPUTS)
TrustOpt = typer.Option(False, "--trust-model", help="Allow a full pickle or a TorchScript archive (runs code from the file). Only for files you trust.",
                        rich_help_panel=INPUTS)
LabelColumnOpt = typer.Option(None, help="CSV label column (default: the last).", rich_help_panel=INPUTS)
ClassNamesOpt = typer.Option(None, "--class-names", help="Comma-separated class names in label order (CSV string labels: sets "
                             "their numbering); a JSON list for names that hold a comma.", rich_help_panel=INPUTS)
ImageSizeOpt = typer.Option(None, "--image-size", help="ImageFolder: resize every image to HEIGHTxWIDTH (or one side); without it "
                            "all images must share one size.", rich_help_panel=INPUTS)
InputShapeOpt = typer.Option(None, "--input-shape", help="The shape of one sample for the model, e.g. 1,28,28: flat rows (a CSV, "
                             "an .npz of vectors) fed to an image model.", rich_help_panel=INPUTS)
ValOpt = typer.Option(None, "--val", help="Validation rows the model has not seen (.npz with x, y; an ImageFolder like --data's; a .csv of "
                      "a CSV --data's columns; prepared as --data), in place of cwtool's split of --data.",
                      rich_help_panel=INPUTS)
TestOpt = typer.Option(None, "--test", help="Test rows the model has not seen (.npz with x, y; an ImageFolder like --data's; a .csv of a "
                       "CSV --data's columns; prepared as --data), in place of cwtool's split of --data.",
                       rich_help_panel=INPUTS)
FormatOpt = typer.Option(None, "--format", metavar="FORMAT", help="onnx or tflite (repeatable; default: both, or the --target's).",
                         rich_help_panel="Export")


@dataclass
class ImageOptions:
    """How an ImageFolder's files become model inputs (recorded in report.json and in every artifact's metadata)."""

    resize: Optional[int] = field(default=None, metadata=flag(
        INPUTS, "ImageFolder: resize each image's shorter side to this many pixels (aspect kept), then center-crop "
        "--image-size (default: a square of this side).", min=1, max=16384))
    normalize: Optional[str] = field(default=None, metadata=flag(
        INPUTS, "ImageFolder: auto (the default: ImageNet mean/std for RGB images of 96 px and more, else none), none (pixels "
        "0..1), imagenet, or MEAN,..:STD,.. per channel. verify's auto takes the artifact's recorded normalization."))
    color: str = field(default="auto", metadata=flag(
        INPUTS, "ImageFolder: auto (gray when every image is gray, else RGB), rgb or gray: every image read so (a device's "
        "gray images for an RGB model). verify's auto takes the artifact's recorded color."))

    def load_args(self) -> dict:
        """The keywords of toolchain.data.load_data these flags set."""
        from toolchain.data.options import parse_color, parse_normalize

        normalize = None if self.normalize is None else parse_normalize(self.normalize)  # None: not given (auto)
        return {"resize": self.resize, "normalize": normalize, "color": parse_color(self.color)}


@dataclass
class TrainingInput:
    """How training reads the train split."""

    augment: str = field(default="none", metadata=flag(
        INPUTS, "Training augmentation of images: none, crop (random resized crop), flip (horizontal) or crop,flip "
        "(never evaluation or calibration)."))
    workers: Optional[int] = field(default=None, metadata=flag(
        "Run", "Processes that read the training rows ahead of the training, where rows are read on demand (an ImageFolder, a large .npz); default: one per "
        "spare CPU core (at most 4), 0: none.", min=0, max=64))


def unique_paths(paths: list) -> list:
    """``paths`` without a file named twice (by another path too): verify judges each file once."""
    import os

    seen, out = set(), []
    for p in paths:
        real = os.path.realpath(p)
        if real not in seen:
            seen.add(real)
            out.append(p)
    return out


def seed_option(help: str):
    return typer.Option(0, min=0, max=2**31 - 1, help=help, rich_help_panel=INPUTS)


def parse_kwargs(text: Optional[str]) -> dict:
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserError(f"--arch-kwargs is not valid JSON ({exc.msg}): give e.g. '{{\"width\": 16}}'") from exc
    except RecursionError as exc:
        raise UserError("--arch-kwargs is nested too deep to read: give a flat JSON object, e.g. '{\"width\": 16}'") from exc
    if not isinstance(value, dict):
        raise UserError("--arch-kwargs must be a JSON object, e.g. '{\"width\": 16}'")
    from toolchain.models.checkpoint import storable_kwargs

    if not storable_kwargs(value):  # a checkpoint written with them was then refused as damaged, a run's manifest unread
        raise UserError("--arch-kwargs nests deeper than 8 levels, holds over 10,000 items in one or 100,000 in all, or a number "
                        "that is not finite: a checkpoint records no more")
    return value


def flag_fields(cls) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(cls) if "flag" in f.metadata]


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def config_error(exc: ValueError, *classes) -> UserError:
    """A config dataclass names its fields in errors; the user typed flags."""
    names = [f.name for cls in classes for f in dataclasses.fields(cls)]
    pattern = r"\b(" + "|".join(sorted(names, key=len, reverse=True)) + r")\b"
    parts = re.split(r"('[^']*')", str(exc))  # quoted parts are the user's own values: left alone
    return UserError("".join(p if i % 2 else re.sub(pattern, lambda m: flag_name(m.group(1)), p) for i, p in enumerate(parts)))


def with_config(*classes):
    """Give a command one option per flag field of ``classes``; it is called with one keyword per class
    (the class name in snake case: prune_config, export_options) holding the filled dataclass."""
    def decorate(command):
        signature = inspect.signature(command)
        own = [p for p in signature.parameters.values() if p.name not in {_keyword(c) for c in classes}]
        added, owners = [], {}
        for cls in classes:
            hints = typing.get_type_hints(cls)
            for f in flag_fields(cls):
                spec = f.metadata["flag"]
                extra = {k: v for k, v in spec.items() if k not in ("group", "help", "decls")}
                decls = spec["decls"] or ((flag_name(f.name),) if f.default is False else ())  # an off switch needs no --no- twin
                option = typer.Option(f.default, *decls, help=spec["help"], rich_help_panel=spec["group"], **extra)
                added.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=hints[f.name]))
                owners[f.name] = cls

        @functools.wraps(command)
        def run(**kwargs):
            values = {cls: {} for cls in classes}
            for name in list(kwargs):
                if name in owners:
                    values[owners[name]][name] = kwargs.pop(name)
            try:
                built = {_keyword(cls): cls(**fields) for cls, fields in values.items()}
            except ValueError as exc:
                raise config_error(exc, *classes) from exc
            return command(**kwargs, **built)

        run.__signature__ = signature.replace(parameters=own + added)
        return run
    return decorate


def _keyword(cls) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", cls.__name__).lower()
