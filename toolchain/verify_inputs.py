"""verify's inputs: the rows it judges (an image folder prepared as the artifacts record, unless told otherwise) and the
artifacts opened in their runtimes, before any of them runs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolchain.errors import UserError
from toolchain.judged_rows import UnsplitRows, load_rows_for, the_run_s_test_rows, the_run_s_unsplit_rows
from toolchain.recorded import PREPARATION_WORDS, Preparation, color_in, normalization_in, prepared_as, recorded_value, resizing_in

__all__ = ["VerifyRows", "load_verify_rows", "open_artifact", "distinct_names", "no_sidecar_hint", "importable"]


@dataclass
class VerifyRows:
    rows: dict  # toolchain.judged_rows.load_rows_for's
    opened: list | None  # (path, runner, info) of every artifact where the rows needed their record first, else None
    prepared: Preparation  # an image folder's flags: as given, else as the artifacts record
    said: list  # notes on the rows judged: rows the files' models were trained or tuned on among them
    narrowed: bool  # an x/y .npz, the pool compress split, narrowed to its seeded test split


def load_verify_rows(req, base_n: int | None) -> VerifyRows:
    """The rows ``req`` (a toolchain.verify.VerifyRequest) names, for a baseline of ``base_n`` rows (or None)."""
    from toolchain.data.loaders import is_image_folder

    # Rows first (bad data is named before the artifacts are opened), except that an ImageFolder is read in the color the
    # files were made for (a device's gray images for an RGB model) unless --color says otherwise: they are opened first.
    # The same for the normalization the files record, unless --normalize names one (auto is a guess from the image size).
    opened, records = None, []
    unopened = None  # why an artifact could not be opened to read its record
    if (req.color is None or req.normalize in (None, "auto") or (req.resize is None and req.image_size is None)) \
            and is_image_folder(req.data):
        try:
            opened = [(path, *open_artifact(path, req.threads)) for path in req.artifacts]
        except UserError as exc:  # named below, after the data's own problems, as for any data
            opened, unopened = None, exc
        records = [recorded_value(runner, "preprocessing") for _, runner, _ in opened or []]
    check_records_agree(req, opened or [], records)
    # verify's auto, as its --color auto: as the files were made (sized so: not a plain stretch)
    prepared = prepared_as(records, req.color, req.normalize, req.resize, req.image_size)
    color, normalize, resize, image_size = prepared.color, prepared.normalize, prepared.resize, prepared.image_size
    unsplit = None  # a default test split that cannot be drawn: every row, if the files' run tested them on these
    try:
        try:
            rows = load_rows_for(req.data, req.split, req.seed, req.label_column, baseline_n=base_n,
                                 class_names=req.class_names, image_size=image_size, input_shape=req.input_shape,
                                 resize=resize, normalize=normalize, color=color)
        except UnsplitRows as exc:
            if req.split != "auto" or base_n is not None:
                raise
            rows, unsplit = None, exc
    except UserError as exc:  # a folder's images that the files' record would have prepared, had it travelled with them
        if unopened is not None and any(word in str(exc) for word in PREPARATION_WORDS):  # a refusal the record would have
            raise unopened from exc  # prevented, and it was never read: the missing or unreadable file is the cause
        if prepared.normalize_recorded and str(exc).startswith("--normalize "):  # the user gave no --normalize: the record is at fault
            what = str(exc)[len("--normalize "):].split(":")[0]
            raise UserError(f"the normalization the files record (their metadata or .json sidecar) {what}: the record does "
                            "not fit these images; pass --normalize to set it") from exc
        hint = no_sidecar_hint(opened or [], req.data)
        if not hint:
            raise
        raise UserError(f"{exc}{hint}") from exc
    if opened is None:  # what the files record of the rows they were fitted to decides which rows are judged
        opened = [(path, *open_artifact(path, req.threads)) for path in req.artifacts]

    def load(split: str, seed: int) -> dict:
        return load_rows_for(req.data, split, seed, req.label_column, class_names=req.class_names, image_size=image_size,
                             input_shape=req.input_shape, resize=resize, normalize=normalize, color=color)

    widened, whole_note = rows, None
    tested = "the files' compress run tested them on"
    recorded = [recorded_value(runner, "test_rows") for _, runner, _ in opened]  # their run's --test rows, where recorded
    if unsplit is not None:
        try:
            rows, whole_note = the_run_s_unsplit_rows(unsplit, recorded, tested)
        except UserError as exc:  # a file without its sidecar cannot show it was tested on these rows: said, as for any refusal
            hint = no_sidecar_hint(opened, req.data)
            if not hint:
                raise
            raise UserError(f"{exc}{hint}") from exc
        widened = rows
    elif req.split == "auto" and base_n is None:  # no baseline's rows to follow: the files' record of their run's --test
        widened, whole_note = the_run_s_test_rows(rows, recorded, lambda: load("all", req.seed), tested)
    judged, said = rows_not_fitted(req, base_n, widened, opened, load)
    return VerifyRows(rows=judged, opened=opened, prepared=prepared, said=([whole_note] if whole_note else []) + said,
                      narrowed=judged is not rows)


FITTED_TOLERANCE = 2  # sampled rows: a held-out set may hold a twin or two of a fitted row by chance
FITTED_SHARE = 0.10  # refused where about a tenth or more of the rows judged are rows the model was trained or tuned on
HOLDS_FITTED = 0.5  # --data holds half or more of the sampled rows: it is, or holds, the data the model was fitted to
MAX_REPEATS = 0.2  # where more of --data's rows repeat another (a few discrete features), fresh rows equal fitted ones
MOSTLY_FITTED = 0.5  # rows judged estimated half or more fitted rows: refused even where --data holds few of them...
ALL_BUT_DISTINCT = 0.01  # ...if no more of its rows repeat another (fresh rows of few discrete values equal fitted ones)


def rows_not_fitted(req, base_n: int | None, rows: dict, opened: list, load) -> tuple[dict, list[str]]:
    """The rows to judge, and what to say of them, from the sample of rows each file's model was trained or tuned on
    (toolchain.data.seen_sample). Refused, where the rows were verify's own choice (no --split, no baseline), only on
    evidence: the rows judged are an estimated tenth or more rows that are nowhere else in --data (the split compress
    drew holds each fitted row outside its test split: a twin across splits is no fitted row), and either --data holds
    most of the sampled rows (it is the data the model was fitted to, not a held-out set that shares a few twins with
    it) or the rows judged are estimated half such rows and --data's rows are all but distinct. Else a note. An x/y .npz
    judged whole that is the pool compress split is narrowed to its seeded test split. A sample not found changes
    nothing: the rows may be the fitted ones re-encoded, or the record edited. ``load(split, seed)``: --data's rows of
    that split."""
    from toolchain.data.rows import is_pool_npz
    from toolchain.data.seen_sample import fingerprints, fitted_counts, read_seen_sample

    shown = distinct_names([path for path, _, _ in opened])
    recorded = [(name, runner, read_seen_sample(recorded_value(runner, "seen_rows"))) for (_, runner, _), name in zip(opened, shown)]
    samples = [(name, sample, _names_for(runner, rows)) for name, runner, sample in recorded
               if sample is not None and not _ordered_otherwise(runner, rows)]  # the class-order refusal names the cause
    unrecorded = [name for name, runner, sample in recorded if sample is None and _made_by_cwtool(runner)]
    said = []
    if unrecorded:  # a file of an older cwtool passed on the very rows it was trained on, and nothing was said
        one = len(unrecorded) == 1
        said.append(f"{', '.join(unrecorded[:3])}{' and others' if len(unrecorded) > 3 else ''} "
                    f"{'records' if one else 'record'} no sample of the rows {'its model was' if one else 'their models were'} "
                    "trained or tuned on that verify can match (an older cwtool's file, or one whose model's training "
                    "rows cwtool was not told or could not sample), so whether --data holds them is not checked: judge "
                    "rows the model never saw")
    if not samples:
        return rows, said
    chosen = req.split == "auto" and base_n is None  # the rows are cwtool's choice, not the user's or a baseline's
    printed: dict = {}  # fingerprints of a set of rows under a list of class names, computed once for every file

    def counts(sample, names, judged: dict, every: dict | None = None):
        def prints(these):
            key = (id(these), tuple(names or []))
            if key not in printed:
                printed[key] = fingerprints(these["x"], these["y"], names)
            return printed[key]
        return fitted_counts(sample, prints(judged), None if every is None else prints(every))

    def loaded(split: str, seed: int) -> dict | None:
        try:
            return load(split, seed)
        except UserError:  # a split cwtool cannot draw from --data (a class of two rows): not one to advise or narrow to
            return None

    every = None
    whole_pool = rows["split"] == "all" and rows.get("seed") is None and is_pool_npz(req.data)
    if chosen and whole_pool:
        holding = [(s, names) for _, s, names in samples if _fitted_data(counts(s, names, rows))]
        test = loaded("test", req.seed) if holding else None
        # its train and val rows: the fitted rows lie among them (compress's record: all of them; export's: the training rows)
        fitted_here = None if test is None else test.get("of_rows", len(rows["y"])) - len(test["y"])
        if test is not None and all((s["rows"] or 0) <= fitted_here and _drawn_like_compress(counts(s, names, test, rows))
                                    for s, names in holding):
            rows, every = test, rows
            said.append(f"--data is the pool {_who(samples)} split from: its seeded test split (seed {req.seed}) is judged, "
                        "as compress split it; --split all judges every row")
    if rows["split"] != "all" and every is None:  # a split of --data: load_rows_for gives the rows it was drawn from
        every = rows["every_row"]()
    seeds = sorted({s["seed"] for _, s, _ in samples if s.get("seed") is not None})
    for name, sample, names in samples:
        found = counts(sample, names, rows, every)
        if not found or not found["judged"]:
            continue
        what = (f"{found['judged']} of the {found['sampled']} rows {name} records a sample of from the rows its model was "
                f"trained or tuned on are among the {len(rows['y']):,} rows judged ("
                + (f"every row of {rows['name']})" if rows["split"] == "all" else f"the {rows['split']} split of {rows['name']})"))
        if found["repeats"] > MAX_REPEATS:
            said.append(f"{what}, but {found['repeats']:.0%} of --data's rows repeat another: equal rows may be other samples, "
                        "so rows it was trained or tuned on cannot be told apart here")
            continue
        share = _fitted_share(sample, found, len(rows["y"]))
        mostly = share >= MOSTLY_FITTED and found["repeats"] <= ALL_BUT_DISTINCT  # equal rows there were copied
        if not ((_fitted_data(found) or mostly) and _void(sample, found, share)):
            said.append(f"{what}: " + (f"about {share:.0%} of the rows judged may be rows it was trained or tuned on: its FN here "
                                       "and the promise's probability may be optimistic" if found["only_judged"] else
                                       "each is also in another split of --data, a twin across splits, not a row it learnt"))
            continue
        fix = "give rows it was not trained or tuned on"
        if len(seeds) > 1:
            fix = f"the files were made from splits of seeds {', '.join(map(str, seeds))}: verify each with its own --seed"
        elif (rows.get("seed") is not None or whole_pool) and sample.get("seed") not in (None, req.seed) \
                and _clean(sample, counts, names, loaded("test" if whole_pool else rows["split"], sample["seed"]), every or rows):
            fix = f"give --seed {sample['seed']}, the seed its data was split with, not {req.seed}"
        elif whole_pool and _clean(sample, counts, names, loaded("test", req.seed), rows):
            fix = "give --split test to judge the seeded test split of --data, or rows it was not trained or tuned on"
        what = f"{what}: about {share:.0%} of the rows judged are rows it was trained or tuned on"
        if chosen:
            raise UserError(f"{what}, and a gate on them says nothing of new rows; {fix}")
        said.append(f"{what}: its FN here are optimistic, and so is the promise's probability (compress, which set the "
                    f"threshold on its validation rows, counts the hardest positive caught as missed); {fix}")
    return rows, said


def _fitted_data(found: dict | None) -> bool:
    """Whether --data is, or holds, the data the model was fitted to: most of the sampled rows are in it, and its rows
    are not so repetitive that fresh rows equal them by chance."""
    return found is not None and found["in_data"] >= HOLDS_FITTED * found["sampled"] and found["repeats"] <= MAX_REPEATS


def _clean(sample: dict, counts, names, split: dict | None, every: dict) -> bool:
    """Whether the rows ``split`` hold too few fitted rows to void a gate (the advice to judge them works when followed)."""
    if split is None:
        return False
    found = counts(sample, names, split, every)
    return found is not None and not _void(sample, found, _fitted_share(sample, found, len(split["y"])))


def _ordered_otherwise(runner, rows: dict) -> bool:
    """Whether the file records its class names in another order than --data names them (verify refuses that, naming
    the --class-names to give)."""
    from toolchain.data.labels import declared_names

    recorded, declared = recorded_value(runner, "class_names"), declared_names(rows["class_names"])
    return (isinstance(recorded, list) and declared is not None and recorded != declared
            and sorted(map(str, recorded)) == sorted(declared))


def _fitted_share(sample: dict, found: dict, n_judged: int) -> float:
    """The estimated share of the rows judged that the model was trained or tuned on: each sampled row found only there
    stands for rows/sampled of them."""
    per_sampled = (sample["rows"] or found["sampled"]) / max(found["sampled"], 1)
    return min(1.0, found["only_judged"] * per_sampled / max(n_judged, 1))


def _void(sample: dict, found: dict, share: float) -> bool:
    """Whether the rows judged hold enough rows the model was trained or tuned on to void a gate: a tenth or more, found
    beyond chance twins (or, where the sample is every such row, found at all)."""
    every_fitted = sample["rows"] is not None and found["sampled"] >= sample["rows"]
    return share >= FITTED_SHARE and (found["only_judged"] > FITTED_TOLERANCE or (every_fitted and found["only_judged"] > 0))


def _drawn_like_compress(found: dict | None) -> bool:
    """Whether a split holds the sampled rows as compress's split of that data does: each outside the rows judged."""
    return (found is not None and found["only_judged"] <= FITTED_TOLERANCE
            and found["elsewhere"] >= found["sampled"] - FITTED_TOLERANCE)


