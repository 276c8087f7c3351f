"""Atomic writes: nothing half-written, and files readable by others (not mkstemp's 0600)."""

import json
import os
import stat
import time

import pytest

from toolchain.io import atomic_write_json, staged_path


def test_written_file_has_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_failure_leaves_neither_file_nor_temporary(tmp_path):
    with pytest.raises(RuntimeError):
        with staged_path(tmp_path / "model.onnx") as tmp:
            open(tmp, "wb").write(b"half")
            raise RuntimeError("converter crashed")
    assert list(tmp_path.iterdir()) == []


def test_nan_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ValueError):
        atomic_write_json(tmp_path / "r.json", {"x": float("nan")})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["under a file", "onto a folder"])
def test_a_path_that_cannot_be_written_is_the_users_error(tmp_path, where):
    from toolchain.errors import UserError

    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("y")
    path = tmp_path / "a.txt" / "r.json" if where == "under a file" else tmp_path / "d"
    with pytest.raises(UserError, match="cannot write"):
        atomic_write_json(path, {"a": 1})
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["a.txt", "d", "keep"]


def test_a_folder_that_refuses_the_probe_is_the_users_error(tmp_path, monkeypatch):
    """Root passes os.access on read-only mounts; the probe file is what tells."""
    from toolchain import output_paths
    from toolchain.errors import UserError

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(output_paths.tempfile, "mkstemp", refuse)
    with pytest.raises(UserError, match="cannot write in"):
        output_paths.check_output_file(tmp_path / "r.json", "--json")


def test_a_folder_that_cannot_be_looked_into_is_the_users_error(tmp_path, monkeypatch):
    import pathlib

    from toolchain import output_paths
    from toolchain.errors import UserError

    def refuse(self):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(pathlib.Path, "is_symlink", refuse)
    with pytest.raises(UserError, match="cannot look at"):
        output_paths.check_output_dir(tmp_path / "private" / "run", "--out")


def test_a_link_the_user_named_is_written_through_any_other_is_replaced(tmp_path):
    from toolchain.io import write_named_output
    from toolchain.output_paths import check_output_file

    target = tmp_path / "real.json"
    target.write_text("old")
    (tmp_path / "link.json").symlink_to(target)
    check_output_file(tmp_path / "link.json", "--json")  # the command's check before its work: the user's link
    write_named_output(tmp_path / "link.json", "{}\n", "--json")
    assert (tmp_path / "link.json").is_symlink() and target.read_text() == "{}\n"
    target.write_text("old")
    atomic_write_json(tmp_path / "link.json", {"a": 1})  # a file cwtool names itself: the link goes, its target stays
    assert not (tmp_path / "link.json").is_symlink() and target.read_text() == "old"
    assert json.loads((tmp_path / "link.json").read_text()) == {"a": 1}


def test_link_loops_and_links_the_loaders_never_read_leave_the_output_check_alone(tmp_path):
    """A link loop inside a data folder (a hidden cache, or at its top) is neither an input nor a crash; a link to a
    folder inside a class folder (the loaders read only its images) does not make that folder an input."""
    from toolchain.output_paths import check_output_dir, check_output_file
    from toolchain.input_paths import input_paths

    data = tmp_path / "data"
    (data / "c0").mkdir(parents=True)
    (data / ".cache").mkdir()
    (data / ".cache" / "a").symlink_to("b")
    (data / ".cache" / "b").symlink_to("a")
    (data / "loop").symlink_to("loop")
    (data / "c0" / "up").symlink_to(tmp_path)
    inputs = input_paths(str(data))
    check_output_file(tmp_path / "out.json", "--json", inputs=inputs)
    check_output_dir(tmp_path / "run", "--out", inputs=inputs)


def test_the_run_log_never_appends_through_a_link_that_took_its_name(tmp_path):
    """compress.log was opened by name for every line: a link swapped in while the run went on appended the log to the
    input model it pointed at."""
    from rich.console import Console

    from toolchain.report.consoles import RunLog

    victim = tmp_path / "model.pt"
    victim.write_bytes(b"weights")
    console = Console(file=open(os.devnull, "w"), record=True)
    log = RunLog(console)
    log.attach(tmp_path / "compress.log")
    log.record("round 1")
    (tmp_path / "link").symlink_to(victim)
    os.replace(tmp_path / "link", tmp_path / "compress.log")
    log.record("round 2")
    log.record("round 3")
    assert victim.read_bytes() == b"weights"
    assert "became a symbolic link" in " ".join(console.export_text().split())  # the console wraps long paths


