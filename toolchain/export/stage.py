"""The export stage of `compress` and `cwtool export`: calibrate, export every artifact, FN-aware int8,
and evaluate each file in its own runtime on the test split (report only: nothing is chosen from
test); with a target, each file's fit verdict.

Format-specific work goes through the backends registered in toolchain.export."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import InputCountError, UserError
from toolchain.export import ExportJob, export_backend
from toolchain.export.calibration_rows import calibration_rows, calibration_set_notes, check_unseen_test, feature_scale_spread
from toolchain.gate import class_label
from toolchain.judged_rows import given_test_record
from toolchain.metrics import evaluate_logits, nonfinite_rows
from toolchain.provenance import artifact_sha256, rows_sha256
from toolchain.prune.bake import bake_offsets
from toolchain.prune.operating_point import PromiseGuard, apply_offsets, fn_count
from toolchain.quantize.fallback import fn_aware_quantize, protected_log_odds
from toolchain.rundir import RunDir

DEFAULT_ARTIFACTS = (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"))
FORMATS = ("onnx", "tflite")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class ExportSettings:
    artifacts: tuple = DEFAULT_ARTIFACTS
    layout: str = "NCHW"  # layout of the TFLite input (ONNX stays NCHW for onnxruntime)
    calibration_size: int = 256
    calibration_method: str = "minmax"
    calibration_file: str | None = None
    calibration_name: str | None = None  # the set's name when --calibration named one from calibration/
    threads: int = 1
    float_input_conv: bool = True  # int8: keep a 1-4 channel input conv in float (faster in onnxruntime and XNNPACK)
    target: str | None = None  # the device profile the files are made for: each gets a fit verdict
    time_runs: int = 100  # batch-1 timed calls per file, to name the file to deploy (toolchain.deploy); 0: none


def choose_artifacts(base: tuple, formats: list[str] | None, precisions: list[str] | None) -> tuple:
    """The (format, precision) files to write: every asked format with every asked precision; what is
    not asked comes from ``base`` (compress's files, or the target's). ONNX has no fp16 file (the exporter
    writes fp32); ONNX int8 is quantized from the fp32 file, which is then written and checked too."""
    for value, allowed, flag in ((formats, FORMATS, "--format"), (precisions, PRECISIONS, "--precision")):
        bad = [v for v in value or [] if v not in allowed]
        if bad:
            raise UserError(f"{flag} {bad[0]!r} is not one of {', '.join(allowed)}")
    fmts = list(dict.fromkeys(formats or [f for f, _ in base]))
    precs = list(dict.fromkeys(precisions or [p for _, p in base]))
    if formats and precisions and "onnx" in fmts and precs == ["fp16"]:
        raise UserError("ONNX files are fp32 or int8 (fp16 is a TFLite precision): use --format tflite for fp16")
    pairs = {(f, p) for f in fmts for p in precs if (f, p) != ("onnx", "fp16")}
    if ("onnx", "int8") in pairs:
        pairs.add(("onnx", "fp32"))
    if not pairs:
        raise UserError(f"no file to write for --format {', '.join(fmts)} and --precision {', '.join(precs)}")
    return tuple(sorted(pairs, key=lambda fp: (FORMATS.index(fp[0]), PRECISIONS.index(fp[1]))))


def check_options_used(options, artifacts: tuple) -> None:
    """Export flags that no file to be written would use are refused, not dropped in silence: --layout NHWC sets the
    TFLite file's input layout (ONNX stays NCHW, and the device would be fed what it did not expect); --calibration
    sets the int8 files' ranges (a user who gave one believes the files were quantized with it)."""
    if not artifacts:  # --skip-export: the flags that shape files shape none
        defaults = type(options)()
        shaping = [flag for flag, given in (("--layout", options.layout is not None),
                                            ("--calibration-method", options.calibration_method != defaults.calibration_method),
                                            ("--calibration-size", options.calibration_size != defaults.calibration_size),
                                            ("--float-input-conv" if options.float_input_conv else "--int8-input-conv",
                                             options.float_input_conv is not None)) if given]
        if shaping:
            raise UserError(f"{shaping[0]} sets how the exported files are made, and --skip-export writes none: drop one of them")
    if options.layout == "NHWC" and artifacts and not any(fmt == "tflite" for fmt, _ in artifacts):
        raise UserError("--layout NHWC is the TFLite file's input layout, and no TFLite file is written here (ONNX files take NCHW): "
                        "add --format tflite or drop --layout")
    written = ", ".join(f"{fmt} {precision}" for fmt, precision in artifacts)
    if options.calibration and not any(precision == "int8" for _, precision in artifacts):
        if not artifacts:
            raise UserError("--calibration quantizes int8 files, and --skip-export writes none: drop one of them")
        raise UserError(f"--calibration quantizes int8 files, and this run writes {written}: drop --calibration, or ask for an int8 file")
    if options.calibration and options.calibration_size != type(options)().calibration_size:
        raise UserError("--calibration-size is the size of the set drawn from the train split, and --calibration gives a set of its "
                        "own rows: drop one of them")
    if options.target and artifacts:
        from toolchain.targets import target_export_plan

        runs = target_export_plan(options.target)["formats"]
        if not any(fmt in runs for fmt, _ in artifacts):  # every file would be judged "does not fit", after the work
            raise UserError(f"--target {options.target} runs {' and '.join(runs)} files, and this run writes {written}: drop --format, "
                            f"or add --format {runs[0]}")


