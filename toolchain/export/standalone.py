"""`cwtool export`: any model cwtool can load -- dense or pruned -- to the files `compress` writes, with
the same names, metadata, sidecars and int8 calibration (train rows), each re-checked in its runtime on
the test split against the torch model it came from, and a small report (export.json, export.md).

The folder it writes:

    OUT/artifacts/     model_fp32.onnx, model_int8.onnx, model_fp32_nchw.tflite(.json), ...
    OUT/calibration.npz  the int8 calibration rows and their recipe
    OUT/export.json    the torch model's test evaluation ("baseline"."test": `cwtool verify --baseline`
                       reads it), every file's evaluation, gate, bytes, sha256 and, with --target, fit
    OUT/export.md      the same in words
    OUT/export.log     every line the command said, time-stamped

Everything is written into a staged folder beside OUT and moved into place at the end: a failed or
interrupted export leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain import __version__, interrupts
from toolchain.config import ExportOptions
from toolchain.data.options import data_found_anywhere, verify_row_flags
from toolchain.device_fit import fit_verdicts
from toolchain.errors import UserError, one_line
from toolchain.gate import DEFAULT_MAX_ACCURACY_DROP as MAX_ACCURACY_DROP  # each file against the torch model it came from
from toolchain.export.stage import (DEFAULT_ARTIFACTS, check_export_inputs, check_options_used, choose_artifacts, export_all,
                                    export_settings)
from toolchain.io import SCRATCH_LEFT_AFTER, TMP_PREFIX, atomic_write_json, atomic_write_text, left_by_the_dead
from toolchain.output_paths import is_os_litter
from toolchain.promise import promise_confidence
from toolchain.prune.operating_point import PromiseGuard
from toolchain.run_identity import package_versions

__all__ = ["ExportRequest", "export_model", "choose_artifacts", "reference_guard", "EXPORT_SCHEMA"]

EXPORT_SCHEMA = 1
GUARD_CONFIDENCE = 0.95  # compress's default confidence, lowered to what a perfect copy can back (reference_guard)


@dataclass
class ExportRequest:
    model: str
    data: str
    protect: list[str]
    out: str
    formats: list[str] | None = None  # None: compress's files (or the --target's)
    precisions: list[str] | None = None
    arch: str | None = None
    arch_kwargs: dict | None = None
    trust_model: bool = False
    seed: int = 0  # the data split and the calibration draw, as in compress
    label_column: str | None = None
    class_names: str | list[str] | None = None
    image_size: tuple[int, int] | None = None
    input_shape: tuple[int, ...] | None = None  # --input-shape: flat rows as samples of this shape
    resize: int | None = None  # ImageFolder: the shorter side, center-cropped to image_size
    normalize: str | tuple | None = None  # ImageFolder: auto, none, imagenet or (means, stds)
    color: str | None = None  # ImageFolder: None (as the images are), "RGB" or "L"
    val: str | None = None  # --val / --test: held-out rows the user chose, in place of --data's splits (then trained on)
    test: str | None = None


def reference_guard(y_val: np.ndarray, reference_pred: np.ndarray, protected: list[int]) -> PromiseGuard:
    """The rule every int8 file meets on validation (export_all, quantize.fallback) when there is no
    dense model to compare with: the float model itself is the reference -- its own validation
    predictions stand where compress has the dense model's -- with no FN budget.

    compress's default confidence (0.95) cannot be reached this way: a perfect copy of the float model
    (b = c = 0 disagreements) backs "misses none more on new data" only with promise_confidence(0, 0, n),
    about 0.77 for any n (docs/FN_PROMISE.md). So, as compress does when its pruned model fell short of
    the asked confidence (the files are held to what that model reached), the int8 file is held to what
    a perfect copy reaches: on validation it must not miss a protected sample the float model catches
    unless it also catches ones the float model misses, enough to leave the evidence as strong (b = 0
    passes; b = c = 1 does not). A file short of it gets its own protected-logit offset first (within
    the accuracy budget), then float layers; the test split only reports. The float model's operating point was not
    chosen on these rows, so no sample sits on an edge they placed: none is counted against the file (compress's guard
    counts one, docs/FN_PROMISE.md)."""
    reached = min(promise_confidence(0, 0, int(np.sum(y_val == k))) for k in protected)
    return PromiseGuard(y=y_val, dense_pred=reference_pred, protected=list(protected), budget=0,
                        confidence=min(GUARD_CONFIDENCE, reached - 1e-9), edge_counts_against=False)


def _inputs(request: ExportRequest, settings, log):
    """Data, model, classes: every check before anything is written. Returns (dataset, loaded, protected, class names, what
    the model fails to detect on validation or None)."""
    from toolchain.evaluate import check_model_on_splits, detection_problem
    from toolchain.model_on_data import check_model_fits_data, read_model_and_data
    from toolchain.models.modes import evaluating
    from toolchain.prune.preflight import evaluate_warnings

    dataset, loaded = read_model_and_data(request, request.seed)
    if loaded.kind == "torchscript":
        raise UserError("cwtool exports models it can rebuild and trace, and a TorchScript archive carries a compiled program "
                        "instead (evaluate runs it): give its state_dict with --arch")
    _, names, protected, val_logits = check_model_on_splits(loaded.module, dataset, request.protect)
    needs = [("test", "its false negatives cannot be re-checked")]
    if any(p == "int8" for _, p in settings.artifacts):
        needs.append(("val", "int8 files cannot be held to the float model's protected FN"))
    for split, why in needs:
        absent = [k for k in protected if not np.any(dataset.split(split)[1] == k)]
        if absent:
            raise UserError(f"the {split} split has no samples of protected class {absent[0]}: {why}; give data that has them")
    for line in check_export_inputs(settings, dataset, protected, skip_hint=""):  # a given calibration set's notes
        log(line)
    alike = check_model_fits_data(loaded, dataset, request.model, refuse_unseen=False, note=log)  # unseen: the numbers would overstate
    problem = detection_problem(val_logits, dataset.y_val, protected, names, recorded_alike=alike)
    if problem is not None:  # export converts any model; its files are held to it, so it is said, not refused
        log(f"warning: {problem}")
    with evaluating(loaded.module):  # outputs compress refuses (probabilities, answers not each row's own): said, as evaluate does
        for line in evaluate_warnings(loaded.module, tuple(dataset.input_shape)):
            log(f"warning: {line}")
    return dataset, loaded, protected, names, problem


def _failed_run(run, model) -> str | None:
    """Why the compress run that made ``model`` recommended no file (its pruned.pt records whether it kept its budget on
    validation), or None: its files passing their own re-check here had named one to deploy, the run's verdict unsaid."""
    from toolchain.prune.tickets import failed_budget

    if not isinstance(run, dict) or run.get("budget_met") is not False:
        return None
    return (f"'{one_line(str(model))}' is the model of a compress run that did not {failed_budget(_binds(run))}, and that run "
            "recommended no file to deploy: its files are held here to this model, not to the dense model it came from")


