"""The FN promise (toolchain.promise) and the guarded operating point (PromiseGuard): the confidence is
the Dirichlet-multinomial predictive it claims to be, the guard picks the smallest offset that reaches
it, and it means what it says when the validation split is re-drawn."""

from __future__ import annotations

import json

import numpy as np
import pytest

from clirun import run_cli
from toolchain.prune.operating_point import PromiseGuard, apply_offsets, choose_offsets, fn_count
from toolchain.promise import promise_confidence


def _simulated(b, c, n, n_new, budget, draws=200_000, seed=0):
    rng = np.random.default_rng(seed)
    p = rng.dirichlet([b + 0.5, c + 0.5, n - b - c + 0.5], size=draws)
    counts = np.array([rng.multinomial(n_new, row) for row in p[:20_000]])
    return float(np.mean(counts[:, 0] - counts[:, 1] <= budget))


@pytest.mark.parametrize("b, c, n, n_new, budget", [(0, 0, 27, 27, 0), (0, 0, 27, 27, 1), (3, 1, 40, 60, 0), (40, 60, 900, 900, 0),
                                                    # beyond 3,000 new samples, where a normal form had stood in (0.64 for 0.77)
                                                    (0, 0, 5000, 5000, 0), (0, 0, 4000, 4000, 3), (2, 1, 5000, 5000, 1)])
def test_confidence_is_the_dirichlet_multinomial_predictive(b, c, n, n_new, budget):
    assert promise_confidence(b, c, n, n_new, budget) == pytest.approx(_simulated(b, c, n, n_new, budget), abs=0.01)


def test_confidence_known_values_and_shape():
    # agreeing on every validation sample is not enough for "none more, with 95%", at any size (a rule that
    # shipped it would fail up to 25% of the time); two more allowed on as many new samples is
    assert 0.74 < promise_confidence(0, 0, 27) < 0.8 and 0.74 < promise_confidence(0, 0, 2000) < 0.8
    assert promise_confidence(0, 0, 27, budget=2) > 0.95
    assert promise_confidence(30, 60, 900) > 0.98 > 0.5 > promise_confidence(60, 30, 900)
    assert promise_confidence(5, 5, 100) < promise_confidence(5, 6, 100) < promise_confidence(4, 6, 100)  # fewer new misses, more fixes
    # the same distribution at any size: no switch where one more sample moves it (a normal form beyond 3,000 did, by 0.13)
    assert promise_confidence(0, 0, 3000) == pytest.approx(promise_confidence(0, 0, 3001), abs=1e-6)
    assert promise_confidence(150, 180, 3000, 3000) == pytest.approx(promise_confidence(150, 180, 3000, 3001), abs=1e-3)


def test_confidence_refuses_what_are_not_counts():
    for args in ((-1, 1, 10), (1, -1, 10), (2.5, 0, 10), (6, 5, 10), (True, 0, 10)):
        with pytest.raises(ValueError):
            promise_confidence(*args)
    with pytest.raises(ValueError):
        promise_confidence(2, 1, 10, n_new=-3)
    assert promise_confidence(0, 0, 10, n_new=0, budget=-1) == 0.0 and promise_confidence(0, 0, 10, n_new=0) == 1.0
    assert promise_confidence(np.int64(1), np.int64(0), np.int64(10)) == promise_confidence(1, 0, 10)


@pytest.mark.parametrize("n", [1, 7, 60, 3001, 5000])
def test_confidence_rises_with_every_fix_and_falls_with_every_new_miss(n):
    """The guard's bisection takes it for granted: catching one more sample the dense model misses (c) never lowers the
    confidence, missing one more it catches (b) never raises it (the normal form beyond 3,000 broke the first)."""
    for budget in (0, 1, 2):
        for b in range(0, min(n, 4) + 1):
            row = [promise_confidence(b, c, n, budget=budget) for c in range(0, min(n - b, 4) + 1)]
            assert all(x <= y + 1e-12 for x, y in zip(row, row[1:])), (n, budget, b, row)
        for c in range(0, min(n, 4) + 1):
            col = [promise_confidence(b, c, n, budget=budget) for b in range(0, min(n - c, 4) + 1)]
            assert all(x >= y - 1e-12 for x, y in zip(col, col[1:])), (n, budget, c, col)


def _scores(seed=0, n=6000, k=10, noise=0.7, shift=0.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, k, n)
    dense = rng.normal(size=(n, k))
    dense[np.arange(n), y] += 2.0
    candidate = dense + rng.normal(scale=noise, size=(n, k))
    candidate[:, 6] += shift
    return y, dense, candidate


def test_guard_picks_the_smallest_offset_that_reaches_the_confidence():
    """Known answer by brute force: every offset at which a sample of the class flips, in order."""
    y, dense, cand = _scores()
    guard = PromiseGuard(y, dense.argmax(1), [6], budget=0, confidence=0.95)
    chosen = guard.choose(cand)[6]
    pos = y == 6
    need = np.sort(np.delete(cand[pos], 6, axis=1).max(1) - cand[pos, 6])
    reached = [d for d in need + 1e-6 if guard.check(cand, {6: d})[6]["confidence"] >= 0.95]
    assert chosen == pytest.approx(reached[0], abs=1e-3)
    below = chosen - 2e-3 * max(1.0, abs(chosen))
    assert guard.check(cand, {6: chosen})[6]["confidence"] >= 0.95 > guard.check(cand, {6: below})[6]["confidence"]


def _false_positives(logits, y, offsets, k):
    return int(np.sum((apply_offsets(logits, offsets).argmax(1) == k) & (y != k)))


def test_a_guard_met_catching_none_turns_no_row_of_another_class_for_it():
    """Known answer: the dense model catches 1 of 8 positives and the budget of 2 covers missing it, so the guard holds
    catching none. The offset had sat just below the easiest positive, turning every other row under it: 89 false
    positives and accuracy 0.54, where an offset under them all (0 false positives, 0.96) meets the same guard (a property
    test's draw). reachable() reads the same point."""
    rng = np.random.default_rng(0)
    y = np.r_[np.ones(8, int), np.zeros(200, int)]
    dense = np.r_[1, np.zeros(207, int)]
    z = np.zeros((208, 2))
    z[:8, 0], z[8:, 0] = rng.uniform(1, 2, 8), rng.uniform(-1, 3, 200)
    guard = PromiseGuard(y=y, dense_pred=dense, protected=[1], budget=2, confidence=0.8)
    chosen = guard.choose(z)
    assert guard.met(z, chosen) and _false_positives(z, y, chosen, 1) == 0, chosen
    assert chosen[1] < -0.98  # under the lowest need of another class's rows
    assert guard.reachable(z, {1: 0.0}, min_accuracy=0.95)[1] == pytest.approx(guard.check(z, chosen)[1]["confidence"])


def test_the_offset_s_hair_above_its_hardest_positive_turns_no_other_row():
    """A row of another class whose need lay within the offset's 1e-4 above the hardest positive it catches was turned for
    nothing, and the room above could not give it back (a property test's draw): 1 false positive where 0 met the guard."""
    z = np.array([[0.0, 0.0], [0.0, 0.0], [0.0, 1e-5]])
    y = np.array([0, 0, 1])
    guard = PromiseGuard(y=y, dense_pred=np.array([1, 1, 1]), protected=[0], budget=0, confidence=0.8)
    chosen = guard.choose(z)
    assert guard.met(z, chosen) and _false_positives(z, y, chosen, 0) == 0 and 0 <= chosen[0] < 1e-5, chosen


def test_guard_keeps_a_margin_the_plain_point_does_not():
    y, dense, cand = _scores()
    guard = PromiseGuard(y, dense.argmax(1), [6], budget=0, confidence=0.95)
    guarded = guard.check(cand, guard.choose(cand))[6]
    plain = guard.check(cand, choose_offsets(cand, y, {6: fn_count(dense, y, 6)}))[6]
    assert plain["fn"] == plain["dense_fn"] and 0.3 < plain["confidence"] < 0.7  # the coin flip
    assert guarded["fn"] < guarded["dense_fn"] and guarded["confidence"] >= 0.95


def test_a_model_identical_to_the_dense_one_needs_no_offset_beyond_its_own():
    y, dense, _ = _scores()
    guard = PromiseGuard(y, dense.argmax(1), [6], budget=2, confidence=0.95)
    offsets = guard.choose(dense)
    assert guard.met(dense, offsets) and guard.check(dense, offsets)[6]["b"] == 0


def test_unreachable_within_accuracy_is_reported_with_what_is_reachable():
    y, dense, cand = _scores(shift=-3.0)  # the candidate lost most of class 6
    guard = PromiseGuard(y, dense.argmax(1), [6], budget=0, confidence=0.95)
    offsets = guard.choose(cand)
    reach = guard.reachable(cand, offsets, min_accuracy=0.99)[6]  # accuracy no offset keeps: accuracy binds, not confidence
    assert reach is None
    assert 0.0 < guard.reachable(cand, offsets, min_accuracy=0.5)[6] <= 1.0


