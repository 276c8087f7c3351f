"""Limits on what a file may ask of this machine, numpy-free and import-light.

Nothing in a data or model file is trusted: a header can declare 20 GB behind a few kilobytes of
compressed bytes, a label can be 10**12, a checkpoint can ask for a layer of 10**12 channels. Every
loader asks here before it allocates, and refuses with a one-line `UserError` (exit code 2) instead
of dying of MemoryError (exit code 3, a bug).

Available memory is the smallest of what this process can still get:
  * MemAvailable in /proc/meminfo (Linux; elsewhere os.sysconf's available or physical pages),
  * the address-space limit (``ulimit -v``, RLIMIT_AS) less the address space already mapped,
  * the data-segment limit (``ulimit -d``, RLIMIT_DATA) less the data already mapped,
  * a cgroup v2 memory limit (containers) less the memory the cgroup already uses.
When none of these can be read the check is skipped (None): nothing better is known.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Sequence

MAX_CLASSES = 100_000
"""Labels must be class indices below this (and class-name lists at most this long)."""

MAX_CSV_LINE = 1 << 20
"""Longest physical CSV line read, in characters (1,048,576): a longer one is refused."""

MAX_LABEL_CHARS = 1000
"""Longest CSV string label (a class name), in characters."""

_CGROUP = "/sys/fs/cgroup"


def _read_kb(path: str, key: str) -> int | None:
    """Bytes of a ``Key:   123 kB`` line of a /proc file, or None."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith(key + ":"):
                    parts = line.split()
                    return int(parts[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None


def _read_int(path: str) -> int | None:
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            text = fh.read(64).strip()
    except OSError:
        return None
    return int(text) if text.isascii() and text.isdigit() else None  # "max" (no limit) -> None


def _rlimit(name: str) -> int | None:
    try:
        import resource
    except ImportError:  # Windows
        return None
    try:
        soft, _hard = resource.getrlimit(getattr(resource, name))
    except (AttributeError, ValueError, OSError):
        return None
    if soft == resource.RLIM_INFINITY or soft < 0:
        return None
    return int(soft)


def memory_limits() -> list[tuple[int, str]]:
    """Every known bound on the memory this process can still allocate: (bytes, what)."""
    found: list[tuple[int, str]] = []
    avail = _read_kb("/proc/meminfo", "MemAvailable")
    if avail is not None:
        found.append((avail, "MemAvailable in /proc/meminfo"))
    else:
        try:
            pages = os.sysconf("SC_AVPHYS_PAGES")
            page = os.sysconf("SC_PAGE_SIZE")
            if pages > 0 and page > 0:
                found.append((pages * page, "available physical memory"))
        except (AttributeError, ValueError, OSError):
            try:
                pages = os.sysconf("SC_PHYS_PAGES")
                page = os.sysconf("SC_PAGE_SIZE")
                if pages > 0 and page > 0:
                    found.append((pages * page, "physical memory"))
            except (AttributeError, ValueError, OSError):
                pass
    for rname, status_key, label in (
        ("RLIMIT_AS", "VmSize", "the address-space limit (ulimit -v)"),
        ("RLIMIT_DATA", "VmData", "the data-segment limit (ulimit -d)"),
    ):
        lim = _rlimit(rname)
        if lim is not None:
            used = _read_kb("/proc/self/status", status_key) or 0
            found.append((max(lim - used, 0), f"{label} of {format_bytes(lim)}, {format_bytes(used)} in use"))
    cg_max = _read_int(f"{_CGROUP}/memory.max")
    if cg_max is not None:
        cg_used = _read_int(f"{_CGROUP}/memory.current") or 0
        found.append((max(cg_max - cg_used, 0), f"the cgroup memory limit of {format_bytes(cg_max)}"))
    return found


def available_memory() -> tuple[int, str] | None:
    """(bytes this process can still allocate, where that bound comes from), or None if unknown."""
    found = memory_limits()
    return min(found) if found else None


def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the system says, else the machine's count)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def format_bytes(n: int | float) -> str:
    """1234567 -> '1.2 MB' (decimal units); from 1e18 on, '7.9e+28 bytes'."""
    n = float(n)
    if abs(n) >= 1e18:  # absurd sizes from hostile headers: 7.9e+28 bytes
        return f"{n:.1e} bytes"
    for unit in ("bytes", "KB", "MB", "GB", "TB", "PB"):
        if abs(n) < 1000 or unit == "PB":
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} PB"  # pragma: no cover


def check_fits(nbytes: int, what: str, fix: str = "use a smaller file or a machine with more memory") -> None:
    """Raise a UserError when allocating ``nbytes`` more would exceed the memory available.

    ``what`` completes "<what> needs N bytes", e.g. "x in 'a.npz' (shape (5, 3), float32)".
    """
    from toolchain.errors import UserError

    nbytes = int(nbytes)
    avail = available_memory()
    if avail is None:
        return
    limit, source = avail
    if nbytes > limit:
        raise UserError(
            f"{what} needs {format_bytes(nbytes)}, more than the {format_bytes(limit)} of memory "
            f"available ({source}): {fix}"
        )


def product(dims: Sequence[int]) -> int:
    """Product of dimensions as an exact Python int (no int64 overflow)."""
    out = 1
    for d in dims:
        out *= int(d)
    return out


@contextlib.contextmanager
def memory_cap(extra_bytes: int):
    """While the block runs, this process may map at most ``extra_bytes`` more than it has now (a lowered
    RLIMIT_AS): reading an untrusted file can then not make it allocate gigabytes (a 1 KB pickle can ask
    a constructor for a 16000 x 16000 layer). Where the limit cannot be set, nothing is capped."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        mapped = _status_bytes("VmSize")
    except (ImportError, AttributeError, ValueError, OSError):
        yield
        return
    if mapped is None:
        yield
        return
    cap = mapped + int(extra_bytes)
    if soft not in (resource.RLIM_INFINITY, -1):
        cap = min(cap, soft)
    if hard not in (resource.RLIM_INFINITY, -1):
        cap = min(cap, hard)
    try:
        resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ValueError, OSError):
        yield
        return
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def _status_bytes(key: str) -> int | None:
    return _read_kb("/proc/self/status", key)


# ONNX text: onnx and onnxruntime read a file's metadata_props whole, each in copies of their own, before any check of
# cwtool's can run (100 MB of one metadata value took verify to 1.4 GB). The protobuf's top-level fields are walked here
# instead (a tag, a length, a seek), and a file whose metadata or doc string outgrows the cap is refused first.
MAX_ONNX_TEXT_BYTES = 256 << 20
"""The most bytes of metadata_props and doc_string a ModelProto may hold: cwtool's own files hold a few KB, about 100 MB
where they name MAX_CLASSES classes of MAX_LABEL_CHARS ASCII characters each (``class_names``)."""

MAX_TOP_LEVEL_FIELDS = 100_000
"""A ModelProto has a few dozen top-level fields (opset imports, one graph, metadata, functions)."""

_TEXT_FIELDS = (6, 14)  # ModelProto.doc_string, ModelProto.metadata_props


def _varint(fh) -> int | None:
    value = 0
    for shift in range(0, 70, 7):
        byte = fh.read(1)
        if not byte:
            return None
        value |= (byte[0] & 0x7F) << shift
        if byte[0] < 0x80:
            return value
    return None


def top_level_text_bytes(path) -> int | None:
    """Bytes of the file's top-level metadata_props and doc_string; None where its top level is not a ModelProto's
    wire format (the runtime then says what is wrong in its own words)."""
    total = 0
    with open(path, "rb") as fh:
        fh.seek(0, 2)
        size = fh.tell()
        fh.seek(0)
        for _ in range(MAX_TOP_LEVEL_FIELDS):
            if fh.tell() == size:
                return total
            tag = _varint(fh)
            if tag is None:
                return None
            field, wire = tag >> 3, tag & 7
            if field == 0:  # no field is numbered 0: not a ModelProto (a file of zeros)
                return None
            if wire == 0:
                if _varint(fh) is None:
                    return None
                continue
            skip = {1: 8, 5: 4}.get(wire) if wire != 2 else _varint(fh)
            if skip is None or fh.tell() + skip > size:
                return None
            if wire == 2 and field in _TEXT_FIELDS:
                total += skip
            fh.seek(skip, 1)
    from toolchain.errors import UserError

    raise UserError(f"{path} holds over {MAX_TOP_LEVEL_FIELDS:,} top-level protobuf fields: not an ONNX model "
                    "cwtool reads; re-export it")


def check_onnx_text(path) -> None:
    """Refuse, before onnx or onnxruntime reads it, an ONNX file whose metadata or doc string is over the cap."""
    from toolchain.errors import UserError

    found = top_level_text_bytes(path)
    if found is not None and found > MAX_ONNX_TEXT_BYTES:
        raise UserError(f"{path} holds {found / 2**20:,.1f} MiB of metadata and doc string, over the {MAX_ONNX_TEXT_BYTES >> 20} "
                        "MiB cwtool reads (its own files hold a few KB): give a file whose metadata is smaller")
