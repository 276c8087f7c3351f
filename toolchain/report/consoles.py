"""The consoles commands print to: stdout for results, stderr for progress and log lines.

A log or a pipe has no width: rich would assume 80 columns, squeeze tables into folded cells and
split long paths, so there (unless COLUMNS says otherwise) tables get 150 columns and lines are
never wrapped. Progress bars are drawn only on a terminal: in a CI log they print nothing useful
and leave a blank line; round and stage lines still go through.

Markup is off: text printed here carries file names, class names and profile descriptions from
files cwtool does not trust, and a name like "[/x]" must print as itself, not as a style tag (or
a markup error). Styles are given as ``style=`` or as rich Text objects. For the same reason every
string is rendered with its control characters escaped (an ESC in a class name could otherwise
erase the line above and print "all checks passed"); rich's own styling is unaffected.
"""

from __future__ import annotations

import os

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


def quiet_broken_stream(stream) -> None:
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _console(stderr: bool) -> Console:
    console = SafeConsole(stderr=stderr, soft_wrap=True, markup=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = SafeConsole(stderr=stderr, soft_wrap=True, width=PIPED_WIDTH, markup=False)
    return console


def out_console() -> Console:
    return _console(stderr=False)


def log_console() -> Console:
    return _console(stderr=True)


def progress_bar(console: Console, *columns) -> Progress:
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)


def print_markdown(text: str) -> None:
    """A Markdown report on stdout: rendered on a terminal; a log or a pipe gets the Markdown itself
    (rich would wrap its tables at 80 columns)."""
    import sys

    from rich.markdown import Markdown

    console = Console()
    if console.is_terminal:
        console.print(Markdown(text))
        return
    try:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
        sys.stdout.flush()
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        quiet_broken_stream(sys.stdout)
