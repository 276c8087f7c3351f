"""FN-aware quantization: keep in float the layers whose quantization costs the protected classes.

Evaluated on the validation split only, against the rule the pruned model's operating point met (the
FN promise with its confidence, toolchain.prune.operating_point.PromiseGuard). First, when the caller
can (``retune``), the int8 file gets its own operating point: quantization shifts the protected logits
a little, and the pruned model's offset was set just where the rule is met, so a file slightly short
of it is the common case. A protected-logit offset chosen on the int8 file's validation logits with the
same rule and baked into its float source before quantizing again costs a few false positives and
keeps the file small. Only if that is not
enough (or costs more accuracy than the budget allows): each candidate layer is quantized *alone* (every other layer
kept in float) and ranked by the harm it does to the protected classes: their validation FN, then
the drop of their mean log-odds on their own samples (a continuous tie-breaker that sees harm before
it flips a prediction). The most harmful layers are then kept in float, one at a time, until the
rule is met. If no mix meets the budget, the best artifact is kept and reported.

The file must also keep the run's accuracy budget on validation (``min_accuracy``): a file that
meets the promise by answering the protected class for nearly every row (an int8 input scale that
erases small features does so) is short of it, not a file to ship. Where accuracy is what falls
short, the layers are ranked by the validation accuracy each one's quantization costs instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from toolchain.errors import ConverterRefused

# build(excluded layer names, destination) -> path of the int8 artifact
Build = Callable[[Sequence[str], Path], Path]
# score(path) -> (the rule met on validation, validation FN per protected class, mean protected log-odds, validation
# accuracy)
Score = Callable[[Path], tuple[bool, dict[int, int], float, float]]
# retune(int8 file over budget, offsets already baked into it) -> (a Build with the file's own offsets baked
# into its float source, those offsets in total), or None when no offset may be used
Retune = Callable[[Path, dict], "tuple[Build, dict[int, float]] | None"]
RETUNE_TRIES = 3  # quantizing the shifted model moves its logits again, by less each time


@dataclass
class FallbackResult:
    path: Path
    float_layers: list[str] = field(default_factory=list)
    fn: dict[int, int] = field(default_factory=dict)
    within_budget: bool = True
    ranking: list[dict] = field(default_factory=list)
    reason: str = ""
    offsets: dict[int, float] = field(default_factory=dict)  # this file's protected-logit offsets beyond the float model's
    short_of: str = ""  # where not within budget: "the FN promise" or "the accuracy budget" (on validation)


def protected_log_odds(logits: np.ndarray, y: np.ndarray, protected: Sequence[int]) -> float:
    """Mean over protected classes of the mean log-odds of class k on k's own samples."""
    values = []
    for k in protected:
        rows = logits[y == k].astype(np.float64)
        if len(rows) == 0:
            continue
        others = np.delete(rows, k, axis=1)
        m = others.max(axis=1, keepdims=True)
        lse = (m + np.log(np.exp(others - m).sum(axis=1, keepdims=True)))[:, 0]
        values.append(float(np.mean(rows[:, k] - lse)))
    return float(np.mean(values)) if values else 0.0


def _offsets_text(offsets: dict[int, float]) -> str:
    """The file's offsets as added to the float model's own (what report.json's quantization.offsets holds)."""
    return ", ".join(f"class {k} {v:+.3f}" for k, v in offsets.items()) + " beyond the float model's offset"


def _short_of(promise_met: bool) -> str:
    return "the accuracy budget" if promise_met else "the FN promise"