def _who(samples) -> str:
    """Whose rows, in words: "model.onnx was" or "the files were"."""
    return f"{samples[0][0]} was" if len(samples) == 1 else "the files were"


def _names_for(runner, rows: dict) -> list[str] | None:
    """The class names a row's fingerprint takes: the data's own, or where it only numbers its classes, those the file
    records (a CSV labelled 0/1/2 holds the rows of one labelled cat/dog/eel)."""
    from toolchain.data.labels import declared_names

    declared = declared_names(rows["class_names"])
    if declared is not None:
        return declared
    recorded = recorded_value(runner, "class_names")
    top = int(np.max(rows["y"])) + 1 if len(rows["y"]) else 0
    if isinstance(recorded, list) and top <= len(recorded) <= 100_000 and all(isinstance(n, str) for n in recorded):
        return recorded
    return rows["class_names"]


def _preparation_words(record, input_shape) -> dict:
    """How one file's record says its images were prepared, step by step, in words (a step it does not say: absent). A
    record that resized nothing had images of the file's input size: a plain resize to it is the same preparation."""
    words = {}
    color = color_in([record])
    if color:
        words["color"] = "gray" if color == "L" else "RGB"
    sizing = resizing_in([record])
    if sizing:
        resize, (h, w) = sizing
        words["size"] = f"shorter side {resize}, cropped to {h}x{w}" if resize else f"{h}x{w}"
    elif color:  # made from image files and resized nothing: its images were all of its input's size
        sides = tuple(input_shape[-2:]) if len(input_shape) == 3 else None
        words["size"] = f"{sides[0]}x{sides[1]}" if sides else "not resized"
    normalize = normalization_in([record])
    if normalize is not None:
        words["normalization"] = "none" if normalize == "none" else f"mean {list(normalize[0])}, std {list(normalize[1])}"
    return words


