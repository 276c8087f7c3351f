"""The `cwtool` command line: a module per command, each a thin call into the library.

Exit codes: 0 done / gate passed; 1 gate failed; 2 bad input or usage (one line, a traceback only
with --debug); 3 an internal error (a bug: please report it with the --debug traceback); 130/143/129
interrupted (SIGINT/SIGTERM/SIGHUP; one the process was started to ignore, SIGHUP under nohup or SIGINT in a script's
background job, stays ignored, though torchrun's agent passes one on to its workers).
"""

from __future__ import annotations

import sys
import time
import traceback
from typing import Optional

import typer

from toolchain.cli import bench, calibrate, compress, evaluate, export, targets, train, verify  # the modules: toolchain.cli.<command> stays one
from toolchain.cli.arguments import finite_floats as _finite_floats, flags_show_no_type, home_expanded as _home_expanded
from toolchain.cli.arguments import printable_arguments as _printable_arguments  # a module global: tests replace it here
from toolchain.cli import process, stops
from toolchain.cli.arguments import command_of, no_folder_for_a_file, remember_command
from toolchain.cli.failures import install_hint, limits_line, native_output, raised_by_the_cli_libraries
from toolchain.errors import Interrupted, UserError, describe, one_line

__all__ = ["app", "main"]



flags_show_no_type()
app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Compress a classifier for the edge without losing the cases that matter.",
)
_state = {"debug": False}


def _print_version(given: bool) -> None:
    if given:
        from toolchain import __version__

        typer.echo(f"cwtool {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show tracebacks for errors."),
          version: bool = typer.Option(False, "--version", help="Print cwtool's version and exit.", callback=_print_version,
                                       is_eager=True)):
    _state["debug"] = debug


_COMMANDS = (evaluate.evaluate, train.train, calibrate.calibrate, compress.compress, export.export, compress.demo, verify.verify, targets.targets, bench.bench)
for _command in _COMMANDS:
    app.command(_command.__name__)(_command)  # in data-flow order, as --help lists them


def _usage_error_line(exc) -> str:
    ctx = getattr(exc, "ctx", None)
    message = " ".join(exc.format_message().split())
    if not message:  # click printed the help for a command given no arguments, and says nothing more
        message = "no arguments given: the help above lists what to give"
    if ctx is None:
        return f"cwtool: error: {message}"
    return f"cwtool: error: {message} (see '{ctx.command_path} --help')"  # the prefix of every other bad input's line


def _err(line) -> None:
    """A line on stderr. A terminal gone (EIO: its window closed under a run that ignores SIGHUP) takes nothing from the
    exit code: a bad input's 2 became 1, the gate-failed code, and a finished run's 0 a 3."""
    try:
        print(line, file=sys.stderr, flush=True)
    except OSError:
        pass


def _say_stopped(stop) -> None:
    """The one line of an Interrupted: complete where the command had finished its work (its files whole), else the stop."""
    from toolchain import interrupts

    if not stop.completed:
        _say_interrupted(stop.signal_name, stop.run_dir)
    elif interrupts.claim_the_line():
        _err(stops.finished_line(stop.signal_name, stop.run_dir))


def _say_interrupted(signal_name: str, run_dir) -> None:
    """The one line of a stop; the watcher's grace path (an exit that then hangs) says nothing more."""
    from toolchain import distributed, interrupts

    if signal_name in ("SIGINT", "SIGTERM", "SIGHUP") and not distributed.speaks_for_its_node():
        return  # torchrun stops every process: one says so for its machine (as for a bad input); a lost peer is said by each
    if interrupts.claim_the_line():
        _err(stops.interrupted_line(signal_name, run_dir, _state.get("command")))  # a SIGHUP's terminal may be gone: the exit code and the log say it


