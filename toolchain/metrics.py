"""Per-class metrics: confusion matrix, FN/FNR/recall, AUC, and the protected classes' FN with their exact intervals
(toolchain.intervals).

numpy and the standard library only: `cwtool verify` runs this on a device that has
nothing else, and every number it prints must match what the workstation computed.
scipy/sklearn are used only in the tests, as references.
"""

from __future__ import annotations

import math
from typing import Iterable, Sequence

import numpy as np

from toolchain.errors import UserError
from toolchain.intervals import clopper_pearson

SCHEMA_VERSION = 1
CONFUSION_MAX_CLASSES = 100  # above, no confusion matrix (3,000 classes made a 640 MB report.json): protected cells alone

__all__ = [
    "SCHEMA_VERSION",
    "softmax",
    "log_softmax_of",
    "confusion_matrix",
    "per_class",
    "roc_auc_ovr",
    "evaluate_logits",
]


# --------------------------------------------------------------------------- basics


def softmax(logits) -> np.ndarray:
    """Softmax over the last axis, in float64, stable for large logits."""
    z = np.asarray(logits, dtype=np.float64)
    # Subtracting the row max keeps exp() from overflowing; it does not change the result.
    z = z - np.max(z, axis=-1, keepdims=True)
    e = np.exp(z)
    return e / np.sum(e, axis=-1, keepdims=True)


