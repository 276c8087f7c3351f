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

from toolchain.prune.graph import (
    ChannelGroup,
    ChannelPlan,
    _is_depthwise,
    _iter_groups,
    build_graph,
    full_group,
    validate_plan,
)

__all__ = ["apply_channel_mask", "channel_mask_tensors", "dead_channels", "shrink"]


def _forward(model: nn.Module, example_input: Any):
    if isinstance(example_input, (tuple, list)):
        return model(*example_input)
    if isinstance(example_input, dict):
        return model(**example_input)
    return model(example_input)


def _eval_output(model: nn.Module, example_input: Any):
    modes = {m: m.training for m in model.modules()}
    model.eval()
    try:
        with torch.no_grad():
            return _forward(model, example_input)
    finally:
        for m, t in modes.items():
            m.training = t


def _groups_and_graph(model: nn.Module, example_input: Any):
    dg = build_graph(model, example_input)
    groups = [cg for cg, _ in _iter_groups(model, dg)]
    return dg, groups


def _slices(dg, group, names: dict[nn.Module, str]):
    """Yield (param_name, dim, index_list, root_index_list) for every parameter slice of a DepGraph group."""
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
            if is_out or _is_depthwise(m):
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


def channel_mask_tensors(model: nn.Module, plan: ChannelPlan, example_input: Any) -> dict[str, torch.Tensor]:
    """{parameter name: 0/1 tensor of its shape} for the parameters the plan touches; 0 marks what the
    plan removes. Multiply params (and grads) by these after each optimizer step to keep them removed."""
    dg, groups = _groups_and_graph(model, example_input)
    plan = validate_plan(groups, plan)
    params = dict(model.named_parameters())
    names = {m: n for n, m in model.named_modules()}
    masks: dict[str, torch.Tensor] = {}
    for key, idxs in plan.items():
        group = full_group(dg, model.get_submodule(key), idxs)
        for pname, dim, sl, _ in _slices(dg, group, names):
            p = params[pname]
            mask = masks.setdefault(pname, torch.ones_like(p, dtype=p.dtype))
            mask.index_fill_(dim, torch.as_tensor(sl, dtype=torch.long, device=p.device), 0)
    return masks


def apply_channel_mask(model: nn.Module, plan: ChannelPlan, example_input: Any) -> dict[str, torch.Tensor]:
    """Zero, in place, every parameter slice the plan's channels own across their groups; returns the masks."""
    masks = channel_mask_tensors(model, plan, example_input)
    params = dict(model.named_parameters())
    with torch.no_grad():
        for pname, mask in masks.items():
            params[pname].mul_(mask)
    return masks


def shrink(model: nn.Module, plan: ChannelPlan, example_input: Any) -> nn.Module:
    """A deep copy of ``model`` with the plan's channels physically removed (Torch-Pruning group.prune).
    The input model is untouched; the copy keeps the input's train/eval mode."""
    pruned = copy.deepcopy(model)
    dg, groups = _groups_and_graph(pruned, example_input)
    plan = validate_plan(groups, plan)
    for key, idxs in plan.items():  # group order, so the result depends on the plan only
        group = full_group(dg, pruned.get_submodule(key), idxs)
        if not dg.check_pruning_group(group):
            raise ValueError(f"plan for channel group {key!r} would empty a layer")
        group.prune()
    try:
        _eval_output(pruned, example_input)
    except Exception as exc:  # a coupling Torch-Pruning missed: fail loudly, never hand back a broken net
        raise RuntimeError(f"shrunk model does not run: {exc}") from exc
    return pruned


def _zero_at(t: torch.Tensor | None, dim: int, i: int) -> bool:
    return t is None or not bool(t.select(dim, i).any())


def dead_channels(model: nn.Module, example_input: Any, verify: bool = True) -> ChannelPlan:
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
    dg, groups = _groups_and_graph(model, example_input)
    names = {m: n for n, m in model.named_modules()}
    plan: ChannelPlan = {}
    for cg in groups:
        if not cg.prunable:
            continue
        root = model.get_submodule(cg.key)
        group = full_group(dg, root, list(range(cg.size)))
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
                elif isinstance(m, nn.modules.conv._ConvNd) and _is_depthwise(m):
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
        masked = copy.deepcopy(model)
        apply_channel_mask(masked, plan, example_input)
        ref, got = _eval_output(model, example_input), _eval_output(masked, example_input)
        ref_t = [t for t in torch.utils._pytree.tree_leaves(ref) if isinstance(t, torch.Tensor)]
        got_t = [t for t in torch.utils._pytree.tree_leaves(got) if isinstance(t, torch.Tensor)]
        if not all(torch.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(ref_t, got_t)):
            raise RuntimeError(
                "dead_channels: masking the channels found changed the output; an activation that does "
                "not map 0 to 0 probably sits in one of their groups"
            )
    return plan


def group_for(groups: list[ChannelGroup], key: str) -> ChannelGroup:
    """The group named ``key`` (KeyError if absent)."""
    for g in groups:
        if g.key == key:
            return g
    raise KeyError(key)
