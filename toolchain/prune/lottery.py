"""Class-aware lottery-ticket rounds: score, prune, rewind, retrain, evaluate on validation; repeat.

Channels are removed physically every round (the model really shrinks). Which original channels
survive is tracked per group, so any earlier snapshot (the rewind point) can be shrunk to the same
survivors, and every round's ticket is saved in the run directory (toolchain.prune.round_files). Rounds
are seeded by their number, so ``resume`` from the last saved round finishes with the same result as an
uninterrupted run. The test split is never
touched here. Each round builds one ChannelGraph of the model it prunes: scores, the plan search and
the physical removal all use it.
"""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from toolchain import distributed
from toolchain.config import PruneConfig
from toolchain.data import Dataset
from toolchain.errors import UserError
from toolchain.gate import class_label
from toolchain.metrics import evaluate_logits
from toolchain.models.profile import count_macs, count_params
from toolchain.models import fast_paths
from toolchain.models.fast_paths import arithmetic_label, autocast_dtype, fp32_hint, is_timed, precision_choice, resolved_precision
from toolchain.models.memory import check_training_fits
from toolchain.models.train import TrainConfig, pick_device, predict_logits, seed_everything, train
from toolchain.prune import importance
from toolchain.prune.final import final_finetune
from toolchain.prune.graph import ChannelGraph
from toolchain.prune.loss import ClassDependentLoss, LiveTeacher
from toolchain.prune.operating_point import PromiseGuard, apply_offsets, choose_offsets, fn_count
from toolchain.prune.plan import plan_for_target, thinned
from toolchain.prune.preflight import kept_whole_line
from toolchain.prune.round_files import RoundFiles
from toolchain.prune.schedule import n_rounds, round_mac_target, round_target
from toolchain.prune.shrink import checked, shrink
from toolchain.prune.tickets import PruneResult, Survivors, Ticket, promise_text, relative_plan, removed_plan, round_line, select
from toolchain.prune.weights import reinitialised, run_weight_rounds, weights_copy
from toolchain.report.pace import Clock, EpochPace, duration
from toolchain.rundir import RunDir

DUAL_LR = 20.0  # Lagrange rule: a validation FN excess of 5% of the class's samples adds 1 to its weight per epoch


