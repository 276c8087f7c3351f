"""`cwtool demo`: the embedded default, end to end, with no files from the user."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from rich.console import Console

from toolchain.output_paths import holds_anything, is_os_litter
from toolchain.rundir import RunDir

DEMO_ARCH = "digits-cnn"
DEMO_DATA = "digits"
# fp32 training and retraining: bf16 autocast rounds differently on AMX and on AVX-512 BF16 CPUs, and on one of them
# the demo's 10% model lost its 269-row test split's accuracy budget by one row. The demo shows the same run everywhere.
DEMO_TRAIN = {"epochs": 15, "lr": 3e-3, "batch_size": 64, "seed": 0, "precision": "fp32"}
# digits holds about 27 samples of a class in validation: enough to promise "at most two more missed than
# the dense model on 27 new ones, with 80% confidence", not "none more, with 95%" (which even a model that
# agreed on all 27 cannot back: docs/FN_PROMISE.md). A user's larger validation set affords compress's defaults.
DEMO_PRUNE = {"keep_params": 0.1, "epochs": 10, "lr": 3e-3, "max_fn_increase": 2, "confidence": 0.8, "train_precision": "fp32"}


def cache_dir() -> Path:
    """CWTOOL_CACHE, else XDG_CACHE_HOME/cwtool, else ~/.cache/cwtool. A value of spaces is unset (as for
    CWTOOL_TARGETS_DIR): CWTOOL_CACHE=" " made a folder named " " where the demo ran."""
    return Path(_given("CWTOOL_CACHE") or os.path.join(_given("XDG_CACHE_HOME") or Path.home() / ".cache", "cwtool"))


def cache_setting() -> str:
    """The variable that placed the cache, as a message names it."""
    if _given("CWTOOL_CACHE"):
        return "CWTOOL_CACHE"
    return "XDG_CACHE_HOME" if _given("XDG_CACHE_HOME") else "~/.cache; CWTOOL_CACHE moves it"


def _given(name: str) -> str:
    """The environment's ``name`` as set, or "" where it is unset or only spaces."""
    value = os.environ.get(name) or ""
    return value if value.strip() else ""


def demo_model_path() -> Path:
    import torch

    key = json.dumps({"arch": DEMO_ARCH, "data": DEMO_DATA, "train": DEMO_TRAIN, "torch": torch.__version__,
                      "records": "training rows"}, sort_keys=True)  # a model cached before it recorded its rows is not reused
    return cache_dir() / "demo" / f"{DEMO_ARCH}-{hashlib.sha256(key.encode()).hexdigest()[:12]}.pt"


def ensure_demo_model(retrain: bool = False, console: Console | None = None) -> Path:
    """Train the demo CNN on digits once (seeded) and cache it; later calls reuse the file."""
    from toolchain.data import load_data
    from toolchain.data.identity import training_record
    from toolchain.models import registry
    from toolchain.models.loading import save_checkpoint
    from toolchain.models.train import TrainConfig, seed_everything, train
    from toolchain.report.consoles import log_console, progress_bar

    console = console or log_console()
    path = demo_model_path()
    try:
        cached = path.is_file()
    except OSError:  # a home this user may not enter (HOME=/nonexistent as nobody): the check below says so in the cache's words
        cached = False
    if cached and not retrain:
        console.print(f"reusing the cached demo model {path}", style="dim")
        return path
    from toolchain.output_paths import check_output_file

    check_output_file(path, f"the demo model cache ({cache_setting()})")  # before seconds of training, not after
    dataset = load_data(DEMO_DATA, seed=0)
    seed_everything(DEMO_TRAIN["seed"])
    model = registry.create(DEMO_ARCH)
    with progress_bar(console) as progress:
        train(model, dataset.x_train, dataset.y_train, TrainConfig(**DEMO_TRAIN), progress=progress, description="training the demo CNN")
    save_checkpoint(path, model.cpu(), DEMO_ARCH, {}, dataset.input_shape, extra={"data": training_record(DEMO_DATA, dataset)})
    console.print(f"trained the demo model -> {path}")
    return path


