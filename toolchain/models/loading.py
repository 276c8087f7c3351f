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

This module recognises the file and dispatches; `arch` resolves --arch, `pickles` holds the restricted
unpickling and `checkpoint` the cwtool format. Their public names are re-exported here.
"""

from __future__ import annotations

import zipfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from toolchain.errors import UserError, one_line
from toolchain.input_paths import absent
from toolchain.limits import check_fits
from toolchain.models import registry
from toolchain.models.arch import build_arch, load_state_into, resolve_arch
from toolchain.models.checkpoint import (
    CHECKPOINT_FORMAT,
    is_cwtool_checkpoint,
    load_weights,
    rebuild_checkpoint,
    save_checkpoint,
)
from toolchain.models.pickles import check_module_tree, load_pickle

__all__ = ["LoadedModel", "load_model", "CHECKPOINT_FORMAT", "build_arch", "resolve_arch", "load_state_into",
           "save_checkpoint", "is_cwtool_checkpoint", "load_weights"]


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
    file_identity: tuple | None = None  # the file's (toolchain.file_identity) as it was read, where the reader took it


def load_model(
    path: str | Path,
    arch: str | None = None,
    arch_kwargs: dict | None = None,
    trust_model: bool = False,
    input_shape: tuple[int, ...] | None = None,
    image_folder: bool = False,
) -> LoadedModel:
    """``input_shape`` (one sample, when the caller knows the data): a cwtool checkpoint recorded for other
    inputs is refused before anything is built for it (``image_folder``: the data is a folder of images, which the
    image flags its refusal names prepare)."""
    path = Path(path)
    if path.is_dir():
        raise UserError(f"model '{path}' is a folder: give the model file")
    if path.exists() and not path.is_file():  # a pipe from `<(cat m.pt)`, a device: cwtool reads the file more than once
        raise UserError(f"model '{path}' is a pipe or device, not a file: save the model to a file first")
    if not path.is_file():
        raise UserError(f"model file '{path}' {absent(path)}")
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

    obj = load_pickle(path, arch, trust_model)
    if isinstance(obj, nn.Module):
        if not trust_model:
            check_module_tree(obj, path)
        return LoadedModel(obj.eval(), arch=arch, arch_kwargs=arch_kwargs or {}, kind="pickle")
    if isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT:
        return LoadedModel(**rebuild_checkpoint(obj, path, arch, arch_kwargs, trust_model, input_shape, image_folder), kind="cwtool")
    if isinstance(obj, dict) and isinstance(obj.get("format"), str) and obj["format"].startswith("cwtool.model/"):
        raise UserError(f"'{path}' is a cwtool checkpoint of format {one_line(obj['format'])[:40]}, and this cwtool reads "
                        f"{CHECKPOINT_FORMAT}: load it with the cwtool version that wrote it")
    if isinstance(obj, dict):
        state = _find_state_dict(obj)
        if state is None:
            odd = next((k for k in obj if not isinstance(k, str)), None)
            keys = f"key {str(odd)[:40]} is not text, so not a parameter name" if odd is not None else \
                "keys: " + ", ".join(str(k)[:40] for k in list(obj)[:5])
            raise UserError(f"'{path}' holds a dict that is not a state_dict ({keys}): give a model saved with torch.save(model) or "
                            "torch.save(model.state_dict()), or a cwtool checkpoint")
        if arch is None:
            raise UserError(
                f"'{path}' is a state_dict: pass --arch module:Class or path/to/file.py:Class "
                f"(built-in: {', '.join(registry.names(mobile=True))}) so cwtool can rebuild the model"
            )
        model = build_arch(arch, arch_kwargs)
        load_state_into(model, state, arch)
        return LoadedModel(model.eval(), arch=arch, arch_kwargs=arch_kwargs or {}, kind="state_dict")
    raise UserError(f"'{path}' holds a {type(obj).__name__}, not a model or state_dict: give a model saved with torch.save(model) "
                    "or torch.save(model.state_dict()), or a cwtool checkpoint")


def _check_archive_size(path: Path) -> None:
    """A zip checkpoint declares its members' sizes: refuse one that would not fit in memory
    (a compressed member can claim far more than the file holds)."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as zf:
            sizes = [(i.filename, max(0, i.file_size)) for i in zf.infolist()]
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UserError(f"cannot read model file '{path}': a broken zip archive ({exc})") from exc
    # the pickle's record twice: torch reads it into its own buffer and hands Python a copy before any cap applies
    total = sum(size * (2 if name.endswith("data.pkl") else 1) for name, size in sizes)
    check_fits(total, f"model file '{path}' (unpacked)", "it is not a model cwtool can load here")


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as zf:
            return any(n.split("/", 2)[1:2] == ["code"] for n in zf.namelist())
    except (zipfile.BadZipFile, OSError, ValueError):
        return False


