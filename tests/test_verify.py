"""`cwtool verify`: artifacts in their runtime against a baseline; exit codes, outputs, statistics,
and the same numbers without torch/tensorflow/sklearn importable."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import textwrap
import warnings
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pytest

from toolchain.cli import main

PROT = 3
REPO = Path(__file__).resolve().parents[1]


def _export(model, x, path: Path) -> Path:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model.eval(), (x[:2],), str(path), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["logits"], dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return path


def _shifted(model, k: int, delta: float):
    """A copy whose class-k logit is moved by `delta` (the last layer's bias)."""
    import torch

    m = copy.deepcopy(model)
    with torch.no_grad():
        m[-1].bias[k] += delta
    return m


@pytest.fixture(scope="module")
def art(tmp_path_factory):
    """Tiny digits MLP: good / degraded / one-more-FN / collapsed ONNX files, test rows, baseline report."""
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    from toolchain.metrics import evaluate_logits

    d = tmp_path_factory.mktemp("verify")
    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, stratify=y, random_state=0)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for _ in range(150):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(xt), yt).backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(xte)).numpy()
    base = evaluate_logits(yte, logits, [PROT, 8], 10)
    base["predictions"] = logits.argmax(1).tolist()
    assert base["accuracy"] > 0.9

    # one more FN of class 3: shift its logit to between the two smallest margins of caught samples
    caught = (yte == PROT) & (logits.argmax(1) == PROT)
    others = np.delete(logits, PROT, axis=1).max(1)
    margins = np.sort((logits[:, PROT] - others)[caught])
    plus1 = _shifted(model, PROT, -(margins[0] + margins[1]) / 2)

    np.savez(d / "test.npz", x=xte, y=yte)
    report = {"schema_version": 1, "protected": [PROT, 8], "class_names": [str(i) for i in range(10)],
              "baseline": {"accuracy": base["accuracy"], "fn_per_class": base["fn_per_class"],
                           "protected": base["protected"], "test": base},
              "stages": [], "artifacts": [], "gate": {"passed": True}}
    (d / "report.json").write_text(json.dumps(report))
    xs = torch.from_numpy(xte)
    paths = {
        "good": _export(model, xs, d / "good.onnx"),
        "degraded": _export(_shifted(model, PROT, -8.0), xs, d / "degraded.onnx"),
        "plus1": _export(plus1, xs, d / "plus1.onnx"),
        "collapsed": _export(_shifted(model, 0, 1000.0), xs, d / "collapsed.onnx"),
    }
    return {"dir": d, "data": str(d / "test.npz"), "report": str(d / "report.json"), "base": base, "model": model,
            "x": xte, "y": yte, **{k: str(v) for k, v in paths.items()}}


def cli(argv, capsys):
    try:
        main(["verify", *map(str, argv)])
    except SystemExit as exc:
        code = exc.code
    else:  # main always exits
        code = "no exit"
    out = capsys.readouterr()
    return code, out.out, out.err


def run_json(art, capsys, artifacts, *extra, expect):
    out = art["dir"] / f"out-{os.getpid()}.json"
    out.unlink(missing_ok=True)
    code, stdout, err = cli([*artifacts, "--data", art["data"], "-p", PROT, "--json", out, *extra], capsys)
    assert code == expect, (code, stdout[-2000:], err)
    return json.loads(out.read_text())


# --------------------------------------------------------------------------- verdicts


def test_the_console_says_the_budget_the_verdict_held_to(art, capsys):
    """The budget was written only in --markdown: a user whose compress run allowed +2 saw pass/FAIL against +0 (a new
    user's finding)."""
    code, out, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"]], capsys)
    assert code == 0 and "budget: FN +0, accuracy -2 points (0.02), gate plain" in out, out


def test_good_artifact_passes_with_the_baselines_numbers(art, capsys):
    res = run_json(art, capsys, [art["good"]], "--baseline", art["report"], expect=0)
    a = res["artifacts"][0]
    assert a["format"] == "onnx" and a["precision"] == "fp32" and a["bytes"] == Path(art["good"]).stat().st_size
    assert a["runtime"].startswith("onnxruntime")
    ev, base = a["evaluation"], art["base"]
    assert ev["n"] == len(art["y"]) and ev["fn_per_class"] == base["fn_per_class"]
    assert ev["accuracy"] == pytest.approx(base["accuracy"])
    assert len(ev["predictions"]) == ev["n"] and a["agreement"] > 0.99
    chk = a["gate"]["checks"][0]
    assert chk["class"] == PROT and chk["fn_change"] == 0 and chk["mcnemar_p"] == 1.0
    assert res["gate"] == {**res["gate"], "passed": True, "reasons": [], "failed": []}
    assert res["baseline"]["from"] == "report.baseline.test" and res["data"]["split"] == "all"


def test_verify_states_the_fn_promise_of_each_artifact(art, capsys):
    """compress's promise, measured on verify's rows: the paired disagreements give its confidence."""
    from toolchain.promise import promise_confidence

    good = run_json(art, capsys, [art["good"]], "--baseline", art["report"], expect=0)["artifacts"][0]["promise"][str(PROT)]
    plus1 = run_json(art, capsys, [art["plus1"]], "--baseline", art["report"], "--max-fn-increase", "1", expect=0)["artifacts"][0]["promise"][str(PROT)]
    assert (good["b"], good["c"], good["budget"]) == (0, 0, 0) and good["confidence"] == promise_confidence(0, 0, good["n"])
    assert (plus1["b"], plus1["c"], plus1["budget"]) == (1, 0, 1) and plus1["confidence"] == promise_confidence(1, 0, plus1["n"], budget=1)
    assert good["fp"] == good["baseline_fp"]
    # a budget given as a share of the rows: the promise stated is the one the gate judged (it said budget 0)
    share = run_json(art, capsys, [art["plus1"]], "--baseline", art["report"], "--max-fnr-increase", "0.1", expect=0)["artifacts"][0]
    limit = share["gate"]["checks"][0]["limit"] - share["gate"]["checks"][0]["baseline_fn"]
    stated = share["promise"][str(PROT)]
    assert limit >= 2 and stated["budget"] == limit and stated["confidence"] == promise_confidence(1, 0, stated["n"], budget=limit)
    # the plain counts, said: report.md reads the same counts with its edge sample missed, lower (a new user compared
    # 0.963 here with 0.830 there)
    code, out, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--markdown",
                          art["dir"] / "v.md"], capsys)
    assert code == 0 and "none sits at its edge" in out and "reads lower on the same counts" in (art["dir"] / "v.md").read_text(), out


