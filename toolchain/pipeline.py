"""`cwtool compress`: the stages in data-flow order, in a run directory that a rerun resumes."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from toolchain import __version__, distributed, interrupts
from toolchain.compress_inputs import STOPPABLE_NOW, check_compress_inputs, evaluate_on_test
from toolchain.config import PruneConfig
from toolchain.data.options import data_found_anywhere, verify_row_flags
from toolchain.errors import Interrupted, UserError, describe
from toolchain.export.leftovers import drop_stale_artifacts, drop_unchecked_artifacts
from toolchain.export.stage import ExportSettings
from toolchain.io import own_folder
from toolchain.report.consoles import RunLog, log_console, progress_bar, status
from toolchain.report.pace import say_progress_to
from toolchain.run_identity import by_session, package_versions, version_changes
from toolchain.report.run_report import summary_lines, write_run_report
from toolchain.run_session import open_run_dir
from toolchain.rundir import RunDir

REPORT_SCHEMA = 1


@dataclass
class CompressRequest:
    model: str
    data: str
    protect: list[str]
    arch: str | None = None
    arch_kwargs: dict | None = None
    trust_model: bool = False
    out: str | None = None
    resume: bool = False
    label_column: str | None = None
    data_seed: int = 0
    class_names: str | list[str] | None = None
    image_size: tuple[int, int] | None = None
    val: str | None = None  # the user's own held-out rows (.npz), in place of cwtool's split
    test: str | None = None
    input_shape: tuple[int, ...] | None = None  # --input-shape: flat rows as samples of this shape
    resize: int | None = None  # ImageFolder: the shorter side, center-cropped to image_size
    normalize: str | tuple | None = None  # ImageFolder: auto, none, imagenet or (means, stds)
    color: str | None = None  # ImageFolder: None (as the images are), "RGB" or "L"
    augment: object | None = None  # toolchain.data.dataset.Augment: training batches augmented
    workers: int | None = None  # DataLoader processes for data read on demand (None: automatic)


def compress(request: CompressRequest, config: PruneConfig, console: Console | None = None, export: "ExportSettings | None" = None):
    """Run the compression; returns (report, run directory), its report written (``report.run_report.write_run_report``).
    With ``export.target`` the pruning rounds to the profile's kernel block (unless --round-to says) and
    every file gets the profile's fit verdict."""
    import torch
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn

    from toolchain.gate import fn_gate
    from toolchain.models.loading import as_recorded, save_checkpoint
    from toolchain.models.profile import count_macs, count_params
    from toolchain.prune.bake import bake_offsets
    from toolchain.prune.lottery import LotteryPruner
    from toolchain.prune.tickets import failed_budget, promise_section, removed_plan, shipped_size_goal

    started = time.perf_counter()
    group = distributed.start(config.device)  # under torchrun: retraining on every process, rank 0 writes and talks
    console = console or (log_console() if distributed.is_main() else Console(quiet=True))  # the other processes say nothing
    log = RunLog(console)
    request, prepared, identity = as_recorded(request)  # a folder of images prepared as the checkpoint records, where no flag says
    checked = check_compress_inputs(request, config, export, prepared, identity)  # every check before anything is written
    dataset, protected, config, run_dir = checked.dataset, checked.protected, checked.config, checked.run_dir
    loaded, arch, class_names, run_id = checked.loaded, checked.arch, checked.class_names, checked.run_id
    input_notes = [line.removeprefix("note: ").removesuffix(STOPPABLE_NOW).encode("utf-8", "backslashreplace").decode("utf-8")
                   for line in checked.notes]  # a name not UTF-8 kept readable; the report is read when the run is over
    distributed.barrier()  # every process has checked the run directory before rank 0 writes in it
    made = [d for d in (run_dir, *run_dir.parents) if not d.exists()]  # what mkdir makes: gone again if the run is
    # refused on its first session
    held, refusal = None, None
    if distributed.is_main():
        try:
            held = open_run_dir(checked, request, input_notes, log, console, group, made)
        except UserError as exc:  # another compress holds the folder: the others hear why, not "another process was lost"
            refusal = exc
    try:
        refused_as = distributed.agreed(str(refusal) if refusal is not None else None)  # the barrier before the rounds
    except Exception as exc:  # rank 0 failed before the run began (a full disk): the others are stopped, with nothing
        if distributed.peer_lost(exc):  # of this session to resume
            raise Interrupted("the loss of another torchrun process") from exc
        raise
    if refusal is not None:
        raise refusal
    if refused_as is not None:
        raise UserError(refused_as)
    interrupts.resumable(run_dir if config.granularity != "weight" else None)  # only channel runs resume
    unchecked_files = False  # exported files no report lists yet: removed if the run stops before its report
    finished: str | None | bool = False  # once the reports are written: the log's last line, None once said
    said_before = say_progress_to(log.print)  # a prediction over many rows (the dense model's, each file's re-check) says its pace
    try:  # an interrupt leaves the finished rounds: the message names the run to --resume
        # --- stage 1: class-aware lottery-ticket pruning (train + validation only) -------------------------
        t0 = time.perf_counter()
        dense = loaded.module.float()
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn()]
        with progress_bar(console, *columns) as progress:
            pruner = LotteryPruner(dense, dataset, protected, config, run_dir=run_dir, progress=progress, log=log.print,
                                   arch=arch, arch_kwargs=loaded.arch_kwargs, keep_whole=checked.unfollowed,
                                   dense_val_logits=checked.val_logits if checked.float32 else None,  # .float() changed nothing: the check's logits hold
                                   record=log.progress)
            result = pruner.run(resume=request.resume)
        prune_seconds = time.perf_counter() - t0
        if not distributed.is_main():  # the rounds were the shared work; rank 0 exports and reports
            return None, run_dir

        # --- stage 2: the shrunk model, offsets baked in ------------------------------------------------
        ticket = result.selected
        pruned = ticket.model.cpu().eval()
        example = torch.zeros(1, *dataset.input_shape)
        bake_offsets(pruned, ticket.offsets, example)
        plan = removed_plan(pruner.dense_sizes, ticket.survivors)
        unchecked_files = True  # from here to the report: an earlier finish's files are no report's any more
        if RunDir(run_dir).drop_report():
            log.print("removed this run's earlier report: the pruned model and the files are made again, then the report")
        promise = promise_section(result, ticket, config)
        pruned_path = save_checkpoint(RunDir(run_dir).pruned, pruned, arch, loaded.arch_kwargs, dataset.input_shape, plan,
                                      {"offsets": {str(k): v for k, v in ticket.offsets.items()}, "round": ticket.round,
                                       "data": _data_record(loaded.extra.get("data"), dataset, checked.test_rows),
                                       # an export of this model names no file to deploy where this run named none
                                       "run": {"budget_met": bool(result.budget_met), "binds": promise["binds"]}})

        # --- evaluation on the test split (report only: nothing is chosen from it) --------------------------
        dense = dense.cpu().eval()
        x_test, y_test = dataset.split("test")
        test_rows, dense_test = checked.test_rows, checked.dense_test
        pruned_test = evaluate_on_test(pruned, x_test, y_test, test_rows, protected, checked.num_outputs)
        gate = fn_gate(dense_test, pruned_test, config.max_fn_increase, config.max_accuracy_drop, labels=y_test)
        size_goal = shipped_size_goal(result, ticket, config, pruner.kept_whole)
        if not size_goal["met"]:
            log.print(f"size goal not met: {size_goal['statement']}")
        if promise.get("empty"):
            log.print(f"warning: {promise['empty']}")
        if not result.budget_met:  # never ship an unguarded point quietly, whatever the test split says
            gate["passed"] = False
            gate["reasons"].insert(0, promise["statement"])
        # --- stages 3-5: calibrate, quantize, export, and re-check every file in its runtime -----------------
        from toolchain.export.stage import export_all

        settings = export or ExportSettings()
        gate_fn = lambda base, cand: fn_gate(base, cand, config.max_fn_increase, config.max_accuracy_drop, labels=y_test)
        export_started = time.perf_counter()
        with status(console, "exporting and verifying artifacts"):
            min_val_accuracy = result.dense["val"]["accuracy"] - config.max_accuracy_drop
            try:
                artifacts, calibration = export_all(pruned, dataset, protected, _int8_guard(result), dense_test, settings, run_dir, config.seed,
                                                    gate_fn, log=log.print, progress=log.progress, min_val_accuracy=min_val_accuracy,
                                                    search_float_layers=result.budget_met,
                                                    seen_rows=_fitted_rows(dataset)) if settings.artifacts else ([], None)
            except UserError as exc:  # the rounds are done and saved: say how to finish without them
                raise UserError(f"{exc} (the pruning is saved in {run_dir}: once that is fixed, rerun with --resume, with other export "
                                "options such as --format where they were the cause, to finish it without retraining)") from exc
        drop_stale_artifacts(run_dir, artifacts, log.print)
        if (calibration is None or calibration.get("given")) and RunDir(run_dir).calibration.is_file():  # an earlier session's:
            # the report names this one's rows (none, or a set of the user's), and verify would find the file beside them
            RunDir(run_dir).calibration.unlink()
            log.print(f"removed {RunDir(run_dir).calibration.name}, an earlier export of this run's int8 calibration rows: this one drew none")
        for art in artifacts:
            if not art["gate"]["passed"]:
                gate["passed"] = False
                gate["reasons"] += [f"{art['path']}: {r}" for r in art["gate"]["reasons"]]
        params_dense, params_pruned = count_params(dense), count_params(pruned)
        versions = package_versions()
        report = {
            "schema_version": REPORT_SCHEMA,
            "tool": {"name": "cwtool", "version": __version__},
            "run_id": run_id,
            "protected": protected,
            "class_names": class_names,
            "data": {**dataset.describe(), "spec": str(request.data), "test_rows_sha256": test_rows, "notes": input_notes,
                     "verify_data": data_found_anywhere(request.test or request.data), "verify_options": verify_row_flags(request, dataset.class_names)},
            "config": config.to_dict(),
            "versions": versions,  # this session's; the first session's beside them where they differ
            **({"versions_started_with": checked.before.started_with} if version_changes(checked.before.started_with, versions) else {}),
            "training": {"device": str(pruner.device), "arithmetic": result.arithmetic,  # auto: the machine decided
                         **({"chosen_by": result.arithmetic_chosen_by} if result.arithmetic_chosen_by else {}),  # a GPU: how
                         **by_session("processes", checked.before.processes, group.world if group else 1),
                         **by_session("threads", checked.before.threads, torch.get_num_threads())},
            "promise": promise,
            "size_goal": size_goal,
            "baseline": {"params": params_dense, "macs": count_macs(dense, example), "accuracy": dense_test["accuracy"],
                         "fn_per_class": dense_test["fn_per_class"], "protected": dense_test["protected"],
                         "val": result.dense["val"], "test": dense_test},
            "stages": [
                *[{"stage": "prune_round", **t.summary(), **_sparsity(config, t)} for t in result.tickets],
                *[{"stage": "final_finetune", "round": f.round, "epochs": config.final_epochs, "val": f.val, "val_raw": f.val_raw,
                   "offsets": {str(k): v for k, v in f.offsets.items()}, "within_budget": f.within_budget, "kept": result.selected is f}
                  for f in result.finals],
                {"stage": "shrunk", "round": ticket.round, "path": str(pruned_path.relative_to(run_dir)), "params": params_pruned,
                 "macs": count_macs(pruned, example), "param_fraction": params_pruned / params_dense, "channel_plan": plan,
                 "kept_whole": pruner.kept_whole,
                 "offsets": {str(k): v for k, v in ticket.offsets.items()}, "budget_met_on_val": result.budget_met,
                 "seconds": prune_seconds, "test": pruned_test, **_sparsity(config, ticket, pruned)},
            ],
            "calibration": calibration,
            "artifacts": artifacts,
            "gate": gate,
            "seconds": {"checks and setup": t0 - started, "pruning": prune_seconds, "export and re-check": time.perf_counter() - export_started,
                        "total": time.perf_counter() - started},
        }
        # The quantized stage, one entry per int8 file: calibration, layers kept in float and why.
        report["stages"] += [{"stage": "quantized", "format": a["format"], "path": a["path"], "bytes": a["bytes"],
                              "input_dtype": a.get("input_dtype"), **a["quantization"]}
                             for a in artifacts if "quantization" in a]
        if checked.profile is not None:
            _fit(report, run_dir, checked.profile)
        if artifacts:  # after the fit verdicts: a file that does not fit the target is not named
            from toolchain.deploy import deploy_choice

            timed = time.perf_counter()
            withheld = None if result.budget_met else (  # the budget that binds, as the promise's statement says
                f"the run did not {failed_budget(promise['binds'])}, so no file is recommended, whatever each file's own re-check "
                "on test says")
            report["deploy"] = deploy_choice(artifacts, run_dir, settings.threads, settings.time_runs, log=log.print, withheld=withheld)
            report["seconds"]["timing the files"] = time.perf_counter() - timed
            report["seconds"]["total"] = time.perf_counter() - started
        line = (f"finished: gate {'PASSED' if gate['passed'] else 'FAILED'}; seconds: "
                + ", ".join(f"{k} {v:.1f}" for k, v in report["seconds"].items()))
        write_run_report(report, run_dir)  # before the log says finished: a stop until then names the run to --resume
        finished = line
        unchecked_files = False
        interrupts.work_done(run_dir)  # a stop from here to the process's exit (after the command returned too) finds it whole
        said, finished = finished, None
        log.record(said)
        for line in summary_lines(report, run_dir):  # what the console's summary ends with, for a reader of the log alone
            log.record(line)
        return report, run_dir
    except Interrupted as exc:
        if finished is not False:  # the reports were written whole: the stop arrived as the run ended, and is said so
            if finished:
                log.record(finished)
            exc.completed, exc.run_dir = True, run_dir
            raise
        if unchecked_files:  # before the log's last line, which names the run to --resume
            drop_unchecked_artifacts(run_dir, log.print)
        if config.granularity == "weight":  # its rounds are saved, but only channel runs resume
            log.record(f"interrupted: a --granularity weight run does not resume: start it over with another --out (or remove {run_dir})")
            raise
        exc.run_dir = run_dir
        log.record(f"interrupted: --resume with the same arguments finishes {run_dir}")
        raise
    except Exception as exc:
        if unchecked_files:
            drop_unchecked_artifacts(run_dir, log.print)
        if distributed.peer_lost(exc):  # another torchrun process stopped: the rounds it finished are saved
            log.record(f"interrupted: another torchrun process stopped ({' '.join(str(exc).split())[:120]}); --resume with the same "
                       f"arguments finishes {run_dir}")
            lost = Interrupted("the loss of another torchrun process")
            lost.run_dir = run_dir if RunDir(run_dir).manifest.is_file() else None  # rank 0 may have removed a run of no round
            raise lost from exc
        log.record(f"stopped: {describe(exc)}")
        if (isinstance(exc, (OSError, UserError)) and config.granularity != "weight" and "--resume" not in str(exc)
                and RunDir(run_dir).done_rounds()):  # a full disk as the report was written: the rounds wait for --resume
            exc.resumable_run = run_dir
        if isinstance(exc, UserError) and not checked.resuming and distributed.is_main():
            RunDir.release(held)  # its descriptor is closed once: below it is None
            held = None
            RunDir(run_dir).remove_if_roundless(made)  # fixed and run again, the same command starts over
        raise
    finally:
        say_progress_to(said_before)
        interrupts.resumable(None)
        RunDir.release(held)
        own_folder(None)


