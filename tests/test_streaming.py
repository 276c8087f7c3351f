"""Streaming data: splits read on demand (ImageFolder decoded per sample, large .npz members memory-mapped),
standard image preprocessing recorded where the device reads it, training augmentation, and batched passes.

The bounded-memory test uses only what the in-memory loader had too (load_data, evaluate_rows, train), so it
fails for the memory it measures, not for a missing name, when the splits are materialized."""

from __future__ import annotations

import json
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from clirun import run_cli
from toolchain.data import load_data
from toolchain.errors import UserError

PIL = pytest.importorskip("PIL")


def image_folder(root: Path, n: int, size: int, seed: int = 0, ext: str = "png", aspect: float = 1.0) -> Path:
    """``n`` RGB images (2 classes; class 1 has a bright square) of ``size`` px high, in an ImageFolder."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width = int(round(size * aspect))
    for i in range(n):
        c = i % 2
        folder = root / f"class{c}"
        folder.mkdir(parents=True, exist_ok=True)
        img = rng.integers(0, 120, (size, width, 3), dtype=np.uint8)
        if c:
            img[size // 4 : 3 * size // 4, width // 4 : 3 * width // 4] += 120
        Image.fromarray(img).save(folder / f"{i:05d}.{ext}")
    return root


def _learnt_cnn(folder: Path, **preprocessing):
    """A small RGB digits-cnn trained a few seconds on ``folder`` (compress refuses a model that detects nothing)."""
    import torch

    from clirun import trained_briefly
    from toolchain.models import registry

    torch.manual_seed(0)  # its starting weights: from whatever state the tests before left (one start in ten learnt the
    # normalized images so well that the unnormalized ones passed too, and a test of that failure failed alone)
    model = registry.create("digits-cnn", in_channels=3, num_classes=2, width=8)
    return trained_briefly(model, load_data(str(folder), seed=0, **preprocessing), epochs=30)


def as_npz(folder: Path, path: Path, compressed: bool = False) -> Path:
    """The same images and labels as an .npz of uint8 NHWC rows, in the ImageFolder's own order."""
    from PIL import Image

    files = sorted(folder.glob("*/*.png"))
    x = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    y = np.array([int(f.parent.name[-1]) for f in files])
    (np.savez_compressed if compressed else np.savez)(path, x=x, y=y)
    return path


def rows(x) -> np.ndarray:
    """Every row of x as one array (small test data only)."""
    return np.concatenate([x[i : i + 7] for i in range(0, len(x), 7)])


# --------------------------------------------------------------------------- memory does not follow the image count


def test_streaming_image_folder_keeps_peak_memory_bounded(tmp_path, monkeypatch):
    """400 images of 64x64 RGB are 19.7 MB as float32. Loading them, evaluating a model on the test split and
    training an epoch must never hold more than a few batches: the peak traced by tracemalloc (numpy's arrays)
    stays under 6 MB, and the files are opened for their headers once and then only for the rows read."""
    import torch
    from PIL import Image

    from toolchain.evaluate import evaluate_rows
    from toolchain.models.train import TrainConfig, train

    folder = image_folder(tmp_path / "imgs", 400, 64)
    full = 400 * 3 * 64 * 64 * 4
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3, stride=4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                                torch.nn.Flatten(), torch.nn.Linear(4, 2))

    def flow(data):
        ds = load_data(str(data), seed=0)
        x, y = ds.split("test")
        result = evaluate_rows(model, x, y, ds.class_names, ["1"])
        train(model, ds.x_train, ds.y_train, TrainConfig(epochs=1, batch_size=32, seed=0))
        return result, y

    flow(image_folder(tmp_path / "warm", 20, 8))  # the modules' first imports allocate too: done before tracing
    opened = []
    real_open = Image.open
    monkeypatch.setattr(Image, "open", lambda fp, *a, **k: opened.append(fp) or real_open(fp, *a, **k))
    tracemalloc.start()
    try:
        result, y = flow(folder)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.metrics["n"] == len(y) == 60
    assert peak < 6_000_000 < full / 3, f"peak {peak:,} bytes of {full:,} for every image"
    # headers once (400), the test rows for the logits and their hash (2 x 60), the train rows once (280)
    assert len(opened) <= 400 + 2 * 60 + 280 + 10, len(opened)


def test_image_folder_splits_hold_paths_and_read_any_rows(tmp_path):
    from toolchain.data.samples import batches, held_bytes

    folder = image_folder(tmp_path / "imgs", 40, 16)
    ds = load_data(str(folder), seed=0)
    for x in (ds.x_train, ds.x_val, ds.x_test):
        assert not isinstance(x, np.ndarray) and x.dtype == np.float32 and held_bytes(x) < 10_000
    with pytest.raises(TypeError, match="read it in batches"):
        np.asarray(ds.x_train)
    x = ds.x_train
    every = rows(x)
    assert every.shape == (len(x), 3, 16, 16) and every.dtype == np.float32
    assert np.array_equal(x[[3, 1, 3]], every[[3, 1, 3]]) and np.array_equal(x[2], every[2]) and np.array_equal(x[-1], every[-1])
    assert np.array_equal(x[2:5], every[2:5]) and np.array_equal(np.concatenate(list(batches(x, 4))), every)
    mask = np.zeros(len(x), bool)
    mask[[0, 5]] = True
    assert np.array_equal(x[mask], every[[0, 5]])
    xa, ya = ds.split("all")
    assert len(xa) == len(ya) == 40 and not isinstance(xa, np.ndarray)
    assert np.array_equal(xa[len(x) : len(x) + 2], rows(ds.x_val)[:2])


# --------------------------------------------------------------------------- memory-mapped .npz


def test_a_slice_of_lazy_rows_reads_its_own_rows_without_a_range_of_them_all():
    """x[a:b] built every row's number first: each batch cost as much as the whole split (8M mapped rows took 88 s to walk,
    15M rows 15 minutes to evaluate). A trillion rows would need 8 TB for that range."""
    from toolchain.data.samples import Samples, batches

    class Rows(Samples):
        def __init__(self, n):
            self.shape = (n, 2)

        def read(self, index):
            return np.stack([index % 1000, index // 1000 % 1000], axis=1).astype(np.float32)  # exact in float32

    huge = Rows(10**12)
    assert huge[5:8][:, 0].tolist() == [5, 6, 7] and huge[-2:].tolist() == [[998, 999], [999, 999]]
    small = Rows(10)
    for key in (slice(None), slice(2, 8), slice(8, 2, -1), slice(-3, None), slice(None, None, 3), slice(20, 30), slice(-20, 3)):
        assert small[key][:, 0].tolist() == list(range(10))[key], key
    assert sum(len(b) for b in batches(Rows(3000))) == 3000


@pytest.mark.parametrize("given_splits", [False, True])
def test_large_npz_members_are_mapped_and_read_like_the_in_memory_path(tmp_path, monkeypatch, given_splits):
    from toolchain.data import mapped

    rng = np.random.default_rng(1)
    f = tmp_path / "d.npz"
    if given_splits:  # float32 (N, C, H, W): mapped rows are the stored bits
        np.savez(f, x_train=rng.normal(size=(60, 2, 5, 5)).astype(np.float32), y_train=np.arange(60) % 3,
                 x_test=rng.normal(size=(20, 2, 5, 5)).astype(np.float32), y_test=np.arange(20) % 3)
    else:  # uint8 NHWC images: transposed and scaled a batch at a time
        np.savez(f, x=rng.integers(0, 256, (90, 6, 6, 3), dtype=np.uint8), y=np.arange(90) % 3)
    held = load_data(str(f), seed=3)
    monkeypatch.setattr(mapped, "MAP_BYTES", 0)
    streamed = load_data(str(f), seed=3)
    assert isinstance(held.x_train, np.ndarray) and not isinstance(streamed.x_train, np.ndarray)
    assert isinstance(streamed.x_train.base, mapped.Mapped)  # the file's bytes, read a batch at a time, not a copy
    assert "read in place from the file" in streamed.preprocessing.note
    for split in ("train", "val", "test"):
        (xh, yh), (xs, ys) = held.split(split), streamed.split(split)
        assert np.array_equal(yh, ys) and xh.shape == xs.shape
        assert rows(xs).tobytes() == np.ascontiguousarray(xh).tobytes()


def test_compressed_npz_members_are_read_into_memory(tmp_path, monkeypatch):
    from toolchain.data import mapped

    f = tmp_path / "c.npz"
    np.savez_compressed(f, x=np.zeros((30, 4, 4), np.uint8), y=np.arange(30) % 2)
    monkeypatch.setattr(mapped, "MAP_BYTES", 0)
    assert isinstance(load_data(str(f)).x_train, np.ndarray)


def test_verify_rows_of_a_mapped_pool_hash_as_the_array(tmp_path, monkeypatch):
    from toolchain.data import mapped
    from toolchain.data.rows import load_rows
    from toolchain.provenance import rows_sha256

    f = tmp_path / "pool.npz"
    np.savez(f, x=np.random.default_rng(0).integers(0, 256, (50, 7, 7), dtype=np.uint8), y=np.arange(50) % 2)
    x, y, _, _ = load_rows(str(f))
    monkeypatch.setattr(mapped, "MAP_BYTES", 0)
    xm, ym, _, _ = load_rows(str(f))
    assert not isinstance(xm, np.ndarray) and rows_sha256(xm, ym) == rows_sha256(x, y)


# --------------------------------------------------------------------------- lazy ImageFolder = the same data in memory


def test_evaluate_and_compress_on_a_streamed_folder_match_the_same_data_in_memory(tmp_path, capsys):
    from toolchain.models.loading import save_checkpoint
    from toolchain.models.train import seed_everything

    folder = image_folder(tmp_path / "imgs", 120, 16, seed=4)
    npz = as_npz(folder, tmp_path / "same.npz")
    seed_everything(0)
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(folder), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    evals = []
    for data in (folder, npz):
        code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", data, "-p", "1", "--split", "test",
                                "--json", tmp_path / "e.json"], capsys)
        assert code == 0, err
        evals.append(json.loads((tmp_path / "e.json").read_text()))
    assert evals[0]["rows_sha256"] == evals[1]["rows_sha256"] and evals[0]["fn_per_class"] == evals[1]["fn_per_class"]
    assert evals[0]["rows"]["preprocessing"]["color"] == "RGB"

    reports = []
    for data, workers in ((folder, "1"), (npz, "0")):
        out = tmp_path / f"run-{Path(data).name}"
        code, _, err = run_cli(["compress", tmp_path / "m.pt", "--data", data, "-p", "1", "--keep-params", "0.5", "--epochs", "2",
                                "--skip-export", "--time-runs", "0", "--workers", workers, "--out", out], capsys)
        assert code in (0, 1), err
        reports.append(json.loads((out / "report.json").read_text()))
    streamed, held = reports
    assert streamed["data"]["streamed"] and not held["data"]["streamed"]
    for key in ("params", "val"):
        assert [s.get(key) for s in streamed["stages"]] == [s.get(key) for s in held["stages"]]
    assert streamed["baseline"]["test"] == held["baseline"]["test"]


# --------------------------------------------------------------------------- preprocessing


def test_resize_shorter_side_center_crop_and_normalize(tmp_path):
    from PIL import Image

    folder = image_folder(tmp_path / "wide", 8, 20, aspect=1.5)  # 20 x 30 images
    ds = load_data(str(folder), resize=24, image_size=(16, 20), normalize=((0.5,), (0.25,)))
    pre = ds.preprocessing
    assert ds.input_shape == (3, 16, 20) and pre.resize == [24] and pre.crop == [16, 20] and pre.interpolation == "bilinear"
    assert pre.mean == [0.5] * 3 and pre.std == [0.25] * 3 and "shorter side resized to 24" in pre.note
    xa, _ = ds.split("all")
    expected = []
    for f in sorted(folder.glob("*/*.png")):
        a = np.asarray(Image.open(f).convert("RGB").resize((36, 24), Image.BILINEAR), dtype=np.float32)[4:20, 8:28]
        expected.append((a.transpose(2, 0, 1) / np.float32(255) - np.float32(0.5)) / np.float32(0.25))
    for row in rows(xa):  # the split shuffled the files: each row is one of them, resized and cropped as torchvision does
        assert any(np.allclose(row, e, atol=1e-5) for e in expected)


