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

is computed exactly, at any number of new samples (the sum over B and C, as the new disagreements B + C and
how they split). It accounts for the noise of both the validation split (the
posterior's width) and the new data (the multinomial), and uses the pairing: models that agree need
no margin, only disagreements cost one. It is a statement about models: one that agreed with the
dense model on all of n validation samples still gets confidence ~0.77 that it misses none more on n
new ones -- a frequentist rule that shipped such a model would fail up to 25% of the time (docs/FN_PROMISE.md).
"""

from __future__ import annotations

import math
import numpy as np

__all__ = ["PRIOR", "promise_confidence", "disagreements", "confidence_ceiling", "empty_promise", "together_words", "percent_words",
           "share_words", "together_bound", "confidence_to_ask", "budget_backing"]

PRIOR = 0.5  # Jeffreys: half a pseudo-count per cell
# Below this many validation samples of a class, the confidence averaged over shipped validation draws fell to 0.81-0.92
# for 0.95 where the ticket ranks the class unlike the dense model (reproduce/fn_promise_regimes.py); from 60 it met 0.95
SMALL_SPLIT = 60


def empty_promise(n: int, reference_fn: int, budget: int, n_new: int | None = None, reference: str = "the dense model") -> str | None:
    """Why "misses at most the reference's FN + budget" says nothing about a class (None: it says something): the budget
    allows missing all ``n_new`` samples of new data, or the reference model missed all ``n`` it was judged on (a model
    that never answers the class: no more missed than all of them). Its probability is then 1, or near it, whatever the
    shipped model does: said wherever that probability is (a run on 1 and on 9 positives said "probability 1.000" alone)."""
    n_new = n if n_new is None else n_new
    if n_new and budget >= n_new:
        return f"a budget of {budget} allows missing all {n_new} samples of the class on new data"
    if n and reference_fn >= n:
        return f"{reference} misses all {n} samples of the class here: missing no more than it is no protection"
    return None


def percent_words(share: float) -> str:
    """A share in words that does not round 1 of 40 (2.5%) to 2%: whole percents where they are exact enough."""
    return f"{share:.0%}" if abs(share * 100 - round(share * 100)) < 0.05 else f"{share:.1%}"


def share_words(budget, n_new) -> str:
    """" (20% of them)": what a budget allows of the new samples (+2 of 10 read small); empty for no budget."""
    if not (isinstance(budget, int) and isinstance(n_new, int) and budget > 0 and n_new > 0):
        return ""
    return f" ({percent_words(budget / n_new)} of them)"


def together_bound(confidences) -> float:
    """The chance that every class's promise holds at once, at least (Bonferroni: 1 - the sum of the shortfalls, no
    independence assumed); 0 where they add up to 1 or more."""
    return max(0.0, 1 - sum(1 - c for c in confidences))


def confidence_to_ask(reached: float) -> float | None:
    """The --confidence to give where ``reached`` is the most a split backs: cut to two decimals; None below the flag's 0.5."""
    to = math.floor(reached * 100) / 100
    return to if to >= 0.5 else None


def budget_backing(n: int, dense_fn: int, confidence: float, above: int, below: int) -> int | None:
    """The smallest --max-fn-increase over ``above`` and under ``below`` at which a split of ``n`` samples of a class the
    dense model misses ``dense_fn`` of can back ``confidence`` (its ceiling); None where none can."""
    return next((b for b in range(int(above) + 1, below) if confidence_ceiling(n, dense_fn, b) >= confidence), None)


def together_words(together: float, bold: bool = False) -> str:
    """What several classes' promises say of all holding at once (the Bonferroni bound, no independence assumed): a bound
    of 0 had read "at least 0.000", a 0% chance to a clinician."""
    if together <= 0:
        return ("no bound on every promise holding at once (each class's own probability is stated; their shortfalls from 1 "
                "add up to 1 or more, so the bound that needs no independence says nothing)")
    number = f"**{together:.3f}**" if bold else f"{together:.3f}"
    return f"every promise holds at once with probability at least {number} (each class's own is stated)"