class LotteryPruner:
    def __init__(self, model: nn.Module, dataset: Dataset, protected: list[int], config: PruneConfig, run_dir: Path | RunDir | None = None,
                 progress=None, log=print, arch: str | None = None, arch_kwargs: dict | None = None, keep_whole: dict[str, str] | None = None,
                 dense_val_logits: np.ndarray | None = None, record=None):
        """``arch``/``arch_kwargs`` name the architecture the saved tickets record (they load on their own); ``keep_whole``
        {group key: why}: channel groups never pruned (shrink.unfollowed_groups' finding); ``dense_val_logits``: the
        model's float32 validation logits where the caller has them already; ``record``: a progress line within a
        round (each epoch's end), for the run's log file and, where no progress bar is drawn, the console."""
        self.config = config.for_target(None).effective()
        self.arch, self.arch_kwargs = arch, dict(arch_kwargs or {})
        self.dataset = dataset
        self.protected = list(protected)
        self.device = pick_device(config.device)
        self.dense = model.to(self.device).eval()
        self.example = torch.zeros(1, *dataset.input_shape, device=self.device)
        self.num_classes = int(self.dense(self.example).shape[1])
        self.run_dir = RunDir(run_dir) if run_dir is not None and not isinstance(run_dir, RunDir) else run_dir
        self.progress = progress
        self.log = log
        self.record = record or (lambda text: None)
        self.unfollowed = dict(keep_whole or {})
        self.dense_val_logits = dense_val_logits
        self.low_precision = None  # the retraining's autocast dtype (None: fp32), known once run() starts
        self.precision = self.config.train_precision  # auto resolved by run(): one arithmetic for every round and the teacher
        graph = ChannelGraph(self.dense, self.example, self.unfollowed)
        self.dense_sizes = {g.key: g.size for g in graph.groups}
        self.files = RoundFiles(self.run_dir, self.arch, self.arch_kwargs, dataset.input_shape, self.dense_sizes)
        # channel groups kept at full size for a reason other than being the classes: said in the log and the report
        self.kept_whole = graph.groups_kept_whole()
        self.dense_params = count_params(self.dense)
        self.dense_macs = count_macs(self.dense, self.example)

    # --- evaluation on validation (the test split is never used here) -------------------------------

    def evaluate(self, model: nn.Module) -> tuple[dict, dict, dict, dict[int, float]]:
        """(validation evaluation without offsets, at the guarded operating point, logits, offsets). The
        operating point's evaluation carries the promise per protected class (its confidence, the margin
        it keeps under the dense FN) and its price: the FP of the plain point (FN at the dense model's) beside."""
        # process 0's logits decide on every process: machines of other CPUs compute the last bits otherwise, and a round
        # kept by one process and stopped by another lost the run
        logits = distributed.agreed(predict_logits(model, self.dataset.x_val, device=self.device))
        if not np.isfinite(logits).all():  # the dense model's were finite: the retraining diverged
            raise NonFiniteLogits(f"the retrained model gives NaN or infinite logits: the retraining diverged; {DIVERGED_HINT}"
                                  f"{fp32_hint(self.low_precision)}")
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
        own = {p["class"]: p for p in raw["protected"]}  # the model's own decisions: what the offset moves away from
        at_op["promise"] = {str(k): {**v, "confidence_target": self.guard.confidence, "budget": self.guard.budget,
                                     "margin_fn": v["dense_fn"] + self.guard.budget - v["fn"],
                                     "fp": next(p["fp"] for p in at_op["protected"] if p["class"] == k), "fp_plain": fp_plain[k],
                                     "offset": float(offsets.get(k, 0.0)), "fn_no_offset": own[k]["fn"], "fp_no_offset": own[k]["fp"],
                                     **({"reachable_confidence": reach[k]} if k in reach else {})}
                            for k, v in check.items()}
        return raw, at_op, logits, offsets

    def loss(self, gamma: float, teacher) -> ClassDependentLoss:
        """The class-dependent retraining loss of every round and of the final fine-tuning. Under the
        Lagrange rule each protected class's weight is 1 + its multiplier instead of gamma."""
        cfg = self.config
        live = isinstance(teacher, nn.Module)  # augmented batches: the teacher sees what the student sees
        loss = ClassDependentLoss(self.num_classes, self.protected, gamma=gamma, rank_weight=cfg.rank_weight,
                                  teacher_logits=None if live else teacher, teacher_model=teacher if live else None,
                                  distill_weight=cfg.distill_weight, temperature=cfg.temperature, distill_uniform=cfg.distill_uniform,
                                  agree_weight=cfg.agree_weight)
        if cfg.gamma_rule == "lagrange":
            for k in self.protected:
                loss.set_weight(k, 1.0 + self.multipliers[k])
        return loss

    def dual_step(self, model: nn.Module, loss: ClassDependentLoss) -> None:
        """Lagrange rule, after each epoch: a protected class's multiplier rises while its validation FN
        (no offset) is over the dense model's + budget, and falls back towards 0 while under it."""
        logits = predict_logits(model, self.dataset.x_val, device=self.device)
        model.train()
        for k in self.protected:
            pos = self.dataset.y_val == k
            over = (fn_count(logits, self.dataset.y_val, k) - self.targets[k]) / max(1, int(pos.sum()))
            self.multipliers[k] = max(0.0, self.multipliers[k] + DUAL_LR * over)
            loss.set_weight(k, 1.0 + self.multipliers[k])

    def teacher(self):
        """The dense model's logits on the training rows, cached; a copy of the dense model when training batches are
        augmented (their logits differ every time: the loss computes them on the batch). Either in the retraining's
        arithmetic: a target for the student, not a number any decision rests on."""
        if self.dataset.augment is not None:
            return LiveTeacher(self.dense, self.dataset.x_train, self.low_precision, self.device)
        return torch.as_tensor(predict_logits(self.dense, self.dataset.x_train, device=self.device, precision=self.precision))

    def _arithmetic(self, resume: bool):
        """(autocast dtype, why) of the retraining. auto on a GPU times it on the dense model, at each process's share of
        a batch, and process 0's choice holds for all; a resumed run keeps the choice its rounds were made with (the
        timing, done again, could choose otherwise; a CPU without bf16 in hardware, where the run began on one with it,
        would switch half-way to fp32, and the report would name fp32 alone)."""
        cfg = self.config
        group = distributed.current()
        rows = cfg.batch_size if group is None else math.ceil(cfg.batch_size / group.world)
        # before the arithmetic's probe: a step that cannot fit is refused before anything runs the model on the data
        check_training_fits(self.dense, self.dataset.x_train, rows, self.device,
                            autocast_dtype(cfg.train_precision, self.device) is not None)
        saved = self.files.read(self.files.saved_training) if resume and cfg.train_precision == "auto" else None
        by_rule = "fp32" if autocast_dtype(cfg.train_precision, self.device) is None else "bf16"  # a CPU's choice here
        if saved is not None and saved["device"] == self.device.type and saved["timed"] == is_timed(cfg.train_precision, self.device) \
                and (saved["timed"] or saved["precision"] != by_rule):
            dtype, _ = precision_choice(self.dense, self.dataset.x_train, saved["precision"], self.device, rows)
            slower = (" (emulated on this CPU, without bf16 in hardware: slower)"
                      if dtype is not None and not saved["timed"] and not fast_paths.native_bf16(self.device) else "")
            return dtype, f"as the run's earlier rounds were retrained (rounds/round_1.json){slower}"
        dtype, why = precision_choice(self.dense, self.dataset.x_train, cfg.train_precision, self.device, rows)
        return distributed.agreed(dtype), why  # timings differ between processes: process 0 decides

    def train_config(self, epochs: int, lr: float, seed: int) -> TrainConfig:
        """Retraining settings of a round or of the final fine-tuning; how the train split is read comes with the data."""
        return TrainConfig(epochs=epochs, lr=lr, batch_size=self.config.batch_size, seed=seed, augment=self.dataset.augment,
                           workers=self.dataset.workers, precision=self.precision, diverged_hint=DIVERGED_HINT)

    def within_budget(self, at_op: dict) -> bool:
        """The promise holds with the asked confidence and accuracy stays within its budget."""
        guarded = all(v["confidence"] >= v["confidence_target"] for v in at_op["promise"].values())
        return guarded and at_op["accuracy"] >= self.dense_eval["accuracy"] - self.config.max_accuracy_drop - 1e-12

    # --- the rounds ----------------------------------------------------------------------------------

    def run(self, resume: bool = False) -> PruneResult:
        cfg = self.config
        dense_val_logits = self.dense_val_logits
        if dense_val_logits is None:
            dense_val_logits = predict_logits(self.dense, self.dataset.x_val, device=self.device)
        self.dense_eval = evaluate_logits(self.dataset.y_val, dense_val_logits, self.protected, self.num_classes)
        self.targets = {p["class"]: p["fn"] + cfg.max_fn_increase for p in self.dense_eval["protected"]}
        self.guard = PromiseGuard(self.dataset.y_val, dense_val_logits.argmax(1), self.protected, cfg.max_fn_increase, cfg.confidence,
                                  floor=0.0 if cfg.keep_sensitivity else None)
        self.multipliers = {k: 0.0 for k in self.protected}
        self.low_precision, why = self._arithmetic(resume)
        self.precision = resolved_precision(self.low_precision)
        self.files.training = {"precision": self.precision, "device": self.device.type, "timed": is_timed(cfg.train_precision, self.device)}
        arithmetic = arithmetic_label(self.low_precision)
        if why:
            self.log(f"retraining in {arithmetic}: {why}")
        result = PruneResult(dense={"val": self.dense_eval, "params": self.dense_params, "macs": self.dense_macs}, targets=self.targets,
                             guard=self.guard, arithmetic=arithmetic, arithmetic_chosen_by=why)
        teacher = self.teacher() if cfg.distill_weight or cfg.agree_weight else None

        current = copy.deepcopy(self.dense)
        survivors: Survivors = {k: list(range(n)) for k, n in self.dense_sizes.items()}
        rewind_model, rewind_survivors = None, None
        if cfg.rewind == "init":
            seed_everything(cfg.seed)
            rewind_model = reinitialised(self.dense)
            rewind_survivors = {k: list(v) for k, v in survivors.items()}
        if cfg.granularity == "weight":  # every round is saved, but only channel runs resume
            return run_weight_rounds(self, result, teacher)
        start = 1
        start_state = None  # the weights the last retraining started from: W_0 of the magnitude increase
        if resume and self.run_dir is not None:
            distributed.barrier()  # every process reads the same rounds
            state = self.files.read(self._load_state)
            if state is not None:  # measured outside the read: a fault in measuring is no damaged file
                start, current, survivors, rewind_model, rewind_survivors, restored, start_state = state
                result.tickets = [replace(self.judged_restored(t), seconds=t.seconds) for t in restored]

        rounds = n_rounds(cfg)
        if result.tickets and not result.tickets[-1].within_budget:
            start = rounds + 1  # the interrupted run had already stopped at a ticket outside the budget
        if start <= rounds:  # the first word in a log while round 1 trains (minutes on a CPU)
            targets = ", ".join(f"{class_label(k, self.dataset.class_names)} FN <= dense + {cfg.max_fn_increase} on new data with probability "
                                f"{cfg.confidence:.12g}" for k in self.targets)  # named once: the lines below say "class 7"
            macs_goal = f" and {cfg.keep_macs:.0%} of {self.dense_macs:,} MACs" if cfg.keep_macs < 1 else ""
            epochs = f"{cfg.epochs} epoch{'s' if cfg.epochs != 1 else ''}"  # "rounds 1-1 of 25 epochs each" read oddly
            which = f"round {start}, {epochs}" if start == rounds else f"rounds {start}-{rounds}, {epochs} each"
            self.log(f"pruning: {which}, on {self.device.type} ({arithmetic}), to {cfg.keep_params:.0%} of "
                     f"{self.dense_params:,} parameters{macs_goal}; validation budget {targets}")
            if self.kept_whole:
                self.log(kept_whole_line(self.kept_whole))
        task = self.progress.add_task("pruning rounds", total=rounds, completed=start - 1) if self.progress else None
        for r in range(start, rounds + 1):
            seed_everything(cfg.seed * 1000 + r)
            clock = Clock()
            target = round_target(cfg, r) * self.dense_params
            graph = ChannelGraph(copy.deepcopy(current), self.example, self.unfollowed)  # scored, planned and pruned: one graph a round
            scores = importance.channel_scores(graph, self.dataset.x_train, self.dataset.y_train, self.protected, start_state=start_state,
                                               increase_weight=cfg.increase_weight, taylor_weight=cfg.taylor_weight, seed=cfg.seed + r,
                                               norm=cfg.magnitude_norm)
            clock.lap("score")
            mac_share = round_mac_target(cfg, r)
            target_macs = None if mac_share is None else int(mac_share * self.dense_macs)
            local = plan_for_target(graph, scores, int(target), cfg.round_to, target_macs, cfg.allocation)
            thin = thinned(graph.groups, local)
            if thin:
                whole = len(graph.groups_kept_whole())
                kept_whole = (f" ({whole} channel groups are kept whole: their parameters cannot shrink)" if whole > 1 else
                              " (1 channel group is kept whole: its parameters cannot shrink)" if whole else "")
                self.log(f"warning: round {r} cuts " + ", ".join(f"{key} from {size} channels to {kept}" for key, size, kept in thin[:3])
                         + f" to reach {int(target):,} parameters{kept_whole}: a layer this thin rarely retrains; a larger "
                         "--keep-params, or a model whose layers cwtool can prune, serves better")
            if result.tickets and not any(local.values()):  # every group at its floor: retraining the same size again (29
                # rounds of a 53-parameter net) buys nothing and drifts the model
                last = result.tickets[-1]
                self.log(f"round {r}: nothing left to prune (round {last.round}'s {last.params:,} params, "
                         f"{last.params / self.dense_params:.1%}, are as few as its channel groups go"
                         f"{f' at --round-to {cfg.round_to}' if (cfg.round_to or 1) > 1 else ''}); stopping")
                break
            new_survivors = {k: [orig for pos, orig in enumerate(v) if pos not in set(local.get(k, []))] for k, v in survivors.items()}
            if cfg.rewind == "none" or rewind_model is None:
                start_model = checked(graph.prune(local), self.example)
            else:
                start_model = shrink(rewind_model, relative_plan(rewind_survivors, new_survivors), self.example)
            del graph  # its dependency graph holds the model it pruned: not needed while retraining
            clock.lap("plan and prune")

            gamma = 1.0 if r == 1 else cfg.gamma
            loss = self.loss(gamma, teacher)
            snapshot = {}

            pace = EpochPace(cfg.epochs)

            def on_epoch_end(epoch, model, _r=r, _loss=loss, _pace=pace):
                self.record(f"round {_r}/{rounds} retrain: {_pace.line(epoch)}")
                if cfg.rewind == "early" and _r == 1 and epoch == cfg.rewind_epoch:
                    snapshot["model"] = copy.deepcopy(model).eval()
                if cfg.gamma_rule == "lagrange":
                    self.dual_step(model, _loss)

            tcfg = self.train_config(cfg.epochs, cfg.lr, cfg.seed * 1000 + r)
            start_state = weights_copy(start_model) if cfg.increase_weight else None
            trained = train(start_model, self.dataset.x_train, self.dataset.y_train, tcfg, loss_fn=loss, device=self.device,
                            progress=self.progress, description=f"round {r}/{rounds} retrain", on_epoch_end=on_epoch_end,
                            say_pace=self.record)
            if "model" in snapshot:
                rewind_model, rewind_survivors = snapshot["model"], {k: list(v) for k, v in new_survivors.items()}

            current, survivors = trained, new_survivors
            clock.lap("retrain")
            ticket = self.judged(Ticket(r, current, survivors, 0, 0, {}, {}, {}, False))
            clock.lap("operating point")
            ticket.seconds = clock.laps
            result.tickets.append(ticket)
            self.files.save_round(ticket, self.multipliers, rewind_model, rewind_survivors, start_state)
            self.log(round_line(ticket, self.dense_params))
            if task is not None:
                self.progress.advance(task)
            if not ticket.within_budget:
                floor = self.dense_eval["accuracy"] - cfg.max_accuracy_drop  # below 0 (a budget wider than the accuracy): no floor
                needs = f", needs >= {floor:.4f}" if floor > 0 else ", no floor"
                self.log(f"round {r}: outside the budget ({promise_text(ticket)}; accuracy {ticket.val['accuracy']:.4f}{needs}); stopping")
                break
            if r < rounds:  # where the run stands, for a log read hours into it
                round_seconds = sum(ticket.seconds.values())
                to_go = round_seconds * (rounds - r + cfg.final_epochs / max(cfg.epochs, 1))
                left = f"round {rounds}" if r + 1 == rounds else f"rounds {r + 1}-{rounds}"
                self.record(f"{left}{' and the final fine-tuning' if cfg.final_epochs else ''} to go: about "
                            f"{duration(to_go)} at round {r}'s pace (smaller rounds train faster)")
        if task is not None:
            self.progress.remove_task(task)
        return final_finetune(self, select(result), teacher)

    def judged(self, ticket: Ticket) -> Ticket:
        """``ticket`` with its size, validation evaluations, operating point and verdict measured from its model. A
        resumed run measures them again rather than reading them from its round files (files a user can edit)."""
        raw, at_op, _, offsets = self.evaluate(ticket.model)
        return replace(ticket, params=count_params(ticket.model), macs=count_macs(ticket.model, self.example), val=at_op, val_raw=raw,
                       offsets=offsets, within_budget=self.within_budget(at_op))

    def judged_restored(self, ticket: Ticket, final_round: int | None = None) -> Ticket:
        """A ticket read back from its files, measured outside the read (a fault in measuring is cwtool's, no damaged file);
        weights that give NaN or infinite logits were never saved so (a diverged retraining stops before its round is
        saved): its file was edited or damaged, and "the retraining diverged" would send the user to lower --lr."""
        try:
            return self.judged(ticket)
        except NonFiniteLogits as exc:
            what = f"final_{final_round}.pt" if final_round is not None else f"round_{ticket.round}.pt"
            raise self.files.damaged(f"{what} gives NaN or infinite logits", final_round) from exc

    # --- resuming: the finished rounds' weights, measured again --------------------------------------------

    def _load_state(self):
        """The finished rounds' tickets as their files hold them (not yet measured), and where the rounds go on."""
        done = self.files.done_rounds()
        if not done:
            return None
        tickets = []
        model, survivors = None, None
        for r in done:
            survivors, weights, multipliers, seconds = self.files.saved_round(r, self.protected)
            model = self._shrunk(survivors, weights)
            self.multipliers.update(multipliers)
            tickets.append(replace(Ticket(r, model, survivors, 0, 0, {}, {}, {}, False), seconds=seconds))
        rewind_model, rewind_survivors = None, None
        rewind = self.files.saved_rewind()
        if rewind is not None:
            weights, rewind_survivors = rewind
            rewind_model = self._shrunk(rewind_survivors, weights)
        if self.config.rewind == "init":
            seed_everything(self.config.seed)
            rewind_model, rewind_survivors = reinitialised(self.dense), {k: list(range(n)) for k, n in self.dense_sizes.items()}
        start_state = None
        if self.config.increase_weight:
            saved = self.files.saved_start(done[-1])
            start_state = None if saved is None else {k: v.to(self.device) for k, v in saved.items()}
        self.log(f"resuming after round {done[-1]}")
        return done[-1] + 1, model, survivors, rewind_model, rewind_survivors, tickets, start_state

    def _shrunk(self, survivors: Survivors, weights: dict) -> nn.Module:
        """The dense model shrunk to ``survivors`` with ``weights`` loaded, on the pruner's device, in eval mode."""
        model = shrink(self.dense.cpu(), removed_plan(self.dense_sizes, survivors), self.example.cpu())
        model.load_state_dict(weights)
        self.dense.to(self.device)
        return model.to(self.device).eval()


class NonFiniteLogits(UserError):
    """A ticket's validation logits are NaN or infinite: its retraining diverged, or its weights were read back damaged."""


DIVERGED_HINT = "lower --lr or the loss weights (--gamma, --rank-weight, --distill-weight, --agree-weight)"
