"""The file to deploy (toolchain.deploy.recommend): the fastest file that passed the gate and fits,
ties to the smaller, and an int8 file slower than its fp32 twin said out loud."""

from __future__ import annotations

from toolchain.deploy import TIE, recommend
from toolchain.report.deploy import deploy_lines, deploy_sentences


def _entry(path, fmt, precision, nbytes, passed=True, fits=None, layout="NCHW"):
    entry = {"path": path, "format": fmt, "precision": precision, "bytes": nbytes, "layout": layout,
             "gate": {"passed": passed, "reasons": [] if passed else ["FN above the budget"]}}
    if fits is not None:
        entry["fit"] = {"fits": fits, "reasons": [] if fits else ["too large"]}
    return entry


def _timing(ms):
    return {"runtime_latency_ms": {"p50": ms}, "runs": 100, "machine": {"platform": "linux", "cpus": 2}}


def _recommend(entries, ms):
    return recommend(entries, {e["path"]: _timing(m) for e, m in zip(entries, ms)}, threads=1)


ONNX = [_entry("artifacts/model_fp32.onnx", "onnx", "fp32", 80_000), _entry("artifacts/model_int8.onnx", "onnx", "int8", 24_000)]
TFLITE = [_entry("artifacts/model_fp32_nchw.tflite", "tflite", "fp32", 80_000),
          _entry("artifacts/model_int8_nchw.tflite", "tflite", "int8", 23_000)]


def test_an_int8_file_slower_than_its_fp32_twin_is_a_finding_and_the_twin_is_deployed():
    deploy = _recommend(ONNX + TFLITE, [0.012, 0.021, 0.010, 0.006])
    onnx, tflite = deploy["choices"]
    assert onnx["file"] == "artifacts/model_fp32.onnx" and tflite["file"] == "artifacts/model_int8_nchw.tflite"
    (finding,) = deploy["findings"]
    assert finding.startswith("model_int8.onnx ran 1.75x slower than its fp32 twin model_fp32.onnx")
    assert "3.3x fewer bytes" in finding
    assert any(line.startswith("finding: model_int8.onnx") for line in deploy_sentences({"deploy": deploy}))
    md = "\n".join(deploy_lines({"deploy": deploy, "artifacts": ONNX + TFLITE}))
    assert "**Finding**" in md and "| model_fp32.onnx | 80,000 | 0.012 | passed | **yes** |" in md


def test_an_int8_file_no_smaller_than_its_twin_is_not_said_to_save_bytes():
    """A 6-feature MLP's int8 ONNX file (4,145 bytes) was larger than its fp32 twin (3,559): "int8 buys 0.9x fewer bytes"."""
    tiny = [_entry("artifacts/model_fp32.onnx", "onnx", "fp32", 3_559), _entry("artifacts/model_int8.onnx", "onnx", "int8", 4_145)]
    deploy = _recommend(tiny, [0.0079, 0.0128])
    (finding,) = deploy["findings"]
    assert "int8 buys neither speed nor bytes (4,145 against 3,559" in finding and "fewer bytes" not in finding
    md = "\n".join(deploy_lines({"deploy": deploy, "artifacts": tiny}))
    assert "deploy the fp32 file." in md and "unless bytes decide" not in md


def test_a_tie_goes_to_the_smaller_file():
    deploy = _recommend(ONNX, [0.0100, 0.0100 * (1 + TIE / 2)])
    assert deploy["choices"][0]["file"] == "artifacts/model_int8.onnx" and "smaller" in deploy["choices"][0]["why"]
    assert not deploy["findings"]  # within the tie: not slower
    deploy = _recommend(ONNX, [0.0100, 0.0100 * (1 + 2 * TIE)])
    assert deploy["choices"][0]["file"] == "artifacts/model_fp32.onnx" and len(deploy["findings"]) == 1


