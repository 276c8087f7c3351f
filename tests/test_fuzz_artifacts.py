"""Damaged artifacts through the real `cwtool verify` CLI: every case ends in 0, 1 or 2 -- never 3
(a bug), never a signal (a native crash), never a hang.

Design (300+ cases in well under a minute on 2 cores): a worker process (one a core, WORKERS at most, each
with its share of the cases) imports cwtool, numpy, onnxruntime, onnx and LiteRT once, then forks a child
per case. The child runs
``toolchain.cli.main(["verify", ART, "--data", ROWS, "-p", "3"])`` -- the console script's own
entry point -- with its output in a log file and its address space capped (a memory bomb in a
mutated file fails there instead of taking the machine); the worker reports the child's exit
code, its signal, or a hang (killed after CASE_TIMEOUT_S) to this process. A native crash thus
kills one child, not the worker, and names its case. A case costs ~30 ms so (the worker warms up
on the untouched files first); a fresh Python per case would cost 0.3-1 s.

Mutations of a real exported .onnx, a real fp32 .tflite and a real int8 NHWC .tflite, seeded:
bit flips, random bytes, truncation, chunk duplication and zeroing, header damage, 32-bit words
set to boundary values; plus damaged sidecars and ONNX metadata. The untouched files are the
controls (they must pass or fail the gate: 0 or 1) so a broken harness cannot pass vacuously.
"""

from __future__ import annotations

import json
import os
import random
import select
import shutil
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="fork-per-case worker with rlimits and wait4: Linux")

REPO = Path(__file__).resolve().parents[1]
CASE_TIMEOUT_S = 15.0
CHILD_ADDRESS_SPACE = 4 << 30  # a verify of these files maps ~0.2 GiB
PER_FORMAT = {"onnx": 160, "tflite": 130, "tflite_int8": 130}  # ~15 s of cases on 2 busy cores
SLOW_FACTOR = 12  # the slow variant: ~5,000 mutations, other seeds
WORKERS = 2  # fork-per-case workers at once (fewer where fewer cores are ours): the cases are independent
PROTECT = "3"

WORKER = textwrap.dedent(
    r'''
    import json, os, resource, signal, sys, time

    import numpy, onnx, onnxruntime  # noqa: F401 - imported once here, not in every child
    try:
        import ai_edge_litert.interpreter  # noqa: F401
    except ImportError:
        pass
    import toolchain.cli, toolchain.verify, toolchain.runtimes.onnx, toolchain.runtimes.litert  # noqa: F401
    import toolchain.report.verify_console  # noqa: F401

    limit, timeout = int(sys.argv[1]), float(sys.argv[2])
    out = sys.stdout
    # Warm up on the untouched files: every module verify imports lazily is then loaded once, here.
    saved = os.dup(1), os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    for argv in json.loads(sys.argv[3]):
        try:
            toolchain.cli.main(argv)
        except SystemExit:
            pass
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(saved[0], 1)
    os.dup2(saved[1], 2)
    for line in sys.stdin:
        case = json.loads(line)
        t0 = time.monotonic()
        pid = os.fork()
        if pid == 0:  # the child: one `cwtool verify`, exit code as the CLI sets it
            code = 99
            try:
                resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
                fd = os.open(case["log"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                os.dup2(fd, 2)
                toolchain.cli.main(case["argv"])
                code = 0
            except SystemExit as e:
                code = 0 if e.code is None else e.code if isinstance(e.code, int) else 98
            except BaseException:  # noqa: BLE001 - main() lets nothing out: a bug of main itself
                code = 97
            finally:
                try:
                    sys.stdout.flush()
                    sys.stderr.flush()
                finally:
                    os._exit(code)
        status, rusage, hang = 0, None, False
        while True:
            done, status, rusage = os.wait4(pid, os.WNOHANG)
            if done:
                break
            if time.monotonic() - t0 > timeout:
                os.kill(pid, signal.SIGKILL)
                _, status, rusage = os.wait4(pid, 0)
                hang = True
                break
            time.sleep(0.002)
        report = {
            "id": case["id"],
            "seconds": round(time.monotonic() - t0, 3),
            "hang": hang,
            "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) and not hang else None,
            "code": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None,
            "maxrss_kib": rusage.ru_maxrss if rusage else None,
        }
        out.write(json.dumps(report) + "\n")
        out.flush()
    '''
)


