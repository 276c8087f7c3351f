"""`cwtool bench`: batch-1 latency percentiles of ONNX and TFLite artifacts in their own runtimes."""

from __future__ import annotations

import json
import re

import pytest

from toolchain.errors import UserError


@pytest.fixture(scope="module")
def cli_main():
    from toolchain import cli

    return cli.main


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory, untrained_digits):
    """An untrained digits-cnn as ONNX and fp32 TFLite (fast to convert; latency does not need training)."""
    from toolchain.export.onnx import export_onnx
    from toolchain.export.tflite import export_tflite

    model, x = untrained_digits
    d = tmp_path_factory.mktemp("bench")
    return {"onnx": export_onnx(model, x, d / "m.onnx"), "tflite": export_tflite(model, x, d / "m.tflite")}


def _check_latency(r):
    for lat in (r["latency_ms"], r["runtime_latency_ms"]):
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"]
    assert "run_with_iobinding" in r["runtime_timing"]
    assert r["throughput_per_s"] > 0 and r["bytes"] > 0 and r["runtime"]


def test_cli_bench_prints_p50_and_writes_json(cli_main, artifacts, capsys, tmp_path):
    out_json = tmp_path / "bench.json"
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", str(artifacts["onnx"]), str(artifacts["tflite"]), "--runs", "30", "--warmup", "5",
                  "--target", "raspberry-pi-4", "--json", str(out_json)])
    out = capsys.readouterr().out
    assert exc.value.code == 0
    assert "p50" in out and "call p50" in out and "m.onnx" in out and "m.tflite" in out and "ESTIMATED" in out
    assert "speed-up: call p50 of m.onnx" in out
    data = json.loads(out_json.read_text())
    results = {r["format"]: r for r in data["results"]}
    assert set(results) == {"onnx", "tflite"}
    assert results["onnx"]["speedup_vs_first"]["runtime_latency_p50"] == 1.0  # the first is the baseline
    tfl = results["tflite"]
    assert tfl["speedup_vs_first"]["runtime_latency_p50"] == pytest.approx(
        results["onnx"]["runtime_latency_ms"]["p50"] / tfl["runtime_latency_ms"]["p50"], rel=1e-2)
    assert all(r["rounds"] == 10 for r in results.values())
    assert results["onnx"]["runtime"].startswith("onnxruntime")
    assert "litert" in results["tflite"]["runtime"] or "tflite" in results["tflite"]["runtime"]
    for r in results.values():
        _check_latency(r)
        assert r["runs"] == 30
        est = r["estimate"]
        assert est["is_estimate"] is True and est["latency_ms"] > 0 and est["target"] == "raspberry-pi-4"
        assert est["macs"] == 1_788_544  # counted from the graph


def test_files_of_one_name_are_told_apart(cli_main, artifacts, capsys, tmp_path):
    """dense/artifacts/model_fp32.onnx and run/artifacts/model_fp32.onnx were two rows named model_fp32.onnx (README's own
    example, a dense file against its pruned twin): which was faster could not be read."""
    import shutil

    for folder in ("dense", "run"):
        (tmp_path / folder).mkdir()
        shutil.copy(artifacts["onnx"], tmp_path / folder / "m.onnx")
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", str(tmp_path / "dense" / "m.onnx"), str(tmp_path / "run" / "m.onnx"), "--runs", "5", "--warmup", "1",
                  "--rounds", "1"])
    out = capsys.readouterr().out
    assert exc.value.code == 0 and "dense/m.onnx" in out and "run/m.onnx" in out and "speed-up: call p50 of dense/m.onnx" in out, out


def test_bench_api_threads_and_given_macs(artifacts):
    from toolchain.bench import bench

    r = bench(artifacts["tflite"], threads=2, runs=20, warmup=2, target="x86-edge", macs=10_000_000)
    _check_latency(r)
    assert r["runs"] == 20 and r["rounds"] == 1
    assert r["threads"] == 2 and r["estimate"]["macs"] == 10_000_000 and r["estimate"]["macs_source"].startswith("given")
    assert r["memory"]["peak_rss_bytes"] > 0 and "ru_maxrss" in r["memory"]["method"]


