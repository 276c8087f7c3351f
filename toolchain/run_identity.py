"""What names a `compress` run and how a rerun finds it: ``run_inputs`` records the inputs the run id hashes,
``earlier_sessions`` reads the run directory's manifest back and refuses another run's, ``as_recorded`` names this
command's files by the run's paths where their bytes are the same (another working directory), ``differences`` says
what else differs in flag terms, and ``version_changes`` which packages were upgraded since the run began."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import platform
from dataclasses import dataclass, field, replace
from pathlib import Path

from toolchain.config import ADDED_LATER
from toolchain.errors import UserError, one_line
from toolchain.provenance import file_sha256, folder_listing_sha256
from toolchain.rundir import RunDir, read_record


def run_inputs(request, dataset, arch_kwargs: dict, arch: str, protected: list[int]) -> dict:
    """What a run id records of a compress request's inputs (``toolchain.pipeline.CompressRequest``): a --resume with other
    files, rows or preparation is another run."""
    model_path = Path(request.model)
    inputs = {"model": {"path": str(model_path), "sha256": file_sha256(model_path)}, "data": {"spec": request.data},
              "arch": arch, "arch_kwargs": arch_kwargs, "protected": protected, "data_seed": request.data_seed,
              "label_column": request.label_column}
    inputs["data"].update(_fingerprint(request.data))  # --resume must not go on with other rows than the rounds were trained on
    code_sha256 = arch_code_sha256(arch)
    if code_sha256 is not None:  # the code that gives the weights their meaning: edited, it is another run
        inputs["arch_sha256"] = code_sha256
    if dataset.label_mapping is not None and request.class_names:  # added later: only when set, so older run ids hold
        inputs["data"]["label_mapping"] = dataset.label_mapping
    if request.image_size:
        inputs["data"]["image_size"] = list(request.image_size)
    if request.input_shape:
        inputs["data"]["input_shape"] = list(request.input_shape)
    pre = dataset.preprocessing  # added later: only when set, so older run ids hold
    for key, value in (("resize", pre.resize if request.resize else None), ("crop", pre.crop if request.resize else None),
                       ("normalize", {"mean": pre.mean, "std": pre.std} if pre.color and pre.mean else None),
                       ("color", pre.color if request.color else None),
                       ("augment", dataset.augment.to_dict() if dataset.augment else None)):
        if value:
            inputs["data"][key] = value
    for name in ("val", "test"):
        if getattr(request, name):
            inputs["data"][name] = {"path": getattr(request, name), **_fingerprint(getattr(request, name))}
    return inputs


def arch_code(arch: str) -> Path | None:
    """The file of a ``file.py:Class`` or ``module:Class`` spec's code (the module as this process imported it to build
    the model); None for a built-in name."""
    import sys

    from toolchain.models.arch import arch_file

    code = arch_file(arch)
    if code is not None:
        return code[0] if code[0].is_file() else None
    module, sep, _ = arch.rpartition(":")
    origin = getattr(sys.modules.get(module), "__file__", None) if sep else None
    return Path(origin) if isinstance(origin, str) and Path(origin).is_file() else None


def _defining_file(arch: str) -> Path | None:
    """The file the class (or factory) of a ``file.py:Class`` or ``module:Class`` spec is defined in, as imported: a
    package's ``__init__.py`` or a file that re-exports a class holds none of its code."""
    import inspect
    import sys

    from toolchain.models.arch import arch_file, user_module_name

    target, sep, attr = arch.rpartition(":")
    found = arch_file(arch)
    module = sys.modules.get(user_module_name(found[0]) if found else target) if sep else None
    try:
        source = inspect.getsourcefile(getattr(module, attr))
    except (TypeError, AttributeError):  # a built-in or C object, a partial: no file of its own
        return None
    if not source or not Path(source).is_file():
        return None
    import toolchain  # cwtool's own classes: its code is recorded as its version (a note on resume, not another run)

    source = Path(source).resolve()
    return None if source.is_relative_to(Path(toolchain.__file__).resolve().parent) else source


def _module_and_class_sha256(arch: str) -> tuple[str, str] | None:
    """(the spec's module file's sha256, and that with the class's own file where it is defined elsewhere)."""
    code = arch_code(arch)
    if code is None:
        return None
    module_digest = file_sha256(code)
    defined_in = _defining_file(arch)
    if defined_in is None or defined_in == code.resolve():
        return module_digest, module_digest
    return module_digest, hashlib.sha256(f"{module_digest}:{file_sha256(defined_in)}".encode()).hexdigest()


def module_file_sha256(arch: str) -> str | None:
    """The sha256 of a spec's module file alone: what a run begun before the class's own file was hashed recorded."""
    digests = _module_and_class_sha256(arch)
    return digests[0] if digests else None


