"""`cwtool evaluate`: a torch model on one split of the data, as per-class false negatives."""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from toolchain.data.images import channels_hint
from toolchain.data.labels import composed, declared_names
from toolchain.errors import UserError, describe, listed, one_line


def resolve_protected(values, class_names: list[str], num_classes: int, outputs: str = "the model's outputs") -> list[int]:
    """--protect-class accepts a class name or an index; every one must be a model output (or, with no model, one of
    ``outputs``). A name wins: classes named by numbers (ImageFolder folders 1..10, numbered 1, 10, 2, ...) are protected
    by the name the user sees, not by a position among the sorted names."""
    if not values:
        raise UserError("give at least one --protect-class (a class index or name)")
    resolved: list[int] = []
    given: dict[int, str] = {}
    for value in values:
        # as typed, then as held (a folder name that is not UTF-8 is held escaped, and typed as the file system has
        # it), then without its spaces (a class folder may be named 'cat ')
        typed = composed(str(value))
        text = next((t for t in (typed, one_line(typed)) if t in class_names), typed.strip())
        if text in class_names:
            k = class_names.index(text)
        elif re.fullmatch(r"-?[0-9]+", text):  # str.isdigit takes "²", which int() refuses
            k = int(text)
        else:
            alike = [n for n in class_names if n.casefold() == text.casefold()]  # not taken: a class name is exact
            if not alike and len(class_names) <= 10_000:  # a typo ("lesoin"): the closest name, where one is close
                import difflib

                folded = {n.casefold(): n for n in class_names}
                alike = [folded[n] for n in difflib.get_close_matches(text.casefold(), list(folded), n=1, cutoff=0.75)]
            hint = f": did you mean '{one_line(alike[0])[:60]}'?" if alike else ""
            if alike and text.split() == alike[0].split():  # "dog  bird": a terminal can show both alike
                hint += " (the spaces differ)"
            raise UserError(f"--protect-class '{one_line(text)[:60]}' is neither a class index nor one of the class names "
                            f"({listed((one_line(n)[:60] for n in class_names), 12)}){hint}")
        if not 0 <= k < num_classes:
            raise UserError(f"--protect-class {k} is outside {outputs} (classes 0..{num_classes - 1})")
        if k in given:  # a typo ("-p 3 -p 3" for "-p 3 -p 8") would drop a class's protection in silence
            raise UserError(f"--protect-class '{one_line(given[k])[:60]}' and '{one_line(text)[:60]}' name the same class {k}: "
                            "give each protected class once")
        given[k] = text
        resolved.append(k)
    return resolved


def check_labels(y: np.ndarray, num_outputs: int, what: str = "the data") -> None:
    if len(y) and int(y.max()) >= num_outputs:
        raise UserError(
            f"{what} has label {int(y.max())} but the model has only {num_outputs} outputs (classes 0..{num_outputs - 1}): "
            "check --data and --label-column"
        )


def check_output_width(k: int, y: np.ndarray, declared: list[str] | None, what: str) -> None:
    """A model's output count must fit the data: the declared class count exactly; without declared names,
    enough for the labels and not absurdly more (a 24 KB file with 6,000 outputs costs gigabytes of
    confusion matrix, and is a model for other data), and within memory."""
    from toolchain.limits import MAX_CLASSES, check_fits

    if k > MAX_CLASSES:
        raise UserError(f"{what} has {k:,} outputs, beyond cwtool's limit of {MAX_CLASSES:,} classes")
    labels = int(y.max()) + 1 if len(y) else 0
    if declared is not None and len(declared) != k:
        raise UserError(f"{what} has {k} outputs but the data names {len(declared)} class{'es' if len(declared) != 1 else ''}: give a model for this data"
                        + (f", or, where these rows hold only some of its classes, --class-names naming all {k} in its order"
                           if len(declared) < k else ""))
    if declared is None and k > max(128, 4 * labels):
        raise UserError(f"{what} has {k:,} outputs but the data's labels go up to {labels - 1}: give a model for this data "
                        "(or name the classes with --class-names)")
    check_fits(len(y) * k * 12, f"{len(y):,} rows x {k:,} outputs", "use fewer rows")  # (a confusion matrix: 100 classes at most)


