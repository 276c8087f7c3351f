"""Where long commands talk while they work: stderr, unwrapped, with progress bars only on a terminal.

In a CI log or a nohup file a live bar prints nothing useful and leaves a blank line, and rich's
80-column wrapping splits paths in two; round and stage lines still go through.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import Progress


def log_console() -> Console:
    return Console(stderr=True, soft_wrap=True)


def progress_bar(console: Console, *columns) -> Progress:
    return Progress(*columns, console=console, transient=True, disable=not console.is_terminal)