def arch_code_sha256(arch: str) -> str | None:
    """What a run id records of a user's architecture code: its module's file, and the file its class is defined in
    where that is another (``pkg:Net`` with Net in pkg/net.py; a file that imports its class). Code that file imports
    in turn is not followed."""
    digests = _module_and_class_sha256(arch)
    return digests[1] if digests else None


def _fingerprint(spec: str) -> dict:
    """What a run id records of a data file (its sha256) or folder (its listing's); nothing for a named data set."""
    path = Path(spec)
    if path.is_file():
        return {"sha256": file_sha256(path)}
    if path.is_dir():
        return {"listing_sha256": folder_listing_sha256(path)}
    return {}


def as_recorded(inputs: dict, recorded) -> dict:
    """``inputs`` with the run's recorded path for every file whose sha256 is the recorded one: a run goes on
    from another working directory, or with its model moved, as long as the bytes are the same."""
    out = json.loads(json.dumps(inputs))
    if not isinstance(recorded, dict):
        return out

    def same(now, then, key):
        identity = lambda d: (d.get("sha256"), d.get("listing_sha256"))  # a file's bytes, a folder's listing  # noqa: E731
        return isinstance(now, dict) and isinstance(then, dict) and any(identity(now)) and identity(now) == identity(then) \
            and isinstance(then.get(key), str)

    if same(out.get("model"), recorded.get("model"), "path"):
        out["model"]["path"] = recorded["model"]["path"]
    if "arch_sha256" in out and isinstance(recorded.get("arch"), str):
        if out["arch_sha256"] != recorded.get("arch_sha256") and recorded.get("arch_sha256") is not None \
                and module_file_sha256(str(out.get("arch"))) == recorded["arch_sha256"]:
            out["arch_sha256"] = recorded["arch_sha256"]  # a run from before the class's own file was hashed: as then
        if out["arch_sha256"] == recorded.get("arch_sha256"):  # the same code by another path or from another folder:
            from toolchain.models.arch import arch_file  # its file's path as recorded, the class as given now

            then, now = arch_file(recorded["arch"]), arch_file(str(out.get("arch")))
            if then is not None and now is not None:
                out["arch"] = f"{then[0]}:{now[1]}"
        elif "arch_sha256" not in recorded and out.get("arch") == recorded["arch"]:
            del out["arch_sha256"]  # a run from before the code was hashed: known by the spec alone, as then
    data, data_then = out.get("data"), recorded.get("data")
    if same(data, data_then, "spec"):
        data["spec"] = data_then["spec"]
    for name in ("val", "test"):
        if isinstance(data_then, dict) and same(data.get(name), data_then.get(name), "path"):
            data[name]["path"] = data_then[name]["path"]
    return out


DATA_FLAGS = ("image_size", "input_shape", "resize", "crop", "normalize", "color", "augment", "label_mapping")  # run_inputs'


