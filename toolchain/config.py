"""Hyperparameters of a compression run, as dataclasses (OpenLTH-style): one place for defaults,
filled from CLI flags, hashed into the run's identity."""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass, field, replace


GOALS, METHOD, EXPORT, RUN = "Goals", "Method", "Export", "Run"


def flag(group: str, help: str, *decls: str, default=None, **kw) -> dict:
    """A field that is a command-line flag: its group in --help, its help, optional declarations (e.g.
    "--class-aware/--no-class-aware"); the CLI builds the option from the field (toolchain.cli.options)."""
    return {"flag": {"group": group, "help": help, "decls": decls, **kw}, **({"default": default} if default is not None else {})}


TRAIN_PRECISIONS = ("auto", "fp32", "bf16")  # the retraining's arithmetic (toolchain.models.fast_paths.autocast_dtype)


def device_problem(device: str) -> str | None:
    """Why ``device`` (--device) is not one cwtool runs on, or None: auto, cpu or cuda[:N] (whether this machine has it is
    the caller's to say)."""
    import re

    if device == "auto" or re.fullmatch(r"cpu|cuda(:[0-9]+)?", device):
        return None
    return f"--device '{device}' is not one cwtool runs on: use auto, cpu or cuda[:N]"
MAX_LR = 10.0  # a peak learning rate beyond it diverges at once, or overflows float32 inside the optimizer
MAX_EPOCHS = 100_000
MAX_ROUNDS = 1_000
FLOAT32_MAX = 3.4028234663852886e38
ALLOCATIONS = ("uniform", "global")  # how a round's removals are shared among layers (toolchain.prune.plan)


def rounds_to(goal: float, rate: float) -> int:
    """Rounds that keep (1 - rate) each, from the whole model down to ``goal`` of it (log1p: a rate of 1e-17 is not 0)."""
    if goal >= 1:
        return 1
    return max(1, math.ceil(math.log(goal) / math.log1p(-rate) - 1e-9))


def _f(default, group: str, help: str, *decls: str, **kw):
    return field(default=default, metadata=flag(group, help, *decls, **kw))