def test_degraded_artifact_fails_naming_the_class(art, capsys):
    res = run_json(art, capsys, [art["good"], art["degraded"]], "--baseline", art["report"], expect=1)
    good, bad = res["artifacts"]
    assert good["gate"]["passed"] and not bad["gate"]["passed"]
    assert res["gate"]["failed"] == [art["degraded"]]
    reason = res["gate"]["reasons"][0]
    assert reason.startswith("degraded.onnx: class 3: FN ") and "McNemar p=" in reason
    chk = bad["gate"]["checks"][0]
    assert chk["fn_change"] > 10 and chk["mcnemar_p"] < 1e-3 and chk["c"] == 0
    assert chk["fn_change_ci95"][0] > 0
    code, out, _ = cli([art["good"], art["degraded"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--quiet"], capsys)
    lines = out.strip().splitlines()  # --quiet: no table, but a failed gate is never silent
    assert code == 1 and lines[-1] == "gate: failed" and lines[0].startswith("FAIL degraded.onnx: class 3: FN "), out
    assert "artifact" not in out


def test_a_file_of_a_run_that_failed_its_gate_fails_and_is_said_so_even_quiet(art, capsys, tmp_path):
    """verify against the report.json of a run whose gate failed (it recommended no file) said "gate: passed" and
    nothing else, and a CI went green on a file compress had not recommended (a new user's finding); then "gate: passed,
    against a compress run that did NOT keep its FN promise", exit 0, and a CI still shipped it (a sign-off reviewer's)."""
    report = json.loads(Path(art["report"]).read_text())
    report["gate"] = {"passed": False, "reasons": ["no ticket keeps the FN promise"]}
    report["promise"] = {"met_on_val": False}
    failed = tmp_path / "report.json"
    failed.write_text(json.dumps(report))
    code, out, _ = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", failed, "--quiet", "--markdown",
                        tmp_path / "v.md"], capsys)
    lines = out.strip().splitlines()
    assert code == 1 and lines[-1].startswith("gate: failed, against a compress run that did NOT keep its FN promise"), out
    assert lines[0].startswith("FAIL good.onnx: the baseline's compress run did not keep its FN promise on validation and "
                               "recommended no file to deploy: no file passes against it"), out
    # the Markdown's headline too: it had said "PASSED", the run's verdict left to the notes at its end
    assert (tmp_path / "v.md").read_text().startswith("## \u274c cwtool verify: FAILED, against a compress run that did NOT keep its FN "
                                                     "promise (it recommended no file)")
    # an export.json of such a run's pruned.pt, as the baseline: the same (it had said nothing)
    exported = {"kind": "cwtool-export", "baseline": {"source": "the torch model itself", "test": report["baseline"]["test"]},
                "protected": report["protected"], "compress_run": {"budget_met": False, "binds": "fn_promise"}}
    (tmp_path / "export.json").write_text(json.dumps(exported))
    code, out, _ = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", tmp_path / "export.json", "--quiet"], capsys)
    assert code == 1 and out.strip().splitlines()[-1].startswith("gate: failed, against a compress run that did NOT keep its FN promise"), out
    res = run_json(art, capsys, [art["good"]], "--baseline", failed, expect=1)
    assert res["baseline"]["run_failed"] is True and "did not keep its FN promise" in res["gate"]["reasons"][0], res["gate"]
    assert not any("--max-fn-increase" in n for n in res["notes"]), res["notes"]  # no budget turns it
    checks = res["artifacts"][0]["gate"]["checks"]
    assert all(c["passed"] for c in checks) and not res["artifacts"][0]["gate"]["passed"]  # its numbers are within budget
    junit = tmp_path / "v.xml"
    cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", failed, "--quiet", "--junit", junit], capsys)
    assert 'type="FailedCompressRun"' in junit.read_text()
    chained = tmp_path / "verify.json"  # a verify JSON of that run as the next baseline: the note followed only report.json
    chained.write_text(json.dumps(res))
    again = run_json(art, capsys, [art["good"]], "--baseline", chained, expect=1)
    assert again["baseline"]["run_failed"] is True and "did not keep its FN promise" in again["gate"]["reasons"][0], again["gate"]
    res = run_json(art, capsys, [art["good"]], "--baseline", art["report"], expect=0)  # a passed run: nothing said
    assert res["baseline"]["run_failed"] is False and not any("did not keep its FN promise" in n for n in res["notes"])
    report["promise"] = {"met_on_val": False, "binds": "accuracy"}  # the promise held; accuracy stopped the run
    failed.write_text(json.dumps(report))
    code, out, _ = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", failed, "--quiet"], capsys)
    assert code == 1 and out.strip().splitlines()[-1].startswith("gate: failed, against a compress run that did NOT stay within its accuracy budget"), out
    res = run_json(art, capsys, [art["good"]], "--baseline", failed, expect=1)
    assert "did not stay within its accuracy budget on validation" in res["gate"]["reasons"][0], res["gate"]
    assert not any("FN promise" in r for r in res["gate"]["reasons"]) and res["baseline"]["run_binds"] == "accuracy"
    chained.write_text(json.dumps(res))
    assert run_json(art, capsys, [art["good"]], "--baseline", chained, expect=1)["baseline"].get("run_binds") == "accuracy"
    report["promise"] = {"met_on_val": True}  # a failed gate alone (an int8 file): its other files are still recommended
    failed.write_text(json.dumps(report))
    assert run_json(art, capsys, [art["good"]], "--baseline", failed, expect=0)["baseline"]["run_failed"] is False


def test_a_report_whose_promise_an_older_rule_judged_is_said_so(art, capsys, tmp_path):
    """A report.json written before the edge rule (the hardest positive caught counted as missed) says its promise was
    kept where this cwtool's rule may say not (0.964 then, 0.831 now for a reviewer's run): verify said nothing of it."""
    report = json.loads(Path(art["report"]).read_text())
    judged = {"n": 30, "fn": 0, "dense_fn": 0, "b": 0, "c": 0, "budget": 2, "b_judged": 1, "c_judged": 0}  # as written now
    report["promise"] = {"met_on_val": True, "classes": {str(PROT): dict(judged), "8": dict(judged)}}
    older = tmp_path / "report.json"
    older.write_text(json.dumps(report))
    assert "run_promise_older_rule" not in run_json(art, capsys, [art["good"]], "--baseline", older, expect=0)["baseline"]
    del report["promise"]["classes"]["8"]["b_judged"], report["promise"]["classes"]["8"]["c_judged"]
    older.write_text(json.dumps(report))
    res = run_json(art, capsys, [art["good"]], "--baseline", older, expect=0)
    said = [n for n in res["notes"] if "by an older cwtool's rule" in n]
    assert res["baseline"]["run_promise_older_rule"] is True and len(said) == 1 and "run compress with this cwtool" in said[0]
    chained = tmp_path / "verify.json"  # a verify JSON of it as the next baseline says it too
    chained.write_text(json.dumps(res))
    assert run_json(art, capsys, [art["good"]], "--baseline", chained, expect=0)["baseline"]["run_promise_older_rule"] is True


def test_collapsed_artifact_fails_with_a_collapse_reason(art, capsys):
    res = run_json(art, capsys, [art["collapsed"]], "--baseline", art["report"], expect=1)
    assert any("collapse: class 0 takes 100.0%" in r for r in res["gate"]["reasons"])
    # without a baseline collapse still fails, and a good artifact just reports
    res = run_json(art, capsys, [art["collapsed"]], expect=1)
    assert [r for r in res["gate"]["reasons"] if "collapse" in r] and res["baseline"] is None
    res = run_json(art, capsys, [art["good"]], expect=0)
    assert "baseline_fn" not in res["artifacts"][0]["gate"]["checks"][0]


def test_a_verdict_without_a_baseline_says_nothing_of_one(art, capsys):
    code, out, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--max-fnr", "0.5", "-q"], capsys)
    res = run_json(art, capsys, [art["good"]], "--max-fnr", "0.5", expect=0)
    check = res["artifacts"][0]["gate"]["checks"][0]
    # --quiet's one line carries the absolute misses beside the verdict (a device engineer read "passed" alone)
    assert code == 0 and out.strip().splitlines()[-1] == f"gate: passed; missed: class {PROT} {check['fn']} of {check['support']}", out + err
    code, out, err = cli([art["good"], art["degraded"], "--data", art["data"], "-p", PROT, "--max-fnr", "0.9", "-q"], capsys)
    worst = max(c["fn"] for a in run_json(art, capsys, [art["good"], art["degraded"]], "--max-fnr", "0.9", expect=code)["artifacts"]
                for c in a["gate"]["checks"])
    assert code == 0 and out.strip().splitlines()[-1].endswith(f"; missed (the most of any file): class {PROT} {worst} of {check['support']}"), out


def test_absolute_ceiling_without_baseline(art, capsys):
    fnr = art["base"]["protected"][0]["fnr"]
    res = run_json(art, capsys, [art["degraded"]], "--max-fnr", "0.2", expect=1)
    assert "class 3: FNR" in res["gate"]["reasons"][0] and "ceiling 0.2" in res["gate"]["reasons"][0]
    run_json(art, capsys, [art["good"]], "--max-fnr", f"{fnr + 0.001}", expect=0)


def test_significant_gate_passes_one_more_fn_that_plain_fails(art, capsys):
    res = run_json(art, capsys, [art["plus1"]], "--baseline", art["report"], expect=1)
    chk = res["artifacts"][0]["gate"]["checks"][0]
    assert (chk["fn_change"], chk["b"], chk["c"], chk["mcnemar_p"]) == (1, 1, 0, 1.0)
    res = run_json(art, capsys, [art["plus1"]], "--baseline", art["report"], "--gate", "significant", expect=0)
    assert res["gate"]["mode"] == "significant" and res["artifacts"][0]["gate"]["checks"][0]["over_budget"]
    run_json(art, capsys, [art["degraded"]], "--baseline", art["report"], "--gate", "significant", expect=1)


def test_budgets(art, capsys):
    run_json(art, capsys, [art["plus1"]], "--baseline", art["report"], "--max-fn-increase", "1", expect=0)
    support = art["base"]["protected"][0]["support"]
    run_json(art, capsys, [art["plus1"]], "--baseline", art["report"], "--max-fnr-increase", f"{1.0 / support}", expect=0)
    run_json(art, capsys, [art["plus1"]], "--baseline", art["report"], "--max-fnr-increase", f"{0.9 / support}", expect=1)
    res = run_json(art, capsys, [art["good"]], "--baseline", art["report"], "--max-accuracy-drop", "0", expect=0)
    assert res["gate"]["budget"]["max_accuracy_drop"] == 0
    res = run_json(art, capsys, [art["degraded"]], "--baseline", art["report"], "--max-fn-increase", "99",
                   "--max-accuracy-drop", "0.01", expect=1)
    assert [r for r in res["gate"]["reasons"] if r.startswith("degraded.onnx: accuracy")]


def test_verify_json_is_a_baseline_too(art, capsys):
    first = art["dir"] / "first.json"
    code, _, _ = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--json", first, "-q"], capsys)
    assert code == 0
    res = run_json(art, capsys, [art["plus1"]], "--baseline", first, expect=1)
    assert res["baseline"]["from"] == "verify.baseline"
    assert res["baseline"]["evaluation"]["fn_per_class"] == art["base"]["fn_per_class"]
    plain = art["dir"] / "nobase.json"
    assert cli([art["plus1"], "--data", art["data"], "-p", PROT, "--json", plain, "-q"], capsys)[0] == 0
    res = run_json(art, capsys, [art["plus1"]], "--baseline", plain, expect=0)  # compared with itself
    assert res["baseline"]["from"].startswith("verify.artifacts[0]")
    assert res["artifacts"][0]["gate"]["checks"][0]["mcnemar_p"] == 1.0

    forged = json.loads(plain.read_text())  # a path in the baseline file cannot start a line of the Markdown summary
    forged["artifacts"][0]["path"] = "x\ngate: passed\n\x1b[2J"
    (art["dir"] / "forged.json").write_text(json.dumps(forged))
    md = art["dir"] / "forged.md"
    code, _, _ = cli([art["plus1"], "--data", art["data"], "-p", PROT, "--baseline", art["dir"] / "forged.json", "--markdown", md, "-q"], capsys)
    assert code == 0 and "\x1b" not in md.read_text()
    assert not any(line.startswith("gate: passed") for line in md.read_text().splitlines())


def test_rows_in_another_order_are_other_rows(art, capsys):
    """Same class counts, other order: not the baseline's rows. Refused, unless --allow-other-data asks
    for an unpaired comparison, which every output then states."""
    perm = np.random.default_rng(0).permutation(len(art["y"]))
    shuffled = art["dir"] / "shuffled.npz"
    np.savez(shuffled, x=art["x"][perm], y=art["y"][perm])
    out = art["dir"] / "shuffled.json"
    code, _, err = cli([art["plus1"], "--data", shuffled, "-p", PROT, "--baseline", art["report"], "--json", out, "-q"], capsys)
    assert code == 2 and "--allow-other-data" in err and not out.exists(), err
    assert len(err.strip().splitlines()) == 1 and "in another order" in err, err  # one line, and what may be the cause
    md, xml = art["dir"] / "shuffled.md", art["dir"] / "shuffled.xml"
    code, said, _ = cli([art["plus1"], "--data", shuffled, "-p", PROT, "--baseline", art["report"], "--json", out, "-q",
                         "--allow-other-data", "--markdown", md, "--junit", xml], capsys)
    assert "other rows" in md.read_text() and "--allow-other-data" in xml.read_text()
    assert "against a baseline of other rows (unpaired)" in said  # --quiet's one line says it too
    res = json.loads(out.read_text())
    chk = res["artifacts"][0]["gate"]["checks"][0]
    assert code == 1 and chk["fn_change"] is None and "mcnemar_p" not in chk  # FN rate over the baseline's: unpaired
    assert res["data"]["same_rows_as_baseline"] is False and res["gate"]["budget"]["same_rows"] is False
    assert any("--allow-other-data" in n and "unpaired" in n for n in res["notes"])
    # chained as the next baseline on the report's own rows: its predictions are kept (they were dropped, and refused)
    assert res["baseline"]["paired"] is False and len(res["baseline"]["evaluation"]["predictions"]) == len(art["y"])
    code, _, err = cli([art["plus1"], "--data", art["data"], "-p", PROT, "--baseline", out, "-q"], capsys)
    assert code in (0, 1) and "no per-sample predictions" not in err, err


def test_pool_npz_uses_the_test_split_the_baseline_was_measured_on(art, capsys, tmp_path):
    """compress --data pool.npz measures the baseline on the seeded test split; verify finds it by its row count."""
    import torch

    from toolchain.data import load_data
    from toolchain.metrics import evaluate_logits
    from toolchain.provenance import rows_sha256

    pool = tmp_path / "pool.npz"
    np.savez(pool, x=np.concatenate([art["x"]] * 3), y=np.concatenate([art["y"]] * 3))
    xt, yt = load_data(str(pool), seed=0).split("test")
    with torch.no_grad():
        logits = art["model"](torch.from_numpy(xt)).numpy()
    ev = evaluate_logits(yt, logits, [PROT], 10)
    ev["predictions"] = logits.argmax(1).tolist()
    ev["rows_sha256"] = rows_sha256(xt, yt)  # what compress stores: these rows, exactly
    (tmp_path / "r.json").write_text(json.dumps({"protected": [PROT], "baseline": {"test": ev},
                                                 "data": {"name": "pool", "seed": 0, "given_splits": False}}))
    out = tmp_path / "o.json"
    code, _, err = cli([art["good"], "--data", pool, "-p", PROT, "--baseline", tmp_path / "r.json", "--json", out, "-q"], capsys)
    res = json.loads(out.read_text())
    assert code == 0 and res["data"]["split"] == "test" and res["data"]["n"] == len(yt) < 3 * len(art["y"])
    assert res["artifacts"][0]["gate"]["checks"][0]["mcnemar_p"] == 1.0
    few = [n for n in res["notes"] if n.startswith("the promise's probabilities rest on fewer than 60 samples of a class here")]
    assert len(few) == len(res["notes"]) == 1 and "(class 3: " in few[0], res["notes"]  # the test split's threes: said
    # another --seed: other rows, refused naming both splits (the seed was the difference, and was not said)
    code, _, err = cli([art["good"], "--data", pool, "-p", PROT, "--baseline", tmp_path / "r.json", "--seed", "1", "-q"], capsys)
    assert code == 2 and "the baseline's: the test split of pool, split seed 0; these: the test split of " in err, err
    assert "split seed 1:" in err, err
    # the same rows scaled another way (x / 255 against x * (1 / 255)): the last bit differs, and the refusal says why
    np.savez(tmp_path / "nudged.npz", x=np.nextafter(np.asarray(xt, np.float32), np.float32(2)), y=yt)
    code, _, err = cli([art["good"], "--data", tmp_path / "nudged.npz", "-p", PROT, "--baseline", tmp_path / "r.json", "-q"], capsys)
    assert code == 2 and "as many rows of each class as the baseline's" in err and "last bit" in err, err
    assert len(err.strip().splitlines()) == 1


def test_an_npz_of_other_rows_is_judged_whole_not_on_a_split_of_it(art, capsys, tmp_path):
    """An x/y .npz whose row count is not the baseline's was judged on its seeded 15% test split (30 of 200 rows) with no
    word but the rows line, and a one-row file was refused as too small to split (a device reviewer's finding). Only a
    file whose seeded test split has the baseline's row count is split; any other is every row, as the docs say."""
    sub, one = tmp_path / "sub.npz", tmp_path / "one.npz"
    np.savez(sub, x=art["x"][:200], y=art["y"][:200])
    first = int(np.flatnonzero(art["y"] == PROT)[0])
    np.savez(one, x=art["x"][first:first + 1], y=art["y"][first:first + 1])
    for rows, n in ((sub, 200), (one, 1)):
        out = tmp_path / "o.json"
        code, _, err = cli([art["good"], "--data", rows, "-p", PROT, "--baseline", art["report"], "--allow-other-data",
                            "--json", out, "-q"], capsys)
        res = json.loads(out.read_text())
        assert code in (0, 1) and res["data"]["split"] == "all" and res["data"]["n"] == n, err
        assert not any("preprocessed otherwise" in note or "prepared otherwise" in note for note in res["notes"]), res["notes"]
    # without --allow-other-data: other rows, said as such (not as rows "preprocessed otherwise": an .npz holds prepared rows)
    code, _, err = cli([art["good"], "--data", sub, "-p", PROT, "--baseline", art["report"], "-q"], capsys)
    assert code == 2 and "540 rows there, 200 here" in err and "preprocessed otherwise" not in err, err


def test_save_rows_writes_the_rows_judged_for_a_device(art, capsys, tmp_path):
    """A device with numpy and one runtime cannot load a named set (digits needs scikit-learn) or prepare a folder as the
    workstation did: --save-rows writes the rows judged, and verify --data on that file judges the very same rows (the
    same hash: paired with the baseline). An input is never replaced by it (a device reviewer's finding)."""
    saved, out1, out2 = tmp_path / "eval.npz", tmp_path / "a.json", tmp_path / "b.json"
    code, _, err = cli([art["plus1"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--split", "all",
                        "--json", out1, "--save-rows", saved, "-q"], capsys)
    assert code == 1, err
    assert f"rows saved: {saved} ({len(art['y']):,} rows, the same sha256)" in " ".join(err.split()), err  # said, not silent
    with np.load(saved) as rows:
        assert rows["x"].dtype == np.float32 and np.array_equal(rows["x"], art["x"]) and np.array_equal(rows["y"], art["y"])
        assert list(rows["class_names"]) == [str(i) for i in range(10)]
    code, _, err = cli([art["plus1"], "--data", saved, "-p", PROT, "--baseline", art["report"], "--json", out2, "-q"], capsys)
    first, again = json.loads(out1.read_text()), json.loads(out2.read_text())
    assert code == 1 and again["data"]["rows_sha256"] == first["data"]["rows_sha256"], err
    assert again["artifacts"][0]["gate"]["checks"] == first["artifacts"][0]["gate"]["checks"]
    before = Path(art["report"]).read_bytes()
    for target, match in ((art["report"], "--save-rows"), (tmp_path / "rows.txt", "must end in .npz")):
        code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--save-rows", target],
                           capsys)
        assert code == 2 and match in err, err
    assert Path(art["report"]).read_bytes() == before and not (tmp_path / "rows.txt").exists()
    # a run that judges nothing removes the rows an earlier run saved there (a device would copy them as this run's), but
    # never the data itself named as --save-rows
    code, _, err = cli([art["good"], "--data", art["data"], "-p", "99", "--save-rows", saved], capsys)
    assert code == 2 and not saved.exists(), err
    data_before = Path(art["data"]).read_bytes()
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--save-rows", art["data"]], capsys)
    assert code == 2 and Path(art["data"]).read_bytes() == data_before, err
    # a user's own x/y rows (verify's keys, not verify's file), not an input of this run: a failed run deleted them, and a
    # passing one replaced them
    mine = tmp_path / "mine.npz"
    np.savez(mine, x=art["x"][:50], y=art["y"][:50])
    kept = mine.read_bytes()
    for protect in ("99", PROT):
        code, _, err = cli([art["good"], "--data", art["data"], "-p", protect, "--save-rows", mine, "-q"], capsys)
        assert code == 2 and mine.read_bytes() == kept, err
    assert "--save-rows" in err and "holds a file not marked as verify's own" in err, err
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--save-rows", saved, "-q"], capsys)
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--save-rows", saved, "-q"], capsys)  # its own: replaced
    assert code == 0 and saved.is_file(), err


def test_an_output_that_cannot_be_written_leaves_the_others_and_no_earlier_run_s(art, capsys, tmp_path, monkeypatch):
    """A full disk while --save-rows was written printed "gate: passed" and exited 2 with the reports unwritten: the
    earlier run's JUnit and JSON stood beside it as this run's. Now the other outputs are written, what an earlier run
    left at the failed path is removed, and the error says the verdict was made."""
    import errno

    import toolchain.io as io_module

    saved, out, junit = tmp_path / "rows.npz", tmp_path / "v.json", tmp_path / "v.xml"
    argv = [art["degraded"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--json", out, "--junit", junit,
            "--save-rows", saved, "-q"]
    code, _, err = cli(argv, capsys)
    assert code == 1 and saved.is_file() and json.loads(out.read_text())["gate"]["passed"] is False, err

    def full_disk(path, arrays):
        raise io_module.cannot_write(Path(path), OSError(errno.ENOSPC, "No space left on device"))

    monkeypatch.setattr(io_module, "atomic_write_npz", full_disk)
    argv[0] = art["good"]
    code, _, err = cli(argv, capsys)
    line = " ".join(err.split())
    assert code == 2 and "No space left on device" in line and "the verdict above was made; 2 of its 3 outputs written" in line, err
    assert not saved.exists(), "the rows of the earlier run stood as this run's"
    assert json.loads(out.read_text())["gate"]["passed"] is True and 'failures="0"' in junit.read_text()


def test_a_verify_json_made_on_other_rows_names_its_baseline_s_rows_when_chained(art, capsys, tmp_path):
    """A verify JSON made with --allow-other-data, given as the next baseline on the same rows, was refused as 'the
    baseline's: every row of sub.npz ... these: every row of sub.npz', the same words twice (a device reviewer's
    finding): its baseline's evaluation is the report's rows, not the ones that verify judged."""
    sub, first = tmp_path / "sub.npz", tmp_path / "first.json"
    np.savez(sub, x=art["x"][:200], y=art["y"][:200])
    code, _, err = cli([art["good"], "--data", sub, "--split", "all", "-p", PROT, "--baseline", art["report"],
                        "--allow-other-data", "--json", first, "-q"], capsys)
    assert code in (0, 1), err
    code, _, err = cli([art["good"], "--data", sub, "--split", "all", "-p", PROT, "--baseline", first, "-q"], capsys)
    assert code == 2 and "the rows of that verify's own baseline, not the rows it judged" in err, err


def test_an_empty_report_path_says_it_is_empty(art, capsys, tmp_path, monkeypatch):
    """`--markdown "$GITHUB_STEP_SUMMARY"` run outside GitHub gives an empty path, which read as "'.' is a folder"."""
    monkeypatch.chdir(tmp_path)
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--markdown", ""], capsys)
    assert code == 2 and "an empty value, such as an unset $GITHUB_STEP_SUMMARY" in err, err


# --------------------------------------------------------------------------- outputs


def test_json_markdown_junit_and_table(art, capsys, tmp_path):
    j, md, xml = tmp_path / "v.json", tmp_path / "sub" / "v.md", tmp_path / "v.xml"
    code, stdout, _ = cli([art["good"], art["degraded"], "--data", art["data"], "-p", "3", "-p", "8", "--max-accuracy-drop", "1",
                           "--baseline", art["report"], "--json", j, "--markdown", md, "--junit", xml], capsys)
    assert code == 1
    assert "degraded.onnx" in stdout and "FAIL" in stdout and "gate: failed" in stdout
    assert re.search(r"cwtool verify: \S+ \[all, \d+ rows\]", stdout), stdout  # brackets are text, not markup
    rows = [line for line in stdout.splitlines() if "degraded.onnx" in line and "│" in line]
    assert len(rows) == 2 and "FAIL" in rows[0] and "pass" in rows[1], stdout  # piped: one table line per class (-p 3 -p 8), not folded into 80 columns
    res = json.loads(j.read_text())
    assert set(res) >= {"schema_version", "kind", "protected", "class_names", "data", "baseline", "artifacts", "gate"}
    assert res["protected"] == [3, 8]
    for a in res["artifacts"]:
        assert set(a) >= {"path", "format", "precision", "bytes", "runtime", "evaluation", "agreement", "gate"}
        assert [c["class"] for c in a["gate"]["checks"]] == [3, 8]
    assert set(res["gate"]) >= {"passed", "budget", "reasons"} and res["gate"]["passed"] is False

    root = ET.parse(xml).getroot()
    cases = root.findall(".//testcase")
    assert len(cases) == 4 and root.get("tests") == "4"
    failed = [c for c in cases if c.find("failure") is not None]
    assert len(failed) == 1 and root.get("failures") == "1"
    assert failed[0].get("classname") == "cwtool.verify.degraded.onnx" and failed[0].get("name") == "class 3 false negatives"
    assert "class 3: FN" in failed[0].find("failure").get("message")

    text = md.read_text()
    assert text.startswith("## \u274c cwtool verify: FAILED")
    table = [line for line in text.splitlines() if line.startswith("|")]
    assert len(table) == 2 + 4 and all(line.count("|") == table[0].count("|") for line in table)
    assert "**FAIL**" in text and "degraded.onnx: class 3: FN" in text
    # an interval conditional on the samples that differ was a point where none does: it read as certainty
    assert "[+0.0, +0.0]" not in text, text


def test_accuracy_budget_defaults_to_compress_s(art, capsys, tmp_path):
    """With a baseline, verify applies compress's 2-point accuracy budget unless told otherwise."""
    j = tmp_path / "a.json"
    code, _, _ = cli([art["degraded"], "--data", art["data"], "-p", "8", "--baseline", art["report"], "--json", j, "-q"], capsys)
    res = json.loads(j.read_text())
    assert code == 1 and res["gate"]["budget"]["max_accuracy_drop"] == 0.02
    assert any("accuracy" in r for r in res["gate"]["reasons"])
    code, _, _ = cli([art["degraded"], "--data", art["data"], "-p", "8", "--baseline", art["report"], "--max-accuracy-drop", "0.2", "-q"], capsys)
    assert code == 0
    xml = tmp_path / "a.xml"  # class 8's case fails on the file's accuracy, not on its own FN: typed so
    code, _, _ = cli([art["degraded"], "--data", art["data"], "-p", "8", "--baseline", art["report"], "--junit", xml, "-q"], capsys)
    failure = ET.parse(xml).getroot().find(".//testcase/failure")
    assert code == 1 and failure.get("type") == "AccuracyDrop" and failure.get("message").startswith("accuracy")


def test_collapse_fails_every_junit_case_of_that_artifact(art, capsys, tmp_path):
    xml = tmp_path / "c.xml"
    code, _, _ = cli([art["collapsed"], "--data", art["data"], "-p", "8", "--junit", xml, "-q"], capsys)
    assert code == 1
    case = ET.parse(xml).getroot().find(".//testcase")
    assert case.find("failure").get("type") == "ClassCollapse" and "collapse" in case.find("failure").get("message")


# --------------------------------------------------------------------------- bad input


def _bad_files(art) -> dict:
    d = art["dir"]
    (d / "corrupt.onnx").write_bytes(b"this is not a protobuf" * 10)
    np.savez(d / "wide.npz", x=np.zeros((20, 1, 4, 4), np.float32), y=np.arange(20) % 10)
    y = art["y"].copy()
    y[0] = 12
    np.savez(d / "labels12.npz", x=art["x"], y=y)
    np.savez(d / "fewer.npz", x=art["x"][:100], y=art["y"][:100])
    (d / "broken.json").write_text("{not json")
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    keep = art["y"] != PROT
    np.savez(d / "noprot.npz", x=art["x"][keep], y=art["y"][keep])
    five = art["y"] < 5
    np.savez(d / "named5.npz", x=art["x"][five], y=art["y"][five], class_names=np.array(list("abcde")))
    import torch

    wide = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 1000))
    _export(wide, torch.from_numpy(art["x"][:2]), d / "wide_out.onnx")
    files = {"wide_out": str(d / "wide_out.onnx"), "corrupt": str(d / "corrupt.onnx"), "wide": str(d / "wide.npz"), "labels12": str(d / "labels12.npz"),
             "fewer": str(d / "fewer.npz"), "broken": str(d / "broken.json"), "deep": str(d / "deep.json"),
             "noprot": str(d / "noprot.npz"), "named5": str(d / "named5.npz")}
    report = json.loads(Path(art["report"]).read_text())
    for name, (key, value) in MALFORMED.items():
        bad = copy.deepcopy(report)
        target = bad["baseline"]["test"]
        *path, last = key.split(".")
        for part in path:
            target = target[int(part)] if part.isdigit() else target[part]
        target[last] = value
        (d / f"{name}.json").write_text(json.dumps(bad))
        files[name] = str(d / f"{name}.json")
    return files


