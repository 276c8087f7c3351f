"""Reading a pickled model file without running the file's code.

torch's weights-only unpickler with a narrow allow-list: torch.nn's layer classes and the nn.Module classes
defined in the user's ``--arch`` module, each read through a stand-in class that refuses construction, in
memory bounded by the file's size. A full unpickle only under ``--trust-model``.
"""

from __future__ import annotations

import importlib
import inspect
import pickle
import re
import sys
import zipfile
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.limits import memory_cap
from toolchain.models.arch import arch_file, first_not_stored_whole, resolve_arch

LOAD_HEADROOM = 256 << 20  # memory reading a model file may take beyond twice its size


def load_pickle(path: Path, arch: str | None, trust_model: bool):
    """The file's object through torch's weights-only unpickler and a narrow allow-list; a full
    unpickle only under --trust-model, and only after the narrow one could not read it."""
    other = _not_a_pickle(path)
    if other is not None:  # --trust-model or not: unpickling it reads nothing
        raise UserError(f"'{path}' is {other}")
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


def _not_a_pickle(path: Path) -> str | None:
    """What the file at ``path`` is, where its first bytes say it is no PyTorch checkpoint (a zip archive, or a pickle in
    the legacy format, which starts with 0x80): the advice for a pickle (--arch, --trust-model) does not apply to it."""
    with open(path, "rb") as f:
        head = f.read(16)
    if not head:
        return "an empty file (0 bytes), not a model: give the checkpoint or state_dict torch.save wrote"
    if head.startswith(b"PK") and not zipfile.is_zipfile(path):  # torch.save's zip, its end (the directory) missing
        return "a cut-off checkpoint: it starts as torch.save's zip archive but its end is missing (a copy or download that stopped)"
    if head.startswith(b"PK") and _is_exported_program(path):
        return ("a torch.export archive (torch.export.save): it holds a traced graph, not the module cwtool retrains and "
                "prunes; save the model's state_dict (torch.save(model.state_dict(), 'model.pt')) and pass --arch")
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return None
    if head[4:8] == b"TFL3" or path.suffix.lower() == ".tflite":
        return "a TFLite file, an exported artifact: cwtool verify checks it; this command takes the PyTorch model it came from"
    if path.suffix.lower() == ".onnx" or head[:1] == b"\x08":  # ONNX's protobuf starts with its ir_version field
        return "an ONNX file, an exported artifact: cwtool verify checks it; this command takes the PyTorch model it came from"
    if head.lstrip()[:1] in (b"{", b"["):
        return "a JSON file, not a model: give the PyTorch checkpoint or state_dict (.pt)"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file (Keras?), not a PyTorch model: cwtool takes PyTorch models"
    return None


def _is_exported_program(path: Path) -> bool:
    """torch.export.save's archive: a folder with models/model.json (its graph) and no data.pkl (torch.save's pickle)."""
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return False
    return any(n.endswith("/models/model.json") for n in names) and not any(n.endswith("/data.pkl") for n in names)


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
            loaded = _restore_classes(torch.load(path, map_location="cpu", weights_only=True))
        if not zipfile.is_zipfile(path):
            _storages_were_stored(loaded, path)
        return loaded
    except UserError:
        raise
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
        named = re.search(r"unsupported GLOBAL (\S+)", detail)  # the legacy format's wording
        garbled = re.search(r"Unsupported operand \S+", detail)
        if garbled and not _pickle_header(path):  # no protocol 2-5 pickle (legacy torch files are): bytes of something else
            raise UserError(f"cannot read model file '{path}': not a PyTorch checkpoint (its bytes are no pickle: {garbled.group(0)})") from exc
        if garbled:  # a pickle of an opcode torch's safe reader lacks (protocol 4-5 frames in the legacy format)
            raise UserError(f"'{path}' is a pickle that only a full unpickle reads ({garbled.group(0)}): save it again with torch.save's "
                            "defaults, or pass --trust-model if you trust this file (it can run code)") from exc
        if "Unsupported global" in detail or "WeightsUnpickler" in detail or named:
            detail = (detail.split("Unsupported global:")[-1].split(". ")[0].strip() if "Unsupported global" in detail
                      else named.group(1) if named else "")
            hint = (": it names code cwtool does not run from a file"
                    + (f" ({detail})" if detail else "")
                    + "; pass --arch with the module that defines the model, or --trust-model if you trust this file (it can run code)")
            raise UserError(f"'{path}' is a pickled model{hint}") from exc
        if not zipfile.is_zipfile(path) and not _pickle_header(path):  # a text file, say: "(KeyError: 101)" was the unpickler's
            raise UserError(f"cannot read model file '{path}': not a PyTorch checkpoint (neither the zip torch.save writes nor a "
                            "pickle): give the .pt file torch.save wrote") from exc
        first = detail.split(". ")[0][:200]  # torch's own advice after it is not for a file that is no checkpoint
        raise UserError(f"cannot read model file '{path}': not a PyTorch checkpoint ({type(exc).__name__}: {first})") from exc


