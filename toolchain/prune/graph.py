"""Channel groups: the sets of coupled channels that can be removed together, from Torch-Pruning's DepGraph.

A *channel group* is everything one output channel of a root layer drags along when it is removed:
the producing conv/linear rows, the BatchNorm entries after them, depthwise convs on the same channels,
every tensor joined to them by a residual addition, and the input columns of the layers that consume them.
Torch-Pruning's ``DependencyGraph`` computes these couplings; this module names each group by a stable
key (the qualified name of its root module, the first of the group's producing layers in
``model.named_modules()`` order), so the same group can be found again in another copy of the same
architecture -- the trained net and its rewind copy are shrunk with one plan.

A *channel plan* (``ChannelPlan``) maps group keys to the root-channel indices to REMOVE. It is plain JSON.

Rules enforced here:

* Output classes are never prunable. The trace's sink nodes (tensors the model returns) are found in
  the graph; any group that reaches one of them -- a Linear classifier, a 1x1 Conv2d classifier followed
  by flatten, a classifier followed by log_softmax -- is fixed, whatever layer type produced it.
* Depthwise convs (groups == in == out channels) are coupled by Torch-Pruning itself: their channels
  belong to the group of the layer that feeds them; no constraint needed.
* Grouped, non-depthwise convs (1 < groups < out_channels) must keep their channel counts a multiple of
  ``groups`` with the blocks aligned. A group that covers a grouped conv's channels *entirely* (e.g. its
  own output channels, or an input that comes whole from one layer) is prunable in *aligned blocks*:
  ``ChannelGroup.blocks = groups`` and a valid removal takes the same offsets from every block.
  A group that covers only part of a grouped conv's input (e.g. one branch of a torch.cat feeding it)
  would need a constraint across groups; such groups are reported fixed (not prunable).
* Groups that touch a parameterised layer this module does not know how to mask (LayerNorm, PReLU,
  GroupNorm, Embedding, attention, bare nn.Parameters...) are fixed.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Iterator

import torch
from torch import nn

ChannelPlan = dict[str, list[int]]

# Layer kinds whose parameter slices the masking code understands.
_SUPPORTED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """One coupled channel set. ``key`` is the root module's qualified name (the plan key)."""

    key: str
    size: int  # channels of the root module (valid indices: 0..size-1)
    blocks: int = 1  # >1: remove the same offsets from each of `blocks` equal consecutive blocks
    prunable: bool = True
    reason: str = ""  # why not prunable
    out_layers: tuple[str, ...] = ()  # modules whose output channels this group removes
    in_layers: tuple[str, ...] = ()  # modules whose input channels this group removes

    @property
    def block_size(self) -> int:
        return self.size // self.blocks

    def check(self, idxs: Iterable[int]) -> list[int]:
        """Return ``idxs`` sorted if they are a legal removal for this group, else raise ValueError."""
        idxs = sorted(int(i) for i in idxs)
        if not self.prunable:
            if idxs:
                raise ValueError(f"channel group {self.key!r} is not prunable ({self.reason})")
            return idxs
        if len(set(idxs)) != len(idxs):
            raise ValueError(f"channel group {self.key!r}: duplicate indices in plan")
        if idxs and (idxs[0] < 0 or idxs[-1] >= self.size):
            raise ValueError(f"channel group {self.key!r}: indices must lie in [0, {self.size})")
        if len(idxs) >= self.size:
            raise ValueError(f"channel group {self.key!r}: cannot remove all {self.size} channels")
        if self.blocks > 1:
            bs = self.block_size
            offsets = sorted({i % bs for i in idxs})
            expected = [b * bs + o for b in range(self.blocks) for o in offsets]
            if sorted(expected) != idxs:
                raise ValueError(
                    f"channel group {self.key!r} feeds/is a grouped conv (groups={self.blocks}): remove the "
                    f"same offsets from each block of {bs} channels (use ChannelGroup.expand_offsets)"
                )
        return idxs

    def expand_offsets(self, offsets: Iterable[int]) -> list[int]:
        """Block offsets -> root indices (the same offsets in every block). For blocks == 1, identity."""
        bs = self.block_size
        return sorted(b * bs + int(o) for b in range(self.blocks) for o in set(offsets))