# --------------------------------------------------------------------------- mutations


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One seeded damage of ``data``: (label, damaged bytes)."""
    b = bytearray(data)
    n = len(b)
    kind = rng.choice(["flip", "bytes", "truncate", "duplicate", "zero", "header", "word", "extreme"])
    if kind == "flip":
        i, bit = rng.randrange(n), rng.randrange(8)
        b[i] ^= 1 << bit
        label = f"flip@{i}.{bit}"
    elif kind == "bytes":
        where = sorted(rng.randrange(n) for _ in range(rng.randint(2, 24)))
        for i in where:
            b[i] = rng.randrange(256)
        label = f"bytes@{where[0]}..{where[-1]}x{len(where)}"
    elif kind == "truncate":
        cut = rng.randrange(1, n)
        b = b[:cut]
        label = f"truncate@{cut}"
    elif kind == "duplicate":
        i, size, j = rng.randrange(n), rng.randint(1, 512), rng.randrange(n)
        b[j:j] = b[i : i + size]
        label = f"duplicate@{i}+{size}->{j}"
    elif kind == "zero":
        i, size = rng.randrange(n), rng.randint(1, 512)
        b[i : i + size] = bytes(len(b[i : i + size]))
        label = f"zero@{i}+{size}"
    elif kind == "header":
        where = [rng.randrange(min(64, n)) for _ in range(rng.randint(1, 4))]
        for i in where:
            b[i] = rng.randrange(256)
        label = f"header@{','.join(map(str, where))}"
    elif kind == "word":  # 32-bit little-endian words: flatbuffer offsets, sizes, dims
        i = rng.randrange(n - 4) & ~3
        value = rng.choice([0, 1, 0xFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 1 << 16, 1 << 20, 1 << 28])
        b[i : i + 4] = value.to_bytes(4, "little")
        label = f"word@{i}={value:#x}"
    else:  # one byte to an extreme
        i, value = rng.randrange(n), rng.choice([0x00, 0x7F, 0x80, 0xFF])
        b[i] = value
        label = f"extreme@{i}={value:#x}"
    return label, bytes(b)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def fuzz_sources(tmp_path_factory):
    """A digits-cnn trained ~1 s (so the untouched files pass the gate: controls exit 0), exported
    as .onnx, fp32 .tflite and int8 NHWC .tflite; and 50 held-out digits rows as rows.npz."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    pytest.importorskip("litert_torch")
    from sklearn.datasets import load_digits

    from toolchain.export.onnx import export_onnx
    from toolchain.export.tflite import export_tflite
    from toolchain.models import registry

    digits = load_digits()
    x = (digits.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(y))
    train, rows = order[:1200], order[1200:1250]
    torch.manual_seed(0)
    model = registry.create("digits-cnn", width=8)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.from_numpy(x[train]), torch.from_numpy(y[train])
    for _ in range(4):
        model.train()
        for i in range(0, len(xt), 64):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(xt[i : i + 64]), yt[i : i + 64]).backward()
            opt.step()
    model.eval()
    out = tmp_path_factory.mktemp("fuzz_src")
    np.savez(out / "rows.npz", x=x[rows], y=y[rows])
    example = torch.from_numpy(x[:1])
    return {
        "rows": out / "rows.npz",
        "onnx": export_onnx(model, example, out / "m.onnx"),
        "tflite": export_tflite(model, example, out / "m.tflite"),
        "tflite_int8": export_tflite(model, example, out / "m8.tflite", "int8", "NHWC", calibration_x=x[train][:256]),
    }


