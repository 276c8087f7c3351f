"""Retraining on several processes with torchrun (gloo on CPU): the same rounds, one run directory."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    report = json.loads((tmp_path / "two" / "report.json").read_text())
    assert report["training"]["processes"] == 2 and "processes_by_session" not in report["training"]
    assert "on 2 torchrun processes" in (tmp_path / "two" / "report.md").read_text()
    assert json.loads((tmp_path / "one" / "report.json").read_text())["training"]["processes"] == 1
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
    training = json.loads((tmp_path / "two" / "report.json").read_text())["training"]
    assert training["processes"] == 1 and training["processes_by_session"] == [2, 2, 1]
    assert "on 2, then 2, then 1 process(es)" in (tmp_path / "two" / "report.md").read_text()


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
        cli.SILENT_WAIT_S = 0.5  # a silent process's wait: its own test; 30 s a run here
        cli.main(["evaluate"])
    """)
    env = {**os.environ, "RANK": rank, "WORLD_SIZE": "4", "LOCAL_RANK": local}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ([line] if line else []), proc.stderr


@pytest.mark.parametrize("rank, local, started_by_torchrun, line", [
    ("0", "0", True, "cwtool: error: --device 'bogus' is not one cwtool runs on"), ("1", "1", True, None),
    ("2", "0", True, "cwtool: error (machine of process 2): --device 'bogus' is not one cwtool runs on"),
    ("1", "1", False, "cwtool: error: --device 'bogus' is not one cwtool runs on")])  # RANK inherited in a pod: not torchrun's
def test_under_torchrun_a_bad_input_found_before_joining_is_said_once_a_machine(rank, local, started_by_torchrun, line):
    """A flag or a missing file is found before the processes join their group: every process printed the same line."""
    import textwrap

    script = textwrap.dedent("""
        import toolchain.cli as cli
        from toolchain.errors import UserError

        def refused(argv):  # before distributed.start
            raise UserError("--device 'bogus' is not one cwtool runs on")

        cli._printable_arguments = refused
        cli.SILENT_WAIT_S = 0.5  # a silent process's wait: its own test; 30 s a run here
        cli.main(["evaluate"])
    """)
    env = {**os.environ, "RANK": rank, "WORLD_SIZE": "4", "LOCAL_RANK": local}
    env.pop("TORCHELASTIC_RUN_ID", None)
    if started_by_torchrun:
        env["TORCHELASTIC_RUN_ID"] = "test"
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == ([line] if line else []), proc.stderr


@pytest.fixture
def torchrun_rank_1_of_2(monkeypatch):
    """This process as torchrun's second of two on one machine with GPUs (faked: this machine has none); nothing joins."""
    import torch
    import torch.distributed as dist

    from toolchain import distributed

    monkeypatch.setattr(distributed, "_group", None)
    for name, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2", "TORCHELASTIC_RUN_ID": "test"}.items():
        monkeypatch.setenv(name, value)
    joined, gpu = [], []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "set_device", gpu.append)
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda backend: joined.append(backend))
    return distributed, joined, gpu


@pytest.mark.parametrize("gpus, device, backend, own", [(2, "auto", "nccl", 1), (2, "cuda", "nccl", 1), (2, "cpu", "gloo", None)])
def test_under_torchrun_each_process_trains_on_the_gpu_of_its_local_rank(torchrun_rank_1_of_2, monkeypatch, gpus, device, backend, own):
    """The second process of two took cuda, i.e. GPU 0 where DistributedDataParallel was told device_ids [0] while
    torch put its weights on GPU 1 (set_device): the first step would fail. --device cpu on a GPU machine joined NCCL,
    which cannot carry CPU tensors."""
    import torch

    from toolchain.models.train import pick_device

    distributed, joined, gpu = torchrun_rank_1_of_2
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    group = distributed.start(device)
    assert group.backend == backend and joined == [backend]
    assert gpu == ([1] if own is not None else [])
    assert pick_device(device) == (torch.device("cuda", 1) if own is not None else torch.device("cpu"))


