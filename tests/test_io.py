"""Atomic writes: nothing half-written, and files readable by others (not mkstemp's 0600)."""

import os
import stat

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
