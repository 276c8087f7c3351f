"""Per-class metrics: confusion matrix, FN/FNR/recall, AUC, exact intervals and tests.

numpy and the standard library only: `cwtool verify` runs this on a device that has
nothing else, and every number it prints must match what the workstation computed.
scipy/sklearn are used only in the tests, as references.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Iterable, Sequence

import numpy as np

from toolchain.errors import UserError

SCHEMA_VERSION = 1
CONFUSION_MAX_CLASSES = 100  # above, no confusion matrix (3,000 classes made a 640 MB report.json): protected cells alone

__all__ = [
    "SCHEMA_VERSION",
    "softmax",
    "log_softmax_of",
    "confusion_matrix",
    "per_class",
    "clopper_pearson",
    "roc_auc_ovr",
    "mcnemar_exact",
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
    z = np.asarray(logits, dtype=np.float64)
    d = np.delete(z - z[:, [c]], c, axis=1)  # the other classes' logits against c's
    if d.shape[1] == 0:
        return np.zeros(z.shape[0])
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
    k = int(num_classes)
    if k < 1:
        raise UserError(f"num_classes must be at least 1, got {k}")
    for name, a in (("y_true", t), ("y_pred", p)):
        if a.size and (a.min() < 0 or a.max() >= k):
            raise UserError(
                f"{name} has labels outside 0..{k - 1} (min {a.min()}, max {a.max()}); "
                "check that the data and the model have the same classes"
            )
    return np.bincount(t * k + p, minlength=k * k).reshape(k, k).astype(np.int64)


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
    tp = np.diag(cm).copy()
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    fn = support - tp
    fp = predicted - tp
    tn = cm.sum() - tp - fp - fn
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


# --------------------------------------------------------------------------- intervals


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction for the incomplete beta (modified Lentz; Numerical Recipes 6.4)."""
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * x / qap
    d = tiny if abs(d) < tiny else d
    d = 1.0 / d
    h = d
    # Converges in O(sqrt(max(a, b))) steps; 20000 covers n far beyond the 1e4 we test.
    for m in range(1, 20000):
        m2 = 2 * m
        aa = m * (b - m) * x / ((qam + m2) * (a + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        h *= d * c
        aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))
        d = 1.0 + aa * d
        d = tiny if abs(d) < tiny else d
        c = 1.0 + aa / c
        c = tiny if abs(c) < tiny else c
        d = 1.0 / d
        delta = d * c
        h *= delta
        if abs(delta - 1.0) < 1e-15:
            break
    return h


def _betainc(a: float, b: float, x: float) -> float:
    """Regularized incomplete beta I_x(a, b) for a, b > 0."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    # Front factor in log space: x^a (1-x)^b / B(a, b) under/overflows for large n.
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
        + a * math.log(x) + b * math.log1p(-x)
    )
    front = math.exp(log_front)
    # The continued fraction converges fast only left of the mode; use symmetry elsewhere.
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def _beta_ppf(q: float, a: float, b: float) -> float:
    """Inverse of I_x(a, b) in x, by bisection (I is monotone in x, so this cannot fail)."""
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:  # float resolution reached
            break
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(k: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial proportion k/n.

    lo = Beta(k, n-k+1).ppf(alpha/2), hi = Beta(k+1, n-k).ppf(1-alpha/2).
    k=0 gives lo=0, k=n gives hi=1, n=0 gives (0.0, 1.0): no data, no information.
    """
    k, n = int(k), int(n)
    if n < 0 or k < 0 or k > n:
        raise UserError(f"clopper_pearson needs 0 <= k <= n, got k={k}, n={n}")
    if not 0.0 < confidence < 1.0:
        raise UserError(f"confidence must be in (0, 1), got {confidence}")
    if n == 0:
        return 0.0, 1.0
    half = (1.0 - confidence) / 2.0
    # Closed forms at the edges: exact, and they avoid Beta(0, .) which is undefined.
    if k == 0:
        lo = 0.0
        hi = -math.expm1(math.log(half) / n)  # 1 - half**(1/n)
    elif k == n:
        lo = math.exp(math.log(half) / n)  # half**(1/n)
        hi = 1.0
    else:
        lo = _beta_ppf(half, k, n - k + 1)
        hi = _beta_ppf(1.0 - half, k + 1, n - k)
    return float(lo), float(hi)


# --------------------------------------------------------------------------- ranking and tests