@pytest.mark.parametrize("confidence, floor", [(0.95, 0.93), (0.90, 0.88)])  # measured: 0.947, 0.893 of shipped draws
def test_the_confidence_means_what_it_says_when_validation_is_redrawn(confidence, floor):
    """Resampling, as docs/FN_PROMISE.md does on real runs: one pool of held-out rows re-split 150 times
    into validation and test halves; the offset is chosen on each validation half; the test half keeps
    the promise (FN <= dense FN) at least about `confidence` of the time. The plain point: about half."""
    y, dense, cand = _scores(seed=1, n=12000, shift=-0.3)
    kept = plain = shipped = 0
    draws = 150
    for r in range(draws):
        perm = np.random.default_rng(100 + r).permutation(len(y))
        v, t = perm[: len(y) // 2], perm[len(y) // 2:]
        guard = PromiseGuard(y[v], dense[v].argmax(1), [6], budget=0, confidence=confidence)
        offsets = guard.choose(cand[v])
        if guard.met(cand[v], offsets):  # what compress ships; where the rule falls short it exits 1 and ships nothing
            shipped += 1
            kept += fn_count(apply_offsets(cand[t], offsets), y[t], 6) <= fn_count(dense[t], y[t], 6)
        matched = choose_offsets(cand[v], y[v], {6: fn_count(dense[v], y[v], 6)})
        plain += fn_count(apply_offsets(cand[t], matched), y[t], 6) <= fn_count(dense[t], y[t], 6)
    assert shipped >= 0.9 * draws and kept / shipped >= floor, (shipped, kept)
    assert plain / draws < 0.75


# --------------------------------------------------------------------------- compress


def test_a_small_validation_split_cannot_back_the_default_promise(trained_digits, tmp_path, capsys):
    """digits has ~27 threes in validation: "none more missed, with 95%" is out of reach; compress says so
    (exit 1, the reachable confidence, what to change) and never ships the point as guarded."""
    out = tmp_path / "small"
    code, stdout, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
                                 "--max-accuracy-drop", "0.5", "--skip-export", "--out", out], capsys)
    report = json.loads((out / "report.json").read_text())
    promise = report["promise"]
    assert code == 1 and not report["gate"]["passed"] and promise["met_on_val"] is False
    assert report["gate"]["reasons"][0].startswith("no ticket keeps the FN promise with confidence 0.95")
    reach = promise["classes"]["3"]["reachable_confidence"]
    # a confidence the flag takes (0.5 and up) that reaches, named; none below it (--confidence 0.45 is refused)
    assert ("lower --confidence" in report["gate"]["reasons"][0]) == (reach >= 0.5) and "reachable" in report["gate"]["reasons"][0]
    assert 0 < reach < 0.95 and f"{reach:.3f}" in report["gate"]["reasons"][0]
    assert "not met" in (out / "report.md").read_text()
    three = promise["classes"]["3"]
    if three["b"] == 0 and three["dense_fn"] == 0:  # at this split's ceiling: a bigger model cannot help (a reviewer's first
        assert "--keep-params" not in report["gate"]["reasons"][0]  # run was told so); more data only where the dense model
        assert "give more validation data (where the dense model misses some" in report["gate"]["reasons"][0]  # misses some
    else:
        assert "give more validation data" in report["gate"]["reasons"][0]


@pytest.mark.parametrize("confidence, accuracy, said", [
    (0.97, 0.8941, "round 2 left the accuracy budget (accuracy 0.8941 < 0.9124) on validation, so the rounds stopped"),
    (0.50, 0.9500, "round 2 left the FN promise (class 1 confidence 0.500 < 0.95) on validation"),
    (0.50, 0.8941, "round 2 left the FN promise (class 1 confidence 0.500 < 0.95) and the accuracy budget (accuracy 0.8941 < 0.9124)"),
])
def test_a_size_goal_not_met_names_the_budget_the_last_round_left(confidence, accuracy, said):
    """"round 4 left the FN or accuracy budget": the user dug the log for which one (a medical user's finding)."""
    from types import SimpleNamespace

    from toolchain.prune.tickets import shipped_size_goal

    def ticket(round, params, within, confidence, accuracy):
        return SimpleNamespace(round=round, params=params, macs=params, within_budget=within, val={
            "accuracy": accuracy, "promise": {"1": {"confidence": confidence, "confidence_target": 0.95}}})

    first, last = ticket(1, 500, True, 0.99, 0.95), ticket(2, 250, False, confidence, accuracy)
    result = SimpleNamespace(budget_met=True, tickets=[first, last], dense={"params": 1000, "macs": 1000, "val": {"accuracy": 0.9324}})
    config = SimpleNamespace(granularity="channel", keep_params=0.1, keep_macs=1.0, max_accuracy_drop=0.02)
    goal = shipped_size_goal(result, first, config, {})
    assert not goal["met"] and said in goal["statement"] and "an earlier ticket ships" in goal["statement"], goal["statement"]


def test_a_promise_at_its_ceiling_names_only_the_flags_that_move_it():
    """Agreeing with the dense model on every validation positive, where the dense model misses none, is the best any
    ticket does on this split, so the advice names --confidence and --max-fn-increase, not --keep-params; more validation
    data helps only where the dense model then misses some (an offset can catch those), and is named so."""
    from types import SimpleNamespace

    from toolchain.prune.tickets import promise_section

    def section(b, dense_fn, reach=0.77, whole=False):
        entry = {"n": 27, "n_new": 27, "fn": dense_fn + b, "dense_fn": dense_fn, "b": b, "c": 0, "confidence": 0.77,
                 "confidence_target": 0.95, "budget": 0, "margin_fn": 0, "fp": 0, "fp_plain": 0, "reachable_confidence": reach}
        ticket = SimpleNamespace(val={"promise": {"3": entry}, "accuracy": 0.97}, round=1)
        result = SimpleNamespace(budget_met=False, dense={"val": {"accuracy": 0.98}})
        config = SimpleNamespace(max_accuracy_drop=0.01, confidence=0.95, max_fn_increase=0, keep_params=0.5, rate=0.5)
        made = promise_section(result, ticket, config)
        return made if whole else made["statement"]

    def kept(per_class):
        return promise_section(SimpleNamespace(budget_met=True, dense={"val": {"accuracy": 0.98}}), SimpleNamespace(
            val={"promise": per_class, "accuracy": 0.97}, round=1),
            SimpleNamespace(max_accuracy_drop=0.01, confidence=0.95, max_fn_increase=1, keep_params=0.5, rate=0.5))

    five = {"n": 40, "n_new": 40, "fn": 2, "dense_fn": 2, "b": 0, "c": 0, "confidence": 0.96, "confidence_target": 0.95,
            "budget": 2, "margin_fn": 2, "fp": 0, "fp_plain": 0}
    made = kept({"3": {"n": 1, "n_new": 1, "fn": 1, "dense_fn": 0, "b": 1, "c": 0, "confidence": 1.0, "confidence_target": 0.95,
                       "budget": 1, "margin_fn": 0, "fp": 0, "fp_plain": 0}, "5": five})
    vacuous = made["statement"]
    assert "(a budget of 1 allows missing all 1 samples of the class on new data: it promises nothing about this class)" in vacuous, vacuous
    assert vacuous.count("promises nothing") == 1 and "all 2 together: every promise holds at once with probability at least 0.960" in vacuous, vacuous
    # said beside the probability too, not in the statement alone: report.md and the console showed "probability 1.000"
    assert made["empty"].startswith("the promise says nothing about this class (class 3: a budget of 1 allows") and "class 5" not in made["empty"]
    assert "class 5: 40" in made["few_samples"] and "class 3" not in made["few_samples"]  # class 3's 1 sample: empty, not few
    # a dense model that misses all 9 of the class (too few for compress's refusal, from 10): no more missed is no protection
    blind = kept({"3": {"n": 9, "n_new": 9, "fn": 9, "dense_fn": 9, "b": 0, "c": 0, "confidence": 1.0, "confidence_target": 0.95,
                        "budget": 1, "margin_fn": 1, "fp": 0, "fp_plain": 0}})
    assert "the dense model misses all 9 samples of the class here" in blind["empty"] and "few_samples" not in blind, blind
    assert "few_samples" in kept({"5": five}) and "empty" not in kept({"5": five})
    at_ceiling = section(b=0, dense_fn=0)
    # the class named, and the numbers that back it, as the warning before the run gives them (the gate named neither)
    assert at_ceiling.endswith("lower --confidence to 0.77, raise --max-fn-increase to 4 or give more validation data (where the "
                               "dense model misses some, an offset can catch them)") and "0.770" in at_ceiling, at_ceiling
    assert "misses no validation sample of class 3 that the dense model catches" in at_ceiling, at_ceiling
    assert "no larger validation split" not in at_ceiling  # a statement about this split, not about any (review I)
    below = section(b=2, dense_fn=0)
    assert below.endswith("raise --keep-params or give more validation data"), below
    # no offset keeps accuracy: a new user's run was told "reachable 0.000" beside "probability 0.770", and to lower --confidence
    stuck = section(b=2, dense_fn=0, reach=None)
    assert stuck.startswith("no ticket stays within the accuracy budget") and "whatever the confidence asked" in stuck, stuck
    assert "--confidence" not in stuck and "0.000" not in stuck and stuck.endswith("--keep-params, --epochs or a gentler --rate a round (more rounds)"), stuck
    # deploy's "no file is recommended" names the budget that binds from this: "did not keep the FN promise" where no offset
    # brings accuracy within its budget read as melanomas missed
    assert section(b=2, dense_fn=0, reach=None, whole=True)["binds"] == "accuracy"
    assert section(b=2, dense_fn=0, whole=True)["binds"] == "fn_promise"
    two = promise_section(SimpleNamespace(budget_met=False, dense={"val": {"accuracy": 0.98}}), SimpleNamespace(
        val={"promise": {"3": {"n": 27, "n_new": 27, "fn": 2, "dense_fn": 0, "b": 2, "c": 0, "confidence": 0.77, "confidence_target": 0.95,
                               "budget": 0, "margin_fn": 0, "fp": 0, "fp_plain": 0, "reachable_confidence": None},
                         "5": {"n": 40, "n_new": 40, "fn": 2, "dense_fn": 2, "b": 0, "c": 0, "confidence": 0.96, "confidence_target": 0.95,
                               "budget": 0, "margin_fn": 0, "fp": 0, "fp_plain": 0}}, "accuracy": 0.97}, round=1),
        SimpleNamespace(max_accuracy_drop=0.01, confidence=0.95, max_fn_increase=0, keep_params=0.5, rate=0.5))
    assert two["binds"] == "accuracy" and "(with the other classes' offsets where their promises put them)" in two["statement"], two


