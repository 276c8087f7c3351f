"""Nothing in a data file is trusted: every hostile or malformed --data input is a one-line
UserError (exit 2), refused before anything large is allocated.

The first block runs the real CLI (`python -m toolchain verify`, which loads the data before it
opens any artifact and imports no torch) under a 3 GB address-space limit, one case per attack
vector: each must exit 2 with one stderr line, quickly. The files are crafted small: a header
that declares gigabytes in front of a few kilobytes of data.
"""

from __future__ import annotations

import csv
import gzip
import io
import os
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from toolchain import limits
from toolchain.data import MAX_CLASSES, load_data
from toolchain.data.idx import write_idx
from toolchain.data.rows import is_pool_npz, load_rows
from toolchain.data.sources import csv_file
from toolchain.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
ADDRESS_LIMIT_KB = 3_000_000  # ulimit -v: about 2.9 GiB


# --------------------------------------------------------------------------- crafting helpers


def npy_bytes(descr: str, shape: tuple, payload: bytes = b"") -> bytes:
    """A .npy header declaring (descr, shape), followed by ``payload`` (however short)."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


def write_npz(path: Path, members: dict[str, bytes], method=zipfile.ZIP_DEFLATED) -> Path:
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for name, data in members.items():
            zf.writestr(name + ".npy", data)
    return path


def npy_of(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.lib.format.write_array(buf, a, allow_pickle=True)
    return buf.getvalue()


def png_bytes(width: int, height: int, bit_depth: int = 8, color_type: int = 0, rows: int = 0) -> bytes:
    """A PNG whose header says width x height; the IDAT holds only ``rows`` zero rows."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    bands = {0: 1, 2: 3, 4: 2, 6: 4}[color_type]
    row = b"\x00" * (1 + (width * bands * bit_depth + 7) // 8)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    idat = zlib.compress(row * rows, 9)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def small_png(path: Path, value: int = 0, size=(8, 8), mode="L") -> Path:
    from PIL import Image

    Image.new(mode, (size[1], size[0]), value).save(path)
    return path


def idx_header(code: int, dims: tuple) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def idx_folder(folder: Path, train_images: bytes | None = None, gz_name=True) -> Path:
    """A valid little idx folder; ``train_images`` (raw file bytes) replaces the train images."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    write_idx(folder / "train-images-idx3-ubyte.gz", rng.integers(0, 256, (20, 4, 4), dtype=np.uint8))
    write_idx(folder / "train-labels-idx1-ubyte.gz", (np.arange(20) % 2).astype(np.uint8))
    write_idx(folder / "t10k-images-idx3-ubyte.gz", rng.integers(0, 256, (6, 4, 4), dtype=np.uint8))
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", (np.arange(6) % 2).astype(np.uint8))
    if train_images is not None:
        target = folder / "train-images-idx3-ubyte.gz"
        if not gz_name:
            target.unlink()
            target = folder / "train-images-idx3-ubyte"
        target.write_bytes(train_images)
    return folder


def _plain_onnx(folder: Path) -> Path:
    """A tiny classifier file with no metadata of cwtool's (8x8 gray images, 2 classes)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = numpy_helper.from_array(np.zeros((64, 2), np.float32), "w")
    graph = helper.make_graph([helper.make_node("Flatten", ["x"], ["f"]), helper.make_node("MatMul", ["f", "w"], ["y"])], "plain",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 2])], [weights])
    path = folder / "plain.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), path)
    return path


def run_verify_limited(data: Path | str, artifact: str = "nonexistent.onnx") -> tuple[int, str, float]:
    """(exit code, stderr, seconds) of `cwtool verify` on ``data`` under `ulimit -v 3000000`."""
    cmd = (
        f"ulimit -v {ADDRESS_LIMIT_KB}; exec {sys.executable} -m toolchain "
        f"verify '{artifact}' --data '{data}' -p 0"
    )
    t0 = time.perf_counter()
    out = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    return out.returncode, out.stderr, time.perf_counter() - t0


