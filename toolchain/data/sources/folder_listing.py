"""The files of an ImageFolder-layout folder: its class folders in a stable order, and every image in each, with what
is refused (names a user cannot tell apart, a folder of split folders, images nested below a class folder, a class
with no images) and what is left out (hidden entries, other files). Names only: no image is opened here."""

from __future__ import annotations

import errno
import os
from collections import Counter
from pathlib import Path

from toolchain.data.labels import composed
from toolchain.errors import UserError, listed, one_line

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg"}

OTHER_IMAGE_FORMATS = {".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WebP", ".gif": "GIF", ".heic": "HEIC",
                       ".heif": "HEIF", ".avif": "AVIF", ".jp2": "JPEG 2000", ".dcm": "DICOM", ".jfif": "JPEG named .jfif",
                       ".jpe": "JPEG named .jpe"}
"""Images cwtool does not read, by extension: left out, and said per class (a class trained on a third of its images).
JPEGs as Windows and browsers name them (.jfif, .jpe) among them: read, they would change the rows of a folder every
earlier run and checkpoint split; renamed .jpg, they are read."""

LITTER_FOLDERS = {"__MACOSX", "@eaDir"}
"""Folders tools write beside the images, never a class: a Mac zip's resource forks, a Synology NAS's thumbnails (one in
every folder; its thumbnails moved into a class would be copies of the class's own images)."""

SPLIT_FOLDERS = {"train": "--data", "val": "--val", "valid": "--val", "validation": "--val", "test": "--test"}


def in_order(p: Path) -> tuple[str, str]:
    """Folders and files sort by their composed names: a copy made on a Mac (decomposed accents) lists the same rows in
    the same order, and so has the same rows' sha256."""
    return composed(p.name), p.name


def class_dirs_of(folder: Path, where: str) -> list[Path]:
    """The class folders of ``folder``, sorted (hidden ones, and LITTER_FOLDERS, left out). A
    link among them that leads to no folder (to nothing, or round in a loop) is refused: left out, a whole class would
    vanish from every count."""
    dirs = []
    for p in folder.iterdir():
        if p.name.startswith(".") or p.name in LITTER_FOLDERS:
            continue
        if p.is_dir():
            dirs.append(p)
        elif p.is_symlink() and not p.exists():
            raise UserError(f"'{one_line(p.name)}' in {where} is a link to nothing (or a loop of links): a class folder there would "
                            "be left out; mend the link or remove it")
    return sorted(dirs, key=in_order)


def refuse_names_alike(texts: list[str], where: str) -> None:
    """Two class folders a user cannot tell apart are refused: one name encoded two ways (a Mac's decomposed accents),
    names printed alike ('x\\ny' and 'x' newline 'y': a class's rows were labelled as the other's), names that differ
    only in spaces at their ends, or a name of spaces alone. Letter case tells classes apart (A/ and a/ in a set of
    characters)."""
    named: dict[str, str] = {}
    for text in texts:
        if not text.strip():
            raise UserError(f"{where} has a class folder named {text!r}, spaces alone: give it a name")
        key = one_line(text).strip()
        if key in named:
            twin = named[key]
            why = ("their letters encoded two ways (composed and decomposed accents): merge them into one folder" if twin == text
                   else "printed alike (one holds a line break or another control character): rename one"
                   if one_line(twin) == one_line(text) else
                   "differing only in spaces at their ends: merge them or rename one")
            raise UserError(f"{where} has two class folders named '{one_line(twin)[:60]}' and '{one_line(text)[:60]}', {why}")
        named[key] = text


def refuse_split_layout(folder: Path, class_dirs: list[Path]) -> None:
    """A folder of train/val/test folders, each of class folders (a common layout), is not one of class folders:
    say how to give it instead of calling its 'test' folder a class without images."""
    names = {d.name.lower() for d in class_dirs}
    if "train" in names and names <= set(SPLIT_FOLDERS) and all(any(p.is_dir() for p in d.iterdir()) for d in class_dirs):
        ordered = sorted(class_dirs, key=lambda d: list(SPLIT_FOLDERS).index(d.name.lower()))
        parts = " ".join(f"{SPLIT_FOLDERS[d.name.lower()]} '{d}'" for d in ordered)
        raise UserError(f"'{folder}' holds split folders ({', '.join(d.name for d in ordered)}), each of class folders, not "
                        f"class folders: give one of them as --data (compress takes all: {parts})")