def probe_outputs(model, sample_shape: tuple[int, ...]) -> int:
    """Number of model outputs, from one forward pass on a zero sample; a shape mismatch is a UserError."""
    import torch

    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *sample_shape))
    except Exception as exc:
        if isinstance(exc, MemoryError) or any(w in str(exc) for w in ("can't allocate memory", "out of memory", "DefaultCPUAllocator")):
            raise UserError(f"the model's forward of two samples of shape {tuple(sample_shape)} ran out of memory "
                            f"({describe(exc, 120)}): give a smaller --image-size (or --resize), or a machine with more memory") from exc
        raise UserError(
            f"the model does not accept the data's samples of shape {tuple(sample_shape)} "
            f"({describe(exc, 160)}): check --data, --arch and --arch-kwargs"
            + ("; flat rows for an image model take --input-shape C,H,W" if len(sample_shape) == 1 else "")
            + (channels_hint(tuple(sample_shape)) if "channels" in str(exc) else "")
            + ("; an image model whose layers fix the size takes the size it was trained at (--image-size, --resize)"
               if len(sample_shape) == 3 and "channels" not in str(exc) else "")
            # a 3-D x is read as gray images: a Conv1d model's (N, C, L) signals were told of image sizes alone
            + (f"; signals (N, C, L) for a 1-D model take --input-shape {sample_shape[1]},{sample_shape[2]}"
               if len(sample_shape) == 3 and sample_shape[0] == 1 else "")
        ) from exc
    if not isinstance(out, torch.Tensor):  # (logits, features), auxiliary heads, a dict of outputs
        raise UserError(f"the model returns a {type(out).__name__}, not one tensor; cwtool needs a forward that returns (batch, classes) "
                        "logits: wrap the model in a module whose forward returns the logits alone")
    if out.ndim != 2:
        raise UserError(f"the model returns shape {tuple(out.shape)}; cwtool needs (batch, classes) logits")
    if not out.is_floating_point():  # a complex part would be dropped, integer "logits" ranked as ties
        raise UserError(f"the model returns {out.dtype} values; cwtool needs real floating-point logits")
    if out.shape[1] == 1:  # a sigmoid/BCE binary classifier: every argmax would be class 0
        raise UserError("the model returns one output a sample (a single logit, as a sigmoid or BCE binary classifier has); "
                        "cwtool needs one logit per class: give it a last layer of two outputs, an nn.Linear(h, 2) whose "
                        "weight row and bias 0 are zeros and row and bias 1 are the single logit's (logits [0, z], whose "
                        "softmax is sigmoid(z) for class 1; compress moves its operating point through that layer's bias, so "
                        "torch.cat([torch.zeros_like(z), z], 1) after the layer serves evaluate and export, not compress)")
    return int(out.shape[1])


@dataclass
class Evaluation:
    metrics: dict
    protected: list[int]
    class_names: list[str]
    problem: str | None = None  # detection_problem on these rows: evaluate says it, compress and export refuse


def evaluate_rows(model, x: np.ndarray, y: np.ndarray, class_names: list[str] | None, protect) -> Evaluation:
    """A torch model on given rows (the rows `cwtool verify` would judge for the same --data)."""
    from toolchain.metrics import evaluate_logits
    from toolchain.provenance import rows_sha256

    num_outputs = probe_outputs(model, tuple(x.shape[1:]))
    check_output_width(num_outputs, y, declared_names(class_names), "the model")
    names = list(class_names or [])
    names = names + [str(i) for i in range(len(names), num_outputs)]
    protected = resolve_protected(protect, names, num_outputs)
    check_labels(y, num_outputs)
    absent = [k for k in protected if not np.any(y == k)]
    if absent:  # FN 0 of no rows is no measurement: verify refuses the same rows
        raise UserError(f"the data's {len(y):,} rows hold no row of protected class {', '.join(map(str, absent))}: its false negatives "
                        "cannot be counted; give rows that include it")
    logits = predict_on(model, x)
    metrics = evaluate_logits(y, logits, protected, num_classes=num_outputs)
    metrics["predictions"] = logits.argmax(1).tolist()  # a baseline's FN are checked against its rows through these
    metrics["rows_sha256"] = rows_sha256(x, y)
    return Evaluation(metrics, protected, names, detection_problem(logits, y, protected, names, where="these rows"))


