"""verify's inputs: the rows it judges (an image folder prepared as the artifacts record, unless told otherwise) and the
artifacts opened in their runtimes, before any of them runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolchain.errors import UserError
from toolchain.judged_rows import load_rows_for
from toolchain.recorded import PREPARATION_WORDS, recorded_color, recorded_normalization, recorded_resizing

__all__ = ["VerifyRows", "load_verify_rows", "open_artifact", "distinct_names", "no_sidecar_hint",
           "auto_normalization", "importable"]


@dataclass
class VerifyRows:
    rows: dict  # toolchain.judged_rows.load_rows_for's
    opened: list | None  # (path, runner, info) of every artifact where the rows needed their record first, else None
    normalize: Any  # as applied: --normalize, or what the artifacts record
    resize: int | None
    image_size: tuple[int, int] | None
    sized_as_recorded: bool  # an image folder sized as the artifacts record, not by --resize or --image-size


def load_verify_rows(req, base_n: int | None) -> VerifyRows:
    """The rows ``req`` (a toolchain.verify.VerifyRequest) names, for a baseline of ``base_n`` rows (or None)."""
    from toolchain.data.loaders import is_image_folder

    # Rows first (bad data is named before the artifacts are opened), except that an ImageFolder is read in the color the
    # files were made for (a device's gray images for an RGB model) unless --color says otherwise: they are opened first.
    # The same for the normalization the files record, unless --normalize names one (auto is a guess from the image size).
    opened, color, normalize, resize, image_size = None, req.color, req.normalize, req.resize, req.image_size
    normalize_recorded = False  # taken from the files' record, not from --normalize: a refusal names the record
    sized_as_recorded = False
    unopened = None  # why an artifact could not be opened to read its record
    if (color is None or normalize in (None, "auto") or (resize is None and image_size is None)) and is_image_folder(req.data):
        try:
            opened = [(path, *open_artifact(path, req.threads)) for path in req.artifacts]
        except UserError as exc:  # named below, after the data's own problems, as for any data
            opened, unopened = None, exc
        runners = [runner for _, runner, _ in opened or []]
        color = color or (recorded_color(runners) if runners else None)
        if normalize in (None, "auto") and runners:  # verify's auto, as its --color auto: as the files were made
            normalize = recorded_normalization(runners) or normalize
            normalize_recorded = normalize not in (None, "auto")
        if resize is None and image_size is None and runners:  # sized as the files were made: not a plain stretch
            resize, image_size = recorded_resizing(runners) or (None, None)
            sized_as_recorded = image_size is not None
    try:
        rows = load_rows_for(req.data, req.split, req.seed, req.label_column, baseline_n=base_n,
                             class_names=req.class_names, image_size=image_size, input_shape=req.input_shape,
                             resize=resize, normalize=normalize, color=color)
    except UserError as exc:  # a folder's images that the files' record would have prepared, had it travelled with them
        if unopened is not None and any(word in str(exc) for word in PREPARATION_WORDS):  # a refusal the record would have
            raise unopened from exc  # prevented, and it was never read: the missing or unreadable file is the cause
        if normalize_recorded and str(exc).startswith("--normalize "):  # the user gave no --normalize: the record is at fault
            what = str(exc)[len("--normalize "):].split(":")[0]
            raise UserError(f"the normalization the files record (their metadata or .json sidecar) {what}: the record does "
                            "not fit these images; pass --normalize to set it") from exc
        hint = no_sidecar_hint(opened or [], req.data)
        if not hint:
            raise
        raise UserError(f"{exc}{hint}") from exc
    return VerifyRows(rows=rows, opened=opened, normalize=normalize, resize=resize, image_size=image_size,
                      sized_as_recorded=sized_as_recorded)


def no_sidecar_hint(opened, data) -> str:
    """For an error about an image folder's rows: a TFLite file without its sidecar lost the preprocessing verify would
    have applied (it travels in the sidecar)."""
    from toolchain.data.loaders import is_image_folder
    from toolchain.runtimes.base import sidecar_path

    blind = [Path(p).name for p, runner, _ in opened if Path(p).suffix.lower() == ".tflite" and not runner.metadata]
    if not blind or not is_image_folder(data):
        return ""
    return (f" ({blind[0]} has no readable sidecar {sidecar_path(blind[0]).name} beside it: the preprocessing it was made for, "
            "which verify applies to a folder's images, travels in it; copy it with the file)")


def auto_normalization(x):
    """What --normalize auto gives images of ``x``'s shape, as recorded_normalization says it ("none" or (means, stds))."""
    from toolchain.data.sources.image_folder import normalization_for

    mean, std, _ = normalization_for("auto", int(x.shape[1]), tuple(x.shape[2:]))
    return (tuple(mean), tuple(std)) if mean else "none"


def importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def open_artifact(path: str, threads: int):
    from toolchain.runtimes import artifact_info, load_runner

    runner = load_runner(path, threads=threads)
    info = artifact_info(path, runner=runner)
    return runner, info


def distinct_names(paths: list[str]) -> list[str]:
    """Each path's file name, with as many of its folders as tell it from the others: candidate/model.onnx and
    accepted/model.onnx were two "model.onnx" rows, one failing, and one JUnit test id for both."""
    parts = [Path(p).parts or (str(p),) for p in paths]
    depth = [1] * len(paths)
    while True:
        shown = ["/".join(pp[-d:]) for pp, d in zip(parts, depth)]
        clash = [i for i, name in enumerate(shown) if shown.count(name) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return shown
        for i in clash:
            depth[i] += 1
