"""Paths no other test ran (found by a branch-coverage run of the suite): an evaluate JSON as verify's baseline, the
baseline's own consistency checks, a static-batch ONNX file, verify's and export's flag checks, the class-aware Taylor
term, --rewind init and the Lagrange rule inside the rounds, compress's refusals of models it cannot start from, and the
CLI's exits for a bug (under --debug too) and for a BaseException from the user's code."""

from __future__ import annotations

import copy
import json
import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from clirun import one_line_error, run_cli
from toolchain.errors import UserError
from toolchain.models import registry

PROT = 3


def _onnx(model, path, example=None):
    example = torch.zeros(2, 1, 8, 8) if example is None else example
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (example,), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


@pytest.fixture(scope="module")
def evaluated(trained_digits, tmp_path_factory):
    """The trained digits model as an ONNX file, the same model with class 3 all but switched off, and the
    `cwtool evaluate --json` of the model on digits' test split (the rows verify judges by default)."""
    from toolchain.cli import main

    d = tmp_path_factory.mktemp("evaluate_baseline")
    path, model = trained_digits
    try:
        main(["evaluate", str(path), "--data", "digits", "-p", str(PROT), "--json", str(d / "e.json")])
    except SystemExit as exc:
        assert exc.code == 0
    blind = copy.deepcopy(model)
    with torch.no_grad():
        blind.classifier.bias[PROT] -= 1000.0
    return {"json": d / "e.json", "same": _onnx(copy.deepcopy(model), d / "same.onnx"), "blind": _onnx(blind, d / "blind.onnx"),
            "dir": d}


# --------------------------------------------------------------------------- verify against an evaluate JSON


def test_verify_gates_against_an_evaluate_json_baseline(evaluated, capsys, tmp_path):
    """README: verify's --baseline takes `cwtool evaluate --json`'s file. No test had given one: baseline.py read it as
    from == "evaluation" in no run."""
    code, _, err = run_cli(["verify", evaluated["same"], "--data", "digits", "-p", PROT, "--baseline", evaluated["json"],
                            "--json", tmp_path / "v.json", "-q"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "v.json").read_text())
    base = json.loads(evaluated["json"].read_text())
    assert result["baseline"]["from"] == "evaluation" and result["baseline"]["paired"] is True
    assert result["data"]["same_rows_as_baseline"] is True and result["data"]["rows_sha256"] == base["rows_sha256"]
    check = result["artifacts"][0]["gate"]["checks"][0]
    assert check["class"] == PROT and check["baseline_fn"] == base["protected"][0]["fn"] == check["fn"]  # the same model
    assert check["b"] == check["c"] == 0 and result["artifacts"][0]["agreement"] == 1.0

    code, out, err = run_cli(["verify", evaluated["blind"], "--data", "digits", "-p", PROT, "--baseline", evaluated["json"],
                              "--json", tmp_path / "w.json", "-q"], capsys)
    assert code == 1, err
    failed = json.loads((tmp_path / "w.json").read_text())
    support = failed["artifacts"][0]["evaluation"]["protected"][0]["support"]
    assert failed["artifacts"][0]["gate"]["checks"][0]["fn"] == support  # every 3 missed
    assert any(r.startswith(f"class {PROT}: FN {support} > ") for r in failed["artifacts"][0]["gate"]["reasons"]), failed
    assert "FAIL" in out + err


def test_a_second_artifact_with_other_classes_than_the_baseline_is_refused(evaluated, capsys, tmp_path):
    """Two files of which the second outputs 11 classes: the first was matched to the baseline's 10, the second is
    refused by its own line (verify.py); given first, by the baseline's check (baseline.check_baseline)."""
    wide = _onnx(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 11)), tmp_path / "wide.onnx")
    code, _, err = run_cli(["verify", evaluated["same"], wide, "--data", "digits", "-p", PROT, "--baseline", evaluated["json"]], capsys)
    one_line_error(code, err, "wide.onnx outputs 11 classes, the baseline 10")
    code, _, err = run_cli(["verify", wide, evaluated["same"], "--data", "digits", "-p", PROT, "--baseline", evaluated["json"]], capsys)
    one_line_error(code, err, "the baseline has 10 classes but the artifact outputs 11")