# --------------------------------------------------------------------------------------------------
# Dependency graph access
# --------------------------------------------------------------------------------------------------


def _as_inputs(example_input: Any):
    # Torch-Pruning first tries model(*example_inputs): a bare tensor would be unpacked along the batch
    # (and a batch of one would silently trace an unbatched input), so wrap it.
    return (example_input,) if isinstance(example_input, torch.Tensor) else example_input


def build_graph(model: nn.Module, example_input: Any):
    """Build a Torch-Pruning DependencyGraph without leaving the model in eval mode or without grad."""
    import torch_pruning as tp

    modes = {m: m.training for m in model.modules()}
    try:
        with torch.enable_grad():
            dg = tp.DependencyGraph().build_dependency(model, example_inputs=_as_inputs(example_input), verbose=False)
    finally:
        for m, t in modes.items():
            m.training = t
    return dg


def _names(model: nn.Module) -> dict[nn.Module, str]:
    return {m: n for n, m in model.named_modules()}


def _is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.out_channels and m.out_channels > 1


def _is_grouped(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not _is_depthwise(m)


def _sink_nodes(dg) -> set:
    """Nodes the model's output tensors come from: the trace walks back from the outputs, so every
    other node feeds something; sinks have no consumers. Torch-Pruning's _OutputOp nodes count too."""
    from torch_pruning import ops

    return {n for n in dg.module2node.values() if not n.outputs or n.type == ops.OPTYPE.OUTPUT}


def _root_of(dg, group, order: dict[nn.Module, int]) -> nn.Module:
    """Deterministic root: the first producing Conv/Linear of the group in named_modules order."""
    cands = [
        it.dep.target.module
        for it in group
        if dg.is_out_channel_pruning_fn(it.dep.handler)
        and isinstance(it.dep.target.module, (nn.modules.conv._ConvNd, nn.Linear))
    ]
    return min(cands, key=lambda m: order.get(m, 1 << 30))


def full_group(dg, module: nn.Module, idxs: list[int]):
    """The DepGraph group that removing ``idxs`` from ``module``'s output channels triggers."""
    pruner = dg.get_pruner_of_module(module)
    return dg.get_pruning_group(module, pruner.prune_out_channels, list(idxs))


def _describe(dg, group, root: nn.Module, names: dict[nn.Module, str], sinks: set) -> ChannelGroup:
    key = names[root]
    size = dg.get_out_channels(root)
    outs, ins = [], []
    reason = ""
    blocks = 1
    for it in group:
        node, handler = it.dep.target, it.dep.handler
        m = node.module
        is_out = dg.is_out_channel_pruning_fn(handler)
        if node in sinks and is_out:
            reason = reason or "its channels are the model's output (classes)"
        if not isinstance(m, nn.Module):  # a bare nn.Parameter
            reason = reason or "touches a bare nn.Parameter"
            continue
        name = names.get(m)
        if name is None:  # Torch-Pruning's dummy ops (add, cat, reshape, relu, output...)
            continue
        if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, _SUPPORTED):
            reason = reason or f"touches unsupported layer {name} ({type(m).__name__})"
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.out_channels and m.in_channels != m.out_channels:
            reason = reason or f"touches channel-multiplier depthwise conv {name}"
        if _is_grouped(m):
            total = m.out_channels if is_out else m.in_channels
            identity = list(it.idxs) == list(range(total)) and len(it.idxs) == size
            if not identity:
                reason = reason or f"covers part of grouped conv {name} (groups={m.groups}); not supported"
            else:
                blocks = max(blocks, m.groups) if blocks in (1, m.groups) else -1
                if blocks == -1:
                    reason = reason or f"conflicting grouped-conv block sizes at {name}"
        (outs if is_out else ins).append(name)
    if blocks < 1:
        blocks = 1
    return ChannelGroup(
        key=key,
        size=size,
        blocks=blocks,
        prunable=not reason,
        reason=reason,
        out_layers=tuple(dict.fromkeys(outs)),
        in_layers=tuple(dict.fromkeys(ins)),
    )


