"""cwtool's checkpoint format: what it holds, how it is checked, and how a model is rebuilt from it.

A checkpoint is a dict (read weights-only) naming the architecture, its kwargs, the input shape, an
optional channel plan (for pruned models) and the state_dict. Every field is untrusted data: checked for
type and size, the architecture it names is code that runs only when the user names it, and the model is
first built on the meta device so kwargs from the file cannot allocate more than the machine has.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import torch
from torch import nn

from toolchain.data.images import channels_hint
from toolchain.errors import UserError
from toolchain.io import atomic_write_bytes
from toolchain.limits import memory_cap
from toolchain.models import registry
from toolchain.models.arch import absolute_arch, arch_file, build_arch, first_not_stored_whole, load_state_into
from toolchain.models.pickles import LOAD_HEADROOM

CHECKPOINT_FORMAT = "cwtool.model/1"
MAX_INPUT_ELEMENTS = 64 * 1024 * 1024  # per sample: far beyond any edge classifier's input


def _stored_arch(spec: str, checkpoint: Path) -> str:
    """The checkpoint's ``file.py:Class``; where that file is gone, the same file name beside the
    checkpoint (the two were moved together). Only under --trust-model: it runs the file's code."""
    found = arch_file(spec)
    if found and not found[0].is_file():
        beside = checkpoint.parent / found[0].name
        if beside.is_file():
            return f"{beside}:{found[1]}"
    return spec


def _same_arch(given: str, stored: str) -> bool:
    """--arch names the checkpoint's architecture: the same spelling, the same file, or a file of the
    same name and class (the checkpoint and its code were moved together)."""
    if absolute_arch(given) == absolute_arch(stored):
        return True
    a, b = arch_file(given), arch_file(stored)
    return bool(a and b and a[0].name == b[0].name and a[1] == b[1])


def _checkpoint_arch(stored: str, path: Path, arch: str | None, arch_kwargs: dict | None, stored_kwargs: dict,
                     trust_model: bool) -> str:
    """The architecture spec to build. The checkpoint's record is data: it picks a built-in by name,
    but code (a module or a file) runs only when the user names it with --arch or passes --trust-model."""
    if arch_kwargs and dict(arch_kwargs) != stored_kwargs:
        shown = json.dumps(stored_kwargs) if stored_kwargs else "none"  # "built with --arch-kwargs {}" read oddly
        raise UserError(f"'{path}' is a cwtool checkpoint that records the --arch-kwargs it was built with ({shown}): drop --arch-kwargs")
    if arch is not None:
        if not _same_arch(arch, stored):
            if registry.is_registered(stored):
                raise UserError(f"'{path}' is a cwtool checkpoint of --arch '{stored}', not '{arch}': drop --arch")
            found = arch_file(stored)  # code: dropping --arch is refused in turn unless trusted; both ways out named
            named = f"path/to/{found[0].name}:{found[1]}" if found else stored
            raise UserError(f"'{path}' is a cwtool checkpoint of --arch '{stored}', not '{arch}': give --arch {named} (the "
                            "file that defines it, the code you trust), or drop --arch and pass --trust-model")
        return arch if not registry.is_registered(stored) else stored
    if registry.is_registered(stored):
        return stored
    if trust_model:
        return _stored_arch(stored, path)
    found = arch_file(stored)
    named = f"path/to/{found[0].name}:{found[1]}" if found else stored
    raise UserError(
        f"'{path}' records the architecture '{stored}', which is code: cwtool runs it only when you name it. "
        f"Pass --arch {named} (the code you trust), or --trust-model"
    )


MAX_KWARGS_VALUES = 100_000  # in all: a list shared by reference in a pickle ([l] * 10,000, seven deep: 10**28 visits
# from a 389 KB file) is as many values as it reads as, and was walked for ever


MAX_PLAN_INDICES = 1 << 24  # kept channels of every layer together; a list shared by reference counts each time it is
# named (one 1-million-index list under 10,000 layer names, a 5.6 MB file, held every command over 60 s: 10**10 visits)


def storable_kwargs(value) -> bool:
    """Whether ``value`` (--arch-kwargs) is what a checkpoint records and reads back: a JSON object nested at most 8
    levels, of at most 10,000 items a level and 100,000 values in all, with finite numbers."""
    return isinstance(value, dict) and _json_like(value)


def _json_like(value, depth: int = 0, left: list | None = None) -> bool:
    left = [MAX_KWARGS_VALUES] if left is None else left
    left[0] -= 1
    if depth > 8 or left[0] < 0:
        return False
    if value is None or isinstance(value, (bool, int, str)):
        return True
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, (list, tuple)):
        return len(value) <= 10_000 and all(_json_like(v, depth + 1, left) for v in value)
    if isinstance(value, dict):
        return len(value) <= 10_000 and all(isinstance(k, str) and _json_like(v, depth + 1, left) for k, v in value.items())
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
            isinstance(k, str) and isinstance(v, (list, tuple)) and len(v) <= 1 << 20 for k, v in plan.items()):
        raise bad("channel_plan is not a map of layer names to channel indices")
    if sum(len(v) for v in plan.values()) > MAX_PLAN_INDICES:  # before the walk: one list shared by many keys
        raise bad(f"channel_plan holds over {MAX_PLAN_INDICES:,} channel indices")
    if not all(isinstance(i, int) and not isinstance(i, bool) and i >= 0 for v in plan.values() for i in v):
        raise bad("channel_plan is not a map of layer names to channel indices")
    state = obj.get("state_dict")
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()):
        raise bad("no state_dict of named tensors")
    odd = first_not_stored_whole(state)
    if odd is not None:  # before the model its arch_kwargs declare is built (906 million parameters from 22 KB)
        raise bad(f"{odd[0]} is {odd[1]}")
    extra = obj.get("extra") or {}
    if not isinstance(extra, dict):
        raise bad("extra is not a dict")
    return {"arch": arch, "arch_kwargs": dict(kwargs), "input_shape": [int(d) for d in shape],
            "channel_plan": {k: [int(i) for i in v] for k, v in plan.items()}, "state_dict": state, "extra": extra}


