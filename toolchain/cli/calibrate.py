"""`cwtool calibrate`: a reusable int8 calibration set from your data -- the rows compress and export draw."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, Optional

import typer

from toolchain.cli.options import (ClassNamesOpt, DataOpt, ImageOptions, ImageSizeOpt, InputShapeOpt, LabelColumnOpt, TestOpt,
                                   ValOpt, seed_option, with_config)


@with_config(ImageOptions)
def calibrate(
    data: str = DataOpt,
    out: Path = typer.Option(..., "--out", help="The .npz to write (a calibration set there is replaced; any other file is "
                             "refused); calibration/NAME.npz makes it --calibration NAME.", rich_help_panel="Run"),
    protect_class: Optional[List[str]] = typer.Option(None, "--protect-class", "-p", metavar="CLASS", help="Class index or name to enrich, as "
                                                      "compress does (repeatable; at least 30% of the rows together).",
                                                      rich_help_panel="Inputs"),
    calibration_size: int = typer.Option(256, "--calibration-size", min=1, help="Rows to draw from the train split.",
                                         rich_help_panel="Inputs"),
    seed: int = seed_option("Seed of the train/val/test split and of the draw (compress's --seed)."),
    label_column: Optional[str] = LabelColumnOpt,
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    input_shape: Optional[str] = InputShapeOpt,
    val: Optional[Path] = ValOpt,
    test: Optional[Path] = TestOpt,
    image_options: ImageOptions = None,
):
    """Write an int8 calibration set: the train-split rows compress would draw, with their recipe."""
    from toolchain.data.given import load_with_given_rows
    from toolchain.data.options import parse_image_size, parse_input_shape
    from toolchain.evaluate import resolve_protected
    from toolchain.output_paths import check_output_file
    from toolchain.input_paths import input_paths
    from toolchain.provenance import file_sha256
    from toolchain.errors import UserError
    from toolchain.quantize.calibration import calibration_recipe, calibration_rows_sha256, calibration_sets, is_calibration_set, save_calibration
    from toolchain.report.consoles import log_console

    check_output_file(out, "--out", inputs=input_paths(data, val, test))
    if out.suffix != ".npz":
        raise UserError(f"--out '{out}' does not end in .npz: a calibration set is an .npz file")
    if out.is_file() and not is_calibration_set(out):
        raise UserError(f"--out '{out}' exists and is not a cwtool calibration set: refusing to overwrite it, give a new path")
    dataset = load_with_given_rows(data, val and str(val), test and str(test), seed=seed, label_column=label_column,  # compress's
                                   class_names=class_names, image_size=parse_image_size(image_size),  # train split
                                   input_shape=parse_input_shape(input_shape), **image_options.load_args())
    protected = resolve_protected(list(protect_class or []), dataset.class_names, dataset.num_classes,
                                  outputs="the data's classes") if protect_class else []
    absent = [k for k in protected if not (dataset.y_train == k).any()]
    if absent:  # "enriched" with none of them: the set would hold nothing of what it is for
        raise UserError(f"the train split of --data ({dataset.name}) holds no row of protected class "
                        f"{', '.join(map(str, absent))}: a calibration set cannot be enriched with it; give data that has it")
    log_console().print(f"reading up to {calibration_size:,} rows of the train split of {dataset.name} "  # 2,000 images of 224 px:
                        f"({len(dataset.y_train):,} rows)")  # more than a minute of decoding, said nothing before
    x, meta = calibration_recipe(dataset, protected, calibration_size, seed)
    from toolchain import interrupts

    save_calibration(out, x, meta)
    with interrupts.finishing():  # --out is replaced: a stop from here on is not said as if it were not
        console = log_console()
        console.print(f"data: {dataset.name}: {dataset.preprocessing.note}")
        shape = "x".join(str(d) for d in x.shape[1:])
        console.print(f"wrote {out}: {len(x)} rows of shape {shape} from the train split (seed {seed}"
                      + (f", protected {', '.join(map(str, protected))} enriched" if protected else "") + ")")
        console.print(f"sha256 {file_sha256(out)}; rows sha256 {calibration_rows_sha256(x)}")
        found = calibration_sets().get(out.stem)  # the name alone only where --calibration NAME finds this very file
        name = out.stem if found is not None and found.resolve() == out.resolve() else str(out)
        console.print(f"use it: --calibration {shlex.quote(name)}")  # pasted into a shell as it stands
    return 0
