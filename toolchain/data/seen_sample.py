"""A sample of the rows an exported file's model was trained or tuned on (compress's training and validation rows; the
training rows a checkpoint records, for `cwtool export`), carried in the file's metadata so that `cwtool verify` can
refuse to judge rows the model learnt: a test split drawn with another seed than compress's holds some, and a gate on
them passes a model on its own training rows. Only found rows count: a sample not found decides nothing (the rows may
be the same ones, re-encoded or renamed; the record may be edited). numpy only.

A row is known by what does not depend on how it is prepared for the model: an image file by its bytes, a feature row by
its float32 values, each with its class's name (a held-out file may number its classes otherwise). 128 rows of 32 bits
(684 bytes in a file): a test split drawn with another seed holds about 19 of them; a fresh row matches one by chance
with probability 3e-8."""

from __future__ import annotations

import base64
import hashlib

import numpy as np

from toolchain.data.samples import batches, row_files, subset

__all__ = ["SAMPLE_ROWS", "fingerprints", "seen_sample", "trained_sample", "read_seen_sample", "fitted_counts"]

SAMPLE_ROWS = 128
MAX_SAMPLE_ROWS = SAMPLE_ROWS  # a record read from a file holding more is not one cwtool wrote
SAMPLE_SALT = 0x5EE1  # the sample's draw, apart from the split's own draw of the same seed


def fingerprints(x, y: np.ndarray, class_names, index=None) -> tuple[str, np.ndarray]:
    """("files" or "rows", a 32-bit fingerprint of each row of ``x`` (or of its rows ``index``) with its class name)."""
    from toolchain.provenance import file_sha256

    y = np.asarray(y, dtype=np.int64)
    picked = np.arange(len(y)) if index is None else np.asarray(index, dtype=np.int64)
    names = [str(n).encode("utf-8", "surrogateescape") for n in class_names or []]  # a folder's name as the file system gives it
    out = np.empty(len(picked), dtype=np.uint32)

    def mark(i: int, key: bytes, label: int) -> None:
        h = hashlib.blake2b(key, digest_size=4)
        h.update(names[label] if 0 <= label < len(names) else str(label).encode("ascii"))
        out[i] = int.from_bytes(h.digest(), "little")

    files = row_files(x)
    if files is not None:  # an image file's bytes: the same whatever its resize, crop or normalization
        for i, row in enumerate(picked):
            mark(i, file_sha256(files[row]).encode("ascii"), int(y[row]))
        return "files", out
    order = np.argsort(picked, kind="stable")  # a lazy array reads its rows in order
    done = 0
    for batch in batches(_take(x, picked[order])):
        batch = np.ascontiguousarray(batch, dtype=np.float32).reshape(len(batch), -1)
        for row in batch:
            j = int(order[done])
            mark(j, row.tobytes(), int(y[picked[j]]))
            done += 1
    return "rows", out


def _take(x, index: np.ndarray):
    return x if len(index) == len(x) and np.array_equal(index, np.arange(len(x))) else subset(x, index)


def seen_sample(parts, class_names, seed: int) -> dict | None:
    """The record an exported file carries: a seeded sample of the rows of ``parts`` ((x, y) pairs: the training and the
    validation split), fingerprinted. None where the parts are not of one kind (image files and arrays): nothing to match."""
    parts = [(x, np.asarray(y)) for x, y in parts if len(y)]
    if not parts:
        return None
    sizes = [len(y) for _, y in parts]
    total = int(sum(sizes))
    rng = np.random.default_rng([int(seed), SAMPLE_SALT])
    pick = np.sort(rng.choice(total, size=min(SAMPLE_ROWS, total), replace=False))
    kinds, prints, start = set(), [], 0
    for (x, y), n in zip(parts, sizes):
        here = pick[(pick >= start) & (pick < start + n)] - start
        start += n
        if not len(here):
            continue
        kind, found = fingerprints(x, y, class_names, here)
        kinds.add(kind)
        prints.append(found)
    if len(kinds) != 1:
        return None
    return _record(kinds.pop(), total, int(seed), np.concatenate(prints))


