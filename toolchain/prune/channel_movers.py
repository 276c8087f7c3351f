"""Operations that reorder channels, which Torch-Pruning's dependency graph cannot follow: kept whole, or refused.

Torch-Pruning 1.6.1 follows channels through cat, split, flatten and element-wise ops. A channel shuffle
(view to groups, transpose, view back; ShuffleNet) it cannot: on pytorchcv's ShuffleNetV2 its reshape
index mapping divides by zero; on a shuffle between two convs it builds a graph that maps channel i to
channel i, so a removal runs into a view that no longer fits (an internal error) or, for an even count,
silently pairs the next layer's weights with the wrong channels. So before each graph is built, one
probe forward looks for both kinds (`survey`):

* *channel movers*: parameter-free leaf modules whose output is a non-identity permutation of their
  input's channels (pytorchcv's ``ChannelShuffle``). The graph is built with each one opaque: while
  tracing, its forward is one autograd node straight from its input, and Torch-Pruning treats it as a
  custom layer whose input and output channels are not coupled, so no group crosses it.
  `toolchain.prune.graph` fixes every group that reaches one (``ChannelGroup.reason`` names it): those
  channels stay whole; the channels inside the branches around it stay prunable.
* *channel splits* outside any mover: a view/reshape that splits the channel dimension of an
  activation into groups, written inline in a forward. There is no module to hold, so a `UserError`
  names the operation and where it is (exit 2).

A model with neither is built exactly as before. Where Torch-Pruning's own analysis still fails, a
`UserError` names the operation it was following (exit 2), never an internal error.
"""

from __future__ import annotations

import dataclasses
import traceback
from pathlib import Path

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from toolchain.errors import UserError
from toolchain.models.modes import evaluating

# Torch-Pruning steps that run after the model's forward: a failure there is the graph's, not the model's.
_ANALYSIS_STEPS = {"_trace_computational_graph", "_build_dependency", "init_shape_information", "update_index_mapping"}
# What the failing index-mapping step was following, in the user's terms.
_OPERATIONS = {
    "update_reshape_index_mapping": "a view/reshape across the channel dimension (such as a channel shuffle)",
    "update_flatten_index_mapping": "a flatten of the channel dimension",
    "update_concat_index_mapping": "a torch.cat of channels",
    "update_split_index_mapping": "a torch.split/chunk of channels",
    "update_slice_index_mapping": "a slice of the channel dimension",
    "update_unbind_index_mapping": "a torch.unbind",
    "update_expand_index_mapping": "an expand",
}
_RESHAPES = {"view", "reshape", "unflatten"}
_OWN_CODE = (Path(torch.__file__).parent, Path(__file__).parent.parent)  # frames to skip when naming a place


def torch_pruning_frames(exc: BaseException) -> list:
    """The frames of an exception's traceback inside Torch-Pruning's own code (none: it came from elsewhere)."""
    return [f for f in traceback.extract_tb(exc.__traceback__) if "torch_pruning" in f.filename.replace("\\", "/")]


def analysis_failure(exc: BaseException) -> str | None:
    """The Torch-Pruning function an exception came from when it failed analysing a traced model;
    None when it came from the model's own forward (or from outside Torch-Pruning)."""
    frames = torch_pruning_frames(exc)
    if not any(f.name in _ANALYSIS_STEPS for f in frames):
        return None
    return frames[-1].name


def operation(step: str) -> str:
    return _OPERATIONS.get(step, f"an operation (Torch-Pruning's {step})")


@dataclasses.dataclass
class Survey:
    movers: dict[nn.Module, str]  # module -> "name (Class)"
    channels: dict[nn.Module, int]  # parameter-free leaf module -> channels it outputs
    splits: list[str]  # inline channel splits outside any mover: where each is


def _probe_like(example_inputs):
    """Random tensors shaped like the example (zeros would make every channel equal), from a private
    generator: the caller's random state is left alone."""
    gen = torch.Generator().manual_seed(0)

    def one(t):
        if isinstance(t, torch.Tensor) and t.is_floating_point():
            return torch.randn(t.shape, generator=gen, dtype=t.dtype).to(t.device)
        return t

    return torch.utils._pytree.tree_map(one, example_inputs)


def _permutes_channels(x, y) -> bool:
    """``y`` is ``x`` with its channels (dim 1) reordered, and not in the same order."""
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.shape != y.shape or x.dim() < 2 or x.shape[1] < 2:
        return False
    a = x.detach().transpose(0, 1).reshape(x.shape[1], -1).double()
    b = y.detach().transpose(0, 1).reshape(y.shape[1], -1).double()
    ia, ib = torch.argsort(a.sum(1)), torch.argsort(b.sum(1))
    return torch.equal(a[ia], b[ib]) and not torch.equal(a, b)


def _splits_channels(x, y) -> bool:
    """A reshape of an (N, C, ...) activation whose leading dims after the batch split C into two or more
    groups (N, G, C/G, ...): a flatten to (N, C*H*W) or a merge is not a split."""
    if not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.dim() < 3 or y.dim() <= x.dim():
        return False
    if y.shape[0] != x.shape[0] or x.shape[1] < 4:
        return False
    product, factors = 1, 0
    for d in y.shape[1:]:
        product *= d
        factors += d > 1
        if product >= x.shape[1]:
            return product == x.shape[1] and factors >= 2
    return False


