"""`cwtool compress` and `cwtool demo`: the whole pipeline, and its report on the console."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.cli.options import (ArchKwargsOpt, ArchOpt, ClassNamesOpt, DataOpt, FormatOpt, ImageOptions, ImageSizeOpt, InputShapeOpt, LabelColumnOpt, ProtectOpt,
                                   TestOpt, TrainingInput, TrustOpt, ValOpt, parse_kwargs, with_config)
from toolchain.config import ExportOptions, PruneConfig
from toolchain.errors import UserError


@with_config(PruneConfig, ExportOptions, ImageOptions, TrainingInput)
def compress(
    model: Path = typer.Argument(..., metavar="MODEL", help="The trained dense model (state_dict + --arch, pickled module + --arch, or cwtool checkpoint)."),
    data: str = DataOpt,
    protect_class: List[str] = ProtectOpt,
    arch: Optional[str] = ArchOpt,
    arch_kwargs: Optional[str] = ArchKwargsOpt,
    trust_model: bool = TrustOpt,
    label_column: Optional[str] = LabelColumnOpt,
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    input_shape: Optional[str] = InputShapeOpt,
    val: Optional[Path] = ValOpt,
    test: Optional[Path] = TestOpt,
    out: Optional[Path] = typer.Option(None, help="Run directory (default: cwtool-runs/<arch>-<hash of inputs and settings>).", rich_help_panel="Run"),
    resume: bool = typer.Option(False, "--resume", help="Finish a run that was interrupted, from its last saved round (where --out holds no run, one starts, said so).", rich_help_panel="Run"),
    formats: Optional[List[str]] = FormatOpt,
    prune_config: PruneConfig = None,
    export_options: ExportOptions = None,
    image_options: ImageOptions = None,
    training_input: TrainingInput = None,
):
    """Prune (class-aware lottery tickets), shrink, quantize, export, and gate the protected classes' FN on every file."""
    from toolchain.data.options import parse_augment, parse_image_size, parse_input_shape
    from toolchain.export.stage import check_options_used, choose_artifacts, export_settings
    from toolchain.output_paths import check_output_dir
    from toolchain.input_paths import input_paths
    from toolchain.pipeline import CompressRequest, compress as run_compress
    from toolchain.quantize.calibration import resolve_calibration
    from toolchain.targets import load_target

    profile = load_target(export_options.target) if export_options.target else None
    calibration = resolve_calibration(export_options.calibration)[0] if export_options.calibration else None  # a name or a path
    check_output_dir(out, "--out", inputs=input_paths(model, data, calibration, val, test, profile and profile.path, arch=arch))
    settings = export_settings(export_options)
    if formats and export_options.skip_export:
        raise UserError("--format chooses the files to write, and --skip-export writes none: drop one of them")
    if formats and settings.artifacts:  # a model one converter cannot take: the other format alone
        settings = dataclasses.replace(settings, artifacts=choose_artifacts(settings.artifacts, list(formats), None))
    check_options_used(export_options, settings.artifacts)
    request = CompressRequest(str(model), data, list(protect_class), arch, parse_kwargs(arch_kwargs), trust_model,
                              str(out) if out else None, resume, label_column, prune_config.seed, class_names, parse_image_size(image_size),
                              val and str(val), test and str(test), parse_input_shape(input_shape), **image_options.load_args(),
                              augment=parse_augment(training_input.augment), workers=training_input.workers)
    report, run_dir = run_compress(request, prune_config, export=settings)
    if report is None:  # a torchrun process other than rank 0: its share of the retraining is done
        return 0
    return _summary_of_a_finished_run(report, run_dir)


def demo(
    protect_class: List[str] = typer.Option(["3"], "--protect-class", "-p", metavar="CLASS", help="Protected class of the digits demo."),
    retrain: bool = typer.Option(False, "--retrain", help="Ignore the cached demo model and train it again."),
):
    """The whole compression on the bundled digits data: train (or reuse) the demo CNN, prune, export, verify.

    Writes ./cwtool-demo/, replacing an earlier demo's; the demo model is cached in ~/.cache/cwtool (CWTOOL_CACHE or XDG_CACHE_HOME moves it)."""
    from toolchain.demo import run_demo

    report, run_dir = run_demo(protect_class, retrain=retrain)
    return _summary_of_a_finished_run(report, run_dir)


def _summary_of_a_finished_run(report: dict, run_dir: Path) -> int:
    """The summary on the console, then the exit code of the gate. Its run directory was whole before the summary began:
    a stop while it prints says so, and where the run is (not "interrupted", as if there were anything to resume)."""
    from toolchain.errors import Interrupted

    try:
        print_summary(report, run_dir)
    except Interrupted as stop:
        stop.completed, stop.run_dir = True, run_dir
        raise
    return 0 if report["gate"]["passed"] else 1


def print_summary(report: dict, run_dir: Path) -> None:
    """report.md on stdout, then the target's verdict (when there is one) and where the files are."""
    from toolchain.report.consoles import log_console, print_markdown
    from toolchain.report.fit import fit_sentence, fit_style
    from toolchain.report.markdown import render_report
    from toolchain.report.run_report import summary_lines

    print_markdown(render_report(report))  # report.md as written, its terms too
    verdict = fit_sentence(report)
    for line in summary_lines(report, run_dir):
        style = (fit_style(report) if line == verdict else "bold yellow" if line.startswith("finding") else
                 "bold green" if line == "gate: PASSED" else "bold red" if line.startswith("gate: FAILED") else None)
        log_console().print(line, style=style)
