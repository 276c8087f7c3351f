"""The consoles commands print to: stdout for results, stderr for progress and log lines.

A log or a pipe has no width: rich would assume 80 columns, squeeze tables into folded cells and
split long paths, so there (unless COLUMNS says otherwise) tables get 150 columns and lines are
never wrapped. Progress bars are drawn only on a terminal: in a CI log they print nothing useful
and leave a blank line; round and stage lines still go through.

Markup is off: text printed here carries file names, class names and profile descriptions from
files cwtool does not trust, and a name like "[/x]" must print as itself, not as a style tag (or
a markup error). Styles are given as ``style=`` or as rich Text objects.
"""

from __future__ import annotations

import os

from rich.console import Console
from rich.progress import Progress

PIPED_WIDTH = 150


def _console(stderr: bool) -> Console:
    console = Console(stderr=stderr, soft_wrap=True, markup=False)
    if not console.is_terminal and not os.environ.get("COLUMNS"):
        console = Console(stderr=stderr, soft_wrap=True, width=PIPED_WIDTH, markup=False)
    return console


def out_console() -> Console:
    return _console(stderr=False)


def log_console() -> Console:
    return _console(stderr=True)


def progress_bar(console: Console, *columns) -> Progress:
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
