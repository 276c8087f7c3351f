"""Channel groups, masks, physical removal and dead channels, over every registered architecture."""

from __future__ import annotations

import copy
import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from torch import nn  # noqa: E402

from toolchain.models import registry  # noqa: E402
from toolchain.models.profile import count_macs, count_params, model_bytes_fp32  # noqa: E402
from toolchain.prune.channel_plan import random_plan, validate_plan  # noqa: E402
from toolchain.prune.graph import channel_groups  # noqa: E402
from toolchain.prune.shrink import apply_channel_mask, channel_mask_tensors, dead_channels, shrink  # noqa: E402

# The layer that produces the logits in each built-in net.
CLASSIFIER = {
    "digits-cnn": "classifier",
    "fmnist-cnn": "classifier",
    "mlp": "net.7",
    "tiny-resnet": "fc",
    "tiny-mobilenetv2": "classifier",
    "tiny-concatnet": "fc",
}
# shrunk/dense parameter ratio after removing half the channels of every prunable group (measured:
# digits 0.256, fmnist 0.252, mlp 0.382, resnet 0.256, mobilenetv2 0.306, concatnet 0.507 -- the
# concat branches feeding the grouped conv are kept whole).
MAX_PARAM_RATIO = {
    "digits-cnn": 0.30,
    "fmnist-cnn": 0.30,
    "mlp": 0.45,
    "tiny-resnet": 0.30,
    "tiny-mobilenetv2": 0.35,
    "tiny-concatnet": 0.55,
}
NETS = registry.names()


def _make(name: str, seed: int = 0):
    torch.manual_seed(seed)
    if name == "mlp":
        model, x = registry.create(name, in_features=30, num_classes=2), torch.randn(6, 30)
    elif name == "fmnist-cnn":
        model, x = registry.create(name), torch.randn(2, 1, 28, 28)
    else:
        model, x = registry.create(name), torch.randn(4, 1, 8, 8)
    _randomize_bn(model)
    return model, x


def _randomize_bn(model: nn.Module) -> None:
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.normal_()
                m.running_var.uniform_(0.5, 2.0)
                m.weight.normal_()
                m.bias.normal_()  # a non-zero shift: removed channels must still output exactly 0


def _out(model, x):
    model.eval()
    with torch.no_grad():
        return model(x)


@pytest.mark.parametrize("name", NETS)
def test_every_builtin_passes_the_removal_check(name):
    """compress checks, before pruning, that removing each group's channel computes what zeroing it computes:
    every built-in net must pass (the check would otherwise refuse the product's own models)."""
    from toolchain.prune.shrink import unfollowed_groups

    model, x = _make(name)
    assert unfollowed_groups(model, x[:1] * 0, x) == {}


def test_every_builtin_is_covered():
    for table in (CLASSIFIER, MAX_PARAM_RATIO):
        missing = set(NETS) - set(table)
        assert not missing, (f"a built-in net this file does not know yet: add {sorted(missing)} to CLASSIFIER (its logits' "
                             "layer) and MAX_PARAM_RATIO (measured)")
        assert set(table) <= set(NETS), sorted(set(table) - set(NETS))


@pytest.mark.parametrize("name", NETS)
def test_mask_matches_shrink(name):
    model, x = _make(name)
    dense_out = _out(model, x)
    groups = channel_groups(model, x)
    plan = random_plan(groups, 0.5, seed=1)
    assert plan and json.loads(json.dumps(plan)) == plan

    masked = copy.deepcopy(model)
    apply_channel_mask(masked, plan, x)
    shrunk = shrink(model, plan, x)

    masked_out, shrunk_out = _out(masked, x), _out(shrunk, x)
    assert shrunk_out.shape == dense_out.shape  # classes unchanged
    assert (masked_out - shrunk_out).abs().max().item() <= 1e-5
    ratio = count_params(shrunk) / count_params(model)
    assert ratio <= MAX_PARAM_RATIO[name], ratio
    assert torch.equal(_out(model, x), dense_out)  # shrink works on a copy

    # The rewind copy: same architecture, other weights, same plan -> same shapes.
    other, _ = _make(name, seed=7)
    shrunk_other = shrink(other, plan, x)
    shapes = {k: tuple(v.shape) for k, v in shrunk.state_dict().items()}
    assert shapes == {k: tuple(v.shape) for k, v in shrunk_other.state_dict().items()}
    assert not torch.equal(_out(shrunk_other, x), shrunk_out)