def main(argv: Optional[list[str]] = None) -> None:
    import signal

    from toolchain import interrupts
    from toolchain.interrupts import Watcher

    for stream in (sys.stdout, sys.stderr):  # a file name that is not UTF-8 is printed escaped, never a crash
        try:
            stream.reconfigure(errors="backslashreplace")
        except (AttributeError, ValueError, OSError):
            pass
    process.unreadable_columns_unset()
    process.unreadable_thread_count_unset()
    watcher = Watcher(lambda name, run_dir: stops.interrupted_line(name, run_dir, _state.get("command")), stops.finished_line)
    _state["watcher"] = watcher
    _state["ended"] = False
    previous = stops.catch_signals(lambda signum, frame: watcher.deliver(signum))
    try:
        with watcher:
            _main(argv)
    except Interrupted as exc:  # arrived as the command was finishing: its files are whole, but the caller asked to stop
        _say_stopped(exc)
        sys.exit(stops.exit_code(exc.signal_name))
    except RuntimeError as exc:  # the watcher's own thread could not start (ulimit -u): _main's errors were said there
        line = limits_line(exc)
        if line is None:
            raise
        if _state["debug"]:
            traceback.print_exc()
        stops.stale_reports_replaced(sys.argv[1:] if argv is None else argv, line, "BadInput")
        _err(f"cwtool: error: {line}")
        sys.exit(2)
    finally:  # in-process callers (tests, notebooks) get their own handlers back
        _state["ended"] = True  # a stop from here on finds the command's work done (entry's handlers say so)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def entry() -> None:
    """The console script's and ``python -m toolchain``'s entry: main(), then out at once. The interpreter's own teardown
    (torch's, onnxruntime's, TensorFlow's: 1-2 s) ran after cwtool's signal handlers were gone, so a stop then killed
    the process with no line; by now every file cwtool wrote is whole and closed, and nothing is left that needs it."""
    import os
    import signal

    from toolchain.interrupts import stop_signals

    process.closed_streams_opened()
    signal_names = {sig: signal.Signals(sig).name for sig in stop_signals()}  # SIGHUP's disposition read before it is taken

    def outside(signum, frame):  # written raw: it may interrupt the flush below, which holds the stream's buffer
        name = signal_names[signum]
        if not _state.get("ended"):  # before main took the signals: nothing written, but an earlier verify's reports are stale
            stops.stale_reports_replaced(sys.argv[1:], f"interrupted by {name} before a verdict", "Interrupted")
        line = stops.finished_line(name) if _state.get("ended") else stops.interrupted_line(name, None, None)
        try:
            os.write(2, line.encode() + b"\n")
        except OSError:  # the terminal is gone (SIGHUP)
            pass
        os._exit(128 + signum)

    for sig in signal_names:  # before main: the handlers main puts back when it ends are these, with no gap between
        signal.signal(sig, outside)
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    if code is not None and not isinstance(code, int):  # sys.exit("message"), as Python prints it
        _err(code)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a reader that went away (`cwtool ... | head`): the exit code still tells
            pass
    os._exit(code or 0)


def _main(argv: Optional[list[str]]) -> None:
    import warnings

    from toolchain import distributed  # imported now: an import that a signal interrupts leaves its file open, and says so

    with warnings.catch_warnings():  # the filters come back as they were (resetwarnings dropped Python's own defaults)
        if "--debug" not in (sys.argv[1:] if argv is None else argv):
            warnings.simplefilter("ignore")  # library warnings would break "one line on bad input"; --debug shows them
        try:
            _run(argv)
        finally:
            distributed.stop()


# How long a silent torchrun process waits before it exits (see _say_once_a_machine). torchrun ends it as soon as the
# speaking one has ended, so the wait costs nothing where both met the input; 3 s lost the line of a speaker that lagged.
SILENT_WAIT_S = 30.0


MAX_LINE = 10_000  # characters of one error line: a value given whole (100,000 x's as --gate) made a 100 KB line


def _bounded(line: str) -> str:
    """``line`` cut at MAX_LINE characters, saying how long it was."""
    return line if len(line) <= MAX_LINE else f"{line[:MAX_LINE]}... (cut: the line is {len(line):,} characters)"