# A baseline is a file from elsewhere: every field the gate reads, of the wrong type or size.
MALFORMED = {
    "n is text": ("n", "540"),
    "n is negative": ("n", -1),
    "accuracy is text": ("accuracy", "high"),
    "accuracy above 1": ("accuracy", 7.5),
    "accuracy an integer beyond any float": ("accuracy", 10**400),
    "fn_per_class of text": ("fn_per_class", ["1"] * 10),
    "protected class is text": ("protected.0.class", "3"),
    "protected fn is a list": ("protected.0.fn", [1]),
    "protected fn above support": ("protected.0.fn", 10**9),
    "confusion not square": ("confusion", [[1, 2]]),
    "predictions of text": ("predictions", ["3"] * 540),
    "predictions too short": ("predictions", [3]),
    "rows_sha256 a number": ("rows_sha256", 12),
    "protected not a list": ("protected", {"class": 3}),
}


BAD = {
    "missing artifact": (lambda a, b: [a["dir"] / "nope.onnx", "--data", a["data"], "-p", PROT], "does not exist"),
    "corrupt artifact": (lambda a, b: [b["corrupt"], "--data", a["data"], "-p", PROT], "cannot load ONNX"),
    "shape mismatch": (lambda a, b: [a["good"], "--data", b["wide"], "-p", PROT], "expects"),
    "labels outside outputs": (lambda a, b: [a["good"], "--data", b["labels12"], "-p", PROT], "label 12"),
    "baseline for other classes": (lambda a, b: [a["good"], "--data", a["data"], "-p", 5, "--baseline", a["report"]], "not 5"),
    "baseline on other rows": (lambda a, b: [a["good"], "--data", b["fewer"], "-p", PROT, "--baseline", a["report"]], "rows"),
    "both budgets": (lambda a, b: [a["good"], "--data", a["data"], "-p", PROT, "--baseline", a["report"],
                                   "--max-fn-increase", 1, "--max-fnr-increase", 0.1], "not both"),
    "budget without baseline": (lambda a, b: [a["good"], "--data", a["data"], "-p", PROT, "--max-fn-increase", 1], "--baseline"),
    "corrupt baseline": (lambda a, b: [a["good"], "--data", a["data"], "-p", PROT, "--baseline", b["broken"]], "JSON"),
    "unknown gate": (lambda a, b: [a["good"], "--data", a["data"], "-p", PROT, "--gate", "lenient"], "--gate"),
    "unknown class name": (lambda a, b: [a["good"], "--data", a["data"], "-p", "cat"], "cat"),
    "no row of the protected class": (lambda a, b: [a["good"], "--data", b["noprot"], "-p", PROT, "--max-fnr", 0], "no row of protected class"),
    "artifact for other classes": (lambda a, b: [a["good"], "--data", b["named5"], "-p", 1], "has 10 outputs but the data names 5 classes"),
    "artifact far wider than the labels": (lambda a, b: [b["wide_out"], "--data", a["data"], "-p", 1], "has 1,000 outputs"),
    "baseline nested too deep": (lambda a, b: [a["good"], "--data", a["data"], "-p", PROT, "--baseline", b["deep"]], "JSON"),
    "other rows against a baseline": (lambda a, b: [a["good"], "--data", b["fewer"], "-p", PROT, "--baseline", a["report"],
                                                    "--max-fnr", 0.5], "--allow-other-data"),
    "allow-other-data without a baseline": (lambda a, b: [a["good"], "--data", a["data"], "-p", PROT, "--allow-other-data"], "--baseline"),
    **{f"baseline: {name}": ((lambda name: lambda a, b: [a["good"], "--data", a["data"], "-p", PROT, "--baseline", b[name]])(name),
                             "malformed") for name in MALFORMED},
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_2_with_one_line_and_writes_nothing(art, capsys, tmp_path, case):
    make, needle = BAD[case]
    outs = [tmp_path / "o.json", tmp_path / "o.md", tmp_path / "o.xml"]
    argv = [*make(art, _bad_files(art)), "--json", outs[0], "--markdown", outs[1], "--junit", outs[2]]
    code, _, err = cli(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cwtool: error: ") and needle in lines[0], err
    assert not any(p.exists() for p in outs) and list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the device: no torch


BLOCKER = textwrap.dedent(
    """
    import sys
    BLOCKED = ("torch", "tensorflow", "sklearn", "scipy")
    class Blocker:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is blocked: not installed on the device")
            return None
    sys.meta_path.insert(0, Blocker())
    from toolchain.cli import main
    try:
        main(sys.argv[1:])
    finally:
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
        if loaded:
            print("heavy modules imported:", loaded, file=sys.stderr)
            sys.exit(97)
    """
)


def _numbers(res: dict) -> list:
    return [(a["evaluation"]["fn_per_class"], a["evaluation"]["confusion"], a["evaluation"]["predictions"],
             a["evaluation"]["accuracy"], a["evaluation"]["protected"], a["gate"]["checks"], a["gate"]["passed"])
            for a in res["artifacts"]]


def test_same_numbers_without_torch_tensorflow_sklearn(art, capsys, tmp_path):
    argv = [art["good"], art["plus1"], "--data", art["data"], "-p", PROT, "-p", 8, "--baseline", art["report"], "-q"]
    here = tmp_path / "here.json"
    assert cli([*argv, "--json", here], capsys)[0] == 1
    there = tmp_path / "there.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", BLOCKER, "verify", *map(str, argv), "--json", str(there)],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and there.is_file(), proc.stderr[-3000:]
    assert _numbers(json.loads(there.read_text())) == _numbers(json.loads(here.read_text()))


def test_usage_error_exits_2(art, capsys):
    code, _, err = cli([art["good"], "-p", PROT], capsys)  # --data missing
    assert code == 2, err


@pytest.mark.slow
def test_light_venv_without_torch(art, tmp_path):
    """A fresh venv with only numpy, typer, rich and onnxruntime: verify gives the same numbers."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [str(py), "-m", "pip", "install", "-q"]
    subprocess.run([*pip, "numpy", "typer", "rich", "onnxruntime"], check=True, timeout=900)
    subprocess.run([*pip, "--no-deps", "-e", str(REPO)], check=True, timeout=600)
    probe = subprocess.run([str(py), "-c", "import importlib.util as u; print([m for m in ('torch','tensorflow','sklearn') if u.find_spec(m)])"],
                           capture_output=True, text=True, check=True)
    assert probe.stdout.strip() == "[]"
    argv = [art["good"], art["plus1"], "--data", art["data"], "-p", str(PROT), "--baseline", art["report"], "-q"]
    code = "import sys; from toolchain.cli import main; main(sys.argv[1:])"
    there = tmp_path / "there.json"
    proc = subprocess.run([str(py), "-c", code, "verify", *argv, "--json", str(there)], capture_output=True, text=True, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and there.is_file(), proc.stderr[-3000:]
    here = tmp_path / "here.json"
    try:
        main(["verify", *argv, "--json", str(here)])
    except SystemExit as exc:
        assert exc.code == 1
    assert _numbers(json.loads(there.read_text())) == _numbers(json.loads(here.read_text()))
    assert any("the onnx package is not installed" in n for n in json.loads(there.read_text())["notes"])  # the guard is off


# --------------------------------------------------------------------------- int8 on a CPU without VNNI

@pytest.mark.parametrize("flags,machine,lacks", [
    ("fpu sse2 avx2 fma", "x86_64", True),
    ("fpu avx2 avx512f avx512_vnni", "x86_64", False),
    ("fpu avx2 avx_vnni", "x86_64", False),
    ("fp asimd asimddp", "aarch64", False),
])
def test_cpu_lacks_vnni_reads_the_flags(tmp_path, flags, machine, lacks):
    from toolchain.runtimes.base import cpu_lacks_vnni

    info = tmp_path / "cpuinfo"
    info.write_text(f"processor\t: 0\nflags\t\t: {flags}\n\nprocessor\t: 1\nflags\t\t: {flags}\n")
    assert cpu_lacks_vnni(info, machine=machine) is lacks
    assert cpu_lacks_vnni(tmp_path / "missing", machine="x86_64") is False


@pytest.mark.parametrize("no_vnni", [True, False])
def test_full_range_int8_weights_get_a_note_on_a_cpu_without_vnni(art, capsys, monkeypatch, no_vnni):
    from toolchain.export.onnx_int8 import quantize_onnx

    monkeypatch.setattr("toolchain.runtimes.base.cpu_lacks_vnni", lambda *a, **k: no_vnni)
    w8 = quantize_onnx(art["good"], art["dir"] / "w8.onnx", art["x"][:64], weight_bits=8)
    w7 = quantize_onnx(art["good"], art["dir"] / "w7.onnx", art["x"][:64], weight_bits=7)
    res = run_json(art, capsys, [w8, w7], "--baseline", art["report"], "--max-fn-increase", "5", "--max-accuracy-drop", "0.2", expect=0)
    vnni_notes = [n for n in res["notes"] if "VNNI" in n]
    if no_vnni:
        assert len(vnni_notes) == 1 and vnni_notes[0].startswith("w8.onnx:"), res["notes"]
    else:
        assert vnni_notes == []


def test_without_the_onnx_package_the_weight_range_comes_from_the_metadata(art, monkeypatch):
    import sys

    from toolchain.export.onnx_int8 import quantize_onnx
    from toolchain.runtimes.onnx import onnx_artifact_info

    paths = {bits: quantize_onnx(art["good"], art["dir"] / f"meta_w{bits}.onnx", art["x"][:64], weight_bits=bits) for bits in (7, 8)}
    read = {bits: onnx_artifact_info(p)["int8_weight_max"] for bits, p in paths.items()}
    assert read[7] <= 64 < read[8]
    monkeypatch.setitem(sys.modules, "onnx", None)  # import onnx -> ImportError, as on a device
    assert {bits: onnx_artifact_info(p)["int8_weight_max"] for bits, p in paths.items()} == {7: 64, 8: 127}
    assert onnx_artifact_info(paths[8])["precision"] == "int8"


def test_verify_states_the_bytes_and_sha256_of_every_file_it_judged(art, capsys, tmp_path):
    """torch.onnx.export's default writes `m.onnx` + `m.onnx.data`: one artifact, of their total size, each
    file's sha256 in the JSON, on the console, in the Markdown and in the JUnit properties."""
    import contextlib
    import hashlib
    import io

    import torch

    path, data = tmp_path / "m.onnx", tmp_path / "m.onnx.data"
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        torch.onnx.export(art["model"].eval(), (torch.from_numpy(art["x"][:2]),), str(path), dynamo=True, input_names=["input"],
                          output_names=["logits"], dynamic_shapes=({0: torch.export.Dim("batch")},))
    assert data.is_file(), "torch.onnx.export wrote no external data"
    sha = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (path, data)}
    j, md, xml = tmp_path / "v.json", tmp_path / "v.md", tmp_path / "v.xml"
    code, stdout, err = cli([path, "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--json", j, "--markdown", md,
                             "--junit", xml], capsys)
    assert code == 0, err
    res = json.loads(j.read_text())
    entry = res["artifacts"][0]
    assert entry["bytes"] == path.stat().st_size + data.stat().st_size
    assert entry["sha256"] == sha["m.onnx"]
    assert [(f["name"], f["role"], f["sha256"]) for f in entry["files"]] == [("m.onnx", "model", sha["m.onnx"]),
                                                                            ("m.onnx.data", "external data", sha["m.onnx.data"])]
    assert entry["evaluation"]["fn_per_class"] == art["base"]["fn_per_class"]  # the same model, judged whole
    digest = res["data"]["rows_sha256"]
    for text in (stdout, md.read_text()):
        assert sha["m.onnx"] in text and sha["m.onnx.data"] in text and digest in text, text
    assert f"{entry['bytes']:,} bytes in 2 files" in stdout
    props = {p.get("name"): p.get("value") for p in ET.parse(xml).getroot().iter("property")}
    assert props["artifact_sha256"] == sha["m.onnx"] and props["sha256 m.onnx.data"] == sha["m.onnx.data"]
    assert props["artifact_bytes"] == str(entry["bytes"]) and props["rows_sha256"] == digest