def test_the_choice_is_made_on_validation_and_the_test_rows_only_judge_it():
    """A faster int8 file that failed its re-check on test left its fp32 twin named instead: the test rows chose the file to
    deploy (a reviewer of "the test split decides nothing"). Now the chosen file is withheld, and its twin not named."""
    failed = [ONNX[0], _entry("artifacts/model_int8.onnx", "onnx", "int8", 24_000, passed=False)]
    (choice,) = _recommend(failed, [0.05, 0.01])["choices"]
    assert choice["file"] is None and choice["failed_recheck"] == "artifacts/model_int8.onnx", choice
    assert choice["why"].startswith("model_int8.onnx, the fastest here (0.01 ms per call) of the files within budget on validation, "
                                    "failed its re-check on test, so no file is recommended"), choice["why"]
    md = "\n".join(deploy_lines({"deploy": _recommend(failed, [0.05, 0.01]), "artifacts": failed}))
    assert "**yes**" not in md and "- onnx: none, model_int8.onnx" in md, md
    short_on_val = _entry("artifacts/model_int8.onnx", "onnx", "int8", 24_000, passed=False)  # its own offsets short on validation
    short_on_val["quantization"] = {"within_budget_on_val": False}
    (choice,) = _recommend([ONNX[0], short_on_val], [0.05, 0.01])["choices"]
    assert choice["file"] == "artifacts/model_fp32.onnx" and choice["why"].endswith("and it passed its re-check on test"), choice
    assert _recommend([ONNX[0], {**short_on_val, "gate": {"passed": True}}], [0.05, 0.01])["choices"][0]["file"] == ONNX[0]["path"]
    too_big = [_entry("a/f.tflite", "tflite", "fp32", 9, fits=False), _entry("a/i.tflite", "tflite", "int8", 3, fits=True)]
    assert _recommend(too_big, [0.001, 0.5])["choices"][0]["file"] == "a/i.tflite"
    none = _recommend([_entry("a/f.onnx", "onnx", "fp32", 9, passed=False)], [0.001])
    assert none["choices"][0]["file"] is None and "failed its re-check on test" in none["choices"][0]["why"]
    (sentence,) = deploy_sentences({"deploy": none})
    assert sentence.startswith("deploy (onnx): none, f.onnx, the fastest here"), sentence
    (choice,) = _recommend([short_on_val], [0.01])["choices"]
    assert choice == {"format": "onnx", "file": None, "why": "no file of this format kept the promise on validation"}


def test_no_timing_names_nothing():
    deploy = recommend(ONNX, {}, threads=1)
    assert not deploy["timed"] and [c["file"] for c in deploy["choices"]] == [None]
    assert deploy_sentences({"deploy": deploy}) == ["deploy (onnx): not timed, so none chosen; passed the gate: model_fp32.onnx, "
                                                    "model_int8.onnx"]
    assert "not timed" in "\n".join(deploy_lines({"deploy": deploy}))
    # a failed run untimed said only "files not timed", no word that no file passed (a new user's finding)
    failed = recommend([_entry("a/f.onnx", "onnx", "fp32", 9, passed=False), *TFLITE], {}, threads=1)
    lines = deploy_lines({"deploy": failed})
    assert "- onnx: none, no file of this format within budget on validation passed its re-check on test." in lines, lines
    assert any(line.startswith("- tflite: not timed, so none chosen; passed the gate: `") for line in lines), lines
    # a run that withholds every file still says so untimed: "files not timed" alone beside a failed gate (a new user's finding)
    withheld = recommend(ONNX + TFLITE, {}, threads=1, withheld="the run did not keep the FN promise")
    assert [c["file"] for c in withheld["choices"]] == [None, None]
    assert deploy_sentences({"deploy": withheld}) == ["deploy (onnx): none, the run did not keep the FN promise",
                                                      "deploy (tflite): none, the run did not keep the FN promise"]
    assert "- tflite: none, the run did not keep the FN promise." in deploy_lines({"deploy": withheld})


def test_a_finding_advises_its_fp32_twin_only_where_that_file_is_recommended():
    """A run that recommended no file said "no file is recommended" and then "deploy the fp32 file unless bytes decide" in
    the same section (a new user's finding); so did a run whose fp32 twin failed its gate."""
    times = [0.012, 0.021, 0.010, 0.006]
    withheld = recommend(ONNX + TFLITE, {e["path"]: _timing(m) for e, m in zip(ONNX + TFLITE, times)}, threads=1,
                         withheld="the run did not keep the FN promise on validation")
    md = "\n".join(deploy_lines({"deploy": withheld, "artifacts": ONNX + TFLITE}))
    assert "**Finding**: model_int8.onnx ran 1.75x slower" in md and "deploy the fp32 file" not in md, md
    twin_failed = [_entry("artifacts/model_fp32.onnx", "onnx", "fp32", 80_000, passed=False), ONNX[1]]
    deploy = _recommend(twin_failed, [0.012, 0.021])
    assert deploy["choices"][0]["file"] is None and len(deploy["findings"]) == 1  # the fp32 file, chosen, failed on test
    assert "deploy the fp32 file" not in "\n".join(deploy_lines({"deploy": deploy, "artifacts": twin_failed}))
    kept = _recommend(ONNX, [0.012, 0.021])
    assert "; deploy the fp32 file unless bytes decide." in "\n".join(deploy_lines({"deploy": kept, "artifacts": ONNX}))


