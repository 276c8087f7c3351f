"""Exact intervals and tests on counts: Clopper-Pearson for a rate, a paired change's interval, exact McNemar.

numpy and the standard library only (`cwtool verify` runs them on a device); scipy is used only in the tests, as the
reference.
"""

from __future__ import annotations

import math
from statistics import NormalDist

from toolchain.errors import UserError

__all__ = ["clopper_pearson", "paired_change_ci", "mcnemar_exact"]


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


# --------------------------------------------------------------------------- tests


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