def _is_state_dict(obj) -> bool:
    """Parameter names to tensors (a name is text: an int key is some other mapping)."""
    return isinstance(obj, dict) and bool(obj) and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items())


def _find_state_dict(obj: dict) -> dict | None:
    if _is_state_dict(obj):
        return obj
    for key in ("state_dict", "model_state_dict", "model"):
        if _is_state_dict(obj.get(key)):
            return obj[key]
    return None


@contextmanager
def naming_recorded_preparation(model: str | Path):
    """Data read inside it that is refused for how its images are prepared names the flags ``model``'s checkpoint
    records (``_with_recorded_preparation``); any other refusal passes as it is."""
    try:
        yield
    except UserError as exc:
        hinted = _with_recorded_preparation(exc, model)
        if hinted is exc:
            raise
        raise hinted from exc


def recorded_training(model: str | Path) -> tuple[dict | None, tuple[int, int, int] | None]:
    """What a cwtool checkpoint records of its training's data (extra["data"]: untrusted values) and the sample shape it
    records, read before the data is; (None, None) for any other file, or one that cannot be read (its own error comes
    when it is loaded), and None for a value that is not of its kind."""
    try:
        obj = load_pickle(Path(model), None, False)  # the safe unpickler: this file is read again, whole, later
    except Exception:
        obj = None
    if not (isinstance(obj, dict) and obj.get("format") == CHECKPOINT_FORMAT and isinstance(obj.get("extra"), dict)):
        return None, None
    data = obj["extra"].get("data")
    shape = obj.get("input_shape")
    ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and all(type(d) is int and 0 < d <= 65_536 for d in shape)
    return (data if isinstance(data, dict) else None), (tuple(shape) if ok else None)


def _recorded_preprocessing(model: str | Path, data) -> list:
    """The image preprocessing ``model``'s checkpoint records, as the list toolchain.recorded.prepared_as reads: empty
    where ``data`` is not a folder of images or the file records none."""
    from toolchain.data.loaders import is_image_folder

    record = recorded_training(model)[0] if is_image_folder(data) else None
    return [record.get("preprocessing")] if record else []


def prepared_as_recorded(model: str | Path, data, color, normalize, resize, image_size):
    """How a folder of images is prepared: as ``model``'s checkpoint records its training's images were, where no flag says
    otherwise (verify does the same from a file's record): its color, normalization and sizing (a
    toolchain.recorded.Preparation). A --normalize 0.5:0.5 run's pruned.pt evaluated without the flag scored AUC 0.09
    with exit 0 (a new user's finding)."""
    from toolchain.recorded import prepared_as

    return prepared_as(_recorded_preprocessing(model, data), color, normalize, resize, image_size)


IMAGE_FLAGS = ("color", "normalize", "resize", "image_size")


def as_recorded(request):
    """(``request``, compress's or export's, with the image flags it leaves out as its model's checkpoint records them;
    the toolchain.recorded.Preparation; ``request`` with each image flag that says what the checkpoint records left
    out). evaluate prepared a folder so, and compress refused it asking for those flags. The third is a compress run's
    identity: a run begun without the flags (by an earlier cwtool too) and resumed with them spelled out, or the
    reverse, reads the folder alike and is one run (such a resume was refused)."""
    import dataclasses

    from toolchain.recorded import prepared_as

    records = _recorded_preprocessing(request.model, request.data)  # the checkpoint read once
    prepared = prepared_as(records, request.color, request.normalize, request.resize, request.image_size)
    filled = dataclasses.replace(request, color=prepared.color, normalize=prepared.normalize, resize=prepared.resize,
                                 image_size=prepared.image_size)
    recorded = prepared_as(records, None, None, None, None)
    identity = dataclasses.replace(request, **{f: None for f in IMAGE_FLAGS if getattr(request, f) == getattr(recorded, f)})
    return filled, prepared, identity


def _with_recorded_preparation(exc: UserError, model: str | Path) -> UserError:
    """``exc``, a refusal of a folder's images for how they are prepared (sizes that differ, no resize given), with the
    flags ``model``'s checkpoint records of its training's images, where it is a cwtool checkpoint that records them:
    the data is read before the model, and a user who left --resize out was told to choose a size, then to give --arch,
    and only a third try named the flags the checkpoint holds (a new user's finding)."""
    from toolchain.data.identity import recorded_flags
    from toolchain.recorded import PREPARATION_WORDS

    text = str(exc)
    if not any(word in text for word in PREPARATION_WORDS) or text.startswith("--") or "only applies to" in text:
        return exc  # a flag's own syntax or a flag given to data it does not fit: its fix is in the message
    flags = recorded_flags(*recorded_training(model))
    if flags is None:
        return exc
    return UserError(f"{text}; '{one_line(str(model))}' records how its training's images were prepared: give {flags}")
