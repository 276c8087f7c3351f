"""Files found by name (`--target raspberry-pi-4`, `--calibration digits`): a folder named by an environment
variable first, then the repository's top-level folder, then its copy shipped inside the installed package."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled_files(env: str, checkout: str, packaged: str, suffix: str) -> dict[str, Path]:
    """name -> file for every ``*suffix`` in the folders searched, first match wins."""
    found: dict[str, Path] = {}
    for folder in bundled_dirs(env, checkout, packaged):
        for path in sorted(folder.glob(f"*{suffix}")):
            found.setdefault(path.name[: -len(suffix)], path)
    return found


def bundled_dirs(env: str, checkout: str, packaged: str) -> list[Path]:
    """The folders searched. One that ``env`` names must be a folder: a typo, or a folder missing from a CI checkout, made
    `--target raspberry-pi-4` take the built-in profile instead of the team's measured one, without a word."""
    from toolchain.errors import UserError

    given = os.environ.get(env, "")
    given = given if given.strip() else ""  # a folder's name is as set: "tg " is not "tg"
    if given and not Path(given).expanduser().is_dir():
        raise UserError(f"{env} '{given}' is not a folder: give the folder of your own files, or unset it")
    dirs = [Path(given).expanduser()] if given else []
    dirs += [_PACKAGE.parent / checkout, _PACKAGE / packaged]  # a repository checkout; an installed wheel
    return [d for d in dirs if d.is_dir()]