def _add_baked_biases(model: nn.Module, state: dict, path: Path) -> None:
    """compress bakes the protected classes' offsets into the classifier's bias, and gives a classifier without one (a
    bias-less 1x1 conv, ``Linear(bias=False)``) a bias to hold them: the architecture rebuilt by name has none. A bias in
    the file for a bias-less Linear or convolution is a weight like any other, of exactly its outputs' size."""
    layers = dict(model.named_modules())
    for key, tensor in state.items():
        for wrapper in ("module.", "_orig_mod."):  # saved from DistributedDataParallel or torch.compile: load_state_into strips it
            if key.startswith(wrapper) and key[len(wrapper):].rpartition(".")[0] in layers:
                key = key[len(wrapper):]
        name, _, leaf = key.rpartition(".")
        layer = layers.get(name)
        if leaf != "bias" or not isinstance(layer, (nn.Linear, nn.modules.conv._ConvNd)) or layer.bias is not None:
            continue
        outputs = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
        if tuple(tensor.shape) != (outputs,):
            raise UserError(f"'{path}' is a damaged cwtool checkpoint (a bias of shape {tuple(tensor.shape)} for its bias-less "
                            f"layer '{name}' of {outputs} outputs): re-create it with cwtool train or compress")
        layer.bias = nn.Parameter(torch.zeros(outputs, dtype=layer.weight.dtype, device=layer.weight.device))


def rebuild_checkpoint(obj: dict, path: Path, arch: str | None, arch_kwargs: dict | None, trust_model: bool,
                       expected_shape: tuple[int, ...] | None = None, image_folder: bool = False) -> dict:
    """The model a checkpoint describes, built and filled: {"module", "arch", "arch_kwargs", "channel_plan",
    "input_shape", "extra"} (the fields of a `LoadedModel`). ``expected_shape``: the data's sample shape;
    ``image_folder``: whether that data is a folder of images, which the image flags a refusal names prepare."""
    ckpt = _checked_checkpoint(obj, path)
    if expected_shape is not None and tuple(ckpt["input_shape"]) != tuple(expected_shape):
        from toolchain.data.identity import recorded_flags

        wanted = tuple(ckpt["input_shape"])
        flags = recorded_flags(ckpt["extra"].get("data"), wanted)  # its images' preprocessing, where the checkpoint records it
        fix = (f"pass --input-shape {','.join(map(str, wanted))}" if math.prod(wanted) == math.prod(expected_shape)
               else f"its checkpoint records how its images were prepared: give {flags}" if flags and image_folder
               else f"give the data it was trained on: a folder of images, prepared with {flags}" if flags
               else "give the data it was trained on")
        raise UserError(f"'{path}' was made for samples of shape {wanted}, the data's are {tuple(expected_shape)}: {fix}"
                        + channels_hint(tuple(expected_shape), wanted))
    kwargs = ckpt["arch_kwargs"]
    spec = _checkpoint_arch(ckpt["arch"], path, arch, arch_kwargs, kwargs, trust_model)
    model = build_arch(spec, kwargs, recorded_in=path)
    plan, input_shape = ckpt["channel_plan"] or None, ckpt["input_shape"]
    if plan:
        from toolchain.prune.shrink import shrink

        example = torch.zeros(1, *input_shape)
        try:
            with memory_cap(LOAD_HEADROOM + 64 * sum(t.numel() * t.element_size() for t in ckpt["state_dict"].values())):
                model = shrink(model.eval(), plan, example)
        except MemoryError as exc:
            raise UserError(f"'{path}': its input shape {tuple(input_shape)} asks for more memory than its model explains") from exc
        except UserError:
            raise
        except Exception as exc:  # the architecture's forward, traced with the file's plan and shape: any failure is the file's
            raise UserError(f"'{path}': its channel plan does not fit --arch '{spec}' "
                            f"({type(exc).__name__}: {' '.join(str(exc).split())[:160]})") from exc
    _add_baked_biases(model, ckpt["state_dict"], path)
    load_state_into(model, ckpt["state_dict"], spec)
    return {"module": model.eval(), "arch": spec, "arch_kwargs": kwargs, "channel_plan": plan, "input_shape": input_shape,
            "extra": ckpt["extra"]}


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
    payload = {
        "format": CHECKPOINT_FORMAT,
        "arch": absolute_arch(arch),
        "arch_kwargs": dict(arch_kwargs or {}),
        "input_shape": [int(d) for d in input_shape],
        "channel_plan": {k: [int(i) for i in v] for k, v in (channel_plan or {}).items()},
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "extra": extra or {},
    }
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


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