def test_spaces_around_data_judge_the_same_rows(art, capsys, tmp_path):
    """'pool.npz ' is pool.npz for every part of verify: all its rows, not the test split of a file read elsewhere."""
    pool = tmp_path / "pool.npz"
    np.savez(pool, x=art["x"], y=art["y"])
    judged = []
    for spec in (str(pool), f" {pool} "):
        out = tmp_path / "o.json"
        code, _, err = cli([art["good"], "--data", spec, "-p", PROT, "--json", out, "-q"], capsys)
        assert code in (0, 1), err
        data = json.loads(out.read_text())["data"]
        judged.append((data["split"], data["n"]))
    assert judged[0] == judged[1] == ("all", len(art["y"]))


@pytest.mark.parametrize("drop", [[], ["confusion", "support_per_class"]])
def test_a_baseline_whose_fn_was_raised_is_malformed(art, capsys, tmp_path, drop):
    """FN raised where the gate reads it (the protected entry and fn_per_class, consistently) loosens the budget: the
    file's own confusion matrix, or its per-sample predictions on these rows, give the edit away."""
    report = json.loads(Path(art["report"]).read_text())
    test = report["baseline"]["test"]
    entry = next(p for p in test["protected"] if p["class"] == PROT)
    entry["fn"] += 5
    test["fn_per_class"][PROT] += 5
    for key in drop:
        test.pop(key)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(report))
    code, _, err = cli([art["plus1"], "--data", art["data"], "-p", PROT, "--baseline", edited, "-q"], capsys)
    assert code == 2 and "malformed" in err and (f"class {PROT}" in err or "false negatives /" in err), err


