"""The consoles commands print to: stdout for results, stderr for progress and log lines.

A log or a pipe has no width: rich would assume 80 columns, squeeze tables into folded cells and
split long paths, so there (unless COLUMNS says otherwise) tables get 150 columns and lines are
never wrapped; FORCE_COLOR (set by CI systems) colours a log without making it a terminal. Progress bars are drawn
only on a terminal that moves its cursor: in a CI log they print nothing useful and leave a blank line; round,
stage and epoch lines still go through.

Markup is off: text printed here carries file names, class names and profile descriptions from
files cwtool does not trust, and a name like "[/x]" must print as itself, not as a style tag (or
a markup error). Styles are given as ``style=`` or as rich Text objects. For the same reason every
string is rendered with its control characters escaped (an ESC in a class name could otherwise
erase the line above and print "all checks passed"); rich's own styling is unaffected.
"""

from __future__ import annotations

import errno
import os
import re
import time

from rich.console import Console
from rich.progress import Progress

from toolchain.errors import printable

PIPED_WIDTH = 150


class SafeConsole(Console):
    """A rich Console that renders every string with its control characters escaped."""

    def render_str(self, text: str, *args, **kwargs):
        return super().render_str(printable(text), *args, **kwargs)

    def on_broken_pipe(self) -> None:
        """The reader went away (`cwtool verify ... | head`): the rest of this stream is not wanted, but the
        command still finishes -- its files written, its exit code the gate's (rich would exit 1 here)."""
        quiet_broken_stream(self.file)

    def _check_buffer(self) -> None:
        """A terminal that went away (EIO: its window closed under a run that ignores SIGHUP, nohup or a trap) is a
        reader gone too: the run went on, its log file the place to read it, instead of stopping with 'OSError' and
        exit 1, the gate-failed code."""
        try:
            super()._check_buffer()
        except OSError as exc:
            if not reader_gone(exc):
                exc.stream = _stream_name(self.file)  # said in place of the file a write to a stream does not name
                raise
            del self._buffer[:]
            self.on_broken_pipe()


def _stream_name(file) -> str | None:
    try:
        return {1: "the standard output", 2: "the standard error"}.get(file.fileno())
    except (AttributeError, OSError, ValueError):
        return None


def reader_gone(exc: OSError) -> bool:
    """Whether a write failed because nobody reads the stream any more: a pipe's reader went away (`| head`), or a
    terminal did (EIO, ENXIO: its window closed)."""
    return isinstance(exc, BrokenPipeError) or exc.errno in (errno.EIO, errno.ENXIO)


def quiet_broken_stream(stream) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


MIN_COLUMNS = 80  # narrower, a table's cells hold no number (COLUMNS=0, set by some CI and docker setups, printed nothing)
MAX_COLUMNS = 1_000  # wider is no screen: COLUMNS=10000000 padded --help to 290 MB, and a 20-digit value crashed rich


def readable_columns() -> int | None:
    """COLUMNS where it is a width a table can be read at, else None."""
    try:
        columns = int(os.environ.get("COLUMNS", "").strip())
    except ValueError:
        return None
    return columns if MIN_COLUMNS <= columns <= MAX_COLUMNS else None


def _console(stderr: bool) -> Console:
    columns = readable_columns()
    if os.environ.get("COLUMNS") is not None and columns is None:  # rich reads COLUMNS itself: take it out of its sight
        console = SafeConsole(stderr=stderr, soft_wrap=True, markup=False, width=PIPED_WIDTH)
        return console if piped(console) else SafeConsole(stderr=stderr, soft_wrap=True, markup=False, width=max(
            MIN_COLUMNS, _terminal_width(console)))
    console = SafeConsole(stderr=stderr, soft_wrap=True, markup=False)
    if piped(console) and columns is None:
        console = SafeConsole(stderr=stderr, soft_wrap=True, width=PIPED_WIDTH, markup=False)
    return console  # a window narrower than a table keeps its width: drawn wider, a progress bar left stale rows behind


def piped(console: Console) -> bool:
    """Whether ``console`` writes to a pipe, a file or a CI log: no terminal, or one only FORCE_COLOR made (CI systems set
    it for colours; their log still wants whole lines, the Markdown itself and a line an epoch)."""
    if not console.is_terminal:
        return True
    if not os.environ.get("FORCE_COLOR"):
        return False
    try:
        return not os.isatty(console.file.fileno())
    except (OSError, ValueError, AttributeError):  # no descriptor at all: no terminal either
        return True


def interactive(console: Console) -> bool:
    """Whether a progress bar can be drawn on ``console``: a terminal that moves its cursor (not TERM=dumb, where rich
    draws none, so an epoch's line is said instead)."""
    return not piped(console) and not console.is_dumb_terminal


def _terminal_width(console: Console) -> int:
    try:
        return os.get_terminal_size(console.file.fileno()).columns or PIPED_WIDTH  # a pty not yet sized says 0
    except (OSError, ValueError, AttributeError):
        return PIPED_WIDTH


def out_console() -> Console:
    return _console(stderr=False)