def differences(manifest, inputs: dict, config) -> str:
    """What differs between a run directory's manifest and this command (its inputs and ``config``, a PruneConfig), in
    flag terms: " (here --epochs 4, the run 8)". Read from a file: only plain values are shown, shortened."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("config"), dict) or not isinstance(manifest.get("inputs"), dict):
        return ""
    scalar = lambda v: isinstance(v, (str, int, float, bool, type(None)))  # noqa: E731
    plain = lambda v: scalar(v) or (isinstance(v, list) and len(v) <= 8 and all(map(scalar, v)))  # noqa: E731
    show = lambda v: one_line(str(v))[:40] if plain(v) else "?"  # noqa: E731
    then = manifest["config"]
    found = [f"--{k.replace('_', '-')} {show(v)}, the run {show(then.get(k))}" for k, v in config.to_dict().items()
             if then.get(k) != v and not (k not in then and k in ADDED_LATER and v == ADDED_LATER[k])]  # unrecorded, as then
    recorded = manifest["inputs"]
    for key, value in inputs.items():
        if recorded.get(key) != value:
            if key == "arch_sha256":
                found.append(f"the --arch code differs from the run's (sha256 {show(value)[:12]}, the run "
                             f"{show(recorded.get(key))[:12] if key in recorded else 'unknown'})")
                continue
            what = "the model file" if key == "model" else "the data" if key == "data" else key.replace("_", " ")
            if key not in ("model", "data") and plain(value) and plain(recorded.get(key)):
                found.append(f"{what} {show(value)}, the run {show(recorded.get(key))}")
                continue
            then_data = recorded.get(key) if isinstance(recorded.get(key), dict) else {}
            now_spec, then_spec = (value or {}).get("spec") if isinstance(value, dict) else None, then_data.get("spec")
            if key == "data" and scalar(now_spec) and scalar(then_spec) and now_spec != then_spec:
                tail = lambda v: (lambda t: t if len(t) <= 60 else "..." + t[-57:])(one_line(str(v)))  # noqa: E731 - a path's end names it
                found.append(f"--data {tail(now_spec)}, the run {tail(then_spec)}")
                continue
            now_data = value if isinstance(value, dict) else {}
            flagged = [f"the data's {sub.replace('_', ' ')} {show(now_data.get(sub, 'none'))}, the run {show(then_data.get(sub, 'none'))}"
                       for sub in DATA_FLAGS if key == "data" and now_data.get(sub) != then_data.get(sub)]
            if flagged:  # a flag that prepares the rows, not the folder's files
                found += flagged
                continue
            folder = key == "data" and any(isinstance(d, dict) and "listing_sha256" in d for d in (then_data, *then_data.values()))
            found.append(f"{what} differs" + (" (a folder is known by its files' names, sizes and modification times)" if folder else ""))
    return f" (here {'; '.join(found[:4])})" if found else ""


RECORDED_PACKAGES = ("torch-pruning", "onnx", "onnxruntime", "ai-edge-litert", "litert-torch", "pytorchcv")


def package_versions() -> dict:
    """cwtool's version and the sha256 of its code (one version number spans many commits), and the libraries' versions
    as installed, imported yet or not (the manifest is written before export imports its runtimes), recorded in the
    manifest and report (a resumed run says which changed)."""
    from importlib import metadata

    import numpy
    import torch

    from toolchain import __version__

    out = {"cwtool": __version__, "cwtool_source": source_sha256(), "python": platform.python_version(),
           "numpy": numpy.__version__, "torch": torch.__version__}
    # by the distributions' names: a module's __version__, which runs begun before recorded under its module's name, can
    # differ from its distribution's (torch_pruning's says 1.6.0 in 1.6.1), and the two names are never compared
    for name in RECORDED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


@functools.lru_cache(maxsize=1)
def source_sha256() -> str:
    """The first 16 hex digits of the sha256 of cwtool's own Python files, by their paths in the package and bytes."""
    import hashlib

    root = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def recorded_versions(recorded) -> dict:
    """The package versions a manifest names (a file a user can edit: kept as short text, never trusted)."""
    if not isinstance(recorded, dict):
        return {}
    return {name: one_line(str(version))[:40] for name, version in list(recorded.items())[:20] if isinstance(name, str) and len(name) <= 40}


def version_changes(recorded: dict, now: dict) -> list[str]:
    """"torch 2.12.0 -> 2.13.0" for each package whose version differs from the one a resumed run began with, and
    cwtool's code where the run began with a cwtool that recorded no hash of it (its rounds may come from other code)."""
    changes = [f"{name} {recorded[name]} -> {version}" for name, version in now.items() if name in recorded and recorded[name] != version]
    if recorded and "cwtool_source" in now and "cwtool_source" not in recorded:
        changes.append(f"cwtool's code, not recorded then -> {now['cwtool_source']}")
    return changes


@dataclass
class Sessions:
    """What the earlier sessions of a resumed run recorded (a new run: none)."""

    inputs: dict | None = None  # the run's inputs as recorded, where they are the same files named by other paths
    run_id: str | None = None
    started_with: dict = field(default_factory=dict)  # package versions when the run began
    processes: list[int] = field(default_factory=list)  # every session's number of processes
    round_identity: bool = True  # its rounds (and fine-tunings) name their run and weights (prune.round_files)
    final_identity: bool = True
    file_identity: bool = True  # its round summaries name the rewind point's and starting weights' bytes too
    threads: list[int] = field(default_factory=list)  # every session's torch threads a process (none recorded before them)
    commands: list[dict] = field(default_factory=list)  # every session's command line, folder and start (UTC)

    @property
    def began_on(self) -> int | None:
        return self.processes[0] if self.processes else None


class OtherRun(UserError):
    """A run directory that holds a run of other inputs or settings; ``hint`` names them (" (here ..., the run ...)")."""

    def __init__(self, message: str, hint: str):
        super().__init__(message)
        self.hint = hint