def assert_refused(data, *match: str, artifact: str = "nonexistent.onnx") -> str:
    code, err, secs = run_verify_limited(data, artifact)
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "nonexistent.onnx" not in err, err  # refused on the data, before the artifacts
    for m in match:
        assert m.lower() in err.lower(), err
    assert secs < 30, secs
    return lines[0]


# --------------------------------------------------------------------------- the CLI, under 3 GB

linux_only = pytest.mark.skipif(sys.platform != "linux", reason="ulimit -v and /proc are Linux's")


@linux_only
def test_cli_fits_in_3gb_and_reaches_the_artifact_check(tmp_path):
    """Control: a good .npz passes the data stage under the limit (then the artifact is missing)."""
    f = tmp_path / "ok.npz"
    np.savez(f, x=np.zeros((30, 4), np.float32), y=np.arange(30) % 2)
    code, err, _ = run_verify_limited(f)
    assert code == 2 and "nonexistent.onnx" in err, err


@linux_only
def test_cli_npz_bomb_declaring_20gb_exits_2(tmp_path):
    # x declares 5e9 float32 (20 GB); its member holds 1 MB of zeros, deflated to about 1 KB.
    bomb = write_npz(tmp_path / "bomb.npz", {
        "x": npy_bytes("<f4", (5_000_000_000,), b"\x00" * 1_000_000),
        "y": npy_bytes("<i8", (5_000_000_000,), b"\x00" * 1_000),  # as many labels: refused for its size, not its counts
    })
    assert bomb.stat().st_size < 10_000
    line = assert_refused(bomb, "'x'", "20.0 GB", "memory available")
    assert "address-space limit" in line or "MemAvailable" in line


@linux_only
def test_cli_idx_gz_bomb_exits_2(tmp_path):
    # train images declare 100000 x 1000 x 1000 bytes (100 GB) ahead of 1 MB of gzipped zeros.
    data = gzip.compress(idx_header(0x08, (100_000, 1000, 1000)) + b"\x00" * 1_000_000)
    folder = idx_folder(tmp_path / "idxbomb", data)
    assert_refused(folder, "idx file", "100.0 GB", "memory available")


@linux_only
def test_cli_idx_dims_product_overflowing_int64_exits_2(tmp_path):
    # (2**32-1)**3 elements: about 7.9e28, far past int64 (np.prod would wrap around).
    dims = (2**32 - 1,) * 3
    plain = idx_folder(tmp_path / "overflow", idx_header(0x08, dims), gz_name=False)
    assert_refused(plain, "not a valid idx file", str(dims))
    gz = idx_folder(tmp_path / "overflow_gz", gzip.compress(idx_header(0x08, dims)))
    assert_refused(gz, "memory available")


@linux_only
def test_cli_png_bomb_exits_2(tmp_path):
    # 100k x 100k 1-bit PNG: ten billion pixels declared, a few hundred bytes on disk.
    for cls in ("a", "b"):
        (tmp_path / "pngbomb" / cls).mkdir(parents=True)
        for i in range(3):
            small_png(tmp_path / "pngbomb" / cls / f"{i}.png", value=40 * i)
    bomb = tmp_path / "pngbomb" / "a" / "0.png"
    bomb.write_bytes(png_bytes(100_000, 100_000, bit_depth=1, rows=10))
    assert bomb.stat().st_size < 1000
    assert_refused(tmp_path / "pngbomb", "decompression bomb", "0.png")


@linux_only
def test_cli_image_folder_with_huge_first_image_exits_2(tmp_path):
    # The first image (sorted) is 9000 x 9000: it no longer sets the size of every other image.
    root = tmp_path / "hugefirst"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            small_png(root / cls / f"{i}.png", value=40 * i)
    (root / "a" / "0.png").write_bytes(png_bytes(9000, 9000, rows=10))
    # a folder of mixed sizes is sized as the artifacts record: a file that exists (recording none), so that the refusal is
    # the data's (a missing one is named as missing: nothing was there to record a size)
    line = assert_refused(root, "differ in size", "a/0.png", "9000x9000", "image size", artifact=str(_plain_onnx(tmp_path)))
    assert "8x8" in line


