"""SIGINT and SIGTERM (and SIGHUP: a terminal closed, an ssh dropped), even while a runtime computes.

Python runs a signal handler only between bytecodes of the main thread: while onnxruntime or LiteRT
runs one long call (a file can hold a loop of 10**15 steps), a `timeout` or a CI runner's SIGTERM would
wait. So the CLI blocks both signals in the main thread and a watcher thread takes them: it stops
the runtime calls that can be stopped (onnxruntime's RunOptions.terminate), raises `Interrupted` in
the main thread (whose cleanups remove every staged file), and if the main thread is still stuck
after a grace period, removes the staged files itself and exits with the signal's code.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
import time  # at the top: the watcher thread waits with it while the main thread may hold an import

GRACE_SECONDS = 5.0
_STOP = signal.SIGUSR1  # the watcher's own "stand down"
_lock = threading.Lock()
_temporaries: set[str] = set()
_terminators: set = set()  # objects with a ``terminate`` attribute (onnxruntime RunOptions)
_reported = threading.Event()  # the CLI printed its line for this stop: the grace path must not print a second
_resumable: list = []  # the compress run that --resume finishes, while one runs: named by the grace path's line too
_consoles: list[int] = []  # the user's own stderr while fd 2 goes elsewhere (a converter's logs): where the grace path writes
_stop_documents: list[tuple[str, bytes]] = []  # (path, bytes with SIGNAL_MARK): what the grace path writes over an earlier
SIGNAL_MARK = b"@SIGNAL@"  # run's report, the stop's name in place of the mark


_active: list = []  # the Watcher of the command that runs (one at a time in a process)
_saying_so: list = []  # inside writing_after_stop: files that say the command stopped are written after the stop
_ignored_at_start: list[frozenset] = []  # decided once, before cwtool's handlers take the signals


def stop_signals() -> tuple[int, ...]:
    """The signals that stop a command as Ctrl-C does: SIGINT, SIGTERM, and SIGHUP (the terminal closed, the ssh
    connection dropped: it killed a run where it stood, its staged files left behind). One the process was started to
    ignore stays ignored, as Python leaves it: SIGHUP under nohup, SIGINT for a job a script started in the background
    (`cwtool compress ... &`: the shell keeps a Ctrl-C meant for the foreground away from it)."""
    wanted = tuple(s for s in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None)  # Windows: no SIGHUP
    if not _ignored_at_start:
        _ignored_at_start.append(frozenset(s for s in wanted if s != signal.SIGTERM and signal.getsignal(s) is signal.SIG_IGN))
    return tuple(s for s in wanted if s not in _ignored_at_start[0])


def raise_if_stopped() -> None:
    """Raise a stop that was received but did not unwind the command (code swallowed its Interrupted: a converter's
    tracing runs weakref callbacks, where CPython drops exceptions): called before a file is published, so that nothing
    more is written after a stop, however long the command would have gone on."""
    watcher = _active[-1] if _active else None
    if watcher is not None and watcher.received is not None and not watcher.finished.is_set() and not _saying_so:
        from toolchain.errors import Interrupted

        raise Interrupted(signal.Signals(watcher.received).name)


class writing_after_stop:
    """A block that writes the files saying the command was stopped (verify's reports that replace an earlier run's):
    published after the stop, where every other file is not."""

    def __enter__(self):
        _saying_so.append(1)
        return self

    def __exit__(self, *exc):
        _saying_so.pop()
        return False


class finishing:
    """The block after a command's output is written whole (a calibration set replaced, a run's reports): a stop inside
    it is said as one that arrived as the command finished, not as one that removed what it wrote."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        from toolchain.errors import Interrupted

        if isinstance(exc_value, Interrupted):
            exc_value.completed = True
        return False


_importing: list = []  # inside uninterrupted_import: a stop waits for the block's end (or for the grace period)


