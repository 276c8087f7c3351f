"""toolchain.metrics: hand-computed cases, scipy/sklearn as references (imported here only)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from toolchain import intervals as I
from toolchain import metrics as M
from toolchain.errors import UserError
from toolchain.gate import collapse_check

# A 3-class case small enough to check by hand.
#   true 0: predicted 0,0,1      -> tp0=2, fn0=1
#   true 1: predicted 1,2,2,0    -> tp1=1, fn1=3
#   true 2: predicted 2          -> tp2=1, fn2=0
Y_TRUE = np.array([0, 0, 0, 1, 1, 1, 1, 2])
Y_PRED = np.array([0, 0, 1, 1, 2, 2, 0, 2])
CM = np.array([[2, 1, 0], [1, 1, 2], [0, 0, 1]])


def logits_for(pred, k, rng=None):
    """Logits whose argmax is `pred`."""
    z = np.zeros((len(pred), k))
    z[np.arange(len(pred)), pred] = 3.0
    if rng is not None:
        z += rng.uniform(0, 1, size=z.shape)  # < 3, argmax unchanged
    return z


# ---------------------------------------------------------------- basics


def test_numpy_only_imports():
    code = (
        "import sys, toolchain.metrics\n"
        "bad = [m for m in ('torch', 'scipy', 'sklearn', 'tensorflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_softmax_stable_and_normalized():
    p = M.softmax(np.array([[1000.0, 1000.0, -1000.0], [0.0, np.log(3.0), 0.0]]))
    assert np.all(np.isfinite(p))
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    np.testing.assert_allclose(p[0], [0.5, 0.5, 0.0], atol=1e-12)
    np.testing.assert_allclose(p[1], [0.2, 0.6, 0.2])


def test_confusion_matrix_by_hand():
    cm = M.confusion_matrix(Y_TRUE, Y_PRED, 3)
    assert cm.dtype == np.int64
    np.testing.assert_array_equal(cm, CM)


def test_confusion_matrix_matches_sklearn():
    from sklearn.metrics import confusion_matrix

    rng = np.random.default_rng(1)
    t, p = rng.integers(0, 5, 300), rng.integers(0, 5, 300)
    np.testing.assert_array_equal(M.confusion_matrix(t, p, 5), confusion_matrix(t, p, labels=range(5)))


def test_confusion_matrix_rejects_out_of_range_labels():
    with pytest.raises(UserError, match="outside 0..2"):
        M.confusion_matrix([0, 3], [0, 1], 3)
    with pytest.raises(UserError):
        M.confusion_matrix([0, 1], [0, -1], 3)


def test_per_class_by_hand():
    pc = M.per_class(CM)
    np.testing.assert_array_equal(pc["tp"], [2, 1, 1])
    np.testing.assert_array_equal(pc["fn"], [1, 3, 0])
    np.testing.assert_array_equal(pc["fp"], [1, 1, 2])
    np.testing.assert_array_equal(pc["tn"], [4, 3, 5])
    np.testing.assert_array_equal(pc["support"], [3, 4, 1])
    np.testing.assert_allclose(pc["fnr"], [1 / 3, 3 / 4, 0.0])
    np.testing.assert_allclose(pc["recall"], [2 / 3, 1 / 4, 1.0])
    np.testing.assert_allclose(pc["precision"], [2 / 3, 1 / 2, 1 / 3])


def test_per_class_nan_for_absent_and_never_predicted_class():
    # Class 2 has no samples and is never predicted; class 1 is never predicted.
    cm = M.confusion_matrix([0, 0, 1], [0, 0, 0], 3)
    pc = M.per_class(cm)
    assert math.isnan(pc["fnr"][2]) and math.isnan(pc["recall"][2])
    assert math.isnan(pc["precision"][2]) and math.isnan(pc["precision"][1])
    assert pc["fnr"][1] == 1.0 and pc["recall"][1] == 0.0  # defined, and zero recall
    assert pc["precision"][0] == pytest.approx(2 / 3)


# ---------------------------------------------------------------- Clopper-Pearson


def _scipy_cp(k, n, conf=0.95):
    from scipy.stats import beta

    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else beta.ppf(a, k, n - k + 1)
    hi = 1.0 if k == n else beta.ppf(1 - a, k + 1, n - k)
    return lo, hi


CP_CASES = [
    (k, n)
    for n in (1, 2, 7, 30, 100, 999, 10000)
    for k in sorted({0, 1, 2, n // 3, n // 2, n - 2, n - 1, n} & set(range(n + 1)))
]


@pytest.mark.parametrize("k,n", CP_CASES)
def test_clopper_pearson_matches_scipy(k, n):
    lo, hi = I.clopper_pearson(k, n)
    slo, shi = _scipy_cp(k, n)
    assert lo == pytest.approx(slo, abs=1e-6)
    assert hi == pytest.approx(shi, abs=1e-6)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_clopper_pearson_other_confidence_and_edges():
    for k, n in [(3, 40), (17, 5000)]:
        lo, hi = I.clopper_pearson(k, n, confidence=0.99)
        assert (lo, hi) == pytest.approx(_scipy_cp(k, n, 0.99), abs=1e-6)
    assert I.clopper_pearson(0, 0) == (0.0, 1.0)
    assert I.clopper_pearson(0, 10)[0] == 0.0
    assert I.clopper_pearson(10, 10)[1] == 1.0
    # Known textbook value: 0 of 10 -> upper bound 1 - 0.025**(1/10) = 0.3085
    assert I.clopper_pearson(0, 10)[1] == pytest.approx(0.30849710, abs=1e-7)
    with pytest.raises(UserError):
        I.clopper_pearson(5, 4)


# ---------------------------------------------------------------- AUC


def test_auc_matches_sklearn_with_ties():
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 400)
    # Coarse scores: many ties, including ties across positives and negatives.
    s = np.round(rng.normal(size=400) + (y == 2), 1)
    assert len(np.unique(s)) < 100
    assert M.roc_auc_ovr(y, s, 2) == pytest.approx(roc_auc_score(y == 2, s), abs=1e-12)


def test_auc_by_hand_ties_count_half():
    # pos scores {0.5, 0.9}, neg {0.5, 0.1}: pairs (0.5,0.5)=1/2, (0.5,0.1)=1, (0.9,*)=1+1 -> 3.5/4
    assert M.roc_auc_ovr([1, 1, 0, 0], [0.5, 0.9, 0.5, 0.1], 1) == pytest.approx(0.875)
    assert M.roc_auc_ovr([1, 0], [0.2, 0.8], 1) == 0.0
    # All scores tied: no ranking information -> 0.5.
    assert M.roc_auc_ovr([1, 0, 1, 0], [0.3, 0.3, 0.3, 0.3], 1) == 0.5


def test_rows_of_the_same_logits_in_other_places_tie_exactly():
    """[0,2,0,0,0,0] (class 0) and [0,0,0,2,0,0] (class 1) give class 0 the same probability: the sum of the other classes'
    terms in column order differed in its last bit, and the tie counted 0 instead of 1/2 (a property test's draw)."""
    from toolchain.metrics import evaluate_logits, log_softmax_of

    z = np.array([[0.0, 2.0, 0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 2.0, 0.0, 0.0]])
    scores = log_softmax_of(z, 0)
    assert scores[0] == scores[1]
    assert evaluate_logits(np.array([0, 1]), z, [0])["protected"][0]["auc"] == 0.5


def test_auc_nan_when_one_group_missing():
    assert math.isnan(M.roc_auc_ovr([0, 0, 0], [0.1, 0.2, 0.3], 0))  # no negatives
    assert math.isnan(M.roc_auc_ovr([0, 0, 0], [0.1, 0.2, 0.3], 1))  # no positives


# ---------------------------------------------------------------- McNemar


@pytest.mark.parametrize(
    "b,c", [(0, 1), (1, 0), (0, 5), (3, 3), (2, 9), (10, 1), (25, 40), (150, 190), (7, 70)]
)
def test_mcnemar_matches_scipy(b, c):
    from scipy.stats import binomtest

    assert I.mcnemar_exact(b, c) == pytest.approx(binomtest(b, b + c, 0.5).pvalue, rel=1e-9, abs=1e-12)


def test_mcnemar_edges():
    assert I.mcnemar_exact(0, 0) == 1.0
    assert I.mcnemar_exact(4, 4) == 1.0
    assert I.mcnemar_exact(0, 6) == pytest.approx(2 / 64)  # 2 * 0.5**6
    assert I.mcnemar_exact(6, 0) == I.mcnemar_exact(0, 6)


# ---------------------------------------------------------------- evaluate_logits


def test_evaluate_logits_by_hand():
    ev = M.evaluate_logits(Y_TRUE, logits_for(Y_PRED, 3), protected=1)
    assert ev["schema_version"] == 1
    assert ev["n"] == 8
    assert ev["accuracy"] == pytest.approx(4 / 8)
    assert ev["confusion"] == CM.tolist()
    assert ev["fn_per_class"] == [1, 3, 0]
    assert ev["fp_per_class"] == [1, 1, 2]
    assert ev["support_per_class"] == [3, 4, 1]
    assert ev["recall_per_class"] == pytest.approx([2 / 3, 1 / 4, 1.0])
    assert ev["precision_per_class"] == pytest.approx([2 / 3, 1 / 2, 1 / 3])
    (p,) = ev["protected"]
    assert p["class"] == 1
    assert (p["fn"], p["fp"], p["tp"], p["support"]) == (3, 1, 1, 4)
    assert p["fnr"] == pytest.approx(0.75)
    assert p["recall"] == pytest.approx(0.25)
    assert p["precision"] == pytest.approx(0.5)
    assert p["fpr"] == pytest.approx(1 / 4)  # 1 FP among the 4 samples not of class 1
    assert p["fnr_ci95"] == pytest.approx(list(_scipy_cp(3, 4)), abs=1e-6)
    assert 0.0 <= p["auc"] <= 1.0


def test_evaluate_logits_auc_uses_softmax_probability():
    from sklearn.metrics import roc_auc_score
    from scipy.special import softmax

    rng = np.random.default_rng(3)
    y = rng.integers(0, 3, 200)
    z = rng.normal(size=(200, 3)) + 1.5 * np.eye(3)[y]
    ev = M.evaluate_logits(y, z, [2, 0])
    assert [p["class"] for p in ev["protected"]] == [2, 0]  # user's order kept
    assert [p["class"] for p in M.evaluate_logits(y, z, [0, 2, 0])["protected"]] == [0, 2]  # no repeats
    for p in ev["protected"]:
        c = p["class"]
        assert p["auc"] == pytest.approx(roc_auc_score(y == c, softmax(z, axis=1)[:, c]), abs=1e-12)
    # The raw logit is a different score; make sure that is not what we used.
    raw = roc_auc_score(y == 2, z[:, 2])
    assert ev["protected"][0]["auc"] != pytest.approx(raw, abs=1e-9)


def test_evaluate_logits_matches_sklearn_reports():
    from sklearn.metrics import accuracy_score, precision_score, recall_score

    rng = np.random.default_rng(4)
    y = rng.integers(0, 6, 500)
    z = rng.normal(size=(500, 6)) + 1.0 * np.eye(6)[y]
    pred = z.argmax(1)
    ev = M.evaluate_logits(y, z, 5)
    assert ev["accuracy"] == pytest.approx(accuracy_score(y, pred))
    assert ev["recall_per_class"] == pytest.approx(list(recall_score(y, pred, average=None)))
    assert ev["precision_per_class"] == pytest.approx(list(precision_score(y, pred, average=None)))
    assert sum(ev["fn_per_class"]) == int((pred != y).sum())
    assert sum(ev["fp_per_class"]) == int((pred != y).sum())


def test_evaluate_logits_all_correct():
    y = np.array([0, 1, 2, 2, 1, 0])
    ev = M.evaluate_logits(y, logits_for(y, 3), [0, 2])
    assert ev["accuracy"] == 1.0
    assert ev["fn_per_class"] == [0, 0, 0]
    for p in ev["protected"]:
        assert p["fn"] == 0 and p["fnr"] == 0.0 and p["fpr"] == 0.0 and p["auc"] == 1.0
        assert p["fnr_ci95"][0] == 0.0


def test_evaluate_logits_all_wrong():
    y = np.array([0, 0, 1, 1, 2, 2])
    pred = (y + 1) % 3
    ev = M.evaluate_logits(y, logits_for(pred, 3), 0)
    assert ev["accuracy"] == 0.0
    assert ev["fn_per_class"] == [2, 2, 2]
    p = ev["protected"][0]
    assert p["fn"] == 2 and p["fnr"] == 1.0 and p["recall"] == 0.0
    assert p["fnr_ci95"][1] == 1.0
    assert p["precision"] == 0.0 and p["fpr"] == pytest.approx(2 / 4)


def test_evaluate_logits_absent_class_is_none_and_strict_json():
    # Class 3 exists in the model but not in the data, and is never predicted.
    y = np.array([0, 1, 2, 0, 1])
    pred = np.array([0, 1, 1, 0, 1])
    ev = M.evaluate_logits(y, logits_for(pred, 4), [3, 2])
    assert ev["support_per_class"] == [2, 2, 1, 0]
    assert ev["fn_per_class"] == [0, 0, 1, 0]
    assert ev["recall_per_class"][3] is None
    assert ev["precision_per_class"][2] is None and ev["precision_per_class"][3] is None
    p3, p2 = ev["protected"]
    assert p3["fn"] == 0 and p3["fnr"] is None and p3["recall"] is None and p3["auc"] is None
    assert p3["fnr_ci95"] == [0.0, 1.0]
    assert p2["fn"] == 1 and p2["fnr"] == 1.0 and p2["precision"] is None
    text = json.dumps(ev, allow_nan=False)  # strict JSON: no NaN tokens
    assert json.loads(text) == ev


def test_evaluate_logits_plain_python_types():
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 50).astype(np.int32)
    ev = M.evaluate_logits(y, rng.normal(size=(50, 3)).astype(np.float32), np.int64(1))

    def walk(v):
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            assert v is None or type(v) in (int, float, str, bool), (type(v), v)

    walk(ev)
    json.dumps(ev, allow_nan=False)


