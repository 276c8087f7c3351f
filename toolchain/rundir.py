"""A run directory: every file name of a `compress` run in one place (OpenLTH's paths.py), so each stage
finds what an earlier, interrupted run finished and skips it.

    run/manifest.json            inputs' hashes, versions, arguments (its run_id names the settings)
    run/rounds/round_N.pt|.json  every round's ticket (the .json is written last: it marks the round done)
    run/rounds/round_N_start.pt  the weights round N's retraining started from (the magnitude increase)
    run/rounds/rewind.pt         the late-rewinding point
    run/rounds/final_N.pt|.json  round N's ticket after --final-epochs (each round given them has its own pair)
    run/pruned.pt                the shipped torch model (offsets baked in)
    run/calibration.npz          the int8 calibration rows
    run/artifacts/               the exported files
    run/work/                    scratch for the export stage, removed when it ends
    run/compress.log             every progress line, time-stamped (appended to by --resume)
    run/report.json, report.md, report.html, plots/

What a run id records and how a rerun finds its run again: ``toolchain.run_identity``.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from toolchain.errors import UserError, one_line
from toolchain.io import TMP_PREFIX
from toolchain.output_paths import holds_anything, is_os_litter


ARTIFACT_NAME = r"model_[a-z0-9_]{1,40}\.(onnx|tflite)(\.json|\.data)?"  # what the export stage writes in artifacts/
PLOT_NAME = r"(rounds|ledger|confusion)\.png"  # report.plots


@dataclass(frozen=True)
class RunDir:
    root: Path

    def __post_init__(self):
        object.__setattr__(self, "root", Path(self.root))

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.json"

    @property
    def log(self) -> Path:
        return self.root / "compress.log"

    @property
    def rounds(self) -> Path:
        return self.root / "rounds"

    def round_checkpoint(self, r: int) -> Path:
        return self.rounds / f"round_{r}.pt"

    def round_summary(self, r: int) -> Path:
        return self.rounds / f"round_{r}.json"

    def round_start(self, r: int) -> Path:
        return self.rounds / f"round_{r}_start.pt"

    @property
    def rewind(self) -> Path:
        return self.rounds / "rewind.pt"

    def final_checkpoint(self, round: int) -> Path:
        return self.rounds / f"final_{round}.pt"

    def final_summary(self, round: int) -> Path:
        return self.rounds / f"final_{round}.json"

    def done_rounds(self) -> list[int]:
        """Rounds whose summary was written (a round is done only then)."""
        if not self.rounds.is_dir():
            return []
        # only the names cwtool writes: "round_01.json" or "round_2_old.json" beside round_1.json and round_2.json were
        # counted as rounds 1 and 2 again (twice in the report) and never read
        found = (re.fullmatch(r"round_([1-9][0-9]{0,5})\.json", p.name) for p in self.rounds.glob("round_*.json"))
        return sorted(int(m.group(1)) for m in found if m)

    @property
    def pruned(self) -> Path:
        return self.root / "pruned.pt"

    @property
    def calibration(self) -> Path:
        return self.root / "calibration.npz"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    @property
    def work(self) -> Path:
        return self.root / "work"

    @property
    def report_json(self) -> Path:
        return self.root / "report.json"

    @property
    def report_md(self) -> Path:
        return self.root / "report.md"

    @property
    def report_html(self) -> Path:
        return self.root / "report.html"

    @property
    def plots(self) -> Path:
        return self.root / "plots"

    def drop_report(self) -> bool:
        """Remove the report of an earlier finish (report.json first: the document that vouches for the files), before
        the pruned model and the files it describes are made again: an interrupted resume must not leave a report
        that names other files. True when there was one."""
        import shutil

        found = False
        for path in (self.report_json, self.report_md, self.report_html):
            if path.is_file() or path.is_symlink():
                path.unlink()
                found = True
        if self.plots.is_dir() and not self.plots.is_symlink():
            shutil.rmtree(self.plots)
        return found

    def remove_if_roundless(self, made: list[Path]) -> None:
        """After bad input found before any round was saved: what this run wrote goes (and ``made``, the folders it made
        for it, deepest first, each if empty), so the same command, once the input is fixed, starts over. It had left a
        manifest of the old inputs, which the rerun was sent to --resume and --resume refused as another run's."""
        import shutil

        if self.done_rounds():
            return
        for name in self.entries():
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            elif path.exists() or path.is_symlink():
                path.unlink(missing_ok=True)
        for folder in made:
            try:
                folder.rmdir()  # only when empty: nothing of anyone else's goes
            except OSError:
                break

    def holds_a_run(self) -> bool:
        """Whether a run began here: the folder holds more than what a file browser leaves, and more than a session killed
        before its manifest left (``never_began``)."""
        return self.root.is_dir() and holds_anything(self.root) and not self.never_began()

    def never_began(self) -> bool:
        """A session killed before it wrote its manifest leaves its log alone (and perhaps a temporary): no run to resume
        and nothing to keep a new run from its folder (it was refused by both, in a folder cwtool had made). The log is
        known by its first line, as cwtool begins it: a compress.log of the user's own is no such folder."""
        return not self.manifest.is_file() and all(
            (p.name == self.log.name and self._a_log_cwtool_began()) or p.name.startswith(TMP_PREFIX) or is_os_litter(p.name)
            for p in self.root.iterdir())

    def _a_log_cwtool_began(self) -> bool:
        if self.log.is_symlink() or not self.log.is_file():
            return False
        try:
            with open(self.log, "rb") as f:
                head = f.read(4096)
        except OSError:
            return False
        return not head or re.match(rb"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \+ *[0-9.]+s cwtool \S+ compress ", head) is not None

    def entries(self) -> set[str]:
        """The names a run writes at the top of its folder (what a folder holding only these may be replaced as)."""
        return {p.name for p in (self.manifest, self.log, self.rounds, self.pruned, self.calibration, self.artifacts, self.work,
                                 self.report_json, self.report_md, self.report_html, self.plots)}

    def check_kinds(self, flag: str) -> None:
        """Refuse a run's folder where one of its own names is of the other kind (a file named rounds, a folder named
        compress.log): found before any work, not when a round's file cannot be written an hour in, or the log is lost."""
        folders = (self.rounds, self.artifacts, self.work, self.plots)
        for path in folders:
            if path.exists() and not path.is_dir():
                raise UserError(f"{flag}: '{path}' is a file where a run keeps its {path.name} folder: remove it or give another folder")
        for path in self.entries() - {p.name for p in folders}:
            if (self.root / path).is_dir():
                raise UserError(f"{flag}: '{self.root / path}' is a folder where a run writes its file of that name: remove it or give another folder")
        for folder, names in ((self.artifacts, ARTIFACT_NAME), (self.plots, PLOT_NAME)):
            theirs = sorted(e.name + ("/" if e.is_dir() else "") for e in (folder.iterdir() if folder.is_dir() else ())
                            if not (re.fullmatch(names, e.name) or e.name.startswith(TMP_PREFIX) or is_os_litter(e.name))
                            or e.is_dir())
            if theirs:  # --resume replaces what is there: it removed a user's copy of an artifact, and an export in plots/
                raise UserError(f"{flag}: {folder} holds {', '.join(one_line(n)[:60] for n in theirs[:3])}"
                                f"{f' and {len(theirs) - 3} more' if len(theirs) > 3 else ''}, not cwtool's, and a resumed run "
                                "replaces that folder's files: move them out, or give another folder")

    def hold(self, doing: str = "compresses", fix: str = "wait for it to end, or give another --out") -> int | None:
        """Take this folder for one process: an exclusive lock on the folder itself (flock: no lock file to leave
        behind, and the kernel lets go when the process dies, even by kill -9). Returns the descriptor to
        ``release``; refuses when another process holds it (two --resume runs would interleave and remove each
        other's staged files)."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return None
        import os

        fd = os.open(self.root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise UserError(f"'{self.root}' is in use: another cwtool process {doing} in it now: {fix}") from None
        return fd

    @staticmethod
    def release(fd: int | None) -> None:
        if fd is not None:
            import os

            os.close(fd)

    def relative(self, path: Path) -> str:
        return str(Path(path).relative_to(self.root))


RECORD_LIMIT = 16 * 2**20  # a manifest or a round's summary cwtool writes holds kilobytes; a 6 GB one ended in MemoryError


def read_record(path: Path, hint: str):
    """The JSON a run directory's record (its manifest, a round's summary) holds, read within RECORD_LIMIT bytes: a
    larger one, a pipe or a folder there is bad input ending in ``hint``."""
    from toolchain.small_files import read_small_file

    record = json.loads(read_small_file(path, RECORD_LIMIT, "the run's record", hint).decode("utf-8"))
    if _depth(record) > RECORD_DEPTH:  # read again deeper in a call stack (a round's check), it ran out of stack there and
        raise ValueError(f"nested deeper than {RECORD_DEPTH} levels")  # the rounds were blamed, to be deleted
    return record


RECORD_DEPTH = 64  # a record cwtool writes nests a few levels


def _depth(value) -> int:
    """How deep lists and objects nest in a JSON value (without recursion)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, level)
            if level <= RECORD_DEPTH:
                stack.extend((v, level + 1) for v in (item.values() if isinstance(item, dict) else item))
    return deepest