def _storages_were_stored(loaded, path: Path) -> None:
    """The legacy format lists the storages whose bytes follow its pickles: one that lists none leaves every tensor's
    storage as allocated, unset (bytes of the process's memory read as weights: a 2.1 KB file "held" a model)."""
    held, seen, storages = 0, set(), set()

    def walk(obj):
        nonlocal held
        if id(obj) in seen:
            return
        seen.add(id(obj))
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            if storage.data_ptr() not in storages:
                storages.add(storage.data_ptr())
                held += storage.nbytes()
        elif isinstance(obj, nn.Module):
            for value in obj.state_dict(keep_vars=True).values():
                walk(value)
        elif isinstance(obj, dict):
            for value in obj.values():
                walk(value)
        elif isinstance(obj, (list, tuple)):
            for value in obj:
                walk(value)

    walk(loaded)
    size = path.stat().st_size
    if held > size:
        raise UserError(f"cannot read model file '{path}': its tensors need {held:,} bytes and the file holds {size:,}, so their "
                        "values were never stored in it (PyTorch's legacy format, damaged or made so): give the .pt file "
                        "torch.save wrote")


def _pickle_header(path: Path) -> bool:
    """Whether the file starts as a pickle of protocol 2 to 5 does (PROTO and its number): what torch's legacy format and
    a pickled module start with. Random bytes do so once in 16,384."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] == 0x80 and 2 <= head[1] <= 5


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


def _restore_classes(obj, seen: set | None = None):
    """Each module's real class back, each object once: a 1.9 KB pickle of dicts that share their values
    ({'a': d, 'b': d}, 60 deep) reads as 2**60 of them, and was walked for ever."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return obj
    seen.add(id(obj))
    if isinstance(obj, nn.Module):
        for m in obj.modules():
            if isinstance(m, _StandIn):
                m.__class__ = type(m).__mro__[2]
    elif isinstance(obj, dict):
        for v in obj.values():
            _restore_classes(v, seen)
    return obj


MAX_MODULE_USES = 100_000  # a module shared by reference is run once for each place it holds: 100 places five deep
# (nn.Sequential(*[s] * 100), a 13 KB file) is 10**10 calls, about 30 hours a forward pass


def module_uses(model: nn.Module) -> int:
    """How many places the modules hold in the tree, a shared one counted at each (each is a call in a forward pass)."""
    counted: dict[int, int] = {}

    def uses(m: nn.Module) -> int:
        if id(m) not in counted:
            counted[id(m)] = 1  # a module among its own children is counted once
            counted[id(m)] = 1 + sum(uses(c) for c in vars(m).get("_modules", {}).values() if isinstance(c, nn.Module))
        return counted[id(m)]

    return uses(model)


def check_module_tree(model: nn.Module, path: Path) -> None:
    """A pickle sets a module's attributes directly: every child must be a module, every parameter and buffer
    a tensor stored whole, no hooks, no instance attribute in place of a method (a "forward" set by the file), and no
    more module calls than any classifier makes."""
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
            odd = first_not_stored_whole(values)
            if odd is not None:
                raise bad(f"{kind[1:-1]} {odd[0]} of {where} that is {odd[1]}")
        hooks = [k for k, v in state.items() if "hook" in k and v]
        if hooks:
            raise bad(f"hooks on {where} ({', '.join(hooks[:2])})")
        shadowed = [k for k in state if not k.startswith("_") and callable(getattr(type(m), k, None)) and k not in ("training",)]
        if shadowed:
            raise bad(f"{', '.join(shadowed[:2])} of {where} replaced by the file")
    used = module_uses(model)
    if used > MAX_MODULE_USES:
        raise bad(f"its modules used in {used:,} places (a module shared by reference runs at each), more than "
                  f"{MAX_MODULE_USES:,}")


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
    found = arch_file(arch)
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