@pytest.mark.parametrize("n, budget, said", [(27, 0, True), (59, 0, True), (60, 0, False), (900, 0, False), (20, 20, False)])
def test_a_promise_kept_on_few_validation_samples_says_its_probability_can_be_optimistic(n, budget, said):
    """With 15-30 validation positives and a ticket that ranks the class unlike the dense model, shipped draws kept a
    0.95 promise 0.81-0.92 of the time (a statistician's simulation, reproduce/fn_promise_regimes.py): the report gave
    the probability with no word of it. Said in report.md (and so on the terminal), not for a vacuous promise."""
    from types import SimpleNamespace

    from toolchain.report.promise_words import promise_lines
    from toolchain.prune.tickets import promise_section

    entry = {"n": n, "n_new": n, "fn": 1, "dense_fn": 1, "b": 0, "c": 0, "confidence": 0.96, "confidence_target": 0.95,
             "budget": budget, "margin_fn": 0, "fp": 3, "fp_plain": 1}
    promise = promise_section(SimpleNamespace(budget_met=True, dense={"val": {"accuracy": 0.98}}),
                              SimpleNamespace(val={"promise": {"3": entry}, "accuracy": 0.97}, round=1),
                              SimpleNamespace(max_accuracy_drop=0.01, confidence=0.95, max_fn_increase=budget))
    assert promise["statement"].startswith("the FN promise is backed on validation")
    markdown = "\n".join(promise_lines(promise))
    assert (f"fewer than 60 validation samples of a class (class 3: {n}), the stated probability can be optimistic"
            in markdown) == said == ("few_samples" in promise), markdown


def test_a_run_stopped_by_accuracy_not_by_the_promise_says_so(trained_digits, tmp_path, capsys):
    """With an FN budget no ticket can exceed, the promise holds at confidence 1 and validation accuracy is what fails:
    the reason said "reachable 0.000: lower --confidence, raise --max-fn-increase" (of 10^12)."""
    out = tmp_path / "acc"
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.3", "--rate", "0.7",
                            "--epochs", "1", "--max-fn-increase", "1000000000000", "--max-accuracy-drop", "0.0001",
                            "--format", "onnx", "--time-runs", "2", "--out", out], capsys)
    report = json.loads((out / "report.json").read_text())
    reason = report["gate"]["reasons"][0]
    assert code == 1 and report["promise"]["met_on_val"] is False, err
    assert reason.startswith("no ticket stays within the accuracy budget") and "--max-accuracy-drop" in reason, reason
    assert "--max-fn-increase" not in reason and "--confidence" not in reason and "0.000" not in reason, reason
    whys = {c["why"] for c in report["deploy"]["choices"]}  # it said "did not keep the FN promise": melanomas missed, to a reader
    assert whys and all(w.startswith("the run did not stay within the accuracy budget on validation") for w in whys), whys


def test_a_run_that_did_not_keep_the_promise_recommends_no_file(trained_digits, tmp_path, capsys):
    """Its files pass their own re-check on test, but the run failed on validation: "deploy ... of the files that
    passed the gate" named one anyway, beside "Gate: FAILED"."""
    out = tmp_path / "small"
    code, stdout, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
                                 "--max-accuracy-drop", "0.5", "--format", "onnx", "--out", out], capsys)
    report = json.loads((out / "report.json").read_text())
    assert code == 1 and report["promise"]["met_on_val"] is False and report["artifacts"]
    choices = report["deploy"]["choices"]
    assert choices and all(c["file"] is None and "did not keep the FN promise" in c["why"] for c in choices), choices
    assert "deploy (onnx): none, the run did not keep the FN promise" in stdout + err
    assert "**yes**" not in (out / "report.md").read_text()


def test_the_report_states_the_promise(trained_digits, tmp_path, capsys):
    out = tmp_path / "ok"
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
                            "--skip-export", "--max-fn-increase", "2", "--confidence", "0.8", "--max-accuracy-drop", "0.5", "--out", out], capsys)
    report = json.loads((out / "report.json").read_text())
    promise = report["promise"]
    assert promise["confidence"] == 0.8 and promise["max_fn_increase"] == 2 and promise["met_on_val"], err
    entry = promise["classes"]["3"]
    assert set(entry) >= {"confidence", "confidence_target", "n", "n_new", "fn", "dense_fn", "b", "c", "margin_fn", "fp", "fp_plain",
                          "offset", "fn_no_offset", "fp_no_offset", "b_judged", "c_judged"}
    assert entry["confidence"] >= 0.8 and entry["margin_fn"] == entry["dense_fn"] + 2 - entry["fn"] >= 0
    finals = [s for s in report["stages"] if s["stage"] == "final_finetune" and s["kept"]]
    selected = finals[0] if finals else next(s for s in report["stages"] if s["stage"] == "prune_round" and s["round"] == promise["round"])
    own = next(p for p in selected["val_raw"]["protected"] if p["class"] == 3)  # the model's own decisions, as recorded
    assert (entry["fn_no_offset"], entry["fp_no_offset"]) == (own["fn"], own["fp"]) and entry["offset"] == selected["offsets"]["3"]
    text = (out / "report.md").read_text()
    assert "## The FN promise" in text and "with probability **" in text and "false positives" in text
    allowed = entry["dense_fn"] + 2  # said as counts a reader can add up ("1 FN under the dense model's + 1" was not)
    margin = (f"where {allowed} {'is' if allowed == 1 else 'are'} allowed: {entry['margin_fn']} {'is' if entry['margin_fn'] == 1 else 'are'} kept in reserve"
              if entry["margin_fn"] else f"exactly the {allowed} allowed: none is kept in reserve")
    assert f"misses {entry['fn']} of {entry['n']}, {margin}" in text, text
    # the statement too: its margin is under the allowed, not "under the dense model" (FN 0 against a dense 0 had "margin 1")
    said = f"on validation {entry['margin_fn']} FN kept in reserve under the {allowed} allowed (the dense model's {entry['dense_fn']} + 2)"
    assert said in promise["statement"], promise["statement"]
    assert code in (0, 1)  # the test split's verdict is reported, not chosen from
    assert promise["statement"].startswith("the FN promise is backed on validation: ")  # "holds" read as a fact about test
    assert "pruning: round 1, 1 epoch, on " in (out / "compress.log").read_text()  # not "rounds 1-1 of 1 epoch each"


def test_a_share_of_new_samples_is_not_rounded_away():
    from toolchain.promise import percent_words

    assert [percent_words(s) for s in (1 / 40, 1 / 5, 1 / 3, 0.5)] == ["2.5%", "20%", "33.3%", "50%"]


@pytest.mark.parametrize("negative_flips, offset, fn", [
    ([1.0, 2.0], 0.0, 1),  # halfway between the last positive caught for free (-1) and the first negative (1)
    ([5.0], 4.5, 0),  # room up to 5: the fourth positive (need 4) is caught too, for no false positive
])
def test_the_guard_spends_the_room_where_validation_fp_does_not_grow(negative_flips, offset, fn):
    """Two classes, class 1 protected: a positive is caught when offset > its need (logit 0 minus logit 1), a negative
    turns positive above its flip. The lowest offset keeping the promise here is just above -1, with 0 FP; every offset up
    to the first negative's flip has 0 FP too, and the guard used to ship the lowest (a review saw -3 to -5 with FP 0,
    and FN on test over budget)."""
    from toolchain.prune.operating_point import PromiseGuard, apply_offsets

    needs = [-3.0, -2.0, -1.0, 4.0]
    logits = np.array([[v, 0.0] for v in needs + negative_flips])
    y = np.array([1] * len(needs) + [0] * len(negative_flips))
    guard = PromiseGuard(y=y, dense_pred=logits.argmax(1), protected=[1], budget=0, confidence=0.4)  # 3 caught: 0.46
    chosen = guard.choose(logits)[1]
    assert chosen == pytest.approx(offset)
    shifted = apply_offsets(logits, {1: chosen}).argmax(1)
    assert int(np.sum((y == 1) & (shifted != 1))) == fn and int(np.sum((y == 0) & (shifted == 1))) == 0


