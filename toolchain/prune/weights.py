"""The paper's unstructured tickets: layer-wise weight masks each round, then, for the selected ticket,
physical removal of the channels the masks left empty (the rest stays as zeros in dense tensors)."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import torch

from toolchain.models.profile import count_macs, count_params
from toolchain.models.train import seed_everything, train
from toolchain.prune import importance
from toolchain.prune.graph import ChannelGraph
from toolchain.prune.schedule import n_rounds, round_target
from toolchain.prune.shrink import dead_channels, shrink
from toolchain.prune.tickets import PruneResult, Ticket, round_line, select


def run_weight_rounds(pruner, result: PruneResult, teacher) -> PruneResult:
    cfg = pruner.config
    model = copy.deepcopy(pruner.dense)
    graph = ChannelGraph(model, pruner.example, pruner.unfollowed)  # masks keep the shape: one graph serves every round
    prunable = {n: p for n, p in model.named_parameters() if p.dim() > 1}  # conv/linear weights
    masks = {n: torch.ones_like(p) for n, p in prunable.items()}
    total = sum(p.numel() for p in prunable.values())
    start_state = None
    rounds = n_rounds(pruner.config)
    for r in range(1, rounds + 1):
        seed_everything(cfg.seed * 1000 + r)
        keep_fraction = round_target(pruner.config, r)
        scores = weight_scores(model, prunable, masks, pruner.dataset, pruner.protected, cfg, pruner.device, seed=cfg.seed + r, start_state=start_state)
        kept_before = int(sum(int(mask.sum()) for mask in masks.values()))
        for name, score in scores.items():  # layer-wise: every layer keeps keep_fraction of its weights
            keep = max(1, int(round(keep_fraction * score.numel())))
            threshold = torch.topk(score.flatten(), keep).values[-1]
            masks[name] = (score >= threshold).float() * masks[name]
        nonzero = int(sum(int(mask.sum()) for mask in masks.values()))  # training leaves the masks as they are
        if result.tickets and nonzero == kept_before:  # every layer at its floor
            last = result.tickets[-1]
            pruner.log(f"round {r}: nothing left to prune (round {last.round}'s {last.params:,} non-zero params are as few as "
                       "its layers go); stopping")
            break
        # Channels whose incoming weights are all gone: mask their BN too, so they are truly empty.
        plan = empty_channels(graph, masks)
        extra = graph.mask_tensors(plan) if plan else {}
        all_masks = {**masks, **{n: m * masks.get(n, 1) for n, m in extra.items()}}
        params = dict(model.named_parameters())

        def apply(m, _masks=all_masks, _params=params):
            with torch.no_grad():
                for n, mask in _masks.items():
                    _params[n].mul_(mask)

        apply(model)
        gamma = 1.0 if r == 1 else cfg.gamma
        loss = pruner.loss(gamma, teacher)
        tcfg = pruner.train_config(cfg.epochs, cfg.lr, cfg.seed * 1000 + r)
        start_state = weights_copy(model) if cfg.increase_weight else None
        train(model, pruner.dataset.x_train, pruner.dataset.y_train, tcfg, loss_fn=loss, after_step=apply, device=pruner.device,
              progress=pruner.progress, description=f"round {r}/{rounds} retrain", say_pace=pruner.record)
        dense_rest = pruner.dense_params - total
        raw, at_op, _, offsets = pruner.evaluate(model)
        ticket = Ticket(r, copy.deepcopy(model), {k: list(range(n)) for k, n in pruner.dense_sizes.items()}, nonzero + dense_rest,
                        count_macs(model, pruner.example), at_op, raw, offsets, pruner.within_budget(at_op), sparsity=1 - nonzero / total)
        result.tickets.append(ticket)
        pruner.files.save_round(ticket, pruner.multipliers)
        pruner.log(round_line(ticket, pruner.dense_params) + f", weight sparsity {ticket.sparsity:.1%}")
        if not ticket.within_budget:
            break
    chosen = select(result).selected
    # Physically remove the channels the masks emptied; the round's ticket keeps its non-zero count, the
    # selected one is a shrunk copy with stored counts.
    plan = dead_channels(chosen.model, pruner.example, keep_whole=pruner.unfollowed)
    shrunk = shrink(chosen.model, plan, pruner.example)
    result.selected = replace(
        chosen, model=shrunk, params=count_params(shrunk), macs=count_macs(shrunk, pruner.example),
        survivors={k: [i for i in range(n) if i not in set(plan.get(k, []))] for k, n in pruner.dense_sizes.items()})
    pruner.log(f"weight ticket: {chosen.params:,} non-zero parameters; {sum(len(v) for v in plan.values())} empty channels removed "
               f"-> {result.selected.params:,} stored parameters")
    return result


def weight_scores(model, prunable, masks, dataset, protected, cfg, device, seed, start_state=None) -> dict[str, torch.Tensor]:
    """Per-weight scores: |W| (plain), plus the magnitude increase |W| - |W_0| over the last retraining
    and/or the protected-class Taylor term (theta*grad)^2, each normalised per layer (class-aware), as
    importance.channel_scores does per channel. Pruned weights score -inf so they stay pruned."""
    scores = {n: p.detach().abs() for n, p in prunable.items()}
    terms = []
    if cfg.increase_weight and start_state is not None:
        terms.append((cfg.increase_weight, {n: p.detach().abs() - start_state[n].abs() for n, p in prunable.items()}))
    if cfg.class_aware and cfg.taylor_weight:
        rng = np.random.default_rng(seed)
        idx = rng.choice(len(dataset.y_train), min(512, len(dataset.y_train)), replace=False)
        xb = torch.as_tensor(dataset.x_train[idx], device=device)
        yb = torch.as_tensor(dataset.y_train[idx], dtype=torch.long, device=device)
        model.eval()
        model.zero_grad(set_to_none=True)
        logits = model(xb).float()
        mask = torch.isin(yb, torch.as_tensor(protected, device=device))
        loss = torch.nn.functional.cross_entropy(logits[mask], yb[mask]) if mask.any() else logits.sum() * 0
        loss.backward()
        terms.append((cfg.taylor_weight, {n: (p.detach() * p.grad).pow(2) if p.grad is not None else torch.zeros_like(p) for n, p in prunable.items()}))
        model.zero_grad(set_to_none=True)
    if terms:
        scores = importance.normalised(scores)
        for weight, term in terms:
            term = importance.normalised(term)
            scores = {n: s + weight * term[n] for n, s in scores.items()}
    return {n: torch.where(masks[n] > 0, s, torch.full_like(s, -float("inf"))) for n, s in scores.items()}


def weights_copy(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def empty_channels(graph: ChannelGraph, masks) -> dict[str, list[int]]:
    """Root channels of prunable groups whose producing weights are entirely masked."""
    plan = {}
    for g in graph.groups:
        producer = masks.get(f"{g.key}.weight")
        if producer is None:
            continue
        alive = producer.flatten(1).sum(1) if producer.dim() > 1 else producer
        empty = [i for i in range(g.size) if float(alive[i]) == 0.0]
        if g.blocks == 1 and 0 < len(empty) < g.size:
            plan[g.key] = empty
    return plan


def reinitialised(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``model`` with every layer's parameters drawn afresh: the rewind point of a random-reinit control."""
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters") and m is not fresh:
            m.reset_parameters()
    return fresh
