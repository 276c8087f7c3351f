"""Load a user's model without running code they did not ask to run.

What runs is cwtool's own code, the user's own ``--arch`` code, and, only under ``--trust-model``,
code a file brings with it. A file is data: its bytes choose weights, never a program.

Accepted files, in the order they are recognised:
- a TorchScript archive (``torch.jit.save``): it carries its own program (which can read and write
  files), so it loads only with ``--trust-model``;
- cwtool's own checkpoint: a dict naming the architecture, its kwargs, an optional channel plan
  (for pruned models) and the state_dict. The name it records is data, not an instruction: a
  built-in architecture is rebuilt by name; anything else (``module:Class``, ``file.py:Class``) only
  when the user names the same architecture with ``--arch`` (or passes ``--trust-model``);
- a bare state_dict, rebuilt with ``--arch`` (+ ``--arch-kwargs``);
- a whole pickled ``nn.Module``: ``torch.load(weights_only=True)`` with exactly torch's own
  allow-list plus torch.nn's layer classes and the nn.Module classes defined in the ``--arch``
  module;
- any other pickle only with ``--trust-model`` (it can run arbitrary code).
Legacy (pre-zip) files load too, GPU storages mapped to the CPU.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import math
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.limits import check_fits, memory_cap
from toolchain.models import registry

CHECKPOINT_FORMAT = "cwtool.model/1"
LOAD_HEADROOM = 256 << 20  # memory reading a model file may take beyond twice its size
MAX_INPUT_ELEMENTS = 64 * 1024 * 1024  # per sample: far beyond any edge classifier's input


@dataclass
class LoadedModel:
    """A model ready for inference, plus what is needed to rebuild or save it again."""

    module: nn.Module
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    channel_plan: dict | None = None
    input_shape: list[int] | None = None
    kind: str = "state_dict"  # torchscript | cwtool | state_dict | pickle
    extra: dict = field(default_factory=dict)  # a cwtool checkpoint's extra record (e.g. "data": what trained it)


def resolve_arch(spec: str):
    """``name`` (built-in), ``module:Class`` or ``path/to/file.py:Class`` -> the class/factory.

    Only ever called with a spec the user typed (or a built-in name): importing it runs code."""
    if registry.is_registered(spec):
        return registry.get(spec)
    if ":" not in spec:
        raise UserError(
            f"unknown --arch '{spec}': give a built-in ({', '.join(registry.names())}), "
            "module:Class, or path/to/file.py:Class"
        )
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        module = _import_file(target)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as exc:  # the user's module failed to import: say why, in one line
            raise UserError(f"--arch '{spec}': cannot import module '{target}' ({type(exc).__name__}: {exc})") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise UserError(f"--arch '{spec}': '{target}' has no attribute '{attr}'")
    if not callable(obj):
        raise UserError(f"--arch '{spec}': '{attr}' is not a class or factory")
    return obj


def _import_file(path: str):
    file = Path(path)
    if not file.is_file():
        raise UserError(f"--arch: file '{path}' does not exist")
    name = f"cwtool_user_arch_{file.stem}"
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickles and dataclasses look classes up by module name
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UserError(f"--arch: importing '{path}' failed ({type(exc).__name__}: {exc})") from exc
    return module


def build_arch(spec: str, kwargs: dict | None = None) -> nn.Module:
    factory = resolve_arch(spec)
    try:
        model = factory(**(kwargs or {}))
    except UserError:
        raise
    except Exception as exc:  # the kwargs come from the user or a file: a constructor that refuses them is bad input
        raise UserError(f"--arch '{spec}' rejected --arch-kwargs {json.dumps(kwargs or {})[:200]}: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"--arch '{spec}' did not build a torch.nn.Module (got {type(model).__name__})")
    return model


def load_model(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    trust_model: bool = False,
    input_shape: tuple[int, ...] | None = None,
) -> LoadedModel:
    """``input_shape`` (one sample, when the caller knows the data): a cwtool checkpoint recorded for other
    inputs is refused before anything is built for it."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"model '{path}' is a folder: give the model file")
    if not path.is_file():
        raise UserError(f"model file '{path}' does not exist")
    _check_archive_size(path)
    if _is_torchscript(path):
        if not trust_model:
            raise UserError(
                f"'{path}' is a TorchScript archive: it carries its own program, which can read and write files. "
                "Pass --trust-model if you trust its source, or give a state_dict with --arch"
            )
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UserError(f"cannot load TorchScript archive '{path}': {exc}") from exc
        return LoadedModel(module.eval(), kind="torchscript")

    obj = _load_pickle(path, arch, trust_model)
    if isinstance(obj, nn.Module):
        if not trust_model:
            _check_module_tree(obj, path)
        return LoadedModel(obj.eval(), arch=arch, arch_kwargs=arch_kwargs or {}, kind="pickle")
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return _from_cwtool_checkpoint(obj, path, arch, arch_kwargs, trust_model, input_shape)
    if isinstance(obj, dict):
        state = _find_state_dict(obj)
        if state is None:
            keys = ", ".join(str(k)[:40] for k in list(obj)[:5])
            raise UserError(f"'{path}' holds a dict that is not a state_dict (keys: {keys})")
        if arch is None:
            raise UserError(
                f"'{path}' is a state_dict: pass --arch module:Class or path/to/file.py:Class "
                f"(built-in: {', '.join(registry.names())}) so cwtool can rebuild the model"
            )
        model = build_arch(arch, arch_kwargs)
        _load_state(model, state, arch)
        return LoadedModel(model.eval(), arch=arch, arch_kwargs=arch_kwargs or {}, kind="state_dict")
    raise UserError(f"'{path}' holds a {type(obj).__name__}, not a model or state_dict")