@linux_only
def test_cli_image_folder_of_same_size_huge_images_is_read_on_demand(tmp_path):
    # 40 images of 9000 x 9000 (each under Pillow's bomb limit): 13 GB as a float32 tensor, which is never
    # built: the splits hold paths, so the data stage passes under 3 GB and verify reaches the artifact.
    root = tmp_path / "hugeall"
    big = png_bytes(9000, 9000, rows=10)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(20):
            (root / cls / f"{i:02d}.png").write_bytes(big)
    code, err, secs = run_verify_limited(root)
    assert code == 2 and "nonexistent.onnx" in err and secs < 30, err


@linux_only
def test_cli_csv_label_of_ten_to_the_twelve_exits_2(tmp_path):
    f = tmp_path / "big_label.csv"
    rows = [[i, i % 2] for i in range(20)]
    rows[7][1] = 10**12
    f.write_text("f,y\n" + "\n".join(f"{a},{b}" for a, b in rows) + "\n")
    assert_refused(f, "label 1000000000000", "100,000 classes")


# --------------------------------------------------------------------------- class-count cap, in-process


def expect(match: str, spec, **kw) -> str:
    with pytest.raises(UserError) as info:
        load_data(str(spec), **kw)
    msg = str(info.value)
    assert "\n" not in msg, msg
    assert match.lower() in msg.lower(), msg
    return msg


def test_label_cap_in_every_loader(tmp_path):
    assert MAX_CLASSES == 100_000
    x = np.zeros((12, 3), np.float32)
    y = np.arange(12) % 2
    y_big = y.copy()
    y_big[3] = MAX_CLASSES
    np.savez(tmp_path / "a.npz", x=x, y=y_big)
    expect("beyond cwtool's limit of 100,000 classes", tmp_path / "a.npz")
    np.savez(tmp_path / "f.npz", x=x, y=np.where(y == 1, 1e300, 0.0))  # would wrap in int64
    expect("limit of 100,000 classes", tmp_path / "f.npz")
    np.savez(tmp_path / "u.npz", x=x, y=np.where(y == 1, np.uint64(2**63 + 5), np.uint64(0)))
    expect("limit of 100,000 classes", tmp_path / "u.npz")
    with pytest.raises(UserError, match="100,000 classes"):  # verify's reader too
        load_rows(str(tmp_path / "a.npz"))

    folder = idx_folder(tmp_path / "idx")
    write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.array([0, 1, 0, 1, 0, 10**6], dtype=np.int32))
    expect("limit of 100,000 classes", folder)

    names = np.array([f"c{i}" for i in range(MAX_CLASSES + 1)])
    np.savez(tmp_path / "n.npz", x=x, y=y, class_names=names)
    expect("100,001 entries", tmp_path / "n.npz")
    expect("beyond cwtool's limit", tmp_path / "a.npz", class_names=list(names))


def test_csv_with_too_many_distinct_labels_or_huge_labels(tmp_path, monkeypatch):
    monkeypatch.setattr(csv_file, "MAX_CLASSES", 5)
    f = tmp_path / "ids.csv"
    f.write_text("f,id\n" + "".join(f"{i},row{i}\n" for i in range(20)))
    expect("more than 5 distinct labels", f)
    g = tmp_path / "long.csv"
    g.write_text("f,y\n" + "".join(f"{i},{'ab' * 600 if i == 3 else 'a'}\n" for i in range(20)))
    expect("a label of 1,200 characters", g)


# --------------------------------------------------------------------------- memory checks, in-process


