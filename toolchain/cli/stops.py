"""What a stop (SIGINT, SIGTERM, SIGHUP) says, the code it exits with, and the reports it leaves no earlier run's. The
watcher's thread says the lines too, while the main thread may hold locks: they import nothing of cwtool's."""

from __future__ import annotations


def catch_signals(handler) -> dict:
    """The stop signals go to ``handler`` (the watcher's), which unwinds the stack (every staged file is removed on the
    way) instead of killing the process where it stands. Returns the handlers it replaced."""
    import signal
    import threading

    from toolchain.interrupts import stop_signals

    if threading.current_thread() is not threading.main_thread():
        return {}
    return {sig: signal.signal(sig, handler) for sig in stop_signals()}


def exit_code(signal_name: str) -> int:
    """128 + the signal's number, as a shell reports a process the signal ended: 130, 143, 129 for SIGHUP."""
    import signal

    return 128 + int(getattr(signal.Signals, signal_name, signal.SIGTERM))


def interrupted_line(signal_name: str, run_dir, command: str | None) -> str:
    """The line of a stop before the command's work was whole: where a run directory holds it, how to finish it."""
    line = f"cwtool: interrupted by {signal_name}; temporary files removed"
    if run_dir is not None and command == "demo":  # the demo takes no --resume: it starts over
        return line + f"; run cwtool demo again to start over (it replaces '{run_dir}')"
    if run_dir is not None:
        import os  # no import of cwtool's here: the watcher thread says this line while the main thread may hold locks

        try:  # a round is done once its summary is written (rundir.RunDir.done_rounds)
            finished = any(n.startswith("round_") and n.endswith(".json") for n in os.listdir(os.path.join(run_dir, "rounds")))
        except OSError:  # no rounds folder yet, or unreadable: the line is said whatever the folder's state
            finished = False
        kept = "the finished rounds are kept" if finished else "no round had finished; what the run holds is kept"
        line += f"; {kept} in '{run_dir}': rerun the same command with --resume to finish the run"
    return line


def finished_line(signal_name: str, run_dir=None) -> str:
    """The line of a stop that came once the command's output was whole (no import: the watcher thread says it too)."""
    where = f" (run directory: {run_dir})" if run_dir else ""
    return f"cwtool: {signal_name} arrived as the command finished: what it wrote is complete{where}"


def stale_reports_replaced(argv: list[str], message: str, kind: str) -> None:
    """A verify stopped or failed before main could run it: the green reports an earlier run left at --json or --junit
    would be published as this run's (a cancelled CI job's `if: always()` step); they say ``message`` instead. Best
    effort: the process is on its way out."""
    try:
        from toolchain.cli.arguments import command_of, home_expanded

        argv = home_expanded([str(a) for a in argv])
        if command_of(argv) == "verify":
            from toolchain.cli.verify import replace_stale_reports

            replace_stale_reports(argv, message, kind)
    except Exception:  # the stop's line and its exit code must not fail on it
        pass