def test_the_free_room_of_one_protected_class_costs_another_nothing():
    """Classes 0 and 1 protected: class 1's samples sit with class 0 until class 1's offset takes them back. Spending
    class 0's room inside the coordinate passes deepened class 0's hold on them, and class 1 then paid 30 false positives
    to take them back (accuracy 1.000 -> 0.786). Spent once the offsets are settled, the room changes nothing else."""
    from toolchain.prune.operating_point import PromiseGuard, apply_offsets

    logits = np.array([[0, -5, 0.5]] * 40 + [[1, 0, -5]] * 40 + [[-5, 0, 2]] * 30 + [[-5, -5, 5]] * 30, dtype=float)
    y = np.array([0] * 40 + [1] * 40 + [2] * 60)
    guard = PromiseGuard(y=y, dense_pred=y, protected=[0, 1], budget=0, confidence=0.5)
    predicted = apply_offsets(logits, guard.choose(logits)).argmax(1)
    assert np.mean(predicted == y) == 1.0


def _two_protected_classes(seed, n=300, rho=0.5):
    """A statistician's draw: 4n negatives, n of class 1 and n of class 2, a dense model and a candidate whose scores
    agree with it to correlation rho."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.zeros(4 * n, int), np.ones(n, int), np.full(n, 2)]
    dense_noise, own_noise = rng.normal(size=(len(y), 2)), rng.normal(size=(len(y), 2))
    mean = np.zeros((len(y), 2))
    mean[y == 1, 0] = mean[y == 2, 1] = 2.5
    dense = mean + dense_noise - 1.3
    candidate = mean + rho * dense_noise + np.sqrt(1 - rho ** 2) * own_noise - 1.3
    return y, np.c_[np.zeros(len(y)), dense].argmax(1), np.c_[np.zeros(len(y)), candidate]


@pytest.mark.parametrize("seed", [0, 4, 13, 90, 292])
def test_two_protected_classes_reach_the_guard_each_reaches_alone(seed):
    """With two protected classes, 4 fixed coordinate passes left 9% of such draws short of a guard a few more passes
    reach (seeds 0, 4, 13), and spending one class's free room moved which of the other's positives counts against it,
    taking it from 0.952 to 0.949 (seeds 90, 292): a statistician's simulation."""
    y, dense_pred, logits = _two_protected_classes(seed)
    for k in (1, 2):
        alone = PromiseGuard(y=y, dense_pred=dense_pred, protected=[k], budget=0, confidence=0.95)
        assert alone.met(logits, alone.choose(logits))
    guard = PromiseGuard(y=y, dense_pred=dense_pred, protected=[1, 2], budget=0, confidence=0.95)
    assert guard.met(logits, guard.choose(logits)), guard.check(logits, guard.choose(logits))


def test_two_protected_classes_that_cannot_both_be_met_keep_the_model_usable():
    """Each class needs a sample the other's offset takes (a conflict no offsets resolve): every pass raised both offsets,
    and 4 passes left them at +7 / +8 (validation accuracy 0.55), passes until nothing moved at +407 / +408 (0.23, a
    reviewer of the coordinate passes). The closest pass is kept: the guard is still reported short."""
    rng = np.random.default_rng(0)
    rows, y = [], []
    for k in (0, 1):
        z = rng.normal(size=(30, 3))
        z[:, k] += 4
        rows.append(z)
        y += [k] * 30
    rows.append(np.array([[0.0, 1.0, -3.0], [1.0, 0.0, -3.0]]))  # each class's contested sample
    y += [0, 1]
    z = rng.normal(size=(200, 3))
    z[:, 2] += rng.uniform(2, 12, 200)
    rows.append(z)
    y += [2] * 200
    logits, y = np.vstack(rows), np.array(y)
    guard = PromiseGuard(y=y, dense_pred=y, protected=[0, 1], budget=0, confidence=0.4)
    offsets = guard.choose(logits)
    assert not guard.met(logits, offsets)
    assert max(offsets.values()) < 3 and np.mean(apply_offsets(logits, offsets).argmax(1) == y) > 0.9, offsets


def _contested(rng):
    """A reviewer's adversarial draw: two protected classes, a sample each that the other claims, positives a third class
    holds far out, and 200 rows of that third class."""
    rows, y, dense = [], [], []
    n = int(rng.integers(15, 40))
    for k in (0, 1):
        z = rng.normal(size=(n, 3))
        z[:, k] += 4
        rows.append(z)
        y, dense = y + [k] * n, dense + [k] * n
    gap = rng.uniform(0.3, 2)
    rows.append(np.array([[0.0, gap, -3.0], [gap, 0.0, -3.0]]))
    y, dense = y + [0, 1], dense + [0, 1]
    for k in (0, 1):
        m = int(rng.integers(0, 4))
        far = np.full((m, 3), -50.0)
        far[:, k], far[:, 2] = 0, rng.uniform(2, 30, m)
        rows.append(far)
        y, dense = y + [k] * m, dense + rng.choice([k, 2], m).tolist()
    z = rng.normal(size=(200, 3))
    z[:, 2] += rng.uniform(2, 25, 200)
    rows.append(z)
    return np.vstack(rows), np.array(y + [2] * 200), np.array(dense + [2] * 200)


def test_a_guard_no_pass_meets_keeps_the_pass_that_moves_fewest_decisions():
    """Short of the guard, the closest pass had been the one with the highest confidence, bought at any price: +18 / +19
    for 0.15 of confidence, accuracy 0.95 -> 0.44 (a reviewer's draws). Where no class is met, no pass is kept that
    costs accuracy against the first."""
    rng = np.random.default_rng(0)
    lost = []
    for _ in range(60):
        logits, y, dense = _contested(rng)
        guard = PromiseGuard(y=y, dense_pred=dense, protected=[0, 1], budget=int(rng.integers(0, 2)),
                             confidence=float(rng.uniform(0.3, 0.9)))
        offsets = guard.choose(logits)
        if any(v["confidence"] >= guard.confidence for v in guard.check(logits, offsets).values()):
            continue
        first = {0: 0.0, 1: 0.0}
        for k in (0, 1):
            first[k] = guard._offset_for(logits, k, first)
        accuracy = lambda o: np.mean(apply_offsets(logits, o).argmax(1) == y)
        lost.append(accuracy(first) - accuracy(offsets))
    assert len(lost) > 10 and max(lost) <= 0.0, (len(lost), max(lost))


def test_needs_equal_but_for_float_rounding_are_judged_as_a_tie():
    """Two positives at the edge, the dense model catching one: their needs 0.3 and 0.1 + 0.2 are one tie (a logit grid's
    equal values, summed along other paths), which the edge rule counts against the candidate with the dense model's
    catch. Judged apart they stated 0.912 where the exact tie states 0.783, at the same offset (a reviewer's draws)."""
    for edge, near in ((0.3, 0.1 + 0.2), (100.0, 100.0 + 5e-8)):  # at a logit of 100 check had measured the tie apart
        stated = []
        for other in (edge, near):
            logits = np.array([[0.0, 3.0]] * 18 + [[edge, 0.0], [other, 0.0]] + [[edge + 5.0, 0.0]] * 50)
            y = np.array([1] * 20 + [0] * 50)
            dense = np.array([1] * 19 + [0] + [0] * 50)
            guard = PromiseGuard(y=y, dense_pred=dense, protected=[1], budget=1, confidence=0.8)
            offsets = guard.choose(logits)
            lowest = guard._offset_for(logits, 1, {1: 0.0})  # before the free room: the path's own point
            stated.append((round(offsets[1], 6), round(guard.check(logits, offsets)[1]["confidence"], 6),
                           round(guard.check(logits, {1: lowest})[1]["confidence"], 6)))
        assert stated[0] == stated[1], (edge, stated)


def test_the_round_line_names_only_the_classes_whose_promise_falls_short():
    """With -p 3 -p 8, 'outside the budget (class 3 ... 0.854 of 0.95, class 8 ... 0.963 of 0.95, ...)' listed a class
    that keeps its promise among the reasons."""
    from types import SimpleNamespace

    from toolchain.prune.tickets import promise_text

    ticket = SimpleNamespace(val={"promise": {"3": {"confidence": 0.854, "confidence_target": 0.95},
                                              "8": {"confidence": 0.963, "confidence_target": 0.95}}})
    assert promise_text(ticket) == "class 3 promise confidence 0.854 of 0.95"
    ticket.val["promise"]["3"]["confidence"] = 0.96
    assert promise_text(ticket) == "every protected class keeps its promise"