def disagreements(dense_hit: np.ndarray, candidate_hit: np.ndarray) -> tuple[int, int]:
    """(b, c) over the samples of one class: b = dense caught and candidate missed, c = the reverse."""
    dense_hit, candidate_hit = np.asarray(dense_hit, bool), np.asarray(candidate_hit, bool)
    return int(np.sum(dense_hit & ~candidate_hit)), int(np.sum(~dense_hit & candidate_hit))


def _lgamma(values) -> np.ndarray:
    return np.array([math.lgamma(float(v)) for v in np.ravel(values)]).reshape(np.shape(values))


def _beta_binomial_weights(trials: int, alpha: float, beta: float, k: np.ndarray) -> np.ndarray:
    """P(K = k) of a beta-binomial(trials, alpha, beta) up to a common factor, for integers 0 <= k <= trials: the
    largest weight is 1 (ratios only: callers normalize)."""
    log_w = _lgamma(k + alpha) + _lgamma(trials - k + beta) - _lgamma(k + 1) - _lgamma(trials - k + 1)
    return np.exp(log_w - log_w.max())


def promise_confidence(b: int, c: int, n: int, n_new: int | None = None, budget: int = 0) -> float:
    """P(B - C <= budget) on ``n_new`` new samples of the class (default: as many as validation had),
    given b and c of n validation samples (see the module docstring)."""
    n_new = n if n_new is None else n_new
    for name, value in (("b", b), ("c", c), ("n", n), ("n_new", n_new), ("budget", budget)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
            raise ValueError(f"{name}={value!r} is not a count")
    if b < 0 or c < 0 or n_new < 0 or b + c > n:
        raise ValueError(f"b={b}, c={c} of n={n} (n_new={n_new}) are not counts of one split")
    if n <= 0:
        return 0.0
    if n_new == 0:  # D is 0: the promise holds exactly when the budget allows none
        return float(budget >= 0)
    b, c, n, n_new, budget = int(b), int(c), int(n), int(n_new), int(budget)
    a_b, a_c, a_rest = b + PRIOR, c + PRIOR, n - b - c + PRIOR
    # The Dirichlet-multinomial factors exactly: the new disagreements S = B + C are beta-binomial(n_new, a_b + a_c,
    # a_rest), and B given S is beta-binomial(S, a_b, a_c); D = 2B - S <= budget <=> B <= (S + budget) / 2.
    s = np.arange(n_new + 1, dtype=np.float64)
    p_s = _beta_binomial_weights(n_new, a_b + a_c, a_rest, s)
    kept = np.flatnonzero(p_s > 1e-17)  # the rest weighs < n_new * 1e-17 of the mode: nothing a decision can see
    top = int(s[kept[-1]])
    k = np.arange(top + 1, dtype=np.float64)
    log_b, log_c, log_f = _lgamma(k + a_b), _lgamma(k + a_c), _lgamma(k + 1)
    caught = 0.0
    for i in kept:
        most = (int(i) + budget) // 2  # the most new misses B with S = i that keep the promise
        if most >= i:
            caught += p_s[i]
            continue
        if most < 0:
            continue
        j = np.arange(i + 1)
        log_w = log_b[j] + log_c[i - j] - log_f[j] - log_f[i - j]
        w = np.exp(log_w - log_w.max())
        caught += p_s[i] * w[: most + 1].sum() / w.sum()
    return float(min(1.0, max(0.0, caught / p_s[kept].sum())))


def confidence_ceiling(n: int, dense_fn: int, budget: int = 0) -> float:
    """The highest confidence any model can back on a validation split of ``n`` samples of a class the dense model misses
    ``dense_fn`` of: one that misses none the dense model catches and catches every one it misses, its hardest positive
    counted as missed as the guard counts it (b + 1, or c - 1 where the dense model missed it). Below the confidence
    asked, no pruning can make the promise: known before any retraining."""
    if n <= 0:
        return 0.0
    best = promise_confidence(1, dense_fn, n, budget=budget) if dense_fn + 1 <= n else 0.0
    if dense_fn > 0:
        best = max(best, promise_confidence(0, dense_fn - 1, n, budget=budget))
    return best

