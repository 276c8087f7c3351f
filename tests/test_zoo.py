"""The mobile architectures (pytorchcv definitions, toolchain.models.zoo) at 64 px: each prunes to about half
its parameters with channels physically removed, exports and runs; a channel shuffle is kept whole; an
operation the dependency graph cannot follow is refused with exit 2. Generated images only.

The default suite shrinks and exports (ONNX) every architecture in seconds; the whole pipeline (compress
with int8, ONNX and TFLite, then verify) runs per architecture under -m slow (30-60 s each: litert-torch's
conversions dominate)."""

from __future__ import annotations

import copy
import importlib.util
import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torch_pruning")

from toolchain.errors import UserError  # noqa: E402
from toolchain.models import registry  # noqa: E402
from toolchain.models.profile import count_params  # noqa: E402
from toolchain.prune.graph import ChannelGraph  # noqa: E402
from clirun import run_cli, trained_briefly  # noqa: E402

MOBILE = sorted(registry.MOBILE)
# scripts/bootstrap installs pytorchcv (--no-deps); the shuffle tests below need only torch
needs_pytorchcv = pytest.mark.skipif(importlib.util.find_spec("pytorchcv") is None, reason="pytorchcv is not installed")
SIZE = 64  # px: every net's five stride-2 stages leave 2x2
CLASSES = 3

# A user's net around a channel shuffle: in a module of its own (kept whole) or inline (refused).
SHUFFLE_NET = '''
import torch
from torch import nn


def shuffle(x, groups=2):
    n, c, h, w = x.shape
    return x.view(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class Shuffle(nn.Module):
    def forward(self, x):
        return shuffle(x)


def block(cin, cout):
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())


class Net(nn.Module):
    inline = False

    def __init__(self, num_classes=3):
        super().__init__()
        self.stem = block(3, 16)
        self.left, self.right = block(16, 16), nn.Sequential(block(16, 24), block(24, 16))
        self.shuffle = Shuffle()
        self.head = block(32, 32)
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], 1)
        x = shuffle(x) if self.inline else self.shuffle(x)
        return self.fc(self.head(x).mean((2, 3)))


class InlineNet(Net):
    inline = True
'''


# A user's net whose forward uses channels by position through an index the dependency graph does not see.
INDEXED_NET = '''
import torch
from torch import nn


class Squeeze(nn.Module):
    """conv2's 16 channels are summed into 8 by a fixed index: the graph maps 16 onto fc's 8 inputs."""

    width = 8

    def __init__(self, num_classes=3):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.bn = nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1)
        self.register_buffer("idx", self.index())
        self.fc = nn.Linear(self.width, num_classes)

    def index(self):
        return torch.arange(16) % 8

    def forward(self, x):
        h = torch.relu(self.conv2(torch.relu(self.bn(self.conv(x))))).mean((2, 3))
        return self.fc(torch.zeros(h.shape[0], self.width).index_add_(1, self.idx, h))


class Permuted(Squeeze):
    """The same with a permutation of 16: the graph looks sound, a removal no longer fits the index."""

    width = 16

    def index(self):
        return torch.randperm(16, generator=torch.Generator().manual_seed(0))


class Flipped(Squeeze):
    """conv's channels reversed before conv2: a removal would pair conv2's weights with the wrong channels."""

    width = 16

    def forward(self, x):
        h = torch.relu(self.bn(self.conv(x))).flip(1)
        return self.fc(torch.relu(self.conv2(h)).mean((2, 3)))
'''


def _mobile(name: str, seed: int = 0):
    torch.manual_seed(seed)
    return registry.create(name, num_classes=CLASSES).eval()


