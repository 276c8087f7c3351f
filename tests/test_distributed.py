"""Retraining on several processes with torchrun (gloo on CPU): the same rounds, one run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _compress(args, out: Path, processes: int) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(processes)] if processes > 1 else [sys.executable]
    return subprocess.run([*launcher, "-m", "toolchain", "compress", *map(str, args), "--out", str(out)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def test_two_processes_make_the_same_tickets_and_one_report(trained_digits, tmp_path):
    args = [trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.25", "--epochs", "1", "--max-fn-increase", "1",
            "--confidence", "0.5", "--max-accuracy-drop", "0.5", "--skip-export", "--device", "cpu"]
    one, two = _compress(args, tmp_path / "one", 1), _compress(args, tmp_path / "two", 2)
    assert one.returncode in (0, 1), one.stderr
    assert two.returncode in (0, 1), two.stderr
    sizes = [[s["params"] for s in json.loads((tmp_path / run / "report.json").read_text())["stages"] if s["stage"] == "prune_round"]
             for run in ("one", "two")]
    assert sizes[0] == sizes[1] and len(sizes[0]) == 2
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 2
    assert two.stdout.count("# cwtool compress report") == 1  # rank 0 alone reports
    # --resume the same way: the rounds on disk are read by every process
    (tmp_path / "two" / "rounds" / "round_2.pt").unlink()
    (tmp_path / "two" / "rounds" / "round_2.json").unlink()
    again = _compress([*args, "--resume"], tmp_path / "two", 2)
    assert again.returncode in (0, 1), again.stderr
    assert "resuming after round 1" in again.stderr
    # and with one process: allowed, but the batches of the rounds left differ, which the run says and records
    (tmp_path / "two" / "rounds" / "round_2.pt").unlink()
    (tmp_path / "two" / "rounds" / "round_2.json").unlink()
    alone = _compress([*args, "--resume"], tmp_path / "two", 1)
    assert alone.returncode in (0, 1), alone.stderr
    assert "began on 2 process(es) and goes on with 1" in alone.stderr, alone.stderr
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 1 and manifest["began_on_processes"] == 2
    assert manifest["processes_by_session"] == [2, 2, 1]


@pytest.mark.parametrize("rank, local, group, stop, says", [("0", "0", True, "SIGTERM", True), ("1", "1", True, "SIGTERM", False),
                                                             ("2", "0", True, "SIGTERM", True),  # the first process of machine 2
                                                             ("1", "1", True, "the loss of another torchrun process", True),
                                                             ("1", "1", False, "SIGTERM", True)])
def test_under_torchrun_a_stop_is_said_once_a_machine_and_a_lost_peer_by_each(rank, local, group, stop, says):
    """torchrun forwards a SIGTERM to every process, and each printed the stop line: two lines for one stop. Each machine
    runs a torchrun of its own, with its own terminal: its first process says the stop there. A process that only inherited
    RANK and WORLD_SIZE (a pod, a script that shells out to cwtool) is not under torchrun: it says its stop."""
    import textwrap

    script = textwrap.dedent(f"""
        import toolchain.cli as cli
        from toolchain import distributed
        from toolchain.errors import Interrupted

        def stopped(argv):
            if {group!r}:  # the process group torchrun's processes join
                distributed._group = distributed.Group({int(rank)}, 4, {int(local)}, "gloo")
            raise Interrupted({stop!r})

        cli._main = stopped
        cli.main([])
    """)
    env = {**os.environ, "RANK": rank, "WORLD_SIZE": "4", "LOCAL_RANK": local}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 143, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == ([f"cwtool: interrupted by {stop}; temporary files removed"] if says else []), proc.stderr


@pytest.mark.parametrize("rank, local, line", [("0", "0", "cwtool: error: no such data"), ("1", "1", None),
                                               ("2", "0", "cwtool: error (machine of process 2): no such data")])
def test_under_torchrun_a_bad_input_is_said_once_a_machine(rank, local, line):
    """A --data path missing on the second machine alone: its processes exited 2 in silence, and process 0 then said only
    that another process had stopped."""
    import textwrap

    script = textwrap.dedent(f"""
        import toolchain.cli as cli
        from toolchain import distributed
        from toolchain.errors import UserError

        def refused(argv):  # the first step of a command's run
            distributed._group = distributed.Group({int(rank)}, 4, {int(local)}, "gloo")
            raise UserError("no such data")

        cli._printable_arguments = refused
        cli.main(["evaluate"])
    """)
    env = {**os.environ, "RANK": rank, "WORLD_SIZE": "4", "LOCAL_RANK": local}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ([line] if line else []), proc.stderr