def _check_archive_size(path: Path) -> None:
    """A zip checkpoint declares its members' sizes: refuse one that would not fit in memory
    (a compressed member can claim far more than the file holds)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            total = sum(max(0, i.file_size) for i in zf.infolist())
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"cannot read model file '{path}': a broken zip archive ({exc})") from exc
    check_fits(total, f"model file '{path}' (unpacked)", "it is not a model cwtool can load here")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/", 2)[1:2] == ["code"] for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _load_pickle(path: Path, arch: str | None, trust_model: bool):
    """The file's object through torch's weights-only unpickler and a narrow allow-list; a full
    unpickle only under --trust-model, and only after the narrow one could not read it."""
    try:
        return _load_restricted(path, arch)
    except UserError:
        if not trust_model:
            raise
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except ModuleNotFoundError as exc:
        raise UserError(
            f"'{path}' is a pickle of a class from module '{exc.name}', which cannot be imported here: "
            f"pass --arch path/to/{exc.name}.py:ClassName (the file that defines it)"
        ) from exc
    except Exception as exc:
        raise UserError(f"cannot read model file '{path}': {type(exc).__name__}: {exc}") from exc


def _load_restricted(path: Path, arch: str | None):
    arch_classes = _arch_classes(arch)
    if zipfile.is_zipfile(path):
        try:
            needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        except Exception as exc:
            raise UserError(f"cannot read model file '{path}': not a PyTorch checkpoint ({type(exc).__name__})") from exc
        allowed = _allow_list(needed, arch_classes, path)
    else:  # the legacy (pre-1.6) format names its globals only while it is read
        allowed = [*_torch_layers(), *arch_classes]
    standins = {_qualname(obj): _standin(obj) for obj in (a[0] if isinstance(a, tuple) else a for a in allowed)}
    allowed = [(standins[_qualname(a[0] if isinstance(a, tuple) else a)], a[1] if isinstance(a, tuple) else _qualname(a)) for a in allowed]
    try:
        with torch.serialization.safe_globals(allowed), memory_cap(LOAD_HEADROOM + 2 * path.stat().st_size):
            return _restore_classes(torch.load(path, map_location="cpu", weights_only=True))
    except MemoryError as exc:
        raise UserError(f"model file '{path}' asks for more memory than its size explains: it is not a model cwtool loads") from exc
    except Exception as exc:  # the unpickler read untrusted bytes: whatever it raises is the file's fault
        detail = " ".join(str(exc).split())
        if "persistent_load" in detail:  # a whole module in the legacy format carries its class's source
            raise UserError(
                f"'{path}' is a whole model pickled in PyTorch's legacy format, which only a full unpickle reads: "
                "save its state_dict and pass --arch, or pass --trust-model if you trust this file (it can run code)"
            ) from exc
        hint = ""
        if "Unsupported global" in detail or "WeightsUnpickler" in detail:
            detail = detail.split("Unsupported global:")[-1].split(". ")[0].strip() if "Unsupported global" in detail else ""
            hint = (": it names code cwtool does not run from a file"
                    + (f" ({detail})" if detail else "")
                    + "; pass --arch with the module that defines the model, or --trust-model if you trust this file (it can run code)")
            raise UserError(f"'{path}' is a pickled model{hint}") from exc
        raise UserError(f"cannot read model file '{path}': not a PyTorch checkpoint ({type(exc).__name__}: {detail[:200]})") from exc


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class _StandIn:
    """Marks the stand-in classes a pickle is read with (see `_standin`)."""


def _refuse_construction(self, *args, **kwargs):
    raise pickle.UnpicklingError(f"the file calls the constructor of {type(self).__mro__[2].__name__}: a model file stores objects, it does not build them")


def _standin(cls: type) -> type:
    """A subclass of ``cls`` whose constructor refuses: a pickle stores a module as "new object + state"
    (NEWOBJ, BUILD), never as a constructor call; a REDUCE with arguments from the file (an
    nn.Linear(16000, 16000) in a 1 KB file) would run the constructor. The objects are given their real
    class back after loading (`_restore_classes`)."""
    return type(cls.__name__, (_StandIn, cls), {"__init__": _refuse_construction, "__module__": cls.__module__, "__qualname__": cls.__qualname__})


def _restore_classes(obj):
    if isinstance(obj, nn.Module):
        for m in obj.modules():
            if isinstance(m, _StandIn):
                m.__class__ = type(m).__mro__[2]
    elif isinstance(obj, dict):
        for v in obj.values():
            _restore_classes(v)
    return obj


def _check_module_tree(model: nn.Module, path: Path) -> None:
    """A pickle sets a module's attributes directly: every child must be a module, every parameter and buffer
    a tensor, no hooks, no instance attribute in place of a method (a "forward" set by the file)."""
    def bad(what: str) -> UserError:
        return UserError(f"'{path}' is a pickled model with {what}: save its state_dict and pass --arch, or --trust-model if you trust it")

    for name, m in model.named_modules():
        where = name or "the model"
        state = vars(m)
        children = state.get("_modules", {})
        if not isinstance(children, dict) or not all(c is None or isinstance(c, nn.Module) for c in children.values()):
            raise bad(f"a child of {where} that is not a module")
        for kind in ("_parameters", "_buffers"):
            values = state.get(kind, {})
            if not isinstance(values, dict) or not all(v is None or isinstance(v, torch.Tensor) for v in values.values()):
                raise bad(f"{kind[1:]} of {where} that are not tensors")
        hooks = [k for k, v in state.items() if "hook" in k and v]
        if hooks:
            raise bad(f"hooks on {where} ({', '.join(hooks[:2])})")
        shadowed = [k for k in state if not k.startswith("_") and callable(getattr(type(m), k, None)) and k not in ("training",)]
        if shadowed:
            raise bad(f"{', '.join(shadowed[:2])} of {where} replaced by the file")


def _torch_layers() -> list[type]:
    """torch.nn's own layer classes (read through stand-ins that refuse construction)."""
    import torch.nn.modules as layers

    found = []
    for name in getattr(layers, "__all__", []):
        obj = getattr(layers, name, None)
        if inspect.isclass(obj) and issubclass(obj, nn.Module):
            found.append(obj)
    return found