class uninterrupted_import:
    """A native library's first import (LiteRT, TensorFlow, onnxruntime): a stop raised inside its initialisation
    aborted the process (exit 134, no line) or left an ImportError that was said as "reinstall it". The stop waits for
    the import, up to the grace period, then unwinds as anywhere else."""

    def __enter__(self):
        with _lock:
            _importing.append(1)
        return self

    def __exit__(self, *exc):
        with _lock:
            _importing.pop()
        return False


def _wait_for_imports(finished: threading.Event) -> None:
    """Back from an uninterrupted import, or the grace period spent (then the stop goes on as if none ran)."""
    deadline = time.monotonic() + GRACE_SECONDS
    while _importing and time.monotonic() < deadline and not finished.is_set():
        time.sleep(0.01)


def staged(path: str) -> None:
    """``path`` (a file or a staging folder) is removed by the grace path if the process must leave without cleanups."""
    with _lock:
        _temporaries.add(str(path))


def unstaged(path: str) -> None:
    with _lock:
        _temporaries.discard(str(path))


def stoppable(run_options) -> None:
    with _lock:
        _terminators.add(run_options)


def done(run_options) -> None:
    with _lock:
        _terminators.discard(run_options)


def claim_the_line() -> bool:
    """True for the first caller for this stop (the CLI's handler or the grace path): it alone prints the stop's line,
    so that a handler and a grace path that meet never print two."""
    with _lock:
        if _reported.is_set():
            return False
        _reported.set()
        return True


def console(fd: int | None) -> None:
    """``fd`` (a dup of the user's stderr; None: fd 2 is it again) is where the grace path's line goes."""
    with _lock:
        _consoles[:] = [] if fd is None else [fd]


def _say(line: str) -> None:
    with _lock:
        fd = _consoles[0] if _consoles else None
    if fd is None:
        try:
            print(line, file=sys.stderr, flush=True)
        except OSError:  # the terminal is gone (SIGHUP)
            pass
        return
    try:
        os.write(fd, (line + "\n").encode("utf-8", "replace"))
    except OSError:
        pass


def work_done(run_dir=None) -> None:
    """The command's output is whole (a compress run's directory): a stop from here to the exit, even one that arrives
    after the command returned, is said as one that came as the command finished, never as one that removed its work."""
    with _lock:
        if _active:
            _active[-1].work_done = (run_dir,)


def finished_work() -> tuple | None:
    """(run directory or None,) where the running command's output is whole (`work_done`), else None."""
    with _lock:
        return _active[-1].work_done if _active else None


def _mark_done(stop, watcher) -> None:
    if watcher.work_done is not None:
        stop.completed = True
        if watcher.work_done[0] is not None:
            stop.run_dir = watcher.work_done[0]


def replace_if_stuck(documents: list[tuple[str, bytes]]) -> None:
    """Files the grace path writes where the main thread is stuck in native code (a runtime loading a large model):
    verify's reports that an earlier run left, which would otherwise be read as this run's verdict. Rendered ahead by
    the main thread (the grace path imports nothing); an empty list once the command has its own outputs to write."""
    with _lock:
        _stop_documents[:] = documents


def _write_stop_documents(signal_name: str) -> None:
    """The stop documents, each published whole (a temporary beside it, named as every staged file is so that a sweep
    finds one a kill left, then a rename), with os calls alone."""
    for path, content in _stop_documents:
        folder, name = os.path.split(path)
        tmp = os.path.join(folder, f".cwtool-tmp.{name}.stop.{os.getpid()}")
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                data = memoryview(content.replace(SIGNAL_MARK, signal_name.encode()))
                while data:  # a nearly full disk writes less than asked: all of it, or an OSError and no file
                    data = data[os.write(fd, data):]
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except OSError:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def resumable(run_dir) -> None:
    """``run_dir`` (None: none any more) is the run a stop leaves for --resume to finish."""
    with _lock:
        _resumable[:] = [] if run_dir is None else [run_dir]