def test_a_static_batch_file_is_judged_on_every_row_as_a_dynamic_one(evaluated, trained_digits, capsys, tmp_path):
    """An ONNX file exported with a fixed batch of 4 (no dynamic axes): verify runs the 269 test rows in chunks of 4 and
    pads the last (runtimes/onnx.py), a path no test ran. Its answers are the dynamic file's, row for row."""
    static = tmp_path / "static4.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(copy.deepcopy(trained_digits[1]).eval(), (torch.zeros(4, 1, 8, 8),), str(static), dynamo=False,
                          opset_version=17, input_names=["input"], output_names=["logits"])  # no dynamic axes
    code, _, err = run_cli(["verify", static, evaluated["same"], "--data", "digits", "-p", PROT, "--baseline", evaluated["json"],
                            "--json", tmp_path / "v.json", "-q"], capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "v.json").read_text())
    fixed, dynamic = result["artifacts"]
    assert fixed["input_shape"][0] == 4 and result["data"]["n"] % 4  # the last chunk is padded
    assert fixed["evaluation"]["predictions"] == dynamic["evaluation"]["predictions"] and fixed["agreement"] == 1.0
    assert len(fixed["evaluation"]["predictions"]) == result["data"]["n"]


@pytest.mark.parametrize("extra, words", [
    (["--split", "sideways"], ["--split 'sideways' is not one of"]),
    (["--baseline", "BASE", "--max-fn-increase", "-1"], ["--max-fn-increase -1 is negative"]),
    (["--data", "NPZ", "--label-column", "y"], ["--label-column only applies to a .csv file"]),
    (["--data", "NPZ", "--resize", "16"], ["only apply to an ImageFolder folder"]),
], ids=["split", "negative-budget", "label-column", "resize"])
def test_verify_flags_it_cannot_honour_exit_2_with_one_line(evaluated, capsys, tmp_path, extra, words):
    np.savez(tmp_path / "rows.npz", x=np.zeros((4, 1, 8, 8), np.float32), y=np.array([0, 1, 2, 3]))
    swap = {"BASE": evaluated["json"], "NPZ": tmp_path / "rows.npz"}
    args = [swap.get(a, a) for a in extra]
    data = [] if "--data" in args else ["--data", "digits"]
    code, _, err = run_cli(["verify", evaluated["same"], *data, "-p", PROT, "--json", tmp_path / "v.json", *args], capsys)
    one_line_error(code, err, *words)
    assert not (tmp_path / "v.json").exists()


# --------------------------------------------------------------------------- the baseline's consistency checks


def _evaluation():
    """10 rows of 3 classes (2, 1, 7 samples) with 4 of class 2 missed, protected class 2: consistent in every field."""
    from toolchain.metrics import evaluate_logits

    y = np.array([0, 0, 1, 2, 2, 2, 2, 2, 2, 2])
    pred = np.array([0, 0, 1, 2, 2, 2, 0, 0, 1, 1])
    logits = np.eye(3)[pred] * 5.0
    ev = evaluate_logits(y, logits, [2], 3)
    ev["predictions"] = pred.tolist()
    return json.loads(json.dumps(ev))  # as a file holds it


def _protected(ev):
    return ev["protected"][0]


def _set_fnr(ev):
    _protected(ev)["fnr"] = min(1.0, _protected(ev)["fn"] / _protected(ev)["support"] + 0.1)


def _move_in_row(ev):  # an off-diagonal count that fn_per_class does not have
    ev["confusion"][0][0] -= 1
    ev["confusion"][0][1] += 1


def _swap_supports(ev):  # still n rows, each class at least its misses: only the matrix tells
    ev["support_per_class"][0], ev["support_per_class"][1] = ev["support_per_class"][1], ev["support_per_class"][0]


def _support_without_per_class(ev):
    ev.pop("support_per_class")
    _protected(ev)["support"] += 1
    _protected(ev).pop("fnr")


def _other_prediction(ev):
    row = ev["predictions"].index(1)
    ev["predictions"][row] = 0


