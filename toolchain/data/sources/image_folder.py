"""An ImageFolder-layout --data folder: one sub-folder of PNG/JPEG images per class.

The split's inputs are `toolchain.data.images.ImageFiles`: paths, decoded when rows are read, so memory does
not grow with the number of images. Here every file's header is read once (sizes, modes, limits) and the
preprocessing is settled. Pillow is imported only when such a folder is loaded (devices do not have it).
"""

from __future__ import annotations

import math
import os
import warnings
from pathlib import Path

import numpy as np

from toolchain.data.assemble import assemble_dataset
from toolchain.data.dataset import Dataset, Preprocessing
from toolchain.data.images import COLOR_AMONG_GRAY, IMAGENET_MEAN, IMAGENET_STD, PIL_BAD_MODES, PIL_FORMATS, ImageFiles, ImageTransform, image_problem, \
    open_plain, pil_errors, pillow
from toolchain.data.labels import composed, string_labels
from toolchain.data.sources import KNOWN_SOURCES
from toolchain.data.sources.folder_listing import IMAGE_EXTENSIONS, class_dirs_of, is_other_image, listed_images, \
    other_images_note, refuse_names_alike, refuse_split_layout
from toolchain.data.splits import split_pool
from toolchain.errors import UserError, one_line
from toolchain.limits import MAX_CLASSES, check_fits

__all__ = ["AUTO_NORMALIZE_SIDE", "IMAGE_EXTENSIONS", "load_image_folder"]

AUTO_NORMALIZE_SIDE = 96
"""--normalize auto: RGB model inputs at least this many pixels on their shorter side get ImageNet's mean/std
(the models users bring at 96-224 px were trained so); gray and smaller images stay 0..1."""


GRAY_MODES = ("L", "LA", "1", "P of grays", "PA of grays")  # gray with alpha is gray: the alpha is dropped


