"""Runners, artifact_info and graph descriptions: loading, batching, layouts, int8 I/O, errors, the format
registry, and no torch/tensorflow import on the device tier."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from clirun import run_cli

from toolchain.errors import UserError
from toolchain.runtimes import artifact_info, describe_graph, load_runner, sidecar_path
from toolchain.runtimes.base import dequantize_output, guess_layout, quantize_input

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    """Small artifacts from an untrained (seeded) digits-cnn: the runner, not the model, is under test."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("litert_torch")
    from toolchain.export.onnx import export_onnx
    from toolchain.export.tflite import export_tflite
    from toolchain.models import registry

    out = tmp_path_factory.mktemp("rt")
    torch.manual_seed(0)
    model = registry.create("digits-cnn", width=8).eval()
    x = np.random.default_rng(0).random((50, 1, 8, 8), dtype=np.float32)
    with torch.no_grad():
        ref = model(torch.from_numpy(x)).numpy()
    ex = torch.from_numpy(x[:1])
    return {
        "x": x,
        "ref": ref,
        "onnx": export_onnx(model, ex, out / "m.onnx"),
        "onnx_static": export_onnx(model, ex, out / "m_static.onnx", static_batch=1),
        "tflite": export_tflite(model, ex, out / "m.tflite"),
        "tflite_int8_nhwc": export_tflite(model, ex, out / "m8.tflite", "int8", "NHWC", calibration_x=x),
    }


