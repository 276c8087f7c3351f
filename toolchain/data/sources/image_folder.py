"""An ImageFolder-layout --data folder: one sub-folder of PNG/JPEG images per class.

Pillow is imported only here, and only when such a folder is loaded (devices do not have it).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from toolchain.data.assemble import assemble_dataset
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.labels import string_labels
from toolchain.data.sources import KNOWN_SOURCES
from toolchain.data.splits import split_pool
from toolchain.errors import UserError
from toolchain.limits import MAX_CLASSES, check_fits

__all__ = ["IMAGE_EXTENSIONS", "load_image_folder"]

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}
_PIL_FORMATS = ("PNG", "JPEG")  # what the extensions promise (JPEG covers MPO); no other decoder: EPS runs Ghostscript
_PIL_BAD_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # 16-bit / 32-bit integer and float images


def _pillow():
    try:
        from PIL import Image  # lazy: not on devices
    except ImportError:
        raise UserError(
            "an ImageFolder --data needs Pillow, which is not installed: run `pip install pillow` "
            '(or `pip install "cwtool[compress]"`), or give the images as a .npz'
        ) from None
    return Image


def _pil_errors(Image) -> tuple[type[BaseException], ...]:
    """What Pillow raises on a bad file (decoders are third-party parsers of untrusted bytes)."""
    import struct
    import zlib

    return (
        OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error,
        Image.DecompressionBombError, Image.DecompressionBombWarning,
    )


def _image_problem(p: Path, exc: BaseException, Image) -> UserError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return UserError(
            f"image '{p}' is too large to decode safely ({' '.join(str(exc).split())[:160]}): "
            "it may be a decompression bomb; resize it or remove it"
        )
    return UserError(
        f"cannot read image '{p}' ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}): replace or remove it"
    )


def load_image_folder(
    folder: Path,
    seed: int,
    fr: tuple[float, float],
    image_size: tuple[int, int] | None,
    given: list[str] | None = None,
) -> Dataset:
    """Class sub-folders of PNG/JPEG images -> (N, C, H, W) float32 in 0..1.

    Rule: every image must have the same size, unless ``image_size`` (height, width) is given,
    which resizes all of them (bilinear). Images are grayscale (1 channel) when every one is
    1-bit or 8-bit gray, else RGB (3 channels; alpha dropped, palettes and CMYK converted).
    16-bit and float images are refused. Each image's decoded size and the whole tensor are
    checked against the memory available before decoding; Pillow's decompression-bomb limit
    applies (its warning is an error here).
    """
    where = f"'{folder}'"
    class_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise UserError(
            f"unknown --data '{folder}' (a folder with neither idx files nor class sub-folders): {KNOWN_SOURCES}"
        )
    if len(class_dirs) > MAX_CLASSES:
        raise UserError(
            f"{where} has {len(class_dirs):,} class folders, beyond cwtool's limit of {MAX_CLASSES:,} classes"
        )
    names, lookup, label_note = string_labels([d.name for d in class_dirs], given, where, "folder names, ")
    files: list[Path] = []
    labels: list[int] = []
    for d in class_dirs:
        imgs = sorted(
            p for p in d.iterdir()
            if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
        )
        if not imgs:
            raise UserError(
                f"class folder '{d.name}' in {where} has no PNG/JPEG images: add images or remove the folder"
            )
        files += imgs
        labels += [lookup[d.name]] * len(imgs)
    size_hw: tuple[int, int] | None = None
    if image_size is not None:
        try:
            ok = len(image_size) == 2 and all(int(v) == v and v >= 1 for v in image_size)
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"image size {image_size!r} is invalid: give two positive integers (height, width)")
        size_hw = (int(image_size[0]), int(image_size[1]))

    Image = _pillow()
    errors = _pil_errors(Image)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency ..." on convert
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        # Pass 1: headers only (Image.open does not decode): modes and sizes.
        modes: list[str] = []
        sizes: list[tuple[int, int]] = []
        for p in files:
            try:
                with Image.open(p, formats=_PIL_FORMATS) as im:
                    modes.append(im.mode)
                    sizes.append((im.height, im.width))
                    bands = len(im.getbands())
            except errors as exc:
                raise _image_problem(p, exc, Image) from None
            if modes[-1] in _PIL_BAD_MODES:
                raise UserError(
                    f"image '{p}' is a {modes[-1]} (16-bit or float) image; cwtool reads 8-bit images: "
                    "convert it to 8-bit PNG/JPEG (or give the data as a .npz)"
                )
            h, w = sizes[-1]
            # Decoding holds the image, its converted copy and the array: about 4 bytes a band a pixel.
            check_fits(h * w * max(bands, 3) * 4, f"decoding image '{p}' ({w}x{h} pixels)")
        if size_hw is None:
            first = sizes[0]
            other = next((i for i, hw in enumerate(sizes) if hw != first), None)
            if other is not None:
                n_diff = sum(hw != first for hw in sizes)
                raise UserError(
                    f"images in {where} differ in size: '{files[0].relative_to(folder)}' is "
                    f"{first[0]}x{first[1]} (height x width) but '{files[other].relative_to(folder)}' is "
                    f"{sizes[other][0]}x{sizes[other][1]} ({n_diff} of {len(files)} images differ from the first): "
                    "give an image size (--image-size HEIGHTxWIDTH) to resize all of them, or resize them yourself"
                )
            size_hw = first
        gray = all(m in ("L", "1") for m in modes)
        mode = "L" if gray else "RGB"
        h, w = size_hw
        channels = 1 if gray else 3
        total = len(files) * channels * h * w * 4
        check_fits(
            total,
            f"{len(files)} images of {h}x{w} pixels, {channels} channel{'s' if channels > 1 else ''}, "
            f"from {where} as float32",
            fix="give a smaller image size (--image-size), use fewer images, or a machine with more memory",
        )
        x = np.empty((len(files), channels, h, w), dtype=np.float32)
        for i, p in enumerate(files):
            try:
                with Image.open(p, formats=_PIL_FORMATS) as im:
                    im = im.convert(mode)
                    if im.size != (w, h):
                        im = im.resize((w, h), Image.BILINEAR)
                    a = np.asarray(im, dtype=np.uint8)
            except errors as exc:
                raise _image_problem(p, exc, Image) from None
            if a.shape != ((h, w) if gray else (h, w, 3)):  # pragma: no cover - Pillow gave another size
                raise UserError(f"image '{p}' decoded to shape {a.shape}, not {h}x{w}: replace or remove it")
            x[i] = a[None] if gray else a.transpose(2, 0, 1)
    x *= np.float32(1 / 255)
    y = np.asarray(labels, dtype=np.int64)
    size_note = f"resized to {h}x{w} (bilinear)" if image_size is not None else f"all {h}x{w}, not resized"
    pre = Preprocessing(
        scale=1 / 255, layout="NCHW",
        note=f"ImageFolder, {'grayscale' if gray else 'RGB'}, {size_note}, 8-bit pixels scaled by 1/255; "
        + label_note,
    )
    return assemble_dataset(
        folder.resolve().name, split_pool(x, y, seed, fr, names, where), pre,
        where=where, class_names=names, given_splits=False, seed=seed,
        label_mapping={d.name: lookup[d.name] for d in class_dirs},
    )