def export_settings(options) -> ExportSettings:
    """The files to write and how, from what the user asked (toolchain.config.ExportOptions) and, with a
    --target, the device profile: its formats, precision, layout, threads and int8 input scheme."""
    layout, calibration = options.layout, options.calibration
    if layout not in (None, "NCHW", "NHWC"):
        raise UserError(f"--layout '{layout}' is not NCHW or NHWC")
    if options.calibration_method not in ("minmax", "entropy", "percentile"):
        raise UserError(f"--calibration-method '{options.calibration_method}' is not minmax, entropy or percentile")
    calibration_name = None
    if calibration is not None:  # a set's name from calibration/ or a path to a saved .npz
        from toolchain.quantize.calibration import resolve_calibration

        calibration, calibration_name = resolve_calibration(calibration)
    if not 0 <= options.time_runs <= 100_000:
        raise UserError(f"--time-runs {options.time_runs}: give 0 (no timing) to 100000")
    if options.calibration_size < 1:
        raise UserError("--calibration-size must be at least 1")
    artifacts, threads, float_input_conv = DEFAULT_ARTIFACTS, 1, options.float_input_conv
    if options.target:
        from toolchain.targets import target_export_plan

        plan = target_export_plan(options.target)
        if layout is not None and layout != plan["layout"]:
            raise UserError(f"--layout {layout} contradicts --target {options.target}, which runs {plan['layout']}: drop --layout")
        artifacts = tuple((fmt, p) for fmt in plan["formats"] for p in dict.fromkeys(["fp32", plan["precision"]]))
        layout, threads = plan["layout"], plan["threads"]
        if float_input_conv is None:  # a full-integer target promises int8 input tensors: no float stem in front
            float_input_conv = plan["int8_scheme"] != "full-integer"
    return ExportSettings(artifacts=() if options.skip_export else artifacts, layout=layout or "NCHW",
                          calibration_size=options.calibration_size, calibration_method=options.calibration_method,
                          calibration_file=str(calibration) if calibration else None, calibration_name=calibration_name, threads=threads,
                          float_input_conv=float_input_conv is not False, target=options.target,
                          time_runs=options.time_runs)