def _round_ticket(extra: dict, model) -> str | None:
    """A compress run's round checkpoint (rounds/round_N.pt) given to export: it records no verdict of its run (a
    failed run's round ticket exported and verified clean, nothing said: a regression reviewer's finding)."""
    round_ = extra.get("round") if isinstance(extra, dict) else None
    if not isinstance(round_, int) or isinstance(round_, bool) or isinstance(extra.get("run"), dict):
        return None
    return (f"'{one_line(str(model))}' is round {round_}'s ticket of a compress run, not the model it shipped: no verdict of that "
            "run travels with it (a run may have recommended no file); export the run's pruned.pt, whose record says")


def _binds(run: dict) -> str | None:
    """The budget a failed run's record names, where it is one cwtool writes (the file is untrusted: a tensor there had
    ended export.json's writing in exit 3)."""
    binds = run.get("binds")
    return binds if isinstance(binds, str) and binds in ("accuracy", "fn_promise") else None


def _staged_folder(out: Path, log=print) -> Path:
    """A fresh folder beside ``out`` that becomes it when every file is written; it names this process, so that the
    next export to ``out`` removes what a killed one left (kill -9 runs no cleanup)."""
    if out.is_symlink():  # the finished folder takes the link's place: the link would be replaced, not followed
        raise UserError(f"--out '{out}' is a symbolic link (to '{os.readlink(out)}'): give the folder it points to, or a new name")
    if out.exists() and (not out.is_dir() or not _holds_only_litter(out)):
        raise UserError(f"--out '{out}' exists and is not empty: give a new folder (export never mixes its files with others)")
    out.parent.mkdir(parents=True, exist_ok=True)
    left = left_by_the_dead(out.parent, f"{TMP_PREFIX}{out.name}.")
    # another --out's, once unchanged for hours (the folder may be shared with processes whose pids this one cannot see)
    others = [f for f in left_by_the_dead(out.parent, TMP_PREFIX, older_than=SCRATCH_LEFT_AFTER, any_name=True) if f not in left]
    for folder in left + others:
        shutil.rmtree(folder, ignore_errors=True)
    if left:
        log(f"removed {len(left)} staging folder(s) an export to '{out}' left when it was killed")
    if others:
        log(f"removed {len(others)} staging folder(s) that exports to other folders left here when they were killed: "
            + ", ".join(f.name for f in others[:3]) + (", ..." if len(others) > 3 else ""))
    return Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{out.name}.{os.getpid()}.", dir=out.parent))


