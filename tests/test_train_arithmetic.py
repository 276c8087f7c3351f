"""Training's arithmetic (bf16 autocast where the hardware has it) and inference's memory order (channels-last)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from clirun import run_cli
from toolchain.models import registry
from toolchain.models import fast_paths
from toolchain.models import train as training
from toolchain.models.fast_paths import autocast_dtype
from toolchain.models.train import TrainConfig, predict_logits, train


@pytest.mark.parametrize("precision, native, expected", [("fp32", True, None), ("bf16", False, torch.bfloat16),
                                                         ("auto", True, torch.bfloat16), ("auto", False, None)])
def test_auto_takes_bf16_only_where_the_hardware_runs_it(precision, native, expected, monkeypatch):
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: native)
    assert autocast_dtype(precision, torch.device("cpu")) is expected


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="precision"):
        TrainConfig(precision="fp8")


def test_bf16_training_learns_as_fp32_does_keeps_fp32_weights_and_runs_the_forward_in_bf16(digits_dataset):
    accuracy, seen = {}, []
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        model = registry.create("digits-cnn", width=8)
        hook = model.register_forward_hook(lambda m, i, out: out.is_meta or seen.append((precision, out.dtype)))  # not the memory estimate's
        train(model, digits_dataset.x_train, digits_dataset.y_train, TrainConfig(epochs=15, lr=1e-2, precision=precision),
              device=torch.device("cpu"))
        hook.remove()
        assert all(p.dtype == torch.float32 for p in model.parameters())
        accuracy[precision] = (predict_logits(model, digits_dataset.x_val).argmax(1) == digits_dataset.y_val).mean()
    in_bf16 = [dtype for p, dtype in seen if p == "bf16"]
    assert in_bf16.count(torch.bfloat16) >= 15 and in_bf16.count(torch.float32) <= 1  # every step; the memory-order probe
    assert {dtype for p, dtype in seen if p == "fp32"} == {torch.float32}
    assert accuracy["fp32"] > 0.85 and accuracy["bf16"] > accuracy["fp32"] - 0.05, accuracy


def test_fp32_training_never_autocasts(digits_dataset):
    seen = []
    model = registry.create("digits-cnn", width=8)
    model.features.register_forward_hook(lambda m, i, out: seen.append(out.dtype))
    train(model, digits_dataset.x_train[:256], digits_dataset.y_train[:256], TrainConfig(epochs=1, precision="fp32"),
          device=torch.device("cpu"))
    assert set(seen) == {torch.float32}


class _Flattening(nn.Module):
    """Older model code: ``.view`` of a conv's output, which channels-last order cannot take."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.fc = nn.Linear(4 * 6 * 6, 3)

    def forward(self, x):
        y = self.conv(x)
        return self.fc(y.view(y.shape[0], -1))


@pytest.mark.parametrize("build", [lambda: registry.create("digits-cnn", width=8), _Flattening])
def test_inference_in_channels_last_gives_the_default_orders_logits_and_leaves_the_model_as_it_was(build):
    torch.manual_seed(0)
    model = build().eval()
    x = np.random.default_rng(0).normal(size=(2500, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.as_tensor(x)).numpy()
    got = predict_logits(model, x, batch_size=1000)  # three batches
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert all(p.is_contiguous() for p in model.parameters())  # what export and shrinking expect


def test_train_refuses_an_unknown_precision_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", "breast-cancer", "--train-precision", "fp8", "--out", tmp_path / "m.pt"], capsys)
    assert code == 2 and "--train-precision" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "m.pt").exists()


def test_compress_refuses_an_unknown_precision_in_one_line(tmp_path, capsys):
    code, _, err = run_cli(["compress", "model.pt", "--data", "digits", "-p", "3", "--train-precision", "fp8", "--out", tmp_path / "run"],
                           capsys)
    assert code == 2 and "--train-precision" in err and len(err.strip().splitlines()) == 1