@pytest.mark.parametrize("gpus, device, message", [
    (1, "auto", "torchrun started 2 processes on this machine, which has 1 GPU(s): each process takes the GPU of its LOCAL_RANK; "
                "give --nproc-per-node 1 at most, or --device cpu"),
    (2, "cuda:1", "--device cuda:1 under torchrun: each process takes the GPU of its LOCAL_RANK; give --device auto (or cuda), or cpu"),
    (2, "cudaX", "--device 'cudaX' is not one cwtool runs on: use auto, cpu or cuda[:N]")])
def test_under_torchrun_a_process_without_a_gpu_of_its_own_is_refused(torchrun_rank_1_of_2, monkeypatch, gpus, device, message):
    """Two processes on one GPU: NCCL stops both with "Duplicate GPU detected", after the data was read; a fixed
    cuda:N puts every process on one GPU. Both are said before joining, in one line (bad input)."""
    import torch

    from toolchain.errors import UserError

    distributed, joined, gpu = torchrun_rank_1_of_2
    monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    with pytest.raises(UserError) as refused:
        distributed.start(device)
    assert str(refused.value) == message
    assert joined == [] and gpu == []
    assert not distributed.speaks_for_its_node()  # process 0 of this machine says it; this one leaves in silence
    with pytest.raises(UserError):  # asked again (a caller that caught it), it is refused again: nothing was joined
        distributed.start(device)


@pytest.mark.parametrize("speaks", [True, False])
def test_a_silent_torchrun_process_waits_for_the_speaking_one_before_it_exits(monkeypatch, capsys, speaks):
    """The silent process exited at once; torchrun then stopped the speaking one before its line was out: no line at all,
    or only a false "interrupted by SIGTERM" (2 runs of 8, when the silence came in)."""
    import toolchain.cli as cli
    from toolchain import distributed

    waited = []
    monkeypatch.setattr(distributed, "speaks_for_its_node", lambda: speaks)
    monkeypatch.setattr(cli.time, "sleep", waited.append)
    cli._say_once_a_machine("cwtool: error: no such data")
    assert capsys.readouterr().err == ("cwtool: error: no such data\n" if speaks else "")
    assert (sum(waited) if waited else 0) == pytest.approx(0 if speaks else cli.SILENT_WAIT_S, abs=0.2) and cli.SILENT_WAIT_S >= 10
    assert all(w <= 0.1 for w in waited)  # short sleeps: a stop from torchrun ends the wait at once (see below)