def test_normalize_auto_is_imagenet_for_rgb_of_96px_and_more(tmp_path):
    small = load_data(str(image_folder(tmp_path / "small", 6, 32)))
    big = load_data(str(image_folder(tmp_path / "big", 6, 96)))
    assert small.preprocessing.mean == [] and big.preprocessing.mean == pytest.approx([0.485, 0.456, 0.406])
    assert "ImageNet" in big.preprocessing.note and "--normalize auto" in big.preprocessing.note
    plain = load_data(str(tmp_path / "big"), normalize="none")
    mean, std = (np.array(v, np.float32).reshape(1, 3, 1, 1) for v in ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]))
    assert plain.preprocessing.mean == [] and np.allclose(rows(big.x_test) * std + mean, rows(plain.x_test), atol=1e-6)


@pytest.mark.parametrize("kwargs, match", [
    ({"resize": 10, "image_size": (16, 16)}, "larger than --resize"),
    ({"normalize": ((0.5, 0.5), (1.0, 1.0))}, "one per channel"),
])
def test_image_option_errors(tmp_path, kwargs, match):
    folder = image_folder(tmp_path / "f", 6, 12)
    with pytest.raises(UserError, match=match):
        load_data(str(folder), **kwargs)


def test_image_options_refused_on_other_data(tmp_path):
    with pytest.raises(UserError, match="--resize only applies to an ImageFolder"):
        load_data("digits", resize=8)
    with pytest.raises(UserError, match="--normalize only applies"):
        load_data("digits", normalize="imagenet")
    with pytest.raises(UserError, match="--image-size only applies"):  # it was taken and ignored: 8x8 rows stayed 8x8
        load_data("digits", image_size=(16, 16))
    from toolchain.data.options import parse_augment, parse_normalize

    with pytest.raises(UserError, match="--normalize 'x'"):
        parse_normalize("x")
    for unusable in ("0.5:1e-45", "1e300:1e-300", "0.5:1e9"):  # finite, but the normalized pixels are not (training "diverged")
        with pytest.raises(UserError, match="stds from 1e-6 to 1e6"):
            parse_normalize(unusable)
    assert parse_normalize("0.5,0.4,0.3:0.25,0.2,0.2") == ((0.5, 0.4, 0.3), (0.25, 0.2, 0.2))
    with pytest.raises(UserError, match="--augment 'spin'"):
        parse_augment("spin")
    for typo in (",", "crop,", "", " "):  # an empty word was read as "none": augmentation silently off
        with pytest.raises(UserError, match="is not none, crop, flip"):
            parse_augment(typo)
    assert parse_augment(None) is None and parse_augment(" None ") is None
    assert parse_augment("Flip, crop").flip and parse_augment("crop,flip").crop_scale == (0.25, 1.0)


# --------------------------------------------------------------------------- training: workers, augmentation, teacher


def _tiny_model(seed=0):
    import torch

    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(), torch.nn.AdaptiveAvgPool2d(1),
                               torch.nn.Flatten(), torch.nn.Linear(4, 2))


def test_training_reads_the_same_batches_with_workers_as_without(tmp_path):
    import torch

    from toolchain.models.train import TrainConfig, train

    ds = load_data(str(image_folder(tmp_path / "imgs", 80, 12)), seed=0)
    held = rows(ds.x_train)
    weights = []
    for x, workers in ((held, 0), (ds.x_train, 0), (ds.x_train, 2)):
        model = train(_tiny_model(), x, ds.y_train, TrainConfig(epochs=2, batch_size=8, seed=5, workers=workers))
        weights.append(torch.cat([p.detach().flatten() for p in model.state_dict().values() if p.dtype.is_floating_point]))
    assert torch.equal(weights[0], weights[1]) and torch.equal(weights[0], weights[2])


_WORKER_PARENT = """
import os, sys, time
import numpy as np
from toolchain.data.samples import Samples
from toolchain.models.batches import BatchReader

class Slow(Samples):
    shape = (64, 4)
    def read(self, index):
        return np.zeros((len(index), 4), np.float32)

reader = BatchReader(Slow(), workers=2)
next(iter(reader.read([np.arange(4)] * 8)))
print("ready", flush=True)
time.sleep(120)
"""


