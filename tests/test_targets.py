"""Device profiles in targets/: every TOML validates, `cwtool targets`, user TOMLs, bad TOMLs, fit checks."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from toolchain.errors import UserError
from toolchain.device_fit import estimate_latency_ms, fit_check
from toolchain.targets import Target, list_targets, load_target, target_export_plan
from clirun import run_cli

TARGETS_DIR = Path(__file__).resolve().parents[1] / "targets"
TOMLS = sorted(TARGETS_DIR.glob("*.toml"))
REQUIRED = ("raspberry-pi-4", "raspberry-pi-5", "raspberry-pi-zero-2w", "android-arm64", "x86-edge")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, untrained_digits):
    """An untrained digits-cnn as fp32 ONNX and full-integer int8 NHWC TFLite (what raspberry-pi-4 asks for)."""
    from toolchain.export.onnx import export_onnx
    from toolchain.export.tflite import export_tflite

    model, x = untrained_digits
    d = tmp_path_factory.mktemp("targets")
    calib = np.random.default_rng(0).random((32, 1, 8, 8), dtype=np.float32)
    return {
        "onnx": export_onnx(model, x, d / "m.onnx"),
        "tflite": export_tflite(model, x, d / "m.tflite", precision="int8", layout="NHWC", calibration_x=calib),
    }


def _profile_text(path: Path) -> str:
    return path.read_text()


@pytest.mark.parametrize("path", TOMLS, ids=[p.stem for p in TOMLS])
def test_every_profile_loads_and_validates(path):
    t = load_target(path)
    assert isinstance(t, Target)
    assert t.name == path.stem, "a profile's name must match its file name"
    assert t.description and t.threads >= 1 and t.ram_mb > 0 and t.storage_mb > 0 and t.max_model_bytes > 0
    assert t.fp32_gmacs > 0 and t.int8_gmacs > 0 and t.fp16_gmacs > 0
    assert t.supported_ops or t.rejected_ops
    expected_layout = "NHWC" if t.format == "tflite" else "NCHW"
    assert t.layout == expected_layout
    text = _profile_text(path)
    assert re.search(r"^# source: ", text, re.M), "the throughput figure needs a '# source:' comment"
    assert "estimate" in t.throughput_source.lower()
    assert load_target(t.name) == t  # by name, the same profile
    plan = target_export_plan(t)
    assert plan["formats"] == [t.format] and plan["precision"] == t.precision and plan["threads"] == t.threads


def test_at_least_five_profiles_including_the_required_ones():
    names = [t.name for t in list_targets()]
    assert len(names) >= 5
    assert set(REQUIRED) <= set(names)


def test_raspberry_pi_4_plan_is_full_integer_int8_nhwc_tflite():
    plan = target_export_plan("raspberry-pi-4")
    assert plan == {
        "target": "raspberry-pi-4", "formats": ["tflite"], "runtime": "litert", "precision": "int8",
        "int8_scheme": "full-integer", "layout": "NHWC", "threads": 4, "channel_multiple": 8,
    }
    assert target_export_plan("x86-edge")["formats"] == ["onnx"]


def test_cli_lists_targets(capsys):
    code, out, _ = run_cli(["targets"], capsys)
    assert code == 0
    for name in REQUIRED:
        assert name in out


def test_cli_shows_one_target_and_writes_json(capsys, tmp_path):
    code, out, _ = run_cli(["targets", "raspberry-pi-zero-2w", "--json", tmp_path / "t.json"], capsys)
    assert code == 0
    assert "raspberry-pi-zero-2w" in out and "Cortex-A53" in out and "estimate" in out
    assert re.search(r"channel multiple\s+│\s+8 ", out)  # it shapes the pruning: shown (a targets reviewer's finding)
    data = json.loads((tmp_path / "t.json").read_text())
    assert data["ram_mb"] == 128 and data["export_plan"]["layout"] == "NHWC"


def _user_toml(tmp_path: Path, **override) -> Path:
    text = (TARGETS_DIR / "raspberry-pi-4.toml").read_text()
    text = text.replace('name = "raspberry-pi-4"', 'name = "my-board"')
    for key, value in override.items():
        text = re.sub(rf"^{key} = .*$", f"{key} = {value}", text, count=1, flags=re.M)
    path = tmp_path / "my-board.toml"
    path.write_text(text)
    return path


def test_user_toml_path_works(capsys, tmp_path):
    path = _user_toml(tmp_path, threads="2")
    t = load_target(path)
    assert t.name == "my-board" and t.threads == 2
    code, out, _ = run_cli(["targets", path], capsys)
    assert code == 0 and "my-board" in out


def test_a_profile_folder_lists_each_profile_under_the_name_target_takes(capsys, tmp_path, monkeypatch):
    """A profile in CWTOOL_TARGETS_DIR whose name field was a built-in's was listed twice under that name, and a run
    with --target mine reported "raspberry-pi-4"."""
    _user_toml(tmp_path, threads="2")
    monkeypatch.setenv("CWTOOL_TARGETS_DIR", str(tmp_path))
    code, out, _ = run_cli(["targets"], capsys)
    assert code == 0 and out.count("my-board") == 1 and out.count("raspberry-pi-4 ") == 1
    (tmp_path / "raspberry-pi-4.toml").write_text((tmp_path / "my-board.toml").read_text().replace("threads = 2", "threads = 3")
                                                  .replace('name = "my-board"', 'name = "raspberry-pi-4"'))
    assert load_target("raspberry-pi-4").threads == 3  # the folder comes first: it overrides the built-in, listed once
    code, out, _ = run_cli(["targets"], capsys)
    assert code == 0 and out.count("raspberry-pi-4 ") == 1
    (tmp_path / "mine.toml").write_text((TARGETS_DIR / "raspberry-pi-4.toml").read_text())
    code, _, err = run_cli(["targets", "mine"], capsys)
    assert code == 2 and "names itself 'raspberry-pi-4' but --target finds it as 'mine'" in err, err
    assert load_target(tmp_path / "mine.toml").name == "raspberry-pi-4"  # a path is not a name: no name to match
    code, out, err = run_cli(["targets"], capsys)  # the list goes on without it, and says so
    assert code == 0 and "my-board" in out and "mine" not in out, out
    assert err.strip().splitlines() == [
        f"cwtool: warning: left out of the list: target file {tmp_path / 'mine.toml'} names itself 'raspberry-pi-4' but "
        "--target finds it as 'mine': make its name field and its file name the same"], err


@pytest.mark.parametrize(
    "edit, field",
    [
        (lambda s: re.sub(r"^threads = .*\n", "", s, flags=re.M), "threads"),
        (lambda s: re.sub(r"^threads = .*$", 'threads = "four"', s, flags=re.M), "threads"),
        (lambda s: re.sub(r"^ram_mb = .*$", "ram_mb = -5", s, flags=re.M), "ram_mb"),
        (lambda s: re.sub(r"^precision = .*$", 'precision = "int4"', s, flags=re.M), "precision"),
        (lambda s: re.sub(r"^format = .*$", 'format = "onnx"', s, flags=re.M), "format"),
        (lambda s: re.sub(r"^int8_gmacs = .*\n", "", s, flags=re.M), "throughput.int8_gmacs"),
        (lambda s: s.replace('"CONV_2D",', "3,"), "operators.supported"),
        (lambda s: s + "\nthis is = not [toml\n", "TOML"),
        # a reviewer's findings: each was taken in silence, and changed what the profile meant
        (lambda s: s.replace("channel_multiple = 8", "channel_multiples = 8"), "unknown field 'channel_multiples': did you "
                                                                              "mean 'channel_multiple'?"),
        (lambda s: s.replace("supported = [", "suported = ["), "unknown field 'operators.suported': did you mean 'supported'?"),
        (lambda s: s.replace("fp16_gmacs = 12.0", "fp16_gmac = 99.0"), "unknown field 'throughput.fp16_gmac'"),
        (lambda s: s.split("[operators]")[0].replace('name = "raspberry-pi-4"', 'name = "raspberry-pi-4"\noperators = "none"'),
         "'operators' must be a table"),
        (lambda s: s.split("[operators]")[0] + "[operators]\n", "missing table '[operators]' or its lists"),
        (lambda s: s.replace('int8_scheme = "full-integer"', 'int8_scheme = "dynamic-range"'),
         "cwtool writes tflite int8 files as 'full-integer' only"),
        (lambda s: s.replace('name = "raspberry-pi-4"', 'name = " "'), "field 'name' is empty"),
    ],
    ids=["missing", "wrong-type", "negative", "bad-choice", "format-vs-runtime", "missing-nested", "ops-type", "syntax",
         "typo", "typo-nested", "typo-throughput", "operators-not-a-table", "operators-empty", "scheme-not-written", "empty-name"],
)
def test_bad_toml_is_a_one_line_user_error(capsys, tmp_path, edit, field):
    path = tmp_path / "bad.toml"
    path.write_text(edit((TARGETS_DIR / "raspberry-pi-4.toml").read_text()))
    with pytest.raises(UserError) as exc:
        load_target(path)
    msg = str(exc.value)
    assert "\n" not in msg and field in msg and "bad.toml" in msg
    code, _, err = run_cli(["targets", path], capsys)
    assert code == 2 and err.count("\n") == 1 and field in err


def test_unknown_target_name_lists_the_known_ones(capsys):
    code, _, err = run_cli(["targets", "no-such-board"], capsys)
    assert code == 2 and "raspberry-pi-4" in err


def test_fit_check_passes_on_a_roomy_target(artifacts):
    result = fit_check("raspberry-pi-4", artifacts["tflite"])
    assert result["fits"] is True and result["verdict"] == "fits" and result["warnings"] == []
    mem = result["checks"]["memory"]
    assert 0 < mem["estimate_bytes"] < mem["limit"] and "estimate" in mem["method"]
    lat = result["estimated_latency"]
    assert lat["estimate_ms"] > 0 and "estimate" in lat["note"] and lat["precision"] == "int8"
    assert fit_check("x86-edge", artifacts["onnx"])["fits"] is True


def test_fit_check_fails_on_tiny_max_model_bytes(artifacts, tmp_path):
    tiny = load_target(_user_toml(tmp_path, max_model_bytes="1000"))
    result = fit_check(tiny, artifacts["tflite"])
    assert result["fits"] is False and result["checks"]["bytes"]["ok"] is False
    assert "max_model_bytes" in result["verdict"]


def test_fit_check_names_an_unsupported_operator(artifacts, tmp_path):
    path = _user_toml(tmp_path)
    path.write_text(path.read_text().replace('"MAX_POOL_2D", ', ""))
    result = fit_check(load_target(path), artifacts["tflite"])
    assert result["fits"] is False
    assert result["checks"]["operators"]["unsupported"] == ["MAX_POOL_2D"]
    assert "MAX_POOL_2D" in result["verdict"]


def test_fit_check_rejects_a_wrong_format_and_too_little_ram(artifacts, tmp_path):
    assert "runs onnx" in fit_check("x86-edge", artifacts["tflite"])["verdict"]
    small = load_target(_user_toml(tmp_path, ram_mb="1"))  # 1 MiB < the runtime's own 20 MiB
    result = fit_check(small, artifacts["tflite"])
    assert result["fits"] is False and "ram_mb" in result["verdict"]


def test_latency_estimate_scales_with_macs_and_precision():
    t = load_target("raspberry-pi-4")
    a = estimate_latency_ms(t, 10_000_000, "fp32")
    assert a == pytest.approx(10_000_000 / (t.fp32_gmacs * 1e9) * 1e3 + t.overhead_ms)
    assert estimate_latency_ms(t, 10_000_000, "int8") < a < estimate_latency_ms(t, 20_000_000, "fp32")


def test_a_profile_asking_for_a_file_cwtool_does_not_write_is_refused(capsys, tmp_path):
    """ONNX fp16: export wrote fp32 and reported the profile as met."""
    path = tmp_path / "fp16.toml"
    path.write_text(re.sub(r"^precision = .*$", 'precision = "fp16"', (TARGETS_DIR / "x86-edge.toml").read_text(), flags=re.M))
    code, _, err = run_cli(["targets", path], capsys)
    assert code == 2 and "precision 'fp16' with format 'onnx'" in err.splitlines()[-1], err


def test_a_folder_named_like_a_target_file_is_named_a_folder(tmp_path):
    from toolchain.errors import UserError
    from toolchain.targets import load_target

    (tmp_path / "pi.toml").mkdir()
    with pytest.raises(UserError, match="is a folder, pipe or device"):
        load_target(tmp_path / "pi.toml")


@pytest.mark.parametrize("kind", ["fifo", "device", "large"])
def test_a_profile_that_is_no_file_or_too_large_is_refused_before_it_is_read(capsys, tmp_path, monkeypatch, kind):
    """A pipe found by name was read for ever (and hung the listing); /dev/zero behind a link, or a 1.5 GB file, was read
    whole into memory: exit 3 under a memory limit."""
    import os
    import signal

    from toolchain.targets import MAX_PROFILE_BYTES

    profile = tmp_path / "odd.toml"
    if kind == "fifo":
        os.mkfifo(profile)
    elif kind == "device":
        profile.symlink_to("/dev/zero")
    else:
        with open(profile, "wb") as f:
            f.truncate(MAX_PROFILE_BYTES + 1)
    _user_toml(tmp_path, threads="2")
    monkeypatch.setenv("CWTOOL_TARGETS_DIR", str(tmp_path))
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("read a profile that never ends")))
    signal.alarm(20)
    try:
        for args in (["targets", "odd"], ["targets", str(profile)]):
            code, _, err = run_cli(args, capsys)
            assert code == 2 and len(err.strip().splitlines()) == 1, err
            assert ("folder, pipe or device" if kind != "large" else f"more than {MAX_PROFILE_BYTES:,}") in err, err
        code, out, err = run_cli(["targets"], capsys)  # the list goes on without it, and says so
        assert code == 0 and "my-board" in out and "left out of the list: target file" in err, err
    finally:
        signal.alarm(0)


@pytest.mark.parametrize("value", ["/nonexistent/targets", "/dev/null"])
def test_a_targets_folder_that_is_no_folder_is_refused_not_passed_over(capsys, monkeypatch, value):
    """A CI variable with a typo made --target raspberry-pi-4 take the built-in profile instead of the team's own."""
    monkeypatch.setenv("CWTOOL_TARGETS_DIR", value)
    code, _, err = run_cli(["targets", "raspberry-pi-4"], capsys)
    assert code == 2 and f"CWTOOL_TARGETS_DIR '{value}' is not a folder" in err and len(err.strip().splitlines()) == 1, err


