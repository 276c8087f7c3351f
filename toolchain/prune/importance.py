"""Channel importance: plain magnitude (the class-agnostic baseline) and cwtool's class-aware score.

Class-aware score of a channel = its magnitude, plus two optional terms, each normalised by its
group's mean:
- the paper's magnitude increase |W_T| - |W_0| over the last retraining (W_0: the weights that
  retraining started from -- the rewind point, or the shrunk survivors when fine-tuning): channels
  the class-dependent loss grew are the ones it relies on;
- the first-order (Taylor) estimate of how much removing the channel changes the *protected-class*
  loss: the square of sum(theta * dL_prot/dtheta) over every parameter slice the channel owns,
  averaged over batches of training data (Molchanov et al. 2019's criterion, aimed at the classes
  that matter). Removing a channel zeroes exactly those slices (see shrink.apply_channel_mask), so
  the estimate is of the real edit. Only the training split is used.
With both weights 0 the score is plain magnitude: the class-agnostic baseline.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from toolchain.prune.graph import ChannelGraph
from toolchain.prune.loss import squared_hinge_rank_loss


def channel_slices(graph: ChannelGraph) -> list[tuple[str, int, list]]:
    """For each prunable group: (key, size, [(param name, dim, indices, root channels)])."""
    return [(g.key, g.size, graph.slices[g.key]) for g in graph.groups]


def per_channel(slices, elementwise: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Sum per-parameter scores over each channel's parameter slices (see ``channel_slices``).

    Sums keep their sign, so a Taylor estimate (theta * grad) aggregates correctly; magnitudes are
    non-negative already."""
    scores: dict[str, torch.Tensor] = {}
    for key, size, parts in slices:
        total = torch.zeros(size, dtype=torch.float64)
        for pname, dim, idxs, roots in parts:
            values = elementwise.get(pname)
            if values is None:
                continue
            picked = values.detach().double().cpu().index_select(dim, torch.as_tensor(idxs, dtype=torch.long))
            per_index = picked.movedim(dim, 0).reshape(len(idxs), -1).sum(1)
            total.index_add_(0, torch.as_tensor(roots, dtype=torch.long), per_index)
        scores[key] = total
    return scores


def magnitude_scores(graph: ChannelGraph, init_state: dict | None = None, norm: int = 1) -> dict[str, torch.Tensor]:
    """Sum of |W|^norm over each channel's weights in the graph's model (norm 2: squared, as Torch-Pruning's
    MagnitudeImportance ranks channels); with ``init_state`` the paper's magnitude increase |W_T| - |W_0|."""
    elementwise = {}
    for name, p in graph.model.named_parameters():
        value = p.detach().abs()
        if init_state is not None and name in init_state and init_state[name].shape == p.shape:
            value = value - init_state[name].to(p.device).abs()
        elif init_state is None and norm != 1:
            value = value.pow(norm)
        elementwise[name] = value
    return per_channel(channel_slices(graph), elementwise)


def protected_taylor_scores(
    graph: ChannelGraph,
    x: np.ndarray,
    y: np.ndarray,
    protected: list[int],
    batches: int = 8,
    batch_size: int = 128,
    seed: int = 0,
    device: torch.device | None = None,
) -> dict[str, torch.Tensor]:
    """Mean over batches of (sum over a channel's parameters of theta * dL_prot/dtheta)^2, where
    L_prot is the CE of the protected classes' samples plus the protected rank loss."""
    model = graph.model
    device = device or next(model.parameters()).device
    rng = np.random.default_rng(seed)
    is_prot = np.isin(y, protected)
    # Half of each batch from the protected classes: the estimate is about them, and they may be rare.
    prot_idx, other_idx = np.flatnonzero(is_prot), np.flatnonzero(~is_prot)
    slices = channel_slices(graph)
    total: dict[str, torch.Tensor] | None = None
    model.eval()  # BN statistics fixed: the score is about the deployed function
    for _ in range(batches):
        half = batch_size // 2
        idx = np.concatenate([rng.choice(prot_idx, min(half, len(prot_idx)), replace=False), rng.choice(other_idx, min(half, len(other_idx)), replace=False)])
        xb = torch.as_tensor(x[idx], dtype=torch.float32, device=device)
        yb = torch.as_tensor(y[idx], dtype=torch.long, device=device)
        model.zero_grad(set_to_none=True)
        logits = model(xb).float()
        mask = torch.isin(yb, torch.as_tensor(protected, device=device))
        loss = nn.functional.cross_entropy(logits[mask], yb[mask]) if mask.any() else logits.sum() * 0
        loss = loss + sum(squared_hinge_rank_loss(logits, yb, k) for k in protected)
        loss.backward()
        elementwise = {n: p.detach() * p.grad for n, p in model.named_parameters() if p.grad is not None}
        batch_scores = per_channel(slices, elementwise)
        batch_scores = {k: v.pow(2) for k, v in batch_scores.items()}
        total = batch_scores if total is None else {k: total[k] + batch_scores[k] for k in total}
    model.zero_grad(set_to_none=True)
    return {k: v / batches for k, v in (total or {}).items()}


def normalised(scores: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v / (v.abs().mean() + 1e-12) for k, v in scores.items()}


def channel_scores(
    graph: ChannelGraph, x, y, protected, start_state: dict | None = None, increase_weight: float = 0.0, taylor_weight: float = 0.0, seed: int = 0,
    norm: int = 1,
) -> dict[str, torch.Tensor]:
    """Magnitude (``norm``: 1 sums |W|, 2 sums W^2), plus ``increase_weight`` x the magnitude increase since ``start_state``
    (skipped without one: round 1 has no retraining behind it) plus ``taylor_weight`` x the protected Taylor term."""
    use_increase = bool(increase_weight) and start_state is not None
    if not use_increase and not taylor_weight:
        return magnitude_scores(graph, norm=norm)
    total = normalised(magnitude_scores(graph, norm=norm))
    terms = []
    if use_increase:
        terms.append((increase_weight, normalised(magnitude_scores(graph, start_state))))
    if taylor_weight:
        terms.append((taylor_weight, normalised(protected_taylor_scores(graph, x, y, protected, seed=seed))))
    for weight, term in terms:
        total = {k: v + weight * term.get(k, torch.zeros_like(v)) for k, v in total.items()}
    return total