def _children(pid: int) -> list[int]:
    out = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            fields = dict(line.split(":\t", 1) for line in status.read_text().splitlines() if ":\t" in line)
        except OSError:
            continue
        if fields.get("PPid", "").strip() == str(pid):
            out.append(int(status.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        return not Path(f"/proc/{pid}/status").read_text().split("State:\t", 1)[1].startswith(("Z", "X"))
    except (OSError, IndexError):
        return False


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads /proc (Linux)")
def test_data_loader_workers_die_with_a_process_killed_with_kill_9():
    """A compress killed with kill -9 left its DataLoader workers decoding images for up to 5 s (their own check of the
    parent); they now go with it."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", _WORKER_PARENT], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    try:
        assert proc.stdout.readline().strip() == "ready"
        workers = _children(proc.pid)
        assert len(workers) == 2, workers
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        deadline = time.monotonic() + 2.0  # the workers' own check of their parent would take up to 5 s
        while any(_alive(w) for w in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(_alive(w) for w in workers)
    finally:
        proc.kill()
        proc.wait(10)
        proc.stdout.close()


class _KilledInAWorker:
    """Rows whose reading kills the process reading them, unless it is the one that made them: a DataLoader worker
    ended by the kernel's out-of-memory killer."""

    def __init__(self):
        import os

        from toolchain.data.samples import Samples

        parent = os.getpid()

        class Rows(Samples):
            shape = (64, 4)

            def read(self, index):
                import signal

                if os.getpid() != parent:
                    os.kill(os.getpid(), signal.SIGKILL)
                return np.zeros((len(index), 4), np.float32)

        self.rows = Rows()


def test_a_worker_killed_while_reading_is_one_line_not_an_internal_error():
    """kill -9 of one DataLoader worker (what the out-of-memory killer does) ended compress in 'internal error:
    RuntimeError: DataLoader worker (pid N) is killed by signal: Killed.', exit 3."""
    from toolchain.models.batches import BatchReader

    reader = BatchReader(_KilledInAWorker().rows, workers=1)
    try:
        with pytest.raises(UserError) as info:
            list(reader.read([np.arange(4)] * 4))
    finally:
        reader.close()
    said = str(info.value)
    assert "\n" not in said and "DataLoader worker (pid" in said and "--workers" in said and "out of memory" in said, said


def test_a_bad_image_read_by_a_worker_is_one_line_naming_it(tmp_path):
    from toolchain.models.train import TrainConfig, train

    folder = image_folder(tmp_path / "imgs", 80, 12)
    ds = load_data(str(folder), seed=0)
    bad = Path(ds.x_train.base.paths[int(ds.x_train.index[5])])
    bad.write_bytes(bad.read_bytes()[:60])  # the header is intact, the pixels are not
    with pytest.raises(UserError) as info:
        train(_tiny_model(), ds.x_train, ds.y_train, TrainConfig(epochs=1, batch_size=8, seed=0, workers=1))
    assert "\n" not in str(info.value) and bad.name in str(info.value) and "cannot read image" in str(info.value)


def test_augmentation_is_seeded_changes_training_batches_and_never_evaluation(tmp_path, monkeypatch):
    import torch

    from toolchain.data.dataset import Augment
    from toolchain.models import augment as augment_module
    from toolchain.models.train import TrainConfig, predict_logits, train

    ds = load_data(str(image_folder(tmp_path / "imgs", 40, 12)), seed=0)
    seen = []

    def loss(logits, t, idx, inputs):
        seen.append((idx.clone(), inputs.clone()))
        return torch.nn.functional.cross_entropy(logits, t)

    calls = []
    real_apply = augment_module.Augmenter.apply
    monkeypatch.setattr(augment_module.Augmenter, "apply", lambda self, x, d: calls.append(len(x)) or real_apply(self, x, d))
    spec = Augment(crop_scale=(0.3, 1.0), flip=True)
    runs = []
    for _ in range(2):
        seen.clear()
        model = train(_tiny_model(), ds.x_train, ds.y_train, TrainConfig(epochs=1, batch_size=8, seed=1, augment=spec, workers=0),
                      loss_fn=loss)
        runs.append([inputs for _, inputs in seen])
    assert all(torch.equal(a, b) for a, b in zip(*runs))  # seeded: the same augmented batches
    idx, inputs = seen[0]
    raw = torch.as_tensor(ds.x_train[idx.numpy()])
    assert inputs.shape == raw.shape and not torch.equal(inputs, raw)  # training batches are augmented
    steps = len(calls)
    assert steps == sum(len(r) for r in runs)  # once a training step
    predict_logits(model, ds.x_test)  # evaluation reads the rows as they are
    assert len(calls) == steps
    with pytest.raises(UserError, match="--augment needs image samples"):
        train(torch.nn.Linear(4, 2), np.zeros((8, 4), np.float32), np.arange(8) % 2, TrainConfig(epochs=1, augment=spec))


def test_with_augmentation_the_teacher_is_computed_on_the_augmented_batch():
    import torch

    from toolchain.prune.loss import ClassDependentLoss

    torch.manual_seed(0)
    teacher = torch.nn.Linear(4, 3)
    inputs = torch.randn(6, 4)
    logits = torch.randn(6, 3)
    targets = torch.tensor([0, 1, 2, 0, 1, 2])
    live = ClassDependentLoss(3, [1], teacher_model=teacher, distill_weight=1.0)
    cached = ClassDependentLoss(3, [1], teacher_logits=teacher(inputs).detach(), distill_weight=1.0)
    idx = torch.arange(6)
    assert torch.allclose(live(logits, targets, idx, inputs), cached(logits, targets, idx, inputs))
    assert not torch.allclose(live(logits, targets, idx, inputs + 1), cached(logits, targets, idx, inputs + 1))


def test_the_live_teacher_runs_in_the_retrainings_arithmetic_and_leaves_the_dense_model_alone():
    import torch
    from torch import nn

    from toolchain.prune.loss import LiveTeacher

    torch.manual_seed(0)
    dense = nn.Sequential(nn.Conv2d(2, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 10 * 10, 3))
    x = torch.randn(16, 2, 12, 12)  # two input channels: a one-channel kernel is in both memory orders
    dense.train()
    dense(x)  # batch norm statistics that differ from a fresh layer's
    dense.eval()
    with torch.no_grad():
        fp32 = dense(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            bf16 = dense(x).float()
    stats = dense[1].running_mean.clone()
    teacher = LiveTeacher(dense, x.numpy(), torch.bfloat16, torch.device("cpu"))
    teacher.train()  # the training loop's train() does not reach it: a target always evaluates
    out = teacher(x)
    assert not teacher.model.training and out.dtype == torch.float32 and not out.requires_grad
    assert teacher.channels_last and torch.allclose(out, bf16, atol=0.05) and not torch.allclose(out, fp32, atol=1e-4)
    assert torch.equal(teacher.model[1].running_mean, stats)
    # the dense model is untouched: its memory order, its gradients, its statistics
    assert dense[0].weight.is_contiguous() and not dense[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert all(p.requires_grad for p in dense.parameters()) and torch.equal(dense[1].running_mean, stats)
    assert torch.allclose(LiveTeacher(dense, x.numpy(), None, torch.device("cpu"))(x), fp32, atol=1e-5)


def test_compress_records_preprocessing_and_augmentation_in_report_and_artifacts(tmp_path, capsys):
    import onnx
    import torch

    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint
    from toolchain.models.train import seed_everything
    from toolchain.models.fast_paths import autocast_dtype
    from toolchain.prune.lottery import LotteryPruner
    from toolchain.prune.loss import LiveTeacher

    folder = image_folder(tmp_path / "imgs", 60, 20, seed=2)
    seed_everything(0)
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(folder, resize=18, image_size=(16, 16), normalize="imagenet"), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    same = ["--resize", "18", "--image-size", "16", "--normalize", "imagenet"]
    teachers = []
    real_teacher = LotteryPruner.teacher
    LotteryPruner.teacher = lambda self: teachers.append(real_teacher(self)) or teachers[-1]
    try:
        code, _, err = run_cli(["compress", tmp_path / "m.pt", "--data", folder, "-p", "1", "--keep-params", "0.5", "--epochs", "1",
                                *same, "--augment", "crop,flip", "--skip-export", "--out", tmp_path / "run"], capsys)
    finally:
        LotteryPruner.teacher = real_teacher
    assert code in (0, 1), err
    assert len(teachers) == 1 and isinstance(teachers[0], LiveTeacher)  # live, not cached logits
    assert isinstance(teachers[0].model, registry.get("digits-cnn")) and teachers[0].dtype == autocast_dtype("auto", torch.device("cpu"))
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    pre = report["data"]["preprocessing"]
    assert pre["resize"] == [18] and pre["crop"] == [16, 16] and pre["mean"] == pytest.approx([0.485, 0.456, 0.406])
    assert report["data"]["augment"]["horizontal_flip"] is True and report["data"]["streamed"] is True
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["inputs"]["data"]["augment"] and manifest["inputs"]["data"]["resize"] == [18]

    # the files carry it (compress and export write them through the same export stage), and verify reads it back
    code, _, err = run_cli(["export", tmp_path / "run" / "pruned.pt", "--data", folder, "-p", "1", *same, "--format", "onnx",
                            "--format", "tflite", "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "exp"], capsys)
    assert code in (0, 1), err
    exported = json.loads((tmp_path / "exp" / "export.json").read_text())
    files = [tmp_path / "exp" / a["path"] for a in exported["artifacts"]]
    assert {a["format"] for a in exported["artifacts"]} == {"onnx", "tflite"}
    for path in files:
        if path.suffix == ".onnx":
            recorded = json.loads({p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}["preprocessing"])
        else:
            recorded = json.loads(path.with_name(path.name + ".json").read_text())["preprocessing"]
        assert recorded == pre, path
    for extra, mismatch in ((same, False), (["--image-size", "16"], True)):
        code, _, err = run_cli(["verify", *files, "--data", folder, "-p", "1", *extra, "--json", tmp_path / "v.json"], capsys)
        assert code in (0, 1), err
        notes = json.loads((tmp_path / "v.json").read_text())["notes"]
        assert any("preprocessed otherwise" in n for n in notes) == mismatch, notes
    # against a baseline, rows prepared otherwise are other rows: the refusal named the row order and 8-bit rounding, never
    # the file's recorded preprocessing (a new user's finding)
    code, _, err = run_cli(["verify", files[0], "--data", folder, "-p", "1", "--image-size", "16", "--baseline",
                            tmp_path / "exp" / "export.json"], capsys)
    assert code == 2 and err.count("\n") == 1, err
    assert "was made for inputs preprocessed otherwise" in err.split("; so ")[0] and "rows are not the rows the baseline" in err, err
    assert "8-bit pixels" not in err and "(--allow-other-data compares other rows on purpose, unpaired)" in err, err
    assert "crop [16, 16] there, none here" in err, err
    code, _, err = run_cli(["verify", files[0], "--data", folder, "-p", "1", *same, "--baseline", tmp_path / "exp" / "export.json"], capsys)
    assert code in (0, 1), err


def test_an_image_replaced_by_a_pipe_is_refused_not_waited_for(tmp_path):
    """A pipe named like an image (put there while a run reads the folder) blocked the reader forever."""
    import os

    folder = image_folder(tmp_path / "imgs", 12, 8)
    dataset = load_data(str(folder), seed=0)
    victim = next(folder.rglob("*.png"))
    victim.unlink()
    os.mkfifo(victim)
    import signal

    def stuck(*_):
        raise TimeoutError("the reader waits on the pipe")

    before = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(30)  # a regression fails here, not by hanging the suite
    try:
        with pytest.raises(UserError, match="not a plain file"):
            for split in ("train", "val", "test"):
                x = dataset.split(split)[0]
                x[np.arange(len(x))]
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


def test_resume_refuses_a_folder_whose_images_changed(tmp_path, capsys):
    """Removing one image reshuffles the seeded split: rounds trained on rows that are now validation or test rows must
    not be finished as if nothing happened. The folder's listing (names, sizes and modification times) is part of the run's identity."""
    from toolchain.models.loading import save_checkpoint
    from toolchain.models.train import seed_everything

    folder = image_folder(tmp_path / "imgs", 40, 16, seed=3)
    seed_everything(0)
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(folder), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    args = ["compress", tmp_path / "m.pt", "--data", folder, "-p", "1", "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "1",
            "--confidence", "0.5", "--skip-export", "--out", tmp_path / "run"]
    code, _, err = run_cli(args, capsys)
    assert code in (0, 1), err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert len(manifest["inputs"]["data"]["listing_sha256"]) == 64
    first, second = sorted(folder.glob("class0/*.png"))[0], sorted(folder.glob("class1/*.png"))[0]
    assert first.stat().st_size == second.stat().st_size  # 16-px noise images: swapping two keeps every size
    swapped_bytes = first.read_bytes(), second.read_bytes()
    first.write_bytes(swapped_bytes[1]), second.write_bytes(swapped_bytes[0])
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and "other inputs" in err and "the data differs" in err and "modification times" in err, err
    next(folder.rglob("*.png")).unlink()
    code, _, err = run_cli([*args, "--resume"], capsys)
    assert code == 2 and "other inputs" in err and "the data differs" in err, err


def test_an_image_that_cannot_be_decoded_is_named_as_the_datas_fault_by_evaluate(tmp_path, capsys):
    """Images are decoded when the model reads them: a truncated one was reported as 'the model fails on the data's
    rows (UserError: cannot read image ...)', two messages nested, with advice about --arch."""
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 12, 16, seed=5)
    broken = sorted(folder.glob("class1/*.png"))[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    save_checkpoint(tmp_path / "m.pt", registry.create("digits-cnn", in_channels=3, num_classes=2, width=8), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", folder, "-p", "1", "--split", "all"], capsys)
    assert code == 2 and "cannot read image" in err and broken.name in err and "the model fails" not in err, err


def test_a_folder_with_a_class_of_two_images_is_judged_whole_and_refused_only_where_a_split_is_wanted(tmp_path, capsys):
    """A compress run's --test folder may hold 2 images of a class: compress took it, and the verify command its report
    printed (every row, as --test is read) was refused, as was evaluate --split all: 'splitting needs at least 3'."""
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 12, 16, seed=7)
    for extra in sorted(folder.glob("class1/*.png"))[2:]:
        extra.unlink()
    save_checkpoint(tmp_path / "m.pt", registry.create("digits-cnn", in_channels=3, num_classes=2, width=8), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    out = tmp_path / "e.json"
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", folder, "-p", "1", "--split", "all", "--json", out], capsys)
    assert code == 0, err
    assert json.loads(out.read_text())["n"] == 8  # 6 of class 0, 2 of class 1
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", folder, "-p", "1"], capsys)  # its test split: none to draw
    assert code == 2 and "has only 2 samples" in err and "needs at least 3" in err and "--split all judges every row" in err, err
    for extra in sorted(folder.glob("class0/*.png"))[1:]:  # 3 images in all: a split of them would be empty
        extra.unlink()
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", folder, "-p", "1", "--split", "all", "--json", out], capsys)
    assert code == 0 and json.loads(out.read_text())["n"] == 3, err


def test_a_run_s_test_folder_with_a_class_of_two_images_is_judged_whole_by_default(tmp_path, capsys):
    """The default check of a compress run's model on its own --test folder, where a class holds 2 images, was refused
    ("needs at least 3 ... --split all"): its every row is judged where the checkpoint records them, else refused."""
    from toolchain.judged_rows import load_rows_for
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint
    from toolchain.provenance import rows_sha256

    folder = image_folder(tmp_path / "imgs", 12, 16, seed=7)
    for extra in sorted(folder.glob("class1/*.png"))[2:]:
        extra.unlink()
    whole = load_rows_for(str(folder), "all")
    record = {"rows": 8, "sha256": rows_sha256(whole["x"], whole["y"])}
    net, kwargs = registry.create("digits-cnn", in_channels=3, num_classes=2, width=8), {"in_channels": 3, "num_classes": 2, "width": 8}
    for name, test_rows in (("run.pt", record), ("other.pt", {**record, "sha256": "0" * 64}), ("none.pt", None)):
        save_checkpoint(tmp_path / name, net, "digits-cnn", kwargs, (3, 16, 16), extra={"data": {"test_rows": test_rows}})
    out = tmp_path / "e.json"
    code, _, err = run_cli(["evaluate", tmp_path / "run.pt", "--data", folder, "-p", "1", "--json", out], capsys)
    assert code == 0 and json.loads(out.read_text())["n"] == 8, err
    assert "every row of imgs is judged (a test split of it cannot be drawn): they are the rows " in err and "records as its --test rows" in err, err
    assert json.loads(out.read_text())["rows_sha256"] == record["sha256"]
    for name in ("other.pt", "none.pt"):
        code, _, err = run_cli(["evaluate", tmp_path / name, "--data", folder, "-p", "1"], capsys)
        assert code == 2 and "has only 2 samples" in err and "--split all judges every row" in err, (name, err)
    # a device's check of a file exported with that folder as its --test: every row; a file of other rows: refused
    for name, test in (("run", folder), ("other", image_folder(tmp_path / "other", 12, 16, seed=8))):
        code, _, err = run_cli(["export", tmp_path / "none.pt", "--data", image_folder(tmp_path / "train", 20, 16, seed=9),
                                "--test", test, "-p", "1", "--format", "onnx", "--out", tmp_path / f"{name}-files"], capsys)
        assert code == 0, err
        onnx = tmp_path / f"{name}-files" / "artifacts" / "model_fp32.onnx"
        code, _, err = run_cli(["verify", onnx, "--data", folder, "-p", "1", "--json", tmp_path / f"{name}.json"], capsys)
        if name == "run":
            judged = json.loads((tmp_path / "run.json").read_text())
            assert code in (0, 1) and judged["data"]["split"] == "all" and judged["data"]["rows_sha256"] == record["sha256"], err
            assert any("a test split of it cannot be drawn" in n for n in judged["notes"]), judged["notes"]
        else:
            assert code == 2 and "has only 2 samples" in err and "--split all judges every row" in err, err
    # a TFLite file without its sidecar cannot show it was tested on these rows: the refusal says so (it had lost the hint)
    code, _, err = run_cli(["export", tmp_path / "none.pt", "--data", tmp_path / "train", "--test", folder, "-p", "1",
                            "--format", "tflite", "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "tfl"], capsys)
    assert code == 0, err
    (tmp_path / "blind").mkdir()
    tflite = next((tmp_path / "tfl" / "artifacts").glob("*.tflite"))
    (tmp_path / "blind" / tflite.name).write_bytes(tflite.read_bytes())
    code, _, err = run_cli(["verify", tmp_path / "blind" / tflite.name, "--data", folder, "-p", "1"], capsys)
    assert code == 2 and "has only 2 samples" in err and "sidecar" in err, err


def test_a_thin_image_that_resize_would_blow_up_is_refused_before_any_decoding(tmp_path, capsys):
    """--resize scales the shorter side: a 1 x 100,000 px PNG (178 bytes) became 2,000 x 200,000,000 before its crop, and
    ended as 'the model fails on the data's rows (MemoryError)'. Its size after the resize is checked like a decoded one's."""
    from PIL import Image

    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 8, 16, seed=6)
    Image.new("RGB", (100_000, 1)).save(folder / "class1" / "thin.png")
    save_checkpoint(tmp_path / "m.pt", registry.create("digits-cnn", in_channels=3, num_classes=2, width=8), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", folder, "--resize", "2000", "--image-size", "16", "-p", "1"], capsys)
    assert code == 2 and "resizing image" in err and "thin.png" in err, err


def test_a_mapped_float64_value_float32_cannot_hold_is_refused_as_data(tmp_path, monkeypatch):
    """1e300 is finite in float64 and inf in float32: a file held in memory was refused for it, a memory-mapped one
    was read and the model blamed for its infinite logits."""
    from toolchain.data import mapped

    x = np.random.default_rng(0).random((60, 4, 4))
    x[7, 1, 2] = 1e300
    np.savez(tmp_path / "big.npz", x=x, y=np.arange(60) % 3)
    monkeypatch.setattr(mapped, "MAP_BYTES", 0)
    with pytest.raises(UserError, match=r"1 NaN or infinite value, the first at row 7 \(counted from 0\)"):
        load_data(str(tmp_path / "big.npz"), seed=0)


@pytest.mark.parametrize("mapped_npz", [False, True])
def test_held_out_rows_get_the_preprocessing_of_data(tmp_path, monkeypatch, mapped_npz):
    """--normalize applied to --data's images and not to --val/--test's (an .npz of the same pixels) while every output
    said it was: the gate judged rows the model never sees that way. A folder like --data's and an .npz of 8-bit
    pixels now get it; float rows are taken as prepared, and the data line says which."""
    from PIL import Image

    from toolchain.data import mapped
    from toolchain.data.given import with_given_rows

    train, val = image_folder(tmp_path / "train", 20, 16, seed=7), image_folder(tmp_path / "val", 10, 16, seed=8)
    npz = as_npz(val, tmp_path / "val.npz")
    if mapped_npz:
        monkeypatch.setattr(mapped, "MAP_BYTES", 0)
    data = load_data(str(train), seed=0, normalize=((0.5,), (0.25,)))
    expected = (np.stack([np.asarray(Image.open(f).convert("RGB")) for f in sorted(val.glob("*/*.png"))])
                .transpose(0, 3, 1, 2) / np.float32(255) - np.float32(0.5)) / np.float32(0.25)
    for given, how in ((val, "images prepared as --data's"), (npz, "normalized as --data's")):
        ds = with_given_rows(data, val=str(given))
        assert np.allclose(rows(ds.x_val), expected, atol=1e-5) and how in ds.preprocessing.note, ds.preprocessing.note
    floats = tmp_path / "floats.npz"
    np.savez(floats, x=expected.astype(np.float32), y=np.load(npz)["y"])
    ds = with_given_rows(data, test=str(floats))
    assert np.allclose(rows(ds.x_test), expected, atol=1e-6) and "taken as already normalized" in ds.preprocessing.note


def test_a_held_out_folder_must_be_laid_out_like_data(tmp_path):
    from toolchain.data.given import with_given_rows

    data = load_data(str(image_folder(tmp_path / "train", 20, 16, seed=7)), seed=0)
    other = image_folder(tmp_path / "other", 6, 16, seed=9)
    (other / "class1").rename(other / "dog")
    with pytest.raises(UserError, match="class folder 'dog'.*not one of --data's classes"):
        with_given_rows(data, val=str(other))
    with pytest.raises(UserError, match="is 20x20, --data's are 16x16"):
        with_given_rows(data, val=str(image_folder(tmp_path / "big", 6, 20, seed=9)))
    with pytest.raises(UserError, match="goes with an ImageFolder --data"):
        with_given_rows(load_data("digits", seed=0), val=str(other))


def test_a_held_out_folder_refuses_an_image_it_cannot_read_and_says_what_it_left_out(tmp_path):
    """A --val or verify folder dropped a link to nothing (a git-annex/DVC checkout never fetched) and a FIFO without a
    word: the gate judged fewer rows than the folder shows."""
    import os

    from toolchain.data.given import with_given_rows

    data = load_data(str(image_folder(tmp_path / "train", 20, 16, seed=7)), seed=0)
    val = image_folder(tmp_path / "val", 6, 16, seed=9)
    (val / "class1" / "notes.txt").write_text("scanned 2026")
    ds = with_given_rows(data, val=str(val))
    assert len(ds.y_val) == 6 and "1 other entry left out (not an image: another file, a folder without images, a link back up), such as 'class1/notes.txt'" in ds.preprocessing.note
    (val / "class1" / "z.png").symlink_to(tmp_path / "annex" / "never-fetched")
    with pytest.raises(UserError, match="z.png' in --val .* is named like an image but is a link to nothing"):
        with_given_rows(data, val=str(val))
    (val / "class1" / "z.png").unlink()
    os.mkfifo(val / "class0" / "y.jpg")
    with pytest.raises(UserError, match="y.jpg' in --test .* is named like an image but is not a regular file"):
        with_given_rows(data, test=str(val))


def test_a_held_out_folder_says_the_images_it_read_otherwise_than_stored(tmp_path):
    """--data's note counted CMYK images converted and color images read as gray; a --test folder of the same kinds said
    only 'images prepared as --data's', though its rows are the gate's."""
    from PIL import Image

    from toolchain.data.given import with_given_rows

    train = tmp_path / "train"
    for c in range(2):
        (train / f"c{c}").mkdir(parents=True)
        for i in range(10):
            Image.fromarray(np.full((16, 16), 40 + 150 * c + i, np.uint8)).save(train / f"c{c}" / f"{i}.png")
    data = load_data(str(train), seed=0)
    assert data.preprocessing.color == "L"
    test = tmp_path / "test"
    for c in range(2):
        (test / f"c{c}").mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 16), 60 + 150 * c + i, np.uint8)).save(test / f"c{c}" / f"{i}.png")
    Image.new("CMYK", (16, 16), (0, 0, 0, 200)).save(test / "c0" / "scan.jpg")
    Image.new("RGB", (16, 16), (200, 10, 10)).save(test / "c1" / "photo.png")
    ds = with_given_rows(data, test=str(test))
    assert len(ds.split("test")[1]) == 8
    said = ds.preprocessing.note
    assert "2 of 8 images in color read as gray, as --data's are" in said, said
    assert "1 with CMYK converted, such as 'c0/scan.jpg'" in said, said



def test_the_re_check_command_names_the_classes_where_a_test_folder_or_csv_is_judged_again():
    """A --test folder without one class's folder: the verify command its run printed was refused ('--data names 2 of the
    3 classes'). The run's class names go with it; a CSV's numbered classes, a name with a comma (which --class-names cannot
    say), or --data alone add nothing."""
    from types import SimpleNamespace

    from toolchain.data.options import verify_row_flags

    request = SimpleNamespace(image_size=None, resize=None, color=None, input_shape=None, label_column=None, class_names=None,
                              test="held/test")
    assert verify_row_flags(request, ["cat", "dog", "eel"]) == ["--class-names", "cat,dog,eel"]
    assert verify_row_flags(request, ["0", "1", "2"]) == [] and verify_row_flags(request, ["a,b", "c"]) == []  # a CSV's numbers
    assert verify_row_flags(SimpleNamespace(**{**vars(request), "test": None}), ["cat", "dog"]) == []
    folder = Path(__file__).parent  # a run's class folders named 0..2, its --test folder's perhaps 1..2: named too
    assert verify_row_flags(SimpleNamespace(**{**vars(request), "test": str(folder)}), ["0", "1", "2"]) == ["--class-names", "0,1,2"]
    # a --test CSV whose label is not its last column: read with --label-column, re-checked with it (exit 2 without)
    labelled = SimpleNamespace(**{**vars(request), "test": "held/test.csv", "label_column": "label"})
    assert verify_row_flags(labelled, ["no_sepsis", "sepsis"]) == ["--label-column", "label", "--class-names", "no_sepsis,sepsis"]
    assert verify_row_flags(SimpleNamespace(**{**vars(labelled), "test": "held/test.npz"}), ["0", "1"]) == []  # refused there


def test_given_image_rows_of_another_pixel_scale_are_refused(tmp_path):
    """A float --val .npz of raw 0..255 pixels beside an image folder (0..1, normalized) was taken as stored: compress ran
    to a +30.8 protected-logit offset and a failed gate, nothing said why."""
    from toolchain.data.given import with_given_rows

    data = load_data(str(image_folder(tmp_path / "train", 20, 16, seed=7)), seed=0)
    rng = np.random.default_rng(0)
    y = np.array([0, 1] * 5)
    np.savez(tmp_path / "raw.npz", x=rng.uniform(0, 255, (10, 3, 16, 16)).astype(np.float32), y=y)
    with pytest.raises(UserError, match=r"--val '.*raw.npz' holds values reaching 25\d(\.\d+)? where the rows of --data reach "
                                        r"1: pixels scaled otherwise \(0..255 against 0..1\?\); give --val rows prepared"):
        with_given_rows(data, val=str(tmp_path / "raw.npz"))
    np.savez(tmp_path / "scaled.npz", x=rng.uniform(0, 1, (10, 3, 16, 16)).astype(np.float32), y=y)
    assert len(with_given_rows(data, val=str(tmp_path / "scaled.npz")).y_val) == 10
    np.savez(tmp_path / "dark.npz", x=rng.integers(0, 5, (10, 3, 16, 16)).astype(np.uint8), y=y)  # scaled by 1/255 here
    assert len(with_given_rows(data, val=str(tmp_path / "dark.npz")).y_val) == 10


def test_compress_takes_held_out_folders_and_names_them_in_its_run(tmp_path, capsys):
    from toolchain.models.loading import save_checkpoint

    train = image_folder(tmp_path / "train", 60, 16, seed=10)
    held = {name: image_folder(tmp_path / name, 30, 16, seed=11 + i) for i, name in enumerate(("val", "test"))}
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(train), "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, out, err = run_cli(["compress", tmp_path / "m.pt", "--data", train, "--val", held["val"], "--test", held["test"], "-p", "1",
                              "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "1", "--confidence", "0.5",
                              "--format", "onnx", "--out", tmp_path / "run"], capsys)
    assert code in (0, 1), err
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert set(manifest["inputs"]["data"]["val"]) == {"path", "listing_sha256"}
    report = json.loads((tmp_path / "run" / "report.json").read_text())
    assert report["baseline"]["test"]["n"] == 30 and report["data"]["sizes"]["test"] == 30 and "--test " in report["data"]["preprocessing"]["note"]
    assert report["data"]["held_out_from"] == {"val": str(held["val"]), "test": str(held["test"])}
    # the re-check names the run's classes: a --test folder without one class's folder numbers the others otherwise
    assert report["data"]["verify_options"][-2:] == ["--class-names", "class0,class1"]
    md = (tmp_path / "run" / "report.md").read_text()  # a failed run offers no re-check command: verify would fail its files
    assert ("--class-names class0,class1 -p class1" in md) == report["promise"]["met_on_val"] != ("No file to re-check" in md)
    assert (f"Data: `{train}`; validation rows from `{held['val']}` ({report['data']['sizes']['val']} rows), test rows from "
            f"`{held['test']}` (30 rows)") in (tmp_path / "run" / "report.md").read_text()
    # the same folder judged again (evaluate and verify read a folder's every row in listing order): the same rows
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", held["test"], "-p", "1", "--split", "all", "--json",
                            tmp_path / "e.json"], capsys)
    assert code == 0 and json.loads((tmp_path / "e.json").read_text())["rows_sha256"] == report["data"]["test_rows_sha256"], err
    # verify's natural check of the run's file on its --test folder: the baseline's rows are the whole folder (it was
    # refused as other rows unless --split all was given)
    onnx = next(a["path"] for a in report["artifacts"] if a["precision"] == "fp32")
    # a device's check, the file and the --test folder alone: every row (it judged a seeded 15% of them: "0 of 6 missed,
    # passed" where every row missed 11 of 40), as the rows' own sha256 matches the one the file records
    code, out, err = run_cli(["verify", tmp_path / "run" / onnx, "--data", held["test"], "-p", "1", "--json", tmp_path / "d.json"], capsys)
    device = json.loads((tmp_path / "d.json").read_text())
    assert code in (0, 1) and device["data"]["split"] == "all", err
    assert device["data"]["rows_sha256"] == report["data"]["test_rows_sha256"], device["data"]
    assert any("they are the rows the files' compress run tested them on (30 rows, the sha256 recorded)" in n
               for n in device["notes"]), device["notes"]
    assert "judged the seeded test split" not in err + out, err
    code, out, err = run_cli(["evaluate", tmp_path / "run" / "pruned.pt", "--data", held["test"], "-p", "1", "--json",
                              tmp_path / "pe.json"], capsys)  # and its pruned.pt, evaluated on that folder: the same rows
    assert code == 0 and json.loads((tmp_path / "pe.json").read_text())["rows_sha256"] == report["data"]["test_rows_sha256"], err
    assert "pruned.pt' records as its --test rows" in err, err
    # as many other images: not the run's --test, so its seeded test split, said as before
    other = image_folder(tmp_path / "other", 30, 16, seed=99)
    code, _, err = run_cli(["verify", tmp_path / "run" / onnx, "--data", other, "-p", "1", "--json", tmp_path / "o.json"], capsys)
    judged_other = json.loads((tmp_path / "o.json").read_text())
    assert code in (0, 1) and judged_other["data"]["split"] == "test", err
    assert any(n.startswith("judged the seeded test split of other") for n in judged_other["notes"]), judged_other["notes"]
    (held["test"] / "class1" / "Thumbs.db").write_bytes(b"\0" * 64)  # not an image: left out, and said so
    code, _, err = run_cli(["verify", tmp_path / "run" / onnx, "--data", held["test"], "-p", "1", "--baseline",
                            tmp_path / "run" / "report.json", "--json", tmp_path / "v.json"], capsys)
    judged = json.loads((tmp_path / "v.json").read_text())["data"]
    assert code in (0, 1) and judged["split"] == "all", err
    assert err.count("left out") == 1 and "such as 'class1/Thumbs.db'" in err, err  # counted, once
    assert "such as 'class1/Thumbs.db'" in judged["preprocessing"]
    assert "normalized as the artifacts record" not in err  # what auto gives these images anyway: nothing to say


def test_entries_an_image_folder_leaves_out_are_counted_in_its_note(tmp_path):
    """A GIF, a text file and a sub-folder were left out without a word: the row count just stayed lower. Images of
    formats cwtool does not read are counted per class ("61 entries left out" hid that a class kept 20 of its 60)."""
    folder = image_folder(tmp_path / "imgs", 8, 16, seed=2)
    assert "left out" not in load_data(str(folder), seed=0).preprocessing.note
    (folder / "class1" / "a.gif").write_bytes(b"GIF89a")
    (folder / "class1" / "b.TIF").write_bytes(b"II*")
    (folder / "class1" / "Thumbs.db").write_bytes(b"")
    (folder / "class0" / "nested").mkdir()
    (folder / "class0" / ".DS_Store").write_bytes(b"")  # hidden: not counted
    ds = load_data(str(folder), seed=0)
    assert len(ds.split("all")[1]) == 8
    note = ds.preprocessing.note
    assert "2 images of formats cwtool does not read left out (GIF 1, TIFF 1; by class: 'class1' 2 (4 read))" in note, note
    assert "2 other entries of the class folders left out" in note and "'class0/nested'" in note, note


def test_an_entry_named_like_an_image_that_is_no_file_is_refused_whichever_split_it_falls_in(tmp_path, capsys):
    """A link to nothing (a git-annex checkout never fetched) was left out of --data's seeded splits (exit 0) but refused
    with --split all or as --test: one folder, two rules. A loop of links was called 'not fetched, or moved'."""
    folder = image_folder(tmp_path / "imgs", 8, 16, seed=2)
    (folder / "class1" / "gone.jpg").symlink_to(tmp_path / "annex" / "never-fetched")
    with pytest.raises(UserError, match="gone.jpg' in .* is named like an image but is a link to nothing .its content not fetched"):
        load_data(str(folder), seed=0)
    (folder / "class1" / "gone.jpg").unlink()
    (folder / "class0" / "l1.png").symlink_to("l2.png")
    (folder / "class0" / "l2.png").symlink_to("l1.png")
    with pytest.raises(UserError, match="l1.png' in .* is named like an image but is a loop of links"):
        load_data(str(folder), seed=0)


def test_a_nas_thumbnail_folder_and_jpegs_named_jfif_are_what_they_are(tmp_path):
    """A Synology NAS writes @eaDir (thumbnails) into every folder: cwtool said to move its images up into the class,
    which would have put copies of the class's own images into it. .jfif and .jpe files are JPEGs and were left out as
    'not a PNG/JPEG file': still left out (read, they would change the rows earlier runs split), said as JPEGs to rename."""
    from PIL import Image

    folder = image_folder(tmp_path / "imgs", 8, 16, seed=2)
    for where in (folder, folder / "class0"):
        (where / "@eaDir" / "00000.png").mkdir(parents=True)
        Image.new("RGB", (32, 24)).save(where / "@eaDir" / "00000.png" / "SYNOFILE_THUMB_M.jpg")
    Image.open(folder / "class1" / "00001.png").convert("RGB").save(folder / "class1" / "extra.jfif", format="JPEG")
    Image.open(folder / "class1" / "00003.png").convert("RGB").save(folder / "class1" / "extra.jpe", format="JPEG")
    ds = load_data(str(folder), seed=0)
    assert ds.class_names == ["class0", "class1"] and len(ds.split("all")[1]) == 8
    assert ("2 images of formats cwtool does not read left out (JPEG named .jfif 1, JPEG named .jpe 1; by class: 'class1' 2 "
            "(4 read)): convert them to PNG or JPEG (a .jfif or .jpe file is a JPEG: rename it .jpg) to use them") in ds.preprocessing.note
    assert "other entr" not in ds.preprocessing.note, ds.preprocessing.note  # @eaDir: not counted


def test_a_folder_of_split_folders_is_named_for_what_it_is(tmp_path):
    """data/{train,val,test}/<class>/: its 'test' folder was called a class folder without images."""
    for name in ("train", "val", "test"):
        image_folder(tmp_path / "data" / name, 4, 16, seed=1)
    with pytest.raises(UserError, match="holds split folders .train, val, test.*--data '.*train' --val '.*val' --test"):
        load_data(str(tmp_path / "data"), seed=0)


def test_held_out_rows_must_be_held_out(tmp_path, capsys):
    """--val as --data itself (or a link to it, or a folder inside it) had compress retrain on the rows it judged with,
    exit 0; --val and --test as the same rows chose and re-checked on them; a --test without the protected class passed
    the gate; an .npz whose own class names number the classes otherwise was read by --data's numbers."""
    from toolchain.data.given import check_held_out, with_given_rows

    train = image_folder(tmp_path / "train", 20, 16, seed=7)
    (tmp_path / "link").symlink_to(train)
    for val in (train, tmp_path / "link", train / "class1"):
        with pytest.raises(UserError, match="holds rows of --data"):
            check_held_out(str(train), str(val), None)
    other = image_folder(tmp_path / "other", 6, 16, seed=9)
    with pytest.raises(UserError, match="hold the same rows"):
        check_held_out(str(train), str(other), str(tmp_path / "other"))
    check_held_out(str(train), str(other), str(image_folder(tmp_path / "third", 6, 16, seed=10)))

    npz = as_npz(other, tmp_path / "named.npz")
    arrays = dict(np.load(npz))
    np.savez(npz, **arrays, class_names=np.array(["class1", "class0"]))
    with pytest.raises(UserError, match="names its classes class1, class0; --data numbers them class0, class1"):
        with_given_rows(load_data(str(train), seed=0), val=str(npz))

    from toolchain.models.loading import save_checkpoint

    no_positives = image_folder(tmp_path / "nopos", 6, 16, seed=11)
    for f in (no_positives / "class1").iterdir():
        f.unlink()
    (no_positives / "class1").rmdir()
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(train), "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["compress", tmp_path / "m.pt", "--data", train, "--val", other, "--test", no_positives, "-p", "1",
                            "--out", tmp_path / "run"], capsys)
    assert code == 2 and "the test split has no samples of protected class 1" in err and not (tmp_path / "run").exists(), err


