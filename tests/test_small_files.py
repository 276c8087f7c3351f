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