def test_evaluate_logits_num_classes_and_bad_input():
    y = np.array([0, 1])
    z = logits_for(np.array([0, 1]), 3)
    assert len(M.evaluate_logits(y, z, 0)["fn_per_class"]) == 3
    with pytest.raises(UserError, match="num_classes"):
        M.evaluate_logits(y, z, 0, num_classes=4)
    with pytest.raises(UserError, match="protected class 5"):
        M.evaluate_logits(y, z, 5)
    with pytest.raises(UserError, match="outside"):
        M.evaluate_logits(np.array([0, 3]), z, 0)
    with pytest.raises(UserError, match="NaN"):
        M.evaluate_logits(y, np.array([[np.nan, 0, 0], [0, 1, 0]]), 0)
    with pytest.raises(UserError, match="empty"):
        M.evaluate_logits(np.array([], dtype=int), np.zeros((0, 3)), 0)


# ---------------------------------------------------------------- collapse


def test_collapse_detected_when_one_class_takes_everything():
    y = np.repeat([0, 1, 2], 100)
    pred = np.zeros_like(y)
    pred[:5] = 1  # 98.3% predicted class 0, true share 33%
    reasons = collapse_check(M.confusion_matrix(y, pred, 3))
    assert len(reasons) == 1 and "class 0" in reasons[0]