@pytest.fixture
def tiny_memory(monkeypatch):
    """Pretend only 100 KB can still be allocated."""
    monkeypatch.setattr(limits, "available_memory", lambda: (100_000, "test limit"))


def test_memory_limits_are_read_from_this_machine():
    found = limits.memory_limits()
    assert found and all(n >= 0 for n, _ in found)
    n, source = limits.available_memory()
    assert n == min(found)[0] and source
    assert limits.product([2**32 - 1] * 3) == (2**32 - 1) ** 3  # no int64 wrap
    assert limits.format_bytes(20_000_000_000) == "20.0 GB" and limits.format_bytes(12) == "12 bytes"


def test_npz_member_over_memory_is_refused_before_reading(tmp_path, tiny_memory):
    f = tmp_path / "m.npz"
    np.savez_compressed(f, x=np.zeros((1000, 50), np.float32), y=np.arange(1000) % 2)
    msg = expect("more than the 100.0 KB of memory available (test limit)", f)
    assert "'x'" in msg and "200.1 KB" in msg
    assert is_pool_npz(str(f))  # listing the keys reads nothing


def test_npz_zip_directory_size_is_checked(tmp_path, tiny_memory):
    # The npy header is small but the zip directory says the member inflates to 200 KB.
    f = write_npz(tmp_path / "z.npz", {"x": npy_of(np.zeros((10, 2), np.float32)) + b"\x00" * 200_000,
                                      "y": npy_of(np.arange(10) % 2)})
    expect("zip member of 200.2 KB uncompressed", f)


def test_float32_conversion_and_splits_are_checked(tmp_path, monkeypatch):
    f = tmp_path / "i.npz"
    np.savez(f, x=np.zeros((3000, 10), np.uint8), y=np.arange(3000) % 2)  # 30 KB stored, 120 KB as float32
    monkeypatch.setattr(limits, "available_memory", lambda: (100_000, "test limit"))
    expect("(declared shape (3000, 10), uint8, then as float32) needs 150.0 KB", f)


def test_a_compressed_member_that_cannot_be_held_as_float32_is_refused_before_it_is_inflated(tmp_path, monkeypatch):
    """An 8 MB compressed .npz of 8.3 GB of uint8 zeros was inflated whole (8.4 GB resident) before its float32 copy's
    33 GB was refused, and the refusal did not say to save it uncompressed."""
    f = tmp_path / "c.npz"
    np.savez_compressed(f, x=np.zeros((3000, 10), np.uint8), y=np.arange(3000) % 2)
    monkeypatch.setattr(limits, "available_memory", lambda: (100_000, "test limit"))
    read = []
    real = np.lib.format.read_array
    monkeypatch.setattr(np.lib.format, "read_array", lambda fp, **k: read.append(1) or real(fp, **k))
    msg = expect("then as float32) needs 150.0 KB", f)
    assert "save it uncompressed with numpy.savez" in msg and not read, msg


def test_csv_streaming_stops_at_the_memory_limit(tmp_path, tiny_memory):
    f = tmp_path / "rows.csv"
    f.write_text("a,b,c,y\n" + "1.5,2,3,0\n0,1,2,1\n" * 10_000)
    expect("more than 8,191 rows", f)


def test_image_folder_is_not_held_as_one_tensor(tmp_path, monkeypatch):
    # 6 images of 64 x 64 take 98.3 KB as float32, more than the 60 KB available: the splits hold paths and
    # each image is decoded when its row is read (one decoded image must fit: it is checked from its header).
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            small_png(root / cls / f"{i}.png", value=30 * i, size=(64, 64))
    monkeypatch.setattr(limits, "available_memory", lambda: (60_000, "test limit"))
    ds = load_data(str(root))
    assert not isinstance(ds.x_train, np.ndarray) and ds.input_shape == (1, 64, 64)
    assert ds.x_test[0].shape == (1, 64, 64)
    monkeypatch.setattr(limits, "available_memory", lambda: (40_000, "test limit"))
    expect("decoding image", root)