def test_inference_inside_training_leaves_the_channels_last_order_training_set(digits_dataset):
    """The Lagrange rule evaluates the model between epochs: its weights stay in the order training gave them."""
    orders = []

    def evaluate(epoch, model):
        predict_logits(model, digits_dataset.x_val, batch_size=100)
        orders.append(model.features[1][0].weight.is_contiguous(memory_format=torch.channels_last))  # 8 -> 16 channels, 3x3

    model = registry.create("digits-cnn", width=8)
    train(model, digits_dataset.x_train, digits_dataset.y_train, TrainConfig(epochs=2), device=torch.device("cpu"), on_epoch_end=evaluate)
    assert orders == [True, True]
    assert all(p.is_contiguous() for p in model.parameters())  # back to the default order when training ends


class _IndexAdding(nn.Module):
    """A forward that adds its activations into an fp32 tensor: cannot run under bf16 autocast."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.fc = nn.Linear(4, 10)

    def forward(self, x):
        h = self.fc(self.conv(x).mean((2, 3)))
        return torch.zeros(h.shape, dtype=torch.float32).index_add_(0, torch.arange(h.shape[0]), h)


def test_auto_falls_back_to_fp32_for_a_forward_that_cannot_run_in_bf16(digits_dataset, monkeypatch):
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: True)
    model = _IndexAdding()
    assert fast_paths.training_dtype(model, digits_dataset.x_train, "auto", torch.device("cpu")) is None
    train(model, digits_dataset.x_train[:256], digits_dataset.y_train[:256], TrainConfig(epochs=1), device=torch.device("cpu"))
    assert predict_logits(model, digits_dataset.x_val, precision="auto").dtype == np.float32


def test_bf16_asked_by_name_for_such_a_forward_is_one_clear_error(digits_dataset):
    from toolchain.errors import UserError

    with pytest.raises(UserError, match=r"--train-precision bf16: the model's forward fails under bf16 autocast \(RuntimeError"):
        train(_IndexAdding(), digits_dataset.x_train[:256], digits_dataset.y_train[:256], TrainConfig(epochs=1, precision="bf16"),
              device=torch.device("cpu"))


class _With5dBuffer(nn.Module):
    """A 2-D conv net holding a 5-D tensor: channels-last order cannot take it."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, padding=1)
        self.register_buffer("scale", torch.ones(1, 4, 1, 1, 1))
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc((self.conv(x).unsqueeze(-1) * self.scale).mean((2, 3, 4)))