def test_a_baseline_stripped_of_its_matrix_and_predictions_is_refused_unless_other_data_is_allowed(art, capsys, tmp_path):
    """A baseline edited to a weak model's FN and accuracy, its confusion matrix and predictions deleted, passed every
    check: a model missing every protected sample passed (with a note, then without). Nothing ties such counts to the
    rows: refused; --allow-other-data compares them, said unpaired."""
    report = json.loads(Path(art["report"]).read_text())
    test = report["baseline"]["test"]
    for key in ("confusion", "predictions", "support_per_class", "recall_per_class"):
        test.pop(key, None)
    entry = next(p for p in test["protected"] if p["class"] == PROT)
    entry.pop("fnr", None)
    raised = entry["support"] - entry["fn"]
    entry["fn"] = test["fn_per_class"][PROT] = entry["support"]
    test["fp_per_class"][(PROT + 1) % 10] += raised  # every row missed is another class's false positive: kept adding up
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(report))  # the accuracy left as it was: it no longer adds up
    code, _, err = cli([art["degraded"], "--data", art["data"], "-p", PROT, "--baseline", edited, "-q"], capsys)
    assert code == 2 and "is not 1 - its" in err, err
    test["accuracy"] = 1 - sum(test["fn_per_class"]) / test["n"]  # an edit that adds up
    edited.write_text(json.dumps(report))
    code, _, err = cli([art["degraded"], "--data", art["data"], "-p", PROT, "--baseline", edited, "-q"], capsys)
    assert code == 2 and "holds no per-sample predictions" in err and len(err.strip().splitlines()) == 1, err
    code, out, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", edited, "-q", "--allow-other-data",
                          "--json", tmp_path / "v.json"], capsys)
    res = json.loads((tmp_path / "v.json").read_text())
    assert any("holds no per-sample predictions" in n for n in res["notes"]) and res["baseline"]["paired"] is False
    assert "without per-sample predictions (unpaired)" in out, out + err


@pytest.mark.parametrize("keepdim", [False, True])
def test_an_artifact_that_returns_class_indices_is_named_for_what_it_returns(art, capsys, tmp_path, keepdim):
    """An ONNX file exported with its argmax gives one index per row, (N,) or (N, 1): said so, not 'the model has
    only 1 output'."""
    import torch

    class Argmax(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, x):
            return self.inner(x).argmax(1, keepdim=keepdim)

    path = _export(Argmax(art["model"]), torch.from_numpy(art["x"]), tmp_path / "argmax.onnx")
    code, _, err = cli([path, "--data", art["data"], "-p", PROT], capsys)
    assert code == 2 and "one value per row" in err and "argmax" in err and len(err.strip().splitlines()) == 1, err


@pytest.mark.parametrize("edit", ["accuracy", "support"])
def test_a_baseline_edited_where_the_predictions_cannot_tell_is_malformed(art, capsys, tmp_path, edit):
    """An evaluation JSON carries no per-sample predictions: its accuracy must still be its confusion matrix's, and a
    protected class's support its matrix row (a shrunk support raises the FN rate the budget is measured from)."""
    report = json.loads(Path(art["report"]).read_text())
    test = report["baseline"]["test"]
    test.pop("predictions", None)
    if edit == "accuracy":
        test["accuracy"] = max(0.0, test["accuracy"] - 0.05)
    else:
        entry = next(p for p in test["protected"] if p["class"] == PROT)
        entry["support"], entry["fn"] = entry["fn"] + 1, entry["fn"]
        entry.pop("fnr", None)
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(report))
    code, _, err = cli([art["plus1"], "--data", art["data"], "-p", PROT, "--baseline", edited, "-q"], capsys)
    assert code == 2 and "malformed" in err, err


@pytest.mark.parametrize("fp", ["longer", "strings", "huge", "more than misses", "one class all", "support"])
def test_a_baseline_without_a_matrix_whose_false_positives_were_edited_is_malformed(art, capsys, tmp_path, fp):
    """Above 100 classes a baseline holds no confusion matrix and the collapse rules read fp_per_class: one entry too
    many, strings or 10**30 there ended verify in an internal error (exit 3), and a large count for one class marked it
    as collapsed already, which silenced the rule for a file answering it for every row."""
    report = json.loads(Path(art["report"]).read_text())
    test = report["baseline"]["test"]
    test["confusion"] = None
    test.pop("predictions", None)
    fps = test["fp_per_class"]
    if fp == "support":  # a class missing more rows than it has: the collapse rules read a negative count caught
        test["support_per_class"][5], test["support_per_class"][6] = 0, test["support_per_class"][6] + test["support_per_class"][5]
        fp = "unchanged"
    test["fp_per_class"] = {"unchanged": fps, "longer": fps + [0], "strings": [str(v) for v in fps], "huge": [10**30] * len(fps),
                            "more than misses": [v + 1 for v in fps],
                            "one class all": [0] * 5 + [test["n"] - test["support_per_class"][5]] + [0] * (len(fps) - 6)}[fp]
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(report))
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", edited, "-q"], capsys)
    assert code == 2 and "malformed" in err and len(err.strip().splitlines()) == 1, err


def test_a_file_named_twice_is_judged_once(art, capsys, tmp_path):
    link = tmp_path / "again.onnx"
    link.symlink_to(art["good"])
    out = tmp_path / "o.json"
    code, _, err = cli([art["good"], art["good"], link, "--data", art["data"], "-p", PROT, "--json", out, "-q"], capsys)
    assert code == 0, err
    assert [a["path"] for a in json.loads(out.read_text())["artifacts"]] == [str(art["good"])]


def test_a_failure_on_other_rows_under_a_run_s_budget_is_a_verdict_not_a_crash(art, capsys, tmp_path):
    """Rows other than the baseline's (--allow-other-data: unpaired, no FN change) and a run that allowed
    --max-fn-increase 1: a file over its budget ended in a TypeError, exit 3 (a device reviewer's finding)."""
    report = json.loads(Path(art["report"]).read_text())
    with_budget = tmp_path / "report.json"
    with_budget.write_text(json.dumps({**report, "config": {"max_fn_increase": 1}}))
    with np.load(art["data"]) as rows:
        reversed_rows = tmp_path / "reversed.npz"  # the same rows in another order: other rows, by their hash
        np.savez(reversed_rows, x=rows["x"][::-1], y=rows["y"][::-1])
    out = tmp_path / "v.json"
    code, _, err = cli([art["plus1"], "--data", reversed_rows, "-p", PROT, "--baseline", with_budget, "--allow-other-data",
                        "--json", out], capsys)
    assert code == 1, err
    res = json.loads(out.read_text())
    assert res["data"]["same_rows_as_baseline"] is False and not res["gate"]["passed"]
    assert not any("allowed --max-fn-increase" in n for n in res["notes"])  # whether it would turn is not known here


def test_a_failure_under_the_default_budget_names_the_runs_own(art, capsys, tmp_path):
    """The same file failed in verify (budget 0 by default) that compress had passed at --max-fn-increase 1, with
    nothing to say why. The gate keeps its options' budget (the report is a file a user hands over); a note names the
    run's."""
    report = json.loads(Path(art["report"]).read_text())
    with_budget = tmp_path / "report.json"
    with_budget.write_text(json.dumps({**report, "config": {"max_fn_increase": 1}}))
    res = run_json(art, capsys, [art["plus1"]], "--baseline", with_budget, expect=1)
    assert any("allowed --max-fn-increase 1" in n for n in res["notes"]), res["notes"]
    code, out, _ = cli([art["plus1"], "--data", art["data"], "-p", PROT, "--baseline", with_budget, "--quiet"], capsys)
    lines = out.strip().splitlines()  # --quiet: the way out too, not the FAIL line alone (a reviewer's CI job)
    assert code == 1 and lines[-1] == "gate: failed" and any(l.startswith("note: the baseline's compress run allowed --max-fn-increase 1")
                                                            for l in lines), out
    res = run_json(art, capsys, [art["plus1"]], "--baseline", with_budget, "--max-fn-increase", "1", expect=0)
    assert not any("allowed --max-fn-increase" in n for n in res["notes"])
    res = run_json(art, capsys, [art["degraded"]], "--baseline", with_budget, expect=1)  # the run's budget would not turn it
    assert not any("allowed --max-fn-increase" in n for n in res["notes"]), res["notes"]
    for forged in ("1", 10**9, True):
        with_budget.write_text(json.dumps({**report, "config": {"max_fn_increase": forged}}))
        res = run_json(art, capsys, [art["plus1"]], "--baseline", with_budget, expect=1)
        assert not any("allowed --max-fn-increase" in n for n in res["notes"])
    # the run's accuracy budget too (a run at --max-accuracy-drop 0.2 recommended a file verify then failed at 0.02 without a
    # word: an adversarial reviewer's finding); and both follow a verify JSON chained as the next baseline
    with_budget.write_text(json.dumps({**report, "config": {"max_fn_increase": 1, "max_accuracy_drop": 0.5}}))
    res = run_json(art, capsys, [art["degraded"]], "--baseline", with_budget, expect=1)
    assert any("allowed --max-accuracy-drop 0.5; verify holds files to 0.02 unless told" in n for n in res["notes"]), res["notes"]
    chained = tmp_path / "verify.json"
    chained.write_text(json.dumps(res))
    again = run_json(art, capsys, [art["degraded"]], "--baseline", chained, expect=1)
    assert any("allowed --max-accuracy-drop 0.5" in n for n in again["notes"]), again["notes"]
    res = run_json(art, capsys, [art["degraded"]], "--baseline", with_budget, "--max-accuracy-drop", "0.5", expect=1)
    assert not any("allowed --max-accuracy-drop" in n for n in res["notes"]), res["notes"]
    res = run_json(art, capsys, [art["plus1"]], "--baseline", chained, expect=1)
    assert any("allowed --max-fn-increase 1" in n for n in res["notes"]), res["notes"]