def check_records_agree(req, opened: list, records: list) -> None:
    """Files whose records prepare a folder's images otherwise (another size, normalization or color) cannot be judged on
    one preparation of it: refused, naming each, where no flag chooses that step for all (one was judged on a guess, and
    the error named neither the files nor the cause)."""
    given = {"color": req.color is not None, "normalization": req.normalize not in (None, "auto"),
             "size": req.resize is not None or req.image_size is not None}
    said = [(name, _preparation_words(record, tuple(runner.dataset_sample_shape()))) for name, (_, runner, _), record in
            zip(distinct_names([path for path, _, _ in opened]), opened, records) if record is not None]
    differ = [step for step in ("size", "normalization", "color") if not given[step]
              and len({words.get(step) for _, words in said if step in words}) > 1]
    if differ:
        shown = "; ".join(f"{name}: " + ", ".join(f"{step} {words.get(step, 'not recorded')}" for step in differ)
                          for name, words in said)
        raise UserError(f"the files record different preparations of a folder's images ({shown}): verify them one at a time, "
                        f"or give the flag that prepares them alike for all ({', '.join(FLAG_OF[step] for step in differ)})")


FLAG_OF = {"size": "--image-size / --resize", "normalization": "--normalize", "color": "--color"}


def image_size_hint(runner, x, data, prepared: Preparation) -> str:
    """For a file whose input the rows do not fit: a folder's images of another size than the file's input, which
    nothing resized, take --image-size of the input's size (said with the error, which named no way out)."""
    from toolchain.data.loaders import is_image_folder

    want, got = tuple(runner.dataset_sample_shape()), tuple(np.shape(x)[1:])
    if prepared.image_size is not None or len(want) != 3 or len(got) != 3 or want[0] != got[0] or not is_image_folder(data):
        return ""
    if not all(isinstance(d, (int, np.integer)) and d > 0 for d in want[1:]):
        return ""
    return f" (the images are {got[1]}x{got[2]}: --image-size {want[1]}x{want[2]} resizes them to the file's input)"