def test_inference_keeps_the_default_order_for_a_model_channels_last_cannot_take():
    torch.manual_seed(0)
    model = _With5dBuffer().eval()
    x = np.random.default_rng(0).normal(size=(2500, 1, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(predict_logits(model, x, batch_size=1000), expected, rtol=1e-5, atol=1e-6)


def test_the_probes_give_every_module_its_own_mode_back(monkeypatch):
    """A batch-norm layer a user froze with .eval() inside a model in training mode stays frozen through the
    probes training, counting and tracing run (bf16, channels-last, unused parameters, MACs per layer, the dependency
    graph);
    the root's mode copied onto every module would unfreeze it."""
    from toolchain.models.fast_paths import runs_channels_last, training_dtype
    from toolchain.models.train import _has_unused_parameters
    from toolchain.prune.graph import ChannelGraph
    from toolchain.prune.macs import MacModel

    model = registry.create("fmnist-cnn").train()
    frozen = model.features[0][1]
    frozen.eval()
    x = np.random.default_rng(0).random((4, 1, 28, 28), dtype=np.float32)
    cpu = torch.device("cpu")
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: True)
    training_dtype(model, x, "auto", cpu)
    runs_channels_last(model, x, cpu)
    model.to(memory_format=torch.contiguous_format)
    _has_unused_parameters(model, x, cpu)
    MacModel(model, torch.zeros(1, 1, 28, 28))
    ChannelGraph(model, torch.zeros(1, 1, 28, 28))
    assert not frozen.training
    assert all(m.training for m in model.modules() if m is not frozen)


def _conv_net_with_dropout() -> nn.Module:
    """Batch norm (statistics that move in training), dropout (draws random numbers) and a 3-channel kernel (its
    weights differ between the two memory orders, which a 1-channel one does not)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.5), nn.Conv2d(8, 8, 3), nn.Flatten(),
                         nn.Linear(8 * 4 * 4, 4))


def test_timing_the_arithmetics_leaves_the_model_as_it_was():
    """auto on a GPU times training steps of the model it is about to train: nothing of it may move (weights,
    batch-norm statistics, gradients, memory order, a frozen layer's mode), nor the random state the training draws from."""
    from toolchain.models.fast_paths import step_times

    model = _conv_net_with_dropout().train()
    frozen = model[1]
    frozen.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x = np.random.default_rng(0).random((16, 3, 8, 8), dtype=np.float32)
    rng = torch.get_rng_state()
    ms = step_times(model, x, torch.device("cpu"), batch_size=8, repeats=1, steps=1)
    after = torch.rand(4)
    torch.set_rng_state(rng)
    assert torch.equal(after, torch.rand(4))  # dropout drew inside, from a forked state
    assert set(ms) == {None, torch.bfloat16} and all(0 < v < float("inf") for v in ms.values())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())
    assert not frozen.training and model.training
    assert all(m.weight.is_contiguous() for m in model if isinstance(m, nn.Conv2d))


class _TupleInTraining(nn.Module):
    """Logits in eval mode, (logits, aux) in training mode: training says so in one line; the timing must not crash first."""

    def __init__(self):
        super().__init__()
        self.net = registry.create("digits-cnn", width=4)

    def forward(self, x):
        out = self.net(x)
        return (out, out) if self.training else out


class _Bf16TrainingFails(_TupleInTraining):
    """Logits, except for a training step under bf16 autocast (an op with no bf16 kernel in its backward's path)."""

    def forward(self, x):
        if self.training and torch.is_autocast_cpu_enabled():
            raise RuntimeError("an op with no bf16 kernel")
        return self.net(x)


@pytest.mark.parametrize("model, rows, expected, why", [
    (_TupleInTraining, 300, torch.bfloat16, ""),  # fp32 fails too: the rule holds, training says why
    (_Bf16TrainingFails, 300, None, "its training step does not run under bf16 autocast"),
    (lambda: registry.create("digits-cnn", width=4), 1, torch.bfloat16, "")])  # one row: batch norm cannot train on it
def test_auto_on_a_gpu_falls_back_where_a_timed_step_fails(monkeypatch, model, rows, expected, why):
    from toolchain.models.fast_paths import precision_choice

    monkeypatch.setattr(fast_paths, "TIMED_DEVICES", ("cpu",))
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: True)
    x = np.random.default_rng(0).random((rows, 1, 8, 8), dtype=np.float32)
    assert precision_choice(model(), x, "auto", torch.device("cpu"), batch_size=64) == (expected, why)


@pytest.mark.parametrize("fp32_ms, bf16_ms, expected", [(5.0, 6.0, None), (6.0, 5.0, torch.bfloat16), (5.0, 5.0, None),
                                                       (5.0, 4.9, None), (5.0, 4.75, torch.bfloat16)])
def test_auto_on_a_gpu_keeps_the_arithmetic_whose_steps_were_faster(fp32_ms, bf16_ms, expected, monkeypatch):
    """Measured on an H200: fmnist-cnn's launch-bound steps ran 20% slower in bf16 autocast; auto there times both and keeps
    bf16 only where it is clearly faster (5%: the timing's noise must not decide). Asked for by name, nothing is timed.
    The device timed is faked as the CPU here."""
    from toolchain.models.fast_paths import precision_choice

    monkeypatch.setattr(fast_paths, "TIMED_DEVICES", ("cpu",))
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: True)
    timed = []
    monkeypatch.setattr(fast_paths, "step_times", lambda *a: timed.append(a) or {None: fp32_ms, torch.bfloat16: bf16_ms})
    model, x = registry.create("digits-cnn", width=4), np.zeros((300, 1, 8, 8), np.float32)
    dtype, why = precision_choice(model, x, "auto", torch.device("cpu"), batch_size=64)
    assert dtype is expected and len(timed) == 1
    assert why == f"a training step of 64 rows took {bf16_ms:.2f} ms in bf16 autocast, {fp32_ms:.2f} ms in fp32"
    assert precision_choice(model, x, "bf16", torch.device("cpu"))[0] is torch.bfloat16 and len(timed) == 1
    assert precision_choice(model, x, "fp32", torch.device("cpu"))[0] is None and len(timed) == 1


