"""``--arch``: from the spec a user typed to a built model, and weights checked against it.

A spec is a built-in name, ``module:Class`` or ``path/to/file.py:Class``. Importing one runs its code,
so only a spec the user typed (or a built-in name) ever reaches `resolve_arch`.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import sys
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import UserError, describe, listed
from toolchain.input_paths import absent
from toolchain.models import registry


def resolve_arch(spec: str):
    """``name`` (built-in), ``module:Class`` or ``path/to/file.py:Class`` -> the class/factory.

    Only ever called with a spec the user typed (or a built-in name): importing it runs code."""
    if registry.is_registered(spec):
        return registry.get(spec)
    if ":" not in spec:
        if spec.strip().endswith(".py"):  # the file without its class
            raise UserError(f"--arch '{spec}' names a file, not the class in it: give path/to/file.py:ClassName")
        import difflib

        known = registry.names(mobile=True)
        close = difflib.get_close_matches(spec.strip().lower(), known, n=1, cutoff=0.75)
        raise UserError(
            f"unknown --arch '{spec}'{f' (did you mean {close[0]}?)' if close else ''}: give a built-in ({', '.join(known)}), "
            "module:Class, or path/to/file.py:Class"
        )
    target, _, attr = spec.rpartition(":")
    if target.endswith(".py"):
        module = _import_file(target)
    elif not target or target.startswith("."):  # a relative name: importlib's TypeError named a 'package' argument
        raise UserError(f"--arch '{spec}': '{target}' is no module name: give module:Class (importable here) or path/to/file.py:Class")
    else:
        try:
            module = importlib.import_module(target)
        except (Exception, SystemExit) as exc:  # the user's module failed to import: say why, in one line
            raise UserError(f"--arch '{spec}': cannot import module '{target}' ({_why(exc)})") from exc
    obj = getattr(module, attr, None)
    if obj is None:
        raise UserError(f"--arch '{spec}': '{target}' has no attribute '{attr}'{_classes_hint(module, attr)}")
    if not callable(obj):
        raise UserError(f"--arch '{spec}': '{attr}' is not a class or factory")
    return obj


def _classes_hint(module, attr: str) -> str:
    """The classes the user's module defines (a misspelt name among them named first), to follow "has no attribute";
    nothing where they cannot be listed: the module is the user's code, and a property there may raise anything."""
    import difflib
    import inspect
    import re

    try:
        classes = sorted((name for name, value in list(vars(module).items()) if isinstance(name, str) and not name.startswith("_")
                          and inspect.isclass(value) and getattr(value, "__module__", None) == module.__name__),
                         key=lambda name: [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)])
    except Exception:  # noqa: BLE001 - the user's code raised while listed: the plain message
        return ""
    close = difflib.get_close_matches(attr, classes, n=1) if len(classes) <= 5_000 else []
    shown = listed(classes, 12)
    return (f" (did you mean {close[0]}?)" if close else "") + (f": it defines {shown}" if classes else ": it defines no class")


def user_module_name(file: Path) -> str:
    """The name a ``file.py:Class`` spec's file is imported under (in sys.modules)."""
    return f"cwtool_user_arch_{Path(file).stem}"


def _import_file(path: str):
    file = Path(path)
    if file.is_dir():
        raise UserError(f"--arch: '{path}' is a folder, not a Python file: give path/to/file.py:Class")
    if not file.is_file():
        raise UserError(f"--arch: file '{path}' {absent(path)}")
    name = user_module_name(file)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # pickles and dataclasses look classes up by module name
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:
        del sys.modules[name]
        raise UserError(f"--arch: importing '{path}' failed ({_why(exc)})") from exc
    return module


def _why(exc: BaseException) -> str:
    """One line on why the user's code failed. A script whose top level parses arguments or exits would
    otherwise end cwtool silently with the script's own exit code."""
    if isinstance(exc, SystemExit):
        return f"its code called {describe(exc)}; keep a script's top-level work under if __name__ == '__main__':"
    return describe(exc)


def build_arch(spec: str, kwargs: dict | None = None, recorded_in: Path | None = None) -> nn.Module:
    """``spec`` built with ``kwargs``: the user's --arch-kwargs, or those the checkpoint ``recorded_in`` records."""
    factory = resolve_arch(spec)
    _check_build_size(factory, spec, kwargs or {}, recorded_in)
    try:
        model = factory(**(kwargs or {}))
    except UserError:
        raise
    except (Exception, SystemExit) as exc:  # the kwargs come from the user or a file: a constructor that refuses them is bad input
        given = json.dumps(kwargs or {})[:200]
        if recorded_in is not None:
            raise UserError(f"'{recorded_in}' records arch '{spec}' with arch_kwargs {given}, which it rejected: {_why(exc)}; the "
                            "checkpoint is damaged, or was written for another version of that code") from exc
        if not kwargs:  # nothing of the user's was passed: the constructor itself failed
            raise UserError(f"--arch '{spec}' failed to build: {_why(exc)}") from exc
        raise UserError(f"--arch '{spec}' rejected --arch-kwargs {given}: {_why(exc)}{_takes(spec)}") from exc
    if not isinstance(model, nn.Module):
        raise UserError(f"--arch '{spec}' did not build a torch.nn.Module (got {type(model).__name__})")
    return model


def _check_build_size(factory, spec: str, kwargs: dict, recorded_in: Path | None) -> None:
    """Build the architecture on the meta device first: kwargs from the command line or a file (a width of 10**9) must not
    allocate more than the machine has (the kernel's OOM killer ends the process with no word)."""
    import torch

    from toolchain.limits import check_fits

    try:
        with torch.device("meta"):
            model = factory(**kwargs)
    except (Exception, SystemExit):  # kwargs it rejects, or code that cannot run on meta: built for real, where errors are said
        return
    if not isinstance(model, nn.Module):
        return
    need = sum(p.numel() * p.element_size() for p in model.parameters())
    given = json.dumps(kwargs)[:120]
    if recorded_in is not None:
        check_fits(need, f"'{recorded_in}' (--arch '{spec}' with {given})", "check the checkpoint's arch_kwargs")
    else:
        check_fits(need, f"--arch '{spec}' with --arch-kwargs {given}", "give smaller --arch-kwargs")


