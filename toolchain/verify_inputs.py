"""verify's inputs: the rows it judges (an image folder prepared as the artifacts record, unless told otherwise) and the
artifacts opened in their runtimes, before any of them runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.errors import UserError
from toolchain.judged_rows import load_rows_for
from toolchain.recorded import PREPARATION_WORDS, recorded_color, recorded_normalization, recorded_resizing, recorded_value

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
    said: list  # notes on which rows are judged, and why


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
    if opened is None:  # what the files record of the rows they were fitted to decides which rows are judged
        opened = [(path, *open_artifact(path, req.threads)) for path in req.artifacts]

    def load(split: str, seed: int) -> dict:
        return load_rows_for(req.data, split, seed, req.label_column, class_names=req.class_names, image_size=image_size,
                             input_shape=req.input_shape, resize=resize, normalize=normalize, color=color)

    rows, said = rows_not_fitted(req, base_n, rows, opened, load)
    return VerifyRows(rows=rows, opened=opened, normalize=normalize, resize=resize, image_size=image_size,
                      sized_as_recorded=sized_as_recorded, said=said)


FITTED_TOLERANCE = 2  # of the 128 sampled rows: real data sets hold a few exact duplicates across their splits


def rows_not_fitted(req, base_n: int | None, rows: dict, opened: list, load) -> tuple[dict, list[str]]:
    """The rows to judge, and what to say of them, from the sample of fitted rows (training and validation) each file
    records (toolchain.data.seen_sample). Without a baseline or --split, an x/y .npz judged whole that holds them is
    narrowed to its seeded test split (compress split it). Rows judged that hold more than a few are refused where the
    rows were cwtool's choice, said where they were the user's: a gate on rows the model learnt says nothing of new ones.
    A sample not found changes nothing: the rows may be the fitted ones re-encoded, or the record edited.
    ``load(split, seed)``: --data's rows of that split."""
    from toolchain.data.rows import is_pool_npz
    from toolchain.data.seen_sample import found_in, read_seen_sample

    samples = [(path, s, _names_for(runner, rows)) for path, s, runner in
               ((path, read_seen_sample(recorded_value(runner, "seen_rows")), runner) for path, runner, _ in opened)
               if s is not None]
    if not samples:
        return rows, []
    chosen = req.split == "auto" and base_n is None  # the rows are cwtool's choice, not the user's or a baseline's
    said = []

    def fitted(rows: dict, sample, names) -> int:
        found = found_in(sample, rows["x"], rows["y"], names)
        return 0 if found is None or found[2] > 0.01 else found[0]  # rows that repeat often cannot tell fitted from fresh

    if chosen and rows["split"] == "all" and rows.get("seed") is None and is_pool_npz(req.data) \
            and any(fitted(rows, s, names) > FITTED_TOLERANCE for _, s, names in samples):
        rows = load("test", req.seed)
        said.append(f"--data holds rows {_files(samples)} fitted to: its seeded test split (seed {req.seed}) is judged, as "
                    "compress splits it; --split all judges every row")
    seeds = sorted({s["seed"] for _, s, _ in samples if s.get("seed") is not None})
    for path, sample, names in samples:
        found = found_in(sample, rows["x"], rows["y"], names)
        if not found or not found[0]:
            continue
        count, sampled, repeats = found
        what = (f"{count} of the {sampled} rows {Path(path).name} records a sample of from its training and validation rows "
                f"are among the {len(rows['y']):,} rows judged (the {rows['split']} split of {rows['name']})")
        if repeats > 0.01:
            said.append(f"{what}, but {repeats:.0%} of these rows repeat another: equal rows may be other samples, so fitted "
                        "rows cannot be told apart here")
            continue
        if count <= FITTED_TOLERANCE:
            said.append(f"{what}: a few exact duplicates across splits are common; more would void the gate")
            continue
        fix = "give rows it was not fitted to"
        if len(seeds) > 1:
            fix = f"the files were made from splits of seeds {', '.join(map(str, seeds))}: verify each with its own --seed"
        elif rows.get("seed") is not None and sample.get("seed") not in (None, req.seed):
            other = load(rows["split"], sample["seed"])  # advised only where that seed's split holds none of them
            if fitted(other, sample, names) <= FITTED_TOLERANCE:
                fix = f"give --seed {sample['seed']}, the seed its data was split with, not {req.seed}"
        if chosen:
            raise UserError(f"{what}: a gate on rows the model was fitted to says nothing of new rows; {fix}")
        said.append(f"{what}: its FN here are optimistic; {fix}")
    return rows, said


def _names_for(runner, rows: dict) -> list[str] | None:
    """The class names a row's fingerprint takes: the data's own, or where it only numbers its classes, those the file
    records (a CSV labelled 0/1/2 holds the rows of one labelled cat/dog/eel)."""
    from toolchain.evaluate import declared_names

    declared = declared_names(rows["class_names"])
    if declared is not None:
        return declared
    recorded = recorded_value(runner, "class_names")
    top = int(np.max(rows["y"])) + 1 if len(rows["y"]) else 0
    if isinstance(recorded, list) and top <= len(recorded) <= 100_000 and all(isinstance(n, str) for n in recorded):
        return recorded
    return rows["class_names"]


def _files(samples) -> str:
    """Who was fitted to the rows, in words: "model.onnx was" or "the files were"."""
    names = [Path(path).name for path, _, _ in samples]
    return f"{names[0]} was" if len(names) == 1 else "the files were"


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
