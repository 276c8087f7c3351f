"""The words a command line is given, before and around the parser: a path's ~ expanded as the shell would have, no
value that would forge a console line, no NaN or inf for a float option, and no type shown beside a flag in --help."""

from __future__ import annotations

import math

import typer

from toolchain.errors import UserError, one_line, unprintable_in

__all__ = ["flags_show_no_type", "home_expanded", "printable_arguments", "finite_floats", "PATH_OPTIONS", "NAME_OPTIONS",
           "remember_command", "command_line"]


def flags_show_no_type() -> None:
    """typer's help writes a flag's type beside it (`--resume <bool>`), which reads as a flag that takes a value, and
    `--resume true` is then refused as an extra argument: a flag shows none, as click's plain help does."""
    option = getattr(getattr(typer, "core", None), "TyperOption", None)
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "_flags_show_none", False):
        return

    def display_type_rich(self, ctx):
        return None if getattr(self, "is_flag", False) or getattr(self, "count", False) else shown(self, ctx)

    display_type_rich._flags_show_none = True
    option.display_type_rich = display_type_rich
    argument = getattr(typer.core, "TyperArgument", None)
    named = getattr(argument, "display_type_rich", None)
    if named is not None:  # files given one after another showed a Python type, `<list[Path]>`: their name says it

        def argument_type(self, ctx):
            return None if getattr(self, "nargs", 1) != 1 else named(self, ctx)

        argument.display_type_rich = argument_type


# Options whose value is a path (or a name, which never starts with ~): their ~ is expanded here, once, for every reader
PATH_OPTIONS = ("--data", "-d", "--val", "--test", "--out", "--json", "--markdown", "--junit", "--baseline", "--calibration",
                "--target", "--save-rows", "--arch")


def command_of(argv: list[str]) -> str | None:
    """The command a command line names: its first word that is not an option."""
    return next((a for a in argv if not a.startswith("-")), None)


def home_expanded(argv: list[str]) -> list[str]:
    """``argv`` with a leading ~ of a path expanded where the shell left it (``--data=~/x``, or quoted): --data expanded
    it in one reader and not in the next, so verify judged other rows than the baseline's, and --val refused a folder
    that --data read (a new user's finding). A path's value of PATH_OPTIONS, or a command's argument (the model, the
    artifacts) that follows no option."""
    import os

    def home(value: str) -> str:
        try:
            return os.path.expanduser(value) if value.startswith("~") else value
        except (RuntimeError, KeyError):  # no home: the readers say so in their words
            return value

    out = []
    for i, arg in enumerate(argv):
        before = argv[i - 1] if i else ""
        flag, eq, value = arg.partition("=")
        if eq and flag in PATH_OPTIONS:
            arg = f"{flag}={home(value)}"
        elif before in PATH_OPTIONS or (arg.startswith("~/") and i and before not in NAME_OPTIONS):
            arg = home(arg)  # a command's argument, after a flag such as --trust-model too
        out.append(arg)
    return out


# Options whose value is a name, never expanded (a class called "~/x" stays one)
NAME_OPTIONS = ("--protect-class", "-p", "--class-names", "--label-column", "--arch-kwargs", "--normalize", "--rounds")


# Options whose value is JSON, where a line break is only white space; every other value is a name or a number that
# cwtool prints inside a console or log line, where a line break or an escape would start a forged line of its own.
_JSON_OPTIONS = ("--arch-kwargs",)
_OUTPUT_OPTIONS = ("--json", "--markdown", "--junit", "--out")


def printable_arguments(args) -> None:
    """Checked on the words as typed (before the parser): a value exempt as JSON must follow its option and be a JSON
    object, so that a path cannot pass as one by following an option that took the option's name as its value."""
    previous = None
    for arg in map(str, args):
        option, eq, value = arg.partition("=") if arg.startswith("--") else (None, "", arg)
        name = option if eq else previous
        text = value if eq else arg
        if text == "-" and name in _OUTPUT_OPTIONS:  # other tools' "standard output": here a file named '-' (./- still is)
            raise UserError(f"{name} '-': cwtool writes files, not standard output; give a path")
        char = unprintable_in(text)
        if char is not None and not (name in _JSON_OPTIONS and _is_json_object(text)):
            where = f"the value of {name}" if name and name.startswith("-") else f"the argument '{one_line(arg)[:80]}'"
            raise UserError(f"{where} has a line break or a control character ({char}): cwtool prints it inside console and log "
                            "lines; rename the file or give another value")
        previous = arg


# The options each command writes one file to (compress's and export's --out are folders)
FILE_OUTPUTS = {"verify": ("--json", "--markdown", "--junit", "--save-rows"), "evaluate": ("--json",), "bench": ("--json",),
                "targets": ("--json",), "train": ("--out",), "calibrate": ("--out",)}


def no_folder_for_a_file(args, command: str | None) -> None:
    """A file's output given with a trailing '/' (``--json results/``) names a folder: the parser's Path drops the '/', and
    a file called 'results' was written where the user meant a folder to put one in."""
    import os

    flags = FILE_OUTPUTS.get(command or "", ())
    previous = None
    for arg in map(str, args):
        option, eq, value = arg.partition("=") if arg.startswith("--") else (None, "", arg)
        name = option if eq else previous
        text = value if eq else arg
        if name in flags and text.endswith(("/", os.sep)) and text.strip("/" + os.sep):
            try:  # a usage error: verify replaces the reports an earlier run left, as after any other (typer vendors click)
                from typer._click.exceptions import UsageError
            except ImportError:
                from click.exceptions import UsageError
            raise UsageError(f"{name} '{text}' ends in '/', which names a folder: {name} writes one file; give the file's name "
                            "(in that folder, if you meant one)")
        previous = arg


def _is_json_object(text: str) -> bool:
    import json

    try:
        return isinstance(json.loads(text), dict)
    except (ValueError, RecursionError):
        return False


def finite_floats(group) -> None:
    """Every float option of every command refuses NaN and inf (the parser takes both, and a `--lr nan`
    would train nothing and pass every `<` check): checked on the parsed values, before the command runs."""
    import functools

    for command in getattr(group, "commands", {}).values():
        run = command.callback
        if run is None or getattr(run, "_finite_floats", False):
            continue

        @functools.wraps(run)
        def checked(*args, __run=run, **kwargs):
            for name, value in kwargs.items():
                if isinstance(value, float) and not math.isfinite(value):
                    raise UserError(f"--{name.replace('_', '-')} {value} is not a finite number")
            return __run(*args, **kwargs)

        checked._finite_floats = True
        command.callback = checked


_typed: list[str] = []  # the command of this process, as the CLI read it


def remember_command(argv: list[str]) -> None:
    """The command's arguments, for ``command_line``."""
    _typed[:] = [str(a) for a in argv]


def command_line() -> str:
    """The command as typed, quoted for a shell: 'export m.pt --data d --arch x ...' (what a log's first line says)."""
    import shlex
    import sys

    return shlex.join(_typed or sys.argv[1:])