def _iter_groups(model: nn.Module, dg) -> Iterator[tuple[ChannelGroup, nn.Module]]:
    names = _names(model)
    order = {m: i for i, m in enumerate(model.modules())}
    sinks = _sink_nodes(dg)
    seen: set[str] = set()
    described = []
    for g in dg.get_all_groups():
        root = _root_of(dg, g, order)
        key = names[root]
        if key in seen:
            continue
        seen.add(key)
        if root is not g[0].dep.target.module:  # re-root so indices live in the key module's space
            g = full_group(dg, root, list(range(dg.get_out_channels(root))))
        described.append((_describe(dg, g, root, names, sinks), root))
    described.sort(key=lambda cr: order[cr[1]])
    yield from described


def channel_groups(model: nn.Module, example_input: Any, include_fixed: bool = False) -> list[ChannelGroup]:
    """The model's channel groups in module order: only the prunable ones unless ``include_fixed``."""
    dg = build_graph(model, example_input)
    return [cg for cg, _ in _iter_groups(model, dg) if include_fixed or cg.prunable]


def validate_plan(groups: list[ChannelGroup], plan: ChannelPlan) -> ChannelPlan:
    """Check ``plan`` against ``groups``; return it normalised (sorted int lists, empty entries dropped,
    keys in group order). Raises ValueError naming the first problem."""
    by_key = {g.key: g for g in groups}
    unknown = [k for k in plan if k not in by_key]
    if unknown:
        raise ValueError(f"plan names unknown channel group(s): {unknown}")
    out: ChannelPlan = {}
    for g in groups:
        idxs = g.check(plan.get(g.key, []))
        if idxs:
            out[g.key] = idxs
    return out


def random_plan(groups: list[ChannelGroup], fraction: float, seed: int = 0) -> ChannelPlan:
    """Remove ``round(fraction * size)`` random channels of each prunable group (rounded to whole block
    offsets for grouped convs, always keeping at least one channel). For tests and baselines."""
    gen = torch.Generator().manual_seed(seed)
    plan: ChannelPlan = {}
    for g in groups:
        if not g.prunable:
            continue
        bs = g.block_size
        k = min(int(round(fraction * bs)), bs - 1)
        if k <= 0:
            continue
        offsets = torch.randperm(bs, generator=gen)[:k].tolist()
        plan[g.key] = g.expand_offsets(offsets)
    return plan


def rounded_keep(size: int, keep: int, round_to: int) -> int:
    """``keep`` moved to the nearest multiple of ``round_to`` (at least one multiple, at most ``size``).
    CPU kernels (onnxruntime's NCHWc and int8 convolutions, XNNPACK) work in blocks of 8-16 channels:
    21 channels cost about what 24 do. Groups smaller than one multiple are left as they are; an
    8-channel layer stays at 8 (cutting it to 7 made a measured int8 model slower, not faster)."""
    if round_to <= 1 or size < round_to:
        return keep
    return min(size, max(round_to, round_to * int(round(keep / round_to))))


def plan_from_scores(groups: list[ChannelGroup], scores: dict[str, torch.Tensor], fraction: float, round_to: int = 1) -> ChannelPlan:
    """Remove the lowest-scoring ``fraction`` of each prunable group's channels (scores per root channel;
    for grouped convs the scores are summed per block offset). Groups without scores are left whole.
    ``round_to`` > 1 rounds each ungrouped group's surviving channel count to a multiple of it."""
    plan: ChannelPlan = {}
    for g in groups:
        if not g.prunable or g.key not in scores:
            continue
        s = torch.as_tensor(scores[g.key], dtype=torch.float64).flatten()
        if s.numel() != g.size:
            raise ValueError(f"scores for {g.key!r} have {s.numel()} entries, the group has {g.size} channels")
        s = s.view(g.blocks, g.block_size).sum(0)
        k = min(int(round(fraction * g.block_size)), g.block_size - 1)
        if g.blocks == 1:
            k = g.size - rounded_keep(g.size, g.size - k, round_to)
        if k <= 0:
            continue
        offsets = torch.argsort(s, stable=True)[:k].tolist()
        plan[g.key] = g.expand_offsets(offsets)
    return plan