def test_a_link_that_took_a_named_outputs_name_while_the_command_ran_is_replaced(tmp_path):
    """--json named a path that did not exist at the start; a link planted there meanwhile took the JSON onto its target."""
    from toolchain.io import write_named_output
    from toolchain.output_paths import check_output_file

    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    out = tmp_path / "out.json"
    check_output_file(out, "--json")
    out.symlink_to(victim)
    write_named_output(out, "{}\n", "--json")
    assert victim.read_text() == "precious" and not out.is_symlink() and out.read_text() == "{}\n"


def test_a_scratch_folder_removes_what_a_killed_process_left(tmp_path, monkeypatch):
    """kill -9 during the ONNX int8 quantization left /tmp/cwtool-q-* behind (no cleanup runs), and none ever removed it:
    they piled up. A scratch folder names its process, and the next one removes a dead process's."""
    import subprocess
    import sys
    import tempfile

    from pathlib import Path

    from toolchain.io import scratch_folder

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    left = tmp_path / f"cwtool-q-{dead}.abcd1234"
    alive = tmp_path / f"cwtool-q-{os.getppid()}.efgh5678"
    other = tmp_path / "cwtool-q-abcdefgh"  # an older name without a process: not ours to judge
    recent = tmp_path / f"cwtool-q-{dead}.ijkl9012"  # a live process's in another container looks dead: left for hours
    for folder in (left, alive, other, recent):
        folder.mkdir()
        (folder / "pre.onnx").write_bytes(b"x")
    day_ago = os.stat(left).st_mtime - 24 * 3600
    for folder in (left, alive, other):
        os.utime(folder, (day_ago, day_ago))
    with scratch_folder("cwtool-q-") as folder:
        assert Path(folder).name.startswith(f"cwtool-q-{os.getpid()}.")
    assert not left.exists() and alive.is_dir() and other.is_dir() and recent.is_dir() and not Path(folder).exists()


def test_a_folder_nested_deeper_than_python_recurses_is_refused_in_words(tmp_path):
    """os.walk recursed: a run directory holding 1,100 nested folders ended --resume (and the demo) in exit 3."""
    from toolchain.errors import UserError
    from toolchain.output_paths import check_own_files

    deep = tmp_path / "run" / "rounds"
    deep.mkdir(parents=True)
    for _ in range(1100):  # os.makedirs recurses too
        deep = deep / "a"
        deep.mkdir()
    try:
        with pytest.raises(UserError, match="nested more than 32 deep"):
            check_own_files(tmp_path / "run", "--out")
    finally:
        remove_chain(deep, tmp_path)
    (tmp_path / "shallow" / "rounds").mkdir(parents=True)
    check_own_files(tmp_path / "shallow", "--out")


def remove_chain(deepest, top):
    """Remove a chain of nested empty folders from its deepest up to ``top`` (shutil.rmtree, pytest's cleanup of its
    temporary folders included, recurses and would fail on it for every later test run)."""
    while deepest != top:
        deepest.rmdir()
        deepest = deepest.parent


def _fake_run(folder, record="manifest.json"):
    folder.mkdir(parents=True)
    head = '{"run_id": "0123abcd", "inputs": {}}' if record == "manifest.json" else '{"schema_version": 1, "kind": "cwtool-export"}'
    (folder / record).write_text(head)
    for sub in ("rounds", "artifacts"):
        (folder / sub).mkdir()
    (folder / "artifacts" / "model_int8.onnx").write_bytes(b"onnx")
    return folder