def test_compress_times_auto_once_and_every_round_and_the_teacher_use_the_choice(monkeypatch, digits_dataset):
    """One arithmetic per run: the rounds and the teacher's logits get the resolved precision, not auto (which would
    time again, and could choose otherwise, each round)."""
    from toolchain.config import PruneConfig
    from toolchain.prune.lottery import LotteryPruner

    monkeypatch.setattr(fast_paths, "TIMED_DEVICES", ("cpu",))
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: True)
    timed, precisions = [], []
    monkeypatch.setattr(fast_paths, "step_times", lambda *a: timed.append(a) or {None: 2.0, torch.bfloat16: 1.0})
    real_train = training.train
    for where in ("toolchain.prune.lottery.train", "toolchain.prune.final.train"):  # the rounds and the final fine-tuning
        monkeypatch.setattr(where, lambda *a, **k: precisions.append(a[3].precision) or real_train(*a, **k))
    torch.manual_seed(0)
    model = registry.create("digits-cnn", width=8)
    train(model, digits_dataset.x_train, digits_dataset.y_train, TrainConfig(epochs=5, lr=1e-2, precision="fp32"), device=torch.device("cpu"))
    lines = []
    config = PruneConfig(keep_params=0.5, rate=0.3, epochs=1, max_fn_increase=5, confidence=0.5, max_accuracy_drop=0.5, device="cpu")
    pruner = LotteryPruner(model, digits_dataset, [3], config, log=lines.append)
    result = pruner.run()
    assert len(timed) == 1 and precisions and set(precisions) == {"bf16"}
    assert result.arithmetic == "bf16 autocast"
    assert result.arithmetic_chosen_by == "a training step of 128 rows took 1.00 ms in bf16 autocast, 2.00 ms in fp32"  # report.json
    assert any(line.startswith("retraining in bf16 autocast: a training step of") for line in lines)


def _timed_pruner(monkeypatch, digits_dataset, faster: str, run_dir=None, calls=None):
    """A LotteryPruner whose auto is timed on this CPU as on a GPU, with ``faster`` the arithmetic the timing favours."""
    from toolchain.config import PruneConfig
    from toolchain.prune.lottery import LotteryPruner

    monkeypatch.setattr(fast_paths, "TIMED_DEVICES", ("cpu",))
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: True)
    ms = {None: 2.0, torch.bfloat16: 1.0} if faster == "bf16" else {None: 1.0, torch.bfloat16: 2.0}
    monkeypatch.setattr(fast_paths, "step_times", lambda *a: (calls if calls is not None else []).append(a) or ms)
    torch.manual_seed(0)
    model = registry.create("digits-cnn", width=8)
    train(model, digits_dataset.x_train, digits_dataset.y_train, TrainConfig(epochs=5, lr=1e-2, precision="fp32"), device=torch.device("cpu"))
    config = PruneConfig(keep_params=0.3, rate=0.5, epochs=1, max_fn_increase=5, confidence=0.5, max_accuracy_drop=0.5, device="cpu")
    return LotteryPruner(model, digits_dataset, [3], config, run_dir=run_dir, log=lambda line: None)