def earlier_sessions(run_dir: Path, inputs: dict, run_id: str, config) -> Sessions:
    """The manifest of the run in ``run_dir``, refused unless it is this run: the same inputs (by any path) and settings
    (``config``, a PruneConfig)."""
    from toolchain.config import config_hash
    from toolchain.output_paths import check_own_files

    manifest_path = RunDir(run_dir).manifest
    if not manifest_path.is_file():
        raise UserError(f"'{run_dir}' is not a cwtool run directory (no manifest.json): use another --out")
    try:
        manifest = read_record(manifest_path, "use another --out")
    except PermissionError as exc:  # the run may be whole: "use another --out" would abandon it
        raise UserError(f"cannot read '{manifest_path}' (permission denied): give this user access to the run's files, then "
                        "--resume again") from exc
    except (OSError, UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise UserError(f"'{manifest_path}' is not a readable cwtool manifest ({type(exc).__name__}: {one_line(str(exc))[:80]}): "
                        "use another --out") from exc
    moved = as_recorded(inputs, manifest.get("inputs") if isinstance(manifest, dict) else None)
    if isinstance(manifest, dict) and manifest.get("run_id") != run_id and manifest.get("run_id") == config_hash(moved, config):
        inputs, run_id = moved, manifest["run_id"]  # the same files, named by other paths (another working directory)
    if not isinstance(manifest, dict) or manifest.get("run_id") != run_id:
        unresumable, settable = _settings_added_since(manifest, config)
        if unresumable:  # no value of them gives the run's id: two refusals in a row asked for 'None'
            flags = _and(map(_flag, unresumable))
            raise OtherRun(f"'{run_dir}' holds a run made by an older cwtool, before {flags} existed: this cwtool cannot "
                           "resume it; start it again with another --out", f" (made before {flags} existed)")
        hint = differences(manifest, moved, replace(config, **{k: ADDED_LATER[k] for k in settable}))
        if settable:  # the older behaviour's value resumes it: said with whatever else differs
            fixes = _and(f"drop {_flag(k)}" if ADDED_LATER[k] is False else f"give {_flag(k)} {ADDED_LATER[k]}" for k in settable)
            hint = (f" (it was made before {_and(map(_flag, settable))} existed: {fixes} to resume it"
                    + (f"; {hint.strip()[1:-1]}" if hint else "") + ")")
        raise OtherRun(f"'{run_dir}' holds a run with other inputs or settings{hint}: give the run's own to resume it, "
                       "or use another --out", hint)
    sessions = manifest.get("processes_by_session")
    if not isinstance(sessions, list):  # a manifest from before the list: its first session's count and its last
        sessions = [manifest.get("began_on_processes", manifest.get("processes")), manifest.get("processes")]
    threads = manifest.get("threads_by_session")
    check_own_files(run_dir, "--out")  # every file in a run directory is cwtool's to replace or append to
    RunDir(run_dir).check_kinds("--out")
    return Sessions(inputs, run_id, recorded_versions(manifest.get("started_with") or manifest.get("versions")),
                    _counts(sessions),
                    manifest.get("round_identity") is True or not RunDir(run_dir).done_rounds(),
                    manifest.get("final_identity") is True or not any(RunDir(run_dir).rounds.glob("final_*.json")),
                    manifest.get("file_identity") is True or not RunDir(run_dir).done_rounds(),
                    _counts(threads if isinstance(threads, list) else []), _commands(manifest))


def _settings_added_since(manifest, config) -> tuple[list[str], list[str]]:
    """The settings a run's recorded config lacks: those no value of which gives its id (added later without a value that
    reproduces the older behaviour), and those given another value here than that one (config.ADDED_LATER)."""
    then = manifest.get("config") if isinstance(manifest, dict) else None
    if not isinstance(then, dict) or not then:
        return [], []
    missing = [k for k in config.to_dict() if k not in then]
    return ([k for k in missing if k not in ADDED_LATER],
            [k for k in missing if k in ADDED_LATER and getattr(config, k) != ADDED_LATER[k]])


def _flag(key: str) -> str:
    return f"--{key.replace('_', '-')}"


def _and(words) -> str:
    words = list(words)
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"


def changed_counts(counts: list[int]) -> list[int]:
    """Each session's count (processes, threads) where it changed from the session before: [2, 2, 1] -> [2, 1]."""
    return [n for i, n in enumerate(counts) if i == 0 or n != counts[i - 1]]


def by_session(name: str, earlier: list[int], now: int) -> dict:
    """How many processes (threads) retrained, for a report: this session's, and every session's where a resumed run
    changed the number (threads: from the first session that recorded them)."""
    sessions = [*earlier, now]
    return {name: now, **({f"{name}_by_session": sessions} if len(set(sessions)) > 1 else {})}


def working_folder() -> str | None:
    """The folder the command ran in, which its relative paths name (None: removed under it)."""
    try:
        return os.getcwd()
    except OSError:
        return None


def _commands(manifest: dict) -> list[dict]:
    """Every earlier session's command record (a manifest from before them: its last command line, as it was kept)."""
    kept = manifest.get("commands")
    if not isinstance(kept, list):
        kept = [{"argv": manifest.get("argv"), "started": manifest.get("started")}] if "argv" in manifest else []
    return [c for c in kept if isinstance(c, dict) and isinstance(c.get("argv"), list)
            and all(isinstance(a, str) for a in c["argv"])][-1000:]


def _counts(values: list) -> list[int]:
    """A manifest's per-session counts (processes, threads) that are counts: a file a user can edit."""
    return [n for n in values if isinstance(n, int) and not isinstance(n, bool) and 0 < n < 100_000][-1000:]