# --------------------------------------------------------------------------- malformed .npz


@pytest.mark.parametrize(
    "case, match",
    [
        ("object_x", "pickled"),
        ("ragged", "pickled"),
        ("structured", "store numbers"),
        ("complex", "store numbers"),
        ("datetime_y", "labels must be integers"),
        ("zero_d_x", "store (N, features)"),
        ("zero_d_y", "one integer per sample"),
        ("void0", "zero-size dtype"),
        ("impossible_shape", "impossible shape"),
        ("bad_header", "not a valid .npy array"),
        ("unclosed_header", "not a valid .npy array"),  # numpy's tokenize retry raised TokenError: exit 3 (a reviewer's)
        ("unclosed_header_stored", "not a valid .npy array"),
        ("truncated_member", "cannot read 'x'"),
        ("bzip2", "compression method 12"),
        ("bytes_names_dup", "duplicates"),
        ("names_2d", "1-D string array"),
    ],
)
def test_malformed_npz_is_a_user_error(tmp_path, case, match):
    x = np.zeros((12, 3), np.float32)
    y = np.arange(12) % 2
    f = tmp_path / f"{case}.npz"
    members = {"x": npy_of(x), "y": npy_of(y)}
    method = zipfile.ZIP_DEFLATED
    if case == "object_x":
        members["x"] = npy_of(np.array([[1, 2, 3]] * 12, dtype=object))
    elif case == "ragged":
        ragged = np.empty(12, dtype=object)
        ragged[:] = [[1] * (i + 1) for i in range(12)]
        members["x"] = npy_of(ragged)
    elif case == "structured":
        members["x"] = npy_of(np.zeros((12, 3), dtype=[("a", "<f4"), ("b", "<i4")]))
    elif case == "complex":
        members["x"] = npy_of(np.zeros((12, 3), np.complex64))
    elif case == "datetime_y":
        members["y"] = npy_of(np.zeros(12, "datetime64[s]"))
    elif case == "zero_d_x":
        members["x"] = npy_of(np.float32(3.0))
    elif case == "zero_d_y":
        members["y"] = npy_of(np.int64(1))
    elif case == "void0":
        members["x"] = npy_bytes("|V0", (10**18,))
    elif case == "impossible_shape":
        members["x"] = npy_bytes("<f4", (0, 10**30))
    elif case == "bad_header":
        members["x"] = b"\x93NUMPY\x01\x00\x10\x00{'descr': 5}    \n"
    elif case in ("unclosed_header", "unclosed_header_stored"):
        header = b"{'descr': '<f4', 'shape': (12,".ljust(117) + b"\n"
        members["x"] = b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header + bytes(12 * 3 * 4)
        method = zipfile.ZIP_STORED if case.endswith("stored") else method  # stored: the memory-mapped reader sees it first
    elif case == "truncated_member":
        members["x"] = npy_of(x)[:-10]
    elif case == "bzip2":
        method = zipfile.ZIP_BZIP2
    elif case == "bytes_names_dup":
        members["class_names"] = npy_of(np.array([b"a", b"a"]))
    elif case == "names_2d":
        members["class_names"] = npy_of(np.array([["a", "b"]]))
    write_npz(f, members, method)
    expect(match, f)
    if case in ("object_x", "void0", "bzip2", "truncated_member"):
        with pytest.raises(UserError, match=match.split()[0]):
            load_rows(str(f))


def test_npz_with_too_many_members_is_refused(tmp_path):
    f = tmp_path / "many.npz"
    with zipfile.ZipFile(f, "w") as zf:
        for i in range(10_001):
            zf.writestr(f"m{i}.npy", b"")
    expect("holds 10001 files", f)
    assert not is_pool_npz(str(f))


# --------------------------------------------------------------------------- malformed idx


