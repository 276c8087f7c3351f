"""Class-aware lottery-ticket rounds: score, prune, rewind, retrain, evaluate on validation; repeat.

Channels are removed physically every round (the model really shrinks). Which original channels
survive is tracked per group, so any earlier snapshot (the rewind point) can be shrunk to the same
survivors, and every round's ticket is saved as a cwtool checkpoint (architecture + channel plan +
weights) that loads on its own. Rounds are seeded by their number, so ``resume`` from the last saved
round finishes with the same result as an uninterrupted run. The test split is never touched here.
"""

from __future__ import annotations

import copy
import json
import math
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolchain.config import PruneConfig
from toolchain.data import Dataset
from toolchain.io import atomic_write_json, staged_path
from toolchain.metrics import evaluate_logits
from toolchain.models.profile import count_macs, count_params
from toolchain.models.train import TrainConfig, pick_device, predict_logits, seed_everything, train
from toolchain.prune import importance
from toolchain.prune.graph import channel_groups, plan_from_scores
from toolchain.prune.loss import ClassDependentLoss
from toolchain.prune.operating_point import PromiseGuard, apply_offsets, choose_offsets, fn_count
from toolchain.prune.shrink import shrink

Survivors = dict[str, list[int]]  # group key -> original channel indices still present
DUAL_LR = 20.0  # Lagrange rule: a validation FN excess of 5% of the class's samples adds 1 to its weight per epoch


@dataclass
class Ticket:
    round: int
    model: nn.Module
    survivors: Survivors
    params: int
    macs: int
    val: dict  # evaluation at the operating point
    val_raw: dict  # evaluation without offsets
    offsets: dict[int, float]
    within_budget: bool
    sparsity: float = 0.0

    def summary(self) -> dict:
        """The ticket without its model, as JSON (rounds/*.json and report.json's prune_round stages)."""
        return {"round": self.round, "params": self.params, "macs": self.macs, "val": self.val, "val_raw": self.val_raw,
                "offsets": {str(k): v for k, v in self.offsets.items()}, "within_budget": self.within_budget}


@dataclass
class PruneResult:
    dense: dict
    tickets: list[Ticket] = field(default_factory=list)
    selected: Ticket | None = None
    budget_met: bool = False
    targets: dict[int, int] = field(default_factory=dict)  # validation FN of the dense model plus the budget
    final: Ticket | None = None  # the selected ticket after final_epochs more (selected, if it stayed within budget)
    guard: PromiseGuard | None = None  # the rule every ticket's operating point met (or not)


def removed_plan(dense_sizes: dict[str, int], survivors: Survivors) -> dict[str, list[int]]:
    """Channel plan (original indices to remove) that turns the dense model into the survivors'."""
    plan = {}
    for key, size in dense_sizes.items():
        keep = set(survivors.get(key, range(size)))
        gone = [i for i in range(size) if i not in keep]
        if gone:
            plan[key] = gone
    return plan


def relative_plan(current: Survivors, target: Survivors) -> dict[str, list[int]]:
    """Local indices (positions in ``current``) of channels that ``target`` no longer has."""
    plan = {}
    for key, present in current.items():
        keep = set(target.get(key, present))
        gone = [pos for pos, orig in enumerate(present) if orig not in keep]
        if gone:
            plan[key] = gone
    return plan


def _fits(model, example, plan, target_params: int, target_macs: int | None) -> bool:
    small = shrink(model, plan, example)
    return count_params(small) <= target_params and (target_macs is None or count_macs(small, example) <= target_macs)


def _plan_for_target(model, example, groups, scores, target_params: int, round_to: int = 1, target_macs: int | None = None) -> dict[str, list[int]]:
    """The uniform per-group fraction (bisection) whose removal leaves at most about target_params
    (and target_macs multiply-accumulates, when given), with channel counts rounded to multiples of
    ``round_to`` unless even the smallest rounded model is over the target (small nets), in which case
    counts are not rounded."""
    lo, hi = 0.0, 0.99
    best = plan_from_scores(groups, scores, hi, round_to)
    if round_to > 1 and not _fits(model, example, best, target_params, target_macs):
        return _plan_for_target(model, example, groups, scores, target_params, target_macs=target_macs)
    for _ in range(14):
        mid = (lo + hi) / 2
        plan = plan_from_scores(groups, scores, mid, round_to)
        if _fits(model, example, plan, target_params, target_macs):
            best, hi = plan, mid
        else:
            lo = mid
    return _grow_to_target(model, example, groups, scores, best, target_params, round_to, target_macs) if round_to > 1 else best


