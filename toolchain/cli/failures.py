"""How cwtool tells a failure's cause: a light install's missing package, the CLI libraries' own errors, what a native
library printed while it failed."""

from __future__ import annotations

__all__ = ["raised_by_the_cli_libraries", "native_output", "install_hint", "limits_line"]


def raised_by_the_cli_libraries(exc: BaseException) -> bool:
    """Whether the innermost frame that raised ``exc`` is rich's, click's or typer's."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    module = tb.tb_frame.f_globals.get("__name__", "") if tb is not None else ""
    return module.split(".")[0] in ("rich", "click", "typer")


def native_output(exc: BaseException) -> str | None:
    """What a native library printed while it failed (toolchain.export.tflite.quiet_native), on ``exc`` or its cause."""
    while exc is not None:
        native = getattr(exc, "native_output", None)
        if isinstance(native, str) and native.strip():
            return native
        exc = exc.__cause__ or exc.__context__
    return None


# Packages of the full install that a light one (numpy, typer and one runtime: `cwtool verify` on a
# device) lacks: a command that needs one says what to install instead of failing as a bug.
PACKAGES = {"torch": "torch==2.13.0", "sklearn": "scikit-learn", "PIL": "pillow", "onnx": "onnx", "onnxscript": "onnxscript",
             "onnxruntime": "onnxruntime", "torch_pruning": "torch-pruning", "litert_torch": "litert-torch",
             "matplotlib": "matplotlib", "ai_edge_litert": "ai-edge-litert"}


def install_hint(module: str) -> str | None:
    package = PACKAGES.get(module.split(".")[0])
    if package is None:
        return None
    full = "pip install torch==2.13.0, then pip install 'cwtool[compress]'" if package != "onnxruntime" else "pip install 'cwtool[onnx]'"
    return f"this command needs {package}, which is not installed here: {full} (or pip install {package})"


def limits_line(exc: BaseException) -> str | None:
    """The line of a failure that is the process's limits, not cwtool's bug nor the input's (exit 2, not 3): no memory
    left (ulimit -v, a container's), no thread that may start (ulimit -u, a pids limit), a package present whose shared
    library will not load. None for anything else: a name a module lacks (a version mismatch) stays a bug to report."""
    from toolchain.errors import THREAD_REMEDY, describe, import_remedy, no_thread_left

    if isinstance(exc, MemoryError):  # its own words kept: a request of exabytes is a bug's or a crafted file's, not a limit's
        return (f"ran out of memory ({describe(exc, 160)}): this process may use less memory than this step needs: raise "
                "its limit (ulimit -v, the container's memory limit), or run it where more memory is free")
    if no_thread_left(exc):
        return (f"could not start a thread ({describe(exc, 160)}): this process or user may run fewer threads than cwtool's "
                f"libraries start: {THREAD_REMEDY}")
    if isinstance(exc, ImportError) and exc.name and _library_will_not_load(exc):
        top = exc.name.split(".")[0]
        package = PACKAGES.get(top, top)
        return f"{package} is installed but does not import here ({describe(exc, 160)}): {import_remedy(exc, f'pip install {package}')}"
    return None


# How the dynamic loader says a package's shared library will not load (no memory to map it, a file missing or broken)
_LOADER_WORDS = ("failed to map segment", "cannot allocate memory", "cannot open shared object", "undefined symbol",
                 "wrong elf class", "invalid elf header", "file too short")


def _library_will_not_load(exc: ImportError) -> bool:
    """A third-party package's import that failed in the loader: not one of cwtool's modules, not the standard library's."""
    import sys

    top = exc.name.split(".")[0]
    text = str(exc).lower()
    return (top != "toolchain" and top not in getattr(sys, "stdlib_module_names", ())
            and any(words in text for words in _LOADER_WORDS))