@dataclass
class PruneConfig:
    keep_params: float = _f(0.1, GOALS, "Size goal: fraction of the dense parameters to keep.")
    keep_macs: float = _f(1.0, GOALS, "Latency goal: fraction of the dense multiply-accumulates to keep as well (small CPUs pay per MAC "
                               "and per operator, not per parameter; 1: no MAC goal).")
    max_fn_increase: int = _f(0, GOALS, "FN budget per protected class over the dense model's, on new data.")
    confidence: float = _f(0.95, GOALS, "Probability that the FN promise (FN <= dense FN + budget on as many new samples of the "
                                   "class as validation holds) holds: sets the guarded operating point.")
    max_accuracy_drop: float = _f(0.02, GOALS, "Accuracy budget (fraction, 0.02 = 2 points).")
    keep_sensitivity: bool = _f(False, GOALS, "No negative offset on a protected class's logit: its own threshold never lowers "
                                "its sensitivity below the compressed model's own decisions (without it, a model that misses "
                                "fewer than the dense model spends that margin on fewer false positives, as far as the promise "
                                "allows). With several protected classes, one's offset can still take another's samples.")
    rate: float = _f(0.5, METHOD, "Fraction of the remaining parameters removed per round.")
    granularity: str = _f("channel", METHOD, "channel (physically removed) or weight (unstructured masks).")
    rewind: str = _f("none", METHOD, "none (fine-tune survivors), early (late rewinding) or init.")
    rewind_epoch: int = 1  # early: the checkpoint after this many epochs of round 1's retraining
    epochs: int = _f(8, METHOD, "Retraining epochs per round.")
    final_epochs: int = _f(0, METHOD, "More epochs for the selected ticket alone after the rounds (same loss, half the peak lr), "
                                "before its operating point is set.")
    lr: float = _f(2e-3, METHOD, "Peak learning rate of the retraining (Adam, one-cycle).")
    batch_size: int = _f(128, METHOD, "Retraining batch size.")
    class_aware: bool = _f(True, METHOD, "Class-dependent loss and importance, or the plain baseline (the same distillation, "
                                 "uniform over samples).", "--class-aware/--no-class-aware")
    gamma: float = _f(5.0, METHOD, "CE weight of the protected classes from round 2 on (the paper's schedule: 1 in round 1).")
    gamma_rule: str = _f("fixed", METHOD, "fixed: --gamma from round 2 on; lagrange: each protected class's CE weight is a "
                                     "multiplier that rises while its validation FN is over budget.")
    rank_weight: float = _f(1.0, METHOD, "Weight of the squared-hinge rank (AUC) loss (the paper's lambda).")
    distill_weight: float = _f(1.0, METHOD, "Weight of distillation from the dense model.")
    distill_uniform: bool = _f(False, METHOD, "Distillation weighs every sample alike (default: protected classes' samples by "
                                      "their CE weight).")
    agree_weight: float = _f(0.0, METHOD, "Weight of a term that pulls the protected class's log-odds to the dense model's on "
                                   "that class's samples (0: off).")
    temperature: float = 4.0  # of the distillation
    allocation: str = _f("uniform", METHOD, "How a round's removals are shared among layers: uniform (each layer loses the same "
                                       "share) or global (all channels ranked together, each by its score over its layer's mean).")
    round_to: int | None = _f(None, METHOD, "Round each layer's surviving channels to a multiple of this (CPU kernels work in "
                                      "blocks of 8). Default: the --target's channel_multiple, else 1 (off).")
    magnitude_norm: int = _f(1, METHOD, "Channel magnitude: 1 sums |w| over the channel's weights, 2 sums w^2 (as Torch-Pruning's "
                                     "magnitude importance does).", min=1, max=2)
    taylor_weight: float = _f(0.0, METHOD, "Weight of the protected-class Taylor term in channel importance (0: magnitude only).")
    increase_weight: float = _f(0.0, METHOD, "Weight of the paper's magnitude increase |W_T| - |W_0| over the last retraining in "
                                       "the importance (from round 2; 0: off).")
    seed: int = _f(0, RUN, "Seed of training, pruning and the data split.", min=0, max=2**31 - 1)
    device: str = _f("auto", RUN, "auto (CUDA when present), cpu or cuda[:N].")
    train_precision: str = _f("auto", RUN, "Retraining arithmetic: auto (bf16 autocast where the CPU runs bf16 in hardware; on a GPU, "
                                "the faster of the two, timed), fp32 or bf16. Evaluation, operating points and export are fp32 always.")

    def __post_init__(self):
        for name, value in asdict(self).items():
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, not {value}")
        if not 0 < self.keep_params <= 1:
            raise ValueError(f"keep_params must be in (0, 1], not {self.keep_params:g}")
        if not 0 < self.keep_macs <= 1:
            raise ValueError(f"keep_macs must be in (0, 1], not {self.keep_macs:g}")
        if self.granularity == "weight" and (self.allocation != "uniform" or self.magnitude_norm != 1):
            raise ValueError("allocation and magnitude_norm are for channel pruning: weight tickets rank single weights")
        if self.keep_macs < 1 and self.granularity == "weight":
            raise ValueError("keep_macs is for channel pruning: masked weights still cost their multiply-accumulates")
        if not 0 < self.rate < 1:
            raise ValueError(f"rate must be in (0, 1), not {self.rate:g}")
        rounds = rounds_to(min(self.keep_params, self.keep_macs), self.rate)
        if self.granularity == "channel" and rounds > MAX_ROUNDS:
            raise ValueError(f"rate {self.rate:g} takes {rounds:,} rounds to reach the size goal: at most {MAX_ROUNDS:,} (raise rate)")
        if self.gamma_rule not in ("fixed", "lagrange"):
            raise ValueError("gamma_rule must be fixed or lagrange")
        if self.gamma_rule == "lagrange" and self.granularity == "weight":
            raise ValueError("gamma_rule lagrange is for channel tickets")
        if self.magnitude_norm not in (1, 2):
            raise ValueError("magnitude_norm must be 1 or 2")
        if self.allocation not in ALLOCATIONS:
            raise ValueError(f"allocation must be {' or '.join(ALLOCATIONS)}")
        if self.granularity not in ("channel", "weight"):
            raise ValueError("granularity must be channel or weight")
        if self.train_precision not in TRAIN_PRECISIONS:
            raise ValueError("train_precision must be auto, fp32 or bf16")
        if self.rewind not in ("none", "early", "init"):
            raise ValueError("rewind must be none, early or init")
        if self.rewind != "none" and self.granularity == "weight":
            raise ValueError("rewind is for channel tickets: weight tickets are fine-tuned from where each round ends")
        if self.rewind == "early" and self.epochs < self.rewind_epoch:
            raise ValueError(f"rewind early needs at least {self.rewind_epoch} retraining epoch(s) per round to take its checkpoint")
        if self.round_to is not None and self.round_to < 1:
            raise ValueError(f"round_to must be >= 1, not {self.round_to}")
        if self.round_to not in (None, 1) and self.granularity == "weight":
            raise ValueError("round_to is for channel pruning: weight tickets have no channels to round")
        if self.epochs < 0 or self.batch_size < 1 or not self.lr > 0:
            raise ValueError("epochs must be >= 0, batch_size >= 1 and lr > 0")
        if self.lr > MAX_LR or max(self.epochs, self.final_epochs) > MAX_EPOCHS:
            raise ValueError(f"lr must be at most {MAX_LR:g} (Adam moves each weight by about lr a step) and epochs at most {MAX_EPOCHS:,}")
        if self.final_epochs < 0:
            raise ValueError(f"final_epochs must be >= 0, not {self.final_epochs}")
        if self.final_epochs and self.granularity == "weight":
            raise ValueError("final_epochs is for channel tickets: weight tickets would need their masks kept during it")
        negative = [f"{name} {getattr(self, name):g}" for name in ("gamma", "rank_weight", "distill_weight", "taylor_weight",
                                                                  "increase_weight", "agree_weight") if getattr(self, name) < 0]
        if negative:  # the one given, with its value (six names listed left the user to find which)
            raise ValueError(f"{', '.join(negative)}: a loss weight must be >= 0")
        if self.gamma > FLOAT32_MAX and self.class_aware:  # --no-class-aware trains at 1.0 and says the flag changes nothing
            raise ValueError(f"gamma must be at most {FLOAT32_MAX:.3g}: a class weight is a float32")
        if self.max_fn_increase < 0:
            raise ValueError(f"max_fn_increase must be >= 0, not {self.max_fn_increase:g}")
        if not 0 <= self.max_accuracy_drop <= 1:
            raise ValueError(f"max_accuracy_drop must be in [0, 1] (a fraction: 0.02 is 2 points), not {self.max_accuracy_drop:g}")
        if not 0.5 <= self.confidence < 1:
            raise ValueError(f"confidence must be in [0.5, 1): the probability that the FN promise holds on new data, not {self.confidence:g}")
        if self.device not in ("auto", "cpu") and not self.device.startswith("cuda"):
            raise ValueError(f"device must be auto, cpu or cuda[:N], not {self.device!r}")

    def for_target(self, channel_multiple: int | None) -> "PruneConfig":
        """round_to resolved: given, else the target's kernel block (channel_multiple), else 1."""
        if self.round_to is not None:
            return self
        return replace(self, round_to=1 if self.granularity == "weight" else channel_multiple or 1)  # no channels to round

    def effective(self) -> "PruneConfig":
        """--no-class-aware switches the class-dependent parts off -- protected CE weight, rank loss, Taylor
        and increase terms, the Lagrange rule, the agreement term -- and keeps distillation, uniform over samples: the plain arm
        of a fair comparison differs in the class-dependent parts only."""
        if self.class_aware:
            return self
        return replace(self, **_PLAIN_ARM)

    def switched_off(self) -> list[str]:
        """The class-dependent flags given other values than their defaults that --no-class-aware switches off."""
        if self.class_aware:
            return []
        plain, default = asdict(self.effective()), asdict(PruneConfig(class_aware=False))
        return [f"--{k.replace('_', '-')} {v}" for k, v in asdict(self).items()
                if v != plain[k] and v != default[k] and k != "class_aware"]

    def to_dict(self) -> dict:
        return asdict(self)

    def identity(self) -> dict:
        """What a run's id hashes: every field, except a field added later while it holds the value that
        reproduces the older behaviour, so runs on disk keep their ids (and --resume) across versions."""
        fields = asdict(self)
        if not self.class_aware:  # flags --no-class-aware ignores change nothing: they count at their defaults
            default = asdict(PruneConfig())
            fields = {k: default[k] if k in _PLAIN_ARM else v for k, v in fields.items()}
        kept = {k: v for k, v in fields.items() if not (k in ADDED_LATER and v == ADDED_LATER[k])}
        return {**_REMOVED, **kept}


