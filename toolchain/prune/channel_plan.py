"""Channel plans and what makes one legal: a ``ChannelPlan`` maps a channel group's key to the root-channel
indices to remove (plain JSON); a ``ChannelGroup`` describes one group (its size, its grouped-conv blocks,
whether it may be pruned at all) and checks a removal against it. ``toolchain.prune.graph`` finds the groups."""

from __future__ import annotations

import dataclasses
from typing import Iterable

import torch

ChannelPlan = dict[str, list[int]]


@dataclasses.dataclass(frozen=True)
class ChannelGroup:
    """One coupled channel set. ``key`` is the root module's qualified name (the plan key)."""

    key: str
    size: int  # channels of the root module (valid indices: 0..size-1)
    blocks: int = 1  # >1: remove the same offsets from each of `blocks` equal consecutive blocks
    prunable: bool = True
    reason: str = ""  # why not prunable
    output: bool = False  # fixed because its channels are the model's classes (the expected case, not a limitation)
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