def no_sidecar_hint(opened, data) -> str:
    """For an error about an image folder's rows: a TFLite file without its sidecar lost the preprocessing verify would
    have applied (it travels in the sidecar)."""
    from toolchain.data.loaders import is_image_folder
    from toolchain.runtimes.base import sidecar_path

    blind = [Path(p).name for p, runner, _ in opened if Path(p).suffix.lower() == ".tflite" and not runner.metadata]
    if not blind or not is_image_folder(data):
        return ""
    return (f" ({blind[0]} has no readable sidecar {sidecar_path(blind[0]).name} beside it: the preprocessing it was made for, "
            "which verify applies to a folder's images, travels in it; copy it with the file)")


def importable(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def open_artifact(path: str, threads: int):
    from toolchain.runtimes import artifact_info, load_runner

    runner = load_runner(path, threads=threads)
    info = artifact_info(path, runner=runner)
    return runner, info


def distinct_names(paths: list[str]) -> list[str]:
    """Each path's file name, with as many of its folders as tell it from the others: candidate/model.onnx and
    accepted/model.onnx were two "model.onnx" rows, one failing, and one JUnit test id for both."""
    parts = [Path(p).parts or (str(p),) for p in paths]
    depth = [1] * len(paths)
    while True:
        shown = ["/".join(pp[-d:]) for pp, d in zip(parts, depth)]
        clash = [i for i, name in enumerate(shown) if shown.count(name) > 1 and depth[i] < len(parts[i])]
        if not clash:
            return shown
        for i in clash:
            depth[i] += 1


def _made_by_cwtool(runner) -> bool:
    """Whether a file says a cwtool wrote it (its metadata or sidecar names the version): only such a file could have
    recorded the rows its model was fitted to."""
    version = (getattr(runner, "metadata", None) or {}).get("cwtool_version")
    return isinstance(version, str) and bool(version.strip())