def test_class_folders_whose_names_need_escaping_match_between_data_and_held_out(tmp_path):
    from toolchain.data.given import with_given_rows

    train, val = image_folder(tmp_path / "train", 12, 16, seed=7), image_folder(tmp_path / "val", 6, 16, seed=8)
    for root in (train, val):
        (root / "class1").rename(root / "nine\x7f")  # DEL: shown escaped in --data's class names
    ds = with_given_rows(load_data(str(train), seed=0), val=str(val))
    assert len(ds.y_val) == 6 and sorted(set(ds.y_val.tolist())) == [0, 1]


def test_images_whose_pixels_are_converted_are_counted_in_the_note(tmp_path):
    """An RGBA PNG lost its alpha channel and a CMYK JPEG was converted, both without a word."""
    from PIL import Image

    from toolchain.data import load_data

    image_folder(tmp_path / "d", 20, 16)
    Image.new("RGBA", (16, 16), (10, 200, 30, 0)).save(tmp_path / "d" / "class0" / "clear.png")
    Image.new("CMYK", (16, 16), (10, 20, 30, 40)).save(tmp_path / "d" / "class1" / "print.jpg")
    note = load_data(str(tmp_path / "d"), seed=0).preprocessing.note
    assert "1 with an alpha channel dropped, such as 'class0/clear.png'" in note, note
    assert "1 with CMYK converted, such as 'class1/print.jpg'" in note, note
    image_folder(tmp_path / "plain", 20, 16)
    assert "converted" not in load_data(str(tmp_path / "plain"), seed=0).preprocessing.note