@pytest.mark.parametrize("record", ["manifest.json", "export.json"])
@pytest.mark.parametrize("output", ["artifacts/model_int8.onnx", "artifacts/verify.md", "calibration.npz", "artifacts/sub/x.json"])
def test_no_output_goes_into_what_a_run_keeps(record, output, tmp_path):
    """verify --markdown made a compress run's artifact Markdown, bench --json a round's summary, train --out a round's
    weights; an export --out inside plots/ was swept by the next --resume (a trust reviewer's findings)."""
    from toolchain.errors import UserError
    from toolchain.output_paths import check_output_dir, check_output_file

    run = _fake_run(tmp_path / "runs" / "a", record)
    with pytest.raises(UserError, match="keeps"):
        check_output_file(run / output, "--json")
    if (run / output).exists():  # a dangling link is refused as one
        link = tmp_path / "elsewhere.json"
        link.symlink_to(run / output)
        with pytest.raises(UserError, match="keeps"):
            check_output_file(link, "--json")
    with pytest.raises(UserError, match="keeps"):
        check_output_dir(run / "artifacts" / "again", "--out")
    with pytest.raises(UserError, match="keeps"):  # deeper than 4 folders (a regression reviewer's find)
        check_output_file(run / "artifacts" / "a" / "b" / "c" / "d" / "x.pt", "--out")
    with pytest.raises(UserError, match="keeps"):  # a record not written yet: the run's own name
        check_output_file(run / ("report.json" if record == "manifest.json" else "export.md"), "--json")
    check_output_file(run / "my-verify.json", "--json")  # beside the run's files: the user's own
    check_output_dir(run / "another-export", "--out")
    check_output_dir(run, "--out")  # compress --resume writes its own


def test_a_folder_named_like_a_runs_is_no_run_without_its_record(tmp_path):
    from toolchain.output_paths import check_output_file

    (tmp_path / "project" / "artifacts").mkdir(parents=True)
    (tmp_path / "project" / "manifest.json").write_text('{"name": "my package"}')
    check_output_file(tmp_path / "project" / "artifacts" / "out.json", "--json")


def test_only_the_names_cwtool_writes_are_rounds(tmp_path):
    """round_01.json and round_2_old.json beside rounds 1 and 2 were listed as rounds 1 and 2 again in the report."""
    from toolchain.rundir import RunDir

    (tmp_path / "rounds").mkdir()
    for name in ("round_1.json", "round_2.json", "round_01.json", "round_2_old.json", "round_0.json", "round_².json"):
        (tmp_path / "rounds" / name).write_text("{}")
    assert RunDir(tmp_path).done_rounds() == [1, 2]


def test_a_full_disk_inside_a_library_s_writer_names_the_file_it_was_writing(tmp_path):
    """onnx.save on a full disk raised an OSError naming no file: 'cannot write a file (or the output)'."""
    import errno

    from toolchain.errors import UserError
    from toolchain.io import staged_path

    with pytest.raises(UserError, match=r"cannot write '.*model\.onnx': No space left on device: free some space"):
        with staged_path(tmp_path / "model.onnx"):
            raise OSError(errno.ENOSPC, "No space left on device")
    assert list(tmp_path.iterdir()) == []


def test_a_write_removes_what_a_killed_writer_of_the_same_file_left(tmp_path):
    """kill -9 during `train --out d.pt` or a verify report left its staged file (a whole checkpoint) beside the output for
    good: no run folder's --resume sweeps there. Now each staged file names its process, and the next write of that file
    removes a gone process's once it has been unchanged an hour; a recent one, a live process's and others' stay."""
    import subprocess
    import sys

    from toolchain.io import LEFT_FILE_AFTER, atomic_write_bytes

    gone = int(subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                              check=True).stdout)
    left, recent = tmp_path / f".cwtool-tmp.d.{gone}.abcdefgh.pt", tmp_path / f".cwtool-tmp.d.{gone}.ijklmnop.pt"
    alive, other = tmp_path / f".cwtool-tmp.d.{os.getpid()}.qrstuvwx.pt", tmp_path / f".cwtool-tmp.e.{gone}.abcdefgh.pt"
    for path in (left, recent, alive, other):
        path.write_bytes(b"half a checkpoint")
    hours_ago = time.time() - LEFT_FILE_AFTER - 60
    for path in (left, alive, other):
        os.utime(path, (hours_ago, hours_ago))
    atomic_write_bytes(tmp_path / "d.pt", b"whole")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["d.pt", recent.name, alive.name, other.name])


@pytest.mark.parametrize("name", ["a" * 180 + "." + "\u00e9" * 26, "b" * 10 + "." + "\u00e9" * 120, "c" * 254 + ".pt"[:1]])
def test_a_long_legal_name_is_written(tmp_path, name):
    """The staged name grew by the writer's pid: a legal 233-byte name (a 53-byte suffix of two-byte characters) ended a
    finished `train --out` in "File name too long" (a regression reviewer's finding). The stem and suffix are cut in bytes."""
    from toolchain.io import atomic_write_bytes

    assert len(name.encode()) <= 255
    atomic_write_bytes(tmp_path / name, b"whole")
    assert (tmp_path / name).read_bytes() == b"whole" and [p.name for p in tmp_path.iterdir()] == [name]
