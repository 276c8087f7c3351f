"""The wheel holds every toolchain package, the device profiles and the calibration sets, so an installed
cwtool works like a checkout (a package missing from pyproject's explicit list would otherwise ship silently)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory) -> set[str]:
    # a copy of what the build reads: an in-tree build/ folder would carry stale files into the wheel
    src, out = tmp_path_factory.mktemp("src"), tmp_path_factory.mktemp("wheel")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("toolchain", "targets", "calibration"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
    cmd = [sys.executable, "-m", "pip", "wheel", str(src), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {done.stderr.strip()[-200:]}")
    (wheel,) = out.glob("cwtool-*.whl")
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def test_wheel_ships_every_module(wheel_names):
    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "toolchain").rglob("*.py")}
    assert modules, "no toolchain sources found"
    assert modules - wheel_names == set()


def test_wheel_ships_the_device_profiles_where_targets_py_looks(wheel_names):
    profiles = sorted(p.name for p in (ROOT / "targets").glob("*.toml"))
    assert profiles
    assert {f"toolchain/targets_data/{name}" for name in profiles} <= wheel_names


def test_wheel_ships_the_calibration_sets_where_calibration_py_looks(wheel_names):
    sets = sorted(p.name for p in (ROOT / "calibration").glob("*.npz"))
    assert "digits.npz" in sets
    assert {f"toolchain/calibration_data/{name}" for name in sets} <= wheel_names