@pytest.mark.parametrize("name", NETS)
def test_classifier_is_never_prunable(name):
    model, x = _make(name)
    training = model.training
    groups = channel_groups(model, x, include_fixed=True)
    assert model.training == training  # building the graph leaves the mode alone
    clf = CLASSIFIER[name]
    for g in groups:
        if g.prunable:
            assert clf not in g.out_layers and g.key != clf
    assert any(g.key == clf and not g.prunable for g in groups)
    with pytest.raises(ValueError):
        validate_plan(groups, {clf: [0]})
    # Even an aggressive plan keeps every class.
    shrunk = shrink(model, random_plan(groups, 0.95, seed=3), x)
    assert _out(shrunk, x).shape == _out(model, x).shape


def test_classifier_behind_log_softmax_is_fixed():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 8, 3)
            self.head = nn.Conv2d(8, 5, 1)

        def forward(self, x):
            return torch.log_softmax(self.head(torch.relu(self.conv(x))).mean((2, 3)), dim=1)

    model, x = Net(), torch.randn(2, 1, 6, 6)
    keys = {g.key for g in channel_groups(model, x)}
    assert keys == {"conv"}


def test_grouped_conv_groups_are_block_aligned():
    model, x = _make("tiny-concatnet")
    groups = {g.key: g for g in channel_groups(model, x, include_fixed=True)}
    grouped = groups["grouped.0"]
    assert grouped.prunable and grouped.blocks == 4 and grouped.block_size == 8
    assert not groups["branch_a.0"].prunable and not groups["branch_b.0"].prunable
    with pytest.raises(ValueError):
        validate_plan(list(groups.values()), {"grouped.0": [0]})  # one block only
    plan = {"grouped.0": grouped.expand_offsets([1, 5])}
    assert plan["grouped.0"] == [1, 5, 9, 13, 17, 21, 25, 29]
    shrunk = shrink(model, plan, x)
    assert shrunk.grouped[0].out_channels == 24 and shrunk.grouped[0].groups == 4


def test_plan_validation_errors():
    model, x = _make("digits-cnn")
    groups = channel_groups(model, x)
    for bad in ({"nope": [0]}, {"features.0.0": [32]}, {"features.0.0": [1, 1]}, {"features.0.0": list(range(32))}):
        with pytest.raises(ValueError):
            shrink(model, bad, x)
    assert validate_plan(groups, {"features.0.0": [3, 1], "features.1.0": []}) == {"features.0.0": [1, 3]}


def test_mask_tensors_keep_removed_weights_at_zero():
    model, x = _make("tiny-resnet")
    groups = channel_groups(model, x)
    plan = random_plan(groups, 0.5, seed=2)
    masks = channel_mask_tensors(model, plan, x)
    params = dict(model.named_parameters())
    assert set(masks) <= set(params)
    assert all(params[k].shape == m.shape for k, m in masks.items())
    # BN weight and bias of the stem lose the same channels as the stem conv.
    removed = plan["stem.0"]
    assert (masks["stem.1.weight"][removed] == 0).all() and (masks["stem.1.bias"][removed] == 0).all()
    # One training step, then re-mask: still exactly the shrunk model's function.
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model(x).sum().backward()
    opt.step()
    with torch.no_grad():
        for k, m in masks.items():
            params[k].mul_(m)
    assert (_out(model, x) - _out(shrink(model, plan, x), x)).abs().max().item() <= 1e-5


