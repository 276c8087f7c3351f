"""Hyperparameters of a compression run, as dataclasses (OpenLTH-style): one place for defaults,
filled from CLI flags, hashed into the run's identity."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass


@dataclass
class PruneConfig:
    keep_params: float = 0.1  # size goal: fraction of the dense model's parameters
    keep_macs: float = 1.0  # latency goal: fraction of the dense model's multiply-accumulates (1: none; channel granularity)
    rate: float = 0.5  # fraction of the remaining parameters removed per round (the paper: 50%)
    granularity: str = "channel"  # channel | weight (the paper's unstructured tickets)
    rewind: str = "none"  # none (fine-tune survivors) | early (late rewinding) | init (re-initialised)
    rewind_epoch: int = 1  # early: the checkpoint after this many epochs of round 1's retraining
    epochs: int = 8  # retraining epochs per round
    final_epochs: int = 0  # more epochs for the selected ticket alone (same loss, half the peak lr), before its operating point
    lr: float = 2e-3
    batch_size: int = 128
    class_aware: bool = True
    gamma: float = 5.0  # CE weight of protected classes (1 in round 1, then gamma: the paper's schedule)
    rank_weight: float = 1.0  # lambda of the squared-hinge rank loss
    distill_weight: float = 1.0  # distillation from the dense model, weighted to the protected classes
    distill_uniform: bool = False  # distillation weights every sample alike (not the protected classes' by their CE weight)
    gamma_rule: str = "fixed"  # fixed: gamma from round 2 on | lagrange: a multiplier per class that rises while its validation FN is over budget
    temperature: float = 4.0
    round_to: int = 1  # surviving channels per layer rounded to a multiple of this (kernel block; a --target sets it)
    taylor_weight: float = 0.0  # protected-class Taylor term in the importance (0: magnitude; the Taylor term did not beat it on Fashion-MNIST)
    increase_weight: float = 0.0  # the paper's magnitude increase |W_T| - |W_0| over the last retraining, in the importance
    max_fn_increase: int = 0  # validation FN budget per protected class, over the dense model's
    max_accuracy_drop: float = 0.02  # accuracy budget (fraction) for pruning plus the operating point
    confidence: float = 0.95  # probability that the FN promise holds on new data (the guarded operating point)
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        if not 0 < self.keep_params <= 1:
            raise ValueError("keep_params must be in (0, 1]")
        if not 0 < self.keep_macs <= 1:
            raise ValueError("keep_macs must be in (0, 1]")
        if self.keep_macs < 1 and self.granularity == "weight":
            raise ValueError("keep_macs is for channel pruning: masked weights still cost their multiply-accumulates")
        if not 0 < self.rate < 1:
            raise ValueError("rate must be in (0, 1)")
        if self.gamma_rule not in ("fixed", "lagrange"):
            raise ValueError("gamma_rule must be fixed or lagrange")
        if self.gamma_rule == "lagrange" and self.granularity == "weight":
            raise ValueError("gamma_rule lagrange is for channel tickets")
        if self.granularity not in ("channel", "weight"):
            raise ValueError("granularity must be channel or weight")
        if self.rewind not in ("none", "early", "init"):
            raise ValueError("rewind must be none, early or init")
        if self.rewind == "early" and self.epochs < self.rewind_epoch:
            raise ValueError(f"rewind early needs at least {self.rewind_epoch} retraining epoch(s) per round to take its checkpoint")
        if self.round_to < 1:
            raise ValueError("round_to must be >= 1")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.final_epochs < 0:
            raise ValueError("final_epochs must be >= 0")
        if self.final_epochs and self.granularity == "weight":
            raise ValueError("final_epochs is for channel tickets: weight tickets would need their masks kept during it")
        if min(self.gamma, self.rank_weight, self.distill_weight, self.taylor_weight, self.increase_weight) < 0:
            raise ValueError("gamma, rank_weight, distill_weight, taylor_weight and increase_weight must be >= 0")
        if self.max_fn_increase < 0 or not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError("max_fn_increase must be >= 0 and max_accuracy_drop in [0, 1]")
        if not 0.5 <= self.confidence < 1:
            raise ValueError("confidence must be in [0.5, 1): the probability that the FN promise holds on new data")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], not {self.device!r}")

    def effective(self) -> "PruneConfig":
        """--no-class-aware switches the class-dependent parts off -- protected CE weight, rank loss, Taylor
        and increase terms, the Lagrange rule -- and keeps distillation, uniform over samples: the plain arm
        of a fair comparison differs in the class-dependent parts only."""
        if self.class_aware:
            return self
        plain = PruneConfig(**asdict(self))
        plain.gamma, plain.rank_weight, plain.taylor_weight, plain.increase_weight = 1.0, 0.0, 0.0, 0.0
        plain.gamma_rule, plain.distill_uniform = "fixed", True
        return plain

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What a run's id hashes: every field, except a field added later while it holds the value that
        reproduces the older behaviour, so runs on disk keep their ids (and --resume) across versions."""
        kept = {k: v for k, v in asdict(self).items() if not (k in _ADDED_LATER and v == _ADDED_LATER[k])}
        return {**_REMOVED, **kept}


# Fields added after run ids were first hashed -> the value under which they change nothing.
_ADDED_LATER = {"final_epochs": 0, "keep_macs": 1.0, "distill_uniform": False, "gamma_rule": "fixed"}
# Fields removed since, at the only value a run could have had: ids computed with them stay the same.
_REMOVED = {"schedule": None, "stop_outside_budget": True}


def config_hash(*parts) -> str:
    text = json.dumps([p.identity() if hasattr(p, "identity") else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]