def log_softmax_of(logits, c: int) -> np.ndarray:
    """log P(class ``c``) per row, in float64, exact where the softmax itself rounds to 1.0: a confident model's
    probabilities tie there (margins past about 37), and every tie between a positive and a negative counts 1/2 in
    an AUC. The same order as the softmax probability wherever that one is distinct."""
    z = np.asarray(logits)
    if z.shape[1] <= 1:
        return np.zeros(z.shape[0])
    out = np.empty(z.shape[0])
    step = max(1, CHUNK_CELLS // z.shape[1])  # rows at a time: five float64 copies of 60,000 x 1,000 logits took 2 GB
    for a in range(0, z.shape[0], step):
        out[a:a + step] = _log_softmax_rows(np.asarray(z[a:a + step], dtype=np.float64), c)
    return out


CHUNK_CELLS = 1 << 20  # logits a step of log_softmax_of reads: 8 MB a float64 copy


def _log_softmax_rows(z: np.ndarray, c: int) -> np.ndarray:
    # the other classes' logits against c's, sorted: rows of the same logits in other places sum alike, to the bit (an
    # exact tie of a positive and a negative counted 0 or 1 for one ulp of summation order, not 1/2)
    d = np.sort(np.delete(z - z[:, [c]], c, axis=1), axis=1)
    top = d.max(axis=1)
    leads = top <= 0  # c has the largest logit: log p = -log1p(sum exp(d)), kept exact for tiny sums
    shift = np.where(leads, 0.0, top)
    rest = np.exp(d - shift[:, None]).sum(axis=1)
    return np.where(leads, -np.log1p(rest), -(shift + np.log(rest + np.exp(-shift))))


def _labels(y, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise UserError(f"{name} must be a 1-D array of class indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        # Labels read from CSV/npz often arrive as floats; accept them only if integral.
        if not np.issubdtype(a.dtype, np.floating) or not np.all(np.mod(a, 1) == 0):
            raise UserError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """int64 matrix of shape (K, K): rows = true class, columns = predicted class."""
    t = _labels(y_true, "y_true")
    p = _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise UserError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    k = _class_count(num_classes, t, p)
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


def _class_count(num_classes: int, t: np.ndarray, p: np.ndarray) -> int:
    """``num_classes``, checked against the true and the predicted labels."""
    k = int(num_classes)
    if k < 1:
        raise UserError(f"num_classes must be at least 1, got {k}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= k):
            raise UserError(
                f"{name} has labels outside 0..{k - 1} (min {a.min()}, max {a.max()}); "
                "check that the data and the model have the same classes"
            )
    return k


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with nan where den == 0 (an undefined rate, not a zero one)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def per_class(cm) -> dict:
    """Per-class counts and rates from a confusion matrix (rows true, cols predicted).

    Keys: tp, fp, fn, tn, support (int64 arrays); fnr, recall, precision (float64 arrays).
    fnr/recall are nan for a class with no samples; precision is nan for a class never predicted.
    """
    cm = np.asarray(cm, dtype=np.int64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise UserError(f"confusion matrix must be square, got shape {cm.shape}")
    return _counts(np.diag(cm).copy(), cm.sum(axis=1), cm.sum(axis=0))


def per_class_of_labels(y_true, y_pred, num_classes: int) -> dict:
    """``per_class`` without the K x K matrix (100,000 classes: 80 GB of it): from the labels' own counts."""
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    k = _class_count(num_classes, t, p)
    return _counts(np.bincount(t[t == p], minlength=k).astype(np.int64), np.bincount(t, minlength=k).astype(np.int64),
                   np.bincount(p, minlength=k).astype(np.int64))


def _counts(tp: np.ndarray, support: np.ndarray, predicted: np.ndarray) -> dict:
    fn = support - tp
    fp = predicted - tp
    tn = support.sum() - tp - fp - fn
    return {
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "tn": tn,
        "support": support,
        "fnr": _ratio(fn, support),
        "recall": _ratio(tp, support),
        "precision": _ratio(tp, predicted),
    }


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of the ranks they span (as scipy.stats.rankdata)."""
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # Start index of each run of equal values in the sorted array.
    starts = np.flatnonzero(np.r_[True, xs[1:] != xs[:-1]])
    ends = np.r_[starts[1:], xs.size]
    mean_rank = (starts + ends + 1) / 2.0  # mean of starts+1 .. ends
    ranks = np.empty(x.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc_ovr(y_true, scores, positive_class: int) -> float:
    """One-vs-rest ROC AUC of `scores` for `positive_class` (Mann-Whitney U, ties count 1/2).

    nan when the positive or the negative group is empty (AUC is undefined there).
    """
    y = _labels(y_true, "y_true")
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    if s.shape != y.shape:
        raise UserError(f"scores and y_true differ in length ({s.size} vs {y.size})")
    if np.isnan(s).any():
        raise UserError("scores contain NaN; the model produced non-finite outputs")
    pos = y == int(positive_class)
    n_pos = int(pos.sum())
    n_neg = int(y.size - n_pos)
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = _average_ranks(s)
    u = ranks[pos].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


# --------------------------------------------------------------------------- evaluation


def _num(x) -> float | None:
    """Plain float, or None for nan: report JSON must be strict (no NaN tokens)."""
    x = float(x)
    return None if math.isnan(x) else x


def _protected_list(protected, k: int) -> list[int]:
    if isinstance(protected, (int, np.integer)):
        items: Iterable = [protected]
    else:
        items = protected
    out: list[int] = []
    for p in items:
        p = int(p)
        if not 0 <= p < k:
            raise UserError(
                f"protected class {p} is outside 0..{k - 1}; pass --protect-class as a class index"
            )
        if p not in out:  # keep the user's order, drop repeats
            out.append(p)
    return out


def check_finite_logits(logits: np.ndarray, where: str | None = None) -> None:
    """A UserError naming how many rows give NaN or infinite logits, and the first ("scores contain NaN" had named a
    NaN where a log of an underflowing softmax gave -inf, and neither the rows nor how many)."""
    z = np.asarray(logits)
    if np.isfinite(z).all():
        return
    bad = _nonfinite_mask(z)
    first = int(np.flatnonzero(bad)[0])
    kinds = " and ".join(kind for kind, found in (("NaN", np.isnan(z).any()), ("infinite", np.isinf(z).any())) if found)
    raise UserError(f"the model's logits are {kinds} on {int(bad.sum()):,} of {len(z):,} rows{f' of {where}' if where else ''} "
                    f"(the first: row {first}): cwtool "
                    "needs finite logits; check the model (a log of a softmax that underflows gives -inf) and its inputs")


def nonfinite_rows(logits) -> int:
    """How many rows of ``logits`` (n, ...) hold a NaN or an infinity."""
    z = np.asarray(logits, dtype=np.float64)
    return int(_nonfinite_mask(z).sum()) if z.ndim else int(not np.isfinite(z))


def _nonfinite_mask(z: np.ndarray) -> np.ndarray:
    """Per row of ``z`` (n, ...): whether it holds a NaN or an infinity."""
    return ~np.isfinite(z.reshape(len(z), -1)).all(axis=1)


def _nonzero(classes: np.ndarray, k: int, own: int) -> dict[str, int]:
    """{class: count} of ``classes`` (of ``k``), ``own`` and the classes never seen left out."""
    counts = np.bincount(classes, minlength=k)
    return {str(j): int(counts[j]) for j in np.flatnonzero(counts) if j != own}


def misses_and_takings(evaluation: dict, k: int) -> tuple[dict[int, int], dict[int, int]] | None:
    """Where protected class ``k``'s samples went ({class: count}, itself left out) and which classes' samples were taken
    for it, from an evaluation's confusion matrix or, above CONFUSION_MAX_CLASSES, its protected rows and columns; None
    where it holds neither (an older or edited file's)."""
    def counts(cells) -> dict[int, int]:
        return {int(j): n for j, n in cells if str(j).isdigit() and int(j) != k and isinstance(n, int) and not isinstance(n, bool) and n > 0}

    if not isinstance(evaluation, dict):
        return None
    cm = evaluation.get("confusion")
    if isinstance(cm, list) and 0 <= k < len(cm) and all(isinstance(r, list) and len(r) == len(cm) for r in cm):
        return counts(enumerate(cm[k])), counts((j, row[k]) for j, row in enumerate(cm))
    rows, columns = evaluation.get("protected_rows"), evaluation.get("protected_columns")
    if isinstance(rows, dict) and isinstance(columns, dict) and isinstance(rows.get(str(k)), dict) and isinstance(columns.get(str(k)), dict):
        return counts(rows[str(k)].items()), counts(columns[str(k)].items())
    return None


def evaluate_logits(y_true, logits, protected: int | Sequence[int], num_classes: int | None = None) -> dict:
    """The evaluation every cwtool command emits, as plain JSON-ready Python values.

    Undefined quantities (recall of a class with no samples, precision of a class never
    predicted, FPR when every sample is of that class, AUC with one group empty) are None,
    so `json.dumps(..., allow_nan=False)` works. Predictions are argmax of the logits;
    AUC scores each sample by the log softmax probability of the protected class (log_softmax_of). Above
    CONFUSION_MAX_CLASSES classes ``confusion`` is None (a matrix grows with their square): the per-class counts stay."""
    z = np.asarray(logits, dtype=np.float64)
    if z.ndim != 2:
        raise UserError(f"logits must have shape (n, num_classes), got {z.shape}")
    y = _labels(y_true, "y_true")
    if y.size != z.shape[0]:
        raise UserError(f"labels and logits differ in length ({y.size} vs {z.shape[0]})")
    if y.size == 0:
        raise UserError("nothing to evaluate: the data split is empty")
    check_finite_logits(z)
    k = int(num_classes) if num_classes is not None else int(z.shape[1])
    if z.shape[1] != k:
        raise UserError(f"model outputs {z.shape[1]} classes but num_classes is {k}")
    prot = _protected_list(protected, k)

    pred = np.argmax(z, axis=1)
    if k <= CONFUSION_MAX_CLASSES:
        cm = confusion_matrix(y, pred, k)
        pc = per_class(cm)
    else:  # the matrix is not reported: not made either
        cm, pc = None, per_class_of_labels(y, pred, k)
    n = int(y.size)

    entries = []
    for c in prot:
        negatives = n - int(pc["support"][c])
        fn = int(pc["fn"][c])
        support = int(pc["support"][c])
        lo, hi = clopper_pearson(fn, support)
        entries.append(
            {
                "class": c,
                "fn": fn,
                "fnr": _num(pc["fnr"][c]),
                "fnr_ci95": [lo, hi],
                "fpr": _num(pc["fp"][c] / negatives) if negatives else None,
                "auc": _num(roc_auc_ovr(y, log_softmax_of(z, c), c)),
                "fp": int(pc["fp"][c]),
                "tp": int(pc["tp"][c]),
                "support": support,
                "recall": _num(pc["recall"][c]),
                "precision": _num(pc["precision"][c]),
            }
        )

    return {
        "schema_version": SCHEMA_VERSION,
        "n": n,
        "accuracy": float(pc["tp"].sum() / n),
        "confusion": cm.tolist() if cm is not None else None,
        **({} if cm is not None else {"confusion_protected": {str(a): {str(b): int(np.sum((y == a) & (pred == b))) for b in prot}
                                                              for a in prot},
                                      # each protected class's row and column, their cells that are not 0: where its
                                      # misses went and what was taken for it, which a 1,000-class head kept nowhere
                                      "protected_rows": {str(a): _nonzero(pred[y == a], k, a) for a in prot},
                                      "protected_columns": {str(a): _nonzero(y[pred == a], k, a) for a in prot}}),
        "fn_per_class": [int(v) for v in pc["fn"]],
        "fp_per_class": [int(v) for v in pc["fp"]],
        "support_per_class": [int(v) for v in pc["support"]],
        "recall_per_class": [_num(v) for v in pc["recall"]],
        "precision_per_class": [_num(v) for v in pc["precision"]],
        "protected": entries,
    }
