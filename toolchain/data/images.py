"""Image files decoded on demand, and the preprocessing that turns one into a model input.

`ImageFiles` is a split's inputs (the `toolchain.data.samples` contract) that holds file paths, not pixels:
each read decodes just the rows asked for, so memory follows the batch, not the number of images.
`ImageTransform` is the standard preprocessing, recorded in report.json and the artifacts' metadata so a
device feeds the same input: decode, convert to gray or RGB, resize (to an exact size, or the shorter side
keeping the aspect, bilinear), center crop, scale 8-bit pixels by 1/255, subtract a per-channel mean and
divide by a per-channel std.

Pillow is imported only when a file is read (devices that verify .npz rows do not have it). Decoders are
third-party parsers of untrusted bytes: every failure is a one-line `UserError` naming the file, and
Pillow's decompression-bomb warning is an error.
"""

from __future__ import annotations

import io
import os
import re
import stat
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.data.samples import Samples
from toolchain.errors import UserError, describe
from toolchain.limits import check_fits, product

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "PIL_BAD_MODES", "PIL_FORMATS", "ImageFiles", "ImageTransform", "image_problem",
           "normalize_channels", "pil_errors", "pillow"]

PIL_FORMATS = ("PNG", "JPEG")  # what the extensions promise (JPEG covers MPO); no other decoder: EPS runs Ghostscript
PIL_BAD_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}  # 16-bit / 32-bit integer and float images
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def pillow():
    try:
        from PIL import Image  # lazy: not on devices
    except ImportError:
        raise UserError(
            "an ImageFolder --data needs Pillow, which is not installed: run `pip install pillow` "
            '(or `pip install "cwtool[compress]"`), or give the images as a .npz'
        ) from None
    return Image


def pil_errors(Image) -> tuple[type[BaseException], ...]:
    """What Pillow raises on a bad file (decoders are third-party parsers of untrusted bytes)."""
    import struct
    import zlib

    return (
        OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error, zlib.error,
        Image.DecompressionBombError, Image.DecompressionBombWarning,
    )


def open_plain(p) -> "io.BufferedReader":
    """The image file at ``p``, opened only if it is a plain file: a pipe or a device named like an image (put there
    while a run reads the folder) would block the reader forever. O_NONBLOCK opens a pipe without waiting for a
    writer; it changes nothing for a plain file."""
    fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise UserError(f"image '{p}' is not a plain file (a pipe, a socket or a device): replace or remove it")
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def image_problem(p: Path, exc: BaseException, Image) -> UserError:
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return UserError(
            f"image '{p}' is too large to decode safely ({' '.join(str(exc).split())[:160]}): "
            "it may be a decompression bomb; resize it or remove it"
        )
    other = _other_format(p) if isinstance(exc, Image.UnidentifiedImageError) else None
    if other:  # readable by another decoder, which cwtool does not run on untrusted files
        return UserError(f"image '{p}' is a {other} file, not the PNG or JPEG its name says: convert it to PNG or JPEG, or "
                         "remove it")
    # PIL names the file object it was handed ("<_io.BufferedReader name=6>"): the path is said already
    detail = re.sub(r"\s*<_io\.\w+ name=[^>]*>", "", describe(exc, 160)).replace(" image file", " the image file", 1)
    return UserError(f"cannot read image '{p}' ({detail[:120]}): replace or remove it")


