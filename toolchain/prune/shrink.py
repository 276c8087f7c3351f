"""Channel masks and physical channel removal, driven by a ChannelPlan (see toolchain.prune.graph).

* ``channel_mask_tensors`` / ``apply_channel_mask``: zero, in place, every parameter slice the plan's
  channels own across their whole group -- conv/linear output rows and biases, BatchNorm weight AND bias,
  depthwise filters, and the consumers' input columns -- so a masked model computes exactly what the
  shrunk one will (a removed channel outputs exactly 0, even where BN had a non-zero shift).
* ``shrink``: a deep copy with the channels physically removed by Torch-Pruning's ``group.prune``.
  Deterministic in the plan: the trained net and its rewind copy shrink to the same shapes.
* ``dead_channels``: channels whose output is provably the constant 0 (weight-granularity lottery
  tickets leave them behind), as a plan, so they can be removed without changing the function.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.models.modes import evaluating
from toolchain.prune.channel_plan import ChannelPlan
from toolchain.prune.graph import ChannelGraph, is_depthwise

__all__ = ["apply_channel_mask", "channel_mask_tensors", "dead_channels", "shrink"]


def _forward(model: nn.Module, example_input: Any):
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)


def _eval_output(model: nn.Module, example_input: Any):
    with evaluating(model), torch.no_grad():
        return _forward(model, example_input)


def channel_mask_tensors(model: nn.Module, plan: ChannelPlan, example_input: Any, graph: ChannelGraph | None = None) -> dict[str, torch.Tensor]:
    """{parameter name: 0/1 tensor of its shape} for the parameters the plan touches (see ChannelGraph.mask_tensors)."""
    return (graph or ChannelGraph(model, example_input)).mask_tensors(plan)


def apply_channel_mask(model: nn.Module, plan: ChannelPlan, example_input: Any, graph: ChannelGraph | None = None) -> dict[str, torch.Tensor]:
    """Zero, in place, every parameter slice the plan's channels own across their groups; returns the masks."""
    masks = channel_mask_tensors(model, plan, example_input, graph)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for pname, mask in masks.items():
            params[pname].mul_(mask)
    return masks


def checked(pruned: nn.Module, example_input: Any) -> nn.Module:
    """A freshly shrunk model must run: a coupling Torch-Pruning missed (one that removing a single channel before
    pruning did not show: unfollowed_groups) fails loudly, as the model's limit (exit 2), never as a broken net."""
    try:
        _eval_output(pruned, example_input)
    except Exception as exc:
        raise UserError(f"pruning cannot follow this model: after its channels were removed it no longer runs ({type(exc).__name__}: "
                        f"{' '.join(str(exc).split())[:160]}); its forward uses channels in a way the dependency graph does not "
                        "see (a fixed channel count, an index, a view across channels)") from exc
    return pruned


def shrink(model: nn.Module, plan: ChannelPlan, example_input: Any) -> nn.Module:
    """A deep copy of ``model`` with the plan's channels physically removed (one dependency graph, on the
    copy). The input model is untouched; the copy keeps the input's train/eval mode."""
    pruned = copy.deepcopy(model)
    return checked(ChannelGraph(pruned, example_input).prune(plan), example_input)


def _outputs(model: nn.Module, x: Any) -> list[torch.Tensor]:
    return [t for t in torch.utils._pytree.tree_leaves(_eval_output(model, x)) if isinstance(t, torch.Tensor)]


def _masked_copy(model: nn.Module, masks: dict[str, torch.Tensor]) -> nn.Module:
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for pname, p in masked.named_parameters():  # a graph's masks apply to any copy of its model's shape
            if pname in masks:
                p.mul_(masks[pname])
    return masked


def _zero_at(t: torch.Tensor | None, dim: int, i: int) -> bool:
    return t is None or not bool(t.select(dim, i).any())


