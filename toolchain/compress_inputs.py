"""compress's first stage: every check of its inputs before anything is written.

Data, model, classes, the protected classes' detection, the export options, the run directory and the
earlier sessions of a run that resumes: a bad input is refused here (exit 2), so a refused run leaves
nothing behind, and the stages after it (toolchain.pipeline) start from what these checks settled."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolchain.config import PruneConfig, config_hash
from toolchain.errors import UserError, one_line
from toolchain.export.stage import ExportSettings, check_export_inputs
from toolchain.file_identity import check_unchanged
from toolchain.input_paths import input_paths
from toolchain.output_paths import check_output_dir
from toolchain.provenance import file_sha256, rows_sha256
from toolchain.run_identity import OtherRun, Sessions, earlier_sessions, module_file_sha256, run_inputs
from toolchain.rundir import RunDir

__all__ = ["CheckedInputs", "check_compress_inputs", "evaluate_on_test"]


@dataclass
class CheckedInputs:
    """What the checks settled: the data and model, the classes, the run directory and its earlier sessions."""

    dataset: Any
    loaded: Any  # toolchain.models.loading.LoadedModel
    arch: str
    float32: bool  # every floating-point tensor of the model is float32: the check's validation logits hold for retraining
    num_outputs: int
    class_names: list[str]
    protected: list[int]
    val_logits: np.ndarray  # the dense model's, from the check
    unfollowed: Any  # channel groups the dependency graph cannot follow: kept whole
    profile: Any  # the --target's device profile, or None
    config: PruneConfig  # with the target's channel multiple
    inputs: dict  # what the run's identity is made of (manifest.json)
    run_id: str
    run_dir: Path
    resuming: bool
    before: Sessions  # the earlier sessions of a resumed run
    notes: list[str]  # what the user must make sure of, as shown: said after the run's header
    test_rows: str  # the test rows' digest: verify refuses other rows against this run's report
    dense_test: dict  # the dense model's evaluation on test (reported beside the files' re-checks; nothing is chosen from it)


def check_compress_inputs(request, config: PruneConfig, export: ExportSettings | None, prepared=None, given=None) -> CheckedInputs:
    """Every check of compress's inputs (``request``: a toolchain.pipeline.CompressRequest); raises UserError on the first
    that fails, before anything is written. ``prepared``: how its images are prepared (toolchain.models.loading.as_recorded),
    said where the checkpoint's record chose it; ``given``: the request whose image flags the run's identity holds
    (toolchain.models.loading.as_recorded: those that say what the checkpoint records left out)."""
    import torch

    from toolchain.evaluate import MIN_POSITIVES, check_model_on_splits, detection_problem, weak_detection_notes
    from toolchain.model_on_data import check_model_fits_data, read_model_and_data
    from toolchain.models.train import pick_device
    from toolchain.prune.preflight import check_before_pruning

    dataset, loaded = read_model_and_data(request, request.data_seed)
    dataset = dataclasses.replace(dataset, augment=request.augment, workers=request.workers)
    arch = loaded.arch or request.arch
    if loaded.kind == "torchscript" or arch is None:
        raise UserError("compress needs a model cwtool can rebuild: a state_dict or pickled module with --arch, or a cwtool checkpoint")
    if loaded.channel_plan:
        raise UserError(f"'{request.model}' is already a pruned cwtool model: compress the dense model it came from")
    float32 = all(t.dtype == torch.float32 for t in [*loaded.module.parameters(), *loaded.module.buffers()] if t.is_floating_point())
    num_outputs, class_names, protected, val_logits = check_model_on_splits(loaded.module, dataset, request.protect)
    for k in protected:
        if not (dataset.y_val == k).any():
            raise UserError(f"the validation split has no samples of protected class {k}: the FN budget cannot be checked")
        if not (dataset.y_test == k).any():
            raise UserError(f"the test split has no samples of protected class {k}: the files' FN cannot be re-checked; "
                            "give test rows that include it")
    if loaded.kind == "pickle":  # checkpoints are rebuilt from --arch + --arch-kwargs: they must fit the module
        from toolchain.models.arch import build_arch, load_state_into

        load_state_into(build_arch(arch, loaded.arch_kwargs), loaded.module.state_dict(), arch)
    pick_device(config.device)  # an unavailable device is bad input, found before anything is written
    if config.epochs or config.final_epochs:
        from toolchain import distributed
        from toolchain.models.train import check_batch_shares

        group = distributed.current()
        check_batch_shares(loaded.module, config.batch_size, group.world if group else 1)
    unfollowed = check_before_pruning(loaded.module, dataset.input_shape, protected,  # the channel groups to keep whole
                                      channels=config.granularity != "weight")
    late_notes = check_export_inputs(export, dataset, protected)  # a given calibration set's: said with the other notes, below
    if request.resume and config.granularity == "weight":
        raise UserError("--resume finishes channel-granularity runs: start a --granularity weight run over, with another --out or "
                        "after removing its run directory")

    inputs, profile, config, run_id, run_dir, resuming, before = _run_directory(request, given or request, config, export, dataset, loaded, arch,
                                                                                protected)
    # what the user must make sure of: on the console and in compress.log after the run's header (a refusal before it stays
    # one line), in the reports later
    shown_notes: list[str] = []
    note_input = shown_notes.append
    alike = check_model_fits_data(loaded, dataset, request.model, refuse_unseen=True, note=note_input)
    if prepared is not None:
        from toolchain.recorded import preparation_notes

        for line in preparation_notes(prepared, dataset.input_shape, f"'{request.model}' records its training's were", choosable=False):
            note_input(f"note: {line}")
    problem = detection_problem(val_logits, dataset.y_val, protected, class_names,  # the last input check: "no more missed"
                                recorded_alike=alike)
    if problem is not None:  # than a model that detects nothing is no promise at all
        raise UserError(problem)
    for line in unreachable_confidence(val_logits, dataset.y_val, protected, class_names, config):
        note_input(line)
    steps = -(-len(dataset.y_train) // config.batch_size) * config.epochs
    if steps < FEW_STEPS:  # a round of 2 steps took a model from accuracy 1.0 to 0.41 on validation (a new user's finding)
        note_input(f"warning: a round retrains {steps} step{'s' if steps != 1 else ''} ({config.epochs} epoch"
                   f"{'s' if config.epochs != 1 else ''} of {len(dataset.y_train):,} train rows at --batch-size {config.batch_size}): "
                   f"likely too few to recover what a round prunes; give more --epochs or a smaller --batch-size")
    for line in weak_detection_notes(val_logits, dataset.y_val, protected, class_names, dataset.y_train,
                                     flat=len(dataset.input_shape) == 1):
        note_input(line)
    for k in protected:
        n = int(np.sum(dataset.y_val == k))
        if n < MIN_POSITIVES:
            note_input(f"note: validation holds {n} sample{'s' if n != 1 else ''} of protected class {k} ({one_line(class_names[k])[:60]}): too few to "
                       f"check that the dense model detects it (cwtool checks from {MIN_POSITIVES}), and the promise rests on them")
    for line in late_notes:
        note_input(line)
    # the test rows read once before any work (report only: nothing is chosen from them): an image that cannot be read is
    # said now, not after the rounds, when fixing it changes the folder and a --resume is refused as other inputs
    x_test, y_test = dataset.split("test")
    test_rows = rows_sha256(x_test, y_test)
    dense_test = evaluate_on_test(loaded.module.float().eval(), x_test, y_test, test_rows, protected, num_outputs)
    return CheckedInputs(dataset=dataset, loaded=loaded, arch=arch, float32=float32, num_outputs=num_outputs,
                         class_names=class_names, protected=protected, val_logits=val_logits, unfollowed=unfollowed,
                         profile=profile, config=config, inputs=inputs, run_id=run_id, run_dir=run_dir,
                         resuming=resuming, before=before, notes=shown_notes,
                         test_rows=test_rows, dense_test=dense_test)


STOPPABLE_NOW = " (a run still going can be stopped now)"  # the console's words: not the finished report's

FEW_STEPS = 20  # retraining steps a round below which a pruned model rarely recovers


def unreachable_confidence(val_logits: np.ndarray, y_val: np.ndarray, protected: list[int], class_names: list[str],
                           config: PruneConfig) -> list[str]:
    """A warning for each protected class whose promise no model can back on this validation split, said before any
    retraining: a run on 9 validation samples at --max-fn-increase 1 --confidence 0.8 pruned, retrained, exported and
    timed every file, then failed ("reachable: 0.702"), a number known from the split alone (a new user's finding)."""
    from toolchain.promise import budget_backing, confidence_ceiling, confidence_to_ask, empty_promise

    lines = []
    for k in protected:
        positives = y_val == k
        n, dense_fn = int(positives.sum()), int(np.sum(val_logits[positives].argmax(1) != k))
        ceiling = confidence_ceiling(n, dense_fn, int(config.max_fn_increase))
        if ceiling < config.confidence:
            to = confidence_to_ask(ceiling)  # None under the flag's floor of 0.5
            fixes = [f"--confidence {to:g}"] if to is not None else []
            budget = budget_backing(n, dense_fn, config.confidence, config.max_fn_increase, n + 1)
            empty = budget is not None and empty_promise(n, dense_fn, budget) is not None  # a promise of nothing, as the report says
            if budget is not None and not empty:  # what the number gives up, said: "+4" alone read as a harmless tweak
                fixes.append(f"--max-fn-increase {budget} (up to {budget} more miss{'es' if budget != 1 else ''} than the dense model's on new data of "
                             f"{n} such samples)")
            if empty:  # followed, that advice passed the gate on a promise that says nothing (a reviewer, 1 sample of 3)
                fixes.append(f"more validation samples of the class (--val): the --max-fn-increase {budget} that backs it here would "
                             f"promise nothing ({empty_promise(n, dense_fn, budget)})")
            elif dense_fn:  # where the dense model misses none, a larger split backs no more (the ceiling holds at any size)
                fixes.append("more validation data")
            either = " or ".join(fixes) if len(fixes) <= 2 else f"{', '.join(fixes[:-1])} or {fixes[-1]}"
            lines.append(
                f"warning: --confidence {config.confidence:.12g} cannot be backed for protected class {k}"
                + (f" ({one_line(class_names[k])[:60]})" if class_names[k] != str(k) else "") + ": "
                f"validation holds {n} of its samples and the dense model misses {dense_fn}, so even a model that misses none it "
                f"catches and catches every one it misses reaches {ceiling:.3f} at --max-fn-increase {config.max_fn_increase:g} "
                f"(docs/FN_PROMISE.md). So this run's gate fails whatever the pruning does: give {either or 'more validation data'}"
                f"{STOPPABLE_NOW}")
    return lines


def _run_directory(request, given, config: PruneConfig, export: ExportSettings | None, dataset, loaded, arch: str, protected: list[int]):
    """The run's identity and folder: (inputs, target profile or None, config for the target, run id, run directory,
    whether it resumes, its earlier sessions). A folder that is not this run's, or a finished run, is refused."""
    from toolchain.models.arch import arch_file
    from toolchain.prune.round_files import RoundFiles

    inputs = run_inputs(given, dataset, loaded.arch_kwargs, arch, protected)
    check_unchanged(given.model, loaded.file_identity, "model file")  # the run id's sha256 is of the model loaded
    profile = None
    if export is not None and export.target:
        from toolchain.targets import load_target

        profile = load_target(export.target)
        # a file the run reads (its channel multiple shapes the pruning): an edited profile is another run
        inputs["target"] = {"name": profile.name, "sha256": file_sha256(profile.path)}
    config = config.for_target(profile.channel_multiple if profile else None)
    run_id = config_hash(inputs, config)
    run_dir = Path(request.out) if request.out else Path("cwtool-runs") / f"{Path(arch.split(':')[-1]).stem}-{run_id}"
    if not request.out and request.resume and not run_dir.exists() and "arch_sha256" in inputs:
        # a run begun before its --arch module's code (module:Class), or its class's own file, was part of the run id:
        # in the folder of its old id
        then = [{k: v for k, v in inputs.items() if k != "arch_sha256"}] if arch_file(arch) is None else []
        module_only = module_file_sha256(arch)
        if module_only not in (None, inputs["arch_sha256"]):
            then.append({**inputs, "arch_sha256": module_only})
        older = [found for found in (run_dir.with_name(run_dir.name.removesuffix(run_id) + config_hash(ins, config)) for ins in then)
                 if found.is_dir()]
        run_dir = older[0] if older else run_dir
    manifest_path = RunDir(run_dir).manifest
    inputs_read = input_paths(request.model, request.data, export.calibration_file if export else None, request.val, request.test, arch=arch)
    check_output_dir(run_dir, "--out", inputs=inputs_read)  # the default cwtool-runs/... is checked here, a given --out in the CLI too
    resuming = RunDir(run_dir).holds_a_run()
    if resuming and not request.resume:
        if config.granularity == "weight":
            raise UserError(f"run directory '{run_dir}' already exists (a --granularity weight run does not resume): give another --out")
        if not manifest_path.is_file():  # a folder of the user's (a report.json of its own too): --resume would be refused as well
            raise UserError(f"'{run_dir}' exists and is not a cwtool run directory (no manifest.json): give another --out, or an empty "
                            "folder")
        try:  # a run of other settings: --resume would be refused too, so it is not offered
            earlier_sessions(run_dir, inputs, run_id, config)
        except OtherRun as exc:
            raise UserError(f"run directory '{run_dir}' holds another run, of other inputs or settings{exc.hint}: give another "
                            "--out") from exc
        if RunDir(run_dir).report_json.is_file():  # a CI job retried: the run is done, not to be finished
            raise UserError(f"run directory '{run_dir}' holds a finished run (its report: {RunDir(run_dir).report_json}): --resume "
                            "makes its files and reports again from the saved pruning, or give --out for a new run")
        raise UserError(f"run directory '{run_dir}' already exists: pass --resume to finish it, or --out for a new one")
    before = earlier_sessions(run_dir, inputs, run_id, config) if resuming else Sessions()
    if resuming:
        RoundFiles(RunDir(run_dir), arch, loaded.arch_kwargs, dataset.input_shape, {}).check_saved()
    inputs, run_id = before.inputs or inputs, before.run_id or run_id
    return inputs, profile, config, run_id, run_dir, resuming, before


def evaluate_on_test(model, x_test, y_test, rows: str, protected: list[int], num_outputs: int) -> dict:
    """``model``'s evaluation on the test split with its per-sample predictions (for paired, McNemar tests) and the
    rows' digest ``rows``."""
    from toolchain.metrics import evaluate_logits
    from toolchain.models.train import predict_logits

    logits = predict_logits(model, x_test)
    evaluation = evaluate_logits(y_test, logits, protected, num_outputs)
    evaluation["predictions"] = logits.argmax(1).tolist()
    evaluation["rows_sha256"] = rows
    return evaluation
