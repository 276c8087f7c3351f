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
    from toolchain.export.onnx_int8 import _quantization
    from toolchain.export.tflite import import_litert_torch
    from toolchain.runtimes.litert import interpreter_class
    from toolchain.runtimes.onnx import _ort

    # (what imports the package, its top module, the package's name in the message, modules blocked beside it); the
    # LiteRT chain falls back to tflite_runtime and tensorflow, blocked too so that the first failure is the one said
    return [(import_litert_torch, "litert_torch", "litert-torch", ()), (_ort, "onnxruntime", "onnxruntime", ()),
            (_quantization, "onnxruntime", "onnxruntime", ()),
            (interpreter_class, "ai_edge_litert", "ai-edge-litert", ("tflite_runtime", "tensorflow"))]


GUARDS = range(4)


def _forget(monkeypatch, top: str) -> None:
    """Unload ``top`` and its submodules for this test (restored after it): the next import runs the failing path."""
    for name in [n for n in sys.modules if n == top or n.startswith(f"{top}.")]:
        monkeypatch.delitem(sys.modules, name)


def _missing(module: str) -> ModuleNotFoundError:
    return ModuleNotFoundError(f"No module named '{module}'", name=module)  # what importing an absent package raises


def _failing_import(monkeypatch, failures: dict) -> None:
    """Imports of each module in ``failures`` (and of its submodules) raise its error, from now to the test's end."""
    import builtins

    real_import = builtins.__import__

    def failing(name, globals=None, locals=None, fromlist=(), level=0):
        for module, error in failures.items():
            if level == 0 and (name == module or name.startswith(f"{module}.")):
                raise error
        return real_import(name, globals, locals, fromlist, level)

    for module in failures:
        _forget(monkeypatch, module)
    monkeypatch.setattr(builtins, "__import__", failing)


@pytest.mark.parametrize("which", GUARDS)
def test_a_missing_package_is_named_not_installed(which, monkeypatch):
    from toolchain.errors import UserError

    imports, module, package, others = _import_guards()[which]
    _failing_import(monkeypatch, {name: _missing(name) for name in (module, *others)})
    with pytest.raises(UserError, match=f"^{package} is not installed: pip install"):
        imports()


@pytest.mark.parametrize("which", GUARDS)
@pytest.mark.parametrize("error", [ImportError("libfake.so: failed to map segment from shared object"),
                                   OSError("libfake.so: file too short")], ids=["ImportError", "OSError"])
def test_an_installed_package_that_fails_to_import_says_why(which, error, monkeypatch):
    """A package that is there but cannot load (a broken install; a shared library that cannot be mapped, which
    ctypes.CDLL raises as OSError) was reported as "not installed", or as an internal error: the user reinstalled what
    was installed, and the reason was lost."""
    from toolchain.errors import UserError

    imports, module, package, others = _import_guards()[which]
    _failing_import(monkeypatch, {module: error, **{name: _missing(name) for name in others}})
    with pytest.raises(UserError, match=f"^{package} is installed but does not import here \\({type(error).__name__}: libfake.so"):
        imports()


@pytest.mark.parametrize("which", GUARDS)
def test_a_missing_submodule_is_a_broken_install_not_a_missing_package(which, monkeypatch):
    from toolchain.errors import UserError

    imports, module, package, others = _import_guards()[which]
    missing = f"{module}.capi"
    _failing_import(monkeypatch, {module: _missing(missing), **{name: _missing(name) for name in others}})
    with pytest.raises(UserError, match=f"^{package} is installed but does not import here \\(ModuleNotFoundError"):
        imports()


def test_a_broken_fallback_interpreter_is_said_when_the_first_choice_is_missing(monkeypatch):
    """ai-edge-litert absent, tflite-runtime installed but failing: its reason, not "ai-edge-litert is not installed"."""
    from toolchain.errors import UserError
    from toolchain.runtimes.litert import interpreter_class

    _failing_import(monkeypatch, {"ai_edge_litert": _missing("ai_edge_litert"), "tensorflow": _missing("tensorflow"),
                                  "tflite_runtime": ImportError("numpy.core.multiarray failed to import")})
    with pytest.raises(UserError, match="^tflite-runtime is installed but does not import here \\(ImportError: numpy.core"):
        interpreter_class()
