"""A .tflite file loaded first in a child process: LiteRT's interpreter trusts the flatbuffer's offsets, and a damaged
file kills the process that loads it (a segmentation fault, no line). Standard library only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from toolchain.errors import UserError

__all__ = ["probed_content", "survives_loading", "read_held", "PROBE_SECONDS"]

# Loads the bytes on its standard input in the interpreter's own module, in a child: argv module. Exit 0 where it loaded.
# The parent's own bytes, not the file read again: a file renamed over the path after the probe was loaded unprobed (a
# reviewer's race, exit 139 and no line). No module of the
# working folder is importable there (`python -c` puts it first on the path), and the stop signals cwtool blocks while it
# runs are unblocked (a child left by a stop would ignore them).
_LOAD_PROBE = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import signal
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
try:
    import resource
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a damaged file's crash is expected here: no core file left behind
except (ImportError, ValueError, OSError):
    pass
import importlib
content = sys.stdin.buffer.read()
try:
    importlib.import_module(sys.argv[1]).Interpreter(model_content=content).get_tensor_details()
except Exception:
    pass  # refused with an exception: the process that loads it says so in its own words
"""
PROBE_SECONDS = 120
_SURVIVED: set[tuple] = set()  # (path, identity) of files loaded in a child already: a file is probed once


def read_held(path: Path) -> tuple[bytes, tuple | None]:
    """The file's bytes and its identity (toolchain.file_identity), the same before and after the read: the bytes are of
    that identity, which a later write or rename would change."""
    from toolchain.file_identity import changed_error, identity

    before = identity(path)
    content = path.read_bytes()
    if identity(path) != before:
        raise changed_error(path, "artifact file")
    return content, before


def probed_content(path: Path, interpreter: type) -> bytes:
    """The file's bytes, read once, after a child loaded those same bytes and survived: what this process loads."""
    try:
        content, held = read_held(path)
    except OSError as e:
        raise UserError(f"cannot read TFLite artifact {path}: {e.strerror or e}") from e
    survives_loading(path, interpreter, content, held)
    return content


def survives_loading(path: Path, interpreter: type, content: bytes, held: tuple | None) -> None:
    """Refuse a file whose loading kills the process: LiteRT's interpreter trusts the flatbuffer's offsets, and one byte
    changed in an int8 file (a reviewer's mutation: byte 20 set to 0) ended verify and bench in a segmentation fault, exit
    139 and no line. The file is first loaded in a child (about 0.15 s, once a file); one that dies by a signal, or
    hangs, is refused. The child has a session of its own (a terminal's Ctrl-C is the parent's to say) and is killed
    when the parent stops; one killed by SIGKILL (out of memory, most likely) decides nothing."""
    import signal
    import subprocess
    import threading
    import time

    key = (os.path.realpath(path), held)
    if (held is not None and key in _SURVIVED) or not sys.executable or getattr(sys, "frozen", False):  # a frozen build's
        return  # executable is cwtool
    try:
        proc = subprocess.Popen([sys.executable, "-c", _LOAD_PROBE, interpreter.__module__],
                                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except (OSError, ValueError):  # no child could start (a process limit): the file is loaded here, as before
        return

    def give(stdin) -> None:
        try:
            stdin.write(content)
            stdin.close()
        except OSError:  # the child died or was killed before it read them all: its exit says what happened
            pass

    feeder = threading.Thread(target=give, args=(proc.stdin,), daemon=True)
    try:
        feeder.start()
    except RuntimeError:  # no thread left: the file is loaded here, as where no child could start
        proc.kill()
        proc.wait()
        proc.stdin.close()
        return
    try:
        deadline = time.monotonic() + PROBE_SECONDS
        while proc.poll() is None:  # short waits: a stop reaches this thread between them
            if time.monotonic() > deadline:
                raise UserError(f"{path}: the LiteRT runtime did not finish loading it in {PROBE_SECONDS} s: the file is "
                                "damaged or not a model LiteRT runs; re-export it")
            time.sleep(0.02)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    code = proc.returncode
    if code < 0 and code != -signal.SIGKILL:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        raise UserError(f"{path} crashes the LiteRT runtime as it loads ({name}): the file is damaged; re-export it")
    if held is not None:
        _SURVIVED.add(key)
