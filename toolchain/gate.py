"""The FN gate: is each protected class's false-negative count within budget of the baseline?

numpy and the standard library only (through toolchain.metrics and toolchain.intervals): `cwtool verify` runs this on a
device, and `cwtool compress` uses the same function for its final verdict.

Both sides are evaluations in the shape of `metrics.evaluate_logits`, computed on the same rows.
Either may carry ``"predictions"`` (the predicted class of every row, in row order); when both do,
the protected classes are also compared sample by sample.

Statistics, per protected class k (n_k = samples of class k):

- ``fnr_ci95``: Clopper-Pearson 95% interval of the candidate's FNR (fn / n_k).
- ``fnr_change_ci95``: that interval minus the baseline's FNR: the change against the accepted
  baseline, which is treated as a fixed reference number.
- Paired, when both sides have per-sample predictions: among the n_k samples of class k,
  ``b`` = missed now but caught by the baseline, ``c`` = caught now but missed by the baseline,
  so FN change = b - c exactly. ``mcnemar_p`` is the exact two-sided McNemar p-value (binomial
  test of b in b + c trials at 1/2). ``fn_change_ci95`` is a 95% interval of the change in FN on
  n_k new samples: n_k times Newcombe's hybrid score interval of the paired FNR change
  (toolchain.intervals.paired_change_ci; the exact interval of b in b + c, conditional on the
  samples that differ, was [0, 0] where none differs).
- ``significant``: paired: mcnemar_p < alpha and b > c. Unpaired (no per-sample predictions on
  one side): the discordant counts are unknown but at least b = FN change, c = 0; the exact
  McNemar p of those counts (``mcnemar_p_bound``) is the smallest p the counts allow, so this
  errs on the side of failing. (Treating the baseline FNR as a fixed number would instead call a
  single new FN significant whenever the baseline had none.)

Modes: ``plain`` fails a class whose FN (or FNR) exceeds the budget. ``significant`` fails it only
when it exceeds the budget *and* the increase is significant. The absolute ceiling ``max_fnr``,
the accuracy budget and class collapse fail in both modes.
"""

from __future__ import annotations

import math

import numpy as np

from toolchain.errors import UserError, listed
from toolchain.intervals import clopper_pearson, mcnemar_exact, paired_change_ci

__all__ = ["DEFAULT_MAX_ACCURACY_DROP", "GATE_MODES", "class_label", "collapse_check", "fn_gate", "paired_counts"]

GATE_MODES = ("plain", "significant")
DEFAULT_MAX_ACCURACY_DROP = 0.02  # compress's default budget, and verify's against a baseline: the same gate on both sides
_EPS = 1e-12


def class_label(k: int, class_names) -> str:
    """"class 7 (three)" where the class has a name other than its number."""
    if class_names is not None and 0 <= k < len(class_names) and str(class_names[k]) != str(k):
        return f"class {k} ({class_names[k]})"
    return f"class {k}"


def paired_counts(base_hit, cand_hit) -> tuple[int, int]:
    """Discordant pairs over the samples of one class: hit = the class was predicted (no FN).

    b = caught by the baseline, missed by the candidate (a new FN);
    c = missed by the baseline, caught by the candidate (a fixed FN). FN change = b - c.
    """
    base_hit = np.asarray(base_hit, dtype=bool)
    cand_hit = np.asarray(cand_hit, dtype=bool)
    return int(np.sum(base_hit & ~cand_hit)), int(np.sum(~base_hit & cand_hit))


def _true_labels(evaluation: dict) -> np.ndarray | None:
    """An evaluation's row labels, when it stores them ("labels"); evaluate_logits does not."""
    y = evaluation.get("labels")
    return None if y is None else np.asarray(y, dtype=np.int64)