def _wilson(k: int, n: int, z: float) -> tuple[float, float]:
    p = k / n
    centre, half = p + z * z / (2 * n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


def paired_change_ci(both: int, only_first: int, only_second: int, neither: int, confidence: float = 0.95) -> tuple[float, float]:
    """An interval for the change in a rate between two classifiers judged on the same n samples -- the second's miss
    rate minus the first's -- from the paired table: samples both miss (``both``), only the first misses, only the
    second, and ``neither``. Newcombe's hybrid score interval (1998, method 10): Wilson intervals of the two rates
    joined through their correlation. Unlike the exact interval of b in b + c, conditional on the b + c samples that
    differ (no wider than b + c: [0, 0] where none differs, 40% coverage of the change on 27 samples), it covers the
    change on new samples at about its level."""
    n = both + only_first + only_second + neither
    if n <= 0:
        return 0.0, 0.0
    z = NormalDist().inv_cdf(1 - (1 - confidence) / 2)
    first, second = (both + only_first) / n, (both + only_second) / n
    l1, u1 = _wilson(both + only_first, n, z)
    l2, u2 = _wilson(both + only_second, n, z)
    # phi of the 2x2 table of misses (first x second); 0 where a margin is empty
    margins = (both + only_first) * (only_second + neither) * (both + only_second) * (only_first + neither)
    phi = (both * neither - only_first * only_second) / math.sqrt(margins) if margins else 0.0
    change = second - first
    below = math.sqrt(max(0.0, (second - l2) ** 2 - 2 * phi * (second - l2) * (u1 - first) + (u1 - first) ** 2))
    above = math.sqrt(max(0.0, (u2 - second) ** 2 - 2 * phi * (u2 - second) * (first - l1) + (first - l1) ** 2))
    return max(-1.0, change - below), min(1.0, change + above)


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


def _log_binom_pmf(i: int, n: int) -> float:
    """log P(X = i) for X ~ Binomial(n, 1/2)."""
    return math.lgamma(n + 1) - math.lgamma(i + 1) - math.lgamma(n - i + 1) - n * math.log(2.0)


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value: binomial test of b successes in b+c trials, p=1/2.

    b, c are the discordant pairs (e.g. right-before/wrong-after and the reverse).
    Returns 1.0 when b + c == 0. Matches scipy.stats.binomtest(b, b+c, 0.5).pvalue.
    """
    b, c = int(b), int(c)
    if b < 0 or c < 0:
        raise UserError(f"mcnemar_exact needs non-negative counts, got b={b}, c={c}")
    n = b + c
    if n == 0 or b == c:
        return 1.0
    k = min(b, c)
    # p = 1/2 makes the distribution symmetric, so two-sided = 2 * lower tail at min(b, c).
    logs = [_log_binom_pmf(i, n) for i in range(k + 1)]
    m = max(logs)
    tail = math.exp(m) * math.fsum(math.exp(v - m) for v in logs)
    return float(min(1.0, 2.0 * tail))


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


def nonfinite_rows(logits) -> int:
    """How many rows of ``logits`` (n, ...) hold a NaN or an infinity."""
    z = np.asarray(logits, dtype=np.float64)
    return int((~np.isfinite(z.reshape(len(z), -1))).any(axis=1).sum()) if z.ndim else int(not np.isfinite(z))


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
    if not np.isfinite(z).all():
        raise UserError("the model produced NaN or infinite logits; check the model and its inputs")
    k = int(num_classes) if num_classes is not None else int(z.shape[1])
    if z.shape[1] != k:
        raise UserError(f"model outputs {z.shape[1]} classes but num_classes is {k}")
    prot = _protected_list(protected, k)

    pred = np.argmax(z, axis=1)
    cm = confusion_matrix(y, pred, k)
    pc = per_class(cm)
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
        "accuracy": float(np.trace(cm) / n),
        "confusion": cm.tolist() if k <= CONFUSION_MAX_CLASSES else None,
        **({} if k <= CONFUSION_MAX_CLASSES else {"confusion_protected": {str(a): {str(b): int(cm[a, b]) for b in prot} for a in prot}}),
        "fn_per_class": [int(v) for v in pc["fn"]],
        "fp_per_class": [int(v) for v in pc["fp"]],
        "support_per_class": [int(v) for v in pc["support"]],
        "recall_per_class": [_num(v) for v in pc["recall"]],
        "precision_per_class": [_num(v) for v in pc["precision"]],
        "protected": entries,
    }