def test_idx_gz_stream_longer_than_its_header_is_refused_without_inflating_it(tmp_path):
    # Header says 20 x 4 x 4, the gzip stream then inflates to 100 MB of zeros.
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)
    data = comp.compress(idx_header(0x08, (20, 4, 4)))
    zeros = b"\x00" * 1_000_000
    for _ in range(100):
        data += comp.compress(zeros)
    data += comp.flush()
    folder = idx_folder(tmp_path / "long", data)
    t0 = time.perf_counter()
    expect("holds more data", folder)
    assert time.perf_counter() - t0 < 5


@pytest.mark.parametrize(
    "raw, match",
    [
        (idx_header(0x08, (2,) * 255), "255 dimensions"),  # 2**255 elements declared: refused at the header
        (bytes([0, 0, 8, 4]) + b"\x00\x00\x00\x02" * 2, "ends inside the idx header"),
        (gzip.compress(idx_header(0x08, (65535,) * 4)), "memory available"),
        (gzip.compress(idx_header(0x08, (20, 4, 4)) + b"\x00" * 100), "data ends after"),
        (gzip.compress(idx_header(0x08, (20, 4, 4)) + b"\x00" * 320)[:-12] , "broken gzip"),
        (b"\x1f\x8b" + b"junk" * 10, "broken gzip"),
    ],
)
def test_malformed_idx_is_a_user_error(tmp_path, raw, match):
    folder = idx_folder(tmp_path / "bad", raw, gz_name=raw[:2] == b"\x1f\x8b")
    expect(match, folder)


# --------------------------------------------------------------------------- malformed CSV


@pytest.mark.parametrize(
    "case, match",
    [
        ("huge_field", "field larger than field limit"),
        ("long_line", "longer than 1,048,576 characters"),
        ("nul", "not a number"),
        ("latin1", "save it as UTF-8"),
        ("utf16", "save it as UTF-8"),
        ("binary", "cannot read"),
    ],
)
def test_malformed_csv_is_a_user_error(tmp_path, case, match):
    f = tmp_path / f"{case}.csv"
    good = "f,y\n" + "".join(f"{i},{i % 2}\n" for i in range(12))
    if case == "huge_field":
        f.write_text(good + '"' + "1" * 200_000 + '",0\n')
    elif case == "long_line":
        f.write_text("f,y\n" + ",".join(["1"] * 600_000) + "\n")
    elif case == "nul":
        f.write_text(good.replace("3,1", "3\x00,1"))
    elif case == "latin1":
        f.write_bytes(("f,y\n" + "".join(f"{i},caf\u00e9{i % 2}\n" for i in range(12))).encode("latin-1"))
    elif case == "utf16":
        f.write_bytes(good.encode("utf-16"))
    elif case == "binary":
        f.write_bytes(bytes(range(256)) * 40)
    expect(match, f)
    assert csv.field_size_limit() == 131072  # the loader does not raise it


# --------------------------------------------------------------------------- malformed images


def _folder_with(tmp_path, name: str, make) -> Path:
    root = tmp_path / name
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(3):
            small_png(root / cls / f"{i}.png", value=40 * i)
    make(root / "a" / "0.png")
    return root


def expect_on_read(match: str, spec) -> str:
    """A file whose header is sound fails when its pixels are read (rows are decoded on demand)."""
    from toolchain.data.samples import batches

    ds = load_data(str(spec))
    with pytest.raises(UserError) as info:
        for x in (ds.x_train, ds.x_val, ds.x_test):
            list(batches(x))
    msg = str(info.value)
    assert "\n" not in msg and match.lower() in msg.lower(), msg
    return msg