def _paired(baseline: dict, candidate: dict, k: int, labels: np.ndarray | None) -> dict | None:
    pb, pc = baseline.get("predictions"), candidate.get("predictions")
    if pb is None or pc is None or labels is None:
        return None
    pb, pc = np.asarray(pb, dtype=np.int64), np.asarray(pc, dtype=np.int64)
    if pb.shape != pc.shape or pb.shape != labels.shape:
        raise UserError(
            f"the baseline has predictions for {pb.size} rows but the candidate for {pc.size} "
            f"(and {labels.size} labels): compare them on the same rows"
        )
    mask = labels == k
    base_hit, cand_hit = pb[mask] == k, pc[mask] == k
    b, c = paired_counts(base_hit, cand_hit)
    p = mcnemar_exact(b, c)
    both = int(np.sum(~base_hit & ~cand_hit))  # the change in FN on n new samples like these: n times the change in FNR
    lo, hi = paired_change_ci(both, c, b, int(mask.sum()) - both - b - c)
    n = int(mask.sum())
    return {"b": b, "c": c, "mcnemar_p": p, "fn_change_ci95": [n * lo, n * hi]}


def _condense(reasons: list[str]) -> list[str]:
    """One line for many "class c recall fell to ..." reasons (a collapsed model gives one per class)."""
    fell = [r for r in reasons if "recall fell" in r]
    if len(fell) <= 2:
        return reasons
    classes = [r.split()[1] for r in fell]
    rest = [r for r in reasons if "recall fell" not in r]
    named = listed(classes, 20)
    return rest + [f"recall fell to about 0 for {len(classes):,} classes: {named} (the baseline's was not)"]


