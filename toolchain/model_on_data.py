"""A model and the data it is judged on, read together, and the checks that they belong together: compress's and
export's first step (evaluate reads rows of its own choosing, verify a file's)."""

from __future__ import annotations

__all__ = ["read_model_and_data", "check_model_fits_data", "recorded_alike"]


def read_model_and_data(request, seed: int):
    """(dataset, loaded model) from ``request``'s data, held-out rows, image and model flags (a
    toolchain.pipeline.CompressRequest or toolchain.export.standalone.ExportRequest); ``seed`` draws the split."""
    from toolchain.data.given import load_with_given_rows
    from toolchain.data.loaders import is_image_folder
    from toolchain.file_identity import identity
    from toolchain.models.loading import load_model, naming_recorded_preparation

    held = identity(request.model)  # the sha256 a report records later is of this file only where it is still this one
    with naming_recorded_preparation(request.model):  # images prepared otherwise than its checkpoint records: its flags named
        dataset = load_with_given_rows(request.data, request.val, request.test, seed=seed, label_column=request.label_column,
                                       class_names=request.class_names, image_size=request.image_size, input_shape=request.input_shape,
                                       resize=request.resize, normalize=request.normalize, color=request.color)
    loaded = load_model(request.model, arch=request.arch, arch_kwargs=request.arch_kwargs, trust_model=request.trust_model,
                        input_shape=dataset.input_shape, image_folder=is_image_folder(request.data))
    loaded.file_identity = held
    return dataset, loaded


def check_model_fits_data(loaded, dataset, model, *, refuse_unseen: bool, note) -> bool:
    """What the model's checkpoint records of its training against this data: classes in another order and images
    prepared otherwise are refused (every number would be of another task); held-out rows it trained on are refused
    (``refuse_unseen``, compress: its promise would rest on them) or said; pixels scaled otherwise are said (``note``).
    Returns whether the record vouches for this data (``recorded_alike``)."""
    from toolchain.data.given import check_no_copies_across_splits
    from toolchain.data.identity import check_class_order, check_preprocessing, check_unseen, scale_mismatch
    from toolchain.errors import UserError

    record = loaded.extra.get("data")
    check_class_order(record, dataset.class_names, model, dataset.label_mapping is None)
    problem = check_preprocessing(record, dataset.preprocessing.to_dict(), model, loaded.input_shape)
    if problem is not None:  # a model fed other inputs than it learnt on: no promise about it means anything
        raise UserError(problem)
    check_no_copies_across_splits(dataset, refuse=refuse_unseen, note=note)
    check_unseen(record, model, dataset, refuse=refuse_unseen, note=note)
    scaled_otherwise = scale_mismatch(record, dataset.x_val, model)
    if scaled_otherwise:
        note(f"warning: {scaled_otherwise}")
    return recorded_alike(record, scaled_otherwise)


def recorded_alike(record, scaled_otherwise: str | None) -> bool:
    """Whether the checkpoint records its training's class names and preprocessing (which check_model_fits_data found
    alike with this data, or refused) and no other pixel scale (``scaled_otherwise``: scale_mismatch's warning): then a
    model that ranks a class no better than chance is weak itself, not fed otherwise."""
    return (isinstance(record, dict) and isinstance(record.get("class_names"), list) and isinstance(record.get("preprocessing"), dict)
            and scaled_otherwise is None)