def test_collapse_not_flagged_for_healthy_model():
    y = np.repeat([0, 1, 2], 100)
    pred = y.copy()
    pred[::10] = (y[::10] + 1) % 3
    cm = M.confusion_matrix(y, pred, 3)
    assert collapse_check(cm) == []
    assert collapse_check(cm, baseline_cm=M.confusion_matrix(y, y, 3)) == []


def test_collapse_not_flagged_for_imbalanced_data_predicted_at_its_rate():
    # 90% of samples are class 0; a decent model predicts class 0 92% of the time.
    y = np.array([0] * 900 + [1] * 100)
    pred = y.copy()
    pred[900:920] = 0  # 20 of class 1 missed -> class 0 predicted 920/1000
    assert collapse_check(M.confusion_matrix(y, pred, 2)) == []
    # The same data answered 99.5% class 0 is a collapse.
    pred[900:995] = 0
    assert collapse_check(M.confusion_matrix(y, pred, 2)) != []


def test_collapse_share_inherited_from_the_baseline_is_not_the_candidates():
    # A weak binary model answering class 0 for 98% of rows; its exported file agrees on every row.
    y = np.array([0] * 700 + [1] * 300)
    pred = np.zeros_like(y)
    pred[700:720] = 1
    cm = M.confusion_matrix(y, pred, 2)
    assert collapse_check(cm) != []  # judged alone it looks collapsed
    assert collapse_check(cm, baseline_cm=cm) == []  # but it agrees with what it was made from
    # A healthy baseline keeps the rule: the collapse is the candidate's own.
    assert collapse_check(cm, baseline_cm=M.confusion_matrix(y, y, 2)) != []


