"""Run the cwtool CLI in-process and capture what it says (tests/ is on sys.path under pytest)."""

from __future__ import annotations

import pytest


def run_cli(args, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `cwtool ARGS`; the CLI always ends in SystemExit."""
    from toolchain.cli import main

    with pytest.raises(SystemExit) as exc:
        main([str(a) for a in args])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err