def load_image_folder(
    folder: Path,
    seed: int,
    fr: tuple[float, float],
    image_size: tuple[int, int] | None,
    given: list[str] | None = None,
    resize: int | None = None,
    normalize: str | tuple | None = "auto",
    color: str | None = None,
    min_classes: int = 2,
    small_classes_ok: bool = False,
) -> Dataset:
    """Class sub-folders of PNG/JPEG images -> (N, C, H, W) float32 inputs, decoded when read.

    Size rule: every image must have the same size, unless ``image_size`` (height, width) is given, which
    resizes all of them to it (bilinear), or ``resize`` (a side), which resizes each image's shorter side to
    it keeping the aspect and center-crops ``image_size`` (default: a square of that side). Images are
    grayscale (1 channel) when every one is 1-bit or 8-bit gray, else RGB (3 channels; alpha dropped,
    palettes and CMYK converted). 16-bit and float images are refused. Pixels are scaled by 1/255, then
    normalized by ``normalize``: "auto" (ImageNet's mean/std for RGB inputs of AUTO_NORMALIZE_SIDE px and
    more, else none), "none", "imagenet" or (mean, std) tuples. Each image's header is read here (sizes,
    modes, Pillow's decompression-bomb limit, whose warning is an error here, and its decoded size against
    the memory available); pixels are decoded only when rows are read.
    """
    where = f"'{folder}'"
    class_dirs = class_dirs_of(folder, where)
    if not class_dirs:
        raise UserError(
            f"unknown --data '{folder}' (a folder with neither idx files nor class sub-folders): {KNOWN_SOURCES}"
        )
    if len(class_dirs) > MAX_CLASSES:
        raise UserError(
            f"{where} has {len(class_dirs):,} class folders, beyond cwtool's limit of {MAX_CLASSES:,} classes"
        )
    refuse_split_layout(folder, class_dirs)
    texts = {d.name: composed(d.name) for d in class_dirs}
    refuse_names_alike(list(texts.values()), where)
    names, lookup, label_note = string_labels(list(texts.values()), given, where, "folder names, ")
    lookup = {d.name: lookup[texts[d.name]] for d in class_dirs}  # by the folder's own name, as it lists its files
    files, labels, skipped = listed_images(class_dirs, lookup, where)
    skipped_note = "".join(f"; {note}" for note in left_out_notes(skipped, files, class_dirs, folder, " of the class folders"))
    loose = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".")
                   and p.is_file())
    if loose:  # torchvision reads only the class folders too: said, since a class's images may have been meant
        skipped_note += (f"; {len(loose):,} image{'s' if len(loose) > 1 else ''} directly in {where} left out (only the class "
                         f"folders' images are read, each labelled by its folder), such as '{one_line(loose[0])[:120]}'")
    size_hw = _size(image_size)
    modes, sizes, turned, animated = _headers(files)
    if resize is not None:
        if not (isinstance(resize, int) and resize >= 1):
            raise UserError(f"resize {resize!r} is invalid: give the shorter side in pixels, a positive integer")
        crop = size_hw or (resize, resize)
        if max(crop) > resize:
            raise UserError(f"--image-size {crop[0]}x{crop[1]} is larger than --resize {resize}: the center crop must fit the "
                            "resized image (give --resize at least the larger side)")
        steps, size_hw = {"resize": (resize,), "crop": crop}, crop
        size_note = f"shorter side resized to {resize} (bilinear), center-cropped to {crop[0]}x{crop[1]}"
    elif size_hw is not None:
        steps = {"resize": size_hw}
        size_note = f"resized to {size_hw[0]}x{size_hw[1]} (bilinear)"
    else:
        first = sizes[0]
        other = next((i for i, hw in enumerate(sizes) if hw != first), None)
        if other is not None:
            n_diff = sum(hw != first for hw in sizes)
            raise UserError(
                f"images in {where} differ in size: '{files[0].relative_to(folder)}' is "
                f"{first[0]}x{first[1]} (height x width) but '{files[other].relative_to(folder)}' is "
                f"{sizes[other][0]}x{sizes[other][1]} ({n_diff} of {len(files)} images differ from the first): "
                "give an image size (--image-size HEIGHTxWIDTH) to resize all of them, or --resize SIDE (the shorter side, then a center "
                "crop), or resize them yourself"
            )
        steps, size_hw = {}, first
        size_note = f"all {first[0]}x{first[1]}, not resized"
    is_gray = [m in GRAY_MODES for m in modes]
    gray = all(is_gray) if color is None else color == "L"
    in_color = [f for f, g in zip(files, is_gray) if not g]
    mixed_note = ""
    if color is not None and gray != all(is_gray):  # asked for: every image read so, whatever it holds
        mixed_note = (f" (every image read as {'gray' if gray else 'RGB'}: --color, or the color the artifacts verified "
                      "were made for)")
    elif in_color and any(is_gray):
        some = f"{len(in_color):,} of {len(files):,} images"
        example = f"such as '{one_line(str(in_color[0].relative_to(folder)))[:120]}'"
        mixed_note = f" ({some} in color, {example}; the gray ones read as RGB too)"
        COLOR_AMONG_GRAY.append(f"{some} in {where} in color, {example}")
    said = _converted(files, modes, turned, animated, folder)
    converted = f" ({'; '.join(said)})" if said else ""
    mean, std, norm_note = normalization_for(normalize, 1 if gray else 3, size_hw)
    transform = ImageTransform("L" if gray else "RGB", size_hw, mean=mean, std=std, **steps)
    if resize is not None:
        _check_resized(transform, files, sizes, f" for --resize {resize}")
    x = ImageFiles(files, transform)
    y = np.asarray(labels, dtype=np.int64)
    pre = Preprocessing(
        scale=1 / 255, mean=list(mean), std=list(std), layout="NCHW", **transform.to_dict(),
        note=f"ImageFolder, {'grayscale' if gray else 'RGB'}{mixed_note}{converted}, {size_note}, 8-bit pixels scaled by 1/255{norm_note}; "
        + label_note + skipped_note,
    )
    return assemble_dataset(
        folder.resolve().name, split_pool(x, y, seed, fr, names, where, small_classes_ok), pre,
        where=where, class_names=names, given_splits=False, seed=seed,
        label_mapping={texts[d.name]: lookup[d.name] for d in class_dirs}, min_classes=min_classes,
        small_classes_ok=small_classes_ok,
    )


def left_out_notes(skipped: list[Path], files: list[Path], class_dirs: list[Path], folder: Path, of: str = "") -> list[str]:
    """What the data's note says of the class folders' entries left out: images of formats cwtool does not read, per
    class, then the other entries (a text file, a folder without images, a link back up)."""
    others, rest = [], []
    for p in skipped:
        (others if is_other_image(p) else rest).append(p)
    notes = [other_images_note(others, files, class_dirs)] if others else []
    if rest:
        notes.append(f"{len(rest):,} other entr{'y' if len(rest) == 1 else 'ies'}{of} left out (not an image: another file, a "
                     f"folder without images, a link back up), such as '{one_line(str(rest[0].relative_to(folder)))[:120]}'")
    return notes