def test_a_promise_on_a_handful_of_validation_samples_says_what_it_rests_on(trained_digits, digits_dataset, tmp_path, capsys):
    """A gate passed on 5 validation samples of the protected class with no caveat: "+1 on new data of 5" is a fifth of the
    class, and with fewer than 10 samples cwtool does not check that the dense model detects it at all."""
    (xt, yt), (xv, yv), (xs, ys) = (digits_dataset.split(s) for s in ("train", "val", "test"))
    keep = np.flatnonzero(yv != 3).tolist() + np.flatnonzero(yv == 3)[:5].tolist()
    np.savez(tmp_path / "own.npz", x_train=xt, y_train=yt, x_val=xv[keep], y_val=yv[keep], x_test=xs, y_test=ys)
    out = tmp_path / "run"
    code, _, err = run_cli(["compress", trained_digits[0], "-d", tmp_path / "own.npz", "-p", "3", "--keep-params", "0.5",
                            "--epochs", "1", "--max-fn-increase", "1", "--confidence", "0.5", "--max-accuracy-drop", "1",
                            "--skip-export", "--out", out], capsys)
    assert code in (0, 1), err
    said = "validation holds 5 samples of protected class 3 (3): too few to check that the dense model detects it"
    assert said in err and said in (out / "compress.log").read_text() and said in (out / "report.md").read_text()
    statement = json.loads((out / "report.json").read_text())["promise"]["statement"]
    assert "on new data of 5 such samples (20% of them)" in statement, statement


def test_an_int8_file_short_of_the_promise_on_validation_fails_the_gate(trained_digits, tmp_path, capsys, monkeypatch):
    """The fallback's 'not met' was recorded and read by nobody: the file passed its one test draw, was covered by 'the FN
    promise holds' and named the file to deploy."""
    import toolchain.export.stage as stage

    real = stage.fn_aware_quantize

    def short(*args, **kwargs):  # what a file no offset or float layer brings to the confidence looks like
        result = real(*args, **kwargs)
        result.within_budget = False
        return result

    monkeypatch.setattr(stage, "fn_aware_quantize", short)
    out = tmp_path / "run"
    code, _, err = run_cli(["compress", trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.5", "--epochs", "1",
                            "--max-fn-increase", "2", "--confidence", "0.8", "--max-accuracy-drop", "0.5", "--format", "onnx",
                            "--time-runs", "3", "--out", out], capsys)
    report = json.loads((out / "report.json").read_text())
    int8 = next(a for a in report["artifacts"] if a["precision"] == "int8")
    assert code == 1 and not report["gate"]["passed"] and not int8["gate"]["passed"], err
    assert any("short of the FN promise on validation: confidence class 3 0." in r for r in report["gate"]["reasons"])
    assert set(int8["quantization"]["val_promise"]["3"]) == {"confidence", "fn", "dense_fn", "b", "c"}
    assert "SHORT of the FN promise on validation" in err
    assert int8["path"] not in [c["file"] for c in report["deploy"]["choices"]]


def test_the_edge_of_a_tie_is_one_sample_whatever_the_row_order():
    """Tied needs (int8 logits sit on a grid) of which the dense model catches some: the path counted the last tied row as
    the edge and check the first, so the guard shipped an offset its own check called short, or not, by row order."""
    need = np.array([-1, -1, 0, 0, -3, -1, 0, -4, 0, -2, 5, 4, 3, -1, 3, 0, 2, -2, 4, -1, -1, 1, -5, 0], float)
    hit = np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 0, 1, 1, 1, 1, 1])
    logits = np.vstack([np.stack([need, np.zeros_like(need)], 1), [[4.2, 0.0]] * 5])
    y, dense = np.array([1] * 24 + [0] * 5), np.concatenate([hit, [0] * 5])
    chosen = []
    for rows in (np.arange(29), np.arange(29)[::-1], np.random.default_rng(3).permutation(29)):
        guard = PromiseGuard(y=y[rows], dense_pred=dense[rows], protected=[1], budget=0, confidence=0.6)
        offsets = guard.choose(logits[rows])
        assert guard.met(logits[rows], offsets)  # the point chosen is one its own check keeps
        chosen.append((offsets[1], guard.check(logits[rows], offsets)[1]["confidence"]))
    assert chosen[0] == chosen[1] == chosen[2], chosen


def test_the_report_says_what_the_offset_does_and_what_all_promises_give_together():
    """A new user's run shipped an offset of -2.18 on the protected logit (the budget of 2 spent on fewer false alarms)
    and report.md never said it lowers the class's sensitivity, nor the model's own FN and FP; with two protected classes
    the probability that both promises hold was only in report.json; a negative price read "costs -1 false positives"."""
    from toolchain.report.promise_words import promise_lines

    def entry(offset, fp, fp_plain):
        return {"n": 36, "n_new": 36, "fn": 2, "dense_fn": 1, "b": 2, "c": 1, "confidence": 0.831, "confidence_target": 0.8,
                "budget": 2, "margin_fn": 1, "fp": fp, "fp_plain": fp_plain, "offset": offset, "fn_no_offset": 2, "fp_no_offset": 3}

    promise = {"met_on_val": True, "statement": "", "together_confidence": 0.662,
               "classes": {"3": entry(-2.18, 0, 1), "8": entry(0.0, 4, 2)}}
    text = "\n".join(promise_lines(promise))
    assert ("The shipped offsets (this class's -2.180 on its logit, and the other protected classes' on theirs) keep its "
            "sensitivity: the model's own decisions (no offset) miss 2 with 3 false positives on validation, the shipped ones 2 "
            "with 0.") in text, text
    # by what the decisions did, not the offset's sign: another class's offset moved this one's misses from 1 to 0
    moved = {"met_on_val": True, "statement": "", "classes": {"3": {**entry(-0.19, 0, 1), "fn": 0, "fn_no_offset": 1}}}
    assert ("The shipped offset -0.190 on the class's logit raises its sensitivity: the model's own decisions (no offset) miss "
            "1 with 3 false positives on validation, the shipped ones 0 with 0.") in "\n".join(promise_lines(moved))
    lowered = "\n".join(promise_lines({**moved, "classes": {"3": {**entry(-1.0, 0, 1), "fn": 3, "fn_no_offset": 1}}}))
    assert "lowers its sensitivity" in lowered and "`--keep-sensitivity` keeps at least" in lowered, lowered
    gap = {**promise, "classes": {"3": {**entry(0.021, 3, 3)}}}  # the demo's: a raise that moved no validation decision
    edge = "\n".join(promise_lines({**promise, "classes": {"3": {**entry(0.0, 3, 3), "b_judged": 3, "c_judged": 1}}}))
    assert "it reads 3 missed and 1 caught" in edge and "reads" not in text, edge  # the demo's 0 and 0 beside 0.458
    assert "changes no decision on validation" in "\n".join(promise_lines(gap)) and "raises" not in "\n".join(promise_lines(gap))
    assert text.count("The shipped offset") == 1  # no offset, nothing to say
    # a run whose promise is not met ships nothing: its model's offset, not "the shipped offset" (a sign-off reviewer's)
    failed = "\n".join(promise_lines({**moved, "met_on_val": False, "statement": "no ticket keeps it"}))
    assert "shipped" not in failed and "the run's model (not to ship: the promise is not met) misses at most" in failed, failed
    assert "The model's offset -0.190 on the class's logit raises its sensitivity" in failed and "those with the offset 0 with 0" in failed
    # where the offsets live: a device engineer added the reported one to the outputs again (FP 0 -> 2 on digits)
    assert "- **on the device**: the offsets above are in every file already" in text and "adds nothing" in text
    assert "on the device" not in "\n".join(promise_lines({**promise, "classes": {"8": entry(0.0, 4, 2)}}))
    assert "At the unguarded point there is 1 more false positive than here" in text and "costs -" not in text, text
    assert "That margin costs +2 false positives" in text
    assert "every promise holds at once with probability at least **0.662**" in text, text
    nothing = "\n".join(promise_lines({**promise, "together_confidence": 0.0}))  # "at least 0.000": a 0% chance to a reader
    assert "no bound on every promise holding at once" in nothing and "0.000" not in nothing, nothing
    old = {"met_on_val": True, "statement": "", "classes": {"3": {k: v for k, v in entry(1.0, 2, 1).items()
                                                                 if k not in ("offset", "fn_no_offset", "fp_no_offset")}}}
    assert "offset" not in "\n".join(promise_lines(old)) and "together" not in "\n".join(promise_lines(old))  # an older run's


def test_the_margin_is_said_as_a_count_of_the_allowed():
    """"misses 0 of 36, 1 under the 1 allowed" read as nonsense to a new user."""
    from toolchain.report.promise_words import margin_words

    assert margin_words(1, 1) == "where 1 is allowed: 1 is kept in reserve for new data"
    assert margin_words(2, 2) == "where 2 are allowed: 2 are kept in reserve for new data"
    assert margin_words(0, 166) == "exactly the 166 allowed: none is kept in reserve for new data"
    assert margin_words(-3, 20) == "3 more than the 20 allowed"


