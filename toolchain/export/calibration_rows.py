"""The rows int8 files are calibrated on: a given set or rows drawn from the train split (saved in the run), never a
test row; and what the export says of feature rows whose scales differ by orders of magnitude."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from toolchain.errors import UserError
from toolchain.rundir import RunDir


def calibration_rows(dataset, protected, settings, seed: int, run_dir: Path) -> tuple[np.ndarray, dict]:
    """The rows int8 files are calibrated on and the record of them for the report: a given set (by name
    or path) or rows drawn from the train split and saved as RUN/calibration.npz."""
    from toolchain.quantize.calibration import calibration_recipe, calibration_record, load_calibration, save_calibration

    if settings.calibration_file:
        x, meta = load_calibration(settings.calibration_file)  # the file's meta is data, not the record's frame
        x = x.astype(np.float32)
        return x, {**calibration_record(settings.calibration_file, x, meta, settings.calibration_name, str(settings.calibration_file)),
                   "given": True}
    x, meta = calibration_recipe(dataset, protected, settings.calibration_size, seed)
    run = RunDir(run_dir)
    save_calibration(run.calibration, x, meta)
    return x, calibration_record(run.calibration, x, meta, None, run.relative(run.calibration))


def check_unseen_test(x: np.ndarray, dataset, shown: str) -> None:
    """A given calibration set must not hold test rows: the test split decides the gate and is never used to calibrate.
    A row the train split holds as well (a duplicate across splits) is a train row."""
    from toolchain.data.samples import batches

    x_test = dataset.split("test")[0]
    if len(x_test) == 0:
        return
    calibration = _row_digests([x])
    found = _row_digests(batches(x_test)) & calibration
    if found:
        found -= _row_digests(batches(dataset.split("train")[0]))
    if found:
        raise UserError(f"--calibration {shown} holds {len(found):,} rows of the test split, which decides the gate and is never "
                        "used to calibrate: give rows of the train split (cwtool calibrate draws them, with the --seed of this command)")


def calibration_set_notes(x: np.ndarray, meta: dict, shown: str, dataset, protected: list[int]) -> list[str]:
    """What a given calibration set's rows ``x`` and recipe ``meta`` say of this run, as notes: a set drawn for other
    protected classes (its share of their rows favours their ranges), and rows of the validation split, which also chooses
    the int8 files' offsets (a reviewer found both used without a word)."""
    from toolchain.data.samples import batches

    which = f"--calibration {shown}"
    notes = []
    drawn_for = meta.get("protected") if isinstance(meta, dict) else None
    if isinstance(drawn_for, list) and drawn_for and all(isinstance(k, int) and not isinstance(k, bool) for k in drawn_for) \
            and set(drawn_for) != set(protected):
        notes.append(f"note: {which} was drawn with a larger share of class{'es' if len(drawn_for) > 1 else ''} "
                     f"{', '.join(map(str, sorted(set(drawn_for))))}, and this run protects {', '.join(map(str, protected))}: "
                     f"cwtool calibrate {''.join(f'-p {k} ' for k in protected)}draws a set for these")
    x_val = dataset.split("val")[0]
    if len(x_val):
        shared = _row_digests([x]) & _row_digests(batches(x_val))
        if shared:
            notes.append(f"note: {which} holds {len(shared):,} rows of the validation split, which also chooses the int8 files' "
                         "offsets: a set of train rows keeps validation for checking alone (cwtool calibrate draws one)")
    return notes


def _row_digests(parts) -> set[bytes]:
    """A digest per float32 row: rows compared by identity, 16 bytes each whatever their size (224-px images); -0.0 + 0
    is 0.0, so the same values give the same digests."""
    return {hashlib.blake2b(row.tobytes(), digest_size=16).digest()
            for part in parts for row in np.ascontiguousarray(part, dtype=np.float32) + np.float32(0)}


def feature_scale_spread(x, columns=None) -> str | None:
    """Flat feature rows (a CSV, an x/y .npz) whose columns' scales differ by 1,000x or more, in words, naming the
    narrowest and the widest (a CSV's column names, else their positions); None for images and for features of like
    scales."""
    from toolchain.errors import one_line

    if x is None or np.ndim(x) != 2 or len(x) < 2:
        return None
    spread = np.asarray(x, dtype=np.float64).std(axis=0)
    used = np.flatnonzero(np.isfinite(spread) & (spread > 0))
    if len(used) < 2 or spread[used].max() < 1e3 * spread[used].min():
        return None
    low, high = used[np.argmin(spread[used])], used[np.argmax(spread[used])]

    def named(i: int) -> str:
        return f"'{one_line(columns[i])[:60]}'" if columns and i < len(columns) else f"feature {i}"

    return (f"the features' scales differ by {spread[high] / spread[low]:,.0f}x (standard deviations {spread[low]:.3g}, "
            f"{named(low)}, to {spread[high]:.3g}, {named(high)}, as stored)")