def _cases(sources: dict, work: Path, per_format: dict[str, int], seed: str = "") -> list[dict]:
    """Every case: its id, format, mutation label, argv and log file (files written under ``work``)."""
    cases = []

    def add(fmt: str, label: str, art: Path, data: bytes | None = None, sidecar: bytes | None | bool = True):
        if data is not None:
            art.write_bytes(data)
        src = sources[fmt]
        side = Path(str(src) + ".json")
        if sidecar is True and side.exists():
            shutil.copy(side, str(art) + ".json")
        elif isinstance(sidecar, bytes):
            Path(str(art) + ".json").write_bytes(sidecar)
        cid = len(cases)
        cases.append({"id": cid, "format": fmt, "label": label, "artifact": str(art), "log": str(work / f"case{cid:03d}.log"),
                      "argv": ["verify", str(art), "--data", str(sources["rows"]), "-p", PROTECT]})

    for fmt, count in per_format.items():
        src = sources[fmt]
        ext = src.suffix
        data = src.read_bytes()
        add(fmt, "control", work / f"{fmt}_control{ext}", data)
        for i in range(count):
            label, damaged = mutate(data, random.Random(f"{seed}{fmt}-{i}"))
            add(fmt, label, work / f"{fmt}_{i:03d}{ext}", damaged)
    # Untrusted metadata: a sidecar or ONNX metadata_props with wrong types is ignored or bad input.
    tfl = sources["tflite"].read_bytes()
    for i, text in enumerate([
        b'{"num_classes": "abc", "layout": 5}', b'{"num_classes": 1e12}', b'{"num_classes": [10], "layout": ["NCHW"]}',
        b'{"num_classes": 7}', b'{"num_classes": -3, "layout": "CHWN"}', b'{"num_classes": true, "layout": null}',
        b'{"layout": "nhwc"}', b"[1, 2, 3]", b'{"num_classes": 10', b"[" * 100_000, b'\xff\xfe{"layout": "NCHW"}',
    ]):
        add("tflite", f"sidecar#{i}", work / f"sidecar_{i}.tflite", tfl, sidecar=text)
    import onnx

    for i, props in enumerate([{"num_classes": "abc"}, {"num_classes": "1e12", "layout": "5"}, {"num_classes": "0"},
                               {"num_classes": "3"}, {"layout": "NHWC"}, {"layout": ""}]):
        model = onnx.load(str(sources["onnx"]))
        keep = [p for p in model.metadata_props if p.key not in props]
        del model.metadata_props[:]
        model.metadata_props.extend(keep)
        for k, v in props.items():
            model.metadata_props.add(key=k, value=v)
        add("onnx", f"metadata#{i}", work / f"metadata_{i}.onnx", model.SerializeToString(), sidecar=None)
    return cases


def _run_cases(cases: list[dict], work: Path, warmup: list[list[str]]) -> dict[int, dict]:
    """Run every case in fork-per-case workers, one per core up to WORKERS (the cases are independent: each child
    verifies its own file, and a .tflite case's child spends most of its time in the load probe's fresh Python); a worker
    that dies or stalls is restarted and its case recorded as a crash/hang."""
    import threading

    shards = [cases[i::_workers()] for i in range(_workers())]
    results: dict[int, dict] = {}
    failures: list[BaseException] = []

    def run(shard: list[dict]) -> None:
        try:
            results.update(_run_shard(shard, work, warmup))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's own thread below
            failures.append(exc)

    threads = [threading.Thread(target=run, args=(shard,), daemon=True) for shard in shards if shard]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        raise failures[0]
    return results


def _workers() -> int:
    """Fork-per-case workers to run at once: the cores this process may use, at most WORKERS."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(WORKERS, cores))


def _run_shard(cases: list[dict], work: Path, warmup: list[list[str]]) -> dict[int, dict]:
    """``cases`` one after another in one fork-per-case worker (restarted where it dies or stalls)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONFAULTHANDLER": "1"}
    results: dict[int, dict] = {}
    worker = None
    try:
        for case in cases:
            if worker is None:
                worker = subprocess.Popen([sys.executable, "-c", WORKER, str(CHILD_ADDRESS_SPACE), str(CASE_TIMEOUT_S), json.dumps(warmup)],
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                          text=True, cwd=work, env=env)
            worker.stdin.write(json.dumps(case) + "\n")
            worker.stdin.flush()
            # the worker's own imports (first case) and the child's timeout, with room to spare
            ready, _, _ = select.select([worker.stdout], [], [], CASE_TIMEOUT_S + 60)
            line = worker.stdout.readline() if ready else ""
            if not line:  # the worker itself died or stalled: blame this case, start a new worker
                worker.kill()
                worker.wait()
                worker = None
                results[case["id"]] = {"id": case["id"], "code": None, "signal": None, "hang": not ready, "worker_died": True}
                continue
            results[case["id"]] = json.loads(line)
    finally:
        if worker is not None:
            worker.stdin.close()
            worker.wait(timeout=30)
    return results


def _last_line(path: str) -> str:
    try:
        lines = Path(path).read_text(errors="replace").strip().splitlines()
    except OSError:
        return "(no output)"
    return lines[-1][:300] if lines else "(no output)"


