"""Channel groups: the sets of coupled channels that can be removed together, from Torch-Pruning's DepGraph.

A *channel group* is everything one output channel of a root layer drags along when it is removed:
the producing conv/linear rows, the BatchNorm entries after them, depthwise convs on the same channels,
every tensor joined to them by a residual addition, and the input columns of the layers that consume them.
Torch-Pruning's ``DependencyGraph`` computes these couplings; this module names each group by a stable
key (the qualified name of its root module, the first of the group's producing layers in
``model.named_modules()`` order), so the same group can be found again in another copy of the same
architecture -- the trained net and its rewind copy are shrunk with one plan.

A *channel plan* (``ChannelPlan``, toolchain.prune.channel_plan) maps group keys to the root-channel indices to REMOVE. It is plain JSON.

``ChannelGraph`` is built once per model shape (the dependency graph is the expensive part) and hands
the groups, their parameter slices, masks, exact sizes of a plan without building it, and the
physical removal to importance scoring, plan search and shrinking (Torch-Pruning's graph -> group ->
functions, in cwtool's terms).

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
import math
from typing import Any, Iterator

import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.models.modes import evaluating
from toolchain.prune.channel_plan import ChannelGroup, ChannelPlan, validate_plan

# Layer kinds whose parameter slices the masking code understands.
_SUPPORTED = (nn.modules.conv._ConvNd, nn.Linear, nn.modules.batchnorm._BatchNorm)


BUILDS = {"count": 0}  # dependency graphs built in this process: one per model shape is the budget


def _as_inputs(example_input: Any):
    # Torch-Pruning first tries model(*example_inputs): a bare tensor would be unpacked along the batch
    # (and a batch of one would silently trace an unbatched input), so wrap it.
    return (example_input,) if isinstance(example_input, torch.Tensor) else example_input


def build_graph(model: nn.Module, example_input: Any):
    """Build a Torch-Pruning DependencyGraph without leaving the model in eval mode or without grad.

    Channels reordered by an operation Torch-Pruning cannot follow (ShuffleNet's channel shuffle) are kept
    whole when a module of their own reorders them, else refused with a UserError naming the operation
    (exit 2), as is any failure of Torch-Pruning's own analysis (toolchain.prune.channel_movers)."""
    from toolchain.prune.channel_movers import dependency_graph

    BUILDS["count"] += 1
    frozen = [p for p in model.parameters() if not p.requires_grad]  # the trace follows autograd: frozen layers would be invisible
    try:
        for p in frozen:
            p.requires_grad_(True)
        with evaluating(model), torch.enable_grad():
            dg = dependency_graph(model, _as_inputs(example_input))
    finally:
        for p in frozen:
            p.requires_grad_(False)
    return dg


def is_depthwise(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups == m.out_channels and m.out_channels > 1


def _is_grouped(m: nn.Module) -> bool:
    return isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and not is_depthwise(m)


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


def _full_group(dg, module: nn.Module, idxs: list[int]):
    """The DepGraph group that removing ``idxs`` from ``module``'s output channels triggers."""
    pruner = dg.get_pruner_of_module(module)
    return dg.get_pruning_group(module, pruner.prune_out_channels, list(idxs))


def _channel_extent(m: nn.Module, is_out: bool) -> int | None:
    """How many channels ``m`` has on the side a group member touches (None: not a layer cwtool slices)."""
    if isinstance(m, nn.modules.conv._ConvNd):
        return m.out_channels if is_out or is_depthwise(m) else m.in_channels
    if isinstance(m, nn.Linear):
        return m.out_features if is_out else m.in_features
    if isinstance(m, nn.modules.batchnorm._BatchNorm):
        return m.num_features
    return None


def _shared_parameter_owners(model: nn.Module) -> set[nn.Module]:
    """Modules holding a parameter another module holds too (``b.weight = a.weight``): removing channels from one
    would reshape the other's tensor behind the graph's back."""
    owners: dict[int, list[nn.Module]] = {}
    for m in model.modules():
        for p in m.parameters(recurse=False):
            owners.setdefault(id(p), []).append(m)
    return {m for ms in owners.values() if len(ms) > 1 for m in ms}


def _describe(dg, group, root: nn.Module, names: dict[nn.Module, str], sinks: set, shared: set = frozenset()) -> ChannelGroup:
    key = names[root]
    size = dg.get_out_channels(root)
    outs, ins = [], []
    reason = ""
    output = False
    blocks = 1
    kept_whole = getattr(dg, "kept_whole", {})  # channel movers Torch-Pruning cannot follow (channel_movers)
    for it in group:
        node, handler = it.dep.target, it.dep.handler
        m = node.module
        is_out = dg.is_out_channel_pruning_fn(handler)
        if m in kept_whole:
            reason = reason or f"its channels pass through {kept_whole[m]}, which reorders them beyond the graph: kept whole"
        if node in sinks and is_out:
            reason, output = reason or "its channels are the model's output (classes)", True
        if not isinstance(m, nn.Module):  # a bare nn.Parameter
            reason = reason or "touches a bare nn.Parameter"
            continue
        name = names.get(m)
        if name is None:  # Torch-Pruning's dummy ops (add, cat, reshape, relu, output...)
            continue
        extent = _channel_extent(m, is_out)
        if extent is not None and any(i >= extent for i in it.idxs):  # the graph mapped channels onto a layer too small for them
            reason = reason or (f"its {size} channels reach {name}, which has {extent}, through an operation the dependency "
                                "graph does not follow: kept whole")
        if m in shared:
            reason = reason or f"touches {name}, whose parameters another layer shares"
        if any(not p.requires_grad for p in m.parameters(recurse=False)):
            reason = reason or f"touches {name}, which is frozen (requires_grad=False) and so not retrained"
        if any(True for _ in m.parameters(recurse=False)) and not isinstance(m, _SUPPORTED):
            reason = reason or f"touches unsupported layer {name} ({type(m).__name__})"
        if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.out_channels and m.in_channels != m.out_channels:
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
        output=output,
        out_layers=tuple(dict.fromkeys(outs)),
        in_layers=tuple(dict.fromkeys(ins)),
    )


# (parameter name, dim, indices along dim, root channel of each index): one slice a group owns
Slice = tuple[str, int, list[int], list[int]]


def _slices(dg, group, names: dict[nn.Module, str]) -> Iterator[Slice]:
    for it in group:
        m = it.dep.target.module
        name = names.get(m) if isinstance(m, nn.Module) else None
        if name is None:
            continue
        is_out = dg.is_out_channel_pruning_fn(it.dep.handler)
        idxs, roots = list(it.idxs), list(it.root_idxs)
        prefix = f"{name}." if name else ""
        if isinstance(m, nn.modules.conv._ConvNd):
            wdim_out = 1 if m.transposed else 0
            if is_out or is_depthwise(m):
                yield prefix + "weight", wdim_out, idxs, roots
                if m.bias is not None:
                    yield prefix + "bias", 0, idxs, roots
            else:
                per_group = m.in_channels // m.groups
                local = [i % per_group for i in idxs] if m.groups > 1 else idxs
                yield prefix + "weight", 1 - wdim_out, local, roots
        elif isinstance(m, nn.Linear):
            if is_out:
                yield prefix + "weight", 0, idxs, roots
                if m.bias is not None:
                    yield prefix + "bias", 0, idxs, roots
            else:
                yield prefix + "weight", 1, idxs, roots
        elif isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.weight is not None:
                yield prefix + "weight", 0, idxs, roots
            if m.bias is not None:
                yield prefix + "bias", 0, idxs, roots
        elif any(True for _ in m.parameters(recurse=False)):
            raise TypeError(f"cannot mask channels of {name} ({type(m).__name__}): its groups should be fixed")


def _all_groups(dg, model: nn.Module) -> list:
    """Torch-Pruning's channel groups; where its grouping fails inside its own code (a GRU after a Conv1d: IndexError in
    its index mapping, exit 3), a UserError naming the layers it does not follow, or the failure."""
    from toolchain.prune.channel_movers import torch_pruning_frames

    try:
        return list(dg.get_all_groups())
    except Exception as exc:
        if not torch_pruning_frames(exc):
            raise
        recurrent = [f"{n} ({type(m).__name__})" for n, m in model.named_modules() if isinstance(m, nn.RNNBase)]
        held = f": it holds {', '.join(recurrent[:3])}, a recurrent layer the dependency graph does not follow" if recurrent else ""
        raise UserError(f"pruning cannot group this model's channels (Torch-Pruning's dependency graph fails: {type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:200]}){held}; compress another architecture") from exc


class ChannelGraph:
    """One model's channel structure, from one dependency graph.

    ``groups`` are the prunable channel groups in module order (``all_groups`` with the fixed ones);
    ``slices[key]`` every parameter slice a group's channels own. A plan can be checked (``validate``),
    sized without building it (``count_params``, ``count_macs``), turned into masks (``mask_tensors``), or carried out
    on the model in place (``prune``: afterwards the graph describes a model that no longer exists).
    """

    def __init__(self, model: nn.Module, example_input: Any, keep_whole: dict[str, str] | None = None):
        """``keep_whole``: {group key: why} for groups a check outside the graph found it cannot follow
        (toolchain.prune.shrink.unfollowed_groups): described as fixed, with that reason."""
        self.model, self.example = model, example_input
        self.dg = build_graph(model, example_input)
        self._names = {m: n for n, m in model.named_modules()}
        order = {m: i for i, m in enumerate(model.modules())}
        sinks, shared = _sink_nodes(self.dg), _shared_parameter_owners(model)
        seen: set[str] = set()
        described = []
        for g in _all_groups(self.dg, model):
            root = _root_of(self.dg, g, order)
            if self._names[root] in seen:
                continue
            seen.add(self._names[root])
            if root is not g[0].dep.target.module:  # re-root so indices live in the key module's space
                g = _full_group(self.dg, root, list(range(self.dg.get_out_channels(root))))
            described.append((_describe(self.dg, g, root, self._names, sinks, shared), root))
        described.sort(key=lambda cr: order[cr[1]])
        self.all_groups = [dataclasses.replace(cg, prunable=False, reason=keep_whole[cg.key]) if cg.prunable and cg.key in (keep_whole or {})
                           else cg for cg, _ in described]
        # the channel movers whose channels stay whole (empty for a model Torch-Pruning follows throughout)
        self.kept_whole = sorted(getattr(self.dg, "kept_whole", {}).values())
        self.groups = [cg for cg in self.all_groups if cg.prunable]
        self.slices: dict[str, list[Slice]] = {cg.key: list(_slices(self.dg, self.items(cg.key), self._names)) for cg in self.groups}
        self._shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
        self._macs = None
        self._pruned = False

    def items(self, key: str, idxs: list[int] | None = None):
        """The Torch-Pruning group of ``key``'s root channels ``idxs`` (all of them by default)."""
        root = self.model.get_submodule(key)
        return _full_group(self.dg, root, list(range(self.dg.get_out_channels(root))) if idxs is None else idxs)

    def group(self, key: str) -> ChannelGroup:
        return next(g for g in self.all_groups if g.key == key)

    def groups_kept_whole(self) -> dict[str, str]:
        """The channel groups kept at full size for a reason other than being the classes' outputs: key -> why."""
        return {g.key: g.reason.removesuffix(": kept whole") for g in self.all_groups if not g.prunable and not g.output}

    def validate(self, plan: ChannelPlan) -> ChannelPlan:
        return validate_plan(self.all_groups, plan)

    def removed(self, plan: ChannelPlan) -> dict[tuple[str, int], set[int]]:
        """{(parameter, dim): indices the plan removes along dim}."""
        out: dict[tuple[str, int], set[int]] = {}
        for key, idxs in plan.items():
            roots = set(idxs)
            for pname, dim, sl, rt in self.slices[key]:
                out.setdefault((pname, dim), set()).update(i for i, r in zip(sl, rt) if r in roots)
        return out

    def _shapes_after(self, plan: ChannelPlan) -> dict[str, list[int]]:
        removed = self.removed(plan)
        return {n: [d - len(removed.get((n, i), ())) for i, d in enumerate(s)] for n, s in self._shapes.items()}

    def count_params(self, plan: ChannelPlan) -> int:
        """Parameters of the model this plan would leave: exactly what shrinking and counting gives,
        without a copy or a second graph."""
        return sum(math.prod(s) for s in self._shapes_after(plan).values())

    def count_macs(self, plan: ChannelPlan) -> int:
        """Multiply-accumulates of the model this plan would leave (toolchain.prune.macs)."""
        if self._macs is None:
            from toolchain.prune.macs import MacModel

            self._macs = MacModel(self.model, self.example)
        return self._macs.count(self._shapes, self._shapes_after(plan))

    def mask_tensors(self, plan: ChannelPlan) -> dict[str, torch.Tensor]:
        """{parameter name: 0/1 tensor of its shape} for the parameters the plan touches; 0 marks what the
        plan removes. Multiply params (and grads) by these after each optimizer step to keep them removed."""
        plan = self.validate(plan)
        params = dict(self.model.named_parameters())
        masks: dict[str, torch.Tensor] = {}
        for (pname, dim), idxs in self.removed(plan).items():
            p = params[pname]
            mask = masks.setdefault(pname, torch.ones_like(p, dtype=p.dtype))
            mask.index_fill_(dim, torch.as_tensor(sorted(idxs), dtype=torch.long, device=p.device), 0)
        return masks

    def prune(self, plan: ChannelPlan) -> nn.Module:
        """Remove the plan's channels from the model, in place (Torch-Pruning group.prune), in group order so
        the result depends on the plan only. The graph is spent afterwards."""
        if self._pruned:
            raise RuntimeError("this graph's model was pruned already: build a new ChannelGraph")
        plan = self.validate(plan)
        for key, idxs in plan.items():
            group = self.items(key, idxs)
            if not self.dg.check_pruning_group(group):
                raise ValueError(f"plan for channel group {key!r} would empty a layer")
            group.prune()
        self._pruned = True
        return self.model


def channel_groups(model: nn.Module, example_input: Any, include_fixed: bool = False) -> list[ChannelGroup]:
    """The model's channel groups in module order: only the prunable ones unless ``include_fixed``."""
    graph = ChannelGraph(model, example_input)
    return graph.all_groups if include_fixed else graph.groups