def test_a_gray_folder_meets_an_rgb_model_through_color(tmp_path, capsys):
    """A device folder of gray images for an RGB model was a dead end ("(1, 16, 16) but expects (3, 16, 16)"), though the
    artifact records the color it was made for: verify now reads the folder so, and --color asks for it anywhere."""
    from PIL import Image

    from toolchain.models.loading import save_checkpoint
    from toolchain.models.train import seed_everything

    folder = image_folder(tmp_path / "imgs", 60, 16, seed=5)
    seed_everything(0)
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(folder), "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8},
                    (3, 16, 16))
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", folder, "-p", "1", "--format", "onnx", "--precision", "fp32",
                            "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    gray = tmp_path / "gray"
    for f in folder.rglob("*.png"):
        (gray / f.parent.name).mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("L").save(gray / f.parent.name / f.name)
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", gray, "-p", "1"], capsys)
    assert code == 2 and "(1, 16, 16)" in err, err  # read as it is: gray
    code, out, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", gray, "-p", "1", "--color", "rgb"], capsys)
    assert code == 0 and "every image read as RGB: --color" in out + err, out + err
    code, out, err = run_cli(["verify", tmp_path / "e" / "artifacts" / "model_fp32.onnx", "--data", gray, "-p", "1", "--split", "all"],
                             capsys)
    assert code == 0 and "every image read as RGB: --color, or the color the artifacts verified were made for" in out + err, out + err
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", "digits", "-p", "1", "--color", "rgb"], capsys)
    assert code == 2 and "--color only applies to an ImageFolder" in err, err
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", gray, "-p", "1", "--color", "purple"], capsys)
    assert code == 2 and "is not auto, rgb or gray" in err, err