def check_export_inputs(export: ExportSettings | None, dataset, protected: list[int], skip_hint: str = " (or --skip-export)") -> list[str]:
    """Export settings that cannot work for this data are bad input: said before minutes of pruning or
    converting, not after (the layout, a calibration file's rows, the converters installed). Returns the notes a given
    calibration set calls for (calibration_set_notes), read from it here once."""
    notes: list[str] = []
    if export is None or not export.artifacts:
        return notes
    if export.layout == "NHWC" and len(dataset.input_shape) != 3 and not export.target:  # a target's layout is for images
        raise UserError(f"NHWC layout needs image data (C, H, W); these samples have shape {dataset.input_shape}: use --layout NCHW")
    if export.calibration_file:
        from toolchain.data.identity import preprocessing_differences, preprocessing_flags
        from toolchain.quantize.calibration import load_calibration

        x, meta = load_calibration(export.calibration_file)
        which = f"set '{export.calibration_name}'" if export.calibration_name else f"file '{export.calibration_file}'"
        here = dataset.preprocessing.to_dict()
        if tuple(x.shape[1:]) != tuple(dataset.input_shape):
            how = f" (cwtool calibrate with {preprocessing_flags(here)})" if here.get("color") else ""  # the folder's flags
            raise UserError(f"--calibration {which} holds rows of shape {_shape(x.shape[1:])}, the model's input is "
                            f"{_shape(dataset.input_shape)}: give a set made for this data{how} (calibration/README.md)")
        found = preprocessing_differences(meta.get("preprocessing"), here)
        if found is not None:  # rows of other ranges would set every int8 scale wrong, with no word of why
            raise UserError(f"--calibration {which} holds images prepared otherwise than this data's ({found[0]}): give a set "
                            f"made with this data's preprocessing (cwtool calibrate with {preprocessing_flags(here)})")
        check_unseen_test(x, dataset, f"'{export.calibration_name or export.calibration_file}'")
        notes = calibration_set_notes(x, meta, str(export.calibration_name or export.calibration_file), dataset, protected)
    import importlib.util

    for fmt in sorted({fmt for fmt, _ in export.artifacts}):
        module, package = export_backend(fmt).needs
        if importlib.util.find_spec(module) is None:
            raise UserError(f"exporting {fmt} needs {package}: pip install 'cwtool[compress]'{skip_hint}")
    if any(fmt == "tflite" for fmt, _ in export.artifacts):  # the converter is not the interpreter that re-checks its files:
        from toolchain.runtimes.litert import interpreter_class  # a missing one was found after every round

        try:
            interpreter_class()
        except UserError as exc:
            raise UserError(f"re-checking the TFLite files needs a LiteRT interpreter: {exc}{skip_hint}") from exc
    return notes


def _shape(shape) -> str:
    return "(" + ", ".join(str(int(d)) for d in shape) + ")"


def _grid_step(logits: np.ndarray) -> float:
    """The spacing of the values a (dequantized) int8 output takes: the smallest gap between distinct
    values of a column. A float output gives a gap near 0."""
    gaps = [np.diff(np.unique(col)) for col in np.asarray(logits, dtype=np.float64).T]
    gaps = [g[g > 1e-9].min() for g in gaps if (g > 1e-9).any()]
    return float(min(gaps)) if gaps else 0.0


DECISION = ("the class is the argmax of the outputs (logits; the first class on a tie; an int8 output dequantized or not, "
            "the same argmax); any operating point cwtool chose is in the classifier's bias already: add nothing to the outputs")