def _fuzz(sources: dict, work: Path, per_format: dict[str, int], seed: str = "") -> None:
    cases = _cases(sources, work, per_format, seed)
    assert sum(1 for c in cases if c["label"] != "control") >= 300
    t0 = time.monotonic()
    results = _run_cases(cases, work, warmup=[c["argv"] for c in cases if c["label"] == "control"])
    seconds = time.monotonic() - t0

    counts: dict[str, Counter] = {}
    bad = []
    for case in cases:
        r = results[case["id"]]
        outcome = ("hang" if r["hang"] else f"signal {r['signal']}" if r["signal"] else
                   "worker died" if r.get("worker_died") else r["code"])
        counts.setdefault(case["format"], Counter())[outcome] += 1
        if outcome not in (0, 1, 2):
            bad.append(f"case {case['id']} {case['format']} {case['label']} ({case['artifact']}): {outcome}: {_last_line(case['log'])}")
    for case in cases:  # keep only the files of the cases that failed (to replay them)
        if case["label"] != "control" and not any(case["artifact"] in line for line in bad):
            Path(case["artifact"]).unlink(missing_ok=True)
            Path(case["artifact"] + ".json").unlink(missing_ok=True)
    summary = {fmt: dict(sorted(c.items(), key=str)) for fmt, c in counts.items()}
    slowest = max(cases, key=lambda c: results[c["id"]].get("seconds") or 0)
    biggest = max(cases, key=lambda c: results[c["id"]].get("maxrss_kib") or 0)
    print(f"\nfuzz: {len(cases)} cases in {seconds:.1f} s; exit codes per format: {json.dumps(summary)}; "
          f"slowest case {results[slowest['id']].get('seconds')} s ({slowest['format']} {slowest['label']}); "
          f"peak child RSS {(results[biggest['id']].get('maxrss_kib') or 0) / 1024:.0f} MiB ({biggest['format']} {biggest['label']})")
    assert not bad, f"{len(bad)} of {len(cases)} cases did not end in 0, 1 or 2:\n" + "\n".join(bad[:30])

    controls = [results[c["id"]]["code"] for c in cases if c["label"] == "control"]
    assert all(code in (0, 1) for code in controls), controls  # the harness really ran verify
    for fmt, c in counts.items():  # and mutations both survive (a gate verdict) and get refused (exit 2)
        assert c[2] > 0 and c[0] + c[1] > 0, (fmt, dict(c))
    for case in cases:  # exit 2 is one plain line: no traceback, no runtime banner around it
        if results[case["id"]]["code"] == 2:
            text = Path(case["log"]).read_text(errors="replace")
            ok = text.count("cwtool: error:") == 1 and _last_line(case["log"]).startswith("cwtool: error:")
            assert ok and "Traceback" not in text and "EP Error" not in text, (case["label"], text[-500:])


def test_damaged_artifacts_never_crash_verify(fuzz_sources, tmp_path_factory):
    _fuzz(fuzz_sources, tmp_path_factory.mktemp("fuzz_cases"), PER_FORMAT)


@pytest.mark.slow
def test_many_more_damaged_artifacts_never_crash_verify(fuzz_sources, tmp_path_factory):
    _fuzz(fuzz_sources, tmp_path_factory.mktemp("fuzz_cases_slow"), {k: v * SLOW_FACTOR for k, v in PER_FORMAT.items()}, seed="slow-")


def test_a_tflite_file_that_crashes_the_runtime_as_it_loads_is_refused_in_one_line(fuzz_sources, tmp_path):
    """One byte of an int8 file set to 0 (a reviewer's mutation) killed verify and bench by a segmentation fault inside
    LiteRT's interpreter, exit 139 and no line: the runtime trusts the flatbuffer's offsets. Each file is first loaded in a
    child; one that dies so is refused, exit 2."""
    pytest.importorskip("ai_edge_litert")
    source = fuzz_sources["tflite_int8"].read_bytes()
    probe = ("import sys\nfrom ai_edge_litert.interpreter import Interpreter\ntry:\n"
             "    Interpreter(model_content=open(sys.argv[1], 'rb').read()).get_tensor_details()\nexcept Exception:\n    pass\n")
    damaged = tmp_path / "damaged.tflite"
    for offset in range(12, 28):  # the root table's fields: where the reviewer's crash and this file's lie
        data = bytearray(source)
        data[offset] = 0
        damaged.write_bytes(bytes(data))
        if subprocess.run([sys.executable, "-c", probe, str(damaged)], capture_output=True).returncode < 0:
            break
    else:
        pytest.skip("no byte there crashes this LiteRT as it loads")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    for command in (["verify", str(damaged), "--data", str(fuzz_sources["rows"]), "-p", "3"], ["bench", str(damaged), "--runs", "1"]):
        done = subprocess.run([sys.executable, "-m", "toolchain", *command], capture_output=True, text=True, env=env, timeout=300)
        assert done.returncode == 2, (command, done.returncode, done.stderr)
        assert done.stderr.strip().splitlines()[-1] == (f"cwtool: error: {damaged} crashes the LiteRT runtime as it loads "
                                                        "(SIGSEGV): the file is damaged; re-export it"), done.stderr