def _macs(model, example) -> int | None:
    from toolchain.models.profile import count_macs

    try:
        return count_macs(model, example)
    except Exception:  # noqa: BLE001 - an op the counter does not know: the fit check reads the file's graph instead
        return None


def export_model(request: ExportRequest, options: ExportOptions, log=print, attach_log=None, progress=None) -> tuple[dict, Path]:
    """Write the files and the report into ``request.out``; returns (the export report, the folder). ``attach_log(path)``:
    from then on ``log``'s lines also go to the file ``path`` (export.log, in the staged folder, then in OUT).
    ``progress``: where each file's start is said (stage.export_all)."""
    import torch

    from toolchain.data.seen_sample import trained_sample
    from toolchain.models.loading import as_recorded
    from toolchain.recorded import preparation_notes
    from toolchain.gate import fn_gate
    from toolchain.file_identity import check_unchanged
    from toolchain.metrics import evaluate_logits
    from toolchain.models.profile import count_params
    from toolchain.models.train import predict_logits
    from toolchain.provenance import file_sha256, rows_sha256
    from toolchain.prune.preflight import check_float32

    base = export_settings(options)
    settings = dataclasses.replace(base, artifacts=choose_artifacts(base.artifacts or DEFAULT_ARTIFACTS, request.formats,
                                                                    request.precisions))
    check_options_used(options, settings.artifacts)
    request, prepared, _ = as_recorded(request)  # a folder of images prepared as the checkpoint records, where no flag says
    dataset, loaded, protected, names, undetected = _inputs(request, settings, log)
    failed_run = _failed_run(loaded.extra.get("run"), request.model)
    run_record = {"budget_met": False, "binds": _binds(loaded.extra["run"])} if failed_run else None  # the file's values checked
    if failed_run:
        log(f"warning: {failed_run}")
    ticket = _round_ticket(loaded.extra, request.model)
    if ticket:
        log(f"warning: {ticket}")
    for line in preparation_notes(prepared, dataset.input_shape, f"'{request.model}' records its training's were", choosable=False):
        log(f"note: {line}")
    profile = None
    if settings.target:
        from toolchain.targets import load_target

        profile = load_target(settings.target)
    check_float32(loaded.module.float().cpu().eval(), tuple(dataset.input_shape))  # before any file is staged
    out = Path(request.out)
    stage = _staged_folder(out, log)
    interrupts.staged(str(stage))
    try:
        if attach_log is not None:
            attach_log(stage / "export.log")
        log(f"data: {request.data}: {dataset.preprocessing.note}")
        model = loaded.module.float().cpu().eval()
        x_val, y_val = dataset.split("val")
        x_test, y_test = dataset.split("test")
        logits = predict_logits(model, x_test)
        reference = evaluate_logits(y_test, logits, protected, len(names))
        reference["predictions"] = logits.argmax(1).tolist()  # per-sample: verify pairs every file with it (McNemar)
        reference["rows_sha256"] = rows_sha256(x_test, y_test)
        val_logits = predict_logits(model, x_val)
        val_accuracy = float(np.mean(val_logits.argmax(1) == y_val))
        gate_fn = lambda ref, cand: fn_gate(ref, cand, 0, MAX_ACCURACY_DROP, labels=y_test)  # noqa: E731
        t0 = time.perf_counter()
        entries, calibration = export_all(model, dataset, protected, reference_guard(y_val, val_logits.argmax(1), protected),
                                          reference, settings, stage, request.seed, gate_fn, log=log, progress=progress,
                                          min_val_accuracy=val_accuracy - MAX_ACCURACY_DROP,
                                          # a model that detects nothing gives the int8 files' FN nothing to hold: no layer
                                          # search (a chance-level MobileNetV2 at 32 px searched 53 layers a format, 11 min)
                                          search_float_layers=undetected is None,
                                          seen_rows=trained_sample(loaded.extra.get("data"), dataset))  # its training's rows
        example = torch.zeros(1, *dataset.input_shape)
        macs = _macs(model, example)
        model_sha256 = file_sha256(Path(request.model))
        check_unchanged(request.model, loaded.file_identity, "model file")  # the sha256 is of the model exported
        report = {
            "schema_version": EXPORT_SCHEMA, "kind": "cwtool-export", "tool": {"name": "cwtool", "version": __version__},
            "model": {"path": str(request.model), "sha256": model_sha256, "kind": loaded.kind,
                      "arch": loaded.arch or request.arch, "pruned": bool(loaded.channel_plan), "params": count_params(model),
                      "macs": macs},
            "versions": package_versions(), "protected": protected, "class_names": names,
            "data": {**dataset.describe(), "spec": data_found_anywhere(request.test or request.data), "source": str(request.data), "verify_options": verify_row_flags(request, dataset.class_names),
                     "test_rows_sha256": reference["rows_sha256"]},
            "baseline": {"source": "the torch model itself", "val": {"accuracy": val_accuracy}, "test": reference},
            "budget": {"max_fn_increase": 0, "max_accuracy_drop": MAX_ACCURACY_DROP},
            "settings": {**dataclasses.asdict(settings), "artifacts": [list(a) for a in settings.artifacts]},
            "calibration": calibration, "artifacts": entries, "seconds": time.perf_counter() - t0,
            **({"warnings": [w for w in (undetected, failed_run, ticket) if w]} if undetected or failed_run or ticket else {}),
            **({"compress_run": run_record} if run_record else {}),  # a verify against this file says so too
        }
        if profile is not None:
            report["target"] = fit_verdicts(entries, stage, profile, macs, f"the torch model ({Path(request.model).name})")
        if entries:
            from toolchain.deploy import deploy_choice

            withheld = (("the torch model itself does not detect a protected class on validation (the warning above), so no "
                         "file is recommended") if undetected is not None else
                        f"{failed_run}: no file is recommended here either" if failed_run else None)
            report["deploy"] = deploy_choice(entries, stage, settings.threads, settings.time_runs, log=log, withheld=withheld)
        reasons = [f"{e['path']}: {r}" for e in entries for r in e["gate"]["reasons"]]
        report["gate"] = {"passed": not reasons, "reasons": reasons, "budget": report["budget"]}
        _write(report, stage)
        _publish(stage, out)
        if attach_log is not None:
            attach_log(out / "export.log")
    except UserError as exc:  # a file named in the staged folder, gone once this is read: named where it would have been
        shutil.rmtree(stage, ignore_errors=True)
        said = str(exc)
        if str(stage) in said:
            raise UserError(said.replace(str(stage), str(out)) + " (not written)") from exc
        raise
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        interrupts.unstaged(str(stage))
    return report, out