EDITS = {
    "fnr above 1": (lambda ev: _protected(ev).update(fnr=1.5), "has an fnr outside [0, 1]"),
    "support_per_class of text": (lambda ev: ev.update(support_per_class=["2", "1", "7"]), "support_per_class is not a list of counts"),
    "fnr not fn / support": (_set_fnr, "not its fn / support"),
    "fp beyond the other classes' rows": (lambda ev: ev.update(fp_per_class=[0, 0, 4]), "more false positives than rows of other classes"),
    "matrix off-diagonal edited": (_move_in_row, "fn_per_class says 0 for class 0 but its confusion matrix 1"),
    "matrix counts other rows": (lambda ev: ev["confusion"][0].__setitem__(0, 3), "its confusion matrix counts 11 rows, not n = 10"),
    "accuracy off by less than a row": (lambda ev: ev.update(accuracy=ev["accuracy"] + 0.04), "its accuracy is not its confusion matrix's"),
    "supports swapped": (_swap_supports, "support_per_class is not its confusion matrix's rows"),
    "protected support without per-class supports": (_support_without_per_class, "has support 8 but its confusion matrix 7"),
    "protected fp edited": (lambda ev: _protected(ev).update(fp=_protected(ev)["fp"] + 1), "has an fp that is not its confusion matrix's"),
    "a prediction moved": (_other_prediction, "its predictions do not add up to its confusion matrix's columns"),
}


@pytest.mark.parametrize("case", list(EDITS), ids=[k.replace(" ", "-").replace("/", "over").replace("'", "") for k in EDITS])
def test_a_baseline_edited_against_its_own_counts_is_malformed_naming_the_field(tmp_path, case):
    """Every check that ties a baseline's counts to each other, each reached by the one edit that only it catches (the
    suite's edits were all caught by earlier checks: these lines ran in no test)."""
    from toolchain.baseline import load_baseline

    path = tmp_path / "e.json"
    path.write_text(json.dumps(_evaluation()))
    assert load_baseline(path)["from"] == "evaluation"  # the unedited file reads
    ev = _evaluation()
    edit, words = EDITS[case]
    edit(ev)
    path.write_text(json.dumps(ev))
    with pytest.raises(UserError, match="is malformed") as caught:
        load_baseline(path)
    assert words in str(caught.value), str(caught.value)


def test_a_protected_support_edited_where_nothing_else_counts_the_class_is_refused_by_the_gate(evaluated, capsys, tmp_path):
    """A baseline without its matrix and per-class supports, its protected class's support raised by one: the
    baseline's checks have nothing to hold it against, and the gate's own check (gate.py, "has N samples in the
    baseline") is what refuses it. That line ran in no test."""
    base = json.loads(evaluated["json"].read_text())
    base["confusion"] = None
    base.pop("support_per_class")
    entry = base["protected"][0]
    entry["support"] += 1
    entry.pop("fnr")
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(base))
    code, _, err = run_cli(["verify", evaluated["same"], "--data", "digits", "-p", PROT, "--baseline", edited, "-q"], capsys)
    one_line_error(code, err, f"class {PROT} has {entry['support']} samples in the baseline but {entry['support'] - 1} here")


def test_a_verify_json_without_an_evaluation_and_class_names_that_are_not_text(tmp_path):
    from toolchain.baseline import load_baseline

    path = tmp_path / "v.json"
    path.write_text(json.dumps({"schema_version": 1, "kind": "cwtool-verify", "artifacts": []}))
    with pytest.raises(UserError, match="has neither a baseline nor an artifact evaluation"):
        load_baseline(path)
    path.write_text(json.dumps({"schema_version": 1, "kind": "cwtool-verify", "class_names": [0, 1, 2],  # a label: ignored
                                "artifacts": [{"path": "a.onnx", "evaluation": _evaluation()}]}))
    found = load_baseline(path)
    assert found["from"] == "verify.artifacts[0] (a.onnx)" and found["class_names"] is None
    path.write_text(json.dumps({"schema_version": 1, "kind": "cwtool-verify", "class_names": ["a", "b", "c"],
                                "artifacts": [{"path": "a.onnx", "evaluation": _evaluation()}]}))
    assert load_baseline(path)["class_names"] == ["a", "b", "c"]


# --------------------------------------------------------------------------- the class-aware importance


