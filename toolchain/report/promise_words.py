"""The FN promise in words, for report.md: each protected class's probability, the margin it keeps on validation and its
price in false positives, what it covers and does not, a shipped offset that lowers a class's sensitivity, and each int8
file's own counts beside the torch model's."""

from __future__ import annotations

from toolchain.promise import SMALL_SPLIT, share_words, together_bound, together_words

__all__ = ["promise_lines", "lowered_lines", "scope_lines", "int8_promise_words", "margin_words", "offset_words", "OFFSETS_IN_FILES",
           "class_words"]


def margin_words(margin: int, allowed: int) -> str:
    """What is kept in reserve for new data, as counts a reader can add up ("2 fewer than the 2 allowed (the dense model
    misses 0 + 2)" read as a puzzle to two new users)."""
    if margin == 0:
        return f"exactly the {allowed} allowed: none is kept in reserve for new data"
    if margin > 0:
        return (f"where {allowed} {'is' if allowed == 1 else 'are'} allowed: {margin} {'is' if margin == 1 else 'are'} kept in "
                "reserve for new data")
    return f"{-margin} more than the {allowed} allowed"


def promise_lines(promise: dict | None) -> list[str]:
    """The FN promise in plain words: its confidence, the margin it keeps on validation, its price in FP."""
    if not promise:
        return []
    lines = ["", "## The FN promise", ""]
    model = "the shipped model" if promise["met_on_val"] else "the run's model (not to ship: the promise is not met)"
    for k, v in promise["classes"].items():
        budget = f" + {v['budget']}" if v["budget"] else ""
        price = v["fp"] - v["fp_plain"]
        more = "is 1 more false positive" if price == -1 else f"are {-price} more false positives"
        cost = (f"That margin costs {price:+d} false positives" if price >= 0 else
                f"At the unguarded point there {more} than here")  # a budget spent buys FP back
        lines.append(
            f"- class {k}: on new data with {v['n_new']} samples of the class, {model} misses at most the dense model's "
            f"number{budget}{share_words(v.get('budget'), v.get('n_new'))} with probability **{v['confidence']:.3f}** (asked: {v['confidence_target']:.12g}; predicted from the validation counts below, "
            f"docs/FN_PROMISE.md){_few_words(v, bool(promise.get('few_samples')))}. On validation it misses "
            f"{v['fn']} of {v['n']}, {margin_words(v['margin_fn'], v['dense_fn'] + v['budget'])} (allowed: the dense model's "
            f"{v['dense_fn']}{budget}); of the samples the dense model catches, {v['b']} {'is' if v['b'] == 1 else 'are'} "
            f"missed, and of those it misses, {v['c']} {'is' if v['c'] == 1 else 'are'} caught. {cost} on "
            f"validation ({v['fp']} here, {v['fp_plain']} at the unguarded point, {_unguarded(v['dense_fn'] + v['budget'])})."
            f"{_edge_words(v)}{offset_words(v, len(promise['classes']) > 1, promise['met_on_val'])}")
    if promise.get("together_confidence") is not None:
        lines.append(f"- all {len(promise['classes'])} classes together: {together_words(promise['together_confidence'], bold=True)}.")
    if promise.get("empty"):
        lines.append(f"- **promises nothing**: {promise['empty']}.")
    if promise.get("few_samples"):
        lines.append(f"- **few samples**: {promise['few_samples']}.")
    if promise.get("competing"):
        lines.append(f"- **classes that compete**: {promise['competing']}.")
    if not promise["met_on_val"]:
        lines.append(f"- **not met**: {promise['statement']}")
    if any(abs(v.get("offset", 0.0)) >= 1e-6 for v in promise["classes"].values()):
        lines.append(f"- **on the device**: {OFFSETS_IN_FILES}")
    return lines


