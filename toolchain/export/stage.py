"""The export stage of `compress`: calibrate, export every artifact, FN-aware int8, and evaluate each
file in its own runtime on the test split (report only: nothing is chosen from test)."""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.metrics import evaluate_logits
from toolchain.prune.operating_point import fn_count
from toolchain.quantize.fallback import fn_aware_quantize, protected_log_odds

DEFAULT_ARTIFACTS = (("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8"))


@dataclass
class ExportSettings:
    artifacts: tuple = DEFAULT_ARTIFACTS
    layout: str = "NCHW"  # layout of the TFLite input (ONNX stays NCHW for onnxruntime)
    calibration_size: int = 256
    calibration_method: str = "minmax"
    calibration_file: str | None = None
    threads: int = 1
    float_input_conv: bool = True  # ONNX int8: keep a 1-4 channel input conv in float (faster in onnxruntime)


def _calibration(dataset, protected, settings: ExportSettings, seed: int, run_dir: Path) -> tuple[np.ndarray, dict]:
    from toolchain.quantize.calibration import load_calibration, sample_calibration, save_calibration

    if settings.calibration_file:
        x, meta = load_calibration(settings.calibration_file)
        return x.astype(np.float32), {"file": str(settings.calibration_file), **meta}
    x = sample_calibration(dataset.x_train, dataset.y_train, settings.calibration_size, protected, seed=seed)
    meta = {"split": "train", "size": int(len(x)), "protected": list(protected), "seed": seed, "data": dataset.name}
    save_calibration(run_dir / "calibration.npz", x, meta)
    return x, {"file": "calibration.npz", **meta}


def export_all(model, dataset, protected, targets_val: dict[int, int], baseline_test: dict, settings: ExportSettings,
               run_dir: Path, seed: int, gate_fn, log=print) -> tuple[list[dict], dict]:
    """Returns (artifact entries for report.json, calibration record)."""
    import torch

    from toolchain.export.onnx import export_onnx
    from toolchain.export.tflite import export_tflite, quantizable_modules
    from toolchain.models.train import predict_logits
    from toolchain.quantize.onnx_int8 import quantizable_nodes, quantize_onnx, thin_input_convs
    from toolchain.runtimes import artifact_info, load_runner

    model = model.cpu().eval()
    out = run_dir / "artifacts"
    out.mkdir(parents=True, exist_ok=True)
    work = run_dir / "work"
    example = torch.as_tensor(dataset.x_train[:1])
    num_classes = int(model(example).shape[1])
    calib_x, calib_record = _calibration(dataset, protected, settings, seed, run_dir)
    x_val, y_val = dataset.split("val")
    x_test, y_test = dataset.split("test")
    torch_test_pred = predict_logits(model, x_test).argmax(1)

    def score(path: Path):
        logits = load_runner(path, threads=settings.threads).predict(x_val)
        return ({k: fn_count(logits, y_val, k) for k in protected}, protected_log_odds(logits, y_val, protected))

    onnx_fp32 = out / "model_fp32.onnx"
    entries = []
    stem: list[str] = []
    try:
        for fmt, precision in settings.artifacts:
            t0 = time.perf_counter()
            fallback = None
            if fmt == "onnx":
                if not onnx_fp32.exists():
                    export_onnx(model, example, onnx_fp32, num_classes=num_classes)
                path = onnx_fp32
                if precision == "int8":
                    stem = thin_input_convs(onnx_fp32) if settings.float_input_conv else []
                    build = lambda excluded, dest: quantize_onnx(onnx_fp32, dest, calib_x, method=settings.calibration_method, nodes_to_exclude=[*stem, *excluded])
                    candidates = [n for n in quantizable_nodes(onnx_fp32) if n not in stem]
                    fallback = fn_aware_quantize(build, score, candidates, targets_val, work / "onnx", out / "model_int8.onnx")
                    path = fallback.path
            else:
                path = out / f"model_{precision}_{settings.layout.lower()}.tflite"
                if precision == "int8":
                    build = lambda excluded, dest: export_tflite(model, example, dest, "int8", settings.layout, calib_x, float_modules=excluded, num_classes=num_classes)
                    fallback = fn_aware_quantize(build, score, quantizable_modules(model), targets_val, work / "tflite", path)
                    path = fallback.path
                else:
                    export_tflite(model, example, path, precision, settings.layout, num_classes=num_classes)
            convert_seconds = time.perf_counter() - t0
            runner = load_runner(path, threads=settings.threads)
            logits = runner.predict(x_test)
            evaluation = evaluate_logits(y_test, logits, protected, num_classes)
            evaluation["predictions"] = logits.argmax(1).tolist()
            info = artifact_info(path)
            entry = {
                "path": str(path.relative_to(run_dir)), "format": fmt, "precision": precision, "bytes": path.stat().st_size,
                "runtime": runner.runtime, "layout": runner.layout, "input_dtype": info.get("input_dtype"),
                "weights_precision": info.get("precision"), "convert_seconds": convert_seconds,
                "agreement": float(np.mean(logits.argmax(1) == torch_test_pred)), "evaluation": evaluation,
                "gate": gate_fn(baseline_test, evaluation),
            }
            if fallback is not None:
                entry["quantization"] = {"calibration_method": settings.calibration_method, "float_layers": fallback.float_layers,
                                         "float_input_layers": stem if fmt == "onnx" else [],
                                         "val_protected_fn": {str(k): v for k, v in fallback.fn.items()},
                                         "within_budget_on_val": fallback.within_budget, "note": fallback.reason,
                                         "ranking": fallback.ranking}
            entries.append(entry)
            prot = ", ".join(f"class {p['class']} FN {p['fn']}" for p in evaluation["protected"])
            log(f"{fmt} {precision}: {entry['bytes']:,} bytes, test accuracy {evaluation['accuracy']:.4f}, {prot}, agreement {entry['agreement']:.1%}")
    finally:  # half-built int8 candidates never outlive the stage
        shutil.rmtree(work, ignore_errors=True)
    return entries, calib_record