def _say_once_a_machine(line: str, whole: bool = False) -> None:
    """A bad input's line, said by one process a machine under torchrun (every process meets the same input). The others
    wait before they exit: torchrun stops the rest of the group as soon as one process ends, and a silent process that
    ended first had the speaking one stopped before its line was out (no line, or a false "interrupted")."""
    from toolchain import distributed

    if distributed.speaks_for_its_node():
        _err(line if whole else _bounded(line))
    else:
        # the speaking process ends first; torchrun's stop then ends this one, silently. Short sleeps: the signal watcher
        # interrupts the main thread where Python runs next, which one long sleep put off past its grace period (whose
        # line, "interrupted by SIGTERM", was then this silent process's)
        waited = 0.0
        while waited < SILENT_WAIT_S:
            time.sleep(0.1)
            waited += 0.1


def _only_compress_under_torchrun(name: str | None) -> None:
    """compress alone shares its work among torchrun's processes; any other command ran whole on each (train wrote one
    checkpoint N times, verify's processes raced for its reports and one's SIGTERM turned a failed gate into an error)."""
    from toolchain import distributed

    if name != "compress" and name in {c.__name__ for c in _COMMANDS} and distributed.under_torchrun():
        raise UserError(f"'{name}' does not run under torchrun (only compress shares its work among processes): run "
                        f"'cwtool {name} ...' as one process")


def _run(argv: Optional[list[str]]) -> None:
    try:  # typer >= 0.29 vendors click as typer._click; older typers depend on click itself
        from typer._click.exceptions import ClickException
        from typer.exceptions import Abort
    except ImportError:
        from click.exceptions import Abort, ClickException

    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args[1:]:  # a root option, but typed after the command as often: taken from anywhere
        args = ["--debug"] + [a for a in args if a != "--debug"]
    argv = _home_expanded([str(a) for a in args])
    try:
        _state["command"] = name = command_of(argv)
        remember_command(argv)  # a log's first line: the command as typed (every flag, a rerun gets the same)
        _printable_arguments(argv)
        no_folder_for_a_file(argv, name)
        _only_compress_under_torchrun(name)
        command = typer.main.get_command(app)
        _finite_floats(command)
        code = command(args=argv, prog_name="cwtool", standalone_mode=False)
    except UserError as exc:
        from toolchain import distributed

        native = native_output(exc)
        if _state["debug"]:
            sys.stderr.write(native or "")
            traceback.print_exc()
        elif native:
            exc = UserError(f"{exc} (rerun with --debug to see the converter's own output)")
        rank = distributed.rank_of_this_process()
        _say_once_a_machine(f"cwtool: error{f' (machine of process {rank})' if rank > 0 else ''}: {exc}{_resumable(exc)}",
                            getattr(exc, "whole", False))
        sys.exit(2)
    except Interrupted as exc:
        if command_of(argv) == "verify" and not (exc.reports_replaced or exc.completed):
            from toolchain.cli.verify import replace_stale_reports  # stopped before verify's code knew its inputs
            from toolchain.interrupts import writing_after_stop

            with writing_after_stop():
                replace_stale_reports(argv, f"interrupted by {exc.signal_name} before a verdict", "Interrupted")
        _say_stopped(exc)
        sys.exit(stops.exit_code(exc.signal_name))
    except Abort as exc:  # a KeyboardInterrupt that reached the parser before our handler was in place
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, EOFError):  # click turns an EOFError into Abort too: one that got this far is a bug, not Ctrl-C
            raise_as_bug(cause)
        if _raised_not_signalled():
            _err(_RAISED_INTERRUPT)
            sys.exit(2)
        _say_interrupted("SIGINT", getattr(cause, "run_dir", None))
        sys.exit(130)
    except ClickException as exc:  # usage errors: one line, like every other bad input
        line = _usage_error_line(exc)
        if command_of(argv) == "verify":  # its code never ran: old reports are stale
            from toolchain.cli.verify import replace_stale_reports

            replace_stale_reports(argv, line.removeprefix("cwtool: error: "))
        _say_once_a_machine(line)
        sys.exit(2)
    except ModuleNotFoundError as exc:
        hint = install_hint(exc.name or "")
        if hint is None:
            raise_as_bug(exc)
        if _state["debug"]:
            traceback.print_exc()
        _err(f"cwtool: error: {hint}")
        sys.exit(2)
    except SystemExit as exc:
        if raised_by_the_cli_libraries(exc):  # rich's and click's own exits (a closed pipe: `cwtool ... | head`)
            if exc.code == 1 and process.reader_went_away(exc):  # click's answer to a closed pipe; 1 is the gate-failed code. A
                # command's own output keeps the command's code (consoles); --help or --version gave the reader what it took
                sys.exit(0 if {"--help", "--version"} & set(argv) else 2)
            raise
        # cwtool's commands return their code: this came from code cwtool ran (a model's, a data loader's)
        _err(f"cwtool: error: code cwtool ran (the model's or the data's) called {describe(exc)}")
        sys.exit(2)
    except PermissionError as exc:  # the user's files or folders, unreadable (or unwritable) to this user: not a bug
        if _state["debug"]:
            traceback.print_exc()
        where = f"'{one_line(exc.filename)}'" if exc.filename else "a file or folder it needs"
        _err(f"cwtool: error: permission denied on {where} ({exc.strerror or 'no access'}): give this user access to it, "
             "or give another path")
        sys.exit(2)
    except OSError as exc:
        import errno

        from toolchain.io import environment_advice

        advice = environment_advice(exc)  # the environment's, not a bug
        if advice is None:
            raise_as_bug(exc)
        if _state["debug"]:
            traceback.print_exc()
        from toolchain import interrupts

        where = f"'{one_line(exc.filename)[:300]}'" if exc.filename else getattr(exc, "stream", None) or "a file (or the output)"
        doing = "use" if exc.errno == errno.ENAMETOOLONG else "write"
        done = interrupts.finished_work()  # the console's summary (stdout on a full disk) after the run was written whole
        place = f" in '{one_line(str(done[0]))[:300]}'" if done and done[0] else ""
        whole = f"; the run itself is complete{place}" if done else ""
        _err(f"cwtool: error: cannot {doing} {where}: {exc.strerror or exc}: {advice}{whole or _resumable(exc)}")
        sys.exit(2)
    except Exception as exc:  # a bug, not bad input, unless the process's limits were the cause
        line = limits_line(exc)
        if line is None:
            raise_as_bug(exc)
        if _state["debug"]:
            traceback.print_exc()
        _say_once_a_machine(f"cwtool: error: {line}")
        sys.exit(2)
    except BaseException as exc:  # not cwtool's (it raises Exceptions, Interrupted, or exits), nor a signal: a model's own
        _err(f"cwtool: error: code cwtool ran (the model's or the data's) raised {describe(exc)}")
        sys.exit(2)
    if code == 130:  # typer's answer to a KeyboardInterrupt (signals arrive as Interrupted)
        if _raised_not_signalled():
            _err(_RAISED_INTERRUPT)
            sys.exit(2)
        _err("cwtool: interrupted (KeyboardInterrupt); temporary files removed")
    sys.exit(code if isinstance(code, int) else 0)