def fn_aware_quantize(build: Build, score: Score, layers: Sequence[str], workdir: Path, final_path: Path,
                      retune: Retune | None = None, log=None, label: str = "int8", search: bool = True,
                      min_accuracy: float = 0.0) -> FallbackResult:
    """``log``: where the search says what it does (a mobile net's layer ranking builds and scores one file a layer:
    minutes), as "``label``: ..." lines. ``search`` False: no float layers are searched for (a run that recommends no
    file), the file as its own operating point left it. ``min_accuracy``: the validation accuracy a file must keep."""
    from toolchain.report.pace import RowPace

    say = log or (lambda line: None)

    def judged(path: Path):
        promise_met, fn, odds, accuracy = score(path)
        return promise_met and accuracy >= min_accuracy - 1e-12, promise_met, fn, odds, accuracy

    workdir.mkdir(parents=True, exist_ok=True)
    # final_path holds only the file chosen: a stop mid-search (kill -9) had left a rejected candidate under its name
    candidate = workdir / f"candidate{final_path.suffix}"
    path = build([], candidate)
    met, promise_met, fn, _, accuracy = judged(path)
    if met:
        return FallbackResult(_ship(path, final_path), [], fn, True)
    accuracy_as_quantized = accuracy
    if retune is not None:
        say(f"{label}: short of {_short_of(promise_met)} on validation; setting its own operating point")
    offsets: dict[int, float] = {}
    for _ in range(RETUNE_TRIES if retune is not None else 0):
        retuned = retune(path, offsets)
        if retuned is None:
            break
        build, offsets = retuned
        path = build([], candidate)
        met, promise_met, fn, _, accuracy = judged(path)
        if met:
            return FallbackResult(_ship(path, final_path), [], fn, True, offsets=offsets,
                                  reason=f"operating point re-set for this file on validation ({_offsets_text(offsets)}; "
                                         f"validation accuracy {accuracy_as_quantized:.4f} before, {accuracy:.4f} after)")
    short = _short_of(promise_met)
    if not search:
        said = ("the run did not keep its budget on validation and recommends no file: no layers searched to keep in float"
                + (f"; operating point re-set ({_offsets_text(offsets)})" if offsets else ""))
        say(f"{label}: short of {short} on validation; {said}")
        return FallbackResult(_ship(path, final_path), [], fn, False, offsets=offsets, reason=said, short_of=short)
    accuracy_binds = promise_met  # the promise holds and accuracy does not: rank by what each layer costs in accuracy
    say(f"{label}: still short of {short} on validation; ranking {len(layers)} layers by what quantizing each alone "
        f"costs {'in validation accuracy' if accuracy_binds else 'the protected classes'} (a file each)")
    ranking, unjudged = [], []
    pace = RowPace(f"{label}: layer ranking", len(layers), unit="layers")
    for i, layer in enumerate(layers):
        try:
            alone = build([other for other in layers if other != layer], workdir / f"only_{i}{final_path.suffix}")
        except ConverterRefused as exc:  # judged by no file of its own: tried after the ranked ones
            unjudged.append({"layer": layer, "not_built": exc.detail})
        else:
            _, layer_fn, odds, layer_accuracy = score(alone)
            ranking.append({"layer": layer, "protected_fn": layer_fn, "protected_log_odds": odds, "val_accuracy": layer_accuracy})
        pace(i + 1)
    if unjudged:
        say(f"{label}: {len(unjudged)} layer(s) could not be quantized alone (the converter refused every other layer in "
            f"float beside it), such as {unjudged[0]['layer']}: tried after the ranked ones")
    say(f"{label}: keeping the most harmful layers in float, one at a time, until {'accuracy' if accuracy_binds else 'the promise'} holds")
    if accuracy_binds:
        ranking.sort(key=lambda r: (r["val_accuracy"], -sum(r["protected_fn"].values()), r["protected_log_odds"]))
    else:
        ranking.sort(key=lambda r: (-sum(r["protected_fn"].values()), r["protected_log_odds"], r["val_accuracy"]))
    ranking += unjudged
    best = FallbackResult(path, [], fn, False, ranking, offsets=offsets, short_of=short)
    best_key = (promise_met, -sum(fn.values()), accuracy)
    also = f"; operating point re-set first ({_offsets_text(offsets)})" if offsets else ""
    excluded: list[str] = []
    refused: list[str] = []  # layers the converter would not keep in float beside those before them: left int8
    pace = RowPace(f"{label}: layers kept in float", len(ranking), unit="layers tried")
    for tried, entry in enumerate(ranking):
        pace(tried)
        excluded.append(entry["layer"])
        try:
            path = build(excluded, candidate)
        except ConverterRefused as exc:
            excluded.pop()
            refused.append(entry["layer"])
            if len(refused) == 1:  # said once: a mobile net may refuse many
                say(f"{label}: {entry['layer']} kept in float beside the layers before it makes a file the converter refuses "
                    f"({exc.detail}); it stays int8, and so does any other such layer")
            continue
        met, promise_met, fn, _, accuracy = judged(path)
        if (promise_met, -sum(fn.values()), accuracy) > best_key:
            best = FallbackResult(path, list(excluded), fn, False, ranking, offsets=offsets, short_of=_short_of(promise_met))
            best_key = (promise_met, -sum(fn.values()), accuracy)
        if met:
            cost = "cost validation accuracy" if accuracy_binds else "raised the protected FN on validation"
            return FallbackResult(_ship(path, final_path), list(excluded), fn, True, ranking,
                                  f"kept {len(excluded)} layer(s) in float: quantizing them {cost}{also}{_refused_text(refused)}",
                                  offsets)
    # Nothing met the budget: rebuild the best mix found, keep it, and let the gate fail on it.
    path = build(best.float_layers, candidate)
    best.path, best.reason = _ship(path, final_path), (f"no mix of float layers met {best.short_of} on validation; kept the best "
                                                       f"artifact{also}{_refused_text(refused)}")
    return best


def _refused_text(refused: list[str]) -> str:
    return (f"; {len(refused)} layer(s) left int8, the converter refusing them in float beside the others "
            f"({', '.join(refused[:3])}{', ...' if len(refused) > 3 else ''})" if refused else "")


def _ship(path: Path, final_path: Path) -> Path:
    """The chosen candidate moved to the artifact's name, its sidecar (a TFLite file's ``.json``) first: a model file never
    stands without it."""
    import shutil

    side = Path(f"{path}.json")
    if side.exists():
        shutil.move(side, f"{final_path}.json")
    shutil.move(path, final_path)
    return final_path