# What --no-class-aware sets: the class-dependent parts off, distillation uniform over samples.
_PLAIN_ARM = {"gamma": 1.0, "rank_weight": 0.0, "taylor_weight": 0.0, "increase_weight": 0.0, "gamma_rule": "fixed",
              "distill_uniform": True, "agree_weight": 0.0}

# Fields added after run ids were first hashed -> the value under which they change nothing.
ADDED_LATER = {"final_epochs": 0, "keep_macs": 1.0, "distill_uniform": False, "gamma_rule": "fixed", "train_precision": "fp32",
                "allocation": "uniform", "agree_weight": 0.0, "magnitude_norm": 1, "keep_sensitivity": False}
# Fields removed since, at the only value a run could have had: ids computed with them stay the same.
_REMOVED = {"schedule": None, "stop_outside_budget": True}


def config_hash(*parts) -> str:
    text = json.dumps([p.identity() if hasattr(p, "identity") else p for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class ExportOptions:
    """What the user asks of the export stage; `toolchain.export.stage.export_settings` turns it, with the
    target's profile, into the files to write."""

    target: str | None = _f(None, EXPORT, "Device profile (cwtool targets): sets format, precision and layout, and checks fit.")
    layout: str | None = _f(None, EXPORT, "TFLite input layout, NCHW (default) or NHWC (a --target sets it).")
    calibration_size: int = _f(256, EXPORT, "Calibration rows drawn from the train split (protected classes enriched).")
    calibration_method: str = _f("minmax", EXPORT, "minmax, entropy or percentile (ONNX int8).")
    calibration: str | None = _f(None, EXPORT, "A calibration set: a name from calibration/ (e.g. digits) or a saved .npz "
                                         "(a run's calibration.npz), for identical re-quantization.")
    float_input_conv: bool | None = _f(None, EXPORT, "int8 ONNX and TFLite: keep a 1-4 channel input conv in float (onnxruntime and "
                                             "XNNPACK run it faster so). Default: on, off for a --target with full-integer int8 I/O.",
                                             "--float-input-conv/--int8-input-conv")
    time_runs: int = _f(100, EXPORT, "Batch-1 timed calls per file on this machine, to name the file to deploy (fewer for slow "
                                      "files; 0: no timing).")
    skip_export: bool = _f(False, EXPORT, "Stop after pruning (no quantization or export).")

    def __post_init__(self):
        if isinstance(self.layout, str) and self.layout.upper() in ("NCHW", "NHWC"):
            self.layout = self.layout.upper()  # nhwc is NHWC, for every reader of the options
        if isinstance(self.target, str) and not self.target.strip():  # `--target "$TARGET"` with TARGET unset in CI
            raise ValueError("target is empty (an unset variable?): give a profile name or a .toml path, or leave target out")