def test_collapse_recall_drop_against_baseline():
    y = np.repeat([0, 1, 2, 3], 50)
    base = M.confusion_matrix(y, y, 4)
    pred = y.copy()
    pred[y == 2] = 3  # class 2 vanishes; no class exceeds the share limit
    cm = M.confusion_matrix(y, pred, 4)
    assert collapse_check(cm) == []  # the share rule alone does not see it
    reasons = collapse_check(cm, baseline_cm=base)
    assert len(reasons) == 1 and "class 2" in reasons[0] and "recall" in reasons[0]
    # A class that was already at ~0 recall in the baseline is not a new collapse.
    assert collapse_check(cm, baseline_cm=cm) == []
    with pytest.raises(UserError):
        collapse_check(cm, baseline_cm=np.zeros((3, 3), dtype=int))


def test_auc_ranks_a_confident_models_scores_where_the_softmax_rounds_to_one():
    """A model that answers the protected class for every row with margins of 40-80 (a wrong --normalize): its softmax
    probabilities are all 1.0, so every positive tied every negative and the AUC read 0.5000 for a ranking that is
    perfect."""
    from toolchain.metrics import evaluate_logits, log_softmax_of, softmax

    z = np.zeros((200, 3))
    y = np.array([0] * 100 + [1] * 100)
    z[:, 0] = np.r_[np.linspace(60, 80, 100), np.linspace(40, 59, 100)]
    assert (softmax(z)[:, 0] == 1.0).all()
    assert evaluate_logits(y, z, 0)["protected"][0]["auc"] == 1.0
    rng = np.random.default_rng(0)
    moderate = rng.normal(size=(500, 4)) * 3  # where the softmax is distinct, the same order (and the same log)
    for c in range(4):
        np.testing.assert_allclose(log_softmax_of(moderate, c), np.log(softmax(moderate)[:, c]), atol=1e-12)