def fn_gate(
    baseline: dict | None,
    candidate: dict,
    max_fn_increase: int | None = 0,
    max_accuracy_drop: float | None = None,
    *,
    max_fnr_increase: float | None = None,
    max_fnr: float | None = None,
    mode: str = "plain",
    alpha: float = 0.05,
    collapse: bool = True,
    labels=None,
    class_names=None,
    same_rows: bool = True,
) -> dict:
    """Gate `candidate` against `baseline` (both shaped like metrics.evaluate_logits, same rows).

    baseline None: no relative budget; only `max_fnr` and collapse (without the recall rule) gate.
    `max_fnr_increase` (a fraction of the class's samples), when given, replaces `max_fn_increase`.
    `labels` (true class of every row) enables the paired tests when both sides have "predictions";
    without it they are read from an evaluation's "labels" key if present.

    `same_rows=False` (verify --allow-other-data): the baseline was measured on other rows, so counts
    are not comparable: each class's limit is the baseline's FNR (plus the budget, as a fraction of the
    baseline's samples) times this class's samples, and nothing is paired.

    Returns {"passed", "checks" (one per protected class), "reasons", "budget", "mode", "collapse",
    "accuracy"}; every reason is one line naming the class or the rule.
    """
    if mode not in GATE_MODES:
        raise UserError(f"unknown gate mode '{mode}': use one of {', '.join(GATE_MODES)}")
    if max_fnr_increase is not None:
        max_fn_increase = None
    if max_fn_increase is None and max_fnr_increase is None:
        max_fn_increase = 0
    if labels is None:
        labels = _true_labels(candidate)
        if labels is None and baseline is not None:
            labels = _true_labels(baseline)
    labels = None if labels is None else np.asarray(labels, dtype=np.int64)

    if baseline is not None:
        if same_rows and int(baseline.get("n", -1)) != int(candidate["n"]):
            raise UserError(
                f"the baseline was measured on {baseline.get('n')} rows but this evaluation on {candidate['n']}: "
                "verify on the same data and split as the baseline"
            )
        base = {p["class"]: p for p in baseline["protected"]}
        missing = [p["class"] for p in candidate["protected"] if p["class"] not in base]
        if missing:
            raise UserError(
                f"the baseline has no protected class {', '.join(map(str, missing))} (it protects "
                f"{', '.join(map(str, sorted(base))) or 'none'}): pass the baseline's classes or a baseline for these"
            )
    else:
        base = {}

    checks, reasons = [], []
    for p in candidate["protected"]:
        k = p["class"]
        label = class_label(k, class_names)
        fn, support = int(p["fn"]), int(p["support"])
        fnr = p.get("fnr")
        ci = p.get("fnr_ci95") or list(clopper_pearson(fn, support))
        check: dict = {"class": k, "fn": fn, "support": support, "fnr": fnr, "fnr_ci95": list(ci)}
        why: list[str] = []
        if k in base:
            b0 = base[k]
            bfn = int(b0["fn"])
            bfnr = b0.get("fnr")
            if same_rows and int(b0.get("support", support)) != support:
                raise UserError(
                    f"{label} has {b0.get('support')} samples in the baseline but {support} here: "
                    "verify on the same data and split as the baseline"
                )
            if not same_rows:
                bsup = int(b0.get("support") or 0)
                rate = bfn / bsup if bsup else 0.0
                extra = max_fnr_increase if max_fnr_increase is not None else (int(max_fn_increase) / bsup if bsup else 0.0)
                limit = math.floor((rate + extra) * support + _EPS)
                budget_text = f"baseline FNR {rate:.4f} on other rows + {extra:g}, x {support} samples"
            elif max_fnr_increase is not None:
                limit = bfn + math.floor((max_fnr_increase + _EPS) * support)
                budget_text = f"baseline {bfn} + {max_fnr_increase:g} x {support} samples"
            else:
                limit = bfn + int(max_fn_increase)
                budget_text = f"baseline {bfn} + {int(max_fn_increase)}"
            check.update({"baseline_fn": bfn, "baseline_fnr": bfnr, "fn_change": fn - bfn if same_rows else None, "limit": limit})
            if bfnr is not None:
                check["fnr_change_ci95"] = [ci[0] - bfnr, ci[1] - bfnr]
            paired = _paired(baseline, candidate, k, labels) if same_rows else None
            if paired is not None:
                check.update(paired)
                significant = paired["mcnemar_p"] < alpha and paired["b"] > paired["c"]
            else:
                # Without per-sample predictions the discordant counts are unknown; they are at
                # least b = change, c = 0, which gives the smallest p the counts allow: errs on failing.
                d = fn - bfn if same_rows else fn - round(rate * support)
                check["mcnemar_p_bound"] = mcnemar_exact(max(d, 0), max(-d, 0))
                significant = d > 0 and check["mcnemar_p_bound"] < alpha
            # "significant" reads as any significant change (a decrease read false beside p = 0.004): said whole too
            check["significant"] = check["significant_increase"] = bool(significant)
            over = fn > limit
            check["over_budget"] = over
            if over and (mode == "plain" or significant):
                detail = f"FN {fn} > {limit} ({budget_text})"
                if paired is not None:
                    detail += (f", McNemar p={paired['mcnemar_p']:.3g} ({paired['b']} missed here that the reference catches, "
                               f"{paired['c']} the reverse)")
                why.append(f"{label}: {detail}")
        if max_fnr is not None and fnr is not None and fnr > max_fnr + _EPS:
            why.append(f"{label}: FNR {fnr:.4f} > ceiling {max_fnr:g} ({fn}/{support} missed)")
        check["passed"] = not why
        check["reasons"] = why
        checks.append(check)
        reasons.extend(why)

    accuracy = {"value": candidate["accuracy"]}
    if max_accuracy_drop is not None and baseline is not None:
        floor = baseline["accuracy"] - max_accuracy_drop
        accuracy.update({"baseline": baseline["accuracy"], "floor": floor, "passed": candidate["accuracy"] >= floor - _EPS})
        if not accuracy["passed"]:
            reasons.append(
                f"accuracy {candidate['accuracy']:.4f} < {floor:.4f} (baseline {baseline['accuracy']:.4f} - {max_accuracy_drop})"
            )

    collapsed: list[str] = []
    counts = _class_counts(candidate) if collapse else None
    if counts is not None:
        base_counts = _class_counts(baseline) if baseline is not None else None
        collapsed = [f"collapse: {r}" for r in _condense(collapse_from_counts(counts, base_counts))]
        reasons.extend(collapsed)

    return {
        "passed": not reasons,
        "checks": checks,
        "reasons": reasons,
        "budget": {
            "max_fn_increase": max_fn_increase,
            "max_fnr_increase": max_fnr_increase,
            "max_fnr": max_fnr,
            "max_accuracy_drop": max_accuracy_drop,
            "mode": mode,
            "alpha": alpha,
            "relative": baseline is not None,
            "same_rows": bool(same_rows) if baseline is not None else None,
        },
        "mode": mode,
        "accuracy": accuracy,
        "collapse": collapsed,
    }