def test_the_disagreements_are_counted_in_words_that_read_for_one():
    """"1 the dense model catches are missed" (a new user's finding)."""
    from toolchain.report.promise_words import promise_lines

    entry = {"n": 60, "n_new": 60, "fn": 3, "dense_fn": 3, "b": 1, "c": 1, "confidence": 0.96, "confidence_target": 0.95,
             "budget": 0, "margin_fn": 0, "fp": 5, "fp_plain": 5}
    text = "\n".join(promise_lines({"classes": {"1": entry}, "met_on_val": True}))
    assert "of the samples the dense model catches, 1 is missed, and of those it misses, 1 is caught." in text, text
    text = "\n".join(promise_lines({"classes": {"1": {**entry, "b": 0, "c": 2}}, "met_on_val": True}))
    assert "of the samples the dense model catches, 0 are missed, and of those it misses, 2 are caught." in text, text


def test_two_protected_classes_get_the_same_offsets_in_either_order_each_with_a_margin():
    """-p 3 -p 8 and -p 8 -p 3 shipped different models (a class-8 offset +0.133 against +0.099): the free room was spent
    a class at a time in the command line's order, and spending the second moved the first's hardest positive to its
    edge (0.0001 logit from it, 0.067 from the next negative). Same offsets either way, each inside its free room."""
    from toolchain.prune.operating_point import apply_offsets, needs

    differ, cramped, judged = 0, 0, 0
    for seed in range(20):
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 10, 600)
        dense = rng.normal(size=(600, 10))
        dense[np.arange(600), y] += 2.0
        cand = dense + rng.normal(scale=0.7, size=(600, 10))
        ways = [PromiseGuard(y, dense.argmax(1), order, budget=2, confidence=0.8).choose(cand) for order in ([3, 8], [8, 3])]
        differ += any(abs(ways[0][k] - ways[1][k]) > 1e-12 for k in (3, 8))
        offsets = ways[0]
        for k in (3, 8):
            need = needs(apply_offsets(cand, {j: d for j, d in offsets.items() if j != k}), k)
            caught, flips = np.sort(need[(y == k) & (need < offsets[k])]), need[(y != k) & (need >= offsets[k])]
            if len(caught) and len(flips) and flips.min() - caught[-1] > 1e-3:
                judged += 1
                cramped += (offsets[k] - caught[-1]) < 0.2 * (flips.min() - caught[-1])
    assert differ == 0 and judged >= 30 and cramped == 0, (differ, cramped, judged)
    for seed in range(6):  # three classes: every order the same
        rng = np.random.default_rng(seed)
        y = rng.integers(0, 10, 600)
        dense = rng.normal(size=(600, 10))
        dense[np.arange(600), y] += 2.0
        cand = dense + rng.normal(scale=0.7, size=(600, 10))
        ways = [PromiseGuard(y, dense.argmax(1), order, budget=2, confidence=0.8).choose(cand)
                for order in ([3, 5, 8], [8, 5, 3], [5, 3, 8])]
        assert all(w == ways[0] for w in ways), ways


def test_compress_takes_the_protected_classes_in_index_order_whatever_order_p_gives(digits_dataset):
    """-p 3 -p 8 -p 5 and -p 5 -p 8 -p 3 shipped models 2e-4 apart: the retraining losses and importances sum their
    per-class terms in that order, and float sums of three terms depend on it."""
    import torch

    from toolchain.evaluate import check_model_on_splits

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    orders = [check_model_on_splits(model, digits_dataset, order)[2] for order in (["3", "8", "5"], ["5", "8", "3"])]
    assert orders == [[3, 5, 8], [3, 5, 8]]


@pytest.mark.parametrize("exchanged", [(0, 0), (3, 0), (0, 2)])
def test_protected_classes_that_take_samples_from_each_other_say_their_probabilities_can_be_optimistic(exchanged):
    """Two protected classes the models confuse: the shipped draws kept promises stated at 0.94 with chance 0.78-0.91 per
    class and 0.70 together (a statistics reviewer's simulation, repeated): the report gave the probabilities with no
    word of it. Said where at the shipped point one protected class's validation samples go to another."""
    from types import SimpleNamespace

    from toolchain.report.promise_words import promise_lines
    from toolchain.prune.tickets import promise_section

    entry = {"n": 100, "n_new": 100, "fn": 5, "dense_fn": 5, "b": 1, "c": 1, "confidence": 0.94, "confidence_target": 0.9,
             "budget": 1, "margin_fn": 1, "fp": 3, "fp_plain": 1}
    confusion = [[380, 10, 10], [5, 95 - exchanged[0], exchanged[0]], [5, exchanged[1], 95 - exchanged[1]]]
    promise = promise_section(SimpleNamespace(budget_met=True, dense={"val": {"accuracy": 0.98}}),
                              SimpleNamespace(val={"promise": {"1": entry, "2": entry}, "accuracy": 0.97, "confusion": confusion}, round=1),
                              SimpleNamespace(max_accuracy_drop=0.01, confidence=0.9, max_fn_increase=1))
    markdown = "\n".join(promise_lines(promise))
    said = exchanged != (0, 0)
    assert ("competing" in promise) == said == ("take validation samples from each other" in markdown), markdown
    if said:
        assert f"{exchanged[0]} of class 1's went to class 2 and {exchanged[1]} of class 2's to 1" in markdown


def test_keep_sensitivity_never_ships_a_negative_offset():
    """A compressed model that misses fewer than the dense model got a negative offset that spent the margin on fewer
    false positives (a new user's crack model: its own decisions missed 6, the shipped point 13, the dense model 24).
    --keep-sensitivity (floor 0) keeps at least its own decisions."""
    from toolchain.prune.operating_point import PromiseGuard, apply_offsets, fn_count

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [600, 150])
    dense = np.eye(2)[y] * 1.0 + rng.standard_normal((750, 2))  # a weak dense model: misses many of class 1
    candidate = np.eye(2)[y] * 3.0 + rng.standard_normal((750, 2))  # a much better ranking
    spent = PromiseGuard(y, dense.argmax(1), [1], 0, 0.95)
    kept = PromiseGuard(y, dense.argmax(1), [1], 0, 0.95, floor=0.0)
    low, floored = spent.choose(candidate), kept.choose(candidate)
    assert low[1] < 0 and floored[1] >= 0, (low, floored)
    own = fn_count(candidate, y, 1)
    assert fn_count(apply_offsets(candidate, floored), y, 1) <= own < fn_count(apply_offsets(candidate, low), y, 1)
    assert kept.met(candidate, floored)  # a higher offset only strengthens a single class's promise


def test_a_negative_offset_that_misses_more_than_the_model_names_keep_sensitivity():
    from toolchain.report.promise_words import offset_words

    entry = {"fn": 13, "fp": 1, "offset": -0.687, "fn_no_offset": 6, "fp_no_offset": 17}
    assert "`--keep-sensitivity` keeps at least the model's own decisions" in offset_words(entry)
    assert "--keep-sensitivity" not in offset_words({**entry, "fn": 6})  # lowered, but missing none more on validation
    assert "--keep-sensitivity" not in offset_words({**entry, "offset": 0.5, "fn": 4})


def test_reachable_confidence_keeps_to_the_floor():
    """Under --keep-sensitivity, `reachable` searched negative offsets too: it named a confidence only a forbidden offset
    reaches, and the advice ("lower --confidence") could not help where accuracy binds (a regression reviewer's find)."""
    from toolchain.prune.operating_point import PromiseGuard

    rng = np.random.default_rng(0)
    y = np.repeat([0, 1], [600, 150])
    logits = np.eye(2)[y] * 2.0 + rng.standard_normal((750, 2)) + np.array([0.0, 2.5])  # over-predicts class 1
    accuracy_at_zero = float(np.mean(logits.argmax(1) == y))
    free = PromiseGuard(y, y, [1], 0, 0.999).reachable(logits, {1: 0.0}, accuracy_at_zero + 0.1)
    floored = PromiseGuard(y, y, [1], 0, 0.999, floor=0.0).reachable(logits, {1: 0.0}, accuracy_at_zero + 0.1)
    assert free[1] is not None and floored[1] is None, (free, floored)


def test_a_confidence_near_1_is_said_as_given_not_rounded_to_1():
    """--confidence 0.9999999999 was said as "--confidence 1 cannot be backed": a value the flag refuses."""
    from types import SimpleNamespace

    from toolchain.compress_inputs import unreachable_confidence

    y = np.r_[np.zeros(50, int), np.ones(30, int)]
    logits = np.eye(2)[y] * 4.0
    lines = unreachable_confidence(logits, y, [1], ["0", "1"], SimpleNamespace(confidence=0.9999999999, max_fn_increase=0))
    assert lines and lines[0].startswith("warning: --confidence 0.9999999999 cannot be backed for protected class 1"), lines
    assert unreachable_confidence(logits, y, [1], ["0", "1"], SimpleNamespace(confidence=0.9, max_fn_increase=5)) == []


