"""Runners: loading, batching, layouts, int8 I/O, errors, and no torch/tensorflow import."""

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

from toolchain.errors import UserError
from toolchain.runtimes import artifact_info, load_runner, sidecar_path
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
        bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'tensorflow', 'litert_torch')]
        assert not bad, bad
        print('ok')
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "ok" in res.stdout


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
    with pytest.raises(UserError):
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