def test_a_resumed_run_keeps_the_arithmetic_its_rounds_were_timed_into(monkeypatch, digits_dataset, tmp_path):
    """A resume timed again, and timings within noise of each other could switch a run from bf16 to fp32 half-way."""
    first = _timed_pruner(monkeypatch, digits_dataset, "bf16", run_dir=tmp_path / "run").run()
    assert first.arithmetic == "bf16 autocast" and len(first.tickets) == 2
    saved = json.loads((tmp_path / "run" / "rounds" / "round_1.json").read_text())["training"]
    assert saved == {"precision": "bf16", "device": "cpu", "timed": True}
    for name in ("round_2.pt", "round_2.json"):
        (tmp_path / "run" / "rounds" / name).unlink()
    calls = []
    again = _timed_pruner(monkeypatch, digits_dataset, "fp32", run_dir=tmp_path / "run", calls=calls).run(resume=True)
    assert again.arithmetic == "bf16 autocast" and calls == []
    assert again.arithmetic_chosen_by == "as the run's earlier rounds were retrained (rounds/round_1.json)"
    fresh = _timed_pruner(monkeypatch, digits_dataset, "fp32", run_dir=tmp_path / "other").run()
    assert fresh.arithmetic == "fp32"  # a new run times anew


def test_a_run_resumed_on_a_cpu_without_bf16_keeps_the_arithmetic_its_rounds_were_made_in(monkeypatch, digits_dataset, tmp_path):
    """auto on a CPU follows the hardware: resumed on one without bf16, rounds 1-2 in bf16 went on in fp32, and the report
    named fp32 alone."""
    from toolchain.config import PruneConfig
    from toolchain.prune.lottery import LotteryPruner

    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: True)  # an AMX machine
    torch.manual_seed(0)
    model = registry.create("digits-cnn", width=8)
    train(model, digits_dataset.x_train, digits_dataset.y_train, TrainConfig(epochs=5, lr=1e-2, precision="fp32"), device=torch.device("cpu"))
    config = PruneConfig(keep_params=0.3, rate=0.5, epochs=1, max_fn_increase=5, confidence=0.5, max_accuracy_drop=0.5, device="cpu")
    first = LotteryPruner(model, digits_dataset, [3], config, run_dir=tmp_path / "run", log=lambda line: None).run()
    assert first.arithmetic == "bf16 autocast" and len(first.tickets) == 2
    assert json.loads((tmp_path / "run" / "rounds" / "round_1.json").read_text())["training"] == {"precision": "bf16", "device": "cpu",
                                                                                                 "timed": False}
    for name in ("round_2.pt", "round_2.json"):
        (tmp_path / "run" / "rounds" / name).unlink()
    monkeypatch.setattr(fast_paths, "native_bf16", lambda device: False)  # resumed on an AVX2 machine
    again = LotteryPruner(model, digits_dataset, [3], config, run_dir=tmp_path / "run", log=lambda line: None).run(resume=True)
    assert again.arithmetic == "bf16 autocast", again.arithmetic
    assert again.arithmetic_chosen_by == ("as the run's earlier rounds were retrained (rounds/round_1.json) (emulated on this CPU, "
                                          "without bf16 in hardware: slower)")
    fresh = LotteryPruner(model, digits_dataset, [3], config, run_dir=tmp_path / "other", log=lambda line: None).run()
    assert fresh.arithmetic == "fp32"  # a new run follows this CPU


def test_under_torchrun_auto_times_a_process_share_of_a_batch(monkeypatch, digits_dataset):
    """Each of N processes steps through batch_size / N rows: the global batch on one GPU is not what it will run."""
    from toolchain import distributed

    calls = []
    pruner = _timed_pruner(monkeypatch, digits_dataset, "bf16", calls=calls)
    monkeypatch.setattr(distributed, "current", lambda: distributed.Group(0, 4, 0, "gloo"))
    monkeypatch.setattr(distributed, "agreed", lambda value: value)
    dtype, why = pruner._arithmetic(resume=False)
    assert dtype is torch.bfloat16 and calls[0][3] == 32 and why.startswith("a training step of 32 rows")