def test_truncated_and_16bit_images_are_user_errors(tmp_path):
    from PIL import Image

    def truncated(p):
        buf = io.BytesIO()
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (8, 8), dtype=np.uint8)).save(buf, "PNG")
        p.write_bytes(buf.getvalue()[:-30])

    expect_on_read("cannot read image", _folder_with(tmp_path, "trunc", truncated))

    def sixteen(p):
        Image.fromarray(np.full((8, 8), 40000, np.uint16)).save(p)

    expect("16-bit or float", _folder_with(tmp_path, "sixteen", sixteen))

    def sixteen_rgb(p):  # Pillow opens it as 8-bit RGB, the low bits dropped in silence
        rows = b"".join(b"\x00" + np.full(8 * 3, 40000, np.uint16).byteswap().tobytes() for _ in range(8))
        chunk = lambda kind, data: struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))  # noqa: E731
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 16, 2, 0, 0, 0))
                      + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
        assert Image.open(p).mode == "RGB"

    expect("is a 16-bit RGB image", _folder_with(tmp_path, "sixteen_rgb", sixteen_rgb))

    def junk_jpeg(p):
        p.with_suffix(".jpg").write_bytes(b"\xff\xd8\xff\xe0" + b"\x00" * 50)

    said = expect("cannot read image", _folder_with(tmp_path, "junk", junk_jpeg))
    assert "_io." not in said and "name=" not in said, said  # PIL's file object ("<_io.BufferedReader name=6>") is no path

    def gif_named_png(p):  # only the PNG and JPEG decoders run (an .eps would start Ghostscript)
        Image.new("L", (8, 8), 3).save(p, format="GIF")

    expect("is a GIF file, not the PNG or JPEG its name says", _folder_with(tmp_path, "gif", gif_named_png))


def test_unusual_but_valid_images_load_as_rgb(tmp_path):
    from PIL import Image

    def cmyk(p):
        p.unlink()
        Image.new("CMYK", (8, 8), (0, 255, 0, 0)).save(p.with_suffix(".jpg"))

    def palette_transparency(p):
        im = Image.new("P", (8, 8), 1)
        im.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
        im.info["transparency"] = b"\x00\xff" + b"\xff" * 254
        im.save(p, transparency=b"\x00\xff" + b"\xff" * 254)

    def animated(p):
        frames = [Image.new("RGB", (8, 8), (i * 50, 0, 0)) for i in range(3)]
        frames[0].save(p, save_all=True, append_images=frames[1:])

    def la(p):
        Image.new("LA", (8, 8), (100, 50)).save(p)

    for make in (cmyk, palette_transparency, animated):
        ds = load_data(str(_folder_with(tmp_path, make.__name__, make)))
        assert ds.input_shape == (3, 8, 8), make.__name__
        assert "RGB" in ds.preprocessing.note
    ds = load_data(str(_folder_with(tmp_path, "la", la)))  # gray with alpha among gray images: gray, the alpha dropped
    assert ds.input_shape == (1, 8, 8) and "grayscale" in ds.preprocessing.note


def test_decompression_bomb_warning_is_an_error_too(tmp_path):
    from PIL import Image

    # Over MAX_IMAGE_PIXELS (a warning in Pillow) but under twice it (its error).
    side = int((Image.MAX_IMAGE_PIXELS * 1.2) ** 0.5)
    root = _folder_with(tmp_path, "warn", lambda p: p.write_bytes(png_bytes(side, side, rows=2)))
    expect("decompression bomb", root)


# --------------------------------------------------------------------------- light installs


def test_without_scikit_learn_builtin_sets_say_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)  # import sklearn -> ImportError
    for spec in ("digits", "breast-cancer"):
        msg = expect("pip install scikit-learn", spec)
        assert 'cwtool[compress]' in msg


def test_without_pillow_image_folders_say_how_to_install(tmp_path, monkeypatch):
    root = _folder_with(tmp_path, "nopil", lambda p: None)
    monkeypatch.setitem(sys.modules, "PIL", None)
    expect("pip install pillow", root)


