"""`cwtool evaluate`: per-class false negatives of a PyTorch model on the rows verify would judge."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from toolchain.cli.options import (ArchKwargsOpt, ArchOpt, ClassNamesOpt, DataOpt, ImageOptions, ImageSizeOpt, InputShapeOpt, LabelColumnOpt,
                                   ProtectOpt, TrustOpt, parse_kwargs, seed_option, with_config)
from toolchain.errors import UserError


@with_config(ImageOptions)
def evaluate(
    model: Path = typer.Argument(..., metavar="MODEL", help="Model file: state_dict (+ --arch), cwtool checkpoint, pickled module or TorchScript."),
    data: str = DataOpt,
    protect_class: List[str] = ProtectOpt,
    arch: Optional[str] = ArchOpt,
    arch_kwargs: Optional[str] = ArchKwargsOpt,
    trust_model: bool = TrustOpt,
    split: str = typer.Option("auto", help="auto, train, val, test or all (auto: every row of an x/y .npz, or of the --test folder or file the "
                                           "checkpoint records (its train or compress run's), else test, as verify; verify narrows an .npz its files were split from "
                                           "to that test split)."),
    label_column: Optional[str] = LabelColumnOpt,
    seed: int = seed_option("Seed of the train/val/test split when the data has none."),
    class_names: Optional[str] = ClassNamesOpt,
    image_size: Optional[str] = ImageSizeOpt,
    input_shape: Optional[str] = InputShapeOpt,
    json_out: Optional[Path] = typer.Option(None, "--json", help="Write the evaluation as JSON here."),
    image_options: ImageOptions = None,
):
    """Per-class false negatives of a PyTorch model on one split of the data."""
    from toolchain.data.identity import check_class_order, check_preprocessing, scale_mismatch, seen_rows
    from toolchain.data.options import parse_image_size, parse_input_shape
    from toolchain.evaluate import evaluate_rows
    from toolchain.io import json_text, write_named_output
    from toolchain.output_paths import check_json_replaceable, check_output_file
    from toolchain.input_paths import input_paths
    from toolchain.models.loading import load_model, naming_recorded_preparation
    from toolchain.recorded import preparation_notes
    from toolchain.report.console import print_evaluation
    from toolchain.report.consoles import log_console
    from toolchain.report.pace import saying_progress
    from toolchain.judged_rows import (SPLITS, UnsplitRows, describe_rows, load_rows_for, share_note, the_run_s_test_rows,
                                        the_run_s_unsplit_rows)
    from toolchain.data.loaders import is_image_folder
    from toolchain.models.loading import prepared_as_recorded

    inputs = input_paths(model, data, arch=arch)
    check_output_file(json_out, "--json", inputs=inputs)
    check_json_replaceable(json_out, "evaluate")
    if split not in SPLITS:
        raise UserError(f"--split '{split}' is not one of {', '.join(SPLITS)}")
    sides, shape, image_args = parse_image_size(image_size), parse_input_shape(input_shape), image_options.load_args()
    prepared = prepared_as_recorded(model, data, image_args["color"], image_args["normalize"], image_args["resize"], sides)
    image_args = {"resize": prepared.resize, "normalize": prepared.normalize, "color": prepared.color}
    sides = prepared.image_size

    def rows_of(which: str) -> dict:
        return load_rows_for(data, which, seed, label_column, class_names=class_names, image_size=sides, input_shape=shape,
                             **image_args)

    unsplit = None  # a default test split that cannot be drawn: every row, if the checkpoint's run tested it on these
    with naming_recorded_preparation(model):  # images prepared otherwise than its checkpoint records: its flags named
        try:
            rows = rows_of(split)
        except UnsplitRows as exc:
            if split != "auto":
                raise
            try:
                rows, unsplit = exc.every_row(), exc
            except UserError:
                raise exc from None
    loaded = load_model(model, arch=arch, arch_kwargs=parse_kwargs(arch_kwargs), trust_model=trust_model, input_shape=tuple(rows["x"].shape[1:]),
                        image_folder=is_image_folder(data))
    check_class_order(loaded.extra.get("data"), rows["class_names"], model)
    prepared_otherwise = check_preprocessing(loaded.extra.get("data"), rows.get("preprocessing"), model, loaded.input_shape)
    whole_note = None
    if split == "auto":  # the checkpoint's compress run's --test folder, given again: every row of it, as verify judges it
        record = loaded.extra.get("data") if isinstance(loaded.extra.get("data"), dict) else {}
        tested = f"'{model}' records as its --test rows"  # train's or compress's: a train checkpoint records them too
        if unsplit is not None:
            rows, whole_note = the_run_s_unsplit_rows(unsplit, [record.get("test_rows")], tested)
        else:
            rows, whole_note = the_run_s_test_rows(rows, [record.get("test_rows")], lambda: rows_of("all"), tested)
    with saying_progress(log_console().print):  # 20,000 images of 224 px take minutes on a CPU
        result = evaluate_rows(loaded.module, rows["x"], rows["y"], rows["class_names"], protect_class)
    log_console().print(f"rows: {describe_rows(rows, result.metrics['rows_sha256'])}; {rows['note']}")
    share = share_note(rows) if split == "auto" else None
    for line in (whole_note, share):
        if line:
            log_console().print(f"note: {line}")
    seen = seen_rows(loaded.extra.get("data"), rows["x"], rows["y"])
    if seen:
        log_console().print(f"warning: '{model}' was trained on {seen:,} of these {len(rows['y']):,} rows: its numbers here overstate "
                            "what it does on new data (evaluate the split it has not seen: --split, --seed, or other --data)")
    if prepared_otherwise:  # said, not refused: evaluating under other preprocessing may be the point
        log_console().print(f"warning: {prepared_otherwise}")
    scaled_otherwise = scale_mismatch(loaded.extra.get("data"), rows["x"], model)
    if scaled_otherwise:
        log_console().print(f"warning: {scaled_otherwise}")
    for line in preparation_notes(prepared, tuple(rows["x"].shape[1:]), f"'{model}' records its training's were"):
        log_console().print(f"note: {line}")
    for said in _output_problems(loaded.module, tuple(rows["x"].shape[1:])):  # said, not refused: the numbers are what it did
        log_console().print(f"warning: {said}")
    print_evaluation(result.metrics, result.class_names, title=f"{model.name} on {rows['name']} [{rows['split']}]")
    if result.problem is not None:
        log_console().print(f"warning: {result.problem}")
    if json_out is not None:
        rows_record = {"split": rows["split"], "seed": rows["seed"], "name": rows["name"],
                       **({"preprocessing": rows["preprocessing"]} if "preprocessing" in rows else {})}
        write_named_output(json_out, json_text({**result.metrics, "rows": rows_record}), "--json", inputs)


def _output_problems(module, input_shape) -> list[str]:
    """preflight.evaluate_warnings on the model in eval mode; nothing for a TorchScript archive (not a module to probe)."""
    import torch

    from toolchain.models.modes import evaluating
    from toolchain.prune.preflight import evaluate_warnings

    if not isinstance(module, torch.nn.Module) or isinstance(module, torch.jit.ScriptModule):
        return []
    with evaluating(module):
        return evaluate_warnings(module, input_shape)