def dead_channels(model: nn.Module, example_input: Any, verify: bool = True, keep_whole: dict[str, str] | None = None) -> ChannelPlan:
    """Channels whose output is provably the constant 0 in both train and eval mode, as a plan.

    A root channel is dead when, across its group, every producing conv/linear row and its bias are zero,
    every depthwise conv on it has zero bias, and every BatchNorm maps 0 to 0 (bias == 0 and either
    weight == 0 or running_mean == 0). A channel with zero conv weights but a non-zero BN bias (or a
    non-zero running mean under a non-zero BN weight) is a *constant*, not zero, and is NOT dead:
    removing it would change the function. Weight-granularity masks should therefore also mask the BN
    weight/bias of fully pruned filters if they want those channels removed. Activations between the
    layers are assumed to map 0 to 0 (ReLU, ReLU6, SiLU, GELU, max/avg pooling, residual additions);
    with ``verify`` the result is checked on ``example_input`` and a RuntimeError raised if removing the
    channels changes the output. At least one channel (block offset) is kept in every group.
    """
    graph = ChannelGraph(model, example_input, keep_whole)
    dg = graph.dg
    names = {m: n for n, m in model.named_modules()}
    plan: ChannelPlan = {}
    for cg in graph.groups:
        group = graph.items(cg.key)
        dead = torch.ones(cg.size, dtype=torch.bool)
        for it in group:
            m = it.dep.target.module
            if not isinstance(m, nn.Module) or m not in names:
                continue
            is_out = dg.is_out_channel_pruning_fn(it.dep.handler)
            for i, r in zip(it.idxs, it.root_idxs):
                if not dead[r]:
                    continue
                if isinstance(m, nn.modules.batchnorm._BatchNorm):
                    bias_zero = _zero_at(m.bias, 0, i)
                    scale_zero = _zero_at(m.weight, 0, i) if m.weight is not None else False
                    mean_zero = m.running_mean is None or not bool(m.running_mean[i] != 0)
                    ok = bias_zero and (scale_zero or mean_zero)
                elif isinstance(m, nn.modules.conv._ConvNd) and is_depthwise(m):
                    ok = _zero_at(m.bias, 0, i)  # its input channel is in this group, hence zero
                elif isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) and is_out:
                    wdim = 1 if getattr(m, "transposed", False) else 0
                    ok = _zero_at(m.weight, wdim, i) and _zero_at(m.bias, 0, i)
                else:
                    continue  # input columns of consumers do not decide the channel's value
                if not ok:
                    dead[r] = False
        dead_offsets = dead.view(cg.blocks, cg.block_size).all(0).nonzero().flatten().tolist()
        if len(dead_offsets) >= cg.block_size:
            dead_offsets = dead_offsets[1:]  # keep one channel so no layer is emptied
        if dead_offsets:
            plan[cg.key] = cg.expand_offsets(dead_offsets)
    if verify and plan:
        ref_t, got_t = _outputs(model, example_input), _outputs(_masked_copy(model, graph.mask_tensors(plan)), example_input)
        if not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ref_t, got_t)):
            raise RuntimeError(
                "dead_channels: masking the channels found changed the output; an activation that does "
                "not map 0 to 0 probably sits in one of their groups"
            )
    return plan


def _removal_differs(model: nn.Module, plan: ChannelPlan, example_input: Any, probe: Any) -> str:
    """Why removing ``plan`` physically computes something other than masking it ("" when they agree)."""
    graph = ChannelGraph(copy.deepcopy(model), example_input)
    masked = _masked_copy(model, graph.mask_tensors(plan))
    expected = graph.count_params(plan)
    try:
        shrunk = graph.prune(plan)
        got = _outputs(shrunk, probe)
    except Exception as exc:  # a coupling the graph missed: the shrunk net no longer fits together
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}".rstrip(": ")
    actual = sum(p.numel() for p in shrunk.parameters())
    if actual != expected:  # e.g. a chunk whose halves meet in a product: its pair goes too, uncounted
        return f"the removal leaves {actual:,} parameters where the graph counts {expected:,}: other channels go with it"
    ref = _outputs(masked, probe)
    for a, b in zip(ref, got):
        if a.shape != b.shape:
            return f"the output's shape changes from {tuple(a.shape)} to {tuple(b.shape)}"
        scale = float(a.abs().max()) if a.numel() else 0.0  # relative: logits of 1e-5 differ by 1e-6, not by 1e-4
        if not torch.allclose(a, b, rtol=1e-4, atol=1e-4 * scale):
            return f"the outputs differ by up to {float((a - b).abs().max()):.3g}"
    return ""


def unfollowed_groups(model: nn.Module, example_input: Any, probe: Any, groups: list | None = None) -> dict[str, str]:
    """{group key: what goes wrong} for the prunable channel groups whose physical removal does not compute what
    masking them computes, on ``probe`` rows (eval mode). Empty for every model Torch-Pruning follows.

    A forward that uses channels by position through an operation the dependency graph does not see (an
    ``index_add_``/``index_select`` by a fixed index buffer, a ``flip`` or a slice of the channel dimension) gets
    a graph that looks sound and a removal that pairs the next layer's weights with the wrong channels, or no
    longer runs. Removing each group's first channel, then its last (one at a time: a flip maps a symmetric pair
    onto itself; a slice [:, :8] leaves the last unused) -- all groups at once, group by group only when that
    fails -- finds it before any pruning. Those groups can be kept whole; when the other groups together still do
    not remove exactly, a UserError says so (exit 2). ``model`` must be deterministic in eval mode (the pipeline
    checks it first). ``groups``: the prunable groups of the model's ChannelGraph, where the caller has built it."""
    groups = ChannelGraph(copy.deepcopy(model), example_input).groups if groups is None else groups
    found: dict[str, str] = {}
    for position in (0, -1):
        plan = {g.key: g.expand_offsets([range(g.block_size)[position]]) for g in groups if g.block_size > 1 and g.key not in found}
        if not plan or not _removal_differs(model, plan, example_input, probe):
            continue
        for key, idxs in plan.items():
            why = _removal_differs(model, {key: idxs}, example_input, probe)
            if why:
                found[key] = why
        rest = {k: v for k, v in plan.items() if k not in found}
        why = _removal_differs(model, rest, example_input, probe) if rest else ""
        if why or not found:
            raise UserError(f"pruning cannot follow this model: removing a channel of each of {len(rest)} channel groups at once does not "
                            f"give the model that zeroing them gives ({why}), though each alone does; its forward uses channels by "
                            "position through an operation the dependency graph does not see (an index buffer, a gather or scatter, a flip)")
    return found