def test_an_npz_with_two_members_of_one_name_is_refused(tmp_path):
    """'x.npy' and 'x' both read as x: numpy took the last, and a length mismatch blamed the labels."""
    import io
    import zipfile

    from toolchain.data import load_data
    from toolchain.errors import UserError

    def npy(a):
        buf = io.BytesIO()
        np.save(buf, a)
        return buf.getvalue()

    path = tmp_path / "twice.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("x.npy", npy(np.zeros((30, 4), np.float32)))
        zf.writestr("y.npy", npy(np.arange(30) % 3))
        zf.writestr("x", npy(np.zeros((7, 4), np.float32)))
    with pytest.raises(UserError, match="two members named 'x'"):
        load_data(str(path), seed=0)


def test_an_empty_class_name_in_an_npz_is_refused_as_in_class_names(tmp_path):
    from toolchain.data import load_data
    from toolchain.errors import UserError

    np.savez(tmp_path / "n.npz", x=np.zeros((30, 4), np.float32), y=np.arange(30) % 3, class_names=np.array(["a", " ", "c"]))
    with pytest.raises(UserError, match="empty name at index 1"):
        load_data(str(tmp_path / "n.npz"), seed=0)


def test_a_numeric_label_column_with_one_stray_word_is_refused_not_renumbered(tmp_path):
    """One 'n/a' among labels 1..10 turned every label into a name numbered alphabetically (1=0, 10=1, 2=2 ...),
    silently; with --class-names the order is the user's and the file loads."""
    from toolchain.data import load_data
    from toolchain.errors import UserError

    rows = [f"{i % 7},{i % 3},{1 + i % 10}" for i in range(60)] + ["5,5,n/a"] * 3
    (tmp_path / "d.csv").write_text("a,b,label\n" + "\n".join(rows) + "\n")
    with pytest.raises(UserError, match=r"holds numbers and 'n/a' \(line 62\)"):
        load_data(str(tmp_path / "d.csv"), seed=0)
    names = [str(v) for v in range(1, 11)] + ["n/a"]
    assert load_data(str(tmp_path / "d.csv"), seed=0, class_names=names).class_names == names
    (tmp_path / "words.csv").write_text("a,label\n" + "\n".join(f"{i},{'cat' if i % 2 else 'dog'}" for i in range(40)) + "\n")
    assert load_data(str(tmp_path / "words.csv"), seed=0).class_names == ["cat", "dog"]


def test_images_read_at_a_size_the_memory_cannot_hold_are_refused_before_the_allocation(tmp_path, monkeypatch, capsys):
    """`cwtool calibrate --image-size 16384x16384` allocated its rows without a check: MemoryError, exit 3 (or the OOM killer)."""
    from PIL import Image

    from clirun import run_cli

    for c in "ab":
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((8, 8), 40 * i, np.uint8)).save(tmp_path / "imgs" / c / f"{i}.png")
    monkeypatch.setattr(limits, "available_memory", lambda: (50_000_000, "test limit"))
    code, _, err = run_cli(["calibrate", "--data", tmp_path / "imgs", "--image-size", "4096x4096", "--out", tmp_path / "c.npz"], capsys)
    assert code == 2 and "images of 1x4096x4096 as float32 needs" in err and "--image-size" in err, err
    assert not (tmp_path / "c.npz").exists()


def test_an_npz_refused_for_its_counts_inflates_nothing(tmp_path, monkeypatch):
    """A 1 MB member declaring 4 million rows beside 3 labels was inflated (1.5 GB) before "x has 4000000 samples but y has
    3 labels": the headers say so first (a data reviewer's finding)."""
    import numpy as np

    from toolchain.data import npz

    np.savez_compressed(tmp_path / "bomb.npz", x=np.zeros((400_000, 1, 8, 8), np.float32), y=np.zeros(3, np.int64))

    def no_reading(*args, **kwargs):
        raise AssertionError("a member was read")

    monkeypatch.setattr(np.lib.format, "read_array", no_reading)
    with pytest.raises(UserError, match="x has 400000 samples but y has 3 labels"):
        npz.read_npz(tmp_path / "bomb.npz", {"x", "y"})