def test_an_artifact_records_its_class_names_and_verify_refuses_data_numbered_otherwise(tmp_path, capsys):
    """Rows whose labels were numbered in another order (--class-names melanoma,benign,nevus) passed verify with the
    protected class missed 27 of 27: the artifact's class order was only in a free-text note."""
    from clirun import run_cli

    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 1).astype(np.int64)
    names = np.array(["benign", "melanoma", "nevus"])
    np.savez(tmp_path / "rows.npz", x=x, y=y, class_names=names)
    code, _, err = run_cli(["train", "--arch", "mlp", "--arch-kwargs", '{"in_features": 3}', "--epochs", "3", "--device", "cpu",
                            "--data", tmp_path / "rows.npz", "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", tmp_path / "m.pt", "-d", tmp_path / "rows.npz", "-p", "melanoma", "--format", "onnx",
                            "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1) and "onnx fp32: " in err and ", class 1 (melanoma) FN " in err, err  # the class by its name too
    # the command export.md suggests names the class: "-p 1" is an index there, but a name wherever the data names "1"
    import shlex

    command = re.search(r"from this folder: `cwtool (verify [^`]+)`", (tmp_path / "e" / "export.md").read_text()).group(1)
    assert f"--data {tmp_path / 'rows.npz'} -p melanoma --baseline export.json" in command
    cwd = os.getcwd()
    os.chdir(tmp_path / "e")
    try:  # as printed, from the folder: the same rows, the same class
        code, _, err = cli(shlex.split(command)[1:], capsys)
    finally:
        os.chdir(cwd)
    assert code == 0, err
    artifact = tmp_path / "e" / "artifacts" / "model_fp32.onnx"
    np.savez(tmp_path / "reordered.npz", x=x, y=np.array([1, 0, 2])[y], class_names=names[[1, 0, 2]])
    # (--split all: these are the rows it was fitted to, which verify refuses to judge by default)
    code, _, err = cli([artifact, "--data", tmp_path / "reordered.npz", "-p", "melanoma", "--split", "all"], capsys)
    assert code == 2 and "was made for classes numbered benign=0, melanoma=1, nevus=2" in err, err
    assert "--class-names benign,melanoma,nevus" in err
    np.savez(tmp_path / "unnamed.npz", x=x, y=y)  # rows without names: the artifact's name the classes
    code, out, err = cli([artifact, "--data", tmp_path / "unnamed.npz", "-p", "melanoma", "--split", "all"], capsys)
    assert code == 0 and "melanoma" in out, out + err
    assert "with no FN budget" in out  # nothing held the FN to a budget: said beside "passed"
    code, _, err = cli([artifact, "--data", tmp_path / "unnamed.npz", "-p", "melanoma", "--split", "all", "--junit",
                        tmp_path / "v.xml", "--markdown", tmp_path / "v.md", "-q"], capsys)
    assert code == 0 and "no FN budget given" in (tmp_path / "v.xml").read_text(), err
    assert "PASSED (no FN budget given" in (tmp_path / "v.md").read_text()


def _named(src: str, dst: Path, names: list[str]) -> Path:
    """A copy of the ONNX file ``src`` recording ``names`` as its class names (as compress and export write them)."""
    import onnx

    model = onnx.load(src)
    model.metadata_props.add(key="class_names", value=json.dumps(names))
    onnx.save(model, str(dst))
    return dst


def test_data_that_names_the_classes_a_file_numbers_is_said_to_be_judged_in_order(art, capsys, tmp_path):
    """An .npz naming digits zero..nine against a file recording 0..9 passed with no word of how they were matched."""
    numbered = _named(art["good"], tmp_path / "numbered.onnx", [str(i) for i in range(10)])
    with np.load(art["data"]) as rows:
        words = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
        np.savez(tmp_path / "words.npz", x=rows["x"], y=rows["y"], class_names=np.array(words))
    out = tmp_path / "v.json"
    code, _, err = cli([numbered, "--data", tmp_path / "words.npz", "-p", "three", "--json", out], capsys)
    notes = json.loads(out.read_text())["notes"]
    assert code == 0 and any("numbered.onnx records its classes as numbers (0 to 9), --data by name: --data's zero, one, "
                             "two, ... are judged as its classes 0, 1, 2, ..., in that order" in n for n in notes), (err, notes)
    code, _, err = cli([numbered, "--data", art["data"], "-p", PROT, "--json", out], capsys)  # numbers against numbers
    assert code == 0 and not any("records its classes as numbers" in n for n in json.loads(out.read_text())["notes"])


def test_a_files_class_names_never_renumber_the_class_a_gate_judges(art, capsys, tmp_path):
    """A crafted file naming its classes "3", "1", "2", "0", ... made -p 3 gate class 0 on digits; a baseline whose names
    alone were edited so did the same (the gate judged class 6 for -p 3, and passed). A number names the data's label."""
    swapped = ["3", "1", "2", "0"] + [str(i) for i in range(4, 10)]
    crafted = _named(art["good"], tmp_path / "crafted.onnx", swapped)
    res = run_json(art, capsys, [crafted], expect=0)
    assert res["protected"] == [PROT] and res["class_names"] == swapped  # shown as the file says, judged by the data's 3
    assert any(f"-p {PROT} is the data's label {PROT}, which crafted.onnx names '0'" in n for n in res["notes"])
    report = json.loads(Path(art["report"]).read_text())
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps({**report, "class_names": [str(9 - i) for i in range(10)]}))
    res = run_json(art, capsys, [art["good"]], "--baseline", edited, expect=0)  # a file recording no names: judged by index
    assert res["protected"] == [PROT] and res["artifacts"][0]["gate"]["checks"][0]["class"] == PROT
    ordered = _named(art["good"], tmp_path / "ordered.onnx", [str(i) for i in range(10)])  # "0".."9": the data's own numbers
    code, _, err = cli([ordered, "--data", art["data"], "-p", PROT, "--baseline", edited], capsys)
    assert code == 2 and "numbers the classes 9=0, 8=1" in err and "ordered.onnx numbers them 0=0, 1=1" in err, err


def test_numbered_classes_in_another_order_than_the_files_are_refused(art, capsys, tmp_path):
    """Folders 1..10 sort as 1, 10, 2, ...: a file made on them, judged on rows named 1..10 in numeric order, counted every
    class's FN under another class (exit 0, accuracy 10%): names that are numbers were not compared at all."""
    alpha = sorted(str(i) for i in range(1, 11))
    made = _named(art["good"], tmp_path / "alpha.onnx", alpha)
    np.savez(tmp_path / "numeric.npz", x=art["x"], y=art["y"], class_names=np.array([str(i) for i in range(1, 11)]))
    code, _, err = cli([made, "--data", tmp_path / "numeric.npz", "-p", "10"], capsys)
    assert code == 2 and "was made for classes numbered 1=0, 10=1, 2=2" in err, err


def test_data_numbering_the_files_unnamed_classes_in_another_order_is_refused(art, capsys, tmp_path):
    """A file made on data without class names records 0..9; the same rows named 0, 1, 2, 5, 4, 3, ... made -p 3 gate the
    file's output 5 and call it class 3 (exit 1 where the rows in their own numbering pass): the numbering was not compared
    (a security reviewer's finding). Names that are another set than the file's (a device's folder names) stay allowed."""
    made = _named(art["good"], tmp_path / "plain.onnx", [str(i) for i in range(10)])
    swapped = [str(i) for i in range(10)]
    swapped[3], swapped[5] = swapped[5], swapped[3]
    np.savez(tmp_path / "swapped.npz", x=art["x"], y=art["y"], class_names=np.array(swapped))
    code, _, err = cli([made, "--data", tmp_path / "swapped.npz", "-p", "3"], capsys)
    assert code == 2 and "was made for classes numbered 0=0, 1=1, 2=2, 3=3" in err and "--data numbers them 0=0, 1=1, 2=2, 5=3" in err, err
    code, _, err = cli([art["good"], "--data", tmp_path / "swapped.npz", "-p", "3", "--baseline", art["report"]], capsys)
    assert code == 2 and "numbers the classes 0=0, 1=1, 2=2, 3=3" in err and "--data numbers them 0=0, 1=1, 2=2, 5=3" in err, err
    words = [f"w{i}" for i in range(10)]
    np.savez(tmp_path / "worded.npz", x=art["x"], y=art["y"], class_names=np.array(words))
    code, out, err = cli([made, "--data", tmp_path / "worded.npz", "-p", "w3"], capsys)
    assert code == 0 and "gate: passed" in out + err, (code, out[-1500:], err)


def test_a_renamed_class_that_sorts_elsewhere_is_refused(art, capsys, tmp_path):
    """A device's folder with "3" renamed "three" numbers 4..9 as 3..8 and "three" as 9: verify passed a gate on it (exit 0,
    accuracy 30%), since only the same names in another order were compared (a data reviewer's finding)."""
    made = _named(art["good"], tmp_path / "plain.onnx", [str(i) for i in range(10)])
    renamed = sorted([str(i) for i in range(10) if i != 3] + ["three"])
    np.savez(tmp_path / "renamed.npz", x=art["x"], y=art["y"], class_names=np.array(renamed))
    code, _, err = cli([made, "--data", tmp_path / "renamed.npz", "-p", "0", "--max-fnr", "0.5"], capsys)
    assert code == 2 and "was made for classes numbered 0=0, 1=1, 2=2, 3=3, 4=4" in err and "--data numbers them 0=0, 1=1, 2=2, 4=3" in err, err


def test_a_baseline_saved_with_a_byte_order_mark_reads_and_one_with_a_key_twice_is_refused(art, capsys, tmp_path):
    """A report.json an editor saved with a BOM was refused where a CSV's is read; a key given twice was read last-wins,
    where another JSON reader takes the first (a data reviewer's finding)."""
    text = Path(art["report"]).read_text()
    (tmp_path / "bom.json").write_text("\ufeff" + text, encoding="utf-8")
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", tmp_path / "bom.json"], capsys)
    assert code == 0, err
    (tmp_path / "twice.json").write_text(text.replace('{"schema_version": 1,', '{"schema_version": 1, "protected": [0],', 1))
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", tmp_path / "twice.json"], capsys)
    assert code == 2 and "the key 'protected' is given twice" in err, err


def test_a_baseline_measured_on_a_given_test_folder_is_described_as_such():
    """A compress run with --test folder: a refusal of other rows said the baseline was "the test split of train" (the
    --data folder's name), a split that does not exist."""
    from toolchain.baseline import _measured_on
    from toolchain.judged_rows import describe_rows

    data = {"name": "train", "seed": 0, "given_splits": True, "held_out_from": {"val": "/d/val", "test": "/d/test"}}
    assert _measured_on({**data, "split": "test"}) == "every row of its --test /d/test"
    assert _measured_on({"name": "pool", "seed": 0, "split": "test"}) == "the test split of pool, split seed 0"
    # one split of a folder the user may take for a split of its own: how much of it was judged, and how to judge it all
    shown = describe_rows({"x": np.zeros((2, 1), np.float32), "y": np.array([0, 1]), "split": "test", "name": "f", "seed": 0,
                           "of_rows": 10}, "ab" * 32)
    assert "2 of its 10 rows (--split all: every row)" in shown


def test_class_names_in_another_unicode_form_are_the_same_names():
    """A folder copied by macOS names "café" in NFD: verify refused the same class order with two lists that print alike."""
    from toolchain.errors import UserError
    from toolchain.recorded import check_class_order as _class_order_differs

    _class_order_differs("m.onnx", ["caf\u00e9", "tea"], ["cafe\u0301", "tea"])  # no refusal
    with pytest.raises(UserError, match="was made for classes numbered"):
        _class_order_differs("m.onnx", ["tea", "caf\u00e9"], ["cafe\u0301", "tea"])


def test_data_of_other_class_names_is_not_told_to_reorder_them():
    """Folders x/ and y/ for a file made for a and b were told '--class-names a,b', which then refused label 'x' as not
    one of a, b: a circle. Other names are said as other names; only the same names in another order get the flag."""
    from toolchain.errors import UserError
    from toolchain.recorded import check_class_order

    for declared in (["x", "y"], ["B", "a"]):
        with pytest.raises(UserError, match="not among them: give data labelled with the classes it was made for") as info:
            check_class_order("m.onnx", ["a", "b"], declared)
        assert "--class-names" not in str(info.value)
    with pytest.raises(UserError, match="--class-names a,b"):
        check_class_order("m.onnx", ["a", "b"], ["b", "a"])


def test_a_long_check_says_its_pace_on_stderr_quiet_or_not(art, capsys, monkeypatch):
    """20,000 images of 224 px through each file on a device's CPU: an hour of silence before the verdict."""
    from toolchain.report import pace

    monkeypatch.setattr(pace, "PACE_SECONDS", 0.0)  # every batch is "long"
    n = len(art["y"])
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT], capsys)
    assert code == 0 and re.search(rf"^good\.onnx: 256 of {n:,} rows \([\d.]+ s, about [\d.]+ s to go\)$", err, re.M), err
    assert f"{n:,} of {n:,} rows" not in err  # the end is the verdict's to say
    code, out, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--quiet"], capsys)
    assert code == 0 and "good.onnx: 256 of" in err and "rows (" not in out, out + err  # a quiet CI job is not a silent one


def test_two_files_of_one_name_are_told_apart_in_every_output(art, capsys, tmp_path, monkeypatch):
    """candidate/model.onnx and accepted/model.onnx were two "model.onnx" rows, one failing, and one JUnit test id for
    both: a CI system that keys cases on it showed the failure as passed."""
    import shutil
    import xml.etree.ElementTree as ET

    from toolchain.verify import distinct_names

    assert distinct_names(["a/b/m.onnx", "c/b/m.onnx", "x.onnx"]) == ["a/b/m.onnx", "c/b/m.onnx", "x.onnx"]
    assert distinct_names(["d1/model.onnx", "model.tflite"]) == ["model.onnx", "model.tflite"]
    for folder, source in (("accepted", art["good"]), ("candidate", art["degraded"])):
        (tmp_path / folder).mkdir()
        shutil.copy(source, tmp_path / folder / "model.onnx")
    files = [tmp_path / "accepted" / "model.onnx", tmp_path / "candidate" / "model.onnx"]
    from toolchain.report import pace

    monkeypatch.setattr(pace, "PACE_SECONDS", 0.0)  # every batch says its pace: with the file's told-apart name
    code, out, err = cli([*files, "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--junit", tmp_path / "v.xml",
                          "--json", tmp_path / "v.json"], capsys)
    assert code == 1, err
    assert f"FAIL candidate/model.onnx: class {PROT}" in out + err and "FAIL accepted/" not in out + err, out + err
    assert "accepted/model.onnx: 256 of" in err and "candidate/model.onnx: 256 of" in err, err
    assert [a["name"] for a in json.loads((tmp_path / "v.json").read_text())["artifacts"]] == ["accepted/model.onnx", "candidate/model.onnx"]
    cases = {c.get("classname") for c in ET.parse(tmp_path / "v.xml").getroot().iter("testcase")}
    assert cases == {"cwtool.verify.accepted/model.onnx", "cwtool.verify.candidate/model.onnx"}


def test_bad_input_replaces_a_report_an_earlier_run_left(art, capsys, tmp_path):
    """A persistent CI workspace kept the last green --junit/--json when the next verify exited 2: the JUnit reporter showed
    "0 failures" for a step that failed."""
    import xml.etree.ElementTree as ET

    outs = {"--json": tmp_path / "v.json", "--markdown": tmp_path / "v.md", "--junit": tmp_path / "v.xml"}
    flags = [str(v) for pair in outs.items() for v in pair]
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], *flags], capsys)
    assert code == 0 and all(p.is_file() for p in outs.values()), err
    (tmp_path / "empty.onnx").write_bytes(b"")
    code, _, err = cli([tmp_path / "empty.onnx", "--data", art["data"], "-p", PROT, "--baseline", art["report"], *flags], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    message = err.strip().removeprefix("cwtool: error: ")
    report = json.loads(outs["--json"].read_text())
    assert report["error"] == message and report["gate"]["passed"] is False and report["artifacts"] == []
    suites = ET.parse(outs["--junit"]).getroot()
    assert suites.get("errors") == "1" and suites.find(".//error").get("message") == message
    assert "ERROR (nothing judged)" in outs["--markdown"].read_text()
    # an output flag itself refused: the other, valid, reports still say so; none is written over an input
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], *flags], capsys)
    assert code == 0 and ET.parse(outs["--junit"]).getroot().get("errors") == "0", err
    baseline_bytes = Path(art["report"]).read_bytes()
    (tmp_path / "folder").mkdir()
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], "--junit", outs["--junit"],
                        "--markdown", tmp_path / "folder", "--json", art["report"]], capsys)
    assert code == 2 and ET.parse(outs["--junit"]).getroot().get("errors") == "1", err
    assert Path(art["report"]).read_bytes() == baseline_bytes


