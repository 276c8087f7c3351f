"""What the dense model must allow before any pruning, checked before compress writes anything: it runs in
float32 and gives one answer per input, its operating point can be baked into its last layer, and each channel
group's removal computes what zeroing it computes (those that do not are kept whole). Minutes of retraining are
never spent on a model that fails at the end."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from toolchain.errors import UserError, describe


def check_before_pruning(model: nn.Module, input_shape: tuple[int, ...], protected: list[int], channels: bool = True) -> dict[str, str]:
    """{group key: why} of the channel groups to keep whole; a UserError (exit 2) for a model compress cannot take
    (``channels``: pruned by channels, which needs at least one group that can lose some)."""
    from toolchain.prune.graph import ChannelGraph

    example = torch.zeros(1, *input_shape)
    probe = _probe(input_shape)
    _check_plain_weights(model)
    dense = copy.deepcopy(model).float().eval()  # compress retrains, prunes and exports in float32
    _check_float32_and_deterministic(dense, probe)
    _check_offsets_bake(copy.deepcopy(dense), example, probe, protected)
    graph = ChannelGraph(copy.deepcopy(dense), example)
    unfollowed = _unfollowed(dense, example, probe, graph.groups)
    if channels and all(g.key in unfollowed for g in graph.groups):  # rounds of retraining that could remove nothing
        kept = graph.groups_kept_whole()
        kept.update({key: "removing a channel changes what the forward computes" for key in unfollowed})
        why = "; ".join(f"{key}: {reason}" for key, reason in list(kept.items())[:3]) + ("; ..." if len(kept) > 3 else "")
        whole = f"every channel group is kept whole ({why})" if kept else "it has no hidden channels, only its classes' outputs"
        raise UserError(f"no channel of this model can be removed: {whole}, so channel pruning "
                        "cannot make it smaller; --granularity weight zeroes single weights instead")
    return unfollowed


def _check_plain_weights(model: nn.Module) -> None:
    """A weight computed from others (weight_norm, spectral_norm: torch.nn.utils.parametrize, or the older forward hooks)
    is no tensor pruning can cut or retraining can mask: the dependency graph's parameters are the layer's own (an internal
    error, KeyError 'c1.weight', a reviewer's finding)."""
    from torch.nn.utils import parametrize

    def computed(module: nn.Module) -> str | None:
        if parametrize.is_parametrized(module):
            return ", ".join(f"{name} ({', '.join(type(p).__name__ for p in module.parametrizations[name])})"
                             for name in module.parametrizations)
        hooks = [type(h).__name__ for h in module._forward_pre_hooks.values() if type(h).__name__ in ("WeightNorm", "SpectralNorm")]
        return f"weight ({', '.join(hooks)} hook)" if hooks else None

    found = [(name or "the model", why) for name, m in model.named_modules() if (why := computed(m))]
    if found:
        shown = "; ".join(f"'{name}': {why}" for name, why in found[:3]) + (f"; and {len(found) - 3} more" if len(found) > 3 else "")
        raise UserError(f"{len(found)} layer{'s' if len(found) > 1 else ''} compute{'' if len(found) > 1 else 's'} a weight from "
                        f"others ({shown}): cwtool prunes and exports a layer's own weights. Bake them in first "
                        "(torch.nn.utils.parametrize.remove_parametrizations(layer, 'weight'), or nn.utils.remove_weight_norm / "
                        "remove_spectral_norm for the older hooks) and give that model, saved without them")


def check_float32(model: nn.Module, input_shape: tuple[int, ...]) -> None:
    """A UserError (exit 2) for a model that export cannot take: it must run in float32 and answer each input once."""
    _check_float32_and_deterministic(model, _probe(input_shape))


def _probe(input_shape: tuple[int, ...]) -> torch.Tensor:
    """Four seeded random rows: inputs a forward must answer alike twice."""
    return torch.randn(4, *input_shape, generator=torch.Generator().manual_seed(0))


# Beyond this a float32 logit moves in steps over 0.06: offsets chosen to a fraction of a logit would be lost in rounding.
_LARGEST_LOGIT = 1e6


def _check_float32_and_deterministic(model: nn.Module, rows: torch.Tensor) -> None:
    """The logits of the same rows are compared again and again (offsets, the removal check, every file against
    the torch model): a forward that casts to another type, or draws random numbers in eval mode (dropout kept
    on), cannot be compressed with a promise."""
    try:
        with torch.no_grad():
            first, again = model(rows), model(rows)
    except Exception as exc:
        raise UserError(f"the model does not run in float32 ({describe(exc, 160)}): cwtool "
                        "retrains and exports float32 models; remove the casts to other types from its forward") from exc
    largest = first.float().abs().max().item() if first.numel() else 0.0
    if not math.isfinite(largest) or largest > _LARGEST_LOGIT:
        raise UserError(f"the model's logits reach {largest:.3g} on the first rows: an operating point is an offset on them, which "
                        "float32 cannot carry at that scale; check its weights (a layer scaled by mistake, a diverged training)")
    problem = _answers_problem(model, rows, first, again, largest)
    if problem is not None:
        raise UserError(problem)


def evaluate_warnings(model: nn.Module, input_shape: tuple[int, ...]) -> list[str]:
    """What evaluate says, on the random probe rows, of a model compress would refuse for its outputs: answers that are not
    each row's own (``_answers_problem``), or probabilities summing to 1 (a softmax ends its forward), which cwtool reads
    as logits, so its AUC ranks their log-softmax, not the probabilities (0.9974 against 0.9989 on a reviewer's model)."""
    rows = _probe(input_shape)
    try:
        with torch.no_grad():
            first, again = model(rows), model(rows)
        out = first.float()
    except Exception:  # noqa: BLE001 - its failure on real rows is said where they run
        return []
    largest = out.abs().max().item() if out.numel() else 0.0
    answers = _answers_problem(model, rows, first, again, largest if math.isfinite(largest) else 0.0)
    if answers:
        return [f"{answers}; these numbers are this run's, at the batches it predicted in"]
    if out.ndim == 2 and out.numel() and _probabilities(out):
        return ["the model's outputs are probabilities summing to 1 (a softmax ends its forward): cwtool reads them as logits, "
                "so its AUC here ranks their log-softmax, not the probabilities, and compress refuses the model; give it up to "
                "its logits"]
    return []


def _probabilities(out: torch.Tensor) -> bool:
    """Whether each row of ``out`` is probabilities summing to 1 (a softmax's)."""
    return bool(((out >= 0) & (out <= 1)).all()) and torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-4)