def _torch_layer(qualname: str):
    """The torch.nn layer class a pickle names, or None (functions and other torch objects are refused:
    some of them compile or execute source text)."""
    module_name, _, attr = qualname.rpartition(".")
    if not module_name.startswith("torch.nn."):
        return None
    try:
        obj = getattr(importlib.import_module(module_name), attr, None)
    except Exception:
        return None
    if inspect.isclass(obj) and issubclass(obj, nn.Module) and obj.__module__ == module_name:
        return obj
    return None


def _arch_classes(arch: str | None) -> list:
    """(class, qualname) pairs a pickle of the user's own --arch module may name: the nn.Module classes
    defined in that module, under its import name, __main__ (saved from a script) or the file's stem."""
    if arch is None:
        return []
    factory = resolve_arch(arch)
    module = sys.modules.get(getattr(factory, "__module__", ""), None)
    if module is None:
        return []
    prefixes = {module.__name__, "__main__"}
    found = _arch_file(arch)
    if found:
        prefixes.add(found[0].stem)
    pairs = []
    for name, cls in inspect.getmembers(module, inspect.isclass):
        if cls.__module__ == module.__name__ and issubclass(cls, nn.Module):
            pairs += [(cls, f"{prefix}.{name}") for prefix in sorted(prefixes)]
    return pairs


