"""Device targets: profiles read from targets/*.toml, fit checks and latency estimates.

No torch and no tensorflow here. The `onnx` package (optional) reads ONNX graphs; the LiteRT
interpreter (ai-edge-litert or tflite-runtime) reads TFLite op lists.

    target = load_target("raspberry-pi-4")          # a name from targets/ or a path to a user's TOML
    plan = target_export_plan(target)                # formats / precision / layout the pipeline produces
    verdict = fit_check(target, "model.tflite")      # bytes, estimated peak memory, operators
    ms = estimate_latency_ms(target, macs, "int8")   # an ESTIMATE from MACs and the profile's throughput

Profiles live in targets/ at the repository root (a checkout) and, when cwtool is installed as a
package, in toolchain/targets_data/ (the wheel maps targets/ there: pyproject's package-dir).
``CWTOOL_TARGETS_DIR`` adds a folder in front.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.errors import UserError

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

RUNTIMES = {"litert": "tflite", "onnxruntime": "onnx"}  # runtime -> the format it runs
PRECISIONS = ("int8", "fp16", "fp32")
INT8_SCHEMES = {"tflite": ("full-integer", "dynamic-range"), "onnx": ("qdq", "qoperator")}
LAYOUTS = ("NHWC", "NCHW")
MIB = 1024 * 1024

LATENCY_NOTE = (
    "estimate: MACs / the profile's effective GMAC/s for this precision + overhead_ms; "
    "not a measurement on the device"
)
MEMORY_NOTE = (
    "estimate: weight bytes + peak of live activation tensors (graph order, batch 1, each tensor "
    "freed after its last consumer) + the profile's runtime_overhead_mb"
)


@dataclass(frozen=True)
class Target:
    """One device profile. Sizes: ram_mb / storage_mb in MiB, max_model_bytes in bytes."""

    name: str
    description: str
    runtime: str  # "litert" | "onnxruntime"
    format: str  # "tflite" | "onnx"
    precision: str  # "int8" | "fp16" | "fp32"
    int8_scheme: str  # "full-integer" | "dynamic-range" (tflite); "qdq" | "qoperator" (onnx)
    layout: str  # "NHWC" | "NCHW" (input layout of image models)
    threads: int
    ram_mb: float  # memory the model process may use on the device
    storage_mb: float  # storage the artifact may take
    max_model_bytes: int  # the largest artifact the deployment accepts
    fp32_gmacs: float  # effective multiply-accumulates per second (1e9) at `threads`, fp32
    int8_gmacs: float  # ... int8
    fp16_gmacs: float  # ... fp16 (defaults to fp32: most CPU runtimes compute fp16 models in fp32)
    throughput_source: str
    overhead_ms: float = 0.0  # fixed per-inference cost added to the latency estimate
    runtime_overhead_mb: float = 0.0  # the runtime's own memory (interpreter, session, arena bookkeeping)
    supported_ops: tuple[str, ...] | None = None  # None: any operator not rejected is accepted
    rejected_ops: tuple[str, ...] = ()
    channel_multiple: int = 1  # pruning rounds each layer's channels to a multiple of this (the runtime's kernel block)
    device: dict[str, Any] = field(default_factory=dict)  # informational: cpu, cores, clock_ghz, ram_total_mb...
    path: str = ""

    def gmacs(self, precision: str) -> float:
        return {"int8": self.int8_gmacs, "fp16": self.fp16_gmacs}.get(precision, self.fp32_gmacs)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["supported_ops"] = list(self.supported_ops) if self.supported_ops is not None else None
        d["rejected_ops"] = list(self.rejected_ops)
        return d


# ---- locating and loading profiles -------------------------------------------------------------------


def target_dirs() -> list[Path]:
    """Folders searched for <name>.toml, first match wins."""
    dirs = []
    env = os.environ.get("CWTOOL_TARGETS_DIR")
    if env:
        dirs.append(Path(env))
    here = Path(__file__).resolve().parent
    dirs.append(here.parent / "targets")  # repository checkout
    dirs.append(here / "targets_data")  # an installed wheel
    return [d for d in dirs if d.is_dir()]


def target_files() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for d in target_dirs():
        for p in sorted(d.glob("*.toml")):
            found.setdefault(p.stem, p)
    return found


def list_targets() -> list[Target]:
    return [load_target(p) for _, p in sorted(target_files().items())]


def load_target(name_or_path: str | Path) -> Target:
    """A profile by name (targets/<name>.toml) or from a TOML file path; one-line UserError when invalid."""
    text = str(name_or_path)
    path = Path(text)
    if path.suffix.lower() == ".toml" or os.sep in text or "/" in text:
        if not path.is_file():
            raise UserError(f"target file {path} does not exist: pass a profile name ({_names()}) or a .toml path")
    else:
        files = target_files()
        if text not in files:
            raise UserError(f"unknown target {text!r}: use one of {_names()} or a path to your own .toml")
        path = files[text]
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"target file {path} is not valid TOML ({e}): fix the syntax") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read target file {path}: {e}") from e
    return target_from_dict(data, source=str(path))


def _names() -> str:
    return ", ".join(sorted(target_files())) or "(none found)"


def _get(data: dict, key: str, kind, where: str, *, required: bool = True, default=None, positive: bool = False):
    parts = key.split(".")
    cur: Any = data
    for p in parts:
        if not isinstance(cur, dict) or p not in cur:
            if required:
                raise UserError(f"{where}: missing field '{key}': add it (see docs/TARGETS.md)")
            return default
        cur = cur[p]
    kinds = kind if isinstance(kind, tuple) else (kind,)
    ok = isinstance(cur, kinds) and not (isinstance(cur, bool) and bool not in kinds)
    if not ok:
        want = " or ".join(k.__name__ for k in kinds)
        raise UserError(f"{where}: field '{key}' must be {want}, got {type(cur).__name__} {cur!r}")
    if positive and not cur > 0:
        raise UserError(f"{where}: field '{key}' must be > 0, got {cur!r}")
    return cur


def _choice(value: str, choices, key: str, where: str) -> str:
    if value not in choices:
        raise UserError(f"{where}: field '{key}' is {value!r}: use one of {', '.join(choices)}")
    return value


def _ops(data: dict, key: str, where: str) -> tuple[str, ...] | None:
    value = _get(data, key, list, where, required=False)
    if value is None:
        return None
    if not all(isinstance(v, str) and v for v in value):
        raise UserError(f"{where}: field '{key}' must be a list of operator names (strings)")
    return tuple(value)


def target_from_dict(data: dict, source: str = "<dict>") -> Target:
    """Validate a parsed profile. Errors name the file and the bad field."""
    where = f"target {source}"
    num = (int, float)
    name = _get(data, "name", str, where)
    fmt = _get(data, "format", str, where)
    runtime = _choice(_get(data, "runtime", str, where), tuple(RUNTIMES), "runtime", where)
    _choice(fmt, tuple(RUNTIMES.values()), "format", where)
    if RUNTIMES[runtime] != fmt:
        raise UserError(f"{where}: field 'format' is {fmt!r} but runtime {runtime} runs {RUNTIMES[runtime]} files")
    precision = _choice(_get(data, "precision", str, where), PRECISIONS, "precision", where)
    scheme = _choice(_get(data, "int8_scheme", str, where), INT8_SCHEMES[fmt], "int8_scheme", where)
    layout = _choice(_get(data, "layout", str, where).upper(), LAYOUTS, "layout", where)
    threads = _get(data, "threads", int, where, positive=True)
    fp32 = float(_get(data, "throughput.fp32_gmacs", num, where, positive=True))
    supported = _ops(data, "operators.supported", where)
    rejected = _ops(data, "operators.rejected", where) or ()
    if supported is None and not rejected and "operators" not in data:
        raise UserError(f"{where}: missing table '[operators]': give 'supported' and/or 'rejected' operator lists")
    device = _get(data, "device", dict, where, required=False, default={})
    return Target(
        name=name,
        description=_get(data, "description", str, where),
        runtime=runtime,
        format=fmt,
        precision=precision,
        int8_scheme=scheme,
        layout=layout,
        threads=threads,
        ram_mb=float(_get(data, "ram_mb", num, where, positive=True)),
        storage_mb=float(_get(data, "storage_mb", num, where, positive=True)),
        max_model_bytes=_get(data, "max_model_bytes", int, where, positive=True),
        fp32_gmacs=fp32,
        int8_gmacs=float(_get(data, "throughput.int8_gmacs", num, where, positive=True)),
        fp16_gmacs=float(_get(data, "throughput.fp16_gmacs", num, where, required=False, default=fp32, positive=True)),
        throughput_source=_get(data, "throughput.source", str, where),
        overhead_ms=float(_get(data, "throughput.overhead_ms", num, where, required=False, default=0.0)),
        runtime_overhead_mb=float(_get(data, "runtime_overhead_mb", num, where, required=False, default=0.0)),
        supported_ops=supported,
        rejected_ops=rejected,
        channel_multiple=_get(data, "channel_multiple", int, where, required=False, default=1, positive=True),
        device=dict(device),
        path=source,
    )


# ---- what the pipeline should produce ------------------------------------------------------------------


def target_export_plan(target: Target | str) -> dict[str, Any]:
    """Formats, precision, int8 scheme, layout and threads the compress pipeline should produce for a target."""
    t = target if isinstance(target, Target) else load_target(target)
    return {
        "target": t.name,
        "formats": [t.format],
        "runtime": t.runtime,
        "precision": t.precision,
        "int8_scheme": t.int8_scheme if t.precision == "int8" else None,
        "layout": t.layout if t.format == "tflite" else "NCHW",
        "threads": t.threads,
        "channel_multiple": t.channel_multiple,
    }


# ---- reading an artifact's graph --------------------------------------------------------------------------


def _nbytes(shape, itemsize: int) -> int:
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) and d > 0 else 1  # dynamic dims (batch) count as 1
    return n * itemsize


def _activation_peak(order: list[tuple[list[str], list[str]]], sizes: dict, inputs, outputs) -> int:
    """Peak of live activation bytes running ops in order; a tensor lives from its producer
    (or the start, for graph inputs) until its last consumer (or the end, for graph outputs)."""
    last_use: dict = {}
    for i, (ins, _) in enumerate(order):
        for t in ins:
            if t in sizes:
                last_use[t] = i
    for t in outputs:
        last_use[t] = len(order)
    live = {t: sizes.get(t, 0) for t in inputs}
    peak = sum(live.values())
    for i, (ins, outs) in enumerate(order):
        for t in outs:
            if t in sizes:
                live[t] = sizes[t]
        peak = max(peak, sum(live.values()))
        for t in list(live):
            if last_use.get(t, -1) <= i and t not in outputs:
                del live[t]
    return int(peak)


def _onnx_graph(path: Path) -> dict[str, Any]:
    try:
        import numpy as np
        import onnx
        from onnx import helper, numpy_helper, shape_inference
    except ImportError:
        return {"ops": None, "ops_note": "the onnx package is not installed: operators and MACs not read"}
    from toolchain.runtimes.base import runtime_errors

    with runtime_errors(path, "read the graph of"):  # the file is untrusted: a broken protobuf is bad input
        model = onnx.load(str(path), load_external_data=False)
    try:
        model = shape_inference.infer_shapes(model)
    except Exception:  # noqa: BLE001 - keep what we have
        pass
    g = model.graph
    with runtime_errors(path, "read the weights of"):
        consts = {i.name: numpy_helper.to_array(i) for i in g.initializer if not i.external_data}
    for n in g.node:  # Constant nodes hold weights too
        if n.op_type == "Constant" and n.attribute:
            try:
                consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)
            except Exception:  # noqa: BLE001
                pass
    dq = {n.output[0]: n.input[0] for n in g.node if n.op_type == "DequantizeLinear" and n.input and n.output}
    shapes: dict[str, list] = {}
    sizes: dict[str, int] = {}
    for vi in list(g.input) + list(g.value_info) + list(g.output):
        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in tt.shape.dim]
        shapes[vi.name] = dims
        try:
            item = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type)).itemsize
        except Exception:  # noqa: BLE001
            item = 4
        if vi.name not in consts:
            sizes[vi.name] = _nbytes(dims, item)
    ops, macs = [], 0
    for n in g.node:
        if n.op_type == "Constant":
            continue
        ops.append(n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}")
        out = shapes.get(n.output[0]) if n.output else None
        w = _onnx_weight(n, consts, dq)
        if out is None or w is None:
            continue
        out_n = _nbytes(out, 1)
        if n.op_type in ("Conv", "QLinearConv", "ConvInteger") and w.ndim >= 3:
            macs += out_n * int(np.prod(w.shape[1:]))
        elif n.op_type in ("Gemm", "MatMul", "QLinearMatMul", "MatMulInteger") and w.ndim == 2:
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            macs += out_n * int(w.shape[1] if trans_b else w.shape[0])
    order = [([i for i in n.input if i], [o for o in n.output if o]) for n in g.node if n.op_type != "Constant"]
    init_names = set(consts)
    inputs = [i.name for i in g.input if i.name not in init_names]
    weight_bytes = int(sum(a.nbytes for a in consts.values()))
    return {
        "ops": ops,
        "macs": int(macs),
        "weight_bytes": weight_bytes,
        "activation_peak_bytes": _activation_peak(order, sizes, inputs, [o.name for o in g.output]),
    }


def _onnx_weight(node, consts, dq):
    """The constant weight of a Conv/Gemm/MatMul, looking through a DequantizeLinear (QDQ graphs)."""
    idx = 3 if node.op_type in ("QLinearConv", "QLinearMatMul") else 1
    if len(node.input) <= idx:
        return None
    name = node.input[idx]
    return consts.get(name, consts.get(dq.get(name, "")))


def _tflite_graph(path: Path) -> dict[str, Any]:
    import numpy as np

    from toolchain.runtimes.base import check_tensor_bytes, runtime_errors
    from toolchain.runtimes.litert import tensor_sizes, interpreter_class

    cls, _ = interpreter_class()
    try:  # without the default XNNPACK delegate, so the op list shows builtin ops, not DELEGATE
        from ai_edge_litert.interpreter import OpResolverType

        interp = cls(model_path=str(path), experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    except Exception:  # noqa: BLE001 - another interpreter, or no such option
        try:
            interp = cls(model_path=str(path))
        except Exception as e:  # noqa: BLE001
            raise UserError(f"cannot load TFLite artifact {path}: {str(e).splitlines()[0][:200]}; re-export it") from e
    if not hasattr(interp, "_get_ops_details"):
        return {"ops": None, "ops_note": "this LiteRT interpreter does not list operators"}
    with runtime_errors(path, "read the operators of"):  # native calls on an untrusted file
        details = interp._get_ops_details()
        before = interp.get_tensor_details()
    check_tensor_bytes(tensor_sizes(before)[1], path)  # before allocating: a corrupt shape can ask for 17 GB
    with runtime_errors(path, "allocate the tensors of"):
        interp.allocate_tensors()
        tensors = {d["index"]: d for d in interp.get_tensor_details()}
        graph_inputs = [int(d["index"]) for d in interp.get_input_details()]
        graph_outputs = [int(d["index"]) for d in interp.get_output_details()]
    produced = {int(o) for op in details for o in op["outputs"]}

    def size(i):
        d = tensors.get(i)
        return 0 if d is None else _nbytes([int(s) for s in d["shape"]], np.dtype(d["dtype"]).itemsize)

    consumed = {int(i) for op in details for i in op["inputs"] if int(i) >= 0}
    weights = [i for i in consumed if i not in produced and i not in graph_inputs]
    sizes = {i: size(i) for i in (produced | set(graph_inputs))}
    ops, macs = [], 0
    for op in details:
        name = op["op_name"]
        if name == "DELEGATE":
            continue
        ops.append(name)
        ins = [int(i) for i in op["inputs"]]
        outs = [int(o) for o in op["outputs"]]
        if len(ins) < 2 or not outs or outs[0] not in tensors or ins[1] not in tensors:
            continue
        out_n = _nbytes([int(s) for s in tensors[outs[0]]["shape"]], 1)
        w = [int(s) for s in tensors[ins[1]]["shape"]]
        if name == "CONV_2D" and len(w) == 4:  # weights (O, kh, kw, I)
            macs += out_n * w[1] * w[2] * w[3]
        elif name == "DEPTHWISE_CONV_2D" and len(w) == 4:  # weights (1, kh, kw, O)
            macs += out_n * w[1] * w[2]
        elif name == "FULLY_CONNECTED" and len(w) == 2:  # weights (O, I)
            macs += out_n * w[1]
        elif name == "TRANSPOSE_CONV" and len(ins) >= 3 and ins[1] in tensors:
            w = [int(s) for s in tensors[ins[1]]["shape"]]
            inp = tensors.get(ins[2])
            if inp is not None and len(w) == 4:
                macs += _nbytes([int(s) for s in inp["shape"]], 1) * w[0] * w[1] * w[2]
    order = [([int(i) for i in op["inputs"] if int(i) >= 0], [int(o) for o in op["outputs"]]) for op in details if op["op_name"] != "DELEGATE"]
    return {
        "ops": ops,
        "macs": int(macs),
        "weight_bytes": int(sum(size(i) for i in weights)),
        "activation_peak_bytes": _activation_peak(order, sizes, graph_inputs, graph_outputs),
    }


def analyze_artifact(path: str | Path) -> dict[str, Any]:
    """Operators used (in graph order), MACs per sample (Conv/Gemm/MatMul/FC only), weight bytes and
    the peak of live activation bytes at batch 1. ``ops`` is None when nothing here can read them."""
    from toolchain.runtimes import FORMATS
    from toolchain.runtimes.base import check_artifact_file

    path = check_artifact_file(path, tuple(FORMATS))
    fmt = FORMATS[path.suffix.lower()]
    if fmt == "onnx":
        info = _onnx_graph(path)
    else:
        info = _tflite_graph(path)
    info["format"] = fmt
    return info


# ---- estimates and the fit check --------------------------------------------------------------------------


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
    from toolchain.runtimes import artifact_info

    t = target if isinstance(target, Target) else load_target(target)
    path = Path(artifact_path)
    info = artifact_info(path)
    graph = analyze_artifact(path)
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
        act = _nbytes(info.get("input_shape", []), 4) + _nbytes(info.get("output_shape", []), 4)
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
    if fmt == "tflite" and layout in ("NCHW", "NHWC") and layout != t.layout:
        warnings.append(f"input layout {layout}, the profile asks for {t.layout}")
    if fmt == "tflite" and t.precision == "int8" and t.int8_scheme == "full-integer" and precision == "int8":
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