def _write(report: dict, folder: Path) -> None:
    from toolchain.report.export_markdown import render_export_report

    markdown = render_export_report(report)  # rendered before anything is written
    atomic_write_text(folder / "export.md", markdown)
    atomic_write_json(folder / "export.json", report)


def _litter_file(entry: Path) -> bool:
    """Whether ``entry`` is a file a file browser leaves (a new --out opened in Finder holds a .DS_Store), no link."""
    return is_os_litter(entry.name) and entry.is_file() and not entry.is_symlink()


def _holds_only_litter(folder: Path) -> bool:
    return all(_litter_file(p) for p in folder.iterdir())


def _publish(stage: Path, out: Path) -> None:
    stage.chmod(0o777 & ~_umask())  # mkdtemp's folder is owner-only
    try:
        if out.is_dir():  # checked to hold nothing but a file browser's litter before the work began
            for entry in filter(_litter_file, list(out.iterdir())):
                entry.unlink()
            out.rmdir()
        stage.rename(out)
    except OSError as exc:  # another process wrote --out meanwhile: its files are kept, these are not published
        raise UserError(f"--out '{out}' was filled by another process while this export ran ({exc.strerror or exc}): its files are "
                        "kept; export again to a new folder") from exc


def _umask() -> int:
    import os

    mask = os.umask(0)
    os.umask(mask)
    return mask