@pytest.mark.parametrize("flag, mine", [("--junit", "dense.pt.log"), ("--markdown", "notes.md")])
def test_junit_and_markdown_replace_only_verify_s_own_reports(art, capsys, tmp_path, flag, mine):
    """--junit dense.pt.log replaced a training log with JUnit XML (exit 0), and --markdown a user's notes, where --json
    refused any file verify did not write; an earlier verify's own report and an empty file are still replaced."""
    theirs = tmp_path / mine
    theirs.write_text("2026-12-06 12:00:00 +   0.0s cwtool 0.1 train ...\n")
    before = theirs.read_bytes()
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, flag, theirs], capsys)
    assert code == 2 and f"{flag} '{theirs}' holds a file verify did not write" in err and theirs.read_bytes() == before, err
    ours = tmp_path / f"ours{Path(mine).suffix}"
    ours.write_bytes(b"")  # a fresh $GITHUB_STEP_SUMMARY
    for _ in range(2):  # then verify's own report, replaced by the next run
        code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, flag, ours], capsys)
        assert code == 0 and ours.stat().st_size > 0, err


def test_json_replaces_no_compress_report(art, capsys, tmp_path):
    """verify --json runs/x/report.json (a new user's slip) replaced the run's report with a verify of its own artifact:
    a later --baseline on it compared the file with itself and passed a file the run had failed. Refused, and a bad
    input's error report is not written over it either; an earlier verify's own JSON is still replaced."""
    import shutil

    report = tmp_path / "report.json"
    shutil.copy(art["report"], report)
    before = report.read_bytes()
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--json", report], capsys)
    assert code == 2 and "holds a file verify did not write" in err and len(err.strip().splitlines()) == 1, err
    assert report.read_bytes() == before
    (tmp_path / "notes.json").write_text('{"mine": 1}')  # any other file: verify replaces only its own reports
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--json", tmp_path / "notes.json"], capsys)
    assert code == 2 and "holds a file verify did not write" in err and (tmp_path / "notes.json").read_text() == '{"mine": 1}', err
    (tmp_path / "empty.onnx").write_bytes(b"")
    code, _, err = cli([tmp_path / "empty.onnx", "--data", art["data"], "-p", PROT, "--json", report], capsys)
    assert code == 2 and report.read_bytes() == before, err
    ours = tmp_path / "v.json"
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", report, "--json", ours], capsys)
    assert code == 0, err
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--baseline", report, "--json", ours], capsys)
    assert code == 0 and json.loads(ours.read_text())["kind"] == "cwtool-verify", err
    code, _, err = cli([tmp_path / "empty.onnx", "--data", art["data"], "-p", PROT, "--json", ours], capsys)
    assert code == 2 and json.loads(ours.read_text())["gate"]["passed"] is False, err


def test_a_usage_error_or_a_stop_replaces_a_report_an_earlier_run_left(art, capsys, tmp_path, monkeypatch):
    """docs/CI.md's exit 2 replaced old reports only for cwtool's own checks: a parser's usage error (an empty CI variable
    after --max-fn-increase) and a stopped or timed-out job (exit 143) left the last green JUnit for `if: always()`."""
    import xml.etree.ElementTree as ET

    import toolchain.verify

    outs = {"--json": tmp_path / "v.json", "--markdown": tmp_path / "v.md", "--junit": tmp_path / "v.xml"}
    flags = [str(v) for pair in outs.items() for v in pair]
    green = [art["good"], "--data", art["data"], "-p", PROT, "--baseline", art["report"], *flags]
    for broken in (["--max-fn-increase", "abc"], "missing -p"):
        code, _, err = cli(green, capsys)
        assert code == 0 and ET.parse(outs["--junit"]).getroot().get("errors") == "0", err
        argv = [*green, *broken] if isinstance(broken, list) else [a for a in green if a not in ("-p", PROT)]
        code, _, err = cli(argv, capsys)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert ET.parse(outs["--junit"]).getroot().get("errors") == "1", broken
        assert json.loads(outs["--json"].read_text())["gate"] == {"passed": False, "error": err.strip().removeprefix("cwtool: error: ")}
        assert "ERROR (nothing judged)" in outs["--markdown"].read_text()
    code, _, err = cli(green, capsys)
    assert code == 0, err

    def stopped(request):
        from toolchain.errors import Interrupted

        raise Interrupted("SIGTERM")  # a real signal: tests/test_trust.py, test_sigterm_replaces_an_earlier_run_s_reports

    monkeypatch.setattr(toolchain.verify, "run_verify", stopped)
    code, _, err = cli(green, capsys)
    assert code == 143 and ET.parse(outs["--junit"]).getroot().get("errors") == "1", err
    assert "interrupted by SIGTERM before a verdict" in outs["--markdown"].read_text()
    code, _, err = cli(green, capsys)

    def crashed(request):
        raise TypeError("a bug")  # exit 3 left the last green JUnit in place (a device reviewer's finding)

    monkeypatch.setattr(toolchain.verify, "run_verify", crashed)
    code, _, err = cli(green, capsys)
    assert code == 3 and ET.parse(outs["--junit"]).getroot().get("errors") == "1", err
    assert "internal error before a verdict: TypeError: a bug" in json.loads(outs["--json"].read_text())["error"]
    assert ET.parse(outs["--junit"]).getroot().find(".//error").get("type") == "InternalError"  # not the user's bad input
    monkeypatch.undo()
    code, _, err = cli(green, capsys)
    assert code == 0 and json.loads(outs["--json"].read_text())["gate"]["passed"], err
    import toolchain.report.junit

    monkeypatch.setattr(toolchain.report.junit, "render_junit", lambda result: crashed(None))  # a bug after the verdict
    code, _, err = cli(green, capsys)
    assert code == 3 and "internal error before a verdict: TypeError: a bug" in json.loads(outs["--json"].read_text())["error"], err
    assert ET.parse(outs["--junit"]).getroot().find(".//error").get("type") == "InternalError"  # the green ones left in place
    monkeypatch.setattr(toolchain.verify, "run_verify", stopped)
    # stopped before verify's code knew its inputs (a SIGTERM in its first second): the old green reports stayed
    monkeypatch.undo()
    code, _, err = cli(green, capsys)
    assert code == 0, err
    import toolchain.input_paths

    monkeypatch.setattr(toolchain.input_paths, "input_paths", lambda *a, **k: stopped(None))
    code, _, err = cli(green, capsys)
    assert code == 143 and ET.parse(outs["--junit"]).getroot().find(".//error").get("type") == "Interrupted", err
    assert "interrupted by SIGTERM before a verdict" in json.loads(outs["--json"].read_text())["error"]
    baseline_bytes = Path(art["report"]).read_bytes()
    code, _, err = cli([*green, "--json", art["report"]], capsys)  # a report path that is another argument: untouched
    assert code == 143 and Path(art["report"]).read_bytes() == baseline_bytes, err
    monkeypatch.undo()
    monkeypatch.setattr(toolchain.verify, "run_verify", stopped)
    # an earlier verify JSON given as --baseline and, by mistake, as --json too: an input, never replaced
    code, _, err = cli(green, capsys)
    before = outs["--json"].read_bytes()
    code, _, err = cli([art["good"], "--data", art["data"], "--baseline", outs["--json"], "--json", outs["--json"]], capsys)
    assert code == 2 and outs["--json"].read_bytes() == before, err
    # a file that is not verify's report, at a report flag of a command the parser refused: never touched
    (tmp_path / "notes.json").write_text('{"mine": 1}')
    code, _, err = cli([art["good"], "--data", art["data"], "--json", tmp_path / "notes.json"], capsys)
    assert code == 2 and (tmp_path / "notes.json").read_text() == '{"mine": 1}', err


def test_without_the_onnx_package_the_unchecked_activations_are_said(art, capsys, monkeypatch):
    """The device install (numpy, typer, rich, onnxruntime) has no onnx package: the check that a small file does not ask
    for gigabytes of activations was off, without a word."""
    from toolchain import verify

    monkeypatch.setattr(verify, "importable", lambda module: module != "onnx")
    res = run_json(art, capsys, [art["good"]], expect=0)
    assert any("the onnx package is not installed" in n for n in res["notes"])
    monkeypatch.undo()
    assert not any("onnx package" in n for n in run_json(art, capsys, [art["good"]], expect=0)["notes"])


def test_markdown_shows_names_from_files_as_text(art, capsys, tmp_path):
    """--markdown (for a CI step summary) passed a data file's class name through as Markdown: a link, an image, emphasis
    and a raw HTML tag of its own; a backtick in a file name ended its code span."""
    names = ["zero", "one", "two", "th|ree <img src=x> `x` **bold** [l](http://e.vil) &amp;", *map(str, range(4, 10))]
    np.savez(tmp_path / "named.npz", x=art["x"], y=art["y"], class_names=np.array(names))
    odd = tmp_path / "m `x`.onnx"
    odd.write_bytes(Path(art["good"]).read_bytes())
    code, _, err = cli([odd, "--data", tmp_path / "named.npz", "-p", PROT, "--max-fnr", "0.5", "--markdown", tmp_path / "v.md"], capsys)
    assert code == 0, err
    md = (tmp_path / "v.md").read_text()
    assert r"th\|ree \<img src=x\> \`x\` \*\*bold\*\* \[l\](http://e.vil) \&amp;" in md and "<img" not in md.replace(r"\<img", "")
    assert "- ``m `x`.onnx``:" in md  # a list item: no cell border to escape


def test_rows_of_the_protected_class_alone_are_said_to_judge_nothing_else(art, capsys, tmp_path):
    """A device's evaluation set of positives only ("our melanoma images"): a model answering the class for every row
    passed, with no word."""
    only = art["y"] == PROT
    np.savez(tmp_path / "only.npz", x=art["x"][only], y=art["y"][only])
    res = run_json(art, capsys, [art["good"]], "--data", tmp_path / "only.npz", "--max-fnr", "0.5", expect=0)
    assert any(f"holds only rows of protected class {PROT}" in n for n in res["notes"]) and res["data"]["only_protected"]
    code, out, err = cli([art["good"], "--data", tmp_path / "only.npz", "-p", PROT, "--max-fnr", "0.5", "-q"], capsys)
    assert code == 0 and "on rows of the protected class alone" in out.strip().splitlines()[-1], out + err  # --quiet says it
    # every class protected: a model answering one class misses the others, so that is not said (a CI reviewer's finding)
    every = [x for c in range(10) for x in ("-p", str(c))]
    code, out, err = cli([art["good"], "--data", art["data"], *every, "--max-fnr", "0.5", "-q"], capsys)
    last = out.strip().splitlines()[-1]
    assert code == 0 and "on rows of protected classes alone (no false positive can show)" in last and "every row" not in last, out + err


def test_rows_that_cannot_fit_the_file_are_refused_before_any_image_is_decoded(art, capsys, tmp_path, monkeypatch):
    """A wrong --resize decoded and fingerprinted every image at the new size (minutes, gigabytes) before the shape check."""
    from PIL import Image

    from toolchain.data import images

    for i in range(6):
        (tmp_path / "imgs" / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"c{i % 2}" / f"{i}.png")

    def decoded(self, index):
        raise AssertionError("an image was decoded")

    monkeypatch.setattr(images.ImageFiles, "read", decoded)
    code, _, err = cli([art["good"], "--data", tmp_path / "imgs", "-p", "1", "--resize", "64", "--split", "all"], capsys)
    assert code == 2 and "data samples have shape (1, 64, 64)" in err, err


def test_a_recorded_layout_that_contradicts_the_files_own_input_is_named(tmp_path, capsys):
    """An NCHW file whose metadata was edited to NHWC: 'data samples have shape (1, 8, 8) but model.onnx expects (8, 1, 8)
    (NCHW, dataset layout): pass data that matches' blamed the data and named the layout the record did not say."""
    import onnx
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.Flatten(), torch.nn.Linear(4 * 8 * 8, 10))
    x = np.random.default_rng(0).random((20, 1, 8, 8), dtype=np.float32)
    path = _export(model, torch.from_numpy(x), tmp_path / "model.onnx")
    proto = onnx.load(str(path))
    entry = proto.metadata_props.add()
    entry.key, entry.value = "layout", "NHWC"
    onnx.save(proto, str(path))
    np.savez(tmp_path / "rows.npz", x=x, y=np.arange(20) % 10)
    code, out, err = cli([path, "--data", tmp_path / "rows.npz", "-p", "3", "--split", "all"], capsys)
    assert code == 2 and "model.onnx records its input layout as NHWC (its metadata or .json sidecar)" in err, (code, out, err)
    assert "restore it" in err and "give NCHW rows" in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_artifact_is_named_where_an_image_folder_would_be_sized_by_its_record(tmp_path, capsys):
    """An image folder of mixed sizes is sized as the artifacts record; an artifact path that does not exist (or a
    sidecar given as the artifact) left no record to read, and verify said the images differ in size, not that the file
    is missing (a new user's finding)."""
    from PIL import Image

    from clirun import run_cli

    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            Image.new("RGB", (16 + i, 16), (40 * i, 0, 0)).save(tmp_path / "imgs" / c / f"{i}.png")
    code, _, err = run_cli(["verify", tmp_path / "nothere.onnx", "--data", tmp_path / "imgs", "-p", "b"], capsys)
    assert code == 2 and "nothere.onnx does not exist" in err and "differ in size" not in err, err