def test_a_first_round_that_lost_the_model_names_the_learning_rate():
    """A standardization folded into a first layer: round 1's retraining at --lr 0.002 fell from 0.95 to 0.65 validation
    accuracy, and the advice named --max-accuracy-drop, --keep-params, --epochs and --rate, none of which mended it."""
    from types import SimpleNamespace

    from toolchain.prune.tickets import promise_section

    entry = {"n": 40, "n_new": 40, "fn": 2, "dense_fn": 2, "b": 0, "c": 0, "confidence": 0.97, "confidence_target": 0.95,
             "budget": 0, "margin_fn": 0, "fp": 0, "fp_plain": 0}
    config = SimpleNamespace(max_accuracy_drop=0.02, confidence=0.95, max_fn_increase=0, keep_params=0.5, rate=0.5, lr=0.002)

    def statement(first_accuracy, params=2_800):
        ticket = SimpleNamespace(val={"promise": {"1": entry}, "accuracy": 0.65}, round=1, val_raw={"accuracy": first_accuracy},
                                 params=params)
        result = SimpleNamespace(budget_met=False, dense={"val": {"accuracy": 0.95}, "params": 5_600}, tickets=[ticket])
        return promise_section(result, ticket, config)["statement"]

    lost = statement(0.65)
    assert lost.startswith("no ticket stays within the accuracy budget") and lost.endswith(
        "or a lower --lr (round 1 kept half the parameters or more, yet its retraining lost 30 points of validation accuracy "
        "from the dense model's: weights on scales far apart, such as a standardization folded into a first layer, retrain "
        "poorly at --lr 0.002; docs/DATA.md)"), lost
    assert "--lr" not in statement(0.90)  # 5 points: the pruning's size, not the retraining
    assert "--lr" not in statement(0.65, params=280)  # a round 1 that removed 95% may lose 30 points to its size alone


def test_report_md_says_what_the_promise_covers_and_each_class_s_misses_on_test():
    """A sign-off reviewer: "same distribution", the torch model, what is not promised, and the absolute miss rate with its
    interval were in no human report (report.json's gate checks alone)."""
    from toolchain.report.promise_words import scope_lines

    report = {"promise": {"met_on_val": True, "classes": {"3": {}}}, "stages": [{"stage": "quantized"}],
              "gate": {"checks": [{"class": 3, "fn": 2, "support": 40, "fnr_ci95": [0.006, 0.169], "baseline_fn": 5}]}}
    text = "\n".join(scope_lines(report))
    assert "(the same distribution), judged by the torch model's decisions (each int8 file's own counts" in text, text
    assert "promises nothing of the absolute miss rate, of false alarms, of the other classes" in text
    assert "- **class 3 on test**: the pruned torch model misses 2 of 40 (miss rate 0.050, 95% interval 0.006 to 0.169); the dense model 5 of 40." in text
    plain = "\n".join(scope_lines({**report, "stages": [], "gate": {"checks": [{"class": 3, "fn": "x"}]}}))
    assert "int8" not in plain and "on test" not in plain  # no file made; an odd record is left out, never a crash
    assert scope_lines({"promise": None}) == []
    # where the misses went, in words (confusion.png alone showed it: a reviewer with a screen reader), most first
    confusion = [[0] * 6 for _ in range(6)]
    confusion[3] = [1, 0, 0, 38, 0, 1]
    shrunk = {"stage": "shrunk", "test": {"confusion": confusion}}
    went = "\n".join(scope_lines({**report, "stages": [shrunk], "class_names": ["a", "b", "c", "d", "e", "**f**"]}))
    assert "95% interval 0.006 to 0.169; answered as class 0 (a) 1, class 5 (\\*\\*f\\*\\*) 1); the dense model" in went, went
    confusion[3] = [0, 0, 0, 40, 0, 0]
    assert "answered as" not in "\n".join(scope_lines({**report, "stages": [shrunk]}))
    for odd in ("x", [[1]], [None] * 6, {"3": [1]}):
        assert "answered as" not in "\n".join(scope_lines({**report, "stages": [{"stage": "shrunk", "test": {"confusion": odd}}]}))


def test_an_accuracy_floor_below_zero_is_said_as_none():
    """A dense model at 0.33 on 20 random rows and a 2-point budget: "reachable ... while validation accuracy stays >=
    -0.0200" (a reviewer's finding); no floor is said as none."""
    from types import SimpleNamespace

    from toolchain.prune.tickets import promise_section

    entry = {"n": 5, "n_new": 5, "fn": 1, "dense_fn": 1, "b": 1, "c": 1, "confidence": 0.8, "confidence_target": 0.95, "budget": 0,
             "margin_fn": 0, "fp": 1, "fp_plain": 0, "reachable_confidence": 0.8}
    ticket = SimpleNamespace(val={"promise": {"1": entry}, "accuracy": 0.3333}, round=1)
    config = SimpleNamespace(max_accuracy_drop=0.02, confidence=0.95, max_fn_increase=0, keep_params=0.5, rate=0.5)
    low = promise_section(SimpleNamespace(budget_met=False, dense={"val": {"accuracy": 0.0}}), ticket, config)["statement"]
    assert "reachable by the selected round 1: class 1 0.800" in low and "-0.0200" not in low and "stays >=" not in low, low
    high = promise_section(SimpleNamespace(budget_met=False, dense={"val": {"accuracy": 0.9}}), ticket, config)["statement"]
    assert "while validation accuracy stays >= 0.8800" in high, high


def test_a_shipped_offset_that_lowers_a_class_s_sensitivity_is_said_at_the_top():
    """Class 8's shipped offset missed 2 validation samples its model's own decisions catch (FP 3 -> 0), said only
    mid-paragraph of the promise section (a sign-off reviewer's finding): the trade is said under the gate."""
    from toolchain.report.promise_words import lowered_lines

    entry = {"n": 27, "fn": 2, "fn_no_offset": 0, "fp": 0, "fp_no_offset": 3, "dense_fn": 13, "budget": 0, "offset": -1.5}
    promise = {"met_on_val": True, "classes": {"3": {**entry, "fn": 0}, "8": entry}}
    (_, line), = [lowered_lines(promise)]
    assert line == ("**Sensitivity lowered**: with the shipped offsets, class 8 misses 2 of 27 on validation where the model's "
                    "own decisions miss 0, for 3 fewer false positives (0 against 3), within the promise (the dense model misses "
                    "13); `--keep-sensitivity` keeps at least the model's own decisions."), line
    assert lowered_lines({**promise, "met_on_val": False}) == []  # nothing ships: the failed run's words say so
    assert lowered_lines({"met_on_val": True, "classes": {"3": {**entry, "fn": 0}}}) == []


def test_a_probability_from_few_samples_carries_its_caveat_in_its_own_sentence():
    """report.md's bold "probability 0.998" from 28 validation samples sat a line away from the few-samples caveat."""
    from toolchain.report.promise_words import promise_lines

    entry = {"n": 28, "n_new": 28, "fn": 0, "dense_fn": 11, "b": 0, "c": 11, "confidence": 0.998, "confidence_target": 0.95,
             "budget": 0, "margin_fn": 11, "fp": 0, "fp_plain": 0}
    few = next(line for line in promise_lines({"met_on_val": True, "classes": {"3": entry}}) if line.startswith("- class 3"))
    sentence = few.split(". On validation")[0]
    assert "**0.998**" in sentence and "from only 28 validation samples of the class: it can be optimistic" in sentence, few
    many = next(line for line in promise_lines({"met_on_val": True, "classes": {"3": {**entry, "n": 60}}}) if line.startswith("- class 3"))
    assert "from only" not in many
    failed = next(line for line in promise_lines({"met_on_val": False, "statement": "x", "classes": {"3": entry}})
                  if line.startswith("- class 3"))
    assert "it can be optimistic. On validation" in failed and "(below)" not in failed, failed  # a failed run has no such bullet
    empty = {"met_on_val": True, "classes": {"3": {**entry, "n": 9, "n_new": 9, "budget": 9}}}  # an empty promise: no bullet
    assert "(below)" not in next(line for line in promise_lines(empty) if line.startswith("- class 3"))


def test_the_lowered_headline_is_said_only_where_the_class_s_own_offset_bought_false_positives_back():
    """A regression reviewer: another class's offset raised this class's misses, and the headline said "for -1 fewer false
    positives" and advised --keep-sensitivity to a run that had it; odd records in an edited report never crash it."""
    from toolchain.report.promise_words import lowered_lines, scope_lines

    entry = {"n": 27, "fn": 1, "fn_no_offset": 0, "fp": 2, "fp_no_offset": 1, "dense_fn": 13, "budget": 0, "offset": 0.0}
    assert lowered_lines({"met_on_val": True, "classes": {"8": entry}}) == []  # its own offset is 0: moved by another's
    assert lowered_lines({"met_on_val": True, "classes": {"8": {**entry, "offset": -0.5}}}) == []  # no false positive bought back
    assert lowered_lines({"met_on_val": True, "classes": {"8": {**entry, "offset": -0.5, "fp": 0}}})  # both: said
    for odd in (3, True, "x", [{"fn": 1}], [{"class": 3, "fn": 1, "support": 4, "fnr_ci95": "x"}]):
        assert not [line for line in scope_lines({"promise": {"classes": {"3": {}}}, "gate": {"checks": odd}}) if "on test" in line]
    assert scope_lines({"promise": {"classes": {"3": {}}}, "gate": "x"})