def predict_on(model, x: np.ndarray) -> np.ndarray:
    """The model's logits on the data's rows; a model that fails on them (it came from a file) is bad input."""
    from toolchain.models.train import predict_logits

    try:
        return predict_logits(model, x)
    except UserError:  # cwtool's own word on the rows read on demand (an image that cannot be decoded): already one line
        raise
    except MemoryError as exc:
        raise UserError("the data's rows do not fit in memory as the model reads them: give smaller images (--image-size, "
                        "--resize) or fewer rows") from exc
    except Exception as exc:
        raise UserError(f"the model fails on the data's rows ({describe(exc, 160)}): "
                        "check --data, --arch and --arch-kwargs") from exc


def class_names_for(dataset: Dataset, num_outputs: int) -> list[str]:
    """The data's class names, padded with indices for model outputs the data never names."""
    names = list(dataset.class_names)
    return names + [str(i) for i in range(len(names), num_outputs)]


MIN_POSITIVES = 10  # fewer samples of a class tell chance from a weak model too poorly to refuse on (the guard says more)
CHANCE_AUC = 0.55  # a protected class ranked no better than this decides nothing about it
WEAK_AUC = 0.75  # never answering a class it ranks this poorly: label order or preprocessing first, not a threshold


def detection_problem(logits: np.ndarray, y: np.ndarray, protected: list[int], names: list[str],
                      where: str = "the validation split", recorded_alike: bool = False) -> str | None:
    """Why a model's decisions on these rows give "no more missed" nothing to keep (None: they do), per protected class
    with at least MIN_POSITIVES samples: it ranks the class no better than chance (one-vs-rest AUC, what a label order
    or preprocessing other than its training's gives), or its argmax never answers the class, whatever its ranking
    (cwtool keeps a model's own decisions, and an offset over "misses every one" promises nothing), or answers it for
    every row (no miss to keep from growing). ``recorded_alike``: the model's checkpoint records its training's class
    names and preprocessing, and these rows were found alike: the model itself is what is weak (blaming the labels
    and the preprocessing misled a user whose model cwtool had trained on these very folders)."""
    from toolchain.metrics import check_finite_logits, log_softmax_of, roc_auc_ovr

    logits = np.asarray(logits, dtype=np.float64)
    check_finite_logits(logits, where)
    predicted = logits.argmax(1)
    if len(logits) >= MIN_POSITIVES and logits.size and float(np.ptp(logits, axis=0).max()) == 0.0:
        return (f"the model gives every row the same outputs in {where} ({len(logits):,} rows): it tells no input from another "
                "(a network whose activations died, weights left at zero, or inputs it cannot tell apart: check that they "
                "are prepared as in its training); label order is not the cause")
    for k in protected:
        positives = y == k
        n = int(positives.sum())
        if n < MIN_POSITIVES or n == len(y):
            continue
        auc = roc_auc_ovr(y, log_softmax_of(logits, k), k)  # the AUC the per-class table shows (a margin's had differed)
        caught = int(np.sum(predicted[positives] == k))
        name = f"protected class {k}" + (f" ({names[k]})" if names[k] != str(k) else "")  # not "class 1 (1)"
        if auc <= CHANCE_AUC and recorded_alike:
            return (f"the model ranks {name} no better than chance in {where} (AUC {auc:.3f} over {n:,} of its samples; it "
                    f"catches {caught}), though its checkpoint records the same class names and preprocessing as these rows: "
                    "the model itself has not learnt the class; train it further or otherwise (check its validation accuracy "
                    "against its training accuracy: far apart, it learnt its training rows by heart), then compress")
        if auc <= CHANCE_AUC:
            how = ("ranks {name} the wrong way round" if auc < 1 - WEAK_AUC else "ranks {name} no better than chance").format(name=name)
            first = ("the labels numbered otherwise than in its training, swapped (--class-names)" if auc < 1 - WEAK_AUC else
                     "that the labels are numbered as in its training (--class-names)")
            return (f"the model {how} in {where} (AUC {auc:.3f} over {n:,} of its samples; it "
                    f"catches {caught}): check {first} and that its "
                    "inputs are preprocessed alike (--normalize, pixel scaling)")
        if caught == 0:  # inputs prepared otherwise than in training do this to a good model too: named first
            first = ("labels numbered otherwise than in its training (--class-names) or inputs preprocessed otherwise "
                     "(--normalize, pixel scaling)" if auc < WEAK_AUC else "inputs preprocessed otherwise than in its training "
                     "(--normalize, --resize, pixel scaling) or labels numbered otherwise (--class-names)")
            return (f"the model's own decisions never answer {name} in {where} (it misses all {n:,}, though it ranks the "
                    f"class with AUC {auc:.3f}; accuracy {float(np.mean(predicted == y)):.3f}): check first for {first}; "
                    "if the model does decide so, cwtool keeps a model's decisions and 'no more missed' than all of them "
                    "promises nothing: bake the threshold you use into its last layer's bias for that class, then compress")
        others = ~positives
        if int(others.sum()) >= MIN_POSITIVES and np.all(predicted[others] == k):  # (a handful of others tells nothing)
            return (f"the model's own decisions answer {name} for every row in {where}, the {int(others.sum()):,} of other classes "
                    "too: 'no more missed' than none promises nothing; check that its inputs are preprocessed as in its training "
                    "(--normalize, pixel scaling) and that the labels are numbered alike (--class-names)")
    return None