def _answers_problem(model: nn.Module, rows: torch.Tensor, first: torch.Tensor, again: torch.Tensor, largest: float) -> str | None:
    """Other outputs for the same rows (dropout or noise left on in eval mode), or a row answered otherwise alone than
    among others: BatchNorm with track_running_stats=False normalizes with each batch's statistics, so files checked at
    256 rows a call passed the gate and missed every protected sample on a device that runs one row at a time (a
    reviewer's model: accuracy 0.097 at batch 1, 0.970 at 256)."""
    if not torch.equal(first, again):
        return ("the model gives other outputs for the same rows in eval mode (dropout or noise left on at inference): "
                "its FN promise needs one answer per input; give the deterministic model")
    batch_stats = ("its forward uses statistics of the batch (BatchNorm with track_running_stats=False, or a mean over the "
                   "rows), and a device runs it a row at a time: give a model that answers each row by itself (BatchNorm with "
                   "running statistics)")
    try:
        with torch.no_grad():
            each = [model(rows[i : i + 1]) for i in range(len(rows))]
    except Exception as exc:  # noqa: BLE001 - a forward that needs other rows (BatchNorm1d in training statistics)
        return f"the model fails on one row alone ({describe(exc, 160)}) where it runs on {len(rows)}: {batch_stats}"
    odd = next((tuple(getattr(o, "shape", ())) for o in each if tuple(getattr(o, "shape", ())) != (1, *first.shape[1:])), None)
    if odd is not None:
        return (f"the model answers one row alone with outputs of shape {odd} where {len(rows)} rows get {tuple(first.shape)} "
                "(a squeeze of the batch dimension?): a device runs it a row at a time")
    alone = torch.cat(each)
    differs = float((alone.float() - first.float()).abs().max()) if first.numel() else 0.0
    if not differs <= 1e-3 * max(1.0, largest):  # float32 kernels for 1 and 4 rows round alike to far less than this
        return f"the model answers a row otherwise alone than among {len(rows)} rows (logits differ by up to {differs:.3g}): {batch_stats}"
    return None