def listed_images(class_dirs: list[Path], lookup: dict[str, int], where: str) -> tuple[list[Path], list[int], list[Path]]:
    """Every image of every class folder, in order, and its label; and the other entries left out (a GIF, a
    sub-folder; hidden ones and LITTER_FOLDERS not counted), which the data's note names. An entry named like an image
    that cannot be read as a file (a link to nothing: a git-annex or DVC checkout whose content was never fetched) is
    refused in every command, whichever split it would have fallen in: left out, a split drawn from the folder would
    be another than the user's copy with its content gives."""
    files: list[Path] = []
    labels: list[int] = []
    skipped: list[Path] = []
    empty: list[Path] = []
    for d in class_dirs:
        imgs, others = [], []
        for p in sorted((p for p in d.iterdir() if not p.name.startswith(".") and p.name not in LITTER_FOLDERS), key=in_order):
            if p.suffix.lower() not in IMAGE_EXTENSIONS:  # one stat per image: 20,000 of them
                others.append(p)
            elif p.is_file():
                imgs.append(p)
            else:
                raise UserError(f"'{one_line(str(p))}' in {where} is named like an image but is {_not_a_file(p)}: put the image "
                                "there, or remove the entry")
        skipped += others
        nested = next((p for p in others if p.is_dir() and not _leads_back_up(p, d) and _holds_images(p)), None)
        if nested is not None:  # torchvision reads below the class folders; left out, half a class would vanish from every count
            raise UserError(f"'{one_line(d.name)}/{one_line(nested.name)}' in {where} is a folder of images inside a class folder: "
                            "cwtool reads the images directly in each class folder, not in folders below them; move them up into "
                            f"'{one_line(d.name)}'")
        if not imgs:
            empty.append(d)
        files += imgs
        labels += [lookup[d.name]] * len(imgs)
    if empty and len(empty) == len(class_dirs):  # a repository's folder given by mistake: "remove the folder 'cli'" was harmful
        shown = listed((f"'{one_line(d.name)}'" for d in empty), 5)
        raise UserError(f"{where} is not an ImageFolder: none of its {len(empty):,} sub-folders ({shown}) holds PNG/JPEG images "
                        "directly; give a folder whose sub-folders, one per class, hold the images")
    if empty:
        raise UserError(f"class folder '{one_line(empty[0].name)}' in {where} has no PNG/JPEG images while the others have: add "
                        "images to it or move it out of the folder")
    return files, labels, skipped


def _not_a_file(p: Path) -> str:
    """What an entry named like an image is where it is not a regular file."""
    if p.is_symlink() and not p.exists():
        try:
            os.stat(p)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                return "a loop of links"
        return "a link to nothing (its content not fetched, or moved)"
    return "a folder" if p.is_dir() else "not a regular file"


def is_other_image(p: Path) -> bool:
    return p.suffix.lower() in OTHER_IMAGE_FORMATS and not p.is_dir()


def other_images_note(others: list[Path], files: list[Path], class_dirs: list[Path]) -> str:
    """The images of formats cwtool does not read (``others``, entries left out that is_other_image), per class: "61 entries
    left out" hid that a class kept 20 of its 60 images. "" where there are none."""
    if not others:
        return ""
    formats = Counter(OTHER_IMAGE_FORMATS[p.suffix.lower()] for p in others)
    per_class, read = Counter(p.parent for p in others), Counter(f.parent for f in files)
    kinds = ", ".join(f"{kind} {n:,}" for kind, n in formats.most_common())
    classes = listed((f"'{one_line(d.name)[:60]}' {per_class[d]:,} ({read[d]:,} read)" for d in class_dirs if d in per_class), 6)
    how = "convert them to PNG or JPEG" + (" (a .jfif or .jpe file is a JPEG: rename it .jpg)" if any("named" in kind for kind in formats) else "")
    return (f"{len(others):,} image{'s' if len(others) > 1 else ''} of formats cwtool does not read left out ({kinds}; by class: "
            f"{classes}): {how} to use them")


def _leads_back_up(entry: Path, class_dir: Path) -> bool:
    """Whether a link in a class folder leads to that folder or one above it (``ln -s . loop``): its images are read
    already; it is left out, not called a folder of images to move up."""
    if not entry.is_symlink():
        return False
    try:
        return class_dir.resolve().is_relative_to(entry.resolve())
    except (OSError, RuntimeError):  # a loop of links
        return True


def _holds_images(folder: Path, max_depth: int = 32, limit: int = 100_000) -> bool:
    """Whether a folder holds an image file anywhere below it, within ``max_depth`` folders and ``limit`` entries (stops at
    the first; os.walk's recursion ended a folder nested 1,500 deep in exit 3)."""
    from toolchain.input_paths import walk_entries

    for seen, (path, _) in enumerate(walk_entries(folder, max_depth), 1):
        if seen > limit:
            return False
        if path.name.lower().endswith(tuple(IMAGE_EXTENSIONS)) and not path.name.startswith("."):
            return True
    return False