def arch_file(spec: str) -> tuple[Path, str] | None:
    """(file, class) of a ``file.py:Class`` spec; None for a built-in name or ``module:Class``."""
    target, sep, attr = spec.rpartition(":")
    return (Path(target), attr) if sep and target.endswith(".py") else None


def absolute_arch(spec: str) -> str:
    """``file.py:Class`` with the file's absolute path, so a checkpoint names it from any folder."""
    found = arch_file(spec)
    return f"{found[0].absolute()}:{found[1]}" if found else spec


def _sizes_hint(arch: str) -> str:
    """What a built-in architecture's --arch-kwargs size (its shapes differ from the file's where the file's model was
    built for other data: an mlp of 20 features, not the default 30)."""
    import inspect

    params = built_in_parameters(arch) or {}
    sizes = [f"{name} (default {p.default})" for name, p in params.items() if p.default is not inspect.Parameter.empty]
    return f" (built-in '{arch}' takes {', '.join(sizes)})" if sizes else ""


def _takes(arch: str) -> str:
    """What a built-in architecture's --arch-kwargs may be, for a refusal: "mobilenetv2() got an unexpected keyword
    argument 'width_scale'" named none (a new user's finding)."""
    params = built_in_parameters(arch)
    if params is None:
        return ""
    names = [name for name, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)]
    return f" ('{arch}' takes {', '.join(names)})" if names else f" ('{arch}' takes none)"


def built_in_parameters(arch: str):
    """A built-in architecture's constructor parameters; None for code of the user's, or where they cannot be read."""
    import inspect

    from toolchain.models import registry

    if ":" in arch or not registry.is_registered(arch):
        return None
    try:
        return inspect.signature(registry.get(arch)).parameters
    except (TypeError, ValueError):
        return None


MAX_EXPANDED_BYTES = 64 << 20  # what an expanded tensor may declare beyond the bytes it holds: a broadcast buffer
# (torch.ones(1).expand(16)) is real code's, a 906-million-parameter model from 22 KB is not


def stored_whole(tensor: torch.Tensor) -> str | None:
    """Why a tensor from a file is no weight cwtool reads, or None: a nested or sparse one, or an expanded one that
    declares far more values than its storage holds (a 22 KB file declared 906 million parameters)."""
    if tensor.is_nested or tensor.layout != torch.strided:
        return f"a {'nested' if tensor.is_nested else str(tensor.layout).removeprefix('torch.')} tensor"
    held = tensor.untyped_storage().nbytes()
    if tensor.numel() * tensor.element_size() - held > MAX_EXPANDED_BYTES:
        return f"{tensor.numel():,} values over {held:,} bytes of the file (an expanded tensor)"
    return None


def first_not_stored_whole(tensors: dict) -> tuple[str, str] | None:
    """(name, why) of the first tensor among ``tensors``' values that is not `stored_whole`; other values are skipped."""
    return next(((k, why) for k, v in tensors.items() if isinstance(v, torch.Tensor) and (why := stored_whole(v))), None)


def load_state_into(model: nn.Module, state: dict, arch: str) -> None:
    """Load ``state`` into ``model`` (built from ``arch``) when its names and shapes are exactly the model's;
    otherwise a UserError that names the first mismatches."""
    own = model.state_dict()
    for wrapper in ("module.", "_orig_mod."):  # saved from DistributedDataParallel / DataParallel, or a torch.compile'd model
        if state and all(isinstance(k, str) and k.startswith(wrapper) for k in state) and not any(k.startswith(wrapper) for k in own):
            state = {k[len(wrapper):]: v for k, v in state.items()}
    odd = first_not_stored_whole(state)
    if odd is not None:  # before its shape is read (a nested tensor has none: exit 3) or its values are
        raise UserError(f"the weights do not load into --arch '{arch}' ({odd[0]} in the file is {odd[1]}): give the model's "
                        "weights as torch.save stores them")
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
            f"the weights do not match --arch '{arch}' ({'; '.join(parts)}): check --arch and --arch-kwargs{_sizes_hint(arch) if wrong else ''}"
        )
    integral = next((k for k in own if own[k].is_floating_point() and hasattr(state[k], "is_floating_point")
                     and not state[k].is_floating_point() and not state[k].is_complex()), None)
    if integral is not None:  # load_state_dict would cast 0/1 or int8 codes into float weights in silence (13% accuracy)
        raise UserError(f"the weights do not load into --arch '{arch}' ({integral} is {str(state[integral].dtype).removeprefix('torch.')} "
                        "in the file, a float in the model: integers or booleans cast into weights compute another model; "
                        "give the float weights (a quantized model's are dequantized first)")
    complex_named = next((k for k in own if state[k].is_complex() and not own[k].is_complex()), None)
    if complex_named is not None:  # load_state_dict would keep the real part and drop the rest in silence
        raise UserError(f"the weights do not load into --arch '{arch}' ({complex_named} is {str(state[complex_named].dtype).removeprefix('torch.')} "
                        "in the file: the model's weights are real numbers)")
    try:
        model.load_state_dict(state)
    except (RuntimeError, TypeError, ValueError) as exc:  # e.g. a string-typed tensor in the file
        raise UserError(f"the weights do not load into --arch '{arch}' ({' '.join(str(exc).split())[:160]})") from exc