def _resumable(exc: BaseException) -> str:
    """Where a compress failed once rounds were saved (a full disk as its report was written): how to finish it."""
    run_dir = getattr(exc, "resumable_run", None)
    if run_dir is None:
        return ""
    return (f"; the finished rounds are kept in '{one_line(str(run_dir))[:300]}': once that is fixed, rerun the same command with "
            "--resume to finish the run")


_RAISED_INTERRUPT = ("cwtool: error: code cwtool ran (the model's or the data's) raised KeyboardInterrupt, and no signal reached "
                     "cwtool; temporary files removed")


def _raised_not_signalled() -> bool:
    """A KeyboardInterrupt while the watcher took SIGINT and SIGTERM and none came: the model's or the data's code raised it
    (bad input, docs/SECURITY.md), not a user's Ctrl-C (which arrives as Interrupted)."""
    watcher = _state.get("watcher")
    return watcher is not None and watcher._thread is not None and watcher.received is None


def raise_as_bug(exc: BaseException) -> None:
    """Exit 3 with one line; the traceback too under --debug (the exit code stays what it means)."""
    if _state["debug"]:
        sys.stderr.write(native_output(exc) or "")
        traceback.print_exception(exc)
    _err(f"cwtool: internal error: {describe(exc, 300)} (a bug in cwtool: rerun with --debug for the traceback and report it)")
    sys.exit(3)