def test_above_100_classes_the_counts_are_the_matrix_s_without_making_it(monkeypatch):
    """100,000 classes sized an 80 GB confusion matrix the report does not hold: the counts come from the labels alone."""
    from toolchain import metrics

    rng = np.random.default_rng(0)
    y, logits = rng.integers(0, 150, 3_000), rng.normal(size=(3_000, 150))
    logits[np.arange(0, 3_000, 2), y[::2]] += 3  # half of the rows right
    ours = metrics.per_class_of_labels(y, logits.argmax(1), 150)
    full = metrics.per_class(metrics.confusion_matrix(y, logits.argmax(1), 150))
    for key in full:
        np.testing.assert_array_equal(ours[key], full[key], err_msg=key)

    def no_matrix(*args):
        raise AssertionError("a confusion matrix was made")

    made = metrics.evaluate_logits(y, logits, [3, 7], 150)
    monkeypatch.setattr(metrics, "confusion_matrix", no_matrix)
    big = metrics.evaluate_logits(y, logits, [3, 7], 150)
    assert big["confusion"] is None and made["confusion"] is None and big == made
    cells = {str(a): {str(b): int(np.sum((y == a) & (logits.argmax(1) == b))) for b in (3, 7)} for a in (3, 7)}
    assert big["confusion_protected"] == cells and big["accuracy"] == pytest.approx(np.mean(logits.argmax(1) == y))
    with pytest.raises(metrics.UserError, match="labels outside 0..149"):
        metrics.evaluate_logits(np.r_[y[:-1], 150], logits, [3], 150)


def test_non_finite_logits_are_counted_and_named_as_they_are():
    """A log of an underflowing softmax gave -inf: "scores contain NaN", naming neither the kind, nor the rows, nor how many."""
    from toolchain.evaluate import detection_problem

    y = np.arange(40) % 2
    z = np.eye(2)[y] * 3.0
    z[[5, 9, 30], 0] = -np.inf
    with pytest.raises(UserError, match=r"^the model's logits are infinite on 3 of 40 rows of the validation split \(the "
                                        r"first: row 5\).*underflows gives -inf"):
        detection_problem(z, y, [1], ["a", "b"], where="the validation split")
    z[7, 1] = np.nan
    with pytest.raises(UserError, match=r"^the model's logits are NaN and infinite on 4 of 40 rows \(the first: row 5\)"):
        M.evaluate_logits(y, z, [1])


def test_log_softmax_of_a_wide_head_reads_its_rows_a_chunk_at_a_time():
    """A 1,000-class head's 60,000 validation rows: five float64 copies of every logit (1.4 GB above the logits' own 240 MB)
    at each evaluation. Chunked, memory stays near one chunk's; every row's value is the one the whole array gives."""
    import tracemalloc

    from toolchain.metrics import CHUNK_CELLS, _log_softmax_rows, log_softmax_of

    rng = np.random.default_rng(0)
    z = (rng.normal(size=(20_000, 1_000)) * 3).astype(np.float32)
    tracemalloc.start()
    try:
        got = log_softmax_of(z, 7)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 6 * CHUNK_CELLS * 8 + got.nbytes, peak  # whole: about 5 x 160 MB
    assert np.array_equal(got[:3000], _log_softmax_rows(z[:3000].astype(np.float64), 7))
    assert np.array_equal(log_softmax_of(z[:, :1], 0), np.zeros(len(z)))