def lowered_lines(promise: dict | None) -> list[str]:
    """A shipped offset that misses protected samples the model's own decisions catch, for fewer false alarms, said at the
    top: a sign-off reviewer found it mid-paragraph (class 8: 0 missed -> 2, FP 3 -> 0), the very trade a user of a
    protected class may refuse. It spends room the promise leaves (the dense model's misses plus the budget)."""
    if not promise or not promise.get("met_on_val"):
        return []
    lines = []
    for k, v in (promise.get("classes") or {}).items():
        fn, own, fp, own_fp, offset = (v.get(key) for key in ("fn", "fn_no_offset", "fp", "fp_no_offset", "offset"))
        # its own offset lowered it, for fewer false alarms: another class's offset can move its misses too ("for -1 fewer
        # false positives", --keep-sensitivity advised to a run that had it), said in its paragraph
        if not (all(isinstance(n, int) for n in (fn, own, fp, own_fp)) and isinstance(offset, (int, float))
                and offset < 0 and fn > own and fp < own_fp):
            continue
        fewer = f", for {own_fp - fp} fewer false positives ({fp} against {own_fp})"
        lines += ["", f"**Sensitivity lowered**: with the shipped offset{'s' if len(promise['classes']) > 1 else ''}, class {k} "
                      f"misses {fn} of {v.get('n')} on validation where the "
                      f"model's own decisions miss {own}{fewer}, within the promise (the dense model misses {v.get('dense_fn')}"
                      f"{' + ' + str(v['budget']) if v.get('budget') else ''}); `--keep-sensitivity` keeps at least the model's own decisions."]
    return lines


def scope_lines(report: dict) -> list[str]:
    """What the promise covers and what it does not, and each class's absolute misses on test with their interval: a
    sign-off reviewer found "same distribution", the torch model, and the FNR in none of the human reports."""
    promise = report.get("promise")
    if not promise or not promise.get("classes"):
        return []
    int8 = any(st.get("stage") == "quantized" for st in report.get("stages") or [])
    lines = ["- **what it covers**: new data drawn as the validation rows were (the same distribution), judged by the torch "
             f"model's decisions{' (each int8 file' + chr(39) + 's own counts: its section below)' if int8 else ''}; the probability is predicted from the "
             "validation counts (a Bayesian predictive probability, docs/FN_PROMISE.md), not a guarantee for every draw. It "
             "promises nothing of the absolute miss rate, of false alarms, of the other classes, or of data from another "
             "source or of another make-up."]
    gate = report.get("gate") if isinstance(report.get("gate"), dict) else {}
    checks = [c for c in gate.get("checks") or [] if isinstance(c, dict)] if isinstance(gate.get("checks"), list) else []
    for c in checks:
        interval = c.get("fnr_ci95")
        if not (isinstance(c.get("class"), int) and isinstance(c.get("fn"), int) and isinstance(c.get("support"), int) and c["support"]
                and isinstance(interval, list)
                and len(interval) == 2 and all(isinstance(x, (int, float)) for x in interval)):
            continue
        dense = f"; the dense model {c['baseline_fn']} of {c['support']}" if isinstance(c.get("baseline_fn"), int) else ""
        lines.append(f"- **class {c['class']} on test**: the pruned torch model misses {c['fn']} of {c['support']} (miss rate "
                     f"{c['fn'] / c['support']:.3f}, 95% interval {interval[0]:.3f} to {interval[1]:.3f}{_misses_went(report, c['class'])}){dense}.")
    return lines


def class_words(k, names) -> str:
    """'3 (cat)', or '3' where the data names the class by its number: the name shown as written in Markdown (md_text)."""
    from toolchain.errors import one_line
    from toolchain.report.html import md_text

    named = isinstance(k, int) and names and 0 <= k < len(names) and str(names[k]) != str(k)
    return f"{k} ({md_text(one_line(names[k]))})" if named else str(k)


def _misses_went(report: dict, k: int) -> str:
    """"; answered as class 5 (shirt) 4, class 2 1": where the pruned model's test misses of class ``k`` went, from its
    confusion matrix (confusion.png alone showed it: no text for a screen reader, nor for a grep)."""
    from toolchain.errors import listed
    from toolchain.metrics import misses_and_takings

    shrunk = next((s for s in report.get("stages") or [] if isinstance(s, dict) and s.get("stage") == "shrunk"), {})
    found = misses_and_takings(shrunk.get("test"), k)
    went = sorted(((n, j) for j, n in (found[0] if found else {}).items()), key=lambda t: (-t[0], t[1]))
    if not went:
        return ""
    names = report.get("class_names") if isinstance(report.get("class_names"), list) else []
    return "; answered as " + listed((f"class {class_words(j, names)} {n:,}" for n, j in went), 4)


OFFSETS_IN_FILES = ("the offsets above are in every file already, in its classifier's bias (an int8 file's own offset too, "
                    "where the report gives one): a device decides by the argmax of a file's outputs and adds nothing to them")


