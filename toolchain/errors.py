"""The one exception type that means "the user's input is wrong" (exit code 2)."""

import re

# C0/C1 control characters (ESC, BEL, CSI...): text from a file must not drive the terminal it is printed on;
# bidirectional overrides and isolates (U+202E...): nor reorder what the line shows ("gate: deliaf" read as passed)
_CONTROL_CHARS = "\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_CONTROL = re.compile(f"[{_CONTROL_CHARS}]")
# printed escaped too: lone surrogates (a file name that is not UTF-8, held as surrogate escapes), which no file, font
# or plot can take, though a name holding them is a name
_ESCAPED = re.compile(f"[{_CONTROL_CHARS}\ud800-\udfff]")


def printable(text) -> str:
    """``text`` with control characters shown as \\xNN escapes, so a class name or path from a file
    cannot rewrite the terminal line ("all checks passed") or emit terminal commands."""
    return _ESCAPED.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100 else f"\\u{ord(m.group()):04x}", str(text))


def one_line(text) -> str:
    """``printable`` with line breaks escaped too: a name or description from a file, printed inside a line of
    its own, cannot start a forged one ("gate: passed")."""
    return printable(str(text).replace("\r", "\\r").replace("\n", "\\n").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029"))


def listed(texts, most: int) -> str:
    """The first ``most`` of ``texts``, comma-separated, then "and N more": a line, not 3,000 names."""
    texts = list(texts)
    return ", ".join(texts[:most]) + (f" and {len(texts) - most:,} more" if len(texts) > most else "")


def unprintable_in(text) -> str | None:
    """The first character of ``text`` that would break or hijack the line it is printed in -- a control character
    (tab and line feed too), a line or paragraph separator, a bidirectional override -- shown escaped; None when there is none."""
    import unicodedata

    for char in str(text):
        if unicodedata.category(char) in ("Cc", "Zl", "Zp") or _CONTROL.match(char):
            return repr(char)[1:-1]
    return None


def describe(exc: BaseException, limit: int = 200) -> str:
    """``Type: message`` of an exception raised by code cwtool does not own (a user's model, a library), as one short
    line: a message that cannot be made (its __str__ raises) leaves the type alone, and sys.exit is named as such."""
    if isinstance(exc, SystemExit):
        try:
            code = repr(exc.code)[:limit]
        except Exception:
            code = "..."
        return one_line(f"sys.exit({code})")
    try:
        text = " ".join(str(exc).split()).split(" Exception raised from ")[0]  # torch's C++ source location: not the user's
    except Exception:
        text = ""
    name = type(exc).__name__
    return one_line(f"{name}: {text[:limit]}" if text else name)


IMPORT_FAILURES = (ImportError, OSError)  # OSError: a package's own ctypes.CDLL of a shared library that will not load


def import_failed(exc: BaseException, module: str, package: str, install: str) -> "UserError":
    """A failed import of ``module`` in a user's words: not installed (how to install ``package``), or installed but
    failing to import (a broken install, a submodule or shared library missing or unloadable, no memory left to map it):
    the reason, which "not installed" would hide while the package is right there."""
    if is_not_installed(exc, module):
        return UserError(f"{package} is not installed: {install}")
    return UserError(f"{package} is installed but does not import here ({describe(exc)}): {import_remedy(exc, install)}")


# What a library says where the process may start no more threads (onnxruntime, Python's own, OpenMP's, jax's)
_NO_THREAD = ("pthread_create failed", "can't start new thread", "thread creation failed")


def no_thread_left(exc: BaseException) -> bool:
    """Whether ``exc`` says a thread could not start: the process's limit (ulimit -u, a container's pids limit)."""
    text = str(exc).lower()
    return isinstance(exc, (RuntimeError, OSError)) and any(words in text for words in _NO_THREAD)


THREAD_REMEDY = "raise the limit (ulimit -u, the container's pids limit), or set OMP_NUM_THREADS=1"


def import_remedy(exc: BaseException, install: str) -> str:
    """What to do about a package that is there but does not load: a process limited in memory cannot map its shared
    libraries (ulimit -v, a container's limit), which no reinstall mends."""
    text = str(exc).lower()
    if isinstance(exc, MemoryError) or "failed to map segment" in text or "cannot allocate memory" in text:
        return "this process may not have the memory to load it: raise its memory limit (ulimit -v, the container's)"
    return f"reinstall it ({install})"


def is_not_installed(exc: BaseException, module: str) -> bool:
    """Whether ``exc`` says that ``module`` itself is absent (not one of its submodules or dependencies)."""
    return isinstance(exc, ModuleNotFoundError) and exc.name == module


class UserError(Exception):
    """Bad input or usage. The message is one plain line: what is wrong and how to fix it.

    The CLI prints it without a traceback (unless --debug) and exits with code 2.
    """

    def __init__(self, message: str, whole: bool = False):
        # One line, always: callers sometimes pass messages built from library errors; no terminal escapes.
        super().__init__(printable(" ".join(str(message).split())))
        self.whole = whole  # a remedy the user copies (every class name): never cut, however long


class InputCountError(UserError):
    """A model file that does not take exactly one input tensor (``count`` of them): bad input in a user's file,
    and in a file cwtool made, the sign of a forward whose traced graph does not read its input."""

    def __init__(self, path, count: int):
        super().__init__(f"{path} has {count} inputs: cwtool runs single-input classifiers only")
        self.count = count


class ConverterRefused(UserError):
    """A converter could not make a file of the model: its forward, or the mix of int8 and float layers asked of it
    (litert-torch refuses some float layers beside int8 ones). Bad input where the model itself is refused; the search
    for layers to keep in float passes over a mix it refuses, saying ``detail``: the converter's own words."""

    def __init__(self, message: str, detail: str = ""):
        super().__init__(message)
        self.detail = detail or str(self)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived: unwinds like KeyboardInterrupt (a BaseException, so no ``except
    Exception`` swallows it), running every cleanup on the way out. ``run_dir`` names the compress run
    that can be finished with --resume, when there is one."""

    def __init__(self, signal_name: str):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.run_dir = None
        self.completed = False  # the command ran to its end regardless (the signal was swallowed or came late)
        self.reports_replaced = False  # verify replaced an earlier run's reports by ones that say it was stopped