def export_all(model, dataset, protected, guard: PromiseGuard, baseline_test: dict, settings: ExportSettings,
               run_dir: Path, seed: int, gate_fn, log=print, min_val_accuracy: float = 0.0,
               search_float_layers: bool = True, seen_rows: dict | None = None, progress=None) -> tuple[list[dict], dict]:
    """Returns (artifact entries for report.json, calibration record).

    search_float_layers: False where the run failed on validation already (it recommends no file): an int8 file short of
    the promise gets its own operating point, not the layer search (one file a layer: minutes to hours at 224 px).

    guard: the FN promise the pruned model's operating point met on validation; every int8 file must
    meet it too (its own operating point, then float layers, see quantize.fallback).

    min_val_accuracy: the validation accuracy every int8 file must keep (the dense model's minus the accuracy budget):
    a file below it is short as a file short of the promise is, and its own operating point (see quantize.fallback) is
    re-set only where accuracy stays at or above it.

    seen_rows: the sample of the rows the model was trained or tuned on (toolchain.data.seen_sample) every file records,
    by which verify refuses to judge it on them; None: not known, none recorded.

    progress: where each file's start is said (a converter and its check can take minutes at 224 px: a log, or a pipe
    into a CI log, heard nothing meanwhile)."""
    import copy

    import torch

    from toolchain.models.train import predict_logits
    from toolchain.runtimes import artifact_info, load_runner
    from toolchain.runtimes.base import RuntimeFailure

    model = model.cpu().eval()
    out = RunDir(run_dir).artifacts
    out.mkdir(parents=True, exist_ok=True)
    work = RunDir(run_dir).work
    example = torch.as_tensor(dataset.x_train[:1])
    num_classes = int(model(example).shape[1])
    int8 = any(p == "int8" for _, p in settings.artifacts)  # only int8 files are calibrated
    calib_x, calib_record = calibration_rows(dataset, protected, settings, seed, run_dir) if int8 else (None, None)
    layout = settings.layout if example.dim() == 4 else "NCHW"  # feature rows have no channels to lay out
    x_val, y_val = dataset.split("val")
    x_test, y_test = dataset.split("test")
    test_rows = rows_sha256(x_test, y_test)
    given_test = given_test_record(dataset, test_rows)  # verify, given a --test folder alone on a device, judges every row of it
    job = ExportJob(example=example, num_classes=num_classes, layout=layout, calibration_x=calib_x,
                    calibration_method=settings.calibration_method, out=out, work=work,
                    metadata={"preprocessing": dataset.preprocessing.to_dict(),  # the device feeds the same input
                              "decision": DECISION,  # and decides alike: a reported offset added again moves the point twice
                              **({"class_names": [str(n) for n in dataset.class_names]}  # and reads the outputs alike
                                 if len(dataset.class_names) == num_classes else {}),
                              **({"seen_rows": seen_rows} if seen_rows else {}),  # what verify refuses to judge on
                              **({"test_rows": given_test} if given_test else {})})
    torch_test_pred = predict_logits(model, x_test).argmax(1)

    last_scored: dict[tuple, np.ndarray] = {}  # the int8 search ends on the file it ships: its validation rows run once

    def val_logits(path: Path) -> np.ndarray:
        key = tuple(f["sha256"] for f in artifact_sha256(path)["files"])  # the bytes, wherever the file was moved
        if key not in last_scored:
            last_scored.clear()
            last_scored[key] = load_runner(path, threads=settings.threads).predict(x_val)
        return last_scored[key]

    def score(path: Path):
        logits = val_logits(path)
        return (guard.met(logits, {}), {k: fn_count(logits, y_val, k) for k in protected}, protected_log_odds(logits, y_val, protected),
                float(np.mean(logits.argmax(1) == y_val)))

    def keeping_float(source, stem: list[str]):
        """A Build for fn_aware_quantize: the source quantized with the stem and the excluded units in float."""
        return lambda excluded, dest: source.build([*stem, *excluded], dest)

    def retuner(backend, stem: list[str]):
        """retune for fn_aware_quantize: offsets from the int8 file's validation logits, baked into a
        copy of the float model that the backend quantizes again (a scratch source)."""
        def retune(path: Path, baked: dict[int, float]):
            logits = val_logits(path)
            step = guard.choose(logits)
            # int8 logits sit on a grid; a shift smaller than one step is rounded away when the shifted model is
            # quantized again, so a positive offset gets one grid step on top
            grid = _grid_step(logits)
            step = {k: v + grid if v > 0 else v for k, v in step.items()}
            if not any(step.values()) or float(np.mean(apply_offsets(logits, step).argmax(1) == y_val)) < min_val_accuracy:
                return None
            offsets = {k: baked.get(k, 0.0) + step[k] for k in step}
            try:
                shifted = bake_offsets(copy.deepcopy(model), offsets, example)
            except ValueError:  # no classifier bias to carry an offset (a user's model): float layers instead
                return None
            return keeping_float(backend.int8_source(shifted, job, scratch=True), stem), offsets
        return retune

    def one_file(fmt: str, precision: str) -> dict:
        backend = export_backend(fmt)
        if progress is not None:
            progress(f"{fmt} {precision}: making the file, then checking it on {len(y_test):,} test rows")
        t0 = time.perf_counter()
        fallback, stem = None, []
        if precision == "int8":
            source = backend.int8_source(model, job)
            stem = source.thin_input_units() if settings.float_input_conv else []
            candidates = [n for n in source.quantizable_units() if n not in stem]
            fallback = fn_aware_quantize(keeping_float(source, stem), score, candidates, work / fmt,
                                         backend.artifact_path(job, "int8"), retune=retuner(backend, stem), log=log,
                                         label=f"{fmt} int8", search=search_float_layers, min_accuracy=min_val_accuracy)
            path = fallback.path
        else:
            path = backend.export_float(model, job, precision)
        convert_seconds = time.perf_counter() - t0
        try:
            runner = load_runner(path, threads=settings.threads)
        except InputCountError as exc:
            raise UserError(f"the {fmt} file made from the model does not take one input tensor ({exc.count} inputs): "
                            "its forward leaves torch on the way (numpy, .item(), a Python number), so the traced graph "
                            "does not read the input; keep the forward in torch operations") from exc
        logits = runner.predict(x_test)
        bad = nonfinite_rows(logits)
        if bad:  # the torch model's were finite (checked before): the file's own arithmetic, not the model, gave these
            overflow = (": fp16 holds values up to 65,504, and this model's weights or activations go beyond it; use "
                        "--precision fp32 or int8 for this format" if precision == "fp16" else "")
            raise UserError(f"{path.name}, the {fmt} {precision} file made from the model, gives NaN or infinite logits on "
                            f"{bad:,} of the {len(logits):,} test rows, where the torch model's are finite{overflow}")
        evaluation = evaluate_logits(y_test, logits, protected, num_classes)
        evaluation["predictions"] = logits.argmax(1).tolist()
        evaluation["rows_sha256"] = test_rows
        info = artifact_info(path, runner=runner)
        entry = {
            "path": str(path.relative_to(run_dir)), "format": fmt, "precision": precision,
            "bytes": info["bytes"], **artifact_sha256(path),  # all its files: an ONNX model's external data too
            "runtime": runner.runtime, "layout": runner.layout, "input_dtype": info.get("input_dtype"),
            "weights_precision": info.get("precision"), "convert_seconds": convert_seconds,
            "agreement": float(np.mean(logits.argmax(1) == torch_test_pred)), "agreement_with": "the torch model it was made from",
            "evaluation": evaluation,
            "gate": gate_fn(baseline_test, evaluation),
        }
        short = ""
        if fallback is not None:
            val_promise = guard.check(val_logits(path), {})  # the file's own disagreements with the dense model
            val_accuracy = float(np.mean(val_logits(path).argmax(1) == y_val))
            entry["quantization"] = {"calibration_method": settings.calibration_method, "float_layers": fallback.float_layers,
                                     "float_input_layers": stem, "offsets": {str(k): v for k, v in fallback.offsets.items()},
                                     "val_protected_fn": {str(k): v for k, v in fallback.fn.items()},
                                     "val_promise": {str(k): {f: v[f] for f in ("confidence", "fn", "dense_fn", "b", "c")}
                                                     for k, v in val_promise.items()},
                                     "val_accuracy": val_accuracy, "min_val_accuracy": min_val_accuracy,
                                     "within_budget_on_val": fallback.within_budget, "note": fallback.reason,
                                     "ranking": fallback.ranking}
            if not fallback.within_budget:  # the promise is about the file the device runs: one test draw cannot stand in
                entry["gate"]["passed"] = False
                if fallback.short_of == "the accuracy budget":
                    entry["gate"]["reasons"].append(f"short of the accuracy budget on validation: accuracy {val_accuracy:.4f} "
                                                    f"against the {min_val_accuracy:.4f} it is held to (neither its own offset "
                                                    "nor float layers reached it)")
                else:
                    reached = ", ".join(f"{class_label(k, dataset.class_names)} {v['confidence']:.3f}" for k, v in val_promise.items())
                    entry["gate"]["reasons"].append(f"short of the FN promise on validation: confidence {reached} against the "
                                                    f"{guard.confidence:.3f} it is held to (neither its own offset nor float "
                                                    "layers reached it)")
                short = f"; SHORT of {fallback.short_of or 'the FN promise'} on validation"
        prot = ", ".join(f"{class_label(p['class'], dataset.class_names)} FN {p['fn']}" for p in evaluation["protected"])
        log(f"{fmt} {precision}: {entry['bytes']:,} bytes, test accuracy {evaluation['accuracy']:.4f}, {prot}, "
            f"agreement {entry['agreement']:.1%}{short}")
        return entry

    spread = feature_scale_spread(calib_x, getattr(dataset.preprocessing, "columns", None)) if int8 else None
    if spread is not None:
        log(f"note: {spread}; an int8 file quantizes its input on one scale, which erases the small ones, unless the model "
            "standardizes its input itself (docs/DATA.md)")
    entries = []
    try:
        for fmt, precision in settings.artifacts:
            try:
                entries.append(one_file(fmt, precision))
            except RuntimeFailure as exc:  # a file cwtool made that its own runtime cannot run: not "corrupt, re-export it"
                for made in out.iterdir():  # no file its runtime cannot run is left beside the others
                    if made.is_file() and made.name.startswith(f"model_{precision}") and made.name.split(".")[1:2] == [fmt]:
                        made.unlink(missing_ok=True)
                hint = (f"; {spread}, and int8 quantizes the input on one scale: standardize them (docs/DATA.md)"
                        if spread is not None and precision == "int8" else "")
                raise UserError(f"the {fmt} {precision} file made from this model does not run in its runtime (failed to "
                                f"{exc.failed}){hint}; leave it out (--format, --precision)") from exc
    finally:  # half-built int8 candidates never outlive the stage
        shutil.rmtree(work, ignore_errors=True)
    return entries, calib_record
