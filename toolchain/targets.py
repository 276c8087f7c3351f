"""Device targets: profiles read from targets/*.toml and what the pipeline should produce for one.

Whether a file fits a target, and its latency estimate: toolchain.device_fit.

No torch and no tensorflow here. What is known about each format (its runtime, int8 schemes, input
layouts) and an artifact's graph (operators, MACs, weight and activation bytes) come from the
device-side registry, toolchain.runtimes.formats.

    target = load_target("raspberry-pi-4")          # a name from targets/ or a path to a user's TOML
    plan = target_export_plan(target)                # formats / precision / layout the pipeline produces

Profiles live in targets/ at the repository root (a checkout) and, when cwtool is installed as a
package, in toolchain/targets_data/ (the wheel maps targets/ there: pyproject's package-dir).
``CWTOOL_TARGETS_DIR`` adds a folder in front.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from toolchain.bundled import bundled_dirs, bundled_files
from toolchain.errors import UserError, one_line
from toolchain.input_paths import absent
from toolchain.runtimes.base import MAX_THREADS
from toolchain.runtimes.formats import DEVICE_FORMATS

try:  # Python 3.11+
    import tomllib
except ImportError:  # pragma: no cover - Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

RUNTIMES = {f.runtime: f.name for f in sorted(DEVICE_FORMATS.values(), key=lambda f: f.runtime)}  # runtime -> the format it runs
PRECISIONS = ("int8", "fp16", "fp32")
INT8_SCHEMES = {f.name: f.int8_schemes for f in DEVICE_FORMATS.values()}
LAYOUTS = ("NHWC", "NCHW")
MIB = 1024 * 1024
GMACS = (1e-6, 1e9)  # throughput of a device, 1e9 multiply-accumulates a second: from a microcontroller to a data centre
MEGABYTES = (1e-3, 1e12)

@dataclass(frozen=True)
class Target:
    """One device profile. Sizes: ram_mb / storage_mb in MiB, max_model_bytes in bytes."""

    name: str
    description: str
    runtime: str  # "litert" | "onnxruntime"
    format: str  # "tflite" | "onnx"
    precision: str  # "int8" | "fp16" | "fp32"
    int8_scheme: str  # "full-integer" (tflite); "qdq" (onnx): the int8 files cwtool writes
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
    return bundled_dirs("CWTOOL_TARGETS_DIR", "targets", "targets_data")


def target_files() -> dict[str, Path]:
    return bundled_files("CWTOOL_TARGETS_DIR", "targets", "targets_data", ".toml")


def list_targets(skipped: list[str] | None = None) -> list[Target]:
    """Every profile found; with ``skipped`` (a list), a profile that does not load is left out and its one line is
    added there instead (one user's broken file does not hide the others)."""
    found = []
    for name, path in sorted(target_files().items()):
        try:
            found.append(load_target(name))
        except UserError as exc:
            if skipped is None:
                raise
            skipped.append(str(exc))
    return found


MAX_PROFILE_BYTES = 1 << 20  # a profile is a few KB; a bigger file is not one, and is not read into memory


def _profile_text(path: Path) -> str:
    """The text of a profile file, by path or found by name."""
    from toolchain.small_files import read_small_file

    return read_small_file(path, MAX_PROFILE_BYTES, "target file", "give a .toml profile or a profile name").decode("utf-8-sig")


def load_target(name_or_path: str | Path) -> Target:
    """A profile by name (targets/<name>.toml) or from a TOML file path; one-line UserError when invalid."""
    text = str(name_or_path)
    if not text.strip():  # `cwtool targets "$TARGET"` with TARGET unset read as the folder '.'
        raise UserError("the target is empty (an unset variable?): give a profile name or a .toml path")
    path = Path(text)
    by_name = False
    if path.suffix.lower() == ".toml" or os.sep in text or "/" in text:
        if not path.exists():
            raise UserError(f"target file {path} {absent(path)}: pass a profile name ({_names()}) or a .toml path")
    else:
        files = target_files()
        if text not in files and path.is_dir():
            raise UserError(f"target '{text}' is a folder: give a profile name ({_names()}) or the path of a .toml file")
        if text not in files:
            raise UserError(f"unknown target {text!r}: use one of {_names()} or a path to your own .toml")
        path, by_name = files[text], True
    try:
        data = tomllib.loads(_profile_text(path))
    except tomllib.TOMLDecodeError as e:
        raise UserError(f"target file {path} is not valid TOML ({e}): fix the syntax") from e
    except (OSError, UnicodeDecodeError) as e:
        raise UserError(f"cannot read target file {path}: {e}") from e
    except RecursionError as e:
        raise UserError(f"target file {path} nests too deep to be a profile: fix it (see docs/TARGETS.md)") from e
    target = target_from_dict(data, source=str(path))
    if by_name and target.name != path.stem:  # found by name: reports and listings say its name
        raise UserError(f"target file {path} names itself {one_line(target.name)[:60]!r} but --target finds it as {path.stem!r}: "
                        "make its name field and its file name the same")
    return target


def _names() -> str:
    return ", ".join(sorted(target_files())) or "(none found)"


def _get(data: dict, key: str, kind, where: str, *, required: bool = True, default=None, positive: bool = False,
         within: tuple[float, float] | None = None):
    """``data[key]`` (dotted: nested tables) of ``kind``; ``within``: the range a real device's value lies in (a
    denormal throughput passes "> 0" and turns every latency estimate into inf)."""
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
    if isinstance(cur, float) and not math.isfinite(cur):
        raise UserError(f"{where}: field '{key}' must be a finite number, got {cur!r}")
    if isinstance(cur, int) and not isinstance(cur, bool) and abs(cur) > 1 << 62:
        raise UserError(f"{where}: field '{key}' is out of range ({cur})")
    if positive and not cur > 0:
        raise UserError(f"{where}: field '{key}' must be > 0, got {cur!r}")
    if not positive and isinstance(cur, (int, float)) and not isinstance(cur, bool) and cur < 0 and kind is not str:
        raise UserError(f"{where}: field '{key}' must be >= 0, got {cur!r}")
    if within is not None and not within[0] <= cur <= within[1]:
        raise UserError(f"{where}: field '{key}' is {cur!r}, outside what a device has ({within[0]:g} to {within[1]:g})")
    if isinstance(cur, str):
        cur = one_line(cur)  # printed in reports and on the console: no forged lines
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
    # bounded, and no '[...]' sets: fnmatch's translation of a pattern grows with the square of its '[' (64,000 of them in
    # a 67 KB profile kept an export busy 108 s)
    if len(value) > MAX_OPERATORS:
        raise UserError(f"{where}: field '{key}' lists {len(value):,} operators; at most {MAX_OPERATORS:,}")
    odd = next((v for v in value if len(v) > MAX_OPERATOR_CHARS or "[" in v or "]" in v), None)
    if odd is not None:
        raise UserError(f"{where}: field '{key}' holds '{one_line(odd)[:40]}'{'...' if len(odd) > 40 else ''}: an operator name or "
                        f"a pattern with * and ? (no [...] sets), at most {MAX_OPERATOR_CHARS} characters")
    return tuple(value)


MAX_OPERATORS = 1_000  # names in [operators] supported or rejected (ONNX has about 200 standard operators)
MAX_OPERATOR_CHARS = 200


PROFILE_KEYS = {"": {"name", "description", "runtime", "format", "precision", "int8_scheme", "layout", "threads",
                     "channel_multiple", "ram_mb", "storage_mb", "max_model_bytes", "runtime_overhead_mb", "device",
                     "throughput", "operators"},
                "throughput": {"fp32_gmacs", "fp16_gmacs", "int8_gmacs", "overhead_ms", "source"},
                "operators": {"supported", "rejected"}}  # [device] is free-form: informational only


def _check_keys(data: dict, where: str) -> None:
    """A misspelled optional field (channel_multiples, suported) would be a default taken in silence: refused, named."""
    import difflib

    for table, known in PROFILE_KEYS.items():
        part = data if not table else data.get(table)
        if not isinstance(part, dict):
            continue
        for key in part:
            if key not in known:
                near = difflib.get_close_matches(str(key), sorted(known), n=1)
                field_name = f"{table}.{key}" if table else str(key)
                raise UserError(f"{where}: unknown field '{one_line(field_name)[:60]}'"
                                + (f": did you mean '{near[0]}'?" if near else f": the fields are {', '.join(sorted(known))}"))


def target_from_dict(data: dict, source: str = "<dict>") -> Target:
    """Validate a parsed profile. Errors name the file and the bad field."""
    where = f"target {source}"
    num = (int, float)
    _check_keys(data, where)
    name = _get(data, "name", str, where)
    if not name.strip():
        raise UserError(f"{where}: field 'name' is empty: name the device (reports and --target use it)")
    fmt = _get(data, "format", str, where)
    runtime = _choice(_get(data, "runtime", str, where), tuple(RUNTIMES), "runtime", where)
    _choice(fmt, tuple(RUNTIMES.values()), "format", where)
    if RUNTIMES[runtime] != fmt:
        raise UserError(f"{where}: field 'format' is {fmt!r} but runtime {runtime} runs {RUNTIMES[runtime]} files")
    precision = _choice(_get(data, "precision", str, where), PRECISIONS, "precision", where)
    if (fmt, precision) == ("onnx", "fp16"):  # cwtool writes no such file: the profile would be reported as met by an fp32 one
        raise UserError(f"{where}: precision 'fp16' with format 'onnx': cwtool writes ONNX files in fp32 or int8 (fp16 is a TFLite "
                        "precision)")
    scheme = _get(data, "int8_scheme", str, where)
    if scheme not in INT8_SCHEMES[fmt]:  # a file of another layout would be reported as the profile's: refused
        raise UserError(f"{where}: field 'int8_scheme' is {scheme!r}: cwtool writes {fmt} int8 files as "
                        f"{' or '.join(repr(s) for s in INT8_SCHEMES[fmt])} only; set that")
    layout = _choice(_get(data, "layout", str, where).upper(), LAYOUTS, "layout", where)
    threads = _get(data, "threads", int, where, positive=True, within=(1, MAX_THREADS))
    fp32 = float(_get(data, "throughput.fp32_gmacs", num, where, positive=True, within=GMACS))
    supported = _ops(data, "operators.supported", where)
    rejected = _ops(data, "operators.rejected", where) or ()
    if "operators" in data and not isinstance(data["operators"], dict):
        raise UserError(f"{where}: 'operators' must be a table ([operators] with 'supported' and/or 'rejected' lists)")
    if supported is None and not rejected:  # an empty [operators] would accept every operator in silence
        raise UserError(f"{where}: missing table '[operators]' or its lists: give 'supported' and/or 'rejected' operator lists")
    device = _get(data, "device", dict, where, required=False, default={})
    def plain(v) -> bool:
        return isinstance(v, (str, int, float, bool)) and not (isinstance(v, float) and not math.isfinite(v))

    if not all(isinstance(k, str) and (plain(v) or (isinstance(v, list) and len(v) <= 64 and all(plain(i) for i in v)))
               for k, v in device.items()):
        raise UserError(f"{where}: [device] holds plain values only (text, numbers, true/false, lists of them): fix it (see docs/TARGETS.md)")
    return Target(
        name=name,
        description=_get(data, "description", str, where),
        runtime=runtime,
        format=fmt,
        precision=precision,
        int8_scheme=scheme,
        layout=layout,
        threads=threads,
        ram_mb=float(_get(data, "ram_mb", num, where, positive=True, within=MEGABYTES)),
        storage_mb=float(_get(data, "storage_mb", num, where, positive=True, within=MEGABYTES)),
        max_model_bytes=_get(data, "max_model_bytes", int, where, positive=True),
        fp32_gmacs=fp32,
        int8_gmacs=float(_get(data, "throughput.int8_gmacs", num, where, positive=True, within=GMACS)),
        fp16_gmacs=float(_get(data, "throughput.fp16_gmacs", num, where, required=False, default=fp32, positive=True, within=GMACS)),
        throughput_source=_get(data, "throughput.source", str, where),
        overhead_ms=float(_get(data, "throughput.overhead_ms", num, where, required=False, default=0.0, within=(0, 1e6))),
        runtime_overhead_mb=float(_get(data, "runtime_overhead_mb", num, where, required=False, default=0.0, within=(0, MEGABYTES[1]))),
        supported_ops=supported,
        rejected_ops=rejected,
        channel_multiple=_get(data, "channel_multiple", int, where, required=False, default=1, positive=True, within=(1, 1024)),
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
        "layout": DEVICE_FORMATS[t.format].export_layout(t.layout),
        "threads": t.threads,
        "channel_multiple": t.channel_multiple,
    }