def test_files_that_failed_on_test_accuracy_alone_are_told_what_that_means():
    """Every file's FN within budget, every file under the accuracy floor on 180 test rows: 'none' was all a new user got."""
    def failed(path, accuracy_only, value=0.95):
        entry = _entry(path, "onnx", "fp32", 80_000, passed=False)
        entry["gate"].update(accuracy={"passed": False, "value": value, "floor": 0.955}, checks=[{"passed": accuracy_only}])
        entry["evaluation"] = {"n": 180}
        return entry

    (choice,) = _recommend([failed("artifacts/model_fp32.onnx", True)], [0.01])["choices"]
    assert choice["file"] is None and "failed on test accuracy alone; on 180 test rows one row is 0.56 points" in choice["why"]
    # 13 rows under the floor (a validation split without one class had hidden what its offset cost): not one draw's noise
    (choice,) = _recommend([failed("artifacts/model_fp32.onnx", True, value=0.955 - 13 / 180)], [0.01])["choices"]
    assert "one row is" not in choice["why"] and "about 13 of 180 test rows) under the floor" in choice["why"], choice["why"]
    assert "hold every class" in choice["why"]
    (choice,) = _recommend([failed("artifacts/model_fp32.onnx", False)], [0.01])["choices"]
    assert choice["why"].endswith("do not choose its twin instead)")  # an FN failure is its own news


def test_with_a_target_the_file_named_is_the_fastest_the_target_s_profile_estimates():
    """--target raspberry-pi-4: the report's target table estimated the int8 file at 0.28 ms on the Pi and the fp32 one at
    0.51 ms, while "which file to deploy" named the fp32 file from this x86 machine's timing and advised it again in a
    finding. With every file estimated, the estimate names the file, and the finding says the device may differ."""
    from toolchain.report.deploy import deploy_lines

    files = [_entry("artifacts/model_fp32_nhwc.tflite", "tflite", "fp32", 62_548, fits=True),
             _entry("artifacts/model_int8_nhwc.tflite", "tflite", "int8", 21_000, fits=True)]
    for entry, ms in zip(files, (0.5139, 0.2819)):
        entry["fit"]["estimated_latency"] = {"estimate_ms": ms}
    deploy = _recommend(files, [0.147, 0.21])  # int8 1.43x slower here
    (choice,) = deploy["choices"]
    assert choice["file"] == "artifacts/model_int8_nhwc.tflite", choice
    assert "the fastest on the target by its profile's estimate (0.282 ms per call; here 0.21 ms)" in choice["why"]
    assert "estimates it faster there (0.282 ms vs 0.514 ms)" in deploy["findings"][0]
    assert "deploy the fp32 file" not in "\n".join(deploy_lines({"deploy": deploy, "artifacts": files}))
    files[1]["fit"].pop("estimated_latency")  # one file estimated, one not: this machine's timing for both, not a mix
    (mixed,) = _recommend(files, [0.147, 0.21])["choices"]
    assert mixed["file"] == "artifacts/model_fp32_nhwc.tflite" and "the fastest here (0.147 ms per call)" in mixed["why"], mixed
    for entry in files:  # no estimate (a profile without throughput): this machine's timing, as before
        entry["fit"].pop("estimated_latency", None)
    assert _recommend(files, [0.147, 0.21])["choices"][0]["file"] == "artifacts/model_fp32_nhwc.tflite"