def _allow_list(needed: list[str], arch_classes: list, path: Path) -> list:
    """Map every global the pickle names beyond torch's own allow-list to a trusted class, or refuse."""
    by_name = {qualname: cls for cls, qualname in arch_classes}
    allowed, refused = [], []
    for qualname in needed:
        layer = _torch_layer(qualname)
        if layer is not None:
            allowed.append(layer)
        elif qualname in by_name:
            allowed.append((by_name[qualname], qualname))
        else:
            refused.append(qualname)
    if refused:
        hint = "pass --arch with the module that defines the model, or --trust-model if you trust this file (it can run code)"
        raise UserError(f"'{path}' is a pickled model that names code cwtool does not run from a file ({', '.join(refused[:3])}): {hint}")
    return allowed


def _find_state_dict(obj: dict) -> dict | None:
    if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        return obj
    for key in ("state_dict", "model_state_dict", "model"):
        inner = obj.get(key)
        if isinstance(inner, dict) and inner and all(isinstance(v, torch.Tensor) for v in inner.values()):
            return inner
    return None


def _load_state(model: nn.Module, state: dict, arch: str) -> None:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    wrong = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {', '.join(missing[:3])}")
        if unexpected:
            parts.append(f"unexpected {', '.join(unexpected[:3])}")
        if wrong:
            k = wrong[0]
            parts.append(f"shape of {k} is {tuple(state[k].shape)} in the file, {tuple(own[k].shape)} in the arch")
        raise UserError(
            f"the weights do not match --arch '{arch}' ({'; '.join(parts)}): check --arch and --arch-kwargs"
        )
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a complex or string-typed tensor in the file
        raise UserError(f"the weights do not load into --arch '{arch}' ({' '.join(str(exc).split())[:160]})") from exc


def _arch_file(spec: str) -> tuple[Path, str] | None:
    target, sep, attr = spec.rpartition(":")
    return (Path(target), attr) if sep and target.endswith(".py") else None


def _absolute_arch(spec: str) -> str:
    """``file.py:Class`` with the file's absolute path, so a checkpoint names it from any folder."""
    found = _arch_file(spec)
    return f"{found[0].absolute()}:{found[1]}" if found else spec