def test_runtimes_import_neither_torch_nor_tensorflow(artifacts):
    code = textwrap.dedent(
        f"""
        import sys
        import numpy as np
        import toolchain.runtimes as rt
        x = np.zeros((3, 1, 8, 8), np.float32)
        for p in [{str(artifacts['onnx'])!r}, {str(artifacts['tflite'])!r}, {str(artifacts['tflite_int8_nhwc'])!r}]:
            r = rt.load_runner(p)
            assert r.predict(x).shape == (3, 10)
            rt.artifact_info(p)
            rt.describe_graph(p)
        bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'litert_torch')]
        assert not bad, bad
        print('ok')
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ok" in res.stdout


def test_device_tier_imports_neither_torch_nor_tensorflow():
    """Everything `cwtool verify`, `cwtool bench` and the fit check load on a device: numpy, typer and one runtime."""
    code = textwrap.dedent(
        """
        import importlib, pkgutil, sys
        import toolchain.report
        modules = ["toolchain.runtimes", "toolchain.runtimes.formats", "toolchain.runtimes.graph",
                   "toolchain.runtimes.onnx_graph", "toolchain.runtimes.litert_graph", "toolchain.verify", "toolchain.baseline",
                   "toolchain.gate", "toolchain.metrics", "toolchain.targets", "toolchain.device_fit", "toolchain.bench", "toolchain.runtimes.parts",
                   "toolchain.provenance"]
        modules += [f"toolchain.report.{m.name}" for m in pkgutil.iter_modules(toolchain.report.__path__)]
        for name in modules:
            importlib.import_module(name)
        assert len(modules) > 12, modules
        heavy = sorted(m for m in ("torch", "tensorflow", "litert_torch") if m in sys.modules)
        assert not heavy, heavy
        print("ok")
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


def test_the_suffix_picks_the_format():
    from toolchain.runtimes import DEVICE_FORMATS, FORMATS, device_format

    assert FORMATS == {".onnx": "onnx", ".tflite": "tflite"}
    for fmt in DEVICE_FORMATS.values():
        assert device_format(Path("m" + fmt.suffix.upper())) is fmt
    assert DEVICE_FORMATS["onnx"].export_layout("NHWC") == "NCHW" and DEVICE_FORMATS["tflite"].export_layout("NHWC") == "NHWC"
    with pytest.raises(UserError, match=r"\.onnx and \.tflite"):
        device_format("model.pt")


@pytest.mark.parametrize("name, op", [("onnx", "Conv"), ("tflite_int8_nhwc", "CONV_2D")])
def test_describe_graph_counts_macs_and_operators(artifacts, name, op):
    # digits-cnn width 8: conv 1->8 (8x8), conv 8->16 (8x8), maxpool, conv 16->16 (4x4), GAP, fc 16->10
    macs = 64 * 8 * 9 + 64 * 16 * 8 * 9 + 16 * 16 * 16 * 9 + 16 * 10
    info = describe_graph(artifacts[name])
    assert info["format"] == ("onnx" if name == "onnx" else "tflite")
    assert info["macs"] == macs and op in info["ops"]
    assert info["weight_bytes"] > 0 and info["activation_peak_bytes"] > 0
    with pytest.raises(UserError, match="does not exist"):
        describe_graph(artifacts[name].with_name("missing" + artifacts[name].suffix))


def test_activation_peak_frees_each_tensor_after_its_last_consumer():
    from toolchain.runtimes.graph import activation_peak, static_nbytes

    assert static_nbytes([-1, 3, 4], 4) == 48  # a dynamic batch counts as 1
    # in -> a -> b -> out, with `in` read again by the last op: a residual keeps it alive
    order = [(["in"], ["a"]), (["a"], ["b"]), (["b", "in"], ["out"])]
    sizes = {"in": 10, "a": 100, "b": 1000, "out": 1}
    assert activation_peak(order, sizes, ["in"], ["out"]) == 10 + 100 + 1000
    chain = [(["in"], ["a"]), (["a"], ["b"]), (["b"], ["out"])]
    assert activation_peak(chain, sizes, ["in"], ["out"]) == 1000 + 100  # `in` is gone once `a` exists


@pytest.mark.parametrize("name", ["onnx", "onnx_static", "tflite", "tflite_int8_nhwc"])
def test_batching_gives_the_same_logits(artifacts, name):
    runner = load_runner(artifacts[name])
    x = artifacts["x"]
    whole = runner.predict(x, batch_size=256)
    parts = runner.predict(x, batch_size=7)
    single = np.concatenate([runner.predict(x[i : i + 1]) for i in range(5)])
    assert whole.shape == (50, 10) and whole.dtype == np.float32
    np.testing.assert_allclose(whole, parts, atol=1e-5)
    np.testing.assert_allclose(whole[:5], single, atol=1e-5)
    if name != "tflite_int8_nhwc":
        np.testing.assert_allclose(whole, artifacts["ref"], atol=1e-4)
    assert runner.predict(x[:0]).shape == (0, 10)


@pytest.mark.parametrize("name", ["onnx", "onnx_static", "tflite", "tflite_int8_nhwc"])
def test_bound_call_gives_the_runtimes_raw_output_for_the_sample(artifacts, name):
    runner = load_runner(artifacts[name])
    x = artifacts["x"][3:4]
    call = runner.bound_call(x)
    raw = np.asarray(call()).reshape(1, -1)
    if runner.output_dtype.kind in "iu":  # int8 output: what the runtime returns, before dequantization
        raw = dequantize_output(raw, runner.output_quant[0], int(runner.output_quant[1]))
    np.testing.assert_allclose(raw, runner.predict(x), atol=1e-5)
    np.testing.assert_allclose(np.asarray(call()).reshape(1, -1).astype(np.float32), np.asarray(call()).reshape(1, -1).astype(np.float32))


def test_runner_attributes(artifacts):
    r = load_runner(artifacts["tflite_int8_nhwc"], threads=2)
    assert r.runtime.startswith("ai-edge-litert ")
    assert r.layout == "NHWC" and r.input_shape == (1, 8, 8, 1)
    assert r.input_dtype == np.int8 and r.output_dtype == np.int8 and r.num_classes == 10
    assert r.dataset_sample_shape() == (1, 8, 8)
    d = r.describe()
    assert d["layout"] == "NHWC" and d["input_dtype"] == "int8"
    o = load_runner(artifacts["onnx"], threads=2)
    assert o.runtime.startswith("onnxruntime ") and o.layout == "NCHW" and o.num_classes == 10
    assert o.input_dtype == np.float32 and o.input_shape == (-1, 1, 8, 8)


def test_layout_without_sidecar_is_inferred(artifacts, tmp_path):
    src = artifacts["tflite_int8_nhwc"]
    bare = tmp_path / "bare.tflite"
    shutil.copy(src, bare)
    assert not sidecar_path(bare).exists()
    runner = load_runner(bare)
    assert runner.layout == "NHWC" and runner.layout_source == "guess"
    np.testing.assert_allclose(runner.predict(artifacts["x"]), load_runner(src).predict(artifacts["x"]), atol=1e-6)
    # an explicit layout argument wins
    assert load_runner(artifacts["tflite"], layout="nchw").layout == "NCHW"
    with pytest.raises(UserError):
        load_runner(artifacts["tflite"], layout="CHWN")


def test_sidecar_is_written_and_read(artifacts):
    side = json.loads(sidecar_path(artifacts["tflite_int8_nhwc"]).read_text())
    assert side["layout"] == "NHWC" and side["precision"] == "int8" and side["num_classes"] == 10


def test_artifact_info(artifacts):
    info = artifact_info(artifacts["tflite_int8_nhwc"])
    assert info["format"] == "tflite" and info["precision"] == "int8" and info["bytes"] > 0
    assert info["input_shape"] == [1, 8, 8, 1] and info["output_shape"] == [1, 10]
    assert info["input_dtype"] == "int8" and info["output_dtype"] == "int8"
    info = artifact_info(artifacts["onnx"])
    assert info["format"] == "onnx" and info["precision"] == "fp32" and info["layout"] == "NCHW"
    with pytest.raises(UserError):
        artifact_info(artifacts["onnx"].with_suffix(".pt"))


@pytest.mark.parametrize("suffix", [".onnx", ".tflite"])
def test_corrupt_missing_or_empty_file_is_a_user_error(tmp_path, suffix):
    bad = tmp_path / f"bad{suffix}"
    bad.write_bytes(b"this is not a model" * 10)
    for path in (bad, tmp_path / f"missing{suffix}"):
        with pytest.raises(UserError) as e:
            load_runner(path)
        assert "\n" not in str(e.value)
    empty = tmp_path / f"empty{suffix}"
    empty.write_bytes(b"")
    with pytest.raises(UserError):
        load_runner(empty)


def test_unsupported_extension_is_a_user_error(tmp_path):
    (tmp_path / "model.pt").write_bytes(b"x")
    with pytest.raises(UserError, match="unsupported"):
        load_runner(tmp_path / "model.pt")
    # a folder (an export's artifacts/) is named as one, not as a suffix cwtool does not run (a reviewer's finding)
    with pytest.raises(UserError, match=r"is a folder: give the \.onnx or \.tflite files in it"):
        load_runner(tmp_path)


@pytest.mark.parametrize("name", ["onnx", "onnx_static", "tflite", "tflite_int8_nhwc"])
def test_wrong_sample_shape_is_a_user_error(artifacts, name):
    runner = load_runner(artifacts[name])
    for bad in (np.zeros((4, 1, 9, 9), np.float32), np.zeros((4, 64), np.float32), np.zeros((4, 8, 8, 1), np.float32), np.zeros(4, np.float32)):
        with pytest.raises(UserError) as e:
            runner.predict(bad)
        assert "\n" not in str(e.value)


def test_quantization_helpers():
    x = np.array([-1.0, 0.0, 0.5, 10.0], np.float32)
    q = quantize_input(x, np.dtype(np.int8), 0.01, -128)
    assert q.dtype == np.int8 and q.tolist() == [-128, -128, -78, 127]
    assert quantize_input(x, np.dtype(np.uint8), 0.5, 10).tolist() == [8, 10, 11, 30]
    np.testing.assert_allclose(dequantize_output(np.array([-128, 0, 127], np.int8), 0.5, -128), [0.0, 64.0, 127.5])
    assert guess_layout((1, 8, 8, 1)) == "NHWC" and guess_layout((1, 1, 8, 8)) == "NCHW"
    assert guess_layout((1, 3, 32, 32)) == "NCHW" and guess_layout((1, 30)) == "NC"


@pytest.mark.parametrize("counts, expected", [
    ({"float32": 5000}, "fp32"),
    ({"float32": 5000, "int64": 4}, "fp32"),  # shape constants are no quantization
    ({"int8": 50000, "float32": 300, "int32": 40}, "int8"),
    ({"int8": 203, "float32": 5120}, "int8"),  # most layers kept in float by the FN fallback: still an int8 file
    ({"uint8": 10, "float32": 100}, "int8"),
    ({"float16": 5000, "float32": 5000}, "fp16"),
])
def test_precision_from_counts(counts, expected):
    from toolchain.runtimes.base import precision_from_counts

    assert precision_from_counts(counts) == expected


def test_litert_keeps_its_info_lines_off_stderr(artifacts, tmp_path):
    """Interpreters (the single-row one and the batched one) are built without LiteRT's
    'INFO: Created TensorFlow Lite XNNPACK delegate' line reaching the terminal. A fresh process:
    LiteRT prints that line once per process, and this one has built interpreters already."""
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", artifacts["x"][:7])
    code = ("import numpy as np, sys; from toolchain.runtimes import load_runner; "
            "r = load_runner(sys.argv[1]); r.predict(np.load(sys.argv[2])); print('ran', r.runtime)")
    done = subprocess.run([sys.executable, "-c", code, str(artifacts["tflite_int8_nhwc"]), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ran ai-edge-litert"), done.stderr
    assert "INFO:" not in done.stderr and "XNNPACK" not in done.stderr, done.stderr


@pytest.mark.parametrize("how", ["fd 2 closed", "sys.stderr None"])
def test_litert_runs_with_stderr_closed(artifacts, tmp_path, how):
    import subprocess
    import sys

    np.save(tmp_path / "x.npy", artifacts["x"][:3])
    close = "os.close(2)" if how == "fd 2 closed" else "sys.stderr = None"
    code = (f"import os, sys, numpy as np; {close}; from toolchain.runtimes import load_runner; "
            "r = load_runner(sys.argv[1]); print(r.predict(np.load(sys.argv[2])).shape)")
    done = subprocess.run([sys.executable, "-c", code, str(artifacts["tflite_int8_nhwc"]), str(tmp_path / "x.npy")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "(3, 10)", (done.stdout, done.stderr)


# ---- untrusted artifacts: runtime failures, metadata, shapes, threads -----------------------------------


def _boom(*args, **kwargs):
    raise RuntimeError("Node number 6 (TfLiteXNNPackDelegate) failed to prepare.\nsecond line")


def _one_line_user_error(excinfo, path) -> str:
    text = str(excinfo.value)
    assert "\n" not in text and str(path) in text and "re-export" in text, text
    return text


def test_onnx_session_run_failure_is_a_user_error(artifacts, monkeypatch):
    import onnxruntime

    runner = load_runner(artifacts["onnx"])
    monkeypatch.setattr(onnxruntime.InferenceSession, "run", _boom)
    with pytest.raises(UserError) as e:
        runner.predict(artifacts["x"][:3])
    assert "failed to run" in _one_line_user_error(e, artifacts["onnx"])
    static = load_runner(artifacts["onnx_static"])  # the padded static-batch path
    with pytest.raises(UserError):
        static.predict(artifacts["x"][:3])


def test_onnx_iobinding_failure_is_a_user_error(artifacts, monkeypatch):
    import onnxruntime

    call = load_runner(artifacts["onnx"]).bound_call(artifacts["x"][:1])
    monkeypatch.setattr(onnxruntime.InferenceSession, "run_with_iobinding", _boom)
    with pytest.raises(UserError) as e:
        call()
    _one_line_user_error(e, artifacts["onnx"])


@pytest.mark.parametrize("method", ["set_tensor", "invoke", "get_tensor"])
def test_litert_run_failures_are_user_errors(artifacts, monkeypatch, method):
    from ai_edge_litert.interpreter import Interpreter

    for name in ("tflite", "tflite_int8_nhwc"):
        runner = load_runner(artifacts[name])
        call = runner.bound_call(artifacts["x"][:1])
        monkeypatch.setattr(Interpreter, method, _boom)
        for run in (lambda: runner.predict(artifacts["x"][:1]), lambda: runner.predict(artifacts["x"][:5]), call):
            with pytest.raises(UserError) as e:
                run()
            _one_line_user_error(e, artifacts[name])
        monkeypatch.undo()


def test_litert_allocate_failure_is_a_user_error(artifacts, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.setattr(Interpreter, "allocate_tensors", _boom)
    with pytest.raises(UserError) as e:
        load_runner(artifacts["tflite"])
    assert "allocate" in _one_line_user_error(e, artifacts["tflite"])


def test_litert_resize_failure_falls_back_to_single_rows_then_is_a_user_error(artifacts, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    art = artifacts["tflite_int8_nhwc"]  # one whose graph survives a batch resize
    want = load_runner(art).predict(artifacts["x"][:6])
    runner = load_runner(art)
    monkeypatch.setattr(Interpreter, "resize_tensor_input", _boom)
    np.testing.assert_allclose(runner.predict(artifacts["x"][:6]), want, atol=1e-6)
    assert runner.batched is False  # the failed batch trial is remembered: rows one by one
    monkeypatch.undo()
    runner = load_runner(art)
    runner.predict(artifacts["x"][:6])
    assert runner.batched is True
    monkeypatch.setattr(Interpreter, "resize_tensor_input", _boom)
    with pytest.raises(UserError) as e:  # a batch size not seen before: resized again, and that fails
        runner.predict(artifacts["x"][:5])
    _one_line_user_error(e, art)


def test_artifact_info_read_failures_are_user_errors(artifacts, monkeypatch):
    import onnx
    from ai_edge_litert.interpreter import Interpreter

    monkeypatch.setattr(onnx, "load", _boom)
    with pytest.raises(UserError) as e:
        artifact_info(artifacts["onnx"])
    _one_line_user_error(e, artifacts["onnx"])
    monkeypatch.undo()
    monkeypatch.setattr(onnx.numpy_helper, "to_array", _boom)
    with pytest.raises(UserError):
        artifact_info(artifacts["onnx"])
    monkeypatch.undo()
    monkeypatch.setattr(Interpreter, "get_tensor_details", _boom)
    with pytest.raises(UserError) as e:
        artifact_info(artifacts["tflite"])
    _one_line_user_error(e, artifacts["tflite"])


def test_odd_tensor_details_are_skipped_in_counts():
    from toolchain.runtimes.litert import tensor_sizes

    counts, total = tensor_sizes([
        {"dtype": np.float32, "shape": np.array([1, 10], np.int32)},
        {"dtype": np.int8, "shape": np.array([], np.int32)},  # a scalar
        {"dtype": None, "shape": [3]},  # np.dtype(None) is float64: still a number
        {"dtype": "not a dtype", "shape": [4]},
        {"shape": [5]},
        {"dtype": np.int8, "shape": [-1, 4]},  # negative dims count as 0
    ])
    assert counts == {"float32": 10, "int8": 1, "float64": 3} and total == 40 + 1 + 24


def test_our_own_bugs_still_surface(artifacts, monkeypatch):
    """Only the runtime's calls are wrapped: an error in cwtool's code around them is not bad input."""
    import toolchain.runtimes.litert as litert

    def bug(*args, **kwargs):
        raise TypeError("a bug in cwtool")

    runner = load_runner(artifacts["tflite_int8_nhwc"])
    monkeypatch.setattr(litert, "quantize_input", bug)
    with pytest.raises(TypeError):
        runner.predict(artifacts["x"][:2])


def _copy(src: Path, dest: Path, sidecar=None) -> Path:
    shutil.copy(src, dest)
    if sidecar is not None:
        sidecar_path(dest).write_text(sidecar if isinstance(sidecar, str) else json.dumps(sidecar))
    return dest


@pytest.mark.parametrize("sidecar", [
    {"num_classes": "abc", "layout": 5},
    {"num_classes": 1e12},
    {"num_classes": [10], "layout": ["NCHW"]},
    {"num_classes": True, "layout": None},
    {"num_classes": float("nan")},
    {"num_classes": "10", "layout": "nchw"},
    [1, 2, 3],
    "{not json",
    "[" * 100_000,  # nested too deep for json: RecursionError
])
@pytest.mark.parametrize("name", ["onnx", "tflite"])
def test_sidecar_with_wrong_types_is_ignored(artifacts, tmp_path, name, sidecar):
    art = _copy(artifacts[name], tmp_path / f"m.{name}", sidecar)
    runner = load_runner(art)
    assert runner.num_classes == 10 and runner.layout == "NCHW"
    assert runner.predict(artifacts["x"][:3]).shape == (3, 10)
    assert artifact_info(art)["num_classes"] == 10


@pytest.mark.parametrize("sidecar, match", [
    ({"layout": "CHWN"}, "layout"),
    ({"num_classes": 7}, "num_classes 7"),
    ({"num_classes": "3"}, "num_classes 3"),
])
def test_sidecar_that_contradicts_the_file_is_a_user_error(artifacts, tmp_path, sidecar, match):
    art = _copy(artifacts["tflite"], tmp_path / "m.tflite", sidecar)
    with pytest.raises(UserError, match=match) as e:
        load_runner(art)
    assert "\n" not in str(e.value) and "sidecar" in str(e.value)


def test_huge_sidecar_is_ignored(artifacts, tmp_path):
    from toolchain.runtimes.base import MAX_SIDECAR_BYTES

    art = _copy(artifacts["tflite"], tmp_path / "m.tflite", '{"layout": "NHWC", "pad": "' + "x" * MAX_SIDECAR_BYTES + '"}')
    assert load_runner(art).layout == "NCHW"


def test_onnx_metadata_is_measured_on_the_wire_and_a_huge_one_refused_before_any_parser_reads_it(artifacts, tmp_path,
                                                                                                   monkeypatch):
    """A file holding 100 MB of one metadata value took verify to 1.4 GB (onnx and onnxruntime read it whole, each in
    copies of their own) and passed: the top-level fields are walked first, and over the cap it is refused."""
    import onnx

    from toolchain import limits
    from toolchain.limits import MAX_CLASSES, MAX_LABEL_CHARS, MAX_ONNX_TEXT_BYTES, top_level_text_bytes

    model = onnx.load(str(artifacts["onnx"]))
    model.doc_string = "d" * 1000
    art = tmp_path / "doc.onnx"
    art.write_bytes(model.SerializeToString())
    expected = sum(len(p.SerializeToString()) for p in model.metadata_props) + 1000
    assert top_level_text_bytes(art) == expected and top_level_text_bytes(artifacts["onnx"]) == expected - 1000
    assert load_runner(art).predict(artifacts["x"][:2]).shape == (2, 10)
    assert MAX_ONNX_TEXT_BYTES > MAX_CLASSES * (MAX_LABEL_CHARS + 3)  # as many class names as cwtool takes, each the longest
    monkeypatch.setattr(limits, "MAX_ONNX_TEXT_BYTES", 1 << 20)  # the cap read when called: a small one, for a small file
    model.metadata_props.add(key="junk", value="a" * ((1 << 20) + 1))
    art.write_bytes(model.SerializeToString())
    read = []
    monkeypatch.setattr(onnx, "load", lambda *a, **k: read.append(a) or pytest.fail("onnx read the file"))
    with pytest.raises(UserError, match=r"doc.onnx holds 1.0 MiB of metadata and doc string, over the 1 MiB cwtool reads"):
        load_runner(art)
    for damaged in (b"\x0f" * 40, b"\x08", b"\x3a\xff\xff\xff\xff\x0f" + b"x" * 9, b"", b"\0" * 300_000):  # a group's wire type,
        (tmp_path / "bad.onnx").write_bytes(damaged)  # a cut varint, a length past the end, zeros: not a ModelProto's
        assert top_level_text_bytes(tmp_path / "bad.onnx") is None or damaged == b""
    (tmp_path / "many.onnx").write_bytes(b"\x08\x01" * (limits.MAX_TOP_LEVEL_FIELDS + 1))
    with pytest.raises(UserError, match="over 100,000 top-level protobuf fields"):
        top_level_text_bytes(tmp_path / "many.onnx")


@pytest.mark.parametrize("props, ok", [
    ({"num_classes": "abc"}, True), ({"num_classes": "1e12"}, True), ({"num_classes": "0"}, True),
    ({"layout": "5"}, False), ({"num_classes": "3"}, False), ({"layout": ""}, True),
])
def test_onnx_metadata_with_wrong_types(artifacts, tmp_path, props, ok):
    import onnx

    model = onnx.load(str(artifacts["onnx"]))
    keep = [p for p in model.metadata_props if p.key not in props]
    del model.metadata_props[:]
    model.metadata_props.extend(keep)
    for k, v in props.items():
        model.metadata_props.add(key=k, value=v)
    art = tmp_path / "meta.onnx"
    art.write_bytes(model.SerializeToString())
    if ok:
        runner = load_runner(art)
        assert runner.num_classes == 10 and runner.layout == "NCHW"
        assert runner.predict(artifacts["x"][:2]).shape == (2, 10)
    else:
        with pytest.raises(UserError, match="metadata") as e:
            load_runner(art)
        assert "\n" not in str(e.value)


def test_metadata_helpers():
    from toolchain.runtimes.base import metadata_layout, metadata_num_classes, resolve_num_classes

    assert [metadata_num_classes(v) for v in (10, "10", " 10 ", 10.0, "abc", 1e12, [10], True, None, -3, 0, "1e3", "١٠")] == [
        10, 10, 10, 10, None, None, None, None, None, None, None, None, None]
    assert metadata_layout("nhwc", "x") == "NHWC" and metadata_layout(5, "x") is None and metadata_layout(None, "x") is None
    with pytest.raises(UserError):
        metadata_layout("CHWN", "x")
    assert resolve_num_classes("abc", 10, Path("m"), "s") == 10 and resolve_num_classes("7", -1, Path("m"), "s") == 7
    assert resolve_num_classes(None, None, Path("m"), "s") is None


@pytest.mark.parametrize("threads", [0, -1, 257, 10**9, "2", 1.5])
def test_threads_out_of_bounds_are_user_errors(artifacts, threads):
    from toolchain.bench import bench

    for name in ("onnx", "tflite"):
        with pytest.raises(UserError, match="threads") as e:
            load_runner(artifacts[name], threads=threads)
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="threads"):
        bench(artifacts["onnx"], threads=threads, runs=1, warmup=0)


def test_runner_accepts_the_thread_bounds(artifacts):
    from toolchain.runtimes.base import MAX_THREADS, check_threads

    assert check_threads(1) == 1 and check_threads(MAX_THREADS) == MAX_THREADS and check_threads(np.int64(4)) == 4
    assert load_runner(artifacts["tflite"], threads=4).threads == 4


def test_absurd_litert_shapes_are_user_errors(artifacts, monkeypatch):
    from ai_edge_litert.interpreter import Interpreter

    real_details = Interpreter.get_tensor_details
    allocated = []

    def huge(self, *a, **k):  # one activation of 17 GB: LiteRT would memset all of it in allocate_tensors
        details = real_details(self, *a, **k)
        details[-2] = {**details[-2], "shape": np.array([1, 268435464, 8, 8], np.int32)}
        return details

    monkeypatch.setattr(Interpreter, "get_tensor_details", huge)
    monkeypatch.setattr(Interpreter, "allocate_tensors", lambda self: allocated.append(1))
    with pytest.raises(UserError, match="GiB") as e:
        load_runner(artifacts["tflite"])
    assert not allocated and "\n" not in str(e.value)
    monkeypatch.undo()

    for method, shape in (("get_output_details", [1, 0]), ("get_input_details", [1, 1, 0, 8]),
                          ("get_input_details", [1, -3, 8, 8]), ("get_output_details", [])):
        real = getattr(Interpreter, method)

        def odd(self, real=real, shape=shape):
            d = real(self)
            return [{**d[0], "shape": np.array(shape, np.int32)}]

        monkeypatch.setattr(Interpreter, method, odd)
        with pytest.raises(UserError, match="shape") as e:
            load_runner(artifacts["tflite"])
        assert "re-export" in str(e.value)
        monkeypatch.undo()


@pytest.mark.parametrize("scale", [0.0, float("nan"), float("inf"), -0.5])
def test_bad_input_quantization_scale_is_a_user_error(artifacts, monkeypatch, scale):
    from ai_edge_litert.interpreter import Interpreter

    real = Interpreter.get_input_details
    monkeypatch.setattr(Interpreter, "get_input_details", lambda self: [{**real(self)[0], "quantization": (scale, 0)}])
    with pytest.raises(UserError, match="scale"):
        load_runner(artifacts["tflite_int8_nhwc"])


@pytest.mark.parametrize("output", [
    np.zeros((3, 0), np.float32),  # no logits
    np.zeros((4, 10), np.float32),  # another row count
    np.zeros((3, 10), object),  # not numbers
    np.zeros(0, np.float32),
])
def test_runtime_output_that_is_no_logits_is_a_user_error(artifacts, monkeypatch, output):
    runner = load_runner(artifacts["onnx"])
    monkeypatch.setattr(runner, "_run", lambda x: output)
    with pytest.raises(UserError, match="output of shape") as e:
        runner.predict(artifacts["x"][:3])
    assert "\n" not in str(e.value)


def test_runtime_output_width_must_agree_across_chunks(artifacts, monkeypatch):
    runner = load_runner(artifacts["onnx"])
    widths = iter([10, 9])
    monkeypatch.setattr(runner, "_run", lambda x: np.zeros((len(x), next(widths)), np.float32))
    with pytest.raises(UserError, match="output of shape"):
        runner.predict(artifacts["x"][:6], batch_size=3)


def test_onnx_info_does_not_follow_external_data(artifacts, tmp_path):
    """The onnx package counts weights without opening files the artifact names (onnxruntime already
    loaded them, or refused the file)."""
    import onnx

    info = artifact_info(artifacts["onnx"])
    model = onnx.load(str(artifacts["onnx"]))
    onnx.save_model(model, str(tmp_path / "ext.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="ext.data", size_threshold=0)
    ext = artifact_info(tmp_path / "ext.onnx")
    assert ext["weight_elements"] == info["weight_elements"] and ext["precision"] == "fp32"


def test_artifact_info_reuses_a_loaded_runner(artifacts, monkeypatch):
    import toolchain.runtimes.litert as litert
    import toolchain.runtimes.onnx as onnx_rt

    for name, module, cls in (("onnx", onnx_rt, "OnnxRunner"), ("tflite_int8_nhwc", litert, "LiteRTRunner")):
        runner = load_runner(artifacts[name])
        want = artifact_info(artifacts[name])
        monkeypatch.setattr(module, cls, _boom)  # a second load would raise
        assert artifact_info(artifacts[name], runner=runner) == want
        monkeypatch.undo()


# --------------------------------------------------------------------------- one artifact, several files


@pytest.fixture(scope="module")
def external(artifacts, tmp_path_factory):
    """The fp32 ONNX file with every weight in `model.onnx.data` (what torch.onnx.export writes by default)."""
    import onnx

    d = tmp_path_factory.mktemp("external")
    onnx.save(onnx.load(str(artifacts["onnx"])), str(d / "model.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model.onnx.data", size_threshold=0)
    return d / "model.onnx"


def test_onnx_with_external_data_is_one_artifact(artifacts, external):
    from toolchain.runtimes import artifact_info, describe_graph, load_runner
    from toolchain.device_fit import fit_check

    data = external.with_name("model.onnx.data")
    total = external.stat().st_size + data.stat().st_size
    assert data.stat().st_size > 4 * external.stat().st_size  # the weights really are outside
    info = artifact_info(external)
    assert info["bytes"] == total
    assert [(f["name"], f["role"]) for f in info["files"]] == [("model.onnx", "model"), ("model.onnx.data", "external data")]
    np.testing.assert_allclose(load_runner(external).predict(artifacts["x"]), artifacts["ref"], atol=1e-4)
    whole, split = describe_graph(artifacts["onnx"]), describe_graph(external)
    assert split["macs"] == whole["macs"] > 0 and split["weight_bytes"] == whole["weight_bytes"]  # shapes, not bytes, read
    assert fit_check("x86-edge", external)["checks"]["bytes"]["value"] == total


def test_external_data_is_found_without_the_onnx_package(external, monkeypatch):
    from toolchain.runtimes.parts import external_data_files

    monkeypatch.setitem(sys.modules, "onnx", None)  # a light install on a device: torch's default name stands in
    assert external_data_files(external) == [external.with_name("model.onnx.data")]


def test_external_data_outside_the_model_folder_is_not_counted(external, tmp_path):
    """The file names its external data: a name reaching out of its folder (or an absolute one) is not followed."""
    import onnx

    from toolchain.runtimes.parts import artifact_size, external_data_files

    (tmp_path / "secret.bin").write_bytes(b"x" * 1000)
    for location in ("../secret.bin", str(tmp_path / "secret.bin"), "missing.data"):
        proto = onnx.load(str(external), load_external_data=False)
        for init in proto.graph.initializer:
            for entry in init.external_data:
                if entry.key == "location":
                    entry.value = location
        sub = tmp_path / "sub"
        sub.mkdir(exist_ok=True)
        (sub / "m.onnx").write_bytes(proto.SerializeToString())
        assert external_data_files(sub / "m.onnx") == [], location
        assert artifact_size(sub / "m.onnx")["bytes"] == (sub / "m.onnx").stat().st_size


def test_artifact_sha256_names_every_file(artifacts, external):
    import hashlib

    from toolchain.provenance import artifact_sha256

    def sha(p):
        return hashlib.sha256(Path(p).read_bytes()).hexdigest()

    onnx_print = artifact_sha256(external)
    assert onnx_print["sha256"] == sha(external)
    assert [(f["name"], f["sha256"]) for f in onnx_print["files"]] == [("model.onnx", sha(external)),
                                                                         ("model.onnx.data", sha(external.with_name("model.onnx.data")))]
    tflite_print = artifact_sha256(artifacts["tflite_int8_nhwc"])  # the sidecar the runner reads is part of what was judged
    assert [f["role"] for f in tflite_print["files"]] == ["model", "sidecar"]


def _graph_onnx(path, nodes, inits, x_shape=("N", 1, 8, 8)) -> Path:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return path


def _unbounded_onnx(kind: str, path: Path) -> Path:
    """Graphs whose memory or time no check before running could bound: a Loop of 10**15 steps (it never returned), an
    If whose branch Expands a constant to 3 GiB (the branch's shapes were never read), and a ConstantOfShape of a shape
    computed from the input (3 GB filled at batch 1, its size unknown to shape inference)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    head = [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("Slice", ["flat", "st", "en", "ax"], ["sl"])]
    inits = [i64("st", [0]), i64("en", [10]), i64("ax", [1])]
    if kind == "Loop":
        body = helper.make_graph(
            [helper.make_node("Identity", ["c"], ["c_out"]), helper.make_node("Identity", ["v"], ["v_out"])], "body",
            [helper.make_tensor_value_info("i", TensorProto.INT64, []), helper.make_tensor_value_info("c", TensorProto.BOOL, []),
             helper.make_tensor_value_info("v", TensorProto.FLOAT, [1])],
            [helper.make_tensor_value_info("c_out", TensorProto.BOOL, []), helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [1])])
        inits += [i64("trip", 10**15), numpy_helper.from_array(np.array(True), "cond"), numpy_helper.from_array(np.zeros(1, np.float32), "v0")]
        nodes = [helper.make_node("Loop", ["trip", "cond", "v0"], ["extra"], body=body)]
    elif kind == "If":
        branch = lambda name, nodes, inits: helper.make_graph(  # noqa: E731
            nodes, name, [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, [1])], initializer=inits)
        then = branch("then", [helper.make_node("Expand", ["one", "shape"], ["big"]),
                               helper.make_node("ReduceMax", ["big"], ["o"], keepdims=0)],
                      [numpy_helper.from_array(np.ones(1, np.float32), "one"), i64("shape", [3 << 28])])
        other = branch("else", [helper.make_node("Identity", ["z"], ["o"])], [numpy_helper.from_array(np.zeros(1, np.float32), "z")])
        inits.append(numpy_helper.from_array(np.array(True), "cond"))
        nodes = [helper.make_node("If", ["cond"], ["extra"], then_branch=then, else_branch=other)]
    elif kind == "ConstantOfShape":
        inits += [i64("k", [3 << 28]), i64("s0", [0]), i64("s1", [1])]
        nodes = [helper.make_node("Shape", ["x"], ["shp"]), helper.make_node("Slice", ["shp", "s0", "s1"], ["b"]),
                 helper.make_node("Mul", ["b", "k"], ["n"]), helper.make_node("ConstantOfShape", ["n"], ["big"]),
                 helper.make_node("ReduceMax", ["big"], ["extra"], keepdims=1)]
    else:  # a size read from the input's values (0 * max(x) + k): no shape inference can follow it
        inits += [numpy_helper.from_array(np.zeros(1, np.float32), "zero"), numpy_helper.from_array(np.full(1, 3 << 28, np.float32), "k")]
        sized = [helper.make_node("ReduceMax", ["x"], ["m"], keepdims=0), helper.make_node("Mul", ["m", "zero"], ["m0"]),
                 helper.make_node("Add", ["m0", "k"], ["nf"]), helper.make_node("Cast", ["nf"], ["n"], to=TensorProto.INT64),
                 helper.make_node("ConstantOfShape", ["n"], ["big"])]
        if kind == "in a function":  # the same hidden in a local function whose one output is a known scalar
            constants = [helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name + "_v"))
                         for name, value in (("zero", np.zeros(1, np.float32)), ("k", np.full(1, 3 << 28, np.float32)))]
            fn = helper.make_function("custom", "Sized", ["x"], ["s"], constants + sized + [helper.make_node("Size", ["big"], ["s"])],
                                      [helper.make_opsetid("", 17)])
            nodes = [helper.make_node("Sized", ["x"], ["s"], domain="custom"), helper.make_node("Cast", ["s"], ["sf"], to=TensorProto.FLOAT),
                     helper.make_node("Mul", ["sf", "zero"], ["extra"])]
            graph = helper.make_graph(head + nodes + [helper.make_node("Add", ["sl", "extra"], ["y"])], "g",
                                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], initializer=inits)
            onnx.save(helper.make_model(graph, functions=[fn], opset_imports=[helper.make_opsetid("", 17),
                                                                             helper.make_opsetid("custom", 1)]), str(path))
            return path
        nodes = sized + [helper.make_node("ReduceMax", ["big"], ["extra"], keepdims=0)]
    return _graph_onnx(path, head + nodes + [helper.make_node("Add", ["sl", "extra"], ["y"])], inits)


@pytest.mark.parametrize("kind, said", [("Loop", "a Loop operator, control flow"), ("If", "an If operator, control flow"),
                                        ("ConstantOfShape", "asks for 3.0 GiB for its activations at batch 1"),
                                        ("by values", "a ConstantOfShape operator whose output size does not follow from the file"),
                                        ("in a function", "a ConstantOfShape operator whose output size does not follow")])
def test_a_graph_no_check_can_bound_is_refused_before_it_runs(kind, said, tmp_path):
    """Each ran: the Loop until a signal, the others to 2.8-3.4 GB resident with the gate passed. The sizes are inferred
    at batch 1 (the batch's arithmetic followed); control flow, and a size that does not follow from the file, are refused."""
    pytest.importorskip("onnx")
    path = _unbounded_onnx(kind, tmp_path / f"{kind}.onnx")
    res = subprocess.run([sys.executable, "-m", "toolchain", "verify", str(path), "-d", "digits", "-p", "3"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and said in res.stderr, res.stderr


@pytest.mark.parametrize("product", ["MatMul", "Einsum"])
def test_a_file_whose_one_row_asks_for_too_many_operations_is_refused_before_it_runs(product, tmp_path):
    """A 5.7 KB file chaining 4096 x 4096 products of its input ran 230 s a call (verify calls once a row): every size
    small, nothing bounded its time. Four products of 6.9e10 multiply-accumulates each are refused at open."""
    pytest.importorskip("onnx")
    from onnx import helper, numpy_helper

    from toolchain.runtimes.onnx_graph import onnx_bounds

    i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Flatten", ["x"], ["flat"]), helper.make_node("Slice", ["flat", "st", "en", "ax"], ["sl"]),
             helper.make_node("ReduceMean", ["x"], ["m"], keepdims=0), helper.make_node("Expand", ["m", "side"], ["a0"])]
    for k in range(4):
        nodes.append(helper.make_node("MatMul", [f"a{k}", f"a{k}"], [f"a{k + 1}"]) if product == "MatMul" else
                     helper.make_node("Einsum", [f"a{k}", f"a{k}"], [f"a{k + 1}"], equation="ij,jk->ik"))
    nodes += [helper.make_node("ReduceMean", ["a4"], ["extra"], keepdims=0), helper.make_node("Add", ["sl", "extra"], ["y"])]
    path = _graph_onnx(tmp_path / "chain.onnx", nodes, [i64("st", [0]), i64("en", [10]), i64("ax", [1]), i64("side", [4096, 4096])])
    assert onnx_bounds(path).work >= 4 * 4096**3
    res = subprocess.run([sys.executable, "-m", "toolchain", "verify", str(path), "-d", "digits", "-p", "3"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "operations for a row" in res.stderr, res.stderr


def test_work_is_judged_a_row_and_a_recurrent_layer_counts_every_row_of_its_input(tmp_path):
    """A ResNet-50 exported with a fixed batch of 64 was refused (2.5e11 for the call, judged as one row); an LSTM over
    an input Expanded to 1,000 rows of 1,000 steps was counted for one row (4.2e9 counted, 4.3e12 run)."""
    pytest.importorskip("onnx")
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from toolchain.runtimes.onnx_graph import onnx_bounds

    i64 = lambda name, v: numpy_helper.from_array(np.array(v, dtype=np.int64), name)  # noqa: E731

    def product_file(name, batch):
        nodes = [helper.make_node("Expand", ["x", "to"], ["a"]), helper.make_node("MatMul", ["a", "a"], ["p"]),
                 helper.make_node("ReduceMean", ["p"], ["y"], axes=[2], keepdims=0)]
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 1, 1])],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, 512])],
                                  initializer=[i64("to", [batch if isinstance(batch, int) else 1, 512, 512])])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / name))
        return onnx_bounds(tmp_path / name).work

    assert product_file("fixed.onnx", 64) == product_file("open.onnx", "N") >= 512**3
    steps, rows, hidden = 1000, 1000, 256
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, 1)).astype(np.float32), "W"),
               numpy_helper.from_array(rng.normal(size=(1, 4 * hidden, hidden)).astype(np.float32), "R"), i64("to", [steps, rows, 1])]
    nodes = [helper.make_node("ReduceMean", ["x"], ["m"], axes=[1], keepdims=1), helper.make_node("Expand", ["m", "to"], ["seq"]),
             helper.make_node("LSTM", ["seq", "W", "R"], ["", "yh"], hidden_size=hidden),
             helper.make_node("ReduceMean", ["yh"], ["y"], axes=[0, 1, 2], keepdims=0)]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [])], initializer=weights)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(tmp_path / "lstm.onnx"))
    assert onnx_bounds(tmp_path / "lstm.onnx").work >= steps * rows * (4 * hidden + 4 * hidden * hidden)


