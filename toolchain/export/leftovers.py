"""The files in a run's artifacts/ that no report lists: an earlier export's that this one did not write, or an unfinished
export's. Removed, so that none is picked up and deployed."""

from __future__ import annotations

from pathlib import Path

from toolchain.rundir import RunDir
from toolchain.input_paths import artifact_files

__all__ = ["drop_stale_artifacts", "drop_unchecked_artifacts"]


def drop_stale_artifacts(run_dir: Path, artifacts: list[dict], log) -> None:
    """Files an earlier export of this run left in artifacts/ that this one did not write (a --resume with fewer
    --format): the report lists what was checked, and the folder holds nothing else."""
    written = {p.resolve() for art in artifacts for p in artifact_files(Path(run_dir) / art["path"])}
    stale = _drop_files(RunDir(run_dir).artifacts, written)
    if stale:
        log(f"removed {len(stale)} file(s) an earlier export of this run wrote and this one did not: {', '.join(stale[:4])}")


def drop_unchecked_artifacts(run_dir: Path, log) -> None:
    """A compress stopped between its export and its report (a signal, a refused export, a full disk): the files in
    artifacts/ are not all written or not all re-checked, and no report lists them: removed, so that none is picked up
    and deployed (--resume writes them again)."""
    dropped = _drop_files(RunDir(run_dir).artifacts, set())
    if dropped:
        log(f"removed the {len(dropped)} file(s) of the unfinished export from {RunDir(run_dir).artifacts}: --resume writes them again")


def _drop_files(folder: Path, keep: set[Path]) -> list[str]:
    """Remove ``folder``'s plain files but ``keep`` (links are never followed: the run directory is cwtool's own)."""
    if not folder.is_dir() or folder.is_symlink():
        return []
    dropped = sorted(e for e in folder.iterdir() if e.is_file() and not e.is_symlink() and e.resolve() not in keep)
    for entry in dropped:
        entry.unlink(missing_ok=True)
    return [e.name for e in dropped]