def test_verify_reads_a_folder_normalized_as_its_files_record(tmp_path, capsys):
    """export --normalize 0.5:0.25 printed a verify command without it; run as printed, verify normalized the folder its own
    way (auto: none at 16 px), so the rows were not the baseline's: exit 2 with a hint about x/255 rounding."""
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 40, 16, seed=12)
    norm = "0.5,0.5,0.5:0.25,0.25,0.25"
    model = _learnt_cnn(folder, normalize=((0.5,) * 3, (0.25,) * 3))
    save_checkpoint(tmp_path / "m.pt", model, "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", folder, "-p", "1", "--normalize", norm, "--format", "onnx",
                            "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    artifact = tmp_path / "e" / "artifacts" / "model_fp32.onnx"
    code, out, err = run_cli(["verify", artifact, "--data", folder, "-p", "1", "--baseline", tmp_path / "e" / "export.json"], capsys)
    assert code == 0 and "normalized as the artifacts record (mean [0.5, 0.5, 0.5], std [0.25, 0.25, 0.25])" in out + err, out + err
    code, _, err = run_cli(["verify", artifact, "--data", folder, "-p", "1", "--normalize", "auto", "--baseline",
                            tmp_path / "e" / "export.json"], capsys)  # verify's auto, as its --color auto: as recorded
    assert code == 0, err
    for given in ("none",):  # a --normalize that names one is the user's: taken as given
        code, _, err = run_cli(["verify", artifact, "--data", folder, "-p", "1", "--normalize", given, "--baseline",
                                tmp_path / "e" / "export.json"], capsys)
        assert code == 2 and "not the rows the baseline was measured on" in err, err
    # a record edited to a normalization these images cannot take was blamed on --normalize, never given (a reviewer's)
    import json as _json

    import onnx

    proto = onnx.load(str(artifact))
    prop = next(p for p in proto.metadata_props if p.key == "preprocessing")
    record = _json.loads(prop.value)
    record.update(mean=[0.1, 0.2], std=[1.0, 1.0])
    prop.value = _json.dumps(record)
    onnx.save(proto, str(artifact))
    code, _, err = run_cli(["verify", artifact, "--data", folder, "-p", "1"], capsys)
    assert code == 2 and err.strip().startswith("cwtool: error: the normalization the files record") and "pass --normalize" in err, err
    assert len(err.strip().splitlines()) == 1, err


def test_a_file_made_from_arrays_records_no_normalization_for_a_folder():
    """A file exported from an .npz records color '' and mean [] (arrays used as stored): verify forced 'none' on an
    ImageFolder of 96-px RGB images, where auto gives ImageNet's, and a model that passed failed every row."""
    import json as json_
    from types import SimpleNamespace

    from toolchain.recorded import normalization_in, recorded_value

    def runner(pre):  # what a file's record reads as
        return recorded_value(SimpleNamespace(metadata={"preprocessing": json_.dumps(pre)}), "preprocessing")

    assert normalization_in([runner({"color": "", "mean": [], "std": []})]) is None
    assert normalization_in([runner({"color": "RGB", "mean": [], "std": []})]) == "none"
    assert normalization_in([runner({"color": "L", "mean": [0.5], "std": [0.25]})]) == ((0.5,), (0.25,))
    assert normalization_in([runner({"color": "L", "mean": [0.5], "std": [0.25]}),
                             runner({"color": "L", "mean": [0.4], "std": [0.25]})]) is None  # files that disagree


def test_export_md_s_verify_command_runs_as_printed_for_resized_images(tmp_path, capsys, monkeypatch):
    """export --image-size 16x16 printed a verify command without it: run as printed, verify read the 20-px images at their
    own size and refused them as not fitting the file (exit 2)."""
    import re
    import shlex

    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 40, 20, seed=13)
    model = _learnt_cnn(folder, image_size=(16, 16))
    save_checkpoint(tmp_path / "m.pt", model, "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", folder, "-p", "1", "--image-size", "16x16", "--format", "onnx",
                            "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    command = re.search(r"from this folder: `cwtool (verify [^`]+)`", (tmp_path / "e" / "export.md").read_text()).group(1)
    assert "--image-size 16x16" in command
    monkeypatch.chdir(tmp_path / "e")
    code, _, err = run_cli(shlex.split(command), capsys)
    assert code == 0, err


def test_verify_sizes_a_folder_as_its_files_record(tmp_path, capsys):
    """A model made with --resize 18 (center-cropped to 16x16), verified on its images without the flag: verify said they
    differ in size, advised --image-size (a plain stretch, other rows than the training's), then blamed x/255 rounding."""
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 40, 20, seed=14, aspect=1.25)  # 20x25: neither the input size nor square
    model = _learnt_cnn(folder, resize=18, image_size=(16, 16))
    save_checkpoint(tmp_path / "m.pt", model, "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", folder, "-p", "1", "--resize", "18", "--image-size", "16x16",
                            "--format", "onnx", "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    artifact, baseline = tmp_path / "e" / "artifacts" / "model_fp32.onnx", tmp_path / "e" / "export.json"
    code, out, err = run_cli(["verify", artifact, "--data", folder, "-p", "1", "--baseline", baseline], capsys)
    assert code == 0, err
    assert "sized as the artifacts record (shorter side resized to 18, center-cropped to 16x16)" in out + err, out + err
    code, _, err = run_cli(["verify", artifact, "--data", folder, "-p", "1", "--baseline", baseline, "--image-size", "16x16"], capsys)
    assert code == 2 and "not the rows the baseline was measured on" in err, err  # a size the user names is theirs: a stretch


def test_recorded_resizing_reads_only_what_the_size_flags_would_take():
    import json as json_
    from types import SimpleNamespace

    from toolchain.recorded import recorded_value, resizing_in

    def runner(**pre):  # what a file's record reads as
        return recorded_value(SimpleNamespace(metadata={"preprocessing": json_.dumps({"color": "RGB", "resize": [], "crop": [], **pre})}),
                              "preprocessing")

    assert resizing_in([runner(resize=[18], crop=[16, 16])]) == (18, (16, 16))
    assert resizing_in([runner(resize=[16, 20])]) == (None, (16, 20))
    assert resizing_in([runner()]) is None  # not resized: the images fed as they are
    assert resizing_in([runner(resize=[18], crop=[16, 16], color="")]) is None  # made from arrays
    assert resizing_in([runner(resize=[18], crop=[16, 16]), runner(resize=[20], crop=[16, 16])]) is None  # files disagree
    for edited in ([0], [True], ["18"], [10**9], [18, 1, 2]):
        assert resizing_in([runner(resize=edited, crop=[16, 16])]) is None, edited
    assert resizing_in([runner(resize=[12], crop=[16, 16])]) is None  # a crop larger than the resize: --resize refuses it
    for edited in ({"resize": 8}, {"resize": "8"}, {"crop": 16}, {"resize": None, "crop": None}, {"resize": {"a": 1}}):
        assert resizing_in([runner(**edited)]) is None, edited  # not lists: was a TypeError, exit 3


def test_a_recorded_preparation_of_other_types_is_read_as_none_not_a_crash(tmp_path, capsys):
    """A file's untrusted preprocessing record with a resize that is a number or a color that is a list: verify on an
    image folder ended in "internal error: TypeError" (exit 3); such a record records nothing cwtool can repeat."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from PIL import Image

    from toolchain.recorded import color_in

    assert color_in([{"color": ["L"]}]) is None and color_in([{"color": {"L": 1}}, {"color": "L"}]) is None
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8), "L").save(tmp_path / "imgs" / cls / f"{i}.png")
    weights = numpy_helper.from_array(rng.standard_normal((64, 2)).astype(np.float32), "W")
    shape = numpy_helper.from_array(np.array([-1, 64], dtype=np.int64), "shape")
    graph = helper.make_graph([helper.make_node("Reshape", ["x", "shape"], ["f"]), helper.make_node("MatMul", ["f", "W"], ["logits"])],
                              "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 2])], [weights, shape])
    for record in ({"color": "L", "resize": 8, "crop": [8, 8]}, {"color": ["L"]}, {"color": "L", "resize": "8"}):
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        helper.set_model_props(model, {"preprocessing": json.dumps(record)})
        path = tmp_path / "m.onnx"
        onnx.save(model, path)
        code, out, err = run_cli(["verify", str(path), "--data", str(tmp_path / "imgs"), "-p", "0", "--split", "all"], capsys)
        assert code in (0, 1, 2) and "internal error" not in err, (record, code, err)


def test_bad_input_found_in_round_one_leaves_no_run_to_resume(tmp_path, capsys):
    """An image truncated after its header is found while round 1 reads it (exit 2, "replace or remove it"). Removed, the
    same command was told the run directory exists (pass --resume), and --resume that the data differs: a loop."""
    from toolchain.models.loading import save_checkpoint

    train = image_folder(tmp_path / "train", 60, 16, seed=10)
    held = {name: image_folder(tmp_path / name, 30, 16, seed=11 + i) for i, name in enumerate(("val", "test"))}
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(train), "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    whole = (train / "class0" / "00000.png").read_bytes()
    bad = train / "class0" / "zz_truncated.png"
    bad.write_bytes(whole[: len(whole) * 2 // 3])
    command = ["compress", tmp_path / "m.pt", "--data", train, "--val", held["val"], "--test", held["test"], "-p", "1",
               "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "1", "--confidence", "0.5", "--format", "onnx"]
    code, _, err = run_cli([*command, "--out", tmp_path / "deep" / "er" / "run"], capsys)
    assert code == 2 and "zz_truncated.png" in err, err
    assert not (tmp_path / "deep").exists()  # made by this run (with the folders above it), nothing saved in it: gone
    (tmp_path / "kept").mkdir()  # a folder the user made: its own stays, what the run wrote goes
    code, _, err = run_cli([*command, "--out", tmp_path / "kept"], capsys)
    assert code == 2 and (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir()), err
    bad.unlink()
    code, _, err = run_cli([*command, "--out", tmp_path / "run"], capsys)
    assert code in (0, 1) and (tmp_path / "run" / "report.json").is_file(), err


def test_a_checkpoint_records_its_images_preprocessing_and_export_refuses_other(tmp_path, capsys):
    """compress's pruned.pt of a model trained with --normalize 0.5:0.25, exported without it: the file missed every
    positive (its inputs were not the training's), and export.md called it 'deploy: yes'."""
    import torch

    train = image_folder(tmp_path / "train", 60, 16, seed=10)
    held = {name: image_folder(tmp_path / name, 30, 16, seed=11 + i) for i, name in enumerate(("val", "test"))}
    norm = ((0.5,) * 3, (0.25,) * 3)
    torch.save(_learnt_cnn(train, normalize=norm).state_dict(), tmp_path / "sd.pt")  # a user's own state_dict: no record
    flags = ["--normalize", "0.5:0.25"]
    code, _, err = run_cli(["compress", tmp_path / "sd.pt", "--arch", "digits-cnn", "--arch-kwargs",
                            '{"in_channels": 3, "num_classes": 2, "width": 8}', "--data", train, "--val", held["val"], "--test",
                            held["test"], "-p", "1", *flags, "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "1",
                            "--confidence", "0.5", "--skip-export", "--out", tmp_path / "run"], capsys)
    assert code in (0, 1), err
    export = ["export", tmp_path / "run" / "pruned.pt", "--data", train, "--val", held["val"], "--test", held["test"], "-p", "1",
              "--format", "onnx", "--precision", "fp32", "--time-runs", "0"]
    code, _, err = run_cli([*export, "--normalize", "none", "--out", tmp_path / "e1"], capsys)  # a flag against the record
    assert code == 2 and "was trained on images prepared otherwise" in err and "--normalize 0.5,0.5,0.5:0.25,0.25,0.25" in err, err
    assert not (tmp_path / "e1").exists()
    code, _, err = run_cli([*export, *flags, "--out", tmp_path / "e2"], capsys)
    assert code in (0, 1) and (tmp_path / "e2" / "export.md").is_file(), err
    # without the flag: prepared as its checkpoint records (as evaluate and verify do), and said; the same files
    code, _, err = run_cli([*export, "--out", tmp_path / "e4"], capsys)
    assert code in (0, 1) and "note: the images were normalized as" in err and "std [0.25, 0.25, 0.25]" in err, err
    assert [a["sha256"] for a in json.loads((tmp_path / "e4" / "export.json").read_text())["artifacts"]] == \
        [a["sha256"] for a in json.loads((tmp_path / "e2" / "export.json").read_text())["artifacts"]]
    code, out, err = run_cli(["evaluate", tmp_path / "run" / "pruned.pt", "--data", held["test"], "-p", "1"], capsys)
    assert code == 0 and "prepared otherwise" not in out + err, out + err  # evaluate prepares them as recorded, and says so
    assert "the images were normalized as" in err and "std [0.25, 0.25, 0.25]" in err, err
    code, out, err = run_cli(["evaluate", tmp_path / "run" / "pruned.pt", "--data", held["test"], "-p", "1", "--normalize", "none"],
                             capsys)
    assert code == 0 and "warning: '" in out + err and "prepared otherwise" in out + err, out + err  # a flag's choice: said, not refused
    # the state_dict itself records nothing: its export is made, and what the model fails to detect is in the report too
    code, _, err = run_cli([*export[:1], tmp_path / "sd.pt", "--arch", "digits-cnn", "--arch-kwargs",
                            '{"in_channels": 3, "num_classes": 2, "width": 8}', *export[2:], "--out", tmp_path / "e3"], capsys)
    report = json.loads((tmp_path / "e3" / "export.json").read_text())
    assert code in (0, 1) and len(report["warnings"]) == 1 and "the model's own decisions" in report["warnings"][0], err
    assert "**Warning**: the model's own decisions" in (tmp_path / "e3" / "export.md").read_text()
    assert all(c["file"] is None for c in report["deploy"]["choices"]), report["deploy"]  # no file named to deploy
    # a model from `cwtool train` records it too: compress of it with another flag is refused before any work, without
    # one it is prepared as recorded (evaluate did so, and compress refused it, naming the flags)
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--arch-kwargs", '{"in_channels": 3, "num_classes": 2, "width": 8}',
                            "--data", train, *flags, "--epochs", "10", "--batch-size", "8", "--out", tmp_path / "trained.pt"], capsys)
    assert code == 0, err
    compress = ["compress", tmp_path / "trained.pt", "--data", train, "--val", held["val"], "--test", held["test"], "-p", "1",
                "--skip-export", "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "1", "--confidence", "0.5"]
    code, _, err = run_cli([*compress, "--normalize", "none", "--out", tmp_path / "run2"], capsys)
    assert code == 2 and "prepared otherwise" in err and not (tmp_path / "run2").exists(), err
    code, _, err = run_cli([*compress, "--out", tmp_path / "run3"], capsys)
    assert code in (0, 1) and "note: the images were normalized as" in err, err
    assert "to choose otherwise" not in err, err  # compress refuses another normalization than the checkpoint's (above)
    assert "std [0.25, 0.25, 0.25]" in (tmp_path / "run3" / "compress.log").read_text()
    # the run's identity is the flags given (the checkpoint, known by its sha256, fixes the rest): a run an earlier cwtool
    # began without them, reading the folder alike, resumes
    assert "color" not in json.loads((tmp_path / "run3" / "manifest.json").read_text())["inputs"]["data"]
    code, _, err = run_cli([*compress, *flags, "--color", "rgb", "--resume", "--out", tmp_path / "run3"], capsys)  # spelled out
    assert code in (0, 1) and "other inputs" not in err, err


def test_a_folder_of_images_inside_a_class_folder_is_refused_not_left_out(tmp_path):
    """melanoma/batch2/*.jpg (torchvision reads below the class folders) was left out as '1 entry ... not a PNG/JPEG file':
    half the protected class vanished from every count, and from the validation the promise rests on."""
    folder = image_folder(tmp_path / "imgs", 20, 16, seed=3)
    (folder / "class1" / "empty_batch").mkdir()
    assert "a folder without images" in load_data(str(folder), seed=0).preprocessing.note  # nothing lost: left out, said
    nested = folder / "class1" / "batch2"
    nested.mkdir()
    for f in sorted((folder / "class1").glob("*.png"))[:4]:
        f.rename(nested / f.name)
    with pytest.raises(UserError, match=r"'class1/batch2' in .* is a folder of images inside a class folder: .* move them up into 'class1'"):
        load_data(str(folder), seed=0)
    for f in nested.iterdir():
        f.rename(folder / "class1" / f.name)
    nested.rmdir()
    for name, target in (("here", "."), ("up", ".."), ("top", folder)):  # links back up: their images are read already
        (folder / "class1" / name).symlink_to(target)
    (folder / "class0" / "loop").symlink_to(".")  # in a class folder read before another
    loaded = load_data(str(folder), seed=0)
    assert len(loaded.split("all")[1]) == 20 and "5 other entries of the class folders left out" in loaded.preprocessing.note
    assert "a link back up" in loaded.preprocessing.note


def test_verify_on_a_folder_without_some_classes_names_the_fix(tmp_path, capsys):
    """A device's check folder held the protected class and one other: 'the file has 3 outputs but the data names 2 classes:
    give a model for this data', where --class-names with the file's classes was the fix."""
    import shutil

    from clirun import trained_briefly
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 60, 16, seed=21)
    shutil.copytree(folder / "class0", folder / "class2")
    model = trained_briefly(registry.create("digits-cnn", in_channels=3, num_classes=3, width=8), load_data(str(folder), seed=0), epochs=5)
    save_checkpoint(tmp_path / "m.pt", model, "digits-cnn", {"in_channels": 3, "num_classes": 3, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", folder, "-p", "1", "--format", "onnx", "--precision", "fp32",
                            "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    check = tmp_path / "check"
    for name in ("class1", "class2"):
        shutil.copytree(folder / name, check / name)
    artifact = tmp_path / "e" / "artifacts" / "model_fp32.onnx"
    code, _, err = run_cli(["verify", artifact, "--data", check, "-p", "class1", "--split", "all"], capsys)
    assert code == 2 and "give --class-names class0,class1,class2 so its labels are the file's" in err, err
    code, _, err = run_cli(["verify", artifact, "--data", check, "-p", "class1", "--split", "all", "--class-names",
                            "class0,class1,class2"], capsys)
    assert code in (0, 1), err
    # a folder of the protected class alone ("did we miss any?"): judged, as an .npz of its rows was; it said "has only one
    # class: a classifier needs at least two"
    shutil.rmtree(check / "class2")
    code, out, err = run_cli(["verify", artifact, "--data", check, "-p", "class1", "--split", "all", "--class-names",
                              "class0,class1,class2", "--json", tmp_path / "v.json"], capsys)
    judged = json.loads((tmp_path / "v.json").read_text())
    assert code in (0, 1) and judged["data"]["n"] == 30 and judged["data"].get("only_protected"), out + err
    code, _, err = run_cli(["compress", tmp_path / "m.pt", "--data", check, "-p", "class1", "--out", tmp_path / "c"], capsys)
    assert code == 2 and "a classifier needs at least two" in err, err  # data to train on still needs two


def test_a_calibration_set_of_images_prepared_otherwise_is_refused(tmp_path, capsys):
    """A set drawn from images in [0, 1] calibrated a model fed [-1, 1] without a word: the int8 file lost a layer to float on
    a full-integer target. A set records its images' preprocessing (calibrate takes the image flags too)."""
    from toolchain.models.loading import save_checkpoint
    from toolchain.quantize.calibration import load_calibration

    folder = image_folder(tmp_path / "imgs", 60, 16, seed=23)
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(folder, normalize=((0.5,) * 3, (0.25,) * 3)), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))  # no data record: the set's is what is checked
    code, _, err = run_cli(["calibrate", "--data", folder, "-p", "1", "--calibration-size", "16", "--out", tmp_path / "plain.npz"], capsys)
    assert code == 0 and load_calibration(tmp_path / "plain.npz")[1]["preprocessing"]["mean"] == [], err
    export = ["export", tmp_path / "m.pt", "--data", folder, "-p", "1", "--normalize", "0.5:0.25", "--format", "onnx", "--precision",
              "int8", "--time-runs", "0"]
    code, _, err = run_cli([*export, "--calibration", tmp_path / "plain.npz", "--out", tmp_path / "e1"], capsys)
    assert code == 2 and "holds images prepared otherwise than this data's" in err, err
    assert "cwtool calibrate with --color rgb --normalize 0.5,0.5,0.5:0.25,0.25,0.25)" in err, err  # this data's, not the set's
    code, _, err = run_cli(["calibrate", "--data", folder, "-p", "1", "--calibration-size", "16", "--normalize", "0.5:0.25",
                            "--out", tmp_path / "norm.npz"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*export, "--calibration", tmp_path / "norm.npz", "--out", tmp_path / "e2"], capsys)
    assert code in (0, 1), err
    # a set of another size: the flags that make one for this data are named too (the user typed none of them)
    code, _, err = run_cli(["calibrate", "--data", folder, "-p", "1", "--calibration-size", "16", "--image-size", "12",
                            "--out", tmp_path / "small.npz"], capsys)
    assert code == 0, err
    code, _, err = run_cli([*export, "--calibration", tmp_path / "small.npz", "--out", tmp_path / "e3"], capsys)
    assert code == 2 and "holds rows of shape (3, 12, 12), the model's input is (3, 16, 16)" in err, err
    assert "cwtool calibrate with --color rgb --normalize 0.5,0.5,0.5:0.25,0.25,0.25)" in err, err


def test_class_names_with_a_comma_are_given_as_a_json_list(tmp_path):
    """A class folder 'naevus, benign' was read, but --class-names could not name it: split at its comma, every order
    was refused as naming a class the folder does not have."""
    folder = image_folder(tmp_path / "imgs", 20, 16, seed=4)
    (folder / "class0").rename(folder / "naevus, benign")
    dataset = load_data(str(folder), seed=0, class_names='["class1", "naevus, benign"]')
    assert list(dataset.class_names) == ["class1", "naevus, benign"]
    with pytest.raises(UserError, match="is read as a JSON list of strings"):
        load_data(str(folder), seed=0, class_names='["class1", 2]')
    from toolchain.data.labels import class_names_value

    assert class_names_value(["a, b", "c"]) == '["a, b", "c"]' and class_names_value(["a", "c"]) == "a,c"


def test_a_tflite_file_without_its_sidecar_is_named_when_a_folder_does_not_fit(tmp_path, capsys):
    """A .tflite copied without its .json: verify could not size the folder as the file was made for, and advised
    --image-size (another preprocessing) with no word of the sidecar that holds it."""
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 40, 20, seed=14, aspect=1.25)
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(folder, resize=18, image_size=(16, 16)), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["export", tmp_path / "m.pt", "--data", folder, "-p", "1", "--resize", "18", "--image-size", "16x16",
                            "--format", "tflite", "--precision", "fp32", "--time-runs", "0", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1), err
    artifact = next((tmp_path / "e" / "artifacts").glob("*.tflite"))
    code, _, err = run_cli(["verify", artifact, "--data", folder, "-p", "1"], capsys)
    assert code in (0, 1), err  # with its sidecar: sized as recorded
    artifact.with_name(artifact.name + ".json").unlink()
    code, _, err = run_cli(["verify", artifact, "--data", folder, "-p", "1"], capsys)
    assert code == 2 and f"{artifact.name} has no readable sidecar {artifact.name}.json beside it" in err, err


def test_a_shape_error_names_the_preprocessing_a_checkpoint_records(tmp_path, capsys):
    """A model trained with --resize 18 --image-size 16x16, exported from its own folder without them: 'was made for samples
    of shape (3, 16, 16), the data's are (3, 20, 25): give the data it was trained on' (it was that data)."""
    folder = image_folder(tmp_path / "imgs", 40, 20, seed=15, aspect=1.25)
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", folder, "--resize", "18", "--image-size", "16x16", "--epochs", "1",
                            "--out", tmp_path / "m.pt"], capsys)
    assert code == 0, err
    export = ["export", tmp_path / "m.pt", "--format", "onnx", "--data", folder, "-p", "1", "--time-runs", "0"]
    code, _, err = run_cli([*export, "--out", tmp_path / "e"], capsys)  # prepared as the checkpoint records, and said
    assert code in (0, 1) and "the images were sized as" in err and "(shorter side resized to 18, center-cropped to 16x16)" in err, err
    code, _, err = run_cli([*export, "--image-size", "12", "--out", tmp_path / "e2"], capsys)  # a size given otherwise
    assert code == 2 and "its checkpoint records how its images were prepared: give --color rgb --resize 18 --image-size 16x16 " \
                         "--normalize none" in err, err
    # evaluate prepares them as recorded (as verify does from a file's record), and says so
    code, _, err = run_cli(["evaluate", tmp_path / "m.pt", "--data", folder, "-p", "1"], capsys)
    assert code == 0 and "shorter side resized to 18, center-cropped to 16x16" in err, err
    # rows of an .npz take no image flag (--image-size "only applies to an ImageFolder"): the advice names the folder
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "rows.npz", x=rng.normal(size=(40, 12)).astype(np.float32), y=np.arange(40) % 2)
    for command in (["evaluate", tmp_path / "m.pt"], ["compress", tmp_path / "m.pt", "--out", tmp_path / "c"]):
        code, _, err = run_cli([*command, "--data", tmp_path / "rows.npz", "-p", "1"], capsys)
        assert code == 2 and "give the data it was trained on: a folder of images, prepared with --color rgb --resize 18" in err, err


def test_a_test_image_that_cannot_be_read_is_said_before_any_round(tmp_path, capsys):
    """The test rows were first read after every round: a truncated test image ended the run there (exit 2), and replacing
    it, as the message said, changed the folder, so --resume refused the rounds as other inputs: all retraining lost (a
    new user's finding). The test rows are now read with the other checks, before anything is written."""
    from toolchain.models.loading import save_checkpoint

    train = image_folder(tmp_path / "train", 60, 16, seed=10)
    held = {name: image_folder(tmp_path / name, 30, 16, seed=11 + i) for i, name in enumerate(("val", "test"))}
    broken = sorted(held["test"].glob("class1/*.png"))[0]
    broken.write_bytes(broken.read_bytes()[: broken.stat().st_size // 2])
    save_checkpoint(tmp_path / "m.pt", _learnt_cnn(train), "digits-cnn", {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16))
    code, _, err = run_cli(["compress", tmp_path / "m.pt", "--data", train, "--val", held["val"], "--test", held["test"], "-p", "1",
                            "--keep-params", "0.5", "--epochs", "1", "--max-accuracy-drop", "1", "--confidence", "0.5",
                            "--skip-export", "--out", tmp_path / "run"], capsys)
    assert code == 2 and "cannot read image" in err and broken.name in err, err
    assert not (tmp_path / "run").exists() and "round 1" not in err, err


@pytest.mark.parametrize("command", ["evaluate", "export", "compress"])
def test_images_refused_for_their_sizes_name_the_flags_the_model_s_checkpoint_records(command, tmp_path, capsys):
    """A folder of mixed sizes without --resize was refused with "give an image size", then the model asked for --arch,
    and only a third try named the flags its checkpoint records (a new user's finding): the first refusal names them."""
    from toolchain.data.identity import preprocessing_record
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint

    folder = image_folder(tmp_path / "imgs", 12, 16, seed=5)
    odd = sorted(folder.glob("class0/*.png"))[0]
    from PIL import Image

    Image.new("RGB", (20, 18)).save(odd)
    prepared = load_data(str(folder), seed=0, resize=16, normalize=((0.5,) * 3, (0.5,) * 3)).preprocessing
    save_checkpoint(tmp_path / "m.pt", registry.create("digits-cnn", in_channels=3, num_classes=2, width=8), "digits-cnn",
                    {"in_channels": 3, "num_classes": 2, "width": 8}, (3, 16, 16),
                    extra={"data": {"preprocessing": preprocessing_record(prepared)}})
    # (compress's files are not under test here: what it says of the images is said before its first round)
    extra = {"evaluate": [], "export": ["--out", tmp_path / "x"], "compress": ["--skip-export", "--out", tmp_path / "c"]}[command]
    code, _, err = run_cli([command, tmp_path / "m.pt", "--data", folder, "-p", "1", *extra], capsys)
    # each prepares them as the checkpoint records (as verify does from a file's record), and says so: export and compress
    # refused them, naming the flags, where evaluate went on
    assert "differ in size" not in err and "the images were sized as" in err, err
    assert "shorter side resized to 16, center-cropped to 16x16" in err, err
    # a flag given otherwise is the user's choice: export and compress refuse it naming the checkpoint's flags, evaluate warns
    extra = {"evaluate": [], "export": ["--out", tmp_path / "x2"], "compress": ["--out", tmp_path / "c2"]}[command]
    code, _, err = run_cli([command, tmp_path / "m.pt", "--data", folder, "-p", "1", "--normalize", "none", *extra], capsys)
    assert code == (0 if command == "evaluate" else 2) and "was trained on images prepared otherwise" in err, err
    assert "give --color rgb --resize 16 --normalize 0.5,0.5,0.5:0.5,0.5,0.5" in " ".join(err.split()), err


def test_evaluate_prepares_a_folder_as_the_checkpoint_records_its_training_s_images(tmp_path, capsys):
    """A model trained with --normalize 0.5:0.5 and --image-size was evaluated without them on its own images: other inputs
    than it learnt on, a warning, and its numbers (AUC 0.09 for a new user's pruned.pt) with exit 0. evaluate now
    prepares the images as the checkpoint records, as verify does from a file's record, and says so."""
    folder = image_folder(tmp_path / "imgs", 40, 20, seed=5)
    model = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", folder, "--image-size", "16", "--normalize", "0.5:0.5",
                            "--epochs", "1", "--out", model], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", model, "--data", folder, "-p", "class1", "--json", tmp_path / "as_recorded.json"], capsys)
    assert code == 0 and "prepared otherwise" not in err, err
    assert "the images were normalized as" in err and "(mean [0.5, 0.5, 0.5], std [0.5, 0.5, 0.5])" in err, err
    assert "the images were sized as" in err and "resized to 16x16" in err, err
    code, _, err = run_cli(["evaluate", model, "--data", folder, "-p", "class1", "--image-size", "16", "--normalize", "0.5:0.5",
                            "--json", tmp_path / "given.json"], capsys)
    assert code == 0 and "the images were" not in err, err
    recorded, given = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("as_recorded", "given"))
    assert recorded["rows_sha256"] == given["rows_sha256"] and recorded["protected"] == given["protected"]
    # a flag still chooses otherwise: said, as before
    code, _, err = run_cli(["evaluate", model, "--data", folder, "-p", "class1", "--image-size", "16", "--normalize", "none"], capsys)
    assert code == 0 and "prepared otherwise" in err, err


def test_held_out_images_of_another_size_take_a_resize_to_the_model_s_own_size(tmp_path, capsys):
    """A model trained on 16-px images without a resize, held-out images of 20 px: --image-size 16 (a no-op for the training
    images, which were all 16 px) was refused as "prepared otherwise (resize none there, [16, 16] here)", and the advice
    named --image-size and "no --image-size" at once: the only way out was resizing the files (a new user's finding)."""
    train = image_folder(tmp_path / "train", 40, 16, seed=21)
    held = {name: image_folder(tmp_path / name, 20, 20, seed=22 + i) for i, name in enumerate(("val", "test"))}
    model = tmp_path / "m.pt"
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", train, "--epochs", "1", "--out", model], capsys)
    assert code == 0, err
    export = ["export", model, "--data", train, "--val", held["val"], "--test", held["test"], "-p", "1", "--format", "onnx",
              "--precision", "fp32", "--time-runs", "0"]
    code, _, err = run_cli([*export, "--image-size", "16", "--out", tmp_path / "e"], capsys)
    assert code in (0, 1) and "prepared otherwise" not in err and (tmp_path / "e" / "export.json").is_file(), err
    code, _, err = run_cli([*export, "--image-size", "12", "--out", tmp_path / "e12"], capsys)  # another size is another input
    assert code == 2 and "was made for samples of shape (3, 16, 16), the data's are (3, 12, 12)" in err, err


def test_images_of_another_size_than_a_model_trained_without_resize_are_told_the_size_that_works(tmp_path, capsys):
    """A model trained on 12-px images (no resize recorded) and held-out images of 20 px: evaluate advised "no
    --image-size" (the same refusal again), verify named no way out, and two files of different sizes verified together
    were refused as one shape mismatch naming neither cause nor file. Each now names what works, and it does."""
    train, big = image_folder(tmp_path / "train", 40, 12, seed=3), image_folder(tmp_path / "big", 30, 20, seed=4)
    for name, extra in (("m12", []), ("m8", ["--image-size", "8x8"])):
        code, _, err = run_cli(["train", "--arch", "mlp", "--data", train, "--epochs", "1", "--out", tmp_path / f"{name}.pt", *extra], capsys)
        assert code == 0, err
        code, _, err = run_cli(["export", tmp_path / f"{name}.pt", "--data", train, "-p", "1", "--format", "onnx", "--precision",
                                "fp32", "--time-runs", "0", "--out", tmp_path / name, *extra], capsys)
        assert code in (0, 1), err
    code, _, err = run_cli(["evaluate", tmp_path / "m12.pt", "--data", big, "-p", "1", "--split", "all"], capsys)
    assert code == 2 and "--image-size 12x12 (the model's own size)" in err and "no --image-size" not in err, err
    code, _, err = run_cli(["evaluate", tmp_path / "m12.pt", "--data", big, "-p", "1", "--split", "all", "--image-size", "12x12"], capsys)
    assert code == 0, err
    m12, m8 = (str(tmp_path / name / "artifacts" / "model_fp32.onnx") for name in ("m12", "m8"))
    code, _, err = run_cli(["verify", m12, "--data", big, "-p", "1", "--split", "all"], capsys)
    assert code == 2 and "--image-size 12x12 resizes them" in err, err
    code, _, err = run_cli(["verify", m12, "--data", big, "-p", "1", "--split", "all", "--image-size", "12x12"], capsys)
    assert code in (0, 1) and "Traceback" not in err, err
    code, _, err = run_cli(["verify", m12, m8, "--data", train, "-p", "1", "--split", "all"], capsys)
    assert code == 2 and "record different preparations" in err and "m12/" in err and "size 8x8" in err, err
    assert len(err.strip().splitlines()) == 1, err
    code, out, err = run_cli(["verify", m12, "--data", big, "-p", "1", "--split", "all", "--image-size", "12x12", "--json",
                              tmp_path / "v.json"], capsys)  # the advice followed: no note that it was prepared otherwise
    assert code in (0, 1) and not any("preprocessed otherwise" in n for n in json.loads((tmp_path / "v.json").read_text())["notes"])
    # a file whose images were all 12 px (no resize) and one made with --image-size 12x12 prepare 12-px images alike
    code, _, err = run_cli(["train", "--arch", "mlp", "--data", train, "--epochs", "1", "--image-size", "12x12", "--out",
                            tmp_path / "r12.pt"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["export", tmp_path / "r12.pt", "--data", train, "-p", "1", "--format", "onnx", "--precision",
                            "fp32", "--time-runs", "0", "--image-size", "12x12", "--out", tmp_path / "r12"], capsys)
    assert code in (0, 1), err
    code, _, err = run_cli(["verify", m12, str(tmp_path / "r12" / "artifacts" / "model_fp32.onnx"), "--data", train, "-p", "1",
                            "--split", "all", "--json", tmp_path / "both.json"], capsys)
    assert code in (0, 1) and "record different preparations" not in err, err
    assert not any("preprocessed otherwise" in n for n in json.loads((tmp_path / "both.json").read_text())["notes"])


def test_a_model_trained_with_a_test_folder_is_evaluated_on_every_row_of_it(tmp_path, capsys):
    """evaluate of a dense model trained with --test judged a seeded 60 of the folder's 402 rows, its pruned.pt all 402:
    two numbers on other rows, side by side (a dermatology user's finding). train records the folder's rows as compress does."""
    train, test = image_folder(tmp_path / "train", 40, 16, seed=3), image_folder(tmp_path / "test", 30, 16, seed=4)
    code, _, err = run_cli(["train", "--arch", "digits-cnn", "--data", train, "--test", test, "--epochs", "1",
                            "--out", tmp_path / "dense.pt"], capsys)
    assert code == 0, err
    code, _, err = run_cli(["evaluate", tmp_path / "dense.pt", "--data", test, "-p", "1", "--json", tmp_path / "e.json"], capsys)
    assert code == 0 and json.loads((tmp_path / "e.json").read_text())["n"] == 30, err
    assert "every row of test is judged" in err and "dense.pt' records as its --test rows" in err, err
    assert "compress run" not in err, err  # train wrote it (evaluate said "the compress run of 'dense.pt'")