def _converted(files: list[Path], modes: list[str], turned: list[bool], animated: list[bool], folder: Path) -> list[str]:
    """Images whose pixels are not read as they are stored: an alpha channel dropped (not composited on a background),
    CMYK and palette images converted; counted in the data note, as gray images among color ones are."""
    kinds = {"an alpha channel dropped": ("RGBA", "LA", "PA", "La", "RGBa", "PA of grays"), "CMYK converted": ("CMYK",),
             "a palette converted": ("P", "P of grays")}
    said = []
    turned = [f for f, t in zip(files, turned) if t]
    for what, among in kinds.items():
        hit = [f for f, m in zip(files, modes) if m in among]
        if hit:
            said.append(f"{len(hit):,} with {what}, such as '{one_line(str(hit[0].relative_to(folder)))[:120]}'")
    if turned:  # docs/DATA.md: a phone photo stored sideways reaches the model sideways, in training and in verify alike
        said.append(f"{len(turned):,} {TURNED} tag read as stored, not turned, such as "
                    f"'{one_line(str(turned[0].relative_to(folder)))[:120]}' (docs/DATA.md)")
    moving = [f for f, a in zip(files, animated) if a]
    if moving:
        said.append(f"{len(moving):,} animated, their first frame read, such as '{one_line(str(moving[0].relative_to(folder)))[:120]}'")
    return said


def image_folder_rows(folder: Path, pre: Preprocessing, size_hw: tuple[int, int], class_names: list[str],
                      flag: str) -> tuple[ImageFiles, np.ndarray, str]:
    """Every image of another ImageFolder (--val, --test) prepared exactly as --data's were (``pre``: colour, resize,
    crop, normalization), labelled by --data's class names: the rows a promise rests on get the device's preprocessing.
    Also a note on the entries left out and the images read otherwise than stored (converted, read as gray; "" if
    none), as --data's note says them."""
    where = f"{flag} '{folder}'"
    class_dirs = class_dirs_of(folder, where)
    if not class_dirs:
        raise UserError(f"{where} has no class sub-folders: give a folder laid out like --data (one sub-folder per class)")
    shown = {d.name: one_line(composed(d.name)) for d in class_dirs}  # --data's names are kept as printed (toolchain.data.assemble)
    unknown = [shown[d.name] for d in class_dirs if shown[d.name] not in class_names]
    if unknown:
        raise UserError(f"{where} has class folder '{unknown[0]}', which is not one of --data's classes "
                        f"({', '.join(class_names[:12])}): name the sub-folders like --data's")
    files, labels, skipped = listed_images(class_dirs, {d.name: class_names.index(shown[d.name]) for d in class_dirs}, where)
    modes, sizes, turned, animated = _headers(files)
    in_color = sum(m not in GRAY_MODES for m in modes)
    as_gray = [f"{in_color:,} of {len(files):,} images in color read as gray, as --data's are"] if pre.color == "L" and in_color else []
    notes = "; ".join(as_gray + _converted(files, modes, turned, animated, folder) + left_out_notes(skipped, files, class_dirs, folder))
    transform = ImageTransform(pre.color or "RGB", size_hw, resize=tuple(pre.resize), crop=tuple(pre.crop),
                               mean=tuple(pre.mean), std=tuple(pre.std))
    if pre.resize:
        _check_resized(transform, files, sizes, " as --data's are")
    else:
        other = next((i for i, hw in enumerate(sizes) if hw != tuple(size_hw)), None)
        if other is not None:
            raise UserError(f"image '{files[other]}' in {where} is {sizes[other][0]}x{sizes[other][1]}, --data's are "
                            f"{size_hw[0]}x{size_hw[1]}: give --data and {flag} the same size, or --image-size to resize both")
    return ImageFiles(files, transform), np.asarray(labels, dtype=np.int64), notes


def _check_resized(transform: ImageTransform, files: list[Path], sizes: list[tuple[int, int]], why: str) -> None:
    """The largest image after the resize step must fit in memory, as a decoded one must: the shorter side scaled up
    can make a thin image huge before its crop."""
    area, i = max((math.prod(transform.resized_size(h, w)), i) for i, (h, w) in enumerate(sizes))
    (h, w), (rh, rw) = sizes[i], transform.resized_size(*sizes[i])
    check_fits(area * 3 * 4, f"resizing image '{files[i]}' ({w}x{h} pixels) to {rw}x{rh}{why}",
               fix="remove the image or crop it to a usual aspect")


def _size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    try:
        ok = len(image_size) == 2 and all(int(v) == v and v >= 1 for v in image_size)
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise UserError(f"image size {image_size!r} is invalid: give two positive integers (height, width)")
    return int(image_size[0]), int(image_size[1])


