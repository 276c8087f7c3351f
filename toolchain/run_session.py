"""A compress session's start in its run directory (rank 0): the folder made and held, read again under the hold, the
log attached, the header and notes said, manifest.json written with this session's record, an interrupted run's
temporaries swept."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console

from toolchain import __version__
from toolchain.compress_inputs import CheckedInputs
from toolchain.errors import UserError
from toolchain.io import atomic_write_json, own_folder, sweep_temporaries
from toolchain.report.consoles import RunLog
from toolchain.run_identity import changed_counts, package_versions, version_changes, working_folder
from toolchain.rundir import RunDir


def open_run_dir(checked: CheckedInputs, request, input_notes: list[str], log: RunLog, console: Console, group,
                  made: list[Path]) -> object:
    """Rank 0's start of a session in the run directory: made and held (a second compress on it is refused), the log
    attached, the session's header and notes said, manifest.json written, an interrupted run's temporaries swept. Returns
    the hold, released when the run ends. A first session that fails here (a full disk) removes what it wrote and the
    folders it made (``made``): a folder holding its log alone had been refused by the next run and by --resume."""
    run_dir = checked.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    held = RunDir(run_dir).hold()  # until this process ends: a second compress on the folder is refused, not interleaved
    try:  # nothing removed on this refusal: what is there is another process's
        unchanged_since_checked(checked)
    except BaseException:
        RunDir.release(held)
        raise
    try:
        start_session(checked, request, input_notes, log, console, group)
    except BaseException:
        if not checked.resuming:
            log.detach()
            RunDir.release(held)
            RunDir(run_dir).remove_if_roundless(made)
        raise
    return held


def unchanged_since_checked(checked: CheckedInputs) -> None:
    """The run directory as the checks found it, read again under the hold: the checks ran unheld (seconds to minutes of
    the dense model's evaluation), and a compress that began there meanwhile, of other settings, had its finished run
    replaced by this one's rounds; a session that resumed it meanwhile was dropped from the manifest's record."""
    from toolchain.run_identity import earlier_sessions

    run_dir = checked.run_dir
    changed = RunDir(run_dir).holds_a_run() != checked.resuming
    if not changed and checked.resuming:
        now = earlier_sessions(run_dir, checked.inputs, checked.run_id, checked.config)
        changed = (now.commands, now.processes) != (checked.before.commands, checked.before.processes)
    if changed:
        raise UserError(f"'{run_dir}' changed while this compress checked its inputs (another cwtool process ran in it): give "
                        "another --out, or run the command again once that one has ended")


def start_session(checked: CheckedInputs, request, input_notes: list[str], log: RunLog, console: Console, group) -> None:
    run_dir, config, before, dataset = checked.run_dir, checked.config, checked.before, checked.dataset
    run_id, resuming, manifest_path, inputs = checked.run_id, checked.resuming, RunDir(checked.run_dir).manifest, checked.inputs
    shown_notes = checked.notes
    own_folder(run_dir)  # checked for links by the input checks: one that appears later never takes a file out of it
    log.attach(RunDir(run_dir).log)
    log.print(f"cwtool {__version__} compress {request.model} (run {run_id}{', resumed' if resuming else ''})")
    if request.resume and not resuming:
        log.print(f"note: --resume found no run in {run_dir}: this run starts from the beginning")
    versions = package_versions()
    changed = version_changes(before.started_with, versions)
    if changed:  # rounds from both are mixed in the result: allowed (a pip upgrade between sessions), but said
        log.print(f"note: this run was started with other versions ({', '.join(changed)}); "
                  "its earlier rounds were made with the old ones")
    processes = group.world if group else 1
    if any(n != processes for n in before.processes):  # allowed (a GPU less tonight), but the batches differ: said
        went_on = "".join(f", went on with {n}" for n in changed_counts(before.processes)[1:])
        log.print(f"note: this run began on {before.began_on} process(es){went_on} and goes on with {processes}; the rounds made from here "
                  "(if any remain) see other batches, so the result differs from a run that kept one number of processes")
    import torch

    threads, started = torch.get_num_threads(), time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())  # UTC: a run moves between machines
    if before.threads and any(n != threads for n in before.threads):  # CPU sums in another order: the last digits move
        log.print(f"note: this run's earlier sessions ran on {', then '.join(map(str, changed_counts(before.threads)))} thread(s) a process and this one on "
                  f"{threads}; CPU kernels sum in another order on another number of threads, so the rounds made from here (if any "
                  f"remain) can differ in their last digits from a run that kept one (OMP_NUM_THREADS={before.threads[-1]} keeps it)")
    atomic_write_json(manifest_path, {"run_id": run_id, "inputs": inputs, "config": config.to_dict(), "versions": versions,
                                      **({"started_with": before.started_with} if changed else {}), "round_identity": before.round_identity,
                                      "final_identity": before.final_identity, "file_identity": before.file_identity,
                                      "argv": sys.argv, "data": dataset.describe(), "processes": processes,
                                      **({"began_on_processes": before.began_on} if before.began_on not in (None, processes) else {}),
                                      "processes_by_session": [*before.processes, processes],
                                      "threads": threads, "threads_by_session": [*before.threads, threads],
                                      "commands": [*before.commands, {"argv": sys.argv, "cwd": working_folder(), "started": started}],
                                      "started": started})
    log.print(f"data: {dataset.name}: {dataset.preprocessing.note}")
    for shown, line in zip(shown_notes, input_notes):
        console.print(shown)
        log.record(line if line.startswith("warning: ") else f"note: {line}")  # not "note: warning: ..."
    ignored = config.switched_off()
    if ignored:
        log.print(f"note: --no-class-aware switches the class-dependent parts off: {', '.join(ignored)} changes nothing in this run")
    swept = sweep_temporaries(run_dir)
    if swept:
        log.print(f"removed {len(swept)} temporary file(s) an interrupted run left in {run_dir}")