def test_dead_channels():
    model, x = _make("digits-cnn")
    conv, bn = model.features[1][0], model.features[1][1]
    assert dead_channels(model, x) == {}
    with torch.no_grad():
        conv.weight[[2, 5, 9]] = 0
        bn.weight[2] = 0
        bn.bias[[2, 5, 9]] = 0  # 2: gamma=0, beta=0 -> dead
        bn.running_mean[5] = 0  # 5: zero input, mean 0, beta 0 -> dead whatever gamma
        bn.running_mean[9] = 0.5  # 9: zero input but mean != 0 -> constant -beta*... != 0: alive
        conv.weight[11] = 0  # 11: zero filter but BN shift non-zero -> a constant, alive
    assert dead_channels(model, x) == {"features.1.0": [2, 5]}
    shrunk = shrink(model, dead_channels(model, x), x)
    assert (_out(model, x) - _out(shrunk, x)).abs().max().item() <= 1e-5

    # A grouped conv channel is only removable with its block partners.
    cat, xc = _make("tiny-concatnet")
    with torch.no_grad():
        for c in (3, 11, 19, 27, 4):
            cat.grouped[0].weight[c] = 0
            cat.grouped[1].bias[c] = 0
            cat.grouped[1].weight[c] = 0
    assert dead_channels(cat, xc) == {"grouped.0": [3, 11, 19, 27]}


def test_masked_random_plan_is_all_dead():
    model, x = _make("tiny-mobilenetv2")
    plan = random_plan(channel_groups(model, x), 0.5, seed=4)
    apply_channel_mask(model, plan, x)
    assert dead_channels(model, x) == plan


def test_profile():
    model = registry.create("fmnist-cnn")
    x = torch.randn(1, 1, 28, 28)
    assert count_params(model) == 241898
    macs = count_macs(model, x)
    assert macs > 0
    shrunk = shrink(model, random_plan(channel_groups(model, x), 0.5), x)
    assert 0 < count_macs(shrunk, x) < macs
    assert model_bytes_fp32(model) >= 4 * count_params(model)
    assert model_bytes_fp32(shrunk) < model_bytes_fp32(model)


def test_macs_are_multiply_accumulates_alone():
    """A reviewer's count of convolutions and linear layers gave 1,788,544 for digits-cnn where cwtool said 1,815,178:
    Torch-Pruning's op counter adds bias adds, normalization, activations and pooling. A functional product counts."""
    from torch import nn

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3, padding=1)
            self.bn, self.up = nn.BatchNorm2d(8), nn.ConvTranspose2d(8, 4, 2, stride=2)
            self.fc = nn.Linear(4, 5)

        def forward(self, x):
            h = self.up(nn.functional.max_pool2d(torch.relu(self.bn(self.conv(x))), 2))  # 8x8 -> 4x4 -> 8x8
            h = self.fc(h.flatten(2).transpose(1, 2))  # the linear layer on each of 64 positions
            return (h.transpose(1, 2) @ h).flatten(1)  # a functional product: 5 x 64 x 5

    expected = 64 * 8 * 3 * 9 + 16 * 8 * 4 * 4 + 64 * 4 * 5 + 5 * 64 * 5
    assert count_macs(Net().eval(), torch.zeros(2, 3, 8, 8)) == expected


def test_macs_of_recurrent_layers_and_of_a_forward_that_takes_gradients():
    """torch's FLOP counter sees nothing of an LSTM's fused kernel (an LSTM classifier counted 32, its linear head
    alone), and its module tracking raised on a forward that runs autograd itself (compress would have ended in exit 3)."""
    from torch import nn

    class Recurrent(nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm, self.fc = nn.LSTM(8, 16, batch_first=True), nn.Linear(16, 2)

        def forward(self, x):
            return self.fc(self.lstm(x)[0][:, -1])

    assert count_macs(Recurrent().eval(), torch.zeros(2, 5, 8)) == 5 * (4 * 16 * 8 + 4 * 16 * 16) + 16 * 2
    gru = Recurrent()
    gru.lstm = nn.GRU(8, 16, batch_first=True)  # its matrix products run where the counter sees them: counted once
    assert count_macs(gru.eval(), torch.zeros(2, 5, 8)) == 5 * (3 * 16 * 8 + 3 * 16 * 16) + 16 * 2

    class Gradients(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 2)

        def forward(self, x):
            with torch.enable_grad():
                x = x.clone().requires_grad_(True)
                (g,) = torch.autograd.grad(self.fc(x).sum(), x)
            return self.fc(g)

    assert count_macs(Gradients().eval(), torch.zeros(2, 4)) > 0
