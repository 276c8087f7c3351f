"""Tickets: a round's pruned model with its operating point on validation, which one a run ships, what it promises and
whether it reached the size goal."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

from toolchain.config import PruneConfig
from toolchain.promise import (SMALL_SPLIT, budget_backing, confidence_to_ask, empty_promise, share_words, together_bound,
                               together_words)

Survivors = dict[str, list[int]]  # group key -> original channel indices still present


@dataclass
class Ticket:
    round: int
    model: nn.Module
    survivors: Survivors
    params: int
    macs: int
    val: dict  # evaluation at the operating point (with the promise per protected class)
    val_raw: dict  # evaluation without offsets
    offsets: dict[int, float]
    within_budget: bool
    sparsity: float = 0.0
    seconds: dict = field(default_factory=dict)  # where the round's time went: score, plan, retrain, operating point

    def summary(self) -> dict:
        """The ticket without its model, as JSON (rounds/*.json and report.json's prune_round stages)."""
        return {"round": self.round, "params": self.params, "macs": self.macs, "val": self.val, "val_raw": self.val_raw,
                "offsets": {str(k): v for k, v in self.offsets.items()}, "within_budget": self.within_budget, "seconds": self.seconds}


@dataclass
class PruneResult:
    dense: dict
    tickets: list[Ticket] = field(default_factory=list)
    selected: Ticket | None = None
    budget_met: bool = False
    targets: dict[int, int] = field(default_factory=dict)  # validation FN of the dense model plus the budget
    final: Ticket | None = None  # the selected ticket after final_epochs more (selected, if it stayed within budget)
    finals: list[Ticket] = field(default_factory=list)  # every final fine-tuning in the order run (final is the last)
    guard: object | None = None  # the PromiseGuard every ticket's operating point met (or not)
    arithmetic: str = "fp32"  # of the retraining: "bf16 autocast" or "fp32" (toolchain.models.fast_paths.precision_choice)
    arithmetic_chosen_by: str = ""  # what auto measured to choose it, where it timed both (a GPU); "" otherwise


def removed_plan(dense_sizes: dict[str, int], survivors: Survivors) -> dict[str, list[int]]:
    """Channel plan (original indices to remove) that turns the dense model into the survivors'."""
    plan = {}
    for key, size in dense_sizes.items():
        keep = set(survivors.get(key, range(size)))
        gone = [i for i in range(size) if i not in keep]
        if gone:
            plan[key] = gone
    return plan


def relative_plan(current: Survivors, target: Survivors) -> dict[str, list[int]]:
    """Local indices (positions in ``current``) of channels that ``target`` no longer has."""
    plan = {}
    for key, present in current.items():
        keep = set(target.get(key, present))
        gone = [pos for pos, orig in enumerate(present) if orig not in keep]
        if gone:
            plan[key] = gone
    return plan


def select(result: PruneResult) -> PruneResult:
    """The smallest ticket within the budget (of equal sizes the latest: a round that met its goals early
    leaves later rounds of the same shape, trained longer); without one, the most accurate (and the gate
    will say so)."""
    within = [t for t in result.tickets if t.within_budget]
    result.budget_met = bool(within)
    result.selected = min(within, key=lambda t: (t.params, t.macs, -t.round)) if within else max(result.tickets, key=lambda t: t.val["accuracy"])
    return result


def promise_kept(promise: dict) -> bool:
    """Whether one protected class's promise (an entry of a ticket's val["promise"]) reaches its asked confidence."""
    return promise["confidence"] >= promise["confidence_target"]


def promise_text(t: Ticket) -> str:
    """The protected classes whose promise falls short, with their confidence (a class that keeps its promise is not
    named among the reasons)."""
    short = {k: v for k, v in t.val.get("promise", {}).items() if not promise_kept(v)}
    if not short:
        return "every protected class keeps its promise"
    return ", ".join(f"class {k} promise confidence {v['confidence']:.3f} of {v['confidence_target']:.12g}" for k, v in short.items())


def round_line(t: Ticket, dense_params: int) -> str:
    promise = t.val.get("promise", {})
    prot = ", ".join(f"class {p['class']}: FN {p['fn']} FP {p['fp']}"
                     + (f" confidence {promise[str(p['class'])]['confidence']:.3f}" if str(p["class"]) in promise else "")
                     for p in t.val["protected"])
    return (f"round {t.round}: {t.params:,} params ({t.params / dense_params:.1%}), val accuracy {t.val['accuracy']:.4f} "
            f"at the operating point ({prot}; added to the protected logit: {', '.join(f'{v:+.2f}' for v in t.offsets.values())})")


def shipped_size_goal(result, ticket, config: PruneConfig, kept_whole: dict[str, str]) -> dict:
    """Whether the shipped model reached --keep-params (and --keep-macs), and if not, why: never a silent 100%."""
    dense_params, dense_macs = result.dense["params"], result.dense["macs"]
    params, macs = ticket.params / dense_params, ticket.macs / max(dense_macs, 1)
    if config.granularity == "weight":  # the goal is the share of conv and linear weights left non-zero (the round's ticket)
        params = 1 - next((t.sparsity for t in result.tickets if t.round == ticket.round), 0.0)
    slack = 0.005  # weight tickets keep round(fraction x size) of each layer: a hair over the goal is the goal
    met = params <= config.keep_params + slack and (config.keep_macs >= 1 or macs <= config.keep_macs + slack)
    out = {"keep_params": config.keep_params, "param_fraction": params, "keep_macs": config.keep_macs, "mac_fraction": macs, "met": met}
    if met:
        return out
    last = result.tickets[-1] if result.tickets else None
    if not result.tickets or all(t.params == result.tickets[0].params for t in result.tickets) and result.tickets[0].params >= dense_params:
        why = "no channel group of this model can be pruned"  # first: whatever the rounds' budget did, nothing could go
    elif last is not None and not last.within_budget:
        ships = ("an earlier ticket ships" if ticket.round < last.round else
                 f"round {last.round}'s ticket is the run's model, outside the budget: no file of it is to ship")
        why = f"round {last.round} left {_budgets_left(last, result, config)}, so the rounds stopped and {ships}"
    else:
        why = "the channel groups cwtool can prune are used up"
    kept = f" (kept whole: {', '.join(kept_whole)})" if kept_whole else ""
    goal = f"--keep-params {config.keep_params:g}" + (f" and --keep-macs {config.keep_macs:g}" if config.keep_macs < 1 else "")
    share = "of its conv and linear weights non-zero" if config.granularity == "weight" else "of the parameters"
    model = "the shipped model" if result.budget_met else "the run's model (not to ship: the run failed)"
    out["statement"] = f"{model} keeps {params:.1%} {share} and {macs:.1%} of the MACs against {goal}: {why}{kept}"
    return out


def _budgets_left(ticket, result, config: PruneConfig) -> str:
    """Which budget a round outside it left, with its numbers: "the accuracy budget on validation (accuracy 0.8941 <
    0.9124)" ("the FN or accuracy budget" left a user to dig the log for the one)."""
    short = [f"class {k} confidence {v['confidence']:.3f} < {v['confidence_target']:g}"
             for k, v in (ticket.val.get("promise") or {}).items() if v["confidence"] < v["confidence_target"]]
    floor = result.dense["val"]["accuracy"] - config.max_accuracy_drop
    said = [f"the FN promise ({'; '.join(short)})"] if short else []
    if ticket.val["accuracy"] < floor - 1e-12:
        said.append(f"the accuracy budget (accuracy {ticket.val['accuracy']:.4f} < {floor:.4f})")
    return f"{' and '.join(said)} on validation" if said else "the budget on validation"


def _empty(why: dict) -> str | None:
    """The classes whose promise says nothing (``why``: class -> empty_promise's reason or None), in words; None where
    every one says something."""
    empty = [f"class {k}: {w}" for k, w in why.items() if w]
    if not empty:
        return None
    return (f"the promise says nothing about {'this class' if len(empty) == 1 else 'these classes'} ({'; '.join(empty)}): its "
            "probability holds whatever the shipped model does; give more validation and test samples of the class, a model "
            "that detects it, or a smaller --max-fn-increase")


def _few_samples(per_class: dict, empty: dict) -> str | None:
    """A kept promise resting on few validation samples of a class, in words; None where none does (an ``empty`` promise
    says so already)."""
    few = [f"class {k}: {v['n']}" for k, v in per_class.items() if v.get("n", SMALL_SPLIT) < SMALL_SPLIT and not empty[k]]
    if not few:
        return None
    return (f"with fewer than {SMALL_SPLIT} validation samples of a class ({', '.join(few)}), the stated probability can be "
            "optimistic: in simulations of a ticket that ranks the class unlike the dense model, promises of 0.95 held "
            "0.81-0.92 of the time on new data (docs/FN_PROMISE.md); more validation data makes it more reliable, not higher")


def _competing(per_class: dict, confusion, protected_part=None, where: str = "at the shipped point") -> str | None:
    """Protected classes that take validation samples from each other at the shipped point (or, ``where`` says, at the
    model's own decisions), in words; None where none do. Their guards then pull one boundary two ways, and the draws
    where both are met are the lucky ones."""
    keys = sorted(int(k) for k in per_class)
    if len(keys) < 2:
        return None
    if isinstance(protected_part, dict):  # above 100 classes an evaluation holds the protected classes' cells alone
        cell = lambda a, b: protected_part.get(str(a), {}).get(str(b), 0)  # noqa: E731
    elif isinstance(confusion, list) and max(keys) < len(confusion):
        cell = lambda a, b: confusion[a][b]  # noqa: E731
    else:
        return None
    pairs = [f"{cell(k, j)} of class {k}'s went to class {j} and {cell(j, k)} of class {j}'s to {k}"
             for i, k in enumerate(keys) for j in keys[i + 1:] if cell(k, j) or cell(j, k)]
    if not pairs:
        return None
    return (f"protected classes take validation samples from each other {where} ({'; '.join(pairs)}): each one's "
            "offset moves the other's misses, and the stated probabilities can be optimistic: in simulations of two such "
            "classes (100 validation samples each, 0.9 asked, about 0.94 stated) the shipped promises held with chance 0.76-0.91 "
            "per class and about 0.70 together on new data (docs/FN_PROMISE.md); more validation data makes them more reliable, "
            "and one protected class alone keeps its stated probability")


LOST_IN_RETRAINING = 0.10  # accuracy a first round's retraining may lose before its learning rate is suspected


def _first_round_loss(result) -> float | None:
    """How much validation accuracy round 1's own decisions lost from the dense model's, where it is over
    LOST_IN_RETRAINING (a folded standardization at --lr 0.002 fell from 0.95 to 0.65 at half the parameters, and the
    advice named every flag but --lr, the one that mended it); else None."""
    first = next(iter(getattr(result, "tickets", None) or []), None)
    raw = getattr(first, "val_raw", None) or {}
    dense_params = result.dense.get("params")
    if "accuracy" not in raw or not dense_params or first.params < dense_params / 2:
        return None  # a round 1 that pruned over half the model may lose that much to its size alone
    lost = result.dense["val"]["accuracy"] - raw["accuracy"]
    return lost if lost > LOST_IN_RETRAINING else None


def _lower_confidence(short: list[dict], asked: float) -> str | None:
    """"lower --confidence to 0.77": the most every class short of its promise reaches, as the warning before the run says
    it (the gate's "lower --confidence" named no number, with three classes to weigh); None where no confidence the flag
    takes (0.5 and up) would reach it."""
    reached = [v.get("reachable_confidence", v.get("confidence")) for v in short]
    if not reached or not all(isinstance(r, (int, float)) for r in reached):
        return "lower --confidence"
    to = confidence_to_ask(min(reached))
    if to is None:  # below the flag's range: no lower confidence helps
        return None
    return f"lower --confidence to {to:g}" if to < asked else "lower --confidence"


def _raise_budget(short: list[dict], config: PruneConfig, ceiling: bool) -> str:
    """"raise --max-fn-increase to 4": where each short class is at its split's ceiling, the budget that backs every one of
    them at the confidence asked (known from the counts alone); else the flag without a number."""
    if not ceiling:
        return "raise --max-fn-increase"
    needed = []
    for v in short:
        n, dense_fn = v.get("n"), v.get("dense_fn")
        if not (isinstance(n, int) and isinstance(dense_fn, int)):
            return "raise --max-fn-increase"
        budget = budget_backing(n, dense_fn, config.confidence, config.max_fn_increase, n)  # n: every sample missed, no promise
        if budget is None:
            return "raise --max-fn-increase"
        needed.append(budget)
    return f"raise --max-fn-increase to {max(needed)}" if needed else "raise --max-fn-increase"


def failed_budget(binds: str | None) -> str:
    """The budget a run that kept none failed, as "the run did not ..." ends."""
    return "stay within the accuracy budget on validation" if binds == "accuracy" else "keep the FN promise on validation"


def promise_section(result, ticket, config: PruneConfig) -> dict:
    """What compress promises about the shipped model, in numbers and in one plain sentence; where no ticket kept it,
    which budget stopped it (the FN promise's confidence, or validation accuracy at the promise's operating point) and
    the flags that would move that budget."""
    per_class = ticket.val.get("promise", {})
    met, accuracy_floor = result.budget_met, result.dense["val"]["accuracy"] - config.max_accuracy_drop
    words = []
    empty = {k: empty_promise(v.get("n", 0), v["dense_fn"], v["budget"], v.get("n_new")) for k, v in per_class.items()}
    for k, v in per_class.items():
        extra = f" + {v['budget']}" if v["budget"] else ""
        share = share_words(v["budget"], v.get("n_new"))  # +1 of 5: a fifth
        allowed = f"the {v['dense_fn'] + v['budget']} allowed (the dense model's {v['dense_fn']}{extra})" if v["budget"] else "the dense model's"
        vacuous = f" ({empty[k]}: it promises nothing about this class)" if empty[k] else ""
        price = v["fp"] - v["fp_plain"]
        cost = (f"for {price:+d} false positives against the unguarded point" if price >= 0 else
                f"with {-price} fewer false positives than the unguarded point")  # a budget spent buys FP back
        words.append(f"class {k}: FN <= the dense model's{extra} on new data of {v['n_new']} such samples{share} with probability "
                     f"{v['confidence']:.3f} (asked {v['confidence_target']:.12g}){vacuous}; on validation {v['margin_fn']} FN kept in "
                     f"reserve under {allowed}, {cost}")
    stuck = [k for k, v in per_class.items() if "reachable_confidence" in v and v["reachable_confidence"] is None]
    # each class has its own promise; together they hold at least this often (Bonferroni: no independence assumed)
    together = together_bound(v["confidence"] for v in per_class.values()) if len(per_class) > 1 else None
    binds = None if met else "accuracy" if all(map(promise_kept, per_class.values())) or stuck else "fn_promise"
    if met:
        statement = "the FN promise is backed on validation: " + "; ".join(words)  # a probability: one test draw may still miss
        if together is not None:
            statement += f" (each class's own promise; all {len(per_class)} together: {together_words(together)})"
    elif binds == "accuracy":  # a lower confidence would not help
        more = (["raise --max-accuracy-drop"] + (["--keep-params"] if config.keep_params < 1 else []) + ["--epochs"]
                + (["a gentler --rate a round (more rounds)"] if ticket.round == 1 and config.rate > 0.3 else []))
        lost = _first_round_loss(result)
        if lost is not None:  # the retraining itself broke the model, not the pruning's size
            more.append(f"a lower --lr (round 1 kept half the parameters or more, yet its retraining lost {100 * lost:.0f} points "
                        f"of validation accuracy from the dense model's: weights on "
                        f"scales far apart, such as a standardization folded into a first layer, retrain poorly at --lr "
                        f"{getattr(config, 'lr', 0):g}; docs/DATA.md)")
        there = ("the promise itself holds there" if not stuck else
                 f"no offset of {', '.join(f'class {k}' for k in stuck)} brings accuracy within it, whatever the confidence asked"
                 + (" (with the other classes' offsets where their promises put them)" if len(per_class) > len(stuck) else ""))
        statement = (f"no ticket stays within the accuracy budget on validation where it keeps the FN promise (the selected round "
                     f"{ticket.round}: accuracy {ticket.val['accuracy']:.4f} at that operating point, needs >= {max(0.0, accuracy_floor):.4f}; "
                     f"{there}: {'; '.join(words)}): {', '.join(more[:-1])} or {more[-1]}")
    else:
        reach = ", ".join(f"class {k} {v.get('reachable_confidence', v['confidence']):.3f}" for k, v in per_class.items())
        short = [v for v in per_class.values() if not promise_kept(v)]
        # agreeing on every validation sample of the class, where the dense model misses none, is the best any ticket
        # does on this split: no offset can catch what the dense model misses (c = 0). A larger split, on which the dense
        # model misses some, lets an offset buy confidence by catching them (docs/FN_PROMISE.md)
        # at the split's ceiling: missing none the dense model catches and catching every one it misses (c = its misses),
        # no offset or retraining does better; a class the dense model misses some of (scc: 4 of 14) is one too
        ceiling = bool(short) and all(v.get("b") == 0 and v.get("c") == v.get("dense_fn") for v in short)
        named = ", ".join(f"class {k}" for k, v in per_class.items() if not promise_kept(v))  # "the class" named none of 3
        more = [_lower_confidence(short, config.confidence)] + (
            [_raise_budget(short, config, ceiling)] if config.max_fn_increase < 1e6 else [])
        more = [m for m in more if m]
        if ceiling:
            none_missed = all(v.get("dense_fn") == 0 for v in short)
            more.append("give more validation data (where the dense model misses some, an offset can catch them)" if none_missed
                        else "give more validation data")
            which = named or "the class"
            caught = ("the dense model misses none" if none_missed else "it catches every one the dense model misses")
            why = (f"the selected round {ticket.round} misses no validation sample of {which} that the dense model catches, and "
                   f"{caught}: the best any ticket does on this split at --max-fn-increase "
                   f"{config.max_fn_increase:g}; reachable: {reach}; docs/FN_PROMISE.md")
        else:
            more += (["raise --keep-params"] if config.keep_params < 1 else []) + ["give more validation data"]
            stays = f" while validation accuracy stays >= {accuracy_floor:.4f}" if accuracy_floor > 0 else ""  # -0.0200 is no floor
            why = (f"the validation split is too small or the compression too strong; reachable by the selected round "
                   f"{ticket.round}{stays}: {reach}")
        either = f"{', '.join(more[:-1])} or {more[-1]}" if len(more) > 1 else more[0]
        statement = (f"no ticket keeps the FN promise with confidence {config.confidence:.12g} within the accuracy budget on validation "
                     f"({why}): {either}")
    raw = getattr(ticket, "val_raw", None) or {}
    # the offsets can move the exchange out of sight (bcc's -2.59 took scc's 4 misses to bcc back): the model's own decisions too
    competing = (_competing(per_class, ticket.val.get("confusion"), ticket.val.get("confusion_protected"))
                 or _competing(per_class, raw.get("confusion"), raw.get("confusion_protected"),
                               "at the model's own decisions, before the offsets moved them apart")) if met else None
    said = {"empty": _empty(empty), "few_samples": _few_samples(per_class, empty), "competing": competing} if met else {}
    return {"confidence": config.confidence, "max_fn_increase": config.max_fn_increase, "met_on_val": bool(met),
            **{key: words for key, words in said.items() if words},
            "round": ticket.round, "classes": per_class, "statement": statement, "binds": binds,
            **({"together_confidence": together} if together is not None else {})}