def trained_sample(record, dataset) -> dict | None:
    """The record for a model exported as it is (`cwtool export`): a seeded sample of the rows of ``dataset`` its
    checkpoint's training ``record`` says it was trained on (`cwtool train` stores every training row's fingerprint).
    None where the checkpoint records none (a model from elsewhere: its training rows are unknown) or none of these rows
    are among them. Rows are looked up in a seeded order until the sample is full: a folder is not decoded whole."""
    from toolchain.data.identity import row_fingerprints

    blob = record.get("train_row_fingerprints") if isinstance(record, dict) else None
    if not isinstance(blob, bytes) or not blob or len(blob) % 8:
        return None
    trained = np.frombuffer(blob, dtype=np.uint64)
    x, y = dataset.split("all")
    y = np.asarray(y)
    rng = np.random.default_rng([int(dataset.seed), SAMPLE_SALT])
    order = rng.permutation(len(y))
    found, looked = [], 0
    for start in range(0, len(order), 4 * SAMPLE_ROWS):
        chunk = np.sort(order[start:start + 4 * SAMPLE_ROWS])
        found.extend(chunk[np.isin(row_fingerprints(subset(x, chunk), y[chunk]), trained)].tolist())
        looked += len(chunk)
        if len(found) >= SAMPLE_ROWS:
            break
    if not found:
        return None
    # every trained row of the chunks looked at is as likely (the first found of a sorted chunk were the lowest indices:
    # one split's rows)
    pick = np.sort(rng.choice(np.array(found, dtype=np.int64), size=min(SAMPLE_ROWS, len(found)), replace=False))
    kind, prints = fingerprints(x, y, dataset.class_names, pick)
    seed = record.get("seed")
    return _record(kind, int(round(len(found) / looked * len(y))),  # the trained rows among these, estimated
                   int(seed) if isinstance(seed, int) and not isinstance(seed, bool) else None, prints)


def _record(kind: str, rows: int, seed: int | None, prints: np.ndarray) -> dict:
    """The record as a file holds it (plain values: ONNX metadata holds it as JSON text, a TFLite sidecar as JSON)."""
    return {"kind": kind, "rows": rows, "seed": seed, "sample": base64.b64encode(prints.astype("<u4").tobytes()).decode("ascii")}


def read_seen_sample(value) -> dict | None:
    """A record as a file holds it (untrusted: an edited file's value may be anything): {"kind", "rows", "seed",
    "sample": uint32 array}, or None where it is not one cwtool wrote."""
    if not isinstance(value, dict) or value.get("kind") not in ("files", "rows") or not isinstance(value.get("sample"), str):
        return None
    text = value["sample"]
    if len(text) > 4 * (MAX_SAMPLE_ROWS * 4 + 2) // 3 + 4:
        return None
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, UnicodeEncodeError):
        return None
    if not raw or len(raw) % 4 or len(raw) > 4 * MAX_SAMPLE_ROWS:
        return None
    rows, seed = value.get("rows"), value.get("seed")
    whole = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v < 2**63  # noqa: E731
    return {"kind": value["kind"], "rows": rows if whole(rows) else None, "seed": seed if whole(seed) else None,
            "sample": np.frombuffer(raw, dtype="<u4")}


def fitted_counts(record: dict, judged: tuple[str, np.ndarray], every: tuple[str, np.ndarray] | None = None) -> dict | None:
    """How ``record``'s sampled rows (read_seen_sample's) lie among the rows judged and the data they were drawn from.
    ``judged``, ``every``: (kind, fingerprints) of the rows judged and of every row of their data (None: the rows judged
    are every row). {"sampled": distinct sampled rows, "judged": of them among the rows judged, "only_judged": among the
    rows judged and nowhere else in the data (a row's twin in another split does not count: the same data split as
    compress split it holds each fitted row outside the rows judged), "elsewhere": among the data's other rows,
    "in_data": anywhere in the data, "repeats": the share of the data's rows that repeat another of them}. None where the
    rows are of another kind than the sample's (image files against arrays)."""
    if judged[0] != record["kind"] or (every is not None and every[0] != record["kind"]):
        return None
    sampled = np.unique(record["sample"])
    in_judged = _occurrences(sampled, judged[1])
    data = judged[1] if every is None else every[1]
    in_every = in_judged if every is None else _occurrences(sampled, data)
    repeats = 1.0 - len(np.unique(data)) / len(data) if len(data) else 0.0
    return {"sampled": int(len(sampled)), "judged": int((in_judged > 0).sum()),
            "only_judged": int(((in_judged > 0) & (in_every <= in_judged)).sum()),
            "elsewhere": int((in_every > in_judged).sum()), "in_data": int((in_every > 0).sum()), "repeats": float(repeats)}


def _occurrences(keys: np.ndarray, values: np.ndarray) -> np.ndarray:
    """How often each of the sorted, distinct ``keys`` occurs in ``values``."""
    found, counts = np.unique(values, return_counts=True)
    if not len(found):
        return np.zeros(len(keys), dtype=np.int64)
    at = np.minimum(np.searchsorted(found, keys), len(found) - 1)
    return np.where(found[at] == keys, counts[at], 0)