def _few_words(v: dict, said_below: bool = True) -> str:
    """The few-samples caveat inside the sentence that states the probability: a bold 0.998 from 28 samples sat a line
    away from its caveat (a reader quoting the sentence quoted it without)."""
    n = v.get("n")
    if not isinstance(n, int) or n >= SMALL_SPLIT:
        return ""
    return f", from only {n} validation samples of the class: it can be optimistic{' (below)' if said_below else ''}"  # a failed run has no such bullet


def _edge_words(v: dict) -> str:
    """Why the probability reads other counts than the b and c said: the hardest positive caught sits at the threshold."""
    b, c = v.get("b_judged", v["b"]), v.get("c_judged", v["c"])
    if (b, c) == (v["b"], v["c"]):
        return ""
    return (f" The probability counts the hardest sample of the class it catches, at the threshold where new samples fall "
            f"either side, as missed: it reads {b} missed and {c} caught (docs/FN_PROMISE.md).")


def _unguarded(allowed: int) -> str:
    """The unguarded point in words: the offset that spends the whole FN budget on validation ("which may miss all 0
    allowed" did not parse)."""
    if allowed == 0:
        return "the point that misses no more than the dense model on validation, with nothing kept in reserve for new data"
    return f"the point that may miss all {allowed} allowed on validation, with nothing kept in reserve for new data"


def offset_words(v: dict, several: bool = False, shipped: bool = True) -> str:
    """What the shipped offset does to the class: a negative one lowers its sensitivity, for fewer false alarms. A run
    that failed ships nothing: its model's offset ("the shipped offset" read as a file to deploy)."""
    if "offset" not in v or abs(v["offset"]) < 1e-6:
        return ""
    own = "shipped" if shipped else "model's"
    if v.get("fn") == v["fn_no_offset"] and v.get("fp") == v["fp_no_offset"]:  # it moved the threshold within a gap
        return (f" The {own} offset {v['offset']:+.3f} on the class's logit changes no decision on validation: the model's "
                f"own decisions (no offset) also miss {v['fn_no_offset']} with {v['fp_no_offset']} false positives there.")
    # by what the decisions did, not by the offset's sign: other protected classes' offsets move this class's rows too (a
    # negative offset beside a larger one of another class's "lowered" a sensitivity that had risen from 1 miss to 0)
    fn = v.get("fn", v["fn_no_offset"])
    way = "raise" if fn < v["fn_no_offset"] else "lower" if fn > v["fn_no_offset"] else "keep"
    keep = (" (`--keep-sensitivity` keeps at least the model's own decisions, for more false positives)"
            if fn > v["fn_no_offset"] else "")
    which = (f"the {own} offsets (this class's {v['offset']:+.3f} on its logit, and the other protected classes' on theirs)"
             if several else f"the {own} offset {v['offset']:+.3f} on the class's logit")
    verb = way if several else f"{way}s"
    return (f" {which[0].upper()}{which[1:]} {verb} its sensitivity: the model's own decisions (no offset) miss "
            f"{v['fn_no_offset']} with {v['fp_no_offset']} false positives on validation, {'the shipped ones' if shipped else 'those with the offset'} {fn} with "
            f"{v.get('fp', v['fp_no_offset'])}{keep}.")


def int8_promise_words(stage: dict, report: dict) -> str:
    """An int8 file's own validation counts and promise, beside the torch model's: a file to deploy missed 3 where the
    torch model missed 2, its probability 0.986 where report.md said 0.998, and only report.json held it (a sign-off
    reviewer's finding). Empty where the stage records none."""
    own = stage.get("val_promise")
    if not isinstance(own, dict) or not own:
        return ""
    torch_side = (report.get("promise") or {}).get("classes") or {}
    parts = []
    for k, v in own.items():
        if not isinstance(v, dict) or not isinstance(v.get("confidence"), (int, float)) or not isinstance(v.get("fn"), int):
            return ""
        theirs = (torch_side.get(k) or {}).get("confidence")
        beside = (f", the torch model's {theirs:.3f}" if isinstance(theirs, (int, float)) and f"{theirs:.3f}" != f"{v['confidence']:.3f}"
                  else "")
        n = (torch_side.get(k) or {}).get("n")
        parts.append(f"class {k} misses {v['fn']}{f' of {n}' if isinstance(n, int) else ''} (probability {v['confidence']:.3f}{beside})")
    together = f"; {together_words(together_bound(v['confidence'] for v in own.values()))}" if len(own) > 1 else ""
    accuracy = f", accuracy {stage['val_accuracy']:.4f}" if isinstance(stage.get("val_accuracy"), (int, float)) else ""
    return f". Its own on validation: {', '.join(parts)}{accuracy}{together}"