def test_a_targets_folder_is_taken_by_its_name_as_set(capsys, monkeypatch, tmp_path):
    """A folder named "tg " was refused as "tg", and a sibling "tg" would have been searched instead."""
    folder = tmp_path / "tg "
    folder.mkdir()
    _user_toml(folder, threads="2")
    (tmp_path / "tg").mkdir()
    monkeypatch.setenv("CWTOOL_TARGETS_DIR", str(folder))
    code, out, err = run_cli(["targets"], capsys)
    assert code == 0 and "my-board" in out, out + err


def test_a_profile_saved_with_a_byte_order_mark_loads(tmp_path):
    """Windows editors start UTF-8 files with a BOM: it read as "not valid TOML (line 1, column 1)"."""
    path = _user_toml(tmp_path)
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert load_target(path).name == "my-board"


@pytest.mark.parametrize("command", [["export", "MODEL", "--data", "digits", "-p", "3", "--out", "OUT"],
                                     ["compress", "MODEL", "--data", "digits", "-p", "3", "--out", "OUT"],
                                     ["bench", "ARTIFACT"]])
def test_an_empty_target_is_refused_not_taken_as_none(capsys, tmp_path, artifacts, command):
    """`--target "$TARGET"` with TARGET unset ran with no target at all: no fit check, no estimate, exit 0."""
    argv = [str(artifacts["onnx"]) if a == "ARTIFACT" else str(tmp_path / "m.pt") if a == "MODEL" else
            str(tmp_path / "out") if a == "OUT" else a for a in command]
    code, _, err = run_cli([*argv, "--target", ""], capsys)
    assert code == 2 and "--target is empty (an unset variable?)" in err and not (tmp_path / "out").exists(), err


