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


def _import_guards():
    from toolchain.export.tflite import import_litert_torch
    from toolchain.runtimes.litert import interpreter_class
    from toolchain.runtimes.onnx import _ort

    # (what imports the package, its top module, the package's name in the message); the LiteRT chain falls back to
    # tflite_runtime and tensorflow, blocked too so that the first failure is the one said
    return [(import_litert_torch, "litert_torch", "litert-torch", ()), (_ort, "onnxruntime", "onnxruntime", ()),
            (interpreter_class, "ai_edge_litert", "ai-edge-litert", ("tflite_runtime", "tensorflow"))]


@pytest.mark.parametrize("which", [0, 1, 2])
def test_a_missing_package_is_named_not_installed(which, monkeypatch):
    from toolchain.errors import UserError

    imports, module, package, others = _import_guards()[which]
    for name in [n for n in sys.modules if n.split(".")[0] in (module, *others)] + [module, *others]:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ModuleNotFoundError(name=...), also of a loaded submodule
    with pytest.raises(UserError, match=f"^{package} is not installed: pip install"):
        imports()


@pytest.mark.parametrize("which", [0, 1, 2])
def test_an_installed_package_that_fails_to_import_says_why(which, monkeypatch):
    """A package that is there but cannot load (a broken install, a shared library that cannot be mapped) was reported
    as "not installed": the user reinstalled what was installed, and the reason was lost."""
    import builtins

    from toolchain.errors import UserError

    imports, module, package, others = _import_guards()[which]
    real_import = builtins.__import__

    def failing(name, *args, **kwargs):
        if name.split(".")[0] == module:
            raise ImportError("libfake.so: failed to map segment from shared object")
        if name.split(".")[0] in others:
            raise ModuleNotFoundError(f"No module named '{name}'", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, module, raising=False)
    for name in [n for n in sys.modules if n.startswith(f"{module}.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setattr(builtins, "__import__", failing)
    with pytest.raises(UserError, match=f"^{package} is installed but does not import here \\(ImportError: libfake.so: failed to map"):
        imports()