def log_console() -> Console:
    return _console(stderr=True)


class RunLog:
    """Log lines on a console and, once ``attach`` names a file, also appended to it with the time of day and
    the seconds since the command started: a long run's progress survives the terminal it ran in, and the
    stamps say where its time went. Only text is copied (a rich table or status is the console's alone)."""

    def __init__(self, console: Console):
        self.console = console
        self.path = None
        self._started = time.monotonic()
        self._before: list[str] | None = []  # lines said before the file was named (a warning about the inputs)

    def attach(self, path) -> None:
        """Append to ``path`` from now on, after the lines said before it was named. A log that shares its bytes with
        another name (a hard link: a backup made with cp -al or rsync --link-dest) is first made a file of its own, so
        the lines never land in the other."""
        _unshare(path)
        self.path = path
        before, self._before = self._before or [], None
        if before:
            self._append(before)

    def detach(self) -> None:
        """No more lines to the file (it is about to be removed with what the run wrote): the console alone."""
        self.path = None

    def print(self, *objects, **kwargs) -> None:
        self.console.print(*objects, **kwargs)
        self.record(" ".join(o if isinstance(o, str) else getattr(o, "plain", None) or "" for o in objects))

    def progress(self, text: str) -> None:
        """A line of progress within a stage (an epoch's end): a terminal has its progress bar, so the line goes to the
        file alone; a pipe or a CI log gets it on the console too, or a long round passes in silence (CI systems stop
        a job that prints nothing for 10 minutes)."""
        (self.record if interactive(self.console) else self.print)(text)

    def record(self, text: str) -> None:
        """``text`` in the file only (the console has it already, or it is the file's alone)."""
        text = text.strip()
        if not text:
            return
        stamp = f"{time.strftime('%Y-%m-%d %H:%M:%S')} +{time.monotonic() - self._started:7.1f}s"
        lines = [f"{stamp} {printable(line)}" for line in text.splitlines()]
        if self.path is None:
            if self._before is not None and len(self._before) < 1000:
                self._before += lines
            return
        self._append(lines)

    def _append(self, lines: list[str]) -> None:
        try:  # never through a link that took the log's name while the run went on (it could lead to an input)
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
            with open(fd, "a", encoding="utf-8", errors="backslashreplace") as log:  # a file name that is not UTF-8
                log.write("\n".join(lines) + "\n")
        except OSError:  # a full disk or a removed folder must not stop the run: the console still has the line
            if os.path.islink(self.path):
                self.console.print(f"warning: {printable(str(self.path))} became a symbolic link while the run went on: no more "
                                   "lines are written to it", markup=False)
            self.path = None


def _unshare(path) -> None:
    import shutil

    from toolchain.io import staged_path

    try:
        shared = os.stat(path, follow_symlinks=False).st_nlink > 1 and os.path.isfile(path)
    except OSError:
        return
    if shared:
        with staged_path(path) as tmp, open(path, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst)


def progress_bar(console: Console, *columns) -> Progress:
    return Progress(*columns, console=console, transient=True, disable=not interactive(console))


def status(console: Console, text: str):
    """A spinner with ``text`` while a stage runs, where a progress bar is drawn too (FORCE_COLOR put its frames in a CI
    log); nothing elsewhere."""
    import contextlib

    return console.status(text) if interactive(console) else contextlib.nullcontext()


_LIST_ITEM = re.compile(r"\s*([-*+]|\d{1,9}[.)])\s")


def markdown_blocks(text: str) -> list[tuple[str, bool]]:
    """``text``'s blocks (split at blank lines outside fenced code), each with whether it holds a list item."""
    blocks, lines, fenced = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
        if not line.strip() and not fenced:
            if lines:
                blocks.append(lines)
            lines = []
            continue
        lines.append(line)
    if lines:
        blocks.append(lines)
    return [("\n".join(b), any(_LIST_ITEM.match(line) for line in b)) for b in blocks]


def print_markdown(text: str) -> None:
    """A Markdown report on stdout: rendered on a terminal; a log or a pipe gets the Markdown itself
    (rich would wrap its tables at 80 columns)."""
    import sys

    from rich.markdown import Markdown

    console = out_console()
    if not piped(console):
        runs: list[tuple[list[str], bool]] = []
        for block, listed in markdown_blocks(text):
            if runs and runs[-1][1] == listed:
                runs[-1][0].append(block)
            else:
                runs.append(([block], listed))
        for i, (blocks, listed) in enumerate(runs):
            if i and not runs[i - 1][0][-1].lstrip().startswith("#"):  # a heading brings its own space after it
                console.print()
            # a list item is laid out to the window's width, which the console's soft wrap cut at the edge: wrapped; a
            # paragraph is left to the terminal to wrap, so that a command in it copies as one line
            console.print(Markdown("\n\n".join(blocks)), soft_wrap=not listed)
        return
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except OSError as exc:  # `| head`: the reader has what it wanted; a terminal gone (EIO): nobody reads it
        if not reader_gone(exc):
            exc.stream = _stream_name(sys.stdout)
            raise
        quiet_broken_stream(sys.stdout)
