"""The FN promise on new data, and how sure validation can make it. numpy and the standard library only:
compress sets operating points with it, and `cwtool verify` states it on a device.

The promise, per protected class k: on new data from the same distribution, with ``n_new`` samples of
class k, the compressed model misses at most ``budget`` more of them than the dense model does.

Only the samples on which the two models disagree move the difference. On the validation samples of k,
``b`` = caught by the dense model and missed by the candidate, ``c`` = the reverse, ``n`` = all of them.
On new data the difference is D = B - C, where (B, C, rest) is multinomial with the unknown disagreement
rates (p_b, p_c, 1 - p_b - p_c). Validation gives their posterior under a Jeffreys prior,
Dirichlet(b + 1/2, c + 1/2, n - b - c + 1/2); the new counts then follow a Dirichlet-multinomial, and

    confidence = P(D <= budget)

is computed exactly (a sum over B and C) up to ``EXACT_LIMIT`` new samples and from the same
distribution's mean and variance beyond. It accounts for the noise of both the validation split (the
posterior's width) and the new data (the multinomial), and uses the pairing: models that agree need
no margin, only disagreements cost one. It is a statement about models: one that agreed with the
dense model on all of n validation samples still gets confidence ~0.71 that it misses none more on n
new ones -- a frequentist rule that shipped such a model would fail up to 25% of the time (docs/FN_PROMISE.md).
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

__all__ = ["PRIOR", "EXACT_LIMIT", "promise_confidence", "disagreements"]

PRIOR = 0.5  # Jeffreys: half a pseudo-count per cell
EXACT_LIMIT = 3000  # new samples up to which the sum over (B, C) is exact (a 3001 x 3001 grid)


def disagreements(dense_hit: np.ndarray, candidate_hit: np.ndarray) -> tuple[int, int]:
    """(b, c) over the samples of one class: b = dense caught and candidate missed, c = the reverse."""
    dense_hit, candidate_hit = np.asarray(dense_hit, bool), np.asarray(candidate_hit, bool)
    return int(np.sum(dense_hit & ~candidate_hit)), int(np.sum(~dense_hit & candidate_hit))


def _lgamma(values: np.ndarray) -> np.ndarray:
    return np.array([math.lgamma(float(v)) for v in np.ravel(values)]).reshape(np.shape(values))


def promise_confidence(b: int, c: int, n: int, n_new: int | None = None, budget: int = 0) -> float:
    """P(B - C <= budget) on ``n_new`` new samples of the class (default: as many as validation had),
    given b and c of n validation samples (see the module docstring)."""
    if n <= 0:
        return 0.0
    n_new = int(n if n_new is None else n_new)
    if n_new <= 0:
        return 1.0
    if not 0 <= b + c <= n:
        raise ValueError(f"b={b} and c={c} do not fit in n={n}")
    a = np.array([b + PRIOR, c + PRIOR, n - b - c + PRIOR], dtype=np.float64)
    if n_new > EXACT_LIMIT:
        return _normal_confidence(a, n_new, budget)
    k = np.arange(n_new + 1, dtype=np.float64)
    # log pmf of the Dirichlet-multinomial, split into terms of B, C and R = n_new - B - C
    term = [_lgamma(k + ai) - _lgamma(np.array(ai)) - _lgamma(k + 1) for ai in a]
    const = math.lgamma(n_new + 1) + math.lgamma(float(a.sum())) - math.lgamma(n_new + float(a.sum()))
    B, C = np.meshgrid(np.arange(n_new + 1), np.arange(n_new + 1), indexing="ij")
    R = n_new - B - C
    valid = R >= 0
    logp = np.where(valid, term[0][B] + term[1][C] + term[2][np.clip(R, 0, None)] + const, -np.inf)
    p = np.exp(logp)
    ok = p[(B - C <= budget) & valid].sum()
    return float(min(1.0, max(0.0, ok / p.sum())))


def _normal_confidence(a: np.ndarray, n_new: int, budget: int) -> float:
    total = float(a.sum())
    pb, pc = a[0] / total, a[1] / total
    mean = n_new * (pb - pc)
    var = n_new * (n_new + total) / (1 + total) * (pb + pc - (pb - pc) ** 2)
    if var <= 0:
        return 1.0 if mean <= budget else 0.0
    return float(NormalDist(mean, math.sqrt(var)).cdf(budget + 0.5))  # continuity: D is an integer