def _mlp():
    torch.manual_seed(0)
    return registry.create("mlp", in_features=5, num_classes=3, hidden=(6,))


def test_channel_scores_add_the_protected_taylor_term_by_its_weight():
    """--taylor-weight: the lottery's channel_scores took the Taylor term in no test (protected_taylor_scores alone was
    checked). The score is the normalised magnitude plus the weight times the normalised Taylor score."""
    from toolchain.prune.graph import ChannelGraph
    from toolchain.prune.importance import channel_scores, magnitude_scores, normalised, protected_taylor_scores

    model, example = _mlp(), torch.zeros(1, 5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)).astype(np.float32)
    y = np.arange(40) % 3
    got = channel_scores(ChannelGraph(model, example), x, y, [1], taylor_weight=0.7, seed=3)["net.1"]
    taylor = protected_taylor_scores(ChannelGraph(model, example), x, y, [1], seed=3)["net.1"]
    assert taylor.abs().sum() > 0
    magnitude = magnitude_scores(ChannelGraph(model, example))["net.1"]
    expected = normalised({"k": magnitude})["k"] + 0.7 * normalised({"k": taylor})["k"]
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-9), (got, expected)
    assert not torch.allclose(got, normalised({"k": magnitude})["k"])


def test_weight_scores_add_the_protected_taylor_term_only_when_class_aware():
    """--granularity weight --taylor-weight: the per-weight Taylor term ((theta * dCE_prot/dtheta)^2, normalised per
    layer) ran in no test."""
    from toolchain.config import PruneConfig
    from toolchain.prune.importance import normalised
    from toolchain.prune.weights import weight_scores

    model = _mlp().eval()
    prunable = {n: p for n, p in model.named_parameters() if p.dim() > 1}
    masks = {n: torch.ones_like(p) for n, p in prunable.items()}
    rng = np.random.default_rng(0)
    data = SimpleNamespace(x_train=rng.normal(size=(60, 5)).astype(np.float32), y_train=np.arange(60) % 3)  # < 512: every row
    cfg = PruneConfig(device="cpu", granularity="weight", taylor_weight=2.0)
    got = weight_scores(model, prunable, masks, data, [1], cfg, "cpu", seed=0)

    logits = model(torch.as_tensor(data.x_train))
    mask = torch.as_tensor(data.y_train == 1)
    torch.nn.functional.cross_entropy(logits[mask], torch.as_tensor(data.y_train)[mask]).backward()
    taylor = {n: (p.detach() * p.grad).pow(2) for n, p in prunable.items()}
    model.zero_grad(set_to_none=True)
    magnitude = normalised({n: p.detach().abs() for n, p in prunable.items()})
    taylor = normalised(taylor)
    for n in prunable:
        assert torch.allclose(got[n], magnitude[n] + 2.0 * taylor[n], rtol=1e-5, atol=1e-7), n
    plain = weight_scores(model, prunable, masks, data, [1], PruneConfig(device="cpu", granularity="weight", taylor_weight=2.0,
                                                                          class_aware=False), "cpu", seed=0)
    assert all(torch.equal(plain[n], prunable[n].detach().abs()) for n in prunable)


def test_a_plan_whose_smallest_rounded_model_is_over_the_target_is_left_unrounded():
    """plan_for_target's fallback (the smallest model rounded to --round-to is over the target: counts unrounded) ran in
    no test: the existing 'tiny' case still fits rounded."""
    from toolchain.models.profile import count_params
    from toolchain.prune.graph import ChannelGraph
    from toolchain.prune.importance import magnitude_scores
    from toolchain.prune.plan import plan_for_target, plan_from_scores
    from toolchain.prune.shrink import shrink

    torch.manual_seed(0)
    model = registry.create("mlp", in_features=64, num_classes=10, hidden=(32, 32)).eval()
    x = torch.zeros(1, 64)
    graph = ChannelGraph(model, x)
    scores = magnitude_scores(graph)
    smallest_rounded = count_params(shrink(model, plan_from_scores(graph.groups, scores, 0.99, round_to=8), x))
    target = smallest_rounded - 200
    small = shrink(model, plan_for_target(graph, scores, target, round_to=8), x)
    widths = [m.out_features for m in small.modules() if isinstance(m, torch.nn.Linear)][:-1]
    assert count_params(small) <= target < smallest_rounded
    assert any(w % 8 for w in widths), widths