def _place() -> str:
    """file:line of the innermost frame of the user's code (not torch's, not cwtool's)."""
    for frame in reversed(traceback.extract_stack()):
        path = Path(frame.filename)
        if not any(path.is_relative_to(own) for own in _OWN_CODE):
            return f"{path.name}:{frame.lineno} in {frame.name}"
    return "the model's forward"


class _SplitWatch(TorchFunctionMode):
    """Records each channel split with the module running it (a mover's own splits are its business)."""

    def __init__(self, running: list[nn.Module]):
        super().__init__()
        self.running = running
        self.splits: list[tuple[nn.Module | None, str]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if getattr(func, "__name__", "") in _RESHAPES and args and _splits_channels(args[0], out):
            self.splits.append((self.running[-1] if self.running else None, _place()))
        return out


def _maybe_mover(module: nn.Module) -> bool:
    return not any(True for _ in module.children()) and not any(True for _ in module.parameters(recurse=False))


def survey(model: nn.Module, example_inputs) -> Survey | None:
    """One forward on a random probe (eval mode, no grad): the channel movers and the inline channel splits.
    None when the model does not run on the probe (the graph build then reports the model's own error)."""
    names = {m: n for n, m in model.named_modules()}
    movers: dict[nn.Module, str] = {}
    channels: dict[nn.Module, int] = {}
    running: list[nn.Module] = []

    def enter(module, inputs):
        running.append(module)

    def leave(module, inputs, output):
        running.pop()
        if not _maybe_mover(module):
            return
        if isinstance(output, torch.Tensor) and output.dim() >= 2:
            channels[module] = int(output.shape[1])
        if inputs and _permutes_channels(inputs[0], output):
            movers[module] = f"{names[module]} ({type(module).__name__})"

    hooks = [h for m in model.modules() for h in (m.register_forward_pre_hook(enter), m.register_forward_hook(leave))]
    watch = _SplitWatch(running)
    try:
        probe = _probe_like(example_inputs)
        with evaluating(model), torch.no_grad(), watch:  # the trace runs in eval mode too
            model(**probe) if isinstance(probe, dict) else model(*probe)
    except Exception:
        return None
    finally:
        for h in hooks:
            h.remove()
    return Survey(movers, channels, list(dict.fromkeys(place for m, place in watch.splits if m not in movers)))


class _Opaque(torch.autograd.Function):
    """One autograd node from a mover's input to its output, so the trace sees no view/transpose inside."""

    @staticmethod
    def forward(ctx, x, out):
        return out.clone()

    @staticmethod
    def backward(ctx, grad):
        return None, None


def _opaque_forward(original):
    def forward(x, *args, **kwargs):
        with torch.no_grad():
            out = original(x, *args, **kwargs)
        return _Opaque.apply(x, out)

    return forward


class _KeptWhole:
    """Torch-Pruning pruner for a mover. Its input and output functions differ, which tells the graph the
    two sides are not coupled; both refuse to run, since every group reaching a mover is fixed."""

    def __init__(self, channels: dict[nn.Module, int]):
        self.channels = channels
        self.pruning_dim = 1

    def prune_out_channels(self, layer, idxs):
        raise RuntimeError("channels through a channel mover are kept whole")

    def prune_in_channels(self, layer, idxs):
        raise RuntimeError("channels through a channel mover are kept whole")

    def get_out_channels(self, layer):
        return self.channels.get(layer)

    get_in_channels = get_out_channels

    def get_out_channel_groups(self, layer):
        return 1

    get_in_channel_groups = get_out_channel_groups


def dependency_graph(model: nn.Module, example_inputs):
    """Torch-Pruning's DependencyGraph of ``model``: as Torch-Pruning builds it when the model moves no
    channels; else with every channel mover opaque (each instance of a mover's class: they share one
    pruner) and ``dg.kept_whole`` mapping each opaque module to its description. UserError (exit 2) where
    the channels cannot be followed. The caller holds grad mode and restores train/eval modes."""
    import torch_pruning as tp

    found = survey(model, example_inputs)
    if found and found.splits:
        raise UserError(
            f"pruning cannot follow a view/reshape that splits the channel dimension into groups (such as a channel "
            f"shuffle) at {found.splits[0]}: put it in an nn.Module of its own, whose channels cwtool then keeps "
            "whole, or compress another architecture"
        )
    opaque: dict[nn.Module, str] = {}
    pruners = {}
    if found and found.movers:
        classes = {type(m) for m in found.movers}
        names = {m: n for n, m in model.named_modules()}
        opaque = {m: found.movers.get(m, f"{names[m]} ({type(m).__name__})") for m in model.modules() if type(m) in classes}
        pruners = {cls: _KeptWhole(found.channels) for cls in classes}
    patched = [m for m in opaque if "forward" not in vars(m)]
    for m in patched:
        m.forward = _opaque_forward(m.forward)
    try:
        dg = tp.DependencyGraph().build_dependency(model, example_inputs=example_inputs, verbose=False,
                                                   customized_pruners=pruners or None)
    except Exception as exc:
        step = analysis_failure(exc)
        if step is None:  # the model's own forward failed: its error, as before
            raise
        raise UserError(f"pruning cannot follow {operation(step)} in this model (Torch-Pruning's dependency graph "
                        f"fails: {type(exc).__name__}: {exc}): compress another architecture") from exc
    finally:
        for m in patched:
            del m.forward
    if opaque:
        dg.kept_whole = opaque
    return dg
