"""`cwtool export`: a model (dense or pruned) to the files compress writes, each re-checked in its runtime."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.cli.options import (ArchKwargsOpt, ArchOpt, ClassNamesOpt, DataOpt, FormatOpt, ImageOptions, ImageSizeOpt, InputShapeOpt, LabelColumnOpt,
                                   ProtectOpt, TestOpt, TrustOpt, ValOpt, parse_kwargs, seed_option, with_config)
from toolchain.config import ExportOptions


@dataclass
class ExportFileOptions(ExportOptions):
    """compress's export flags (--target, --layout, calibration, --float-input-conv), without --skip-export."""

    skip_export: bool = False  # no flag: export writes its files


@with_config(ExportFileOptions, ImageOptions)
def export(
    model: Path = typer.Argument(..., metavar="MODEL", help="The model: state_dict + --arch, pickled module + --arch, or cwtool checkpoint (dense or pruned)."),
    data: str = DataOpt,
    protect_class: List[str] = ProtectOpt,
    out: Path = typer.Option(..., "--out", help="New folder for artifacts/, calibration.npz, export.json, export.md and export.log.", rich_help_panel="Run"),
    formats: Optional[List[str]] = FormatOpt,
    precisions: Optional[List[str]] = typer.Option(None, "--precision", metavar="PREC", help="fp32, fp16 (TFLite) or int8 (repeatable).", rich_help_panel="Export"),
    arch: Optional[str] = ArchOpt,
    arch_kwargs: Optional[str] = ArchKwargsOpt,
    trust_model: bool = TrustOpt,
    label_column: Optional[str] = LabelColumnOpt,
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    input_shape: Optional[str] = InputShapeOpt,
    seed: int = seed_option("Seed of the train/val/test split (use the one the model was trained with) and of the calibration draw."),
    val: Optional[Path] = ValOpt,
    test: Optional[Path] = TestOpt,
    export_file_options: ExportFileOptions = None,
    image_options: ImageOptions = None,
):
    """Export a model to ONNX / TFLite as compress does, re-check every file in its runtime on the test split."""
    from toolchain import __version__
    from toolchain.cli.arguments import command_line
    from toolchain.data.options import parse_image_size, parse_input_shape
    from toolchain.export.standalone import ExportRequest, export_model
    from toolchain.output_paths import check_output_dir
    from toolchain.input_paths import input_paths
    from toolchain.quantize.calibration import resolve_calibration
    from toolchain.report.consoles import RunLog, log_console, print_markdown
    from toolchain.report.pace import saying_progress
    from toolchain.report.export_markdown import files_verdict, render_export_report
    from toolchain.report.deploy import deploy_sentences
    from toolchain.report.fit import fit_sentence, fit_style
    from toolchain.targets import load_target

    options = export_file_options
    profile = load_target(options.target) if options.target else None
    calibration = resolve_calibration(options.calibration)[0] if options.calibration else None  # a set's name or a path
    check_output_dir(out, "--out", inputs=input_paths(model, data, calibration, val, test, profile and profile.path, arch=arch))
    request = ExportRequest(str(model), data, list(protect_class), str(out), formats=list(formats or []) or None,
                            precisions=list(precisions or []) or None, arch=arch, arch_kwargs=parse_kwargs(arch_kwargs),
                            trust_model=trust_model, seed=seed, label_column=label_column, class_names=class_names,
                            image_size=parse_image_size(image_size), input_shape=parse_input_shape(input_shape),
                            val=val and str(val), test=test and str(test), **image_options.load_args())
    console = RunLog(log_console())
    console.record(f"cwtool {__version__} {command_line()}")
    with saying_progress(console.print):
        report, folder = export_model(request, options, log=console.print, attach_log=console.attach, progress=console.progress)
    print_markdown(render_export_report(report))
    console.record(f"finished: {files_verdict(report)}")  # the log's verdict: the Markdown above is the console's alone
    verdict = fit_sentence(report)
    if verdict:
        console.print(verdict, style=fit_style(report))
    for line in deploy_sentences(report):
        console.print(line, style="bold yellow" if line.startswith("finding") else None)
    console.print(f"written: {folder} (artifacts/, export.json, export.md, export.log)")
    return 0 if report["gate"]["passed"] else 1