def test_bench_bad_input_is_exit_2(cli_main, artifacts, capsys, tmp_path):
    for args in (["bench", str(tmp_path / "missing.onnx")], ["bench", str(artifacts["onnx"]), "--runs", "0"],
                 ["bench", str(artifacts["onnx"]), "--rounds", "0"], ["bench", str(artifacts["onnx"]), str(tmp_path / "missing.tflite")]):
        with pytest.raises(SystemExit) as exc:
            cli_main(args)
        assert exc.value.code == 2
        assert capsys.readouterr().err.count("\n") == 1
    from toolchain.bench import bench

    with pytest.raises(UserError):
        bench(artifacts["onnx"], target="no-such-board")


def test_an_input_of_no_declared_rank_is_said_as_such(cli_main, capsys, tmp_path):
    """An ONNX input with no shape was refused with "data samples have shape () but it expects ()": bench takes no data,
    and the two shapes were the same (a reviewer's find)."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "norank.onnx")
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", str(tmp_path / "norank.onnx"), "--runs", "5"])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and err.count("\n") == 1, err
    assert "norank.onnx takes an input of no declared shape" in err and "expects" not in err, err


def test_bench_many_splits_runs_into_interleaved_rounds(artifacts):
    from toolchain.bench import bench_many

    results = bench_many([artifacts["onnx"], artifacts["tflite"], artifacts["onnx"]], runs=7, warmup=1, rounds=3)
    assert [r["rounds"] for r in results] == [3, 3, 3] and [r["runs"] for r in results] == [7, 7, 7]
    for r in results:
        _check_latency(r)
        assert r["speedup_vs_first"]["artifact"] == str(artifacts["onnx"])
    assert bench_many([artifacts["onnx"]], runs=2, rounds=5)[0]["rounds"] == 2  # never an empty block


def test_bench_counts_the_external_data_of_an_onnx_model(artifacts, tmp_path, cli_main, capsys):
    """`model.onnx` + `model.onnx.data` (torch.onnx.export's default) is one artifact of their total size."""
    import onnx

    from toolchain.bench import bench

    path = tmp_path / "model.onnx"
    onnx.save(onnx.load(str(artifacts["onnx"])), str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location="model.onnx.data", size_threshold=0)
    total = path.stat().st_size + (tmp_path / "model.onnx.data").stat().st_size
    assert bench(path, runs=5, warmup=1)["bytes"] == total
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", str(path), "--runs", "5", "--warmup", "1", "--json", str(tmp_path / "b.json")])
    capsys.readouterr()
    assert exc.value.code == 0 and json.loads((tmp_path / "b.json").read_text())["results"][0]["bytes"] == total


def test_an_onnx_file_s_macs_without_the_onnx_package_name_the_package(monkeypatch, tmp_path):
    """On a device install without the onnx package, bench --target said only 'cannot count MACs here' (a device
    reviewer's finding): it names the package, and --macs."""
    import importlib.util

    import toolchain.runtimes
    from toolchain.bench import device_estimate
    from toolchain.errors import UserError

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnx" else real(name, *a))
    monkeypatch.setattr(toolchain.runtimes, "describe_graph", lambda path: {})
    with pytest.raises(UserError, match=r"model\.onnx here \(it reads an ONNX graph with the onnx package, not installed here: "
                                        r"pip install onnx, or pass --macs N"):
        device_estimate("raspberry-pi-4", tmp_path / "model.onnx", "int8")
    with pytest.raises(UserError, match=r"model\.tflite here: pass --macs N"):
        device_estimate("raspberry-pi-4", tmp_path / "model.tflite", "int8")


def test_a_target_s_estimate_is_refused_before_any_timing(artifacts, monkeypatch, tmp_path):
    """bench --target timed every file for minutes (--runs 300000), then said that one file's MACs could not be counted,
    with no table and no JSON; and of a graph with no layer to count, "cannot count MACs ... here" read as a missing
    package (a reviewer's findings)."""
    import onnx
    from onnx import TensorProto, helper

    import toolchain.bench
    from toolchain.bench import bench_many

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    relu = tmp_path / "relu.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(relu))
    timed = []
    monkeypatch.setattr(toolchain.bench, "_timed", lambda *a: timed.append(a) or [0.001])
    with pytest.raises(UserError, match=r"^counted no MACs in relu\.onnx \(no Conv, Gemm, MatMul or fully connected layer with constant weights\): pass --macs N"):
        bench_many([artifacts["onnx"], relu], runs=300_000, warmup=0, target="raspberry-pi-4")
    assert not timed


def test_more_threads_than_cores_are_timed_with_a_note(artifacts, capsys):
    """--threads 65 on 2 cores ran without a word (p99 188 ms): the numbers are the scheduler's as much as the file's."""
    import os

    from toolchain.cli import main as cli_main

    cores = len(os.sched_getaffinity(0))
    for threads, noted in ((cores, False), (cores + 1, True)):
        with pytest.raises(SystemExit) as exc:
            cli_main(["bench", str(artifacts["onnx"]), "--runs", "2", "--warmup", "0", "--threads", str(threads)])
        err = capsys.readouterr().err
        assert exc.value.code == 0
        assert (f"note: --threads {threads} on a machine of {cores} cores: more threads than cores" in err) == noted, err


def test_a_file_s_memory_does_not_depend_on_what_ran_before_it(artifacts, monkeypatch):
    """Read in one process shared with other files, the same file read 3.35 MiB first and 0.33 MiB after another (its
    runtime's one-time cost, memory an earlier file freed): each file is now read in a process of its own (two
    reviewers' findings)."""
    import toolchain.bench
    from toolchain.bench import bench_many

    monkeypatch.setattr(toolchain.bench, "_rss_bytes", lambda: 0)  # this process's readings: none reach the figure
    first, _, again = bench_many([artifacts["onnx"], artifacts["tflite"], artifacts["onnx"]], runs=2, warmup=0, rounds=1)
    one, two = first["memory"]["rss_delta_bytes"], again["memory"]["rss_delta_bytes"]
    assert isinstance(one, int) and one > 0 and abs(one - two) < (1 << 20), (one, two)


def test_an_estimate_for_a_format_the_device_does_not_run_is_warned(cli_main, artifacts, capsys):
    """bench --target raspberry-pi-4 (TFLite) on an ONNX file printed an estimate 'on raspberry-pi-4' with no word."""
    from toolchain.bench import device_estimate

    assert "warning" not in device_estimate("raspberry-pi-4", artifacts["tflite"], "fp32")
    warned = device_estimate("raspberry-pi-4", artifacts["onnx"], "fp32")
    assert warned["warning"].startswith("raspberry-pi-4 runs tflite files (litert), not onnx")
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", str(artifacts["onnx"]), "--runs", "2", "--warmup", "0", "--target", "raspberry-pi-4"])
    err = capsys.readouterr().err
    assert exc.value.code == 0 and "warning: m.onnx: raspberry-pi-4 runs tflite files" in " ".join(err.split()), err


def test_compress_s_deploy_timing_reads_no_memory(artifacts, monkeypatch):
    """The file to deploy is chosen by latency alone: its timing starts no process a file to read a memory figure it
    never uses (bench itself reads one for each file)."""
    from pathlib import Path

    import toolchain.bench
    from toolchain.deploy import time_files

    def never(*a, **k):
        raise AssertionError("a memory probe ran for the deploy choice")

    monkeypatch.setattr(toolchain.bench, "_memory_alone", never)
    onnx = Path(artifacts["onnx"])
    timings = time_files(onnx.parent, [{"path": onnx.name}], threads=1, runs=2)
    assert timings[onnx.name]["memory"]["rss_delta_bytes"] is None and timings[onnx.name]["latency_ms"]["p50"] > 0


def test_a_long_bench_says_how_far_it_is(cli_main, artifacts, capsys, monkeypatch):
    """200 calls of a 224-px net on a device's CPU take minutes a file: bench said nothing until its table."""
    from toolchain.report import pace

    monkeypatch.setattr(pace, "PACE_SECONDS", 0.0)  # every block is "long"
    with pytest.raises(SystemExit) as exc:
        cli_main(["bench", str(artifacts["onnx"]), str(artifacts["tflite"]), "--runs", "30", "--warmup", "1", "--rounds", "3"])
    captured = capsys.readouterr()
    assert exc.value.code == 0, captured.err
    done = [int(n.replace(",", "")) for n in re.findall(r"^bench: ([\d,]+) of 120 timed calls \(", captured.err, re.M)]
    assert done == [20, 40, 60, 80, 100], captured.err  # after each file's block; the last is the table
    assert "timed calls" not in captured.out  # stdout keeps the table alone