def _data_record(trained, dataset, test_rows: str) -> dict:
    """What the shipped checkpoint says of its data: the dense model's training record where it had one, and at least the
    classes and preprocessing compress ran with, so that export and evaluate of it find a left-out --normalize or --resize;
    and this run's --test rows, where given (evaluate judges every row of that folder, not a seeded share)."""
    from toolchain.data.identity import preprocessing_record
    from toolchain.judged_rows import given_test_record

    record = dict(trained) if isinstance(trained, dict) else {}
    record.setdefault("class_names", [str(n) for n in dataset.class_names])
    record.setdefault("preprocessing", preprocessing_record(dataset.preprocessing))
    record.pop("test_rows", None)  # an earlier run's, where the dense model was one's pruned.pt
    given_test = given_test_record(dataset, test_rows)
    return {**record, **({"test_rows": given_test} if given_test else {})}


def _fitted_rows(dataset) -> dict | None:
    """The sample of compress's fitted rows its files record: it retrains on the train split and chooses the operating
    point on validation."""
    from toolchain.data.seen_sample import seen_sample

    return seen_sample([dataset.split("train"), dataset.split("val")], dataset.class_names, dataset.seed)


def _int8_guard(result):
    """The rule every int8 file must meet on validation: the pruned model's. Where the pruned model
    itself fell short of the asked confidence, the files are held to what it reached (the gate has
    failed already; float layers would not buy back a promise the float model cannot make)."""
    import dataclasses

    reached = min(v["confidence"] for v in result.selected.val["promise"].values())
    if result.budget_met or reached >= result.guard.confidence:
        return result.guard
    return dataclasses.replace(result.guard, confidence=max(0.0, reached - 1e-9))


def _sparsity(config: PruneConfig, ticket, model=None) -> dict:
    """Weight-granularity runs: the share of conv/linear weights the masks zeroed, and the non-zero
    parameter count (of ``model`` when given: the stored, shrunk model). Channel runs: nothing."""
    if config.granularity != "weight":
        return {}
    nonzero = ticket.params if model is None else sum(int(p.count_nonzero()) for p in model.parameters())
    return {"weight_sparsity": ticket.sparsity, "nonzero_params": nonzero}


def _fit(report: dict, run_dir: Path, profile) -> None:
    """The device verdict for every file and for the run (toolchain.device_fit.fit_verdicts)."""
    from toolchain.device_fit import fit_verdicts

    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    report["target"] = fit_verdicts(report["artifacts"], run_dir, profile, shrunk["macs"],
                                    f"the shipped torch model ({shrunk['path']})")