class Watcher:
    """Installed around one CLI command in the main thread; ``message(signal name, resumable run or None)`` is
    the line printed when the main thread does not come back in time, ``finished_message(signal name, run or None)``
    where the command's work was whole by then (`work_done`)."""

    def __init__(self, message, finished_message=None):
        self.message = message
        self.finished_message = finished_message or message  # (signal name, run or None) once the work is whole
        self.finished = threading.Event()
        self.received: int | None = None
        self.delivered = False  # the main thread raised Interrupted for it (see `deliver`)
        self.work_done: tuple | None = None  # (run directory or None,) once the command's output is whole: `work_done`
        self._thread: threading.Thread | None = None
        self._mask = None

    def __enter__(self):
        _reported.clear()
        _active.append(self)
        if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "pthread_sigmask"):
            return self
        self._mask = signal.pthread_sigmask(signal.SIG_BLOCK, {*stop_signals(), _STOP})
        self._thread = threading.Thread(target=self._watch, name="cwtool-signals", daemon=True)
        try:
            self._thread.start()
        except RuntimeError:  # no thread may start (ulimit -u): the process as it was, and the caller says why
            self._thread = None
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
            _active.remove(self)
            raise
        return self

    def __exit__(self, exc_type, exc_value, traceback):
        self.finished.set()
        replace_if_stuck([])  # the command is over: nothing of its own left for a later one's grace path
        if self in _active:
            _active.remove(self)
        if self._thread is not None:
            signal.pthread_kill(self._thread.ident, _STOP)
            self._thread.join(timeout=2)
            signal.pthread_sigmask(signal.SIG_SETMASK, self._mask)
        if self.received is not None and (not self.delivered or not _reported.is_set()):
            # arrived as the command ended, or raised where Python swallows exceptions (a weakref callback inside a
            # converter's tracing): the command went on to its end, but the caller asked to stop, and hears so
            from toolchain.errors import Interrupted

            stop = Interrupted(signal.Signals(self.received).name)
            # 0: done, 1: a gate's verdict; 2 and 3 said their own line and wrote nothing
            stop.completed = exc_type is None or (exc_type is SystemExit and exc_value.code in (None, 0, 1))
            _mark_done(stop, self)
            raise stop
        return False

    def deliver(self, signum: int):
        """The main thread's handler: the signal becomes an exception where Python runs next."""
        from toolchain.errors import Interrupted

        if _importing and self._thread is not None and not self.finished.is_set():
            if self.received is None:  # inside a native import: the watcher interrupts once it is back
                self.received = signum
                signal.pthread_kill(self._thread.ident, signum)
            return
        self.delivered = True
        if self.received is None:  # taken by a thread that does not block it (one started before the watcher)
            self.received = signum
            if self._thread is not None and not self.finished.is_set():  # the watcher's grace period still applies:
                signal.pthread_kill(self._thread.ident, signum)  # the Interrupted may be swallowed (a weakref callback)
        stop = Interrupted(signal.Signals(signum).name)
        _mark_done(stop, self)
        raise stop

    def _watch(self) -> None:
        while True:
            signum = signal.sigwait({*stop_signals(), _STOP})
            if signum == _STOP:
                return
            self.received = signum
            if self.finished.is_set():
                return
            with _lock:
                for options in list(_terminators):
                    options.terminate = True
            import _thread

            _wait_for_imports(self.finished)
            if not self.delivered:  # (delivered: the main thread's handler had it first, and forwarded it here)
                _thread.interrupt_main(signum)  # the main thread's handler raises Interrupted where Python runs next
            if self.finished.wait(GRACE_SECONDS):
                return
            with _lock:  # stuck in native code: clean up here and go
                for tmp in list(_temporaries):
                    try:
                        if os.path.isdir(tmp) and not os.path.islink(tmp):
                            shutil.rmtree(tmp, ignore_errors=True)
                        else:
                            os.unlink(tmp)
                    except OSError:
                        pass
                run_dir = _resumable[0] if _resumable else None
                done = self.work_done
                if done is None:
                    _write_stop_documents(signal.Signals(signum).name)
            name = signal.Signals(signum).name
            try:
                if claim_the_line():  # stuck after the work was whole (a summary's write to a stalled pipe): said so
                    _say(self.message(name, run_dir) if done is None else self.finished_message(name, done[0]))
            finally:
                os._exit(128 + signum)