def _grow_to_target(model, example, groups, scores, plan, target_params: int, round_to: int, target_macs: int | None = None) -> dict[str, list[int]]:
    """Rounded counts move in steps of ``round_to``, so the uniform plan can land well under the target
    (7.6% for a 10% goal on the Fashion-MNIST CNN). Give channels back, ``round_to`` at a time, to the
    group whose best removed channels score highest against its mean, while the model stays under
    (both targets: with a MAC target, channels go back where they cost few MACs, the late layers)."""
    by_key = {g.key: g for g in groups}
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
            if _fits(model, example, grown, target_params, target_macs):
                plan = grown
                break
        else:
            return plan


class LotteryPruner:
    def __init__(self, model: nn.Module, dataset: Dataset, protected: list[int], config: PruneConfig, run_dir: Path | None = None, progress=None, log=print):
        self.config = config.effective()
        self.dataset = dataset
        self.protected = list(protected)
        self.device = pick_device(config.device)
        self.dense = model.to(self.device).eval()
        self.example = torch.zeros(1, *dataset.input_shape, device=self.device)
        self.num_classes = int(self.dense(self.example).shape[1])
        self.run_dir = Path(run_dir) if run_dir else None
        self.progress = progress
        self.log = log
        self.dense_sizes = {g.key: g.size for g in channel_groups(self.dense, self.example)}
        self.dense_params = count_params(self.dense)
        self.dense_macs = count_macs(self.dense, self.example)

    # --- evaluation on validation (the test split is never used here) -------------------------------

    def _evaluate(self, model: nn.Module) -> tuple[dict, dict, dict, dict[int, float]]:
        """(validation evaluation without offsets, at the guarded operating point, logits, offsets). The
        operating point's evaluation carries the promise per protected class (its confidence, the margin
        it keeps under the dense FN) and its price: the FP of the plain point (FN at the dense model's) beside."""
        logits = predict_logits(model, self.dataset.x_val, device=self.device)
        y = self.dataset.y_val
        raw = evaluate_logits(y, logits, self.protected, self.num_classes)
        offsets = self.guard.choose(logits)
        at_op = evaluate_logits(y, apply_offsets(logits, offsets), self.protected, self.num_classes)
        plain = evaluate_logits(y, apply_offsets(logits, choose_offsets(logits, y, self.targets)), self.protected, self.num_classes)
        check = self.guard.check(logits, offsets)
        floor = self.dense_eval["accuracy"] - self.config.max_accuracy_drop
        met = all(v["confidence"] >= self.guard.confidence for v in check.values())
        reach = self.guard.reachable(logits, offsets, floor) if not met or at_op["accuracy"] < floor else {}
        fp_plain = {p["class"]: p["fp"] for p in plain["protected"]}
        at_op["promise"] = {str(k): {**v, "confidence_target": self.guard.confidence, "budget": self.guard.budget,
                                     "margin_fn": v["dense_fn"] + self.guard.budget - v["fn"],
                                     "fp": next(p["fp"] for p in at_op["protected"] if p["class"] == k), "fp_plain": fp_plain[k],
                                     **({"reachable_confidence": reach[k]} if k in reach else {})}
                            for k, v in check.items()}
        return raw, at_op, logits, offsets

    def _loss(self, gamma: float, teacher) -> ClassDependentLoss:
        """The class-dependent retraining loss of every round and of the final fine-tuning. Under the
        Lagrange rule each protected class's weight is 1 + its multiplier instead of gamma."""
        cfg = self.config
        loss = ClassDependentLoss(self.num_classes, self.protected, gamma=gamma, rank_weight=cfg.rank_weight, teacher_logits=teacher,
                                  distill_weight=cfg.distill_weight, temperature=cfg.temperature, distill_uniform=cfg.distill_uniform)
        if cfg.gamma_rule == "lagrange":
            for k in self.protected:
                loss.set_weight(k, 1.0 + self.multipliers[k])
        return loss

    def _dual_step(self, model: nn.Module, loss: ClassDependentLoss) -> None:
        """Lagrange rule, after each epoch: a protected class's multiplier rises while its validation FN
        (no offset) is over the dense model's + budget, and falls back towards 0 while under it."""
        logits = predict_logits(model, self.dataset.x_val, device=self.device)
        model.train()
        for k in self.protected:
            pos = self.dataset.y_val == k
            over = (fn_count(logits, self.dataset.y_val, k) - self.targets[k]) / max(1, int(pos.sum()))
            self.multipliers[k] = max(0.0, self.multipliers[k] + DUAL_LR * over)
            loss.set_weight(k, 1.0 + self.multipliers[k])

    def _within_budget(self, at_op: dict) -> bool:
        """The promise holds with the asked confidence and accuracy stays within its budget."""
        guarded = all(v["confidence"] >= v["confidence_target"] for v in at_op["promise"].values())
        return guarded and at_op["accuracy"] >= self.dense_eval["accuracy"] - self.config.max_accuracy_drop - 1e-12

    # --- the rounds ----------------------------------------------------------------------------------

    def _shrink_fraction(self, r: int) -> float:
        return self.config.schedule[r - 1] if self.config.schedule else (1 - self.config.rate) ** r

    def round_target(self, r: int) -> float:
        share = self._shrink_fraction(r)
        return share if self.config.schedule else max(self.config.keep_params, share)

    def round_mac_target(self, r: int) -> float | None:
        """Fraction of the dense MACs round r may keep: MACs shrink at the parameters' pace down to
        keep_macs; None without a MAC goal."""
        if self.config.keep_macs >= 1:
            return None
        return max(self.config.keep_macs, self._shrink_fraction(r))

    def n_rounds(self) -> int:
        if self.config.schedule:
            return len(self.config.schedule)
        goals = [g for g in (self.config.keep_params, self.config.keep_macs) if g < 1]
        return max([1] + [math.ceil(math.log(g) / math.log(1 - self.config.rate) - 1e-9) for g in goals])

    def run(self, resume: bool = False) -> PruneResult:
        cfg = self.config
        dense_val_logits = predict_logits(self.dense, self.dataset.x_val, device=self.device)
        self.dense_eval = evaluate_logits(self.dataset.y_val, dense_val_logits, self.protected, self.num_classes)
        self.targets = {p["class"]: p["fn"] + cfg.max_fn_increase for p in self.dense_eval["protected"]}
        self.guard = PromiseGuard(self.dataset.y_val, dense_val_logits.argmax(1), self.protected, cfg.max_fn_increase, cfg.confidence)
        self.multipliers = {k: 0.0 for k in self.protected}
        result = PruneResult(dense={"val": self.dense_eval, "params": self.dense_params, "macs": self.dense_macs}, targets=self.targets,
                             guard=self.guard)
        teacher = torch.as_tensor(predict_logits(self.dense, self.dataset.x_train, device=self.device)) if cfg.distill_weight else None

        current = copy.deepcopy(self.dense)
        survivors: Survivors = {k: list(range(n)) for k, n in self.dense_sizes.items()}
        rewind_model, rewind_survivors = None, None
        if cfg.rewind == "init":
            seed_everything(cfg.seed)
            rewind_model = _reinitialised(self.dense)
            rewind_survivors = {k: list(v) for k, v in survivors.items()}
        if cfg.granularity == "weight":  # every round is saved, but only channel runs resume
            return self._run_weight(result, teacher)
        start = 1
        start_state = None  # the weights the last retraining started from: W_0 of the magnitude increase
        if resume and self.run_dir is not None:
            state = self._load_state()
            if state is not None:
                start, current, survivors, rewind_model, rewind_survivors, result.tickets, start_state = state

        rounds = self.n_rounds()
        if result.tickets and not result.tickets[-1].within_budget and cfg.stop_outside_budget:
            start = rounds + 1  # the interrupted run had already stopped at a ticket outside the budget
        if start <= rounds:  # the first word in a log while round 1 trains (minutes on a CPU)
            targets = ", ".join(f"class {k} FN <= dense + {cfg.max_fn_increase} on new data with probability {cfg.confidence:g}" for k in self.targets)
            macs_goal = f" and {cfg.keep_macs:.0%} of {self.dense_macs:,} MACs" if cfg.keep_macs < 1 else ""
            self.log(f"pruning: rounds {start}-{rounds} of {cfg.epochs} epochs each on {self.device.type}, to {cfg.keep_params:.0%} of "
                     f"{self.dense_params:,} parameters{macs_goal}; validation budget {targets}")
        task = self.progress.add_task("pruning rounds", total=rounds, completed=start - 1) if self.progress else None
        for r in range(start, rounds + 1):
            seed_everything(cfg.seed * 1000 + r)
            target = self.round_target(r) * self.dense_params
            scores = importance.channel_scores(current, self.example, self.dataset.x_train, self.dataset.y_train, self.protected, start_state=start_state,
                                               increase_weight=cfg.increase_weight, taylor_weight=cfg.taylor_weight, seed=cfg.seed + r)
            groups = channel_groups(current, self.example)
            mac_share = self.round_mac_target(r)
            target_macs = None if mac_share is None else int(mac_share * self.dense_macs)
            local = _plan_for_target(current, self.example, groups, scores, int(target), cfg.round_to, target_macs)
            new_survivors = {k: [orig for pos, orig in enumerate(v) if pos not in set(local.get(k, []))] for k, v in survivors.items()}
            if cfg.rewind == "none" or rewind_model is None:
                start_model = shrink(current, local, self.example)
            else:
                start_model = shrink(rewind_model, relative_plan(rewind_survivors, new_survivors), self.example)

            gamma = 1.0 if r == 1 else cfg.gamma
            loss = self._loss(gamma, teacher)
            snapshot = {}

            def on_epoch_end(epoch, model, _r=r, _loss=loss):
                if cfg.rewind == "early" and _r == 1 and epoch == cfg.rewind_epoch:
                    snapshot["model"] = copy.deepcopy(model).eval()
                if cfg.gamma_rule == "lagrange":
                    self._dual_step(model, _loss)

            tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed * 1000 + r)
            start_state = _weights_copy(start_model) if cfg.increase_weight else None
            trained = train(start_model, self.dataset.x_train, self.dataset.y_train, tcfg, loss_fn=loss, device=self.device, progress=self.progress, description=f"round {r}/{rounds} retrain", on_epoch_end=on_epoch_end)
            if "model" in snapshot:
                rewind_model, rewind_survivors = snapshot["model"], {k: list(v) for k, v in new_survivors.items()}

            current, survivors = trained, new_survivors
            raw, at_op, _, offsets = self._evaluate(current)
            ticket = Ticket(r, current, survivors, count_params(current), count_macs(current, self.example), at_op, raw, offsets, self._within_budget(at_op))
            result.tickets.append(ticket)
            self._save_round(ticket, rewind_model, rewind_survivors, start_state)
            self.log(_round_line(ticket, self.dense_params, self.protected))
            if task is not None:
                self.progress.advance(task)
            if not ticket.within_budget and cfg.stop_outside_budget:
                self.log(f"round {r}: outside the budget ({_promise_text(ticket)}, accuracy >= {self.dense_eval['accuracy'] - cfg.max_accuracy_drop:.4f}); stopping")
                break
        if task is not None:
            self.progress.remove_task(task)
        return self._final_finetune(_select(result), teacher)

    def _final_finetune(self, result: PruneResult, teacher) -> PruneResult:
        """final_epochs more for the selected ticket alone, then a fresh operating point. A round's few
        epochs leave the smallest ticket short of what it can reach: on Fashion-MNIST at 9-10% this
        added 0.2-0.6 accuracy points and lowered FP at the dense FN (docs/BENCHMARKS.md)."""
        cfg, chosen = self.config, result.selected
        if not cfg.final_epochs or chosen is None:
            return result
        tuned = self._load_final(chosen)
        if tuned is None:
            seed_everything(cfg.seed * 1000 + 99)
            loss = self._loss(cfg.gamma, teacher)
            tcfg = TrainConfig(epochs=cfg.final_epochs, lr=cfg.lr / 2, batch_size=cfg.batch_size, seed=cfg.seed * 1000 + 99)
            dual = (lambda epoch, m: self._dual_step(m, loss)) if cfg.gamma_rule == "lagrange" else None
            model = train(copy.deepcopy(chosen.model), self.dataset.x_train, self.dataset.y_train, tcfg, loss_fn=loss, device=self.device,
                          progress=self.progress, description=f"final fine-tuning of round {chosen.round}", on_epoch_end=dual)
            raw, at_op, _, offsets = self._evaluate(model)
            tuned = replace(chosen, model=model, val=at_op, val_raw=raw, offsets=offsets, within_budget=self._within_budget(at_op))
            self._save_final(tuned)
        result.final = tuned
        self.log(f"final fine-tuning ({cfg.final_epochs} epochs): " + _round_line(tuned, self.dense_params, self.protected))
        if tuned.within_budget or not chosen.within_budget:
            result.selected = tuned
            result.budget_met = result.budget_met or tuned.within_budget
        else:
            self.log(f"final fine-tuning left the budget; keeping round {chosen.round}'s ticket")
        return result

    # --- the paper's unstructured tickets: weight masks, then removal of channels left empty ----------

    def _run_weight(self, result: PruneResult, teacher) -> PruneResult:
        from toolchain.prune.shrink import channel_mask_tensors, dead_channels

        cfg = self.config
        model = copy.deepcopy(self.dense)
        prunable = {n: p for n, p in model.named_parameters() if p.dim() > 1}  # conv/linear weights
        masks = {n: torch.ones_like(p) for n, p in prunable.items()}
        total = sum(p.numel() for p in prunable.values())
        start_state = None
        rounds = self.n_rounds()
        for r in range(1, rounds + 1):
            seed_everything(cfg.seed * 1000 + r)
            keep_fraction = self.round_target(r)
            scores = _weight_scores(model, prunable, masks, self.dataset, self.protected, cfg, self.device, seed=cfg.seed + r, start_state=start_state)
            for name, score in scores.items():  # layer-wise: every layer keeps keep_fraction of its weights
                keep = max(1, int(round(keep_fraction * score.numel())))
                threshold = torch.topk(score.flatten(), keep).values[-1]
                masks[name] = (score >= threshold).float() * masks[name]
            # Channels whose incoming weights are all gone: mask their BN too, so they are truly empty.
            plan = _empty_channels(model, masks, self.example)
            extra = channel_mask_tensors(model, plan, self.example) if plan else {}
            all_masks = {**masks, **{n: m * masks.get(n, 1) for n, m in extra.items()}}
            params = dict(model.named_parameters())

            def apply(m, _masks=all_masks, _params=params):
                with torch.no_grad():
                    for n, mask in _masks.items():
                        _params[n].mul_(mask)

            apply(model)
            gamma = 1.0 if r == 1 else cfg.gamma
            loss = self._loss(gamma, teacher)
            tcfg = TrainConfig(epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=cfg.seed * 1000 + r)
            start_state = _weights_copy(model) if cfg.increase_weight else None
            train(model, self.dataset.x_train, self.dataset.y_train, tcfg, loss_fn=loss, after_step=apply, device=self.device, progress=self.progress, description=f"round {r}/{rounds} retrain")
            nonzero = int(sum(int(mask.sum()) for mask in masks.values()))
            dense_rest = self.dense_params - total
            raw, at_op, _, offsets = self._evaluate(model)
            ticket = Ticket(r, copy.deepcopy(model), {k: list(range(n)) for k, n in self.dense_sizes.items()}, nonzero + dense_rest,
                            count_macs(model, self.example), at_op, raw, offsets, self._within_budget(at_op), sparsity=1 - nonzero / total)
            result.tickets.append(ticket)
            self._save_round(ticket, None, None)
            self.log(_round_line(ticket, self.dense_params, self.protected) + f", weight sparsity {ticket.sparsity:.1%}")
            if not ticket.within_budget and cfg.stop_outside_budget:
                break
        chosen = _select(result).selected
        # Physically remove the channels the masks emptied; the rest stays as sparse dense tensors. The
        # round's ticket keeps its non-zero count; the selected one is a shrunk copy with stored counts.
        plan = dead_channels(chosen.model, self.example)
        shrunk = shrink(chosen.model, plan, self.example)
        result.selected = replace(
            chosen, model=shrunk, params=count_params(shrunk), macs=count_macs(shrunk, self.example),
            survivors={k: [i for i in range(n) if i not in set(plan.get(k, []))] for k, n in self.dense_sizes.items()})
        self.log(f"weight ticket: {chosen.params:,} non-zero parameters; {sum(len(v) for v in plan.values())} empty channels removed -> {result.selected.params:,} stored parameters")
        return result

    # --- checkpoints -----------------------------------------------------------------------------------

    def _save_round(self, ticket: Ticket, rewind_model, rewind_survivors, start_state: dict | None = None) -> None:
        if self.run_dir is None:
            return
        from toolchain.models.loading import save_checkpoint

        folder = self.run_dir / "rounds"
        arch, kwargs = getattr(self, "arch", None), getattr(self, "arch_kwargs", {})
        plan = removed_plan(self.dense_sizes, ticket.survivors)
        extra = {"round": ticket.round, "offsets": {str(k): v for k, v in ticket.offsets.items()}, "survivors": ticket.survivors}
        save_checkpoint(folder / f"round_{ticket.round}.pt", ticket.model.cpu(), arch or "?", kwargs, self.dataset.input_shape, plan, extra)
        ticket.model.to(self.device)
        if rewind_model is not None and ticket.round == 1:
            with staged_path(folder / "rewind.pt") as tmp:
                torch.save({"state_dict": rewind_model.state_dict(), "survivors": rewind_survivors}, tmp)
        if start_state is not None:  # the next round's magnitude increase needs it
            with staged_path(folder / f"round_{ticket.round}_start.pt") as tmp:
                torch.save({k: v.cpu() for k, v in start_state.items()}, tmp)
        atomic_write_json(folder / f"round_{ticket.round}.json",  # written last: it marks the round done
                          {**ticket.summary(), "multipliers": {str(k): v for k, v in self.multipliers.items()}})

    def _save_final(self, ticket: Ticket) -> None:
        if self.run_dir is None:
            return
        folder = self.run_dir / "rounds"
        with staged_path(folder / "final.pt") as tmp:
            torch.save({k: v.detach().cpu() for k, v in ticket.model.state_dict().items()}, tmp)
        atomic_write_json(folder / "final.json", {**ticket.summary(), "epochs": self.config.final_epochs})

    def _load_final(self, chosen: Ticket) -> Ticket | None:
        """The fine-tuned ticket of an interrupted run, if it finished and belongs to this selection."""
        folder = self.run_dir / "rounds" if self.run_dir is not None else None
        if folder is None or not (folder / "final.json").is_file():
            return None
        summary = json.loads((folder / "final.json").read_text())
        if summary["round"] != chosen.round:
            return None
        model = copy.deepcopy(chosen.model)
        model.load_state_dict(torch.load(folder / "final.pt", map_location="cpu", weights_only=True))
        offsets = {int(k): v for k, v in summary["offsets"].items()}
        return replace(chosen, model=model.to(self.device).eval(), val=summary["val"], val_raw=summary["val_raw"], offsets=offsets,
                       within_budget=summary["within_budget"])

    def _load_state(self):
        folder = self.run_dir / "rounds"
        done = sorted(int(p.stem.split("_")[1]) for p in folder.glob("round_*.json")) if folder.is_dir() else []
        if not done:
            return None
        tickets = []
        model, survivors = None, None
        for r in done:
            summary = json.loads((folder / f"round_{r}.json").read_text())
            ckpt = torch.load(folder / f"round_{r}.pt", map_location="cpu", weights_only=True)
            survivors = {k: list(v) for k, v in ckpt["extra"]["survivors"].items()}
            model = shrink(self.dense.cpu(), removed_plan(self.dense_sizes, survivors), self.example.cpu())
            model.load_state_dict(ckpt["state_dict"])
            model.to(self.device).eval()
            self.dense.to(self.device)
            offsets = {int(k): v for k, v in summary["offsets"].items()}
            self.multipliers.update({int(k): float(v) for k, v in (summary.get("multipliers") or {}).items()})
            tickets.append(Ticket(r, model, survivors, summary["params"], summary["macs"], summary["val"], summary["val_raw"], offsets, summary["within_budget"]))
        rewind_model, rewind_survivors = None, None
        if (folder / "rewind.pt").is_file():
            saved = torch.load(folder / "rewind.pt", map_location="cpu", weights_only=True)
            rewind_survivors = saved["survivors"]
            rewind_model = shrink(self.dense.cpu(), removed_plan(self.dense_sizes, rewind_survivors), self.example.cpu())
            rewind_model.load_state_dict(saved["state_dict"])
            rewind_model.to(self.device)
            self.dense.to(self.device)
        if self.config.rewind == "init":
            seed_everything(self.config.seed)
            rewind_model, rewind_survivors = _reinitialised(self.dense), {k: list(range(n)) for k, n in self.dense_sizes.items()}
        start_file = folder / f"round_{done[-1]}_start.pt"
        start_state = None
        if self.config.increase_weight and start_file.is_file():
            start_state = {k: v.to(self.device) for k, v in torch.load(start_file, map_location="cpu", weights_only=True).items()}
        self.log(f"resuming after round {done[-1]}")
        return done[-1] + 1, model, survivors, rewind_model, rewind_survivors, tickets, start_state