def _stored_arch(spec: str, checkpoint: Path) -> str:
    """The checkpoint's ``file.py:Class``; where that file is gone, the same file name beside the
    checkpoint (the two were moved together). Only under --trust-model: it runs the file's code."""
    found = _arch_file(spec)
    if found and not found[0].is_file():
        beside = checkpoint.parent / found[0].name
        if beside.is_file():
            return f"{beside}:{found[1]}"
    return spec


def _same_arch(given: str, stored: str) -> bool:
    """--arch names the checkpoint's architecture: the same spelling, the same file, or a file of the
    same name and class (the checkpoint and its code were moved together)."""
    if _absolute_arch(given) == _absolute_arch(stored):
        return True
    a, b = _arch_file(given), _arch_file(stored)
    return bool(a and b and a[0].name == b[0].name and a[1] == b[1])


def _checkpoint_arch(stored: str, path: Path, arch: str | None, arch_kwargs: dict | None, stored_kwargs: dict,
                     trust_model: bool) -> str:
    """The architecture spec to build. The checkpoint's record is data: it picks a built-in by name,
    but code (a module or a file) runs only when the user names it with --arch or passes --trust-model."""
    if arch_kwargs and dict(arch_kwargs) != stored_kwargs:
        raise UserError(f"'{path}' is a cwtool checkpoint built with --arch-kwargs {json.dumps(stored_kwargs)}: drop --arch-kwargs")
    if arch is not None:
        if not _same_arch(arch, stored):
            raise UserError(f"'{path}' is a cwtool checkpoint of --arch '{stored}', not '{arch}': drop --arch")
        return arch if not registry.is_registered(stored) else stored
    if registry.is_registered(stored):
        return stored
    if trust_model:
        return _stored_arch(stored, path)
    found = _arch_file(stored)
    named = f"path/to/{found[0].name}:{found[1]}" if found else stored
    raise UserError(
        f"'{path}' records the architecture '{stored}', which is code: cwtool runs it only when you name it. "
        f"Pass --arch {named} (the code you trust), or --trust-model"
    )


def _json_like(value, depth: int = 0) -> bool:
    if depth > 8:
        return False
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return len(value) <= 10_000 and all(_json_like(v, depth + 1) for v in value)
    if isinstance(value, dict):
        return len(value) <= 10_000 and all(isinstance(k, str) and _json_like(v, depth + 1) for k, v in value.items())
    return False