def test_a_tflite_operator_sized_by_a_computed_tensor_is_refused_before_it_runs(artifacts, tmp_path):
    """SHAPE, SLICE, MUL, then FILL of 3 GB: every declared shape small, the fill made during invoke (3.2 GB resident)."""
    schema = pytest.importorskip("ai_edge_litert.schema_py_generated")
    import flatbuffers

    S = schema
    m = S.ModelT.InitFromObj(S.Model.GetRootAsModel(artifacts["tflite"].read_bytes(), 0))
    g = m.subgraphs[0]

    def opcode(code):
        for i, c in enumerate(m.operatorCodes):
            if code in (c.builtinCode, c.deprecatedBuiltinCode):
                return i
        c = S.OperatorCodeT()
        c.builtinCode, c.deprecatedBuiltinCode, c.version = code, min(code, 127), 1
        m.operatorCodes.append(c)
        return len(m.operatorCodes) - 1

    def tensor(name, shape, ttype, data=None):
        b = S.BufferT()
        b.data = None if data is None else np.frombuffer(np.asarray(data).tobytes(), np.uint8)
        m.buffers.append(b)
        t = S.TensorT()
        t.name, t.shape, t.type, t.buffer = name.encode(), np.array(shape, np.int32), ttype, len(m.buffers) - 1
        g.tensors.append(t)
        return len(g.tensors) - 1

    def op(code, ins, outs, options_type, options):
        o = S.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = opcode(code), np.array(ins, np.int32), np.array(outs, np.int32)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        return o

    x, i32, f32 = g.inputs[0], S.TensorType.INT32, S.TensorType.FLOAT32
    shp, b, n, big, mx = (tensor("shp", [4], i32), tensor("b", [1], i32), tensor("n", [1], i32), tensor("big", [1], f32),
                          tensor("mx", [1], f32))
    begin, size = tensor("begin", [1], i32, np.array([0], np.int32)), tensor("size", [1], i32, np.array([1], np.int32))
    k, zero = tensor("k", [1], i32, np.array([3 << 28], np.int32)), tensor("zero", [], f32, np.array(0, np.float32))
    axis, x2 = tensor("axis", [1], i32, np.array([0], np.int32)), tensor("x2", list(g.tensors[x].shape), f32)
    shape_options, reducer = S.ShapeOptionsT(), S.ReducerOptionsT()
    shape_options.outType = i32
    new = [op(S.BuiltinOperator.SHAPE, [x], [shp], S.BuiltinOptions.ShapeOptions, shape_options),
           op(S.BuiltinOperator.SLICE, [shp, begin, size], [b], S.BuiltinOptions.SliceOptions, S.SliceOptionsT()),
           op(S.BuiltinOperator.MUL, [b, k], [n], S.BuiltinOptions.MulOptions, S.MulOptionsT()),
           op(S.BuiltinOperator.FILL, [n, zero], [big], S.BuiltinOptions.FillOptions, S.FillOptionsT()),
           op(S.BuiltinOperator.REDUCE_MAX, [big, axis], [mx], S.BuiltinOptions.ReducerOptions, reducer),
           op(S.BuiltinOperator.ADD, [x, mx], [x2], S.BuiltinOptions.AddOptions, S.AddOptionsT())]
    for o in g.operators:
        o.inputs = np.array([x2 if i == x else i for i in o.inputs], np.int32)
    g.operators = new + list(g.operators)
    builder = flatbuffers.Builder(1024)
    builder.Finish(m.Pack(builder), file_identifier=b"TFL3")
    (tmp_path / "fill.tflite").write_bytes(builder.Output())
    res = subprocess.run([sys.executable, "-m", "toolchain", "verify", str(tmp_path / "fill.tflite"), "-d", "digits", "-p", "3"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert res.returncode == 2 and "a FILL operator whose output size is computed at run time" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1, res.stderr


@pytest.mark.parametrize("op, sized_by", [("SCATTER_ND", 2), ("RESHAPE", 1), ("FILL", 0)])
def test_a_tflite_operator_whose_size_input_the_graph_computes_is_named(op, sized_by, tmp_path):
    """SCATTER_ND to a shape of the batch times 640 million, and RESHAPE of a weight to computed [-b, 1] and [1, -b]
    added (a broadcast outer product), each filled 2.65 GB during invoke; the same operators on constants run."""
    from toolchain.errors import UserError
    from toolchain.runtimes.litert import check_bounded

    class Interpreter:  # the operator list LiteRT gives: tensor 0 the input, 1 a constant, 2 computed from the input
        def __init__(self, size_input):
            ins = [1, 1, 1]
            ins[sized_by] = size_input
            self.ops = [{"op_name": "SHAPE", "inputs": [0], "outputs": [2]}, {"op_name": op, "inputs": ins, "outputs": [3]}]

        def _get_ops_details(self):
            return self.ops

        def get_input_details(self):
            return [{"index": 0}]

    with pytest.raises(UserError, match=f"holds a {op} operator whose output size is computed at run time"):
        check_bounded(Interpreter(2), tmp_path / "m.tflite")
    check_bounded(Interpreter(1), tmp_path / "m.tflite")


def test_a_tflite_file_is_held_to_the_operations_of_one_call(artifacts):
    """A chain of 4096 x 4096 products (BATCH_MATMUL, as a converter writes x @ x) asks for 2.7e11 multiply-accumulates
    in elements of 64 MB: refused as the ONNX twin is. The suite's small file counts about its convolutions' MACs."""
    from toolchain.errors import UserError
    from toolchain.runtimes.graph import MAX_WORK, check_work
    from toolchain.runtimes.litert import LiteRTRunner, operations
    from toolchain.runtimes.litert_graph import describe_tflite_graph

    ops = [{"op_name": "BATCH_MATMUL", "inputs": [k, k], "outputs": [k + 1]} for k in range(4)]
    work = operations(ops, {k: [1, 4096, 4096] for k in range(5)})
    assert work == 4 * 4096**3 > MAX_WORK
    with pytest.raises(UserError, match="asks for about 2.7e\\+11 operations for one call"):
        check_work(work, "chain.tflite", "one call")
    runner = LiteRTRunner(artifacts["tflite"])  # opens: its operations are far under the bound
    ops, shapes = runner._interp._get_ops_details(), {int(d["index"]): list(d["shape"]) for d in runner._interp.get_tensor_details()}
    macs = describe_tflite_graph(artifacts["tflite"])["macs"]
    assert macs <= operations(ops, shapes) <= 3 * macs + 10**5


def test_torch_exports_that_size_tensors_from_the_batch_run_and_an_open_input_size_is_refused(tmp_path, capsys):
    """Resize, reflect Pad, Expand, Tile and Range as torch's exporter writes them (their sizes a Shape's arithmetic):
    flagged as sized at run time, they ran from a shared 2 GiB arena that refused a 1.3 GB run as 'corrupt', and refused
    one file after another in one process. Their sizes follow from the file at batch 1: they run as any file."""
    torch = pytest.importorskip("torch")
    from torch import nn
    from torch.nn import functional as F

    from toolchain.export.onnx import export_onnx

    class Shaped(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.fc = nn.Linear(4 + 8, 3)

        def forward(self, x):
            h = F.pad(F.interpolate(x, scale_factor=2.0), (1, 1, 1, 1), mode="reflect")
            h = self.conv(h).mean((2, 3))
            pos = torch.arange(x.shape[-1], dtype=torch.float32).unsqueeze(0).expand(x.shape[0], -1)
            return self.fc(torch.cat([h, pos.repeat(1, 1)], 1))

    torch.manual_seed(0)
    path = export_onnx(Shaped().eval(), torch.zeros(1, 3, 8, 8), tmp_path / "shaped.onnx")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rows.npz", x=rng.random((300, 3, 8, 8), dtype=np.float32), y=np.arange(300) % 3)
    code, _, err = run_cli(["verify", path, "--data", tmp_path / "rows.npz", "-p", "1", "--split", "all"], capsys)
    assert code in (0, 1), err
    import onnx

    model = onnx.load(str(path))
    model.graph.input[0].type.tensor_type.shape.dim[2].dim_param = "height"  # a side left open
    onnx.save(model, str(tmp_path / "open.onnx"))
    code, _, err = run_cli(["verify", tmp_path / "open.onnx", "--data", tmp_path / "rows.npz", "-p", "1"], capsys)
    assert code == 2 and "leaves its input size open (height) beyond the batch" in err, err


def test_rows_a_call_are_bounded_by_what_a_row_costs_inside_the_file(artifacts):
    """A file allowed up to 2 GiB of activations a row ran 256 rows a call: the rows a call hold at most CALL_BYTES."""
    from toolchain.runtimes.base import CALL_BYTES
    from toolchain.runtimes.onnx import OnnxRunner

    runner = OnnxRunner(artifacts["onnx"])
    assert 0 < runner.row_bytes < 1 << 20  # a digits-cnn's activations: kilobytes a row
    calls = []
    real = runner._run
    runner._run = lambda chunk: calls.append(len(chunk)) or real(chunk)
    runner.predict(artifacts["x"])
    assert calls == [50]
    calls.clear()
    runner.row_bytes = CALL_BYTES // 3
    runner.predict(artifacts["x"])
    assert max(calls) == 3 and sum(calls) == 50


def test_memory_no_output_shows_and_rows_that_mix_are_bounded(tmp_path):
    """A ConvTranspose's working buffer (2.7 GB for a [1, 40, 64, 64] kernel on a 64x64 image) and a Resize whose
    keep_aspect_ratio_policy the inference ignores (inferred [1, 1, 464, 1], 3.2 GB) each passed the gate; a Reshape of
    the batch into one axis times itself costs the square of the rows (16 KB for one, 3.4 GB for 256 a call)."""
    from onnx import TensorProto, helper, numpy_helper

    from toolchain.errors import UserError
    from toolchain.runtimes.onnx import OnnxRunner

    def save(name, nodes, inits, x_shape=("N", 1, 8, 8)):
        graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(x_shape))],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
        import onnx

        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), str(tmp_path / name))
        return tmp_path / name

    w = numpy_helper.from_array(np.zeros((1, 40, 64, 64), np.float32), "w")
    unfolded = save("deconv.onnx", [helper.make_node("ConvTranspose", ["x", "w"], ["y"])], [w], ("N", 1, 64, 64))
    with pytest.raises(UserError, match="GiB for its activations at batch 1"):
        OnnxRunner(unfolded)
    sizes = numpy_helper.from_array(np.array([1, 1, 464, 1], np.int64), "sz")
    policy = save("policy.onnx", [helper.make_node("Resize", ["x", "", "", "sz"], ["y"], mode="nearest",
                                                   keep_aspect_ratio_policy="not_smaller")], [sizes])
    with pytest.raises(UserError, match="a Resize operator with keep_aspect_ratio_policy set"):
        OnnxRunner(policy)
    col = numpy_helper.from_array(np.array([-1, 1], np.int64), "col")
    square = save("square.onnx", [helper.make_node("Reshape", ["x", "col"], ["c"]), helper.make_node("Transpose", ["c"], ["r"], perm=[1, 0]),
                                  helper.make_node("MatMul", ["c", "r"], ["y"])], [col])
    runner = OnnxRunner(square)
    assert runner.one_row_a_call
    calls = []
    real = runner._run
    runner._run = lambda chunk: calls.append(len(chunk)) or real(chunk)[:, :10]
    runner.predict(np.zeros((5, 1, 8, 8), np.float32))
    assert calls == [1] * 5