def test_reachable_confidence_at_the_floor_itself_where_every_positive_is_caught():
    """--keep-sensitivity, a class the model catches whole: every point that changes its decisions lies below the floor, so
    none was allowed, the class read as one no offset brings within accuracy, and the run said "no ticket stays within the
    accuracy budget" where the promise's own ceiling (0.458) bound (a dermatology user's finding)."""
    from toolchain.prune.operating_point import PromiseGuard

    y = np.repeat([0, 1], [200, 27])
    logits = np.eye(2)[y] * 5.0  # every sample caught with room: the decisions change only at offsets far below 0
    floored = PromiseGuard(y, y, [1], 0, 0.95, floor=0.0).reachable(logits, {1: 0.0}, 0.9)
    free = PromiseGuard(y, y, [1], 0, 0.95).reachable(logits, {1: 0.0}, 0.9)
    assert floored[1] is not None and floored[1] < 0.95 and floored[1] == free[1], (floored, free)


def test_classes_whose_exchange_the_offsets_hid_are_said_to_compete():
    """4 of scc's validation samples went to bcc at the model's own decisions; bcc's offset of -2.59 took them back, and
    the caveat looked only at the shipped point's confusion: none said (a dermatology user's finding)."""
    from types import SimpleNamespace

    from toolchain.prune.tickets import promise_section

    entry = {"n": 100, "n_new": 100, "fn": 5, "dense_fn": 5, "b": 1, "c": 1, "confidence": 0.94, "confidence_target": 0.9,
             "budget": 1, "margin_fn": 1, "fp": 3, "fp_plain": 1}
    apart = [[380, 10, 10], [5, 95, 0], [5, 0, 95]]
    exchanged = [[380, 10, 10], [5, 95, 0], [5, 4, 91]]

    def section(raw):
        ticket = SimpleNamespace(val={"promise": {"1": entry, "2": entry}, "accuracy": 0.97, "confusion": apart}, round=1,
                                 val_raw={"confusion": raw})
        return promise_section(SimpleNamespace(budget_met=True, dense={"val": {"accuracy": 0.98}}), ticket,
                               SimpleNamespace(max_accuracy_drop=0.01, confidence=0.9, max_fn_increase=1))

    hidden = section(exchanged)
    assert "at the model's own decisions, before the offsets moved them apart (0 of class 1's went to class 2 and 4 of " \
           "class 2's to 1)" in hidden["competing"], hidden.get("competing")
    assert "competing" not in section(apart)


def test_a_failing_promise_s_numbers_are_ones_that_help():
    """A second regression review: every short class at its split's ceiling, one of them missed by the dense model (scc:
    4 of 14, all caught), got no numbers and --keep-params, which cannot help; "lower --confidence" was offered where no
    confidence the flag takes reaches; a budget of every sample (n) was suggested; a number above the one asked."""
    from types import SimpleNamespace

    from toolchain.prune.tickets import promise_section

    def statement(per_class, confidence=0.95):
        ticket = SimpleNamespace(val={"promise": per_class, "accuracy": 0.97}, round=1)
        config = SimpleNamespace(max_accuracy_drop=0.01, confidence=confidence, max_fn_increase=0, keep_params=0.5, rate=0.5)
        return promise_section(SimpleNamespace(budget_met=False, dense={"val": {"accuracy": 0.98}}), ticket, config)["statement"]

    def entry(n, dense_fn, reach, b=0):
        return {"n": n, "n_new": n, "fn": dense_fn + b, "dense_fn": dense_fn, "b": b, "c": dense_fn, "confidence": reach,
                "confidence_target": 0.95, "budget": 0, "margin_fn": 0, "fp": 0, "fp_plain": 0, "reachable_confidence": reach}

    said = statement({"1": entry(42, 0, 0.458), "6": entry(14, 4, 0.941)})
    assert "and it catches every one the dense model misses" in said and "--keep-params" not in said, said
    assert "raise --max-fn-increase to 4" in said and "lower --confidence" not in said, said  # 0.45: below the flag's range
    tiny = statement({"1": entry(3, 0, 0.3)})
    assert "raise --max-fn-increase to" not in tiny and "lower --confidence" not in tiny, tiny  # 3 of 3 allowed: no promise
    above = statement({"1": entry(40, 2, 0.97, b=1)}, confidence=0.9)
    assert "lower --confidence to" not in above, above


def test_a_budget_s_share_of_the_new_samples_is_said_in_report_md():
    """+2 of df's 10 validation samples is a fifth of the class: report.json's statement said "(20% of them)", report.md
    did not (a dermatology user's finding)."""
    from toolchain.report.promise_words import promise_lines

    entry = {"n": 10, "n_new": 10, "fn": 2, "dense_fn": 0, "b": 2, "c": 0, "confidence": 0.9, "confidence_target": 0.8,
             "budget": 2, "margin_fn": 0, "fp": 0, "fp_plain": 0}
    line = next(l for l in promise_lines({"met_on_val": True, "classes": {"5": entry}}) if l.startswith("- class 5"))
    assert "misses at most the dense model's number + 2 (20% of them) with probability" in line, line
    plain = next(l for l in promise_lines({"met_on_val": True, "classes": {"5": {**entry, "budget": 0}}}) if l.startswith("- class 5"))
    assert "of them)" not in plain
    third = next(l for l in promise_lines({"met_on_val": True, "classes": {"5": {**entry, "budget": 1, "n_new": 40}}})
                 if l.startswith("- class 5"))
    assert "+ 1 (2.5% of them)" in third, third


def test_the_confidence_to_ask_and_the_ceiling_where_the_dense_model_misses_some():
    """Mutants that survived the suite: a reachable 0.776 advised as 0.78 (which the split cannot back), 0.5 itself (the
    flag's floor) not advised, and the ceiling where the dense model misses some read with its hardest positive as
    caught (c not lowered by one), which skipped the warning before retraining."""
    from toolchain.promise import confidence_ceiling, confidence_to_ask, promise_confidence

    assert confidence_to_ask(0.776) == 0.77 and confidence_to_ask(0.779999) == 0.77 and confidence_to_ask(0.78) == 0.78
    assert confidence_to_ask(0.505) == 0.5 and confidence_to_ask(0.5) == 0.5 and confidence_to_ask(0.499) is None
    # 9 samples, the dense model misses 2: the best model misses none it catches and catches both, its hardest positive
    # counted as missed: b + 1 (one the dense model catches) or c - 1 (one it missed)
    assert confidence_ceiling(9, 2) == max(promise_confidence(1, 2, 9), promise_confidence(0, 1, 9))
    assert confidence_ceiling(9, 2) < promise_confidence(0, 2, 9) - 0.05
    assert confidence_ceiling(9, 0) == promise_confidence(1, 0, 9) and confidence_ceiling(0, 0) == 0.0


def test_the_guard_counts_an_edge_the_dense_model_missed_against_the_candidate_and_reachable_takes_the_best_feasible():
    """Mutants that survived the suite: the hardest positive caught, where the dense model missed it, left c as it was
    (the confidence overstated); reachable read the lowest feasible point's confidence, and dropped a point whose
    accuracy is exactly the floor."""
    from toolchain.prune.operating_point import PromiseGuard

    # class 1: 10 positives; the dense model misses rows 0 and 1; the candidate's logit margins order its positives
    y = np.array([1] * 10 + [0] * 10)
    dense_pred = np.array([0, 0] + [1] * 8 + [0] * 10)
    margin = np.r_[np.linspace(-3, -2, 2), np.linspace(1, 3, 8), np.linspace(-4, -1, 10)]  # logit 1 minus logit 0
    logits = np.stack([np.zeros(20), margin], axis=1)
    guard = PromiseGuard(y=y, dense_pred=dense_pred, protected=[1], confidence=0.5, budget=0)
    caught_all = guard.check(logits, {1: 3.5})[1]  # every positive caught: the hardest (row 0) is one the dense model missed
    assert (caught_all["b"], caught_all["c"], caught_all["b_judged"], caught_all["c_judged"]) == (0, 2, 0, 1), caught_all
    assert caught_all["confidence"] == guard._confidence(1, 0, 1, 10)
    # reachable: the accuracy floor exactly at a point's accuracy keeps it; the best feasible point is read, not the first
    shifted = {d: guard.check(logits, {1: d})[1] for d in (0.0, 2.5, 3.5)}
    accuracy = lambda d: float(np.mean((logits + [0, d]).argmax(1) == y))  # noqa: E731
    floor = accuracy(3.5)
    reached = guard.reachable(logits, {1: 0.0}, floor)[1]
    assert reached == max(v["confidence"] for d, v in shifted.items() if accuracy(d) >= floor), (reached, shifted)
    assert reached == shifted[3.5]["confidence"] > shifted[0.0]["confidence"]
    at_floor = accuracy(3.0 + 1e-9)  # the point that catches every positive (row 0's need is 3): its accuracy is the floor
    assert guard.reachable(logits, {1: 0.0}, at_floor)[1] == shifted[3.5]["confidence"]