# --------------------------------------------------------------------------- the rounds: --rewind init, --gamma-rule lagrange


def test_rewind_init_starts_the_rounds_from_fresh_weights(trained_digits, tmp_path, capsys):
    """--rewind init (the random-reinit control) ran in no test: with no retraining the ticket is the reinitialised
    model (seeded by --seed) cut to the survivors, none of the dense model's filters."""
    from toolchain.models.loading import load_model
    from toolchain.models.train import seed_everything
    from toolchain.prune.weights import reinitialised

    out = tmp_path / "r"
    code, _, err = run_cli(["compress", trained_digits[0], "--data", "digits", "-p", PROT, "--keep-params", "0.5", "--epochs", "0",
                            "--rewind", "init", "--skip-export", "--out", out], capsys)
    assert code in (0, 1), err  # 1: an untrained ticket misses the budget; the run and its model are whole
    assert json.loads((out / "report.json").read_text())["config"]["rewind"] == "init"
    dense = load_model(trained_digits[0]).module
    pruned = load_model(out / "pruned.pt").module
    seed_everything(0)
    fresh = reinitialised(dense)
    assert all(torch.equal(a, b) for a, b in zip(dense.state_dict().values(), trained_digits[1].state_dict().values()))

    def filters(m):
        return {tuple(torch.round(w.flatten() * 1e6).tolist()) for w in m.state_dict()["features.0.0.weight"]}

    kept = filters(pruned)
    assert 0 < len(kept) < 32
    assert kept <= filters(fresh) and not kept & filters(dense)


def test_the_lagrange_rule_steps_after_every_retraining_epoch(trained_digits, tmp_path, capsys, monkeypatch):
    """--gamma-rule lagrange: its multiplier step after each epoch of the rounds and of the final fine-tuning ran in no
    test (dual_step alone was checked)."""
    from toolchain.prune.lottery import LotteryPruner

    steps = []
    step = LotteryPruner.dual_step

    def counted(self, *args, **kwargs):
        steps.append(1)
        return step(self, *args, **kwargs)

    monkeypatch.setattr(LotteryPruner, "dual_step", counted)
    out = tmp_path / "l"
    code, _, err = run_cli(["compress", trained_digits[0], "--data", "digits", "-p", PROT, "--keep-params", "0.5", "--epochs", "2",
                            "--final-epochs", "1", "--gamma-rule", "lagrange", "--skip-export", "--out", out], capsys)
    assert code in (0, 1), err
    report = json.loads((out / "report.json").read_text())
    rounds = [s for s in report["stages"] if s["stage"] == "prune_round"]
    finals = [s for s in report["stages"] if s["stage"] == "final_finetune"]
    assert rounds and len(finals) == 1
    assert len(steps) == 2 * len(rounds) + 1


# --------------------------------------------------------------------------- compress: models and data it cannot start from


