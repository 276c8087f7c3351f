"""A round's channel plan: which channels to remove so the model meets its size (and MAC) target.

Two allocations. uniform: each group loses the same share of its lowest-scoring channels. global: a
share of all channels goes, lowest score over its group's mean first (as Torch-Pruning's global pruning
ranks them), so layers whose channels matter less give more. The share is bisected until the model the
plan leaves is under the target (sized exactly by the ChannelGraph, no model built), with channel counts
rounded to the CPU kernels' block where asked, and rounded-away channels given back where they cost least.
"""

from __future__ import annotations

import torch

from toolchain.config import ALLOCATIONS
from toolchain.prune.channel_plan import ChannelGroup, ChannelPlan
from toolchain.prune.graph import ChannelGraph

__all__ = ["plan_for_target", "plan_from_scores", "rounded_keep"]


def rounded_keep(size: int, keep: int, round_to: int) -> int:
    """``keep`` moved to the nearest multiple of ``round_to`` (at least one multiple, at most ``size``).
    CPU kernels (onnxruntime's NCHWc and int8 convolutions, XNNPACK) work in blocks of 8-16 channels:
    21 channels cost about what 24 do. Groups smaller than one multiple are left as they are; an
    8-channel layer stays at 8 (cutting it to 7 made a measured int8 model slower, not faster)."""
    if round_to <= 1 or size < round_to:
        return keep
    return min(size, max(round_to, round_to * int(round(keep / round_to))))


def plan_from_scores(groups: list[ChannelGroup], scores: dict[str, torch.Tensor], fraction: float, round_to: int = 1,
                     allocation: str = "uniform") -> ChannelPlan:
    """Remove the lowest-scoring channels of each prunable group (scores per root channel; for grouped convs the
    scores are summed per block offset): uniform, ``fraction`` of each group's; global, ``fraction`` of all channels,
    lowest score over their group's mean first. Every group keeps a channel; groups without scores
    are left whole. ``round_to`` > 1 rounds each ungrouped group's surviving channel count to a multiple of it."""
    if allocation not in ALLOCATIONS:
        raise ValueError(f"allocation must be one of {', '.join(ALLOCATIONS)}, not {allocation!r}")
    block_scores = {}
    for g in groups:
        if not g.prunable or g.key not in scores:
            continue
        s = torch.as_tensor(scores[g.key], dtype=torch.float64).flatten()
        if s.numel() != g.size:
            raise ValueError(f"scores for {g.key!r} have {s.numel()} entries, the group has {g.size} channels")
        block_scores[g.key] = s.view(g.blocks, g.block_size).sum(0)
    removals = _global_removals(block_scores, fraction) if allocation == "global" else None
    plan: ChannelPlan = {}
    for g in groups:
        if g.key not in block_scores:
            continue
        s = block_scores[g.key]
        k = int(round(fraction * g.block_size)) if removals is None else removals[g.key]
        k = min(k, g.block_size - 1)
        if g.blocks == 1:
            k = g.size - rounded_keep(g.size, g.size - k, round_to)
        if k <= 0:
            continue
        offsets = torch.argsort(s, stable=True)[:k].tolist()
        plan[g.key] = g.expand_offsets(offsets)
    return plan


THIN_SHARE = 1 / 16  # of a group's channels (8 or more), below which a round's plan is said: one prunable layer among
# layers kept whole (an LSTM head) was cut from 32 channels to 1 to chase the size goal, and no retraining recovered it


def thinned(groups: list[ChannelGroup], plan: ChannelPlan) -> list[tuple[str, int, int]]:
    """(key, channels, kept) of each group of 8 or more channels that ``plan`` leaves at THIN_SHARE of them or fewer."""
    return [(g.key, g.size, g.size - len(plan[g.key])) for g in groups
            if g.key in plan and g.size >= 8 and g.size - len(plan[g.key]) <= g.size * THIN_SHARE]


def _global_removals(block_scores: dict[str, torch.Tensor], fraction: float) -> dict[str, int]:
    """How many channels each group loses when ``fraction`` of all channels go, lowest score over their group's mean
    first (ties in a stable order, so that the count moves one channel at a time: a layer of equal scores is not
    dropped at once)."""
    ranked = sorted((float(v) / (float(s.abs().mean()) + 1e-12), key) for key, s in block_scores.items() for v in s)
    removals = dict.fromkeys(block_scores, 0)
    for _, key in ranked[: int(round(fraction * len(ranked)))]:
        removals[key] += 1
    return removals


def _fits(graph: ChannelGraph, plan: ChannelPlan, target_params: int, target_macs: int | None) -> bool:
    return graph.count_params(plan) <= target_params and (target_macs is None or graph.count_macs(plan) <= target_macs)


def plan_for_target(graph: ChannelGraph, scores, target_params: int, round_to: int = 1, target_macs: int | None = None,
                    allocation: str = "uniform") -> ChannelPlan:
    """The per-group (uniform) or overall (global) fraction, bisected, whose removal leaves at most about target_params
    (and target_macs multiply-accumulates, when given), with channel counts rounded to multiples of
    ``round_to`` unless even the smallest rounded model is over the target (small nets), in which case
    counts are not rounded."""
    lo, hi = 0.0, 0.99
    best = plan_from_scores(graph.groups, scores, hi, round_to, allocation)
    if round_to > 1 and not _fits(graph, best, target_params, target_macs):
        return plan_for_target(graph, scores, target_params, target_macs=target_macs, allocation=allocation)
    for _ in range(14):
        mid = (lo + hi) / 2
        plan = plan_from_scores(graph.groups, scores, mid, round_to, allocation)
        if _fits(graph, plan, target_params, target_macs):
            best, hi = plan, mid
        else:
            lo = mid
    return _grow_to_target(graph, scores, best, target_params, round_to, target_macs) if round_to > 1 else best


def _grow_to_target(graph: ChannelGraph, scores, plan: ChannelPlan, target_params: int, round_to: int, target_macs: int | None = None) -> ChannelPlan:
    """Rounded counts move in steps of ``round_to``, so the uniform plan can land well under the target
    (7.6% for a 10% goal on the Fashion-MNIST CNN). Give channels back, ``round_to`` at a time, to the
    group whose best removed channels score highest against its mean, while the model stays under
    (both targets: with a MAC target, channels go back where they cost few MACs, the late layers)."""
    by_key = {g.key: g for g in graph.groups}
    plan = {k: list(v) for k, v in plan.items()}
    while True:
        candidates = []
        for key, removed in plan.items():
            g = by_key[key]
            if g.blocks != 1 or g.size < round_to or len(removed) < round_to or (g.size - len(removed)) % round_to:
                continue  # only groups that were rounded, and stay rounded
            s = torch.as_tensor(scores[key], dtype=torch.float64).flatten()
            back = sorted(removed, key=lambda i: -float(s[i]))[:round_to]
            value = float(s[back].mean() / (s.abs().mean() + 1e-12))
            given_back = set(back)
            candidates.append((value, key, [i for i in removed if i not in given_back]))
        for _, key, still_removed in sorted(candidates, key=lambda c: -c[0]):
            grown = {**plan, key: still_removed}
            if not still_removed:
                del grown[key]
            if _fits(graph, grown, target_params, target_macs):
                plan = grown
                break
        else:
            return plan