def _check_offsets_bake(model: nn.Module, example: torch.Tensor, probe: torch.Tensor, protected: list[int]) -> None:
    """The shipped operating point is a protected-logit offset baked into the classifier's bias: a model whose
    logits come from no layer with a bias per class (a scatter or an index_add into a fresh tensor) cannot carry
    it. ``model`` is a copy: the offset is baked into it."""
    from toolchain.prune.bake import bake_offsets

    try:
        bake_offsets(model, {protected[0]: 1.0}, torch.cat([example, probe]))  # a ReLU after it passes a zeros row alone
    except ValueError as exc:
        raise UserError("the model's logits do not come from a layer cwtool can move (an nn.Linear or a Conv with one output per "
                        f"class, last in the forward, up to a log_softmax){_after_the_classifier(model, probe)}: its operating "
                        "point is an offset baked into that layer's bias, so this model cannot be compressed") from exc


def _after_the_classifier(model: nn.Module, rows: torch.Tensor) -> str:
    """What the outputs say of the operation after the classifier, in words: probabilities are a softmax's or a
    sigmoid's (the commonest case: a model that returns them instead of its logits). ``rows``: the random probe rows,
    not a row of zeros, which a model with no biases answers with zeros, read as a sigmoid's."""
    with torch.no_grad():
        out = model(rows).float()
    if not out.numel() or not bool((out >= 0).all()):
        return "; an operation after its classifier changes the logits (a scale, a temperature, an index?): give the model up to them"
    # a sharp softmax underflows to exact zeros: the sum is read before the zeros
    if _probabilities(out):
        return "; its outputs are probabilities summing to 1: a softmax ends its forward; give the model up to its logits"
    if bool((out == 0).any()):
        return "; its outputs are clipped at 0: a ReLU (or a clamp) ends its forward; give the model up to its logits"
    if bool((out <= 1).all()):
        return "; its outputs all lie in [0, 1]: a sigmoid (or a ReLU before a pooling) ends its forward; give the model up to its logits"
    return "; its outputs are never negative: a ReLU, an exp or a softplus ends its forward; give the model up to its logits"


def _unfollowed(model: nn.Module, example: torch.Tensor, probe: torch.Tensor, groups: list) -> dict[str, str]:
    """Removing a channel must compute what zeroing it computes: a forward that uses channels by position through
    an operation the dependency graph does not see would otherwise fail after minutes of pruning (or, worse, pair
    the next layer's weights with the wrong channels). A model no set of whole groups saves is refused (exit 2)."""
    from toolchain.prune.shrink import unfollowed_groups

    return {key: f"removing one of its channels does not give the model that zeroing it gives ({why}): the forward uses them by "
                 "position through an operation the dependency graph does not see" for key, why in unfollowed_groups(model, example, probe, groups).items()}


def kept_whole_line(kept_whole: dict[str, str], shown: int = 3) -> str:
    """The channel groups kept whole (ChannelGraph.groups_kept_whole), grouped by why, a few named each and a few reasons,
    for compress's log: one line a group ran to 3,000 characters for a ShuffleNetV2, whose reasons each name their own
    shuffle (a new user's finding); report.md lists them all."""
    by_reason: dict[str, list[str]] = {}
    for key, why in kept_whole.items():
        by_reason.setdefault(why, []).append(key)
    parts = [f"{len(keys)} group{'s' if len(keys) != 1 else ''} ({why[:160]}): {', '.join(keys[:shown])}"
             + (f" and {len(keys) - shown} more" if len(keys) > shown else "") for why, keys in list(by_reason.items())[:shown]]
    rest = list(by_reason.values())[shown:]
    if rest:
        parts.append(f"{sum(map(len, rest))} more for {len(rest)} other reason{'s' if len(rest) != 1 else ''} (report.md lists them)")
    return f"{len(kept_whole)} channel group{'s' if len(kept_whole) != 1 else ''} kept whole: {'; '.join(parts)}"