def run_demo(protect_class, retrain: bool = False, out: str | Path = "cwtool-demo"):
    """Compress the demo model on digits into ``out`` (replaced on every run)."""
    from toolchain.rundir import RunDir

    # One demo at a time in a folder, from its first check to its report: a demo that held the run folder only while it
    # looked had that folder deleted under its compress by a second one (a --retrain's training took the seconds between)
    place = next(p for p in (Path(out).absolute().parent, *Path(out).absolute().parents) if p.is_dir())
    try:
        held = RunDir(place).hold("runs the demo", "wait for it to end, or run the demo from another folder")
    except PermissionError:  # a folder this user may write in but not list (chmod 333) cannot be opened to hold: as before,
        held = None  # the run folder alone is held while the demo looks at it
    try:
        return _run_demo(protect_class, retrain, Path(out))
    finally:
        RunDir.release(held)


def _run_demo(protect_class, retrain: bool, out: Path):
    import shutil

    from toolchain.config import PruneConfig
    from toolchain.pipeline import CompressRequest, compress

    from toolchain.data import load_data
    from toolchain.errors import UserError
    from toolchain.evaluate import resolve_protected
    from toolchain.output_paths import check_output_dir, check_own_files

    # Every check before anything is trained or deleted.
    if Path(DEMO_DATA).is_dir():  # --data digits would be ambiguous here, and the demo takes no --data
        raise UserError(f"a folder '{DEMO_DATA}' here would be read as the demo's bundled {DEMO_DATA} data set: run the demo from "
                        "another folder")
    digits = load_data(DEMO_DATA, seed=0)
    resolve_protected(protect_class, digits.class_names, digits.num_classes)
    if out.is_symlink():
        raise UserError(f"'{out}' is a link and the demo replaces its folder on every run: remove the link, or run the demo from another folder")
    if out.exists() and not out.is_dir():
        raise UserError(f"'{out.resolve()}' is a file and the demo writes its run there: move it, or run the demo from another folder")
    check_output_dir(out, "the demo folder")
    if out.is_dir() and holds_anything(out):
        why = _not_a_demo_run(out)
        if why:
            raise UserError(f"'{out.resolve()}' exists and is not a demo run ({why}): move it, or run the demo from another folder")
        check_own_files(out, "the demo folder")  # what it removes: nothing it did not make (a link, a pipe, a folder nested 1,500 deep)
    if out.is_dir():  # refused while a compress runs in it (--out cwtool-demo): its files must not vanish under it
        from toolchain.rundir import RunDir

        RunDir.release(RunDir(out).hold("runs the demo", "wait for it to end, or run the demo from another folder"))
    path = ensure_demo_model(retrain=retrain)
    if out.exists():
        shutil.rmtree(out)  # only ever a previous demo run: it holds a manifest
    request = CompressRequest(model=str(path), data=DEMO_DATA, protect=list(protect_class), out=str(out))
    report, run_dir = compress(request, PruneConfig(**DEMO_PRUNE))
    return report, run_dir



def _not_a_demo_run(out: Path) -> str | None:
    """Why the demo must not replace ``out`` (it deletes the folder it replaces): None only for a folder that holds a
    demo run's files and nothing else, a manifest.json by name is not enough."""
    from toolchain.io import TMP_PREFIX

    known = RunDir(out).entries()  # and staged files a killed run left
    others = sorted(p.name for p in out.iterdir() if p.name not in known and not p.name.startswith(TMP_PREFIX)
                    and not is_os_litter(p.name))  # what Finder and Explorer leave there
    if others:
        return f"it holds {', '.join(others[:3])}{' ...' if len(others) > 3 else ''}"
    from toolchain.errors import UserError
    from toolchain.rundir import read_record

    try:
        manifest = read_record(RunDir(out).manifest, "move it")  # bounded: a 6 GB one was read whole
    except (OSError, UnicodeDecodeError, ValueError, RecursionError, UserError):
        return "no readable manifest.json"
    data = manifest.get("inputs", {}).get("data") if isinstance(manifest, dict) and isinstance(manifest.get("inputs"), dict) else None
    if not isinstance(data, dict) or data.get("spec") != DEMO_DATA:
        return f"its manifest.json is not a compress run on {DEMO_DATA}"
    return None