def test_a_tflite_operator_that_runs_another_subgraph_is_refused(tmp_path):
    """A STABLEHLO_COMPOSITE ran subgraph 1, whose FILL of a computed size no check read (3 GB)."""
    from toolchain.errors import UserError
    from toolchain.runtimes.litert import check_bounded

    class Interpreter:
        def _get_ops_details(self):
            return [{"op_name": "STABLEHLO_COMPOSITE", "inputs": [0], "outputs": [1]}]

        def get_input_details(self):
            return [{"index": 0}]

    with pytest.raises(UserError, match="holds a STABLEHLO_COMPOSITE operator, control flow"):
        check_bounded(Interpreter(), tmp_path / "m.tflite")


def test_a_tflite_file_is_probed_once_in_a_child_that_imports_nothing_of_the_working_folder(artifacts, tmp_path, monkeypatch):
    """The probe child (`python -c`) had the working folder first on its path: a numpy.py there ran in it, where the
    `cwtool` entry point never imports from it (a regression reviewer's finding); and every load probed again (bench
    counted the probe in a file's load time)."""
    import shutil
    import subprocess

    import toolchain.runtimes.litert as litert
    from pathlib import Path

    from toolchain.runtimes.load_probe import read_held, survives_loading

    folder = tmp_path / "work"
    folder.mkdir()
    marker = tmp_path / "ran"
    (folder / "numpy.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    model = shutil.copy(artifacts["tflite"], folder / "m.tflite")
    monkeypatch.chdir(folder)
    started = []
    real = subprocess.Popen
    monkeypatch.setattr(subprocess, "Popen", lambda *a, **k: started.append(a) or real(*a, **k))
    interpreter, _ = litert.interpreter_class()
    for _ in range(3):
        survives_loading(model, interpreter, *read_held(Path(model)))
    assert len(started) == 1 and not marker.exists()


def test_odd_onnx_files_are_named_for_what_they_lack(artifacts, tmp_path):
    """A reviewer's odd files: an input of size 0 was "leaves its input size open (?)", a scalar input "expects ()
    (NC, dataset layout)", a graph with no output onnxruntime's own C++ source line, a TFLite file named .onnx
    "Protobuf parsing failed"."""
    import onnx
    from onnx import TensorProto, helper

    def save(name, shape, outputs=True):
        x = helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])
        nodes = [helper.make_node("Identity", ["x"], ["y"])] if outputs else []
        graph = helper.make_graph(nodes, "g", [x], [y] if outputs else [])
        onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), tmp_path / name)
        return tmp_path / name

    rows = np.zeros((4, 1, 8, 8), np.float32)
    with pytest.raises(UserError, match=r"declares an input of size 0 \('x', dimension 1\): no sample fits it"):
        load_runner(save("zero.onnx", [1, 0]))
    with pytest.raises(UserError, match=r"takes inputs of shape \(\), no batch of samples"):
        load_runner(save("scalar.onnx", [])).predict(rows)
    with pytest.raises(UserError, match=r"declares no output: cwtool runs classifiers with one input and one output") as info:
        load_runner(save("noout.onnx", [1, 64], outputs=False))
    assert "onnxruntime_src" not in str(info.value)
    named = tmp_path / "litert.onnx"
    named.write_bytes(Path(artifacts["tflite"]).read_bytes())
    with pytest.raises(UserError, match=r"is a TFLite file \(its header says TFL3\), named \.onnx: rename it \.tflite"):
        load_runner(named)
