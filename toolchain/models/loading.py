"""Load a user's model without running code they did not ask to run.

Accepted files, in the order they are recognised:
- a TorchScript archive (``torch.jit.save``), for evaluation;
- cwtool's own checkpoint: a dict naming the architecture, its kwargs, an optional channel plan
  (for pruned models) and the state_dict -- plain tensors and strings, loaded with weights_only;
- a bare state_dict, rebuilt with ``--arch`` (+ ``--arch-kwargs``);
- a whole pickled ``nn.Module``, loaded with ``weights_only=True`` where every class the pickle
  names is torch's own or comes from the ``--arch`` module;
- any other pickle only with ``--trust-model`` (it can run arbitrary code).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import pickle
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.models import registry

CHECKPOINT_FORMAT = "cwtool.model/1"


@dataclass
class LoadedModel:
    """A model ready for inference, plus what is needed to rebuild or save it again."""

    module: nn.Module
    arch: str | None = None
    arch_kwargs: dict = field(default_factory=dict)
    channel_plan: dict | None = None
    input_shape: list[int] | None = None
    kind: str = "state_dict"  # torchscript | cwtool | state_dict | pickle


def resolve_arch(spec: str):
    """``name`` (built-in), ``module:Class`` or ``path/to/file.py:Class`` -> the class/factory."""
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
    except TypeError as exc:
        raise UserError(f"--arch '{spec}' rejected --arch-kwargs {kwargs or {}}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"--arch '{spec}' did not build a torch.nn.Module (got {type(model).__name__})")
    return model


def load_model(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    trust_model: bool = False,
) -> LoadedModel:
    path = Path(path)
    if path.is_dir():
        raise UserError(f"model '{path}' is a folder: give the model file")
    if not path.is_file():
        raise UserError(f"model file '{path}' does not exist")
    if _is_torchscript(path):
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as exc:
            raise UserError(f"cannot load TorchScript archive '{path}': {exc}") from exc
        return LoadedModel(module.eval(), kind="torchscript")

    obj = _load_pickle(path, arch, trust_model)
    if isinstance(obj, nn.Module):
        return LoadedModel(obj.eval(), arch=arch, arch_kwargs=arch_kwargs or {}, kind="pickle")
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        _check_same_arch(obj, path, arch, arch_kwargs)
        return _from_cwtool_checkpoint(obj, path)
    if isinstance(obj, dict):
        state = _find_state_dict(obj)
        if state is None:
            raise UserError(f"'{path}' holds a dict that is not a state_dict (keys: {', '.join(list(obj)[:5])})")
        if arch is None:
            raise UserError(
                f"'{path}' is a state_dict: pass --arch module:Class or path/to/file.py:Class "
                f"(built-in: {', '.join(registry.names())}) so cwtool can rebuild the model"
            )
        model = build_arch(arch, arch_kwargs)
        _load_state(model, state, arch)
        return LoadedModel(model.eval(), arch=arch, arch_kwargs=arch_kwargs or {}, kind="state_dict")
    raise UserError(f"'{path}' holds a {type(obj).__name__}, not a model or state_dict")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/", 2)[1:2] == ["code"] for n in zf.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def _load_pickle(path: Path, arch: str | None, trust_model: bool):
    if trust_model:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc:
            raise UserError(f"cannot read model file '{path}': {type(exc).__name__}: {exc}") from exc
    try:
        needed = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception as exc:
        raise UserError(f"cannot read model file '{path}': not a PyTorch checkpoint ({type(exc).__name__})") from exc
    allowed = _allow_list(needed, arch, path)
    try:
        with torch.serialization.safe_globals(allowed):
            return torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, AttributeError, ModuleNotFoundError) as exc:
        raise UserError(f"cannot read model file '{path}': {' '.join(str(exc).split())[:300]}") from exc


def _allow_list(needed: list[str], arch: str | None, path: Path) -> list:
    """Map every global the pickle names to a trusted object, or refuse with a clear line."""
    arch_classes: dict[str, type] = {}
    if arch is not None:
        factory = resolve_arch(arch)
        module = sys.modules.get(getattr(factory, "__module__", ""), None)
        members = inspect.getmembers(module, inspect.isclass) if module else []
        arch_classes = {name: cls for name, cls in members}
        if inspect.isclass(factory):
            arch_classes[factory.__name__] = factory
    allowed, refused = [], []
    for qualname in needed:
        module_name, _, attr = qualname.rpartition(".")
        if module_name == "torch" or module_name.startswith("torch."):
            obj = _import_attr(module_name, attr)
            if obj is not None:
                allowed.append(obj)
                continue
        if attr in arch_classes:
            # The pickle may name the class by the module it was saved from (e.g. __main__).
            allowed.append((arch_classes[attr], qualname))
            continue
        refused.append(qualname)
    if refused:
        hint = "pass --arch with the module that defines it, or --trust-model if you trust this file (it can run code)"
        raise UserError(f"'{path}' is a pickled model that needs {', '.join(refused[:3])}: {hint}")
    return allowed


def _import_attr(module_name: str, attr: str):
    try:
        return getattr(importlib.import_module(module_name), attr, None)
    except Exception:
        return None


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
    model.load_state_dict(state)


def _arch_file(spec: str) -> tuple[Path, str] | None:
    target, sep, attr = spec.rpartition(":")
    return (Path(target), attr) if sep and target.endswith(".py") else None


def _absolute_arch(spec: str) -> str:
    """``file.py:Class`` with the file's absolute path, so a checkpoint names it from any folder."""
    found = _arch_file(spec)
    return f"{found[0].absolute()}:{found[1]}" if found else spec


def _stored_arch(spec: str, checkpoint: Path) -> str:
    """The checkpoint's ``file.py:Class``; where that file is gone, the same file name beside the
    checkpoint (the two were moved together)."""
    found = _arch_file(spec)
    if found and not found[0].is_file():
        beside = checkpoint.parent / found[0].name
        if beside.is_file():
            return f"{beside}:{found[1]}"
    return spec


def _check_same_arch(obj: dict, path: Path, arch: str | None, arch_kwargs: dict | None) -> None:
    """A cwtool checkpoint names its architecture; an --arch that says otherwise is a mistake, not an override."""
    if arch is not None and _absolute_arch(arch) != _absolute_arch(obj["arch"]):
        raise UserError(f"'{path}' is a cwtool checkpoint of --arch '{obj['arch']}', not '{arch}': drop --arch")
    if arch_kwargs and dict(arch_kwargs) != dict(obj.get("arch_kwargs") or {}):
        raise UserError(f"'{path}' is a cwtool checkpoint built with --arch-kwargs {json.dumps(obj.get('arch_kwargs') or {})}: drop --arch-kwargs")


def is_cwtool_checkpoint(path: str | Path) -> bool:
    """Whether ``path`` holds a cwtool checkpoint (read without running code from the file)."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return False
    return isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT


def _from_cwtool_checkpoint(obj: dict, path: Path) -> LoadedModel:
    arch, kwargs = _stored_arch(obj["arch"], Path(path)), dict(obj.get("arch_kwargs") or {})
    model = build_arch(arch, kwargs)
    plan = obj.get("channel_plan") or None
    input_shape = obj.get("input_shape")
    if plan:
        from toolchain.prune.shrink import shrink

        example = torch.zeros(1, *input_shape)
        model = shrink(model.eval(), plan, example)
    _load_state(model, obj["state_dict"], arch)
    return LoadedModel(model.eval(), arch=arch, arch_kwargs=kwargs, channel_plan=plan, input_shape=input_shape, kind="cwtool")


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