def _checked_checkpoint(obj: dict, path: Path) -> dict:
    """A cwtool checkpoint's fields, each of the type and size cwtool writes, or a UserError naming the first
    that is not (the file is untrusted: a wrong type must not reach code that assumes the right one)."""
    def bad(what: str) -> UserError:
        return UserError(f"'{path}' is a damaged cwtool checkpoint ({what}): re-create it with cwtool train or compress")

    arch = obj.get("arch")
    if not isinstance(arch, str) or not arch.strip() or len(arch) > 4096:
        raise bad("no architecture name")
    kwargs = obj.get("arch_kwargs") or {}
    if not isinstance(kwargs, dict) or not _json_like(kwargs):
        raise bad("arch_kwargs is not a JSON object")
    shape = obj.get("input_shape")
    if (not isinstance(shape, (list, tuple)) or not 1 <= len(shape) <= 4
            or not all(isinstance(d, int) and not isinstance(d, bool) and 1 <= d <= 1 << 20 for d in shape)
            or math.prod(shape) > MAX_INPUT_ELEMENTS):
        raise bad(f"input_shape {str(shape)[:60]} is not 1-4 positive sizes")
    plan = obj.get("channel_plan") or {}
    if not isinstance(plan, dict) or not all(
            isinstance(k, str) and isinstance(v, (list, tuple)) and len(v) <= 1 << 20
            and all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for i in v) for k, v in plan.items()):
        raise bad("channel_plan is not a map of layer names to channel indices")
    state = obj.get("state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise bad("no state_dict of named tensors")
    extra = obj.get("extra") or {}
    if not isinstance(extra, dict):
        raise bad("extra is not a dict")
    return {"arch": arch, "arch_kwargs": dict(kwargs), "input_shape": [int(d) for d in shape],
            "channel_plan": {k: [int(i) for i in v] for k, v in plan.items()}, "state_dict": state, "extra": extra}


def load_weights(path: str | Path):
    """Tensors cwtool saved itself (a run's rounds): read like any file, weights only, bounded in memory."""
    path = Path(path)
    with memory_cap(LOAD_HEADROOM + 2 * path.stat().st_size):
        return torch.load(path, map_location="cpu", weights_only=True)


def is_cwtool_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a cwtool checkpoint (read without running code from the file)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _check_build_size(spec: str, kwargs: dict, path: Path) -> None:
    """Build the architecture on the meta device first: kwargs from a file (a width of 10**9) must not
    allocate more than the machine has before the weights are compared."""
    try:
        with torch.device("meta"):
            model = build_arch(spec, kwargs)
    except UserError:
        raise
    except Exception:  # code that cannot run on meta: built for real below, where errors surface
        return
    need = sum(p.numel() * p.element_size() for p in model.parameters())
    check_fits(need, f"'{path}' (--arch '{spec}' with {json.dumps(kwargs)[:120]})", "check the checkpoint's arch_kwargs")


def _from_cwtool_checkpoint(obj: dict, path: Path, arch: str | None, arch_kwargs: dict | None, trust_model: bool,
                            expected_shape: tuple[int, ...] | None = None) -> LoadedModel:
    ckpt = _checked_checkpoint(obj, path)
    if expected_shape is not None and tuple(ckpt["input_shape"]) != tuple(expected_shape):
        raise UserError(f"'{path}' was made for samples of shape {tuple(ckpt['input_shape'])}, the data's are {tuple(expected_shape)}: "
                        "give the data it was trained on")
    kwargs = ckpt["arch_kwargs"]
    spec = _checkpoint_arch(ckpt["arch"], path, arch, arch_kwargs, kwargs, trust_model)
    _check_build_size(spec, kwargs, path)
    model = build_arch(spec, kwargs)
    plan, input_shape = ckpt["channel_plan"] or None, ckpt["input_shape"]
    if plan:
        from toolchain.prune.shrink import shrink

        example = torch.zeros(1, *input_shape)
        try:
            with memory_cap(LOAD_HEADROOM + 64 * sum(t.numel() * t.element_size() for t in ckpt["state_dict"].values())):
                model = shrink(model.eval(), plan, example)
        except MemoryError as exc:
            raise UserError(f"'{path}': its input shape {tuple(input_shape)} asks for more memory than its model explains") from exc
        except (ValueError, IndexError, KeyError, TypeError, RuntimeError) as exc:
            raise UserError(f"'{path}': its channel plan does not fit --arch '{spec}' ({' '.join(str(exc).split())[:160]})") from exc
    _load_state(model, ckpt["state_dict"], spec)
    return LoadedModel(model.eval(), arch=spec, arch_kwargs=kwargs, channel_plan=plan, input_shape=input_shape, kind="cwtool",
                       extra=ckpt["extra"])


def save_checkpoint(
    path: str | Path,
    model: nn.Module,
    arch: str,
    arch_kwargs: dict | None,
    input_shape,
    channel_plan: dict | None = None,
    extra: dict | None = None,
) -> Path:
    """Save in cwtool's format: loadable with weights_only (no code in the file), rebuildable by name."""
    from toolchain.io import atomic_write_bytes
    import io

    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": _absolute_arch(arch),
        "arch_kwargs": dict(arch_kwargs or {}),
        "input_shape": [int(d) for d in input_shape],
        "channel_plan": {k: [int(i) for i in v] for k, v in (channel_plan or {}).items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())