def test_the_report_s_bench_hint_finds_the_profile_again():
    """A profile given by path was suggested by its name, which --target does not find."""
    from toolchain.report.fit import _target_argument

    built_in = TARGETS_DIR / "raspberry-pi-4.toml"
    assert _target_argument({"name": "raspberry-pi-4", "profile": str(built_in)}) == "raspberry-pi-4"
    assert _target_argument({"name": "my pi", "profile": "/boards/my pi.toml"}) == "'/boards/my pi.toml'"


def test_targets_of_an_empty_name_says_it_is_empty(capsys):
    code, _, err = run_cli(["targets", ""], capsys)
    assert code == 2 and "the target is empty (an unset variable?)" in err, err


@pytest.mark.parametrize("pattern, said", [
    ('"' + "[" * 5000 + '", ', "no [...] sets"),
    ('"' + "A" * 201 + '", ', "at most 200 characters"),
    ("".join(f'"OP{i}", ' for i in range(1001)), "operators; at most 1,000"),
])
def test_operator_patterns_that_would_keep_the_fit_check_busy_are_refused(tmp_path, pattern, said):
    """A profile of 67 KB whose first pattern held 64,000 '[' kept an export's fit check busy 108 s (fnmatch translates a
    pattern in time that grows with the square of its '['; a hostile-file reviewer's finding), then said "fits"."""
    path = _user_toml(tmp_path)
    text = path.read_text()
    assert "supported = [" in text
    path.write_text(text.replace("supported = [", "supported = [" + pattern, 1))
    with pytest.raises(UserError, match=re.escape(said)):
        load_target(path)
