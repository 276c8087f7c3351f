"""A .tflite file loaded first in a child process: LiteRT's interpreter trusts the flatbuffer's offsets, and a damaged
file kills the process that loads it (a segmentation fault, no line). Standard library only."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from toolchain.errors import UserError

__all__ = ["survives_loading", "PROBE_SECONDS"]

# Loads the file in the interpreter's own module, in a child: argv module, path. Exit 0 where it loaded. No module of the
# working folder is importable there (`python -c` puts it first on the path), and the stop signals cwtool blocks while it
# runs are unblocked (a child left by a stop would ignore them).
_LOAD_PROBE = """
import sys
sys.path[:] = [p for p in sys.path if p not in ("", ".")]
import signal
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
import importlib
with open(sys.argv[2], "rb") as f:
    content = f.read()
try:
    importlib.import_module(sys.argv[1]).Interpreter(model_content=content).get_tensor_details()
except Exception:
    pass  # refused with an exception: the process that loads it says so in its own words
"""
PROBE_SECONDS = 120
_SURVIVED: set[tuple] = set()  # (path, inode, size, mtime) of files loaded in a child already: a file is probed once


def survives_loading(path: Path, interpreter: type) -> None:
    """Refuse a file whose loading kills the process: LiteRT's interpreter trusts the flatbuffer's offsets, and one byte
    changed in an int8 file (a reviewer's mutation: byte 20 set to 0) ended verify and bench in a segmentation fault, exit
    139 and no line. The file is first loaded in a child (about 0.15 s, once a file); one that dies by a signal, or
    hangs, is refused. The child has a session of its own (a terminal's Ctrl-C is the parent's to say) and is killed
    when the parent stops; one killed by SIGKILL (out of memory, most likely) decides nothing."""
    import signal
    import subprocess
    import time

    try:
        st = os.stat(path)
    except OSError:
        return  # said by the load itself
    key = (os.path.realpath(path), st.st_ino, st.st_size, st.st_mtime_ns)
    if key in _SURVIVED or not sys.executable or getattr(sys, "frozen", False):  # a frozen build's executable is cwtool
        return
    try:
        proc = subprocess.Popen([sys.executable, "-c", _LOAD_PROBE, interpreter.__module__, os.fsdecode(path)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                start_new_session=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    except (OSError, ValueError):  # no child could start (a process limit): the file is loaded here, as before
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
    _SURVIVED.add(key)