OTHER_FORMATS = ((b"GIF87a", "GIF"), (b"GIF89a", "GIF"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
                 (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"))
BMP_HEADER_SIZES = (12, 40, 52, 56, 64, 108, 124)  # "BM" alone starts text files too ("BMI,weight")


def _other_format(p: Path) -> str | None:
    """The format an image named like a PNG or JPEG holds instead, from its first bytes, where it is a common one."""
    try:
        with open_plain(p) as f:
            head = f.read(18)
    except (OSError, UserError):
        return None
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WebP"
    if head[4:8] == b"ftyp" and head[8:12] in (b"heic", b"heix", b"mif1", b"avif"):
        return "HEIF/AVIF"
    if head[:2] == b"BM" and len(head) == 18 and int.from_bytes(head[14:18], "little") in BMP_HEADER_SIZES:
        return "BMP"
    return next((name for magic, name in OTHER_FORMATS if head.startswith(magic)), None)


def normalize_channels(x: np.ndarray, mean, std) -> np.ndarray:
    """``(x - mean) / std`` per channel of a float32 (N, C, H, W) batch, in place."""
    x -= np.asarray(mean, dtype=np.float32).reshape(1, -1, 1, 1)
    x /= np.asarray(std, dtype=np.float32).reshape(1, -1, 1, 1)
    return x


@dataclass(frozen=True)
class ImageTransform:
    """One decoded image -> a float32 (C, H, W) model input.

    ``resize``: () keeps the size; (h, w) resizes to exactly that; (s,) resizes the shorter side to s keeping
    the aspect (torchvision's Resize(s)). ``crop``: () or (h, w), a center crop after the resize (torchvision's
    CenterCrop). Pixels are scaled by 1/255, then ``(x - mean) / std`` per channel when ``mean`` is given.
    """

    mode: str  # "L" (gray, 1 channel) or "RGB"
    size: tuple[int, int]  # (h, w) of the model input
    resize: tuple[int, ...] = ()
    crop: tuple[int, ...] = ()
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    @property
    def channels(self) -> int:
        return 1 if self.mode == "L" else 3

    def resized_size(self, h: int, w: int) -> tuple[int, int]:
        """(h, w) of an h x w image after the resize step."""
        if len(self.resize) == 2:
            return self.resize[0], self.resize[1]
        if len(self.resize) == 1:
            s = self.resize[0]
            if w <= h:
                return int(s * h / w), s
            return s, int(s * w / h)
        return h, w

    def pixels(self, im, Image) -> np.ndarray:
        """uint8 (h, w) or (h, w, 3) of an opened image: converted, resized and cropped."""
        im = im.convert(self.mode)
        rh, rw = self.resized_size(im.height, im.width)
        if (im.height, im.width) != (rh, rw):
            im = im.resize((rw, rh), Image.BILINEAR)
        a = np.asarray(im, dtype=np.uint8)
        if self.crop:
            ch, cw = self.crop
            top, left = int(round((rh - ch) / 2.0)), int(round((rw - cw) / 2.0))
            a = a[top : top + ch, left : left + cw]
        return a

    def finish(self, x: np.ndarray) -> np.ndarray:
        """Scale (and normalize) a float32 batch of 8-bit pixel values in place."""
        x *= np.float32(1 / 255)
        return normalize_channels(x, self.mean, self.std) if self.mean else x

    def to_dict(self) -> dict:
        """What report.json and the artifacts' metadata record (toolchain.data.dataset.Preprocessing)."""
        return {"color": self.mode, "resize": list(self.resize), "crop": list(self.crop), "interpolation": "bilinear" if self.resize else ""}


class ImageFiles(Samples):
    """Image files as model inputs, decoded when rows are read (paths are all it holds)."""

    def __init__(self, paths: list[Path], transform: ImageTransform):
        self.paths = [str(p) for p in paths]
        self.transform = transform
        self.shape = (len(self.paths), transform.channels, *transform.size)

    @property
    def held_bytes(self) -> int:
        return sum(len(p) + 56 for p in self.paths)  # the path strings (UTF-8 text and the object header)

    def row_files(self) -> list[str] | None:
        return list(self.paths)

    def read(self, index: np.ndarray) -> np.ndarray:
        t = self.transform
        h, w = t.size
        check_fits(4 * product((len(index), t.channels, h, w)), f"{len(index):,} images of {t.channels}x{h}x{w} as float32",
                   "give a smaller --image-size (or --resize), or fewer rows at a time (--calibration-size)")
        out = np.empty((len(index), t.channels, h, w), dtype=np.float32)
        Image = pillow()
        errors = pil_errors(Image)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. "Palette images with Transparency ..." on convert
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            for j, i in enumerate(index):
                p = self.paths[int(i)]
                try:
                    with open_plain(p) as f, Image.open(f, formats=PIL_FORMATS) as im:
                        if im.mode in PIL_BAD_MODES:  # checked when the folder was listed; a file swapped in since is not
                            raise UserError(f"image '{p}' is a {im.mode} (16-bit or float) image: cwtool reads 8-bit images")
                        a = t.pixels(im, Image)
                except errors as exc:
                    raise image_problem(Path(p), exc, Image) from None
                if a.shape[:2] != (h, w):  # pragma: no cover - Pillow gave another size
                    raise UserError(f"image '{p}' decoded to shape {a.shape}, not {h}x{w}: replace or remove it")
                out[j] = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
        return t.finish(out)


COLOR_AMONG_GRAY: list[str] = []
"""Image folders read in this process as RGB for a few color images among gray ones ("'folder': 'one.png'"),
for the error that a gray model then meets: it names the image."""


def channels_hint(given: tuple, wanted: tuple | None = None) -> str:
    """Why an image model's one channel meets three (or the reverse): an ImageFolder is read as RGB when any image is.
    ``wanted``: the model's sample shape where known."""
    if len(given) == 3 and given[0] in (1, 3) and (wanted is None or (len(wanted) == 3 and wanted[0] == 4 - given[0])):
        where = f" ({'; '.join(COLOR_AMONG_GRAY[-2:])})" if given[0] == 3 and COLOR_AMONG_GRAY else ""
        return ("; an image folder is read as RGB (3 channels) when any one of its images is in color, and as grayscale "
                f"(1) only when every one is gray{where}, unless --color says which (rgb or gray)")
    return ""