WEAK_RECALL = 0.5  # a dense model that catches fewer of a protected class than this: "no more missed" than it is little


def weak_detection_notes(logits: np.ndarray, y: np.ndarray, protected: list[int], names: list[str],
                         y_train: np.ndarray, flat: bool = False) -> list[str]:
    """Notes, not refusals: a protected class the dense model's own decisions catch fewer than half of on validation (the
    promise is "no more missed than it", so it is as weak as that; a resize or normalization other than its training's
    does this to a good model), and classes of the train split that the validation split holds no row of (the accuracy
    budget is judged without them)."""
    predicted = np.asarray(logits).argmax(1)
    prepared = ("the features are scaled as in its training (a standardization belongs in the model's forward: docs/DATA.md)"
                if flat else "the inputs are prepared alike (--normalize, --resize, pixel scaling)")
    notes = []
    for k in protected:
        positives = y == k
        n = int(positives.sum())
        caught = int(np.sum(predicted[positives] == k))
        if n >= MIN_POSITIVES and caught < WEAK_RECALL * n:
            notes.append(f"note: the dense model catches {caught} of the {n:,} validation samples of protected class {k} "
                         f"({one_line(names[k])[:60]}), {caught / n:.0%}, at {float(np.mean(predicted == y)):.1%} accuracy: the "
                         f"promise is 'no more missed than it'; if it does better where it was trained, check that {prepared} "
                         "and the labels numbered alike (--class-names)")
    absent = sorted(set(np.unique(y_train).tolist()) - set(np.unique(y).tolist()))
    if absent:
        said = ", ".join(f"{k} ({one_line(names[k])[:40]})" for k in absent[:5]) + (f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        notes.append(f"note: the validation split holds no sample of class {said}: the accuracy budget and the operating point "
                     f"are judged without {'it' if len(absent) == 1 else 'them'}")
    return notes


def check_model_on_splits(model, dataset: Dataset, protect) -> tuple[int, list[str], list[int], np.ndarray]:
    """The checks compress and export make before writing anything: the model runs on the whole validation
    split (a model that fails on it is bad input) and every split's labels fit its outputs. Returns the
    output count, the class names, the protected classes and the validation logits (the check's forward,
    not done twice)."""
    num_outputs = probe_outputs(model, dataset.input_shape)
    val_logits = predict_on(model, dataset.x_val)
    names = class_names_for(dataset, num_outputs)
    # in index order: the losses, importances and offsets sum over the classes, and float sums of three or more terms
    # depend on their order (-p 3 -p 8 -p 5 and -p 5 -p 8 -p 3 shipped models 2e-4 apart)
    protected = sorted(resolve_protected(protect, names, num_outputs))
    for split in ("train", "val", "test"):
        check_labels(dataset.split(split)[1], num_outputs, f"the {split} split")
    return num_outputs, names, protected, val_logits
