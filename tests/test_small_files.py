"""toolchain.small_files: a small untrusted file is read only when it is a plain file of a bounded size."""

from __future__ import annotations

import json
import os
import signal

import pytest

from toolchain.errors import UserError
from toolchain.small_files import read_small_file


@pytest.fixture
def no_hang():
    signal.signal(signal.SIGALRM, lambda *_: (_ for _ in ()).throw(TimeoutError("a read that never ends")))
    signal.alarm(20)
    yield
    signal.alarm(0)


def test_a_plain_file_within_the_limit_is_read(tmp_path):
    (tmp_path / "p.toml").write_bytes(b"x" * 100)
    assert read_small_file(tmp_path / "p.toml", 100, "target file", "give a profile") == b"x" * 100


def test_a_small_file_under_a_large_limit_is_read_in_a_process_whose_memory_is_limited(tmp_path):
    """read(limit + 1) asked the allocator for the whole limit: a 70 KB baseline under the 1 GiB limit was a MemoryError
    (exit 3) for verify --baseline in a process limited to 1 GB (ulimit -v, a device), which the file never needed."""
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "report.json").write_bytes(b"x" * 70_000)
    script = ("import resource, sys; from toolchain.small_files import read_small_file; "
              "used = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize(); "
              "resource.setrlimit(resource.RLIMIT_AS, (used + (512 << 20), resource.RLIM_INFINITY)); "
              "sys.stdout.write(str(len(read_small_file(sys.argv[1], 1 << 31, 'baseline', 'give another'))))")
    if not Path("/proc/self/statm").exists():
        pytest.skip("no /proc to read the process's size from")
    proc = subprocess.run([sys.executable, "-c", script, str(tmp_path / "report.json")], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1], timeout=60)
    assert proc.returncode == 0 and proc.stdout == "70000", proc.stderr


@pytest.mark.parametrize("kind", ["folder", "fifo", "device", "large"])
def test_anything_else_is_refused_before_it_is_read(tmp_path, no_hang, kind):
    path = tmp_path / "p.toml"
    if kind == "folder":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)  # no writer: a plain open waited for one
    elif kind == "device":
        path.symlink_to("/dev/zero")  # read without end
    else:
        path.write_bytes(b"x" * 101)
    words = "holds 101 bytes, more than 100: give a profile" if kind == "large" else "is a folder, pipe or device, not a plain file"
    with pytest.raises(UserError, match=f"^target file {path} {words}"):
        read_small_file(path, 100, "target file", "give a profile")


def test_a_sidecar_that_is_no_small_file_is_no_sidecar(tmp_path, no_hang):
    """A sidecar is a hint: a FIFO or /dev/zero in its place hung or filled memory; now the artifact reads as having none."""
    from toolchain.runtimes.base import MAX_SIDECAR_BYTES, read_sidecar

    model = tmp_path / "m.tflite"
    side = tmp_path / "m.tflite.json"
    side.write_text(json.dumps({"num_classes": 10}))
    assert read_sidecar(model) == {"num_classes": 10}
    side.unlink()
    os.mkfifo(side)
    assert read_sidecar(model) == {}
    side.unlink()
    side.symlink_to("/dev/zero")
    assert read_sidecar(model) == {}
    side.unlink()
    side.write_bytes(b" " * (MAX_SIDECAR_BYTES + 1))
    assert read_sidecar(model) == {}