def _select(result: PruneResult) -> PruneResult:
    """The smallest ticket within the budget (of equal sizes the latest: a round that met its goals early
    leaves later rounds of the same shape, trained longer); without one, the most accurate (and the gate
    will say so)."""
    within = [t for t in result.tickets if t.within_budget]
    result.budget_met = bool(within)
    result.selected = min(within, key=lambda t: (t.params, t.macs, -t.round)) if within else max(result.tickets, key=lambda t: t.val["accuracy"])
    return result


def _weight_scores(model, prunable, masks, dataset, protected, cfg, device, seed, start_state=None) -> dict[str, torch.Tensor]:
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


def _weights_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def _empty_channels(model, masks, example) -> dict[str, list[int]]:
    """Root channels of prunable groups whose producing weights are entirely masked."""
    plan = {}
    for g in channel_groups(model, example):
        producer = masks.get(f"{g.key}.weight")
        if producer is None:
            continue
        alive = producer.flatten(1).sum(1) if producer.dim() > 1 else producer
        empty = [i for i in range(g.size) if float(alive[i]) == 0.0]
        if g.blocks == 1 and 0 < len(empty) < g.size:
            plan[g.key] = empty
    return plan


def _reinitialised(model: nn.Module) -> nn.Module:
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters") and m is not fresh:
            m.reset_parameters()
    return fresh


def _promise_text(t: Ticket) -> str:
    return ", ".join(f"class {k} promise confidence {v['confidence']:.3f} of {v['confidence_target']:g}"
                     for k, v in t.val.get("promise", {}).items())


def _round_line(t: Ticket, dense_params: int, protected: list[int]) -> str:
    promise = t.val.get("promise", {})
    prot = ", ".join(f"class {p['class']}: FN {p['fn']} FP {p['fp']}"
                     + (f" confidence {promise[str(p['class'])]['confidence']:.3f}" if str(p["class"]) in promise else "")
                     for p in t.val["protected"])
    return (f"round {t.round}: {t.params:,} params ({t.params / dense_params:.1%}), val accuracy {t.val['accuracy']:.4f} "
            f"at the operating point ({prot}; offsets {', '.join(f'{v:+.2f}' for v in t.offsets.values())})")