def _images(n: int = 2, size: int = SIZE, seed: int = 0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _out(model, x):
    with torch.no_grad():
        return model.eval()(x)


@pytest.fixture(scope="module")
def shuffle_net_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "shuffle_net.py"
    path.write_text(SHUFFLE_NET)
    return path


@pytest.fixture(scope="module")
def small_images_npz(tmp_path_factory):
    """90 generated 16-px RGB images, 3 classes (stripes across, stripes down, rings)."""
    x, y = _patterns(30, 16, seed=1)
    path = tmp_path_factory.mktemp("data") / "patterns16.npz"
    np.savez(path, x=x, y=y)
    return path


def _patterns(per_class: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Smooth class patterns with random frequency, phase, colour and noise: float32 NCHW in 0..1."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    xs, ys = [], []
    for c in range(CLASSES):
        for _ in range(per_class):
            f, ph = rng.uniform(2, 5), rng.uniform(0, 2 * np.pi)
            base = (np.sin(2 * np.pi * f * xx + ph), np.sin(2 * np.pi * f * yy + ph),
                    np.sin(2 * np.pi * f * np.hypot(xx - 0.5, yy - 0.5) + ph))[c]
            rgb = np.stack([base * rng.uniform(0.5, 1) for _ in range(3)]) + rng.normal(0, 0.3, (3, size, size))
            xs.append(np.clip(rgb * 0.25 + 0.5, 0, 1))
            ys.append(c)
    return np.asarray(xs, np.float32), np.asarray(ys, np.int64)


# ---------------------------------------------------------------- registry


def test_the_mobile_architectures_are_registered_apart_from_the_small_nets():
    from toolchain.models.arch import resolve_arch

    assert MOBILE == ["efficientnet-b0", "mobilenetv2", "mobilenetv3-large", "resnet18", "resnet50", "shufflenetv2"]
    assert not set(MOBILE) & set(registry.names())  # the 8x8 tests over names() stay on the small nets
    assert set(MOBILE) <= set(registry.names(mobile=True))
    assert all(registry.is_registered(n) and callable(resolve_arch(n)) for n in MOBILE)


@needs_pytorchcv
@pytest.mark.parametrize("name", ["mobilenetv2", "resnet18"])
def test_any_input_channels_and_size(name):
    """Grayscale in, 96 px: the AdaptiveAvgPool2d stands in for pytorchcv's 224-px AvgPool2d(7)."""
    model = registry.create(name, num_classes=5, in_channels=1)
    assert _out(model, torch.randn(2, 1, 96, 96)).shape == (2, 5)


# ---------------------------------------------------------------- shrink and export, every architecture


@needs_pytorchcv
@pytest.mark.parametrize("name", MOBILE)
def test_prunes_about_half_exports_and_reloads(name, tmp_path):
    """The plan search's target of half the parameters, channels physically removed, the same function as
    the masked model, the classes kept; the ONNX file computes it; the checkpoint rebuilds it."""
    from toolchain.export.onnx import export_onnx
    from toolchain.models.loading import load_model, save_checkpoint
    from toolchain.prune.importance import magnitude_scores
    from toolchain.prune.plan import plan_for_target
    from toolchain.prune.shrink import apply_channel_mask, shrink
    from toolchain.runtimes import load_runner

    model, x = _mobile(name), _images()
    dense = count_params(model)
    graph = ChannelGraph(model, x[:1])
    plan = plan_for_target(graph, magnitude_scores(graph), dense // 2)
    small = shrink(model, plan, x[:1])
    assert 0.40 * dense <= count_params(small) == graph.count_params(plan) <= 0.50 * dense

    masked = copy.deepcopy(model)
    apply_channel_mask(masked, plan, x[:1])
    got = _out(small, x)
    assert got.shape == (2, CLASSES)
    assert (got - _out(masked, x)).abs().max().item() <= 1e-4 * max(1.0, got.abs().max().item())

    onnx_file = export_onnx(small, x[:1], tmp_path / "small.onnx")
    from_onnx = load_runner(onnx_file).predict(x.numpy())
    assert np.allclose(from_onnx, got.numpy(), rtol=1e-3, atol=1e-4)

    save_checkpoint(tmp_path / "small.pt", small, name, {"num_classes": CLASSES}, (3, SIZE, SIZE), channel_plan=plan)
    assert torch.equal(_out(load_model(tmp_path / "small.pt").module, x), got)


# ---------------------------------------------------------------- channel shuffle


@needs_pytorchcv
def test_shufflenet_keeps_the_channels_through_its_shuffles_whole():
    """Torch-Pruning's graph build divides by zero on the shuffle; cwtool builds it again with each
    ChannelShuffle opaque. The channels entering a shuffle (each unit's output convs, through the concat)
    are fixed and say why; the channels inside each branch stay prunable."""
    model = _mobile("shufflenetv2")
    rng = torch.get_rng_state()
    graph = ChannelGraph(model, _images(1))
    assert torch.equal(torch.get_rng_state(), rng)  # the probe for channel movers draws from its own generator
    assert len(graph.kept_whole) == 16 and all("c_shuffle (ChannelShuffle)" in d for d in graph.kept_whole)
    groups = {g.key: g for g in graph.all_groups}
    into_shuffle = [k for k in groups if k.endswith(("expand_conv3", "expand_conv5"))]
    assert len(into_shuffle) == 16 + 3  # each unit's branch, and the other branch of each stage's first unit
    for key in into_shuffle:
        assert not groups[key].prunable and "c_shuffle" in groups[key].reason and "kept whole" in groups[key].reason
    inside = [k for k in groups if k.endswith("compress_conv1")]
    assert len(inside) == 16 and all(groups[k].prunable for k in inside)
    assert groups["features.final_block.conv"].prunable and not groups["output"].prunable


def test_a_one_channel_conv_is_not_called_a_depthwise_conv():
    """Conv2d(16, 1, 1), an attention map broadcast over the channels (CBAM-style), was kept whole as a "channel-multiplier
    depthwise conv" (groups == out_channels holds for groups=1, out=1): the reason named the wrong operation."""
    class SpatialGate(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.gate = torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.Conv2d(16, 1, 1)
            self.c2, self.fc = torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.Linear(32, 10)

        def forward(self, x):
            x = torch.relu(self.c1(x))
            x = x + torch.sigmoid(self.gate(x))
            return self.fc(torch.relu(self.c2(x)).mean((2, 3)))

    groups = {g.key: g for g in ChannelGraph(SpatialGate().eval(), torch.randn(1, 1, 8, 8)).all_groups}
    assert not groups["c1"].prunable and "depthwise" not in groups["c1"].reason and "gate" in groups["c1"].reason
    assert groups["c2"].prunable


@pytest.mark.parametrize("ending, said", [("softmax", "a softmax ends its forward"), ("sigmoid", "a sigmoid \\(or a ReLU before a pooling\\) ends"),
                                           ("temperature", "an operation after its classifier changes the logits"),
                                           ("relu", "a ReLU \\(or a clamp\\) ends its forward"),
                                           ("sharp softmax", "a softmax ends its forward")])
def test_a_model_that_does_not_end_in_its_logits_is_refused_naming_what_ends_it(ending, said):
    """A softmax at the end of a forward is common; the refusal said only that the logits came from no layer cwtool can
    move, never that the softmax (or a division by a temperature) was the reason (a reviewer's model zoo)."""
    from toolchain.prune.preflight import check_before_pruning

    class Ending(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1, self.fc = torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.Linear(8, 10)

        def forward(self, x):
            logits = self.fc(torch.relu(self.c1(x)).mean((2, 3)))
            if ending == "softmax":
                return torch.softmax(logits, 1)
            if ending == "sharp softmax":  # probabilities that underflow to 0 had been read as a ReLU's clipping
                return torch.softmax(200 * logits, 1)
            if ending == "relu":  # the protected class's logit is positive on a row of zeros: that row alone let it pass
                return torch.relu(logits + 0.5 * torch.nn.functional.one_hot(torch.tensor(3), 10))
            return torch.sigmoid(logits) if ending == "sigmoid" else logits / 2.0

    torch.manual_seed(0)
    with pytest.raises(UserError, match=said):
        check_before_pruning(Ending().eval(), (1, 8, 8), [3])


def test_a_model_ending_in_a_relu_is_refused_even_where_a_row_of_zeros_passes():
    """The offset check read one row of zeros: where the protected logit is positive there, a ReLU after the classifier
    passes the offset through, and the model was taken; on other rows the ReLU clips it (a reviewer of the refusals)."""
    from toolchain.prune.preflight import check_before_pruning

    hidden, head = torch.nn.Linear(64, 16), torch.nn.Linear(16, 10)
    with torch.no_grad():
        for layer in (hidden, head):
            layer.weight.zero_()
            layer.bias.zero_()
        hidden.weight[0] = 1.0  # hidden 0: the sum of the pixels, clipped at 0
        head.bias[3], head.weight[3, 0] = 0.5, -1.0  # class 3: 0.5 on a row of zeros, 0 once the pixels sum above 0.5
    model = torch.nn.Sequential(torch.nn.Flatten(), hidden, torch.nn.ReLU(), head, torch.nn.ReLU()).eval()
    with pytest.raises(UserError, match="a ReLU \\(or a clamp\\) ends its forward"):
        check_before_pruning(model, (1, 8, 8), [3])


def test_a_bias_free_model_scaled_after_its_classifier_is_not_called_a_sigmoid():
    """The diagnosis ran the model on one row of zeros: a model with no biases answers it with zeros, "all in [0, 1]",
    and a temperature after its classifier was called a sigmoid (a reviewer of the refusal)."""
    from toolchain.prune.preflight import check_before_pruning

    class Scaled(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = torch.nn.Conv2d(1, 8, 3, padding=1, bias=False)
            self.fc = torch.nn.Linear(8, 10, bias=False)

        def forward(self, x):
            return self.fc(torch.relu(self.c1(x)).mean((2, 3))) / 2.0

    torch.manual_seed(0)
    with pytest.raises(UserError, match="an operation after its classifier changes the logits"):
        check_before_pruning(Scaled().eval(), (1, 8, 8), [3])


def test_a_model_with_no_hidden_channels_is_refused_in_words():
    """A single Linear layer (a logistic regression) was refused with "every channel group is kept whole ()"."""
    from toolchain.prune.preflight import check_before_pruning

    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)).eval()
    with pytest.raises(UserError, match="it has no hidden channels") as refused:
        check_before_pruning(model, (1, 8, 8), [3])
    assert "()" not in str(refused.value) and "--granularity weight" in str(refused.value)


def test_a_torch_export_archive_is_named_as_one(tmp_path, capsys):
    """torch.export.save's archive was "not a PyTorch checkpoint (RuntimeError)", or under --trust-model torch's "your
    checkpoint file is corrupted": the file is sound, and what to save instead was not said (a reviewer's model zoo)."""
    from clirun import run_cli

    model = registry.create("digits-cnn").eval()
    path = tmp_path / "digits.pt2"
    torch.export.save(torch.export.export(model, (torch.randn(1, 1, 8, 8),)), path)
    for extra in ([], ["--trust-model"]):
        code, _, err = run_cli(["evaluate", path, "--arch", "digits-cnn", "--data", "digits", "-p", "3", *extra], capsys)
        assert code == 2 and "is a torch.export archive" in err and "state_dict" in err and len(err.strip().splitlines()) == 1, err


def test_a_models_own_forward_error_is_not_taken_for_the_graphs():
    class Broken(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 4, 3)

        def forward(self, x):
            raise ValueError("the model's own bug")

    with pytest.raises(ValueError, match="own bug"):
        ChannelGraph(Broken(), _images(1, 8))


def test_an_inline_channel_shuffle_is_refused_naming_the_operation(shuffle_net_file, small_images_npz, tmp_path, capsys):
    """A shuffle written inline in forward has no module to keep whole: exit 2, never an internal error.
    (Torch-Pruning builds a graph for this one without complaint, mapping channel i to channel i: a removal
    would then break the view, exit 3, or pair the head's weights with the wrong channels.)"""
    spec = importlib.util.spec_from_file_location("shuffle_net_inline", shuffle_net_file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    with pytest.raises(UserError, match=r"splits the channel dimension .* at shuffle_net.py:8 in shuffle"):
        ChannelGraph(module.InlineNet().eval(), torch.randn(1, 3, 16, 16))

    torch.save(module.InlineNet().state_dict(), tmp_path / "inline.pt")
    code, _, err = run_cli(["compress", tmp_path / "inline.pt", "--arch", f"{shuffle_net_file}:InlineNet", "--data", small_images_npz,
                            "-p", "0", "--keep-params", "0.5", "--epochs", "1", "--skip-export", "--out", tmp_path / "run"], capsys)
    assert code == 2, err
    assert "channel shuffle" in err and "Traceback" not in err


def test_a_channel_shuffle_model_compresses_with_the_shuffled_channels_whole(shuffle_net_file, small_images_npz, tmp_path, capsys):
    torch.manual_seed(0)
    from toolchain.models.arch import resolve_arch

    arch = f"{shuffle_net_file}:Net"
    model = _learnt(resolve_arch(arch)(), small_images_npz)
    torch.save(model.state_dict(), tmp_path / "net.pt")
    code, _, err = run_cli(["compress", tmp_path / "net.pt", "--arch", arch, "--data", small_images_npz, "-p", "0",
                            "--keep-params", "0.5", "--epochs", "1", "--skip-export", "--out", tmp_path / "run"], capsys)
    assert code in (0, 1), err  # 1: the gate's verdict on a net trained a few seconds; never 2 or 3
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    assert shrunk["params"] <= 0.5 * count_params(model)
    # left and right.1 feed the shuffle through the concat: kept; the stem, right.0 and the head are pruned
    assert set(shrunk["channel_plan"]) <= {"stem.0", "right.0.0", "head.0"} and "right.0.0" in shrunk["channel_plan"]


@pytest.fixture(scope="module")
def indexed_net_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("arch") / "indexed_net.py"
    path.write_text(INDEXED_NET)
    return path


def _learnt(model, npz):
    """``model`` trained on the patterns: compress refuses a model that detects nothing of the protected class."""
    from toolchain.data import load_data

    return trained_briefly(model, load_data(str(npz), seed=0), epochs=30)


def _indexed(path, name: str):
    from toolchain.models.arch import resolve_arch

    torch.manual_seed(0)
    return resolve_arch(f"{path}:{name}")().eval()


def test_channels_squeezed_by_an_index_into_a_smaller_layer_are_kept_whole(indexed_net_file, small_images_npz, tmp_path, capsys):
    """Torch-Pruning maps conv2's 16 channels onto fc's 8 inputs (the index_add_ is invisible to it): scoring them
    used to end in an internal error. The group is kept whole, said in the log and the report; conv stays prunable."""
    groups = {g.key: g for g in ChannelGraph(_indexed(indexed_net_file, "Squeeze"), torch.zeros(1, 3, 16, 16)).all_groups}
    assert groups["conv"].prunable
    assert not groups["conv2"].prunable and "reach fc, which has 8" in groups["conv2"].reason and not groups["conv2"].output
    assert groups["fc"].output

    torch.save(_learnt(_indexed(indexed_net_file, "Squeeze"), small_images_npz).state_dict(), tmp_path / "squeeze.pt")
    code, _, err = run_cli(["compress", tmp_path / "squeeze.pt", "--arch", f"{indexed_net_file}:Squeeze", "--data", small_images_npz,
                            "-p", "0", "--keep-params", "0.7", "--epochs", "1", "--skip-export", "--out", tmp_path / "run"], capsys)
    assert code in (0, 1), err  # 1: the gate's verdict on a net trained a few seconds
    shrunk = next(s for s in json.loads((tmp_path / "run" / "report.json").read_text())["stages"] if s["stage"] == "shrunk")
    assert list(shrunk["kept_whole"]) == ["conv2"] and set(shrunk["channel_plan"]) == {"conv"}
    assert "1 channel group kept whole: 1 group (its 16 channels reach fc" in (tmp_path / "run" / "compress.log").read_text()
    assert "Channels kept whole" in (tmp_path / "run" / "report.md").read_text()


@pytest.mark.parametrize("name, key, other", [("Permuted", "conv2", "conv"), ("Flipped", "conv", "conv2")])
def test_channels_used_by_position_are_found_and_kept_whole(indexed_net_file, small_images_npz, tmp_path, capsys, name, key, other):
    """A removal that does not compute what zeroing the channel computes (the shrunk net no longer runs, or pairs
    weights with the wrong channels) is found on the dense model before pruning: that group is kept whole and named,
    the others are pruned, and the shipped model loads and computes what the report says."""
    from toolchain.prune.shrink import unfollowed_groups

    model = _indexed(indexed_net_file, name)
    found = unfollowed_groups(model, torch.zeros(1, 3, 16, 16), torch.randn(4, 3, 16, 16))
    assert list(found) == [key]

    torch.save(_learnt(model, small_images_npz).state_dict(), tmp_path / "net.pt")
    code, _, err = run_cli(["compress", tmp_path / "net.pt", "--arch", f"{indexed_net_file}:{name}", "--data", small_images_npz,
                            "-p", "0", "--keep-params", "0.7", "--epochs", "1", "--format", "onnx", "--out", tmp_path / "run"], capsys)
    assert code in (0, 1), err  # 1: the gate's verdict on a net trained a few seconds (LiteRT runs no index_add_: ONNX only)
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    assert list(shrunk["kept_whole"]) == [key] and "does not give the model that zeroing it gives" in shrunk["kept_whole"][key]
    assert set(shrunk["channel_plan"]) == {other}
    code, out, err = run_cli(["evaluate", tmp_path / "run" / "pruned.pt", "--arch", f"{indexed_net_file}:{name}", "--data", small_images_npz,
                              "-p", "0", "--split", "test"], capsys)
    assert code == 0, err
    assert f"accuracy {100 * shrunk['test']['accuracy']:.2f}%" in out


def test_a_model_whose_groups_remove_exactly_only_alone_is_refused(monkeypatch):
    """Each group's removal alone computes what zeroing computes, all of them together do not: no set of whole groups
    is known to be safe, so compress refuses (exit 2) rather than guess."""
    from toolchain.models import registry
    from toolchain.prune import shrink

    monkeypatch.setattr(shrink, "_removal_differs", lambda model, plan, *a, **k: "the outputs differ by up to 1" if len(plan) > 1 else "")
    with pytest.raises(UserError, match="though each alone does"):
        shrink.unfollowed_groups(registry.create("digits-cnn").eval(), torch.zeros(1, 1, 8, 8), torch.randn(4, 1, 8, 8))


# ---------------------------------------------------------------- the whole pipeline, every architecture


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """An ImageFolder of 120 generated 64-px PNGs, 3 classes."""
    from PIL import Image

    x, y = _patterns(40, SIZE, seed=2)
    root = tmp_path_factory.mktemp("images")
    for i, (img, c) in enumerate(zip(x, y)):
        folder = root / f"class{c}"
        folder.mkdir(exist_ok=True)
        Image.fromarray((img.transpose(1, 2, 0) * 255).round().astype(np.uint8)).save(folder / f"{i}.png")
    return root


@needs_pytorchcv
@pytest.mark.slow
@pytest.mark.parametrize("name", MOBILE)
def test_compress_and_verify_each_architecture(name, image_folder, tmp_path, capsys):
    """compress to half the parameters (one round, one epoch), int8 and fp32 ONNX and TFLite files each
    re-run on test, then `cwtool verify` on the files against the report's baseline."""
    from toolchain.models.loading import save_checkpoint

    model = _mobile(name)
    save_checkpoint(tmp_path / "dense.pt", model, name, {"num_classes": CLASSES}, (3, SIZE, SIZE))
    run = tmp_path / "run"
    code, _, err = run_cli(["compress", tmp_path / "dense.pt", "--data", image_folder, "-p", "0", "--keep-params", "0.5",
                            "--epochs", "1", "--calibration-size", "32", "--out", run], capsys)
    assert code in (0, 1), err  # 1: the gate's verdict on an untrained net; never 2 or 3
    report = json.loads((run / "report.json").read_text())
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    assert 0.40 * count_params(model) <= shrunk["params"] <= 0.50 * count_params(model)
    kinds = {(a["format"], a["precision"]) for a in report["artifacts"]}
    assert kinds == {("onnx", "fp32"), ("onnx", "int8"), ("tflite", "fp32"), ("tflite", "int8")}
    assert all(a["evaluation"]["n"] > 0 and a["agreement"] is not None for a in report["artifacts"])

    files = [run / a["path"] for a in report["artifacts"]]
    code, out, err = run_cli(["verify", *files, "--data", image_folder, "-p", "0", "--baseline", run / "report.json"], capsys)
    assert code in (0, 1), err
    assert all(f.name in out + err for f in files)


@needs_pytorchcv
@pytest.mark.slow
def test_shufflenet_s_int8_search_passes_over_a_float_layer_litert_refuses(tmp_path):
    """The real converter: shufflenetv2's stage2.unit1.compress_conv1 in float beside int8 layers is refused by litert-torch
    ('tfl.pad' op quantization parameters violate the same scale constraint), and the search for float layers went on to
    end the run in exit 2; it now leaves that layer int8 and keeps another in float."""
    from toolchain.errors import ConverterRefused
    from toolchain.export.tflite import export_tflite
    from toolchain.quantize.fallback import fn_aware_quantize

    pytest.importorskip("litert_torch")
    model, x = _mobile("shufflenetv2"), _images(1)
    calibration = _images(8, seed=1).numpy()
    refused, other = "features.stage2.unit1.compress_conv1", "features.stage1.unit1.compress_conv1"
    build = lambda excluded, dest: export_tflite(model, x, dest, "int8", "NHWC", calibration, float_modules=list(excluded),
                                                 num_classes=CLASSES)
    with pytest.raises(ConverterRefused, match="tfl.pad"):
        build([refused], tmp_path / "alone.tflite")
    calls = []

    def score(path):  # short until the search's own mixes: the refused layer ranked first
        calls.append(path)
        return len(calls) > 2, {0: 0 if len(calls) > 2 else 1}, 0.0, 1.0

    result = fn_aware_quantize(build, score, [refused, other], tmp_path / "w", tmp_path / "q.tflite")
    assert result.within_budget and result.float_layers == [other] and refused in result.reason, result
    assert result.path.is_file()


def test_arch_kwargs_a_built_in_refuses_are_named_with_those_it_takes():
    """"mobilenetv2() got an unexpected keyword argument 'width_scale'" named none it takes (a new user's finding)."""
    from toolchain.errors import UserError
    from toolchain.models.arch import build_arch

    with pytest.raises(UserError, match=r"rejected --arch-kwargs .*'mobilenetv2' takes num_classes, in_channels\)"):
        build_arch("mobilenetv2", {"width_scale": 0.35})


def test_the_groups_kept_whole_are_said_in_one_short_line_grouped_by_why():
    """A ShuffleNetV2's groups kept whole were one log line of 3,000 characters (a new user's finding)."""
    from toolchain.prune.preflight import kept_whole_line

    kept = {f"stage{i}.unit{j}": "its channels pass through shuffle, which reorders them beyond the graph" for i in range(3) for j in range(8)}
    kept["fc_in"] = "its 16 channels reach fc, which has 8"
    line = kept_whole_line(kept)
    assert line.startswith("25 channel groups kept whole: 24 groups (its channels pass through shuffle") and "and 21 more" in line, line
    assert line.endswith("; 1 group (its 16 channels reach fc, which has 8): fc_in") and len(line) < 300, line
    # a ShuffleNetV2's reasons each name their own shuffle: a few reasons, then a count (2,747 characters before)
    own = {f"stage{i}.unit{j}": f"its channels pass through stage{i}.unit{j}.c_shuffle (ChannelShuffle), which reorders them"
           for i in range(3) for j in range(7)}
    line = kept_whole_line(own)
    assert line.endswith("; 18 more for 18 other reasons (report.md lists them)") and len(line) < 600, line