# --------------------------------------------------------------------------- collapse


def _class_counts(evaluation: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """(samples, predictions, caught) per class of an evaluation: from its confusion matrix (rows, columns, diagonal),
    or, where it holds none (above CONFUSION_MAX_CLASSES classes, toolchain.metrics), from its per-class counts; None
    where it has neither."""
    cm = evaluation.get("confusion")
    if cm is not None:
        cm = np.asarray(cm, dtype=np.int64)
        return cm.sum(axis=1), cm.sum(axis=0), np.diag(cm)
    support, fn, fp = (evaluation.get(key) for key in ("support_per_class", "fn_per_class", "fp_per_class"))
    if support is None or fn is None or fp is None:
        return None
    support, fn, fp = (np.asarray(v, dtype=np.int64) for v in (support, fn, fp))
    return support, support - fn + fp, support - fn


def _shares(samples: np.ndarray, predictions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per class, its share of the predictions and of the samples (at least one row)."""
    total = int(samples.sum())
    return predictions / total, samples / total


def _takes_all(pred_share: np.ndarray, true_share: np.ndarray, max_share: float) -> np.ndarray:
    """Per class: it takes over `max_share` of the predictions and leaves the others under half their due."""
    return (pred_share > max_share) & ((1.0 - pred_share) < (1.0 - true_share) / 2.0)


def collapse_check(cm, baseline_cm=None, max_share: float = 0.9, min_recall: float = 0.05) -> list[str]:
    """``collapse_from_counts`` of a confusion matrix (rows true, columns predicted) and the baseline's."""
    counts = _class_counts({"confusion": cm})
    base = None if baseline_cm is None else _class_counts({"confusion": baseline_cm})
    if base is not None and np.asarray(baseline_cm).shape != np.asarray(cm).shape:
        raise UserError(f"baseline confusion matrix has shape {np.asarray(baseline_cm).shape}, this one {np.asarray(cm).shape}; "
                        "compare models with the same classes")
    return collapse_from_counts(counts, base, max_share, min_recall)


def collapse_from_counts(counts, base_counts=None, max_share: float = 0.9, min_recall: float = 0.05) -> list[str]:
    """Reasons (one line each) to think predictions collapsed; empty list when none. ``counts``: (samples, predictions,
    caught) per class, as ``_class_counts`` reads them; ``base_counts`` the baseline's.

    Two rules (int8 conversion can make a model answer one class for everything):
    - share: a class takes more than `max_share` of all predictions while leaving the
      other classes less than half the predictions their true share calls for, i.e.
      (1 - pred_share) < (1 - true_share) / 2. A 90%-majority data set predicted at 92%
      is not flagged; the same model answering 99% majority is. Not flagged where the
      baseline already did the same.
    - recall (only with a baseline): a class with samples whose recall is below
      `min_recall` while the baseline's recall for it was at least `min_recall`.
    """
    samples, predictions, caught = counts
    reasons: list[str] = []
    if base_counts is not None and len(base_counts[0]) != len(samples):
        raise UserError(f"the baseline has {len(base_counts[0])} classes, this one {len(samples)}; compare models with the same classes")
    if int(samples.sum()) == 0:
        return reasons
    pred_share, true_share = _shares(samples, predictions)
    # A baseline that already answers one class for (nearly) everything passes that on to a
    # candidate that agrees with it: the share rule is about a collapse the candidate brought.
    inherited = (_takes_all(*_shares(*base_counts[:2]), max_share) if base_counts is not None and base_counts[0].sum()
                 else np.zeros(len(samples), bool))
    for c in np.flatnonzero(_takes_all(pred_share, true_share, max_share) & ~inherited):
        reasons.append(
            f"class {c} takes {pred_share[c]:.1%} of all predictions "
            f"but is only {true_share[c]:.1%} of the samples"
        )
    if base_counts is not None:
        for c in range(len(samples)):
            if samples[c] and base_counts[0][c]:
                r, br = caught[c] / samples[c], base_counts[2][c] / base_counts[0][c]
                if r < min_recall <= br:
                    reasons.append(f"class {c} recall fell to {r:.1%} (baseline {br:.1%})")
    return reasons