class _BatchMean:
    """A forward that subtracts twice its batch's mean logits: deterministic, and answered otherwise a row at a time."""

    def __new__(cls, model):
        import torch

        class BatchMean(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.inner = model

            def forward(self, x):
                z = self.inner(x)
                return z - 2 * z.mean(0, keepdim=True)

        return BatchMean()


def test_a_file_that_answers_otherwise_a_row_at_a_time_fails_the_gate(art, capsys):
    """verify judged a file at 256 rows a call and passed it ('gate: passed', FN 2/27); a device runs it one row at a time,
    where it missed all 27 (a reviewer's file). The good file, judged the same way, is not touched by the check."""
    import torch

    path = _export(_BatchMean(art["model"]), torch.from_numpy(art["x"]), art["dir"] / "batchmean.onnx")
    res = run_json(art, capsys, [path], "--baseline", art["report"], expect=1)
    reasons = res["artifacts"][0]["gate"]["reasons"]
    assert any("answers rows otherwise one at a time than in the batches judged here" in r for r in reasons), reasons
    res = run_json(art, capsys, [art["good"]], "--baseline", art["report"], expect=0)
    assert not any("one at a time" in r for r in res["artifacts"][0]["gate"]["reasons"])


def test_nan_logits_name_the_file_that_gives_them(art, capsys):
    """Three files given, one answering NaN: 'the model produced NaN or infinite logits' named none of them."""
    import torch

    path = _export(_shifted(art["model"], 0, float("nan")), torch.from_numpy(art["x"]), art["dir"] / "gives_nan.onnx")
    code, _, err = cli([art["good"], path, "--data", art["data"], "-p", PROT], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert f"gives_nan.onnx gives NaN or infinite logits on {len(art['y']):,} of the {len(art['y']):,} rows" in err, err


def test_a_dynamically_quantized_file_answering_otherwise_alone_is_said_not_failed(art, capsys, monkeypatch):
    """onnxruntime's quantize_dynamic scales each call's activations from its own rows: a row's logits move with the rows
    beside it by design (5-13% of their scale on a reviewer's tabular file, which then failed the gate). Said, not failed."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    import toolchain.verify as verify

    dynamic = art["dir"] / "dynamic_q8.onnx"
    quantize_dynamic(art["good"], str(dynamic), weight_type=QuantType.QInt8)
    assert verify.scaled_per_call(dynamic) and not verify.scaled_per_call(art["good"])
    monkeypatch.setattr(verify, "answers_alone_otherwise", lambda runner, x, logits: (
        "answers rows otherwise one at a time than in the batches judged here (logits differ by up to 8.19, 1 of the first 8 "
        "decisions): a device that runs it a row at a time gets other answers", "its forward uses statistics of the batch?"))
    res = run_json(art, capsys, [dynamic], "--baseline", art["report"], "--max-fn-increase", "5", "--max-accuracy-drop", "0.5",
                   expect=0)
    assert not any("one at a time" in r for r in res["artifacts"][0]["gate"]["reasons"])
    assert any("dynamic_q8.onnx is dynamically quantized" in n and "statistics of the batch" not in n for n in res["notes"]), res["notes"]


def test_a_sidecar_too_large_to_be_one_is_not_hashed_as_a_part_of_the_artifact(art, capsys, tmp_path):
    """A 50 GB file named like the artifact's sidecar was read whole to hash it (51 s, sparse) though the runner never reads
    one above MAX_SIDECAR_BYTES: it is none of the artifact's parts, and the note says the sidecar records nothing read."""
    import os
    import shutil

    from toolchain.runtimes.base import MAX_SIDECAR_BYTES

    model = tmp_path / "m.onnx"
    shutil.copy(art["good"], model)
    with open(tmp_path / "m.onnx.json", "wb") as f:
        f.truncate(MAX_SIDECAR_BYTES + 1)
    out = tmp_path / "v.json"
    code, _, err = cli([model, "--data", art["data"], "-p", PROT, "--json", out, "-q"], capsys)
    assert code == 0, err
    files = json.loads(out.read_text())["artifacts"][0]["files"]
    assert [f["role"] for f in files] == ["model"], files
    os.truncate(tmp_path / "m.onnx.json", 0)
    (tmp_path / "m.onnx.json").write_text("{}")  # one of a sidecar's size: a part, hashed
    code, _, err = cli([model, "--data", art["data"], "-p", PROT, "--json", out, "-q"], capsys)
    assert [f["role"] for f in json.loads(out.read_text())["artifacts"][0]["files"]] == ["model", "sidecar"], err


def test_an_output_that_cannot_be_written_is_said_even_when_a_stop_arrives_meanwhile(tmp_path):
    """A stop during the writes was said as "arrived as the command finished: what it wrote is complete" (exit 143) while
    one output could not be written at all (a regression reviewer's finding): the missing output is the error."""
    from toolchain.cli.verify import _write_all
    from toolchain.errors import Interrupted, UserError

    stopped = []

    def first():
        if not stopped:
            stopped.append(1)
            raise Interrupted("SIGTERM")
        (tmp_path / "a").write_text("a")

    def second():
        raise UserError(f"cannot write '{tmp_path / 'b'}': No space left on device")

    writes = [(tmp_path / "a", lambda p: True, first), (tmp_path / "b", lambda p: True, second),
              (tmp_path / "c", lambda p: True, lambda: (tmp_path / "c").write_text("c"))]
    with pytest.raises(UserError, match=r"No space left on device \(the verdict above was made; 2 of its 3 outputs written"):
        _write_all(writes)
    assert (tmp_path / "a").is_file() and (tmp_path / "c").is_file()


def test_a_usage_error_removes_the_rows_an_earlier_run_saved(art, capsys, tmp_path):
    """After a usage error the parser found, the reports an earlier run left were replaced but its --save-rows file stood,
    for a device step to judge as this run's rows (noticed in this stop's review)."""
    saved = tmp_path / "rows.npz"
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--save-rows", saved, "-q"], capsys)
    assert code == 0 and saved.is_file(), err
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--save-rows", saved, "--max-fn-increase", "abc"], capsys)
    assert code == 2 and not saved.exists(), err
    kept = tmp_path / "kept.npz"  # rows verify saved, named by --data too: an input, never removed
    code, _, err = cli([art["good"], "--data", art["data"], "-p", PROT, "--save-rows", kept, "-q"], capsys)
    code, _, err = cli([art["good"], "--data", kept, "-p", PROT, "--save-rows", kept, "--max-fn-increase", "abc"], capsys)
    assert code == 2 and kept.is_file(), err


def test_a_promise_that_says_nothing_or_rests_on_few_samples_is_said():
    """verify stated "probability 1.000" from 1 sample of the class, with a budget that allowed missing it, and nothing else."""
    from toolchain.verify import _promise_notes

    def entry(name, **classes):
        return {"name": name, "promise": {k.removeprefix("c"): {"b": 0, "c": 0, "confidence": 1.0, **v} for k, v in classes.items()}}

    names = [str(k) for k in range(10)]
    names[3] = "three"
    notes = _promise_notes([entry("a.onnx", c3={"n": 1, "budget": 2, "baseline_fn": 0}, c5={"n": 40, "budget": 0, "baseline_fn": 1}),
                            entry("b.tflite", c3={"n": 9, "budget": 0, "baseline_fn": 9}, c5={"n": 60, "budget": 0, "baseline_fn": 1})],
                           names)
    assert notes[0].startswith("a.onnx, class 3 (three): a budget of 2 allows missing all 1 samples of the class on new data"), notes
    assert notes[1].startswith("b.tflite, class 3 (three): the baseline misses all 9 samples of the class here"), notes
    assert "the promise says nothing about the class" in notes[0] and len(notes) == 3, notes
    assert notes[2].startswith("the promise's probabilities rest on fewer than 60 samples of a class here (class 5: 40)"), notes
    assert _promise_notes([entry("c.onnx", c5={"n": 60, "budget": 1, "baseline_fn": 3})], names) == []


def test_several_classes_promises_are_said_together_too():
    """A user of five protected classes at 0.8 read each class's probability from verify, and no word that all five hold
    together with probability at least 0.28 (report.md said it; verify did not)."""
    from toolchain.report.verify_console import together_of

    promise = {str(k): {"confidence": c} for k, c in zip(range(5), (0.83, 0.96, 0.97, 0.8, 0.71))}
    assert together_of(promise) == pytest.approx(0.27)
    assert together_of({"3": {"confidence": 0.9}}) is None and together_of(None) is None
    assert together_of({"3": {"confidence": 0.5}, "8": {"confidence": 0.4}}) == 0.0
    assert together_of({"3": {"confidence": "x"}, "8": {}}) is None


def test_the_verdict_s_misses_name_each_class():
    """"missed: class 1 1 of 42" read as a count of counts: the class's name beside its index."""
    from toolchain.report.verify_console import missed_words

    result = {"class_names": ["akiec", "bcc", "df"], "artifacts": [
        {"gate": {"checks": [{"class": 1, "fn": 1, "support": 42}, {"class": 2, "fn": 0, "support": 10}]}}]}
    assert missed_words(result) == "missed: class 1 (bcc) 1 of 42, class 2 (df) 0 of 10"
    assert missed_words({**result, "class_names": ["0", "1", "2"]}) == "missed: class 1 1 of 42, class 2 0 of 10"


def test_the_run_s_accuracy_budget_is_named_only_where_it_is_looser():
    """A run's stricter --max-accuracy-drop 0.005 was named as the way out of a file failing verify's 0.02 (and --quiet now
    prints that note): only a looser budget can turn the verdict (a regression reviewer's finding)."""
    from types import SimpleNamespace

    from toolchain.verify import _baseline_run_notes

    failing = [{"gate": {"passed": False, "accuracy": {"passed": False}, "checks": []}}]
    request = SimpleNamespace(max_accuracy_drop=None, max_fn_increase=None, max_fnr_increase=None)
    assert _baseline_run_notes({"run_accuracy_drop": 0.005}, failing, request, 0.02) == []
    (note,) = _baseline_run_notes({"run_accuracy_drop": 0.05}, failing, request, 0.02)
    assert note.startswith("the baseline's compress run allowed --max-accuracy-drop 0.05"), note


def test_a_baseline_edited_one_count_at_a_time_is_refused():
    """Mutants that survived the suite: a protected entry's fn raised alone (its fnr deleted), an FN total moved by one
    with the accuracy left as it was, an edit that adds up everywhere but in the per-sample predictions, and a baseline
    without a fingerprint of other class counts: each loosened or misread the budget unnoticed."""
    import copy
    from pathlib import Path

    import numpy as np

    from toolchain.baseline import _checked_evaluation, check_baseline
    from toolchain.errors import UserError
    from toolchain.metrics import evaluate_logits

    y = np.arange(40) % 4
    pred = y.copy()
    pred[[1, 5]] = 0  # class 1 misses 2
    ev = evaluate_logits(y, np.eye(4)[pred], [1])
    ev["predictions"] = pred.tolist()
    path = Path("b.json")
    _checked_evaluation(copy.deepcopy(ev), path)  # as written: accepted

    def refused(edit, match):
        edited = copy.deepcopy(ev)
        edit(edited)
        with pytest.raises(UserError, match=match):
            check_baseline({"path": path, "evaluation": _checked_evaluation(edited, path)}, y, "0" * 64, 4, [1], False, [])

    def raise_entry(e):
        e["protected"][0]["fn"] += 1
        e["protected"][0].pop("fnr")
    refused(raise_entry, "has fn 3 but fn_per_class says 2")

    def total_by_one(e):
        e["fn_per_class"][1] += 1
        e["fp_per_class"][0] += 1
        e["protected"][0].update(fn=3, fnr=3 / 10)
        e.pop("confusion"), e.pop("predictions")
    refused(total_by_one, "accuracy 0.95 is not 1 - its 3 false negatives / 40 rows")

    def consistently(e):
        total_by_one(e)
        e["predictions"] = pred.tolist()
        e["accuracy"] = 1 - 3 / 40
    refused(consistently, "per-sample predictions miss 2 of these rows")

    def other_counts(e):
        e["support_per_class"] = [11, 10, 10, 9]
        e.pop("confusion"), e.pop("predictions"), e.pop("recall_per_class", None)
    refused(other_counts, "other class counts")
