"""Does an exported file fit a device target? Bytes, estimated peak memory, operators, format; and the latency
estimate from MACs and the profile's throughput.

No torch and no tensorflow here: an artifact's graph (operators, MACs, weight and activation bytes) comes from
the device-side registry, toolchain.runtimes.

    verdict = fit_check(target, "model.tflite")      # bytes, estimated peak memory, operators
    ms = estimate_latency_ms(target, macs, "int8")   # an ESTIMATE from MACs and the profile's throughput
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import Any

from toolchain.errors import UserError
from toolchain.runtimes.formats import DEVICE_FORMATS
from toolchain.runtimes.graph import static_nbytes
from toolchain.targets import MIB, PRECISIONS, Target, load_target

LATENCY_NOTE = (
    "estimate: MACs / the profile's effective GMAC/s for this precision + overhead_ms; "
    "not a measurement on the device"
)
MEMORY_NOTE = (
    "estimate: weight bytes + peak of live activation tensors (graph order, batch 1, each tensor "
    "freed after its last consumer) + the profile's runtime_overhead_mb"
)


def estimate_latency_ms(target: Target, macs: int, precision: str) -> float:
    """ESTIMATED batch-1 latency on the device: MACs / effective GMAC/s (+ overhead_ms). Not a measurement."""
    if macs is None or macs < 0:
        raise UserError("a latency estimate needs the model's MACs per sample (--macs N)")
    return float(macs) / (target.gmacs(precision) * 1e9) * 1e3 + target.overhead_ms


def _op_matches(op: str, patterns) -> bool:
    return any(fnmatch.fnmatchcase(op, p) for p in patterns)


def fit_check(target: Target | str, artifact_path: str | Path, macs: int | None = None) -> dict[str, Any]:
    """Does the artifact fit the target? bytes vs max_model_bytes and storage, estimated peak memory
    vs RAM, operators vs supported/rejected, format vs runtime. ``fits`` is False with named reasons;
    ``warnings`` hold mismatches that still run (precision, layout, int8 I/O)."""
    from toolchain.runtimes import artifact_info, describe_graph

    t = target if isinstance(target, Target) else load_target(target)
    path = Path(artifact_path)
    info = artifact_info(path)
    graph = describe_graph(path)
    reasons: list[str] = []
    warnings: list[str] = []
    checks: dict[str, Any] = {}

    fmt = info["format"]
    checks["format"] = {"value": fmt, "expected": t.format, "ok": fmt == t.format}
    if fmt != t.format:
        reasons.append(f"format {fmt}: {t.name} runs {t.format} files ({t.runtime})")

    size = int(info["bytes"])
    checks["bytes"] = {"value": size, "limit": t.max_model_bytes, "ok": size <= t.max_model_bytes}
    if size > t.max_model_bytes:
        reasons.append(f"model is {size:,} bytes, over max_model_bytes {t.max_model_bytes:,}")
    storage = int(t.storage_mb * MIB)
    checks["storage"] = {"value": size, "limit": storage, "ok": size <= storage}
    if size > storage:
        reasons.append(f"model is {size / MIB:.2f} MiB, over storage_mb {t.storage_mb:g}")

    weights = graph.get("weight_bytes")
    if weights is None:
        weights = size
    act = graph.get("activation_peak_bytes")
    if act is None:  # no graph: fall back to input + output tensors
        act = static_nbytes(info.get("input_shape", []), 4) + static_nbytes(info.get("output_shape", []), 4)
    overhead = int(t.runtime_overhead_mb * MIB)
    peak = int(weights + act + overhead)
    ram = int(t.ram_mb * MIB)
    checks["memory"] = {
        "estimate_bytes": peak,
        "weight_bytes": int(weights),
        "activation_peak_bytes": int(act),
        "runtime_overhead_bytes": overhead,
        "limit": ram,
        "ok": peak <= ram,
        "method": MEMORY_NOTE,
    }
    if peak > ram:
        reasons.append(f"estimated peak memory {peak / MIB:.1f} MiB is over ram_mb {t.ram_mb:g}")

    ops = graph.get("ops")
    if ops is None:
        checks["operators"] = {"used": None, "ok": None, "note": graph.get("ops_note", "operators not read")}
        warnings.append(f"operators not checked: {graph.get('ops_note', 'not readable here')}")
    else:
        used = sorted(set(ops))
        unsupported = [o for o in used if t.supported_ops is not None and not _op_matches(o, t.supported_ops)]
        rejected = [o for o in used if _op_matches(o, t.rejected_ops)]
        bad = sorted(set(unsupported) | set(rejected))
        checks["operators"] = {"used": used, "unsupported": unsupported, "rejected": rejected, "ok": not bad}
        if bad and fmt == t.format:
            reasons.append(f"operator(s) {', '.join(bad)} not supported by {t.name} ({t.runtime})")

    precision = info.get("precision", "unknown")
    checks["precision"] = {"value": precision, "expected": t.precision, "ok": precision == t.precision}
    if precision != t.precision:
        warnings.append(f"precision {precision}, the profile asks for {t.precision}")
    layout = info.get("layout")
    device = DEVICE_FORMATS[fmt]
    if layout in device.layouts and layout != device.export_layout(t.layout):
        warnings.append(f"input layout {layout}, the profile asks for {t.layout}")
    if fmt == t.format and t.precision == "int8" and t.int8_scheme == "full-integer" and precision == "int8":
        if str(info.get("input_dtype")) not in ("int8", "uint8"):
            warnings.append(f"int8 model with {info.get('input_dtype')} input: full-integer targets expect int8 I/O")

    macs_source = "given"
    if macs is None and graph.get("macs"):
        macs, macs_source = int(graph["macs"]), "artifact graph (Conv/Gemm/MatMul/FC)"
    latency = None
    if macs is not None:
        lat_prec = precision if precision in PRECISIONS else "fp32"
        latency = {
            "estimate_ms": round(estimate_latency_ms(t, int(macs), lat_prec), 4),
            "macs": int(macs),
            "macs_source": macs_source,
            "precision": lat_prec,
            "threads": t.threads,
            "gmacs": t.gmacs(lat_prec),
            "note": LATENCY_NOTE,
            "throughput_source": t.throughput_source,
        }

    fits = not reasons
    return {
        "target": t.name,
        "artifact": str(path),
        "fits": fits,
        "verdict": "fits" if fits else "does not fit: " + "; ".join(reasons),
        "reasons": reasons,
        "warnings": warnings,
        "checks": checks,
        "estimated_latency": latency,
    }


def fit_verdicts(entries: list[dict], root: Path, profile, macs: int | None, macs_source: str) -> dict:
    """The device verdict of every file (fit_check: bytes with external data, estimated
    peak memory, operators, estimated latency from ``macs``), set as each entry's "fit"; returns the
    target's summary for report.json: fits only when every file fits, and why not."""
    for entry in entries:
        fit = fit_check(profile, root / entry["path"])  # the file's own graph first: what `cwtool bench --target` counts
        if fit["estimated_latency"] is None and macs is not None:  # a graph cwtool cannot count: the torch model's MACs
            fit = fit_check(profile, root / entry["path"], macs=macs)
            fit["estimated_latency"]["macs_source"] = macs_source
        fit["artifact"] = entry["path"]  # as the report names it, not where it was checked
        entry["fit"] = fit
    failing = [f"{e['path']}: {'; '.join(e['fit']['reasons'])}" for e in entries if not e["fit"]["fits"]]
    fits = bool(entries) and not failing
    verdict = ("fits" if fits else "does not fit: " + " | ".join(failing)) if entries else "no files to check"
    return {"name": profile.name, "description": profile.description, "profile": str(profile.path), "fits": fits,
            "verdict": verdict, "files": len(entries), "files_fitting": len(entries) - len(failing),
            "throughput_source": profile.throughput_source, "latency_note": LATENCY_NOTE, "memory_note": MEMORY_NOTE}
