"""The process a command runs in, made readable before any command: standard streams the caller closed, and the
environment variables that rich, typer and OpenMP read themselves where no reader could use their values; and, at the
end, whether the reader of its output went away."""

from __future__ import annotations

import sys


def closed_streams_opened() -> None:
    """stdin, stdout or stderr closed by the caller (``>&-``, ``2>&-``) is /dev/null from here on: a file cwtool opened
    would otherwise take the free descriptor and get what a native library prints, Python set sys.stdout or
    sys.stderr to None (every command ended in an AttributeError, exit 1, and export in an internal error), and the
    exit code is still the command's own."""
    import os

    for fd, name, mode in ((0, "stdin", "r"), (1, "stdout", "w"), (2, "stderr", "w")):
        try:
            os.fstat(fd)
        except OSError:
            devnull = os.open(os.devnull, os.O_RDONLY if mode == "r" else os.O_WRONLY)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if getattr(sys, name) is None:
            setattr(sys, name, open(fd, mode, buffering=1 if fd else -1, encoding="utf-8", errors="backslashreplace", closefd=False))


def unreadable_columns_unset() -> None:
    """COLUMNS=0 (some CI and docker setups), or any width no table can be read at, is taken out of the environment: rich
    and typer read it themselves, and printed --help as one empty line (cwtool's consoles: toolchain.report.consoles)."""
    import os

    from toolchain.report.consoles import readable_columns

    if os.environ.get("COLUMNS") is not None and readable_columns() is None:
        del os.environ["COLUMNS"]


def unreadable_thread_count_unset() -> None:
    """OMP_NUM_THREADS set to nothing (``export OMP_NUM_THREADS=`` in a script) or to what OpenMP cannot read is taken out
    of the environment before torch loads OpenMP, which ignores it anyway but says so on stderr first: a second line
    beside a bad input's one. A list of thread counts per nesting level ("4,2") is OpenMP's own and stays."""
    import os
    import re

    value = os.environ.get("OMP_NUM_THREADS")
    count = r"[1-9]\d{0,5}"  # OpenMP refuses a count past what an int holds (20 digits printed its warning twice)
    if value is not None and not re.fullmatch(rf"\s*{count}(\s*,\s*{count})*\s*", value):
        del os.environ["OMP_NUM_THREADS"]


def reader_went_away(exc: BaseException) -> bool:
    """Whether click's exit came of a closed pipe (``cwtool --help | head -1``): it says so with exit 1."""
    while exc is not None:
        if isinstance(exc, BrokenPipeError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False
