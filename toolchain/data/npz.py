"""Read the arrays of an .npz without trusting it -- numpy only.

``numpy.load`` allocates whatever a member's .npy header declares before it reads a byte, so a
few kilobytes of deflated zeros can ask for 20 GB. Here every member is checked first:
the zip directory's uncompressed size and the .npy header's shape x itemsize (an exact Python
int, no int64 overflow) must fit in the memory available (`limits.check_fits`); object
(pickled) and zero-size dtypes are refused; then the array is read. Every problem is a one-line
`UserError`.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from toolchain.data.mapped import HEADER_ERRORS, MappedMember, map_member, mappable
from toolchain.file_identity import fd_identity
from toolchain.limits import check_fits, format_bytes, product
from toolchain.errors import UserError, one_line

__all__ = ["npz_keys", "read_npz", "NPZ_FIX"]

NPZ_FIX = "save it with numpy.savez(file, x=..., y=...)"
_MAX_MEMBERS = 10_000
_MAX_HEADER = 10_000  # numpy's own default for .npy headers
_ZIP_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError,
               RuntimeError, ValueError, UnicodeDecodeError)


def _where(path: Path) -> str:
    return f"'{path}'"


def _open_zip(path: Path) -> zipfile.ZipFile:
    where = _where(path)
    try:
        with open(path, "rb") as fh:
            magic = fh.read(4)
    except OSError as exc:
        raise UserError(f"cannot read {where} ({exc.strerror or exc}): check the file and its permissions") from None
    if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
        raise UserError(f"{where} is not an .npz archive (corrupt or another format): {NPZ_FIX}")
    try:
        zf = zipfile.ZipFile(path)
    except _ZIP_ERRORS as exc:
        raise UserError(f"cannot read {where} as .npz ({_msg(exc)}): {NPZ_FIX}") from None
    if len(zf.infolist()) > _MAX_MEMBERS:
        n = len(zf.infolist())
        zf.close()
        raise UserError(f"{where} holds {n} files; an .npz of a dataset holds a handful: {NPZ_FIX}")
    return zf


def _msg(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:200] or type(exc).__name__


def _members(zf: zipfile.ZipFile) -> dict[str, zipfile.ZipInfo]:
    """Array name -> zip member, as numpy names them ('x.npy' -> 'x')."""
    out: dict[str, zipfile.ZipInfo] = {}
    for info in zf.infolist():
        name = info.filename
        key = name[:-4] if name.endswith(".npy") else name
        if key in out:  # 'x.npy' and 'x', or a name twice: which one numpy reads is not the file's to decide silently
            raise UserError(f"'{zf.filename}' holds two members named {one_line(key)[:80]!r} ({one_line(out[key].filename)[:80]!r} "
                            f"and {one_line(name)[:80]!r}): {NPZ_FIX}")
        out[key] = info
    return out


def npz_keys(path: str | Path) -> set[str]:
    """The array names in an .npz (reads only the zip directory). Raises UserError."""
    path = Path(path)
    with _open_zip(path) as zf:
        return set(_members(zf))


def _header(fp, name: str, where: str) -> tuple[tuple[int, ...], bool, np.dtype]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(fp)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(fp, max_header_size=_MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(fp, max_header_size=_MAX_HEADER)
        else:  # pragma: no cover - read_magic accepts only these
            raise ValueError(f"unsupported .npy version {version}")
    except _ZIP_ERRORS + HEADER_ERRORS as exc:
        raise UserError(f"'{name}' in {where} is not a valid .npy array ({_msg(exc)}): {NPZ_FIX}") from None
    shape = tuple(int(d) for d in shape)
    if any(d >= 2**62 for d in shape):  # numpy counts elements in int64
        raise UserError(f"'{name}' in {where} declares the impossible shape {shape}: {NPZ_FIX}")
    return shape, bool(fortran), np.dtype(dtype)


def read_npz(path: str | Path, wanted: set[str] | None = None,
             mappable_keys: set[str] = frozenset()) -> tuple[set[str], dict[str, np.ndarray | MappedMember]]:
    """(every array name, {name: array} for the names in ``wanted``) of the .npz at ``path``.

    Each wanted member is checked before it is read: its zip size and its .npy header's
    declared size must fit in the memory available, and it must hold no Python objects.
    A member named in ``mappable_keys`` that is large and stored uncompressed is not read: its entry
    is a `MappedMember` (toolchain.data.mapped), mapped when rows are read.
    """
    path = Path(path)
    where = _where(path)
    with _open_zip(path) as zf:
        members = _members(zf)
        keys = set(members)
        arrays: dict[str, np.ndarray] = {}
        declared = {}  # every wanted member's header, read before any member is: a file refused for its shapes inflates nothing
        for key, info in members.items():
            if wanted is not None and key not in wanted:
                continue
            if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
                # numpy writes only these; bzip2/lzma inflate a whole read at once (no output bound)
                raise UserError(
                    f"'{key}' in {where} uses zip compression method {info.compress_type}, not stored or "
                    f"deflated as numpy writes it: {NPZ_FIX} or numpy.savez_compressed"
                )
            if info.flag_bits & 0x1:
                raise UserError(f"'{key}' in {where} is encrypted: save the arrays without a password ({NPZ_FIX})")
            try:
                with zf.open(info) as fp:
                    shape, fortran, dtype = _header(fp, key, where)
            except UserError:
                raise
            except _ZIP_ERRORS as exc:
                raise UserError(f"cannot read '{key}' in {where} ({_msg(exc)}): {NPZ_FIX}") from None
            if dtype.hasobject:
                raise UserError(
                    f"'{key}' in {where} stores Python objects (pickled), which cwtool does not load: "
                    "save numeric arrays, and class_names as a string array (np.array(names, dtype=str))"
                )
            if dtype.itemsize == 0:
                raise UserError(f"'{key}' in {where} has the zero-size dtype {dtype}: store numbers ({NPZ_FIX})")
            declared[key] = (info, shape, fortran, dtype)
        _check_pairs({key: shape for key, (_, shape, _, _) in declared.items()}, where)
        for key, (info, shape, fortran, dtype) in declared.items():
            count = product(shape)
            nbytes = count * dtype.itemsize
            member = (map_member(path, info, shape, dtype, fortran, fd_identity(zf.fp.fileno()))
                      if key in mappable_keys and mappable(info, count) else None)
            if member is not None:  # read in place, a batch at a time
                arrays[key] = member
                continue
            fix = "use a smaller file or a machine with more memory"
            if key in mappable_keys and info.compress_type != zipfile.ZIP_STORED:
                fix += " (or save it uncompressed with numpy.savez: cwtool then reads it in place, a batch at a time)"
            check_fits(info.file_size, f"'{key}' in {where} (zip member of {format_bytes(info.file_size)} uncompressed)", fix)
            # samples become float32 once read: an 8 MB file of 8.3 GB of uint8 zeros was inflated whole before the
            # float32 copy's 33 GB was refused, and without this fix named
            as_float = count * 4 if key in mappable_keys and dtype != np.float32 else 0
            check_fits(nbytes + as_float, f"'{key}' in {where} (declared shape {shape}, {dtype}"
                       + (", then as float32)" if as_float else ")"), fix)
            try:
                with zf.open(info) as fp:
                    arr = np.lib.format.read_array(fp, allow_pickle=False, max_header_size=_MAX_HEADER)
            except _ZIP_ERRORS + HEADER_ERRORS as exc:
                raise UserError(f"cannot read '{key}' in {where} ({_msg(exc)}): {NPZ_FIX}") from None
            if arr.shape != shape or arr.dtype != dtype:  # pragma: no cover - read_array read another header
                raise UserError(f"'{key}' in {where} changed while it was read: {NPZ_FIX}")
            arrays[key] = arr
    return keys, arrays


PAIRS = (("x", "y"), ("x_train", "y_train"), ("x_val", "y_val"), ("x_test", "y_test"))


def _check_pairs(shapes: dict[str, tuple[int, ...]], where: str) -> None:
    """Samples and labels of one split, counted from their headers: a 1 MB member declaring 4 million rows beside 3
    labels inflated 1.5 GB before "x has 4000000 samples but y has 3 labels" (a data reviewer's finding)."""
    for xk, yk in PAIRS:
        labels = shapes.get(yk)
        one_each = labels is not None and (len(labels) == 1 or (len(labels) == 2 and labels[1] == 1))  # else check_labels says
        if xk in shapes and shapes[xk] and one_each and shapes[xk][0] != labels[0]:
            raise UserError(f"{xk} has {shapes[xk][0]} samples but {yk} has {labels[0]} labels in {where}: give one "
                            "label per sample")