def _headers(files: list[Path]) -> tuple[list[str], list[tuple[int, int]], list[bool], list[bool]]:
    """Every image's mode, (height, width), whether an EXIF tag asks for a rotation and whether it is animated, from its
    header (Image.open does not decode), with the limits checked: Pillow's decompression-bomb limit, 8-bit modes, the
    decoded size against the memory available."""
    Image = pillow()
    errors = pil_errors(Image)
    modes: list[str] = []
    sizes: list[tuple[int, int]] = []
    turned: list[bool] = []
    animated: list[bool] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for p in files:
            try:
                with open_plain(p) as f, Image.open(f, formats=PIL_FORMATS) as im:
                    modes.append(im.mode)
                    sizes.append((im.height, im.width))
                    bands = len(im.getbands())
                    if im.mode in ("P", "PA") and _gray_palette(im):  # a palette of grays holds a gray image
                        modes[-1] = f"{im.mode} of grays"
                    turned.append(_turned(im))  # read as stored: said in the data note, as a dropped alpha is
                    # an APNG: its first frame read (a phone's multi-picture JPEG, MPO, is one picture and its previews)
                    animated.append(im.format == "PNG" and bool(getattr(im, "is_animated", False)))
                    if im.format == "PNG" and im.mode not in PIL_BAD_MODES:  # Pillow opens 16-bit color PNGs as 8-bit RGB(A): the IHDR says what they hold
                        f.seek(24)
                        if f.read(1) == b"\x10":
                            modes[-1] = f"16-bit {modes[-1]}"
            except errors as exc:
                raise image_problem(p, exc, Image) from None
            if modes[-1] in PIL_BAD_MODES or modes[-1].startswith("16-bit"):
                kind = modes[-1] if modes[-1].startswith("16-bit") else f"{modes[-1]} (16-bit or float)"
                raise UserError(
                    f"image '{p}' is a {kind} image; cwtool reads 8-bit images: "
                    "convert it to 8-bit PNG/JPEG (or give the data as a .npz)"
                )
            h, w = sizes[-1]
            # Decoding holds the image, its converted copy and the array: about 4 bytes a band a pixel.
            check_fits(h * w * max(bands, 3) * 4, f"decoding image '{p}' ({w}x{h} pixels)")
    return modes, sizes, turned, animated


TURNED = "with an EXIF rotation"  # the header says "rotate"; cwtool reads the pixels as stored


def _turned(im) -> bool:
    """Whether the image's EXIF orientation tag asks for a rotation or a flip (2-8) that reading it as stored ignores.
    Only where the header holds EXIF: Pillow's getexif() of a PNG without it decodes the whole image to look further (70x
    slower on a folder of 1500x1500 PNGs, and before the memory check)."""
    if "exif" not in im.info:
        return False
    try:
        return im.getexif().get(0x0112, 1) in range(2, 9)
    except Exception:  # a damaged EXIF block: the pixels decode as they are; nothing to say
        return False


def _gray_palette(im) -> bool:
    """Whether a palette image's palette (read with its header) holds grays only: R = G = B in every entry."""
    try:
        palette = im.getpalette("RGB")
    except (ValueError, TypeError, OSError):
        return False
    return bool(palette) and all(palette[i] == palette[i + 1] == palette[i + 2] for i in range(0, len(palette) - 2, 3))


def normalization_for(normalize, channels: int, size_hw: tuple[int, int]) -> tuple[tuple, tuple, str]:
    """(mean, std, note) of --normalize for images of ``channels`` channels and model input ``size_hw``."""
    if normalize is None or normalize == "auto":
        normalize = "imagenet" if channels == 3 and min(size_hw) >= AUTO_NORMALIZE_SIDE else "none"
        how = " (--normalize auto)"
    else:
        how = ""
    if normalize == "none":
        return (), (), ""
    if normalize == "imagenet":
        if channels != 3:
            raise UserError("--normalize imagenet is for RGB images; these are grayscale: give one mean and std (e.g. 0.5:0.25) or none")
        return IMAGENET_MEAN, IMAGENET_STD, f", normalized with ImageNet's mean {list(IMAGENET_MEAN)} and std {list(IMAGENET_STD)}{how}"
    mean, std = (tuple(float(v) for v in part) for part in normalize)
    if len(mean) == 1 and channels > 1:
        mean, std = mean * channels, std * channels
    if len(mean) != channels or len(std) != channels:
        raise UserError(f"--normalize gives {len(mean)} means and {len(std)} stds for images of {channels} channel"
                        f"{'s' if channels > 1 else ''}: give one per channel (or one for all)")
    return mean, std, f", normalized with mean {list(mean)} and std {list(std)}"