def test_compress_refuses_a_pruned_model_a_pickle_it_cannot_rebuild_and_validation_without_the_class(trained_digits, tmp_path, capsys,
                                                                                                        digits_dataset):
    from toolchain.models.loading import save_checkpoint
    from toolchain.prune.graph import ChannelGraph
    from toolchain.prune.shrink import shrink

    path, model = trained_digits
    example = torch.zeros(1, *digits_dataset.input_shape)
    plan = {ChannelGraph(copy.deepcopy(model), example).groups[0].key: [0, 1]}
    pruned = tmp_path / "pruned.pt"  # what a compress run leaves: a shrunk model, its checkpoint holding the channel plan
    save_checkpoint(pruned, shrink(copy.deepcopy(model), plan, example), "digits-cnn", {}, digits_dataset.input_shape, channel_plan=plan)
    code, _, err = run_cli(["compress", pruned, "--data", "digits", "-p", PROT, "--out", tmp_path / "a"], capsys)
    one_line_error(code, err, "is already a pruned cwtool model")

    whole = tmp_path / "whole.pt"
    torch.save(copy.deepcopy(model), whole)
    code, _, err = run_cli(["compress", whole, "--trust-model", "--data", "digits", "-p", PROT, "--out", tmp_path / "b"], capsys)
    one_line_error(code, err, "compress needs a model cwtool can rebuild")
    code, _, err = run_cli(["compress", whole, "--arch", "digits-cnn", "--arch-kwargs", '{"num_classes": 12}', "--data", "digits",
                            "-p", PROT, "--out", tmp_path / "c"], capsys)
    one_line_error(code, err, "the weights do not match --arch 'digits-cnn'", "classifier.weight")

    d = digits_dataset
    keep = d.y_val != PROT
    for name, x, y in (("train", d.x_train, d.y_train), ("val", d.x_val[keep], d.y_val[keep]), ("test", d.x_test, d.y_test)):
        np.savez(tmp_path / f"{name}.npz", x=x, y=y)
    code, _, err = run_cli(["compress", path, "--data", tmp_path / "train.npz", "--val", tmp_path / "val.npz", "--test",
                            tmp_path / "test.npz", "-p", PROT, "--out", tmp_path / "d"], capsys)
    one_line_error(code, err, f"the validation split has no samples of protected class {PROT}")
    assert not any((tmp_path / r).exists() for r in "abcd")


@pytest.mark.parametrize("flag, words", [
    (["--calibration-method", "median"], "--calibration-method 'median' is not minmax, entropy or percentile"),
    (["--time-runs", "-1"], "--time-runs -1: give 0 (no timing) to 100000"),
    (["--calibration-size", "0"], "--calibration-size must be at least 1"),
], ids=["calibration-method", "time-runs", "calibration-size"])
def test_export_settings_it_cannot_honour_exit_2_with_one_line(trained_digits, tmp_path, capsys, flag, words):
    code, _, err = run_cli(["export", trained_digits[0], "--data", "digits", "-p", PROT, "--out", tmp_path / "x", *flag], capsys)
    one_line_error(code, err, words)
    assert not (tmp_path / "x").exists()


def test_arch_kwargs_that_are_not_an_object_exit_2(trained_digits, capsys):
    code, _, err = run_cli(["evaluate", trained_digits[0], "--data", "digits", "-p", PROT, "--arch", "digits-cnn",
                            "--arch-kwargs", "[32]"], capsys)
    one_line_error(code, err, "--arch-kwargs must be a JSON object")


# --------------------------------------------------------------------------- the CLI's exits under --debug


def test_a_bug_says_one_line_and_exit_3_and_under_debug_its_traceback_too(evaluated, capsys, monkeypatch):
    """An internal error is exit 3 and one line; --debug adds the traceback and keeps the exit code (raise_as_bug's --debug
    branch ran in no test)."""
    import toolchain.verify

    def bug(request):
        raise RuntimeError("a bug of cwtool's own")

    monkeypatch.setattr(toolchain.verify, "run_verify", bug)
    argv = ["verify", evaluated["same"], "-d", "digits", "-p", PROT]
    code, _, err = run_cli(argv, capsys)
    assert code == 3 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert err.startswith("cwtool: internal error: RuntimeError: a bug of cwtool's own"), err
    for debug in (["--debug", *argv], [*argv, "--debug"]):  # a root option, taken after the command too
        code, _, err = run_cli(debug, capsys)
        assert code == 3 and "Traceback" in err and "in bug" in err, err
        assert err.strip().splitlines()[-1].startswith("cwtool: internal error: RuntimeError: a bug of cwtool's own"), err


def test_a_base_exception_from_code_cwtool_runs_is_bad_input_in_one_line(evaluated, capsys, monkeypatch):
    """A model's or a data loader's own BaseException (not an Exception, not a signal) is the input's doing: exit 2, one
    line naming it. The branch ran in no test."""
    import toolchain.verify

    class Halt(BaseException):
        pass

    def halt(request):
        raise Halt("the model stopped the interpreter")

    monkeypatch.setattr(toolchain.verify, "run_verify", halt)
    code, _, err = run_cli(["verify", evaluated["same"], "-d", "digits", "-p", PROT], capsys)
    one_line_error(code, err, "code cwtool ran (the model's or the data's) raised Halt: the model stopped the interpreter")
