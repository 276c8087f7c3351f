"""How far a long piece of work is, in a line a person reads: an epoch's end, or the rows a prediction has done.

No console here (the runtimes on a device import it): a command says where the lines go (``saying_progress``).
"""

from __future__ import annotations

import time
from contextlib import contextmanager

PACE_SECONDS = 30.0  # a long prediction says where it is at most this often; a short one says nothing

_say = None  # where RowPace's lines go while a command runs (saying_progress); None: nowhere


def duration(seconds: float) -> str:
    """"0.4 s", "40 s", "7 min", "2.5 h": a progress line's time, as precise as a person reads it."""
    if seconds < 9.95:
        return f"{max(seconds, 0):.1f} s"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class EpochPace:
    """"epoch 3/8 done (21 s an epoch, about 2 min to go)": the log of a long training says when it ends. Started
    when training starts; the pace is the mean over the epochs done (the first also reads and caches)."""

    def __init__(self, total: int):
        self.total = total
        self.started = time.perf_counter()

    def line(self, epoch: int) -> str:
        pace = (time.perf_counter() - self.started) / max(epoch, 1)
        left = f", about {duration(pace * (self.total - epoch))} to go" if epoch < self.total else ""
        return f"epoch {epoch}/{self.total} done ({duration(pace)} an epoch{left})"


def say_progress_to(say):
    """RowPace's lines go to ``say`` (a console's or a log's print; None: nowhere) from now on; returns where they went."""
    global _say
    before, _say = _say, say
    return before


@contextmanager
def saying_progress(say):
    """RowPace's lines go to ``say`` inside the block."""
    before = say_progress_to(say)
    try:
        yield
    finally:
        say_progress_to(before)


class RowPace:
    """"model_int8.tflite: 4,096 of 20,000 rows (2 min, about 8 min to go)": a prediction over many rows (20,000 images of
    224 px on a device's CPU: an hour) says where it is every PACE_SECONDS; one that ends sooner says nothing."""

    def __init__(self, what: str, total: int, unit: str = "rows", say=None):
        """``say``: where the lines go (None: where ``saying_progress`` sends them)."""
        self.what, self.total, self.unit, self.say = what, total, unit, say
        self.started = self.said = time.perf_counter()

    def __call__(self, done: int) -> None:
        say = self.say or _say
        if say is None or done >= self.total:
            return
        now = time.perf_counter()
        if now - self.said < PACE_SECONDS:
            return
        self.said = now
        taken = now - self.started
        say(f"{self.what}: {done:,} of {self.total:,} {self.unit} ({duration(taken)}, about {duration(taken / max(done, 1) * (self.total - done))} to go)")


class Clock:
    """Seconds per step of a round, so a report says where the time went."""

    def __init__(self):
        self._now = time.perf_counter
        self._last = self._now()
        self.laps: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = self._now()
        self.laps[name] = round(self.laps.get(name, 0.0) + now - self._last, 3)
        self._last = now