def test_a_silent_torchrun_process_stopped_by_torchrun_while_it_waits_says_nothing(tmp_path):
    """torchrun stops a silent process once the speaking one has said the bad input and ended. One long sleep delayed
    the stop past the watcher's grace period, and the silent process printed 'interrupted by SIGTERM' beside the line."""
    import signal
    import time

    script = "import toolchain.cli as cli\ncli.entry()\n"
    env = {**os.environ, "RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "TORCHELASTIC_RUN_ID": "test", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script, "compress", str(tmp_path / "m.pt"), "-d", "digits", "-p", "3", "--bogus"],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(8)  # it has found the unknown flag and waits, silent
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and err == "" and out == "", err


BN_RANKS = """
import json, sys, torch, torch.distributed as dist
from torch import nn
from toolchain import distributed
from toolchain.models.train import train, TrainConfig

distributed.start("cpu")
torch.manual_seed(0)
x = torch.randn(512, 3, 16, 16)
y = (x.mean((1, 2, 3)) > 0).long()
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                      nn.Linear(8, 2))
model.register_buffer("fill", torch.tensor(torch.finfo(torch.float32).min))  # a mask's fill value: a sum overflows it
own = []  # this process's loss of each step, on its share of the batch


def loss_fn(logits, target, idx, inputs):
    loss = nn.functional.cross_entropy(logits, target)
    own.append(float(loss))
    return loss


losses = []
train(model, x.numpy(), y.numpy(), TrainConfig(epochs=1, batch_size=128, precision="fp32"), loss_fn=loss_fn,
      device=torch.device("cpu"), epoch_losses=losses)
state = torch.cat([t.float().flatten() for t in model.state_dict().values()])
every = [torch.zeros_like(state) for _ in range(dist.get_world_size())]
dist.all_gather(every, state)
said = [None] * dist.get_world_size()
dist.all_gather_object(said, (losses[0], sum(own) / len(own)))
if dist.get_rank() == 0:
    print(json.dumps({"max_difference": float((every[0] - every[1]).abs().max()), "fill": float(model.fill),
                      "said": [s[0] for s in said], "own": [s[1] for s in said]}))
distributed.stop()
"""


def test_two_processes_end_training_with_the_same_batchnorm_statistics(tmp_path):
    """Each process updated BatchNorm's running statistics on its own share of every batch, and DistributedDataParallel
    broadcasts process 0's before each forward, not after the last: the processes judged validation with different
    statistics, one kept a round the other stopped, and the run ended in 'interrupted by the loss of another torchrun
    process' for any BatchNorm model (a reviewer's finding)."""
    script = tmp_path / "bn_ranks.py"
    script.write_text(BN_RANKS)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", str(script)], cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    said = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("{")))
    assert said["max_difference"] == 0.0 and said["fill"] == float(np.finfo(np.float32).min), said
    # the epoch's loss train says is every process's batches', not each process's own share (the first said rank 0's)
    assert said["own"][0] != said["own"][1], said
    assert said["said"][0] == pytest.approx(said["said"][1], rel=1e-6), said
    assert said["said"][0] == pytest.approx(sum(said["own"]) / 2, rel=1e-5), said


def test_a_refusal_on_rank_0_as_the_run_directory_opens_is_no_internal_error_on_rank_1(trained_digits, tmp_path):
    """Another compress held the folder: rank 0 said so (exit 2), and rank 1, waiting at the barrier after it, ended in
    'internal error: RuntimeError: ... Connection closed by peer', exit 3."""
    import fcntl

    (tmp_path / "run").mkdir()
    fd = os.open(tmp_path / "run", os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)  # as a compress that runs in it holds it
    try:
        args = [trained_digits[0], "-d", "digits", "-p", "3", "--keep-params", "0.25", "--epochs", "1", "--skip-export", "--device", "cpu"]
        res = _compress(args, tmp_path / "run", 2)
    finally:
        os.close(fd)
    assert res.returncode != 0 and "is in use: another cwtool process" in res.stderr, res.stderr
    assert "internal error" not in res.stderr and "exitcode  : 3" not in res.stderr, res.stderr
    # rank 1 hears the refusal from rank 0 and leaves in silence, not as an interrupted run (a reviewer's false line)
    assert "interrupted" not in res.stderr and res.stderr.count("cwtool: error") == 1, res.stderr


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("master_addr, master_port, says", [
    (None, "29500", "torchrun did not start this process and MASTER_ADDR is not set"),
    ("127.0.0.1", "notaport", "MASTER_PORT 'notaport' is not a port number")])
def test_world_size_left_in_a_shell_without_a_master_is_bad_input(trained_digits, tmp_path, master_addr, master_port, says):
    """WORLD_SIZE=2 RANK=0 from a stale shell, no torchrun: torch's rendezvous raised ValueError, said as an internal
    error (exit 3)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": "0", "MASTER_PORT": master_port}
    env.pop("TORCHELASTIC_RUN_ID", None)
    env.pop("MASTER_ADDR", None)
    if master_addr:
        env["MASTER_ADDR"] = master_addr
    proc = subprocess.run([sys.executable, "-m", "toolchain", "compress", str(trained_digits[0]), "-d", "digits", "-p", "3",
                           "--epochs", "1", "--skip-export", "--device", "cpu", "--out", str(tmp_path / "run")],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0] and "unset WORLD_SIZE and RANK" in lines[0], proc.stderr
    assert not (tmp_path / "run").exists()


def test_world_size_left_in_a_shell_waits_a_bounded_time_for_peers_that_never_come(monkeypatch, capsys):
    """With MASTER_ADDR and MASTER_PORT set too, process 0 waited for a second process for torch's 30 minutes, saying
    nothing (a reviewer's run, killed after 120 s): it now says why it waits, and gives up after JOIN_TIMEOUT_S."""
    import time

    from toolchain import distributed
    from toolchain.errors import UserError

    monkeypatch.setattr(distributed, "_group", None)
    monkeypatch.setattr(distributed, "JOIN_TIMEOUT_S", 1.0)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    port = _free_port()
    for name, value in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}.items():
        monkeypatch.setenv(name, value)
    started = time.perf_counter()
    with pytest.raises(UserError, match=f"did not join at 127.0.0.1:{port} within 1 s"):
        distributed.start("cpu")
    assert time.perf_counter() - started < 30
    assert "are set (not by torchrun): waiting up to 1 s" in capsys.readouterr().err
    monkeypatch.setattr(distributed, "_group", None)


@pytest.mark.parametrize("world, rank, addr, says", [
    ("99999999999999999999", "0", "127.0.0.1", "WORLD_SIZE=99999999999999999999 is more processes than a group can hold"),
    ("2", "-1", "127.0.0.1", "RANK=-1 is negative"),
    ("2", "2", "127.0.0.1", "RANK=2 is not below WORLD_SIZE=2"),
    ("2", "0", "256.1.1.1", "MASTER_ADDR '256.1.1.1' is not an address this machine can reach")])
def test_a_process_group_the_environment_cannot_make_is_refused_before_any_wait(monkeypatch, world, rank, addr, says):
    """A 20-digit WORLD_SIZE ended in torch's TypeError (exit 3); RANK=-1 was said to be "not below" WORLD_SIZE; a
    MASTER_ADDR no resolver knows waited the whole JOIN_TIMEOUT_S, printing a line of torch's every few seconds."""
    import time

    from toolchain import distributed
    from toolchain.errors import UserError

    monkeypatch.setattr(distributed, "_group", None)
    monkeypatch.delenv("TORCHELASTIC_RUN_ID", raising=False)
    for name, value in {"WORLD_SIZE": world, "RANK": rank, "LOCAL_RANK": "0", "MASTER_ADDR": addr, "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(name, value)
    started = time.perf_counter()
    with pytest.raises(UserError, match=re.escape(says)) as refused:
        distributed.start("cpu")
    assert "unset WORLD_SIZE and RANK" in str(refused.value) and time.perf_counter() - started < 20
    monkeypatch.setattr(distributed, "_group", None)


def test_processes_that_torchrun_did_not_start_join_through_the_environment(tmp_path):
    """A cluster's job operator sets RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT and starts one cwtool per process: they
    join, within the bounded wait."""
    script = "from toolchain import distributed\ng = distributed.start('cpu'); distributed.barrier(); print(g.rank, g.world); distributed.stop()\n"
    port = str(_free_port())
    procs = []
    for rank in ("0", "1"):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "WORLD_SIZE": "2", "RANK": rank, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": port}
        env.pop("TORCHELASTIC_RUN_ID", None)
        procs.append(subprocess.Popen([sys.executable, "-c", script], cwd=REPO, env=env, stdout=subprocess.PIPE,
                                      stderr=subprocess.PIPE, text=True))
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert [o[0].strip() for o in outs] == ["0 2", "1 2"]


@pytest.mark.parametrize("command", ["train", "evaluate", "verify", "demo", "export"])
def test_under_torchrun_only_compress_runs(command):
    """Every other command ran whole on each process: train wrote one checkpoint twice, verify's processes raced for
    their reports (one's SIGTERM turned a failed gate into an error in the JUnit file), demo ended in exit 3."""
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "TORCHELASTIC_RUN_ID": "test"}
    proc = subprocess.run([sys.executable, "-m", "toolchain", command, "--help"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == (
        f"cwtool: error: '{command}' does not run under torchrun (only compress shares its work among processes): "
        f"run 'cwtool {command} ...' as one process"), proc.stderr
    assert proc.stdout == ""


@pytest.mark.parametrize("batch, processes, refused", [(4, 4, True), (7, 4, True), (8, 4, False), (1, 1, True), (2, 1, False)])
def test_a_batch_that_leaves_a_process_one_row_is_refused_with_batchnorm(batch, processes, refused):
    """--batch-size 4 on 4 processes: every global batch was skipped (BatchNorm cannot train on one row), so no round
    retrained, and nothing said so."""
    from torch import nn

    from toolchain.errors import UserError
    from toolchain.models.train import check_batch_shares

    with_bn = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
    if refused:
        with pytest.raises(UserError, match=f"--batch-size {batch} .*give --batch-size {2 * processes} or more"):
            check_batch_shares(with_bn, batch, processes)
    else:
        check_batch_shares(with_bn, batch, processes)
    check_batch_shares(nn.Sequential(nn.Conv2d(1, 4, 3)), batch, processes)  # without BatchNorm, a row a process trains