def test_a_file_chosen_that_failed_on_test_is_re_checked_as_not_recommended_and_untimed_failures_are_explained():
    """The re-check command named the int8 file that failed on test as "the file to deploy", beside "no file is
    recommended"; untimed, files that failed on test accuracy alone lost their advice (the regression reviewer's)."""
    from toolchain.report.markdown import recheck_lines

    failed = [ONNX[0], _entry("artifacts/model_int8.onnx", "onnx", "int8", 24_000, passed=False)]
    report = {"data": {"name": "digits", "seed": 0}, "protected": [3], "class_names": [],
              "deploy": _recommend(failed, [0.05, 0.01]), "artifacts": failed}
    text = "\n".join(recheck_lines(report, "report.json"))
    assert "Re-check the file chosen on validation (`model_int8.onnx` failed its re-check on test: not recommended)" in text, text
    assert "cwtool verify artifacts/model_int8.onnx --data digits" in text and "the file to deploy" not in text, text

    def accuracy_only(path, precision):
        entry = _entry(path, "onnx", precision, 80_000, passed=False)
        entry["gate"].update(accuracy={"passed": False, "value": 0.95, "floor": 0.955}, checks=[{"passed": True}])
        entry["evaluation"] = {"n": 180}
        return entry

    (choice,) = recommend([accuracy_only("a/f.onnx", "fp32"), accuracy_only("a/i.onnx", "int8")], {}, threads=1)["choices"]
    assert choice["why"].startswith("no file of this format within budget on validation passed its re-check on test: every "
                                    "file kept its FN within budget and failed on test accuracy alone; on 180 test rows"), choice


def test_an_untimed_run_re_checks_a_file_that_passed():
    """A failed run with --time-runs 0 named its failed int8 file in "Re-check a file here" (a new user's finding)."""
    from toolchain.report.markdown import recheck_lines

    report = {"data": {"name": "digits", "seed": 0}, "protected": [3], "class_names": [],
              "deploy": recommend(ONNX, {}, threads=1),
              "artifacts": [{"path": "artifacts/model_fp32.onnx", "precision": "fp32", "gate": {"passed": True}},
                            {"path": "artifacts/model_int8.onnx", "precision": "int8", "gate": {"passed": False}}]}
    text = "\n".join(recheck_lines(report, "report.json"))
    assert "cwtool verify artifacts/model_fp32.onnx --data digits" in text and "model_int8" not in text, text
    report["artifacts"][1]["gate"]["passed"] = True  # both passed: the int8 file, the one a device most likely runs
    assert "cwtool verify artifacts/model_int8.onnx" in "\n".join(recheck_lines(report, "report.json"))


def test_a_failed_run_s_files_read_not_to_ship_and_no_re_check_is_offered():
    """A run that recommended no file showed "pass" for each file in its results table, "passed" in its deploy table and
    a verify command to re-check one (which verify now fails): a sign-off reviewer read them as files to ship."""
    from toolchain.report.markdown import ledger_rows, recheck_lines

    files = [{**a, "evaluation": {"accuracy": 0.9, "protected": []}, "format": "onnx", "runtime": "onnxruntime"} for a in ONNX]
    withheld = recommend(ONNX, {e["path"]: _timing(m) for e, m in zip(ONNX, [0.012, 0.021])}, threads=1,
                         withheld="the run did not keep the FN promise on validation")
    report = {"data": {"name": "digits", "seed": 0}, "protected": [3], "class_names": [], "deploy": withheld, "artifacts": files,
              "promise": {"met_on_val": False}, "baseline": {"params": 10, "test": {}}, "stages": []}
    assert [r["verdict"] for r in ledger_rows(report)[1:]] == ["pass, not to ship: the run failed"] * 2
    md = "\n".join(deploy_lines(report))
    assert md.count("| passed, not to ship: the run failed |") == 2 and "| passed |" not in md, md
    text = "\n".join(recheck_lines(report, "report.json"))
    assert "cwtool verify artifacts" not in text and "the run recommended none" in text, text
    exported = {**report, "promise": None, "compress_run": {"budget_met": False}}  # an export of such a run's pruned.pt
    assert "the run recommended none" in "\n".join(recheck_lines(exported, "export.json"))
    kept = {**report, "promise": {"met_on_val": True}, "deploy": recommend(ONNX, {}, threads=1)}
    assert [r["verdict"] for r in ledger_rows(kept)[1:]] == ["pass"] * 2
    assert "cwtool verify artifacts/model_int8.onnx" in "\n".join(recheck_lines(kept, "report.json"))


def test_a_failed_run_s_plot_caption_and_odd_records_in_an_edited_report():
    """report.html's rounds.png caption still said "the shipped ticket" of a failed run; a compress_run record that is no
    object ended render_report in AttributeError (a regression reviewer's fuzzing of report.json)."""
    from toolchain.report.deploy import run_failed
    from toolchain.report.plots import caption

    assert "the run's ticket (not to ship: the run failed)" in caption("rounds.png", {"promise": {"met_on_val": False}})
    assert "the shipped ticket" in caption("rounds.png", {"promise": {"met_on_val": True}})
    for odd in ("x", 3, True, ["budget_met"], None):
        assert run_failed({"compress_run": odd, "promise": odd}) is False
