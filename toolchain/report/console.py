"""Terminal rendering of an evaluation dict (the shape `toolchain.metrics.evaluate_logits` returns).

rich only, no torch: `cwtool verify` prints this on the device.
Undefined values (None in the evaluation) print as an en dash, never as 0.
"""

from __future__ import annotations

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from toolchain.errors import printable
from toolchain.report.consoles import out_console

__all__ = ["render_evaluation", "print_evaluation"]

PROTECTED_STYLE = "bold yellow"
DASH = "\u2013"


def _pct(x, digits: int = 1) -> str:
    return DASH if x is None else f"{100.0 * x:.{digits}f}%"


def _auc(x) -> str:
    return DASH if x is None else f"{x:.4f}"


def _name(class_names, c: int) -> Text:
    """A class name from the data, as literal text (a name like "[/x]" is not a style tag)."""
    if class_names is not None and 0 <= c < len(class_names):
        return Text(printable(class_names[c]))
    return Text("")


PER_CLASS_ROWS = 30  # above, the protected classes and the most missed: 1,000 rows buried the two that mattered


def _shown_classes(evaluation: dict, protected: set[int]) -> list[int]:
    """Every class, or above PER_CLASS_ROWS classes the protected ones and those with the most false negatives."""
    fn = evaluation["fn_per_class"]
    if len(fn) <= PER_CLASS_ROWS:
        return list(range(len(fn)))
    most = sorted((c for c in range(len(fn)) if c not in protected and fn[c]), key=lambda c: (-fn[c], c))
    return sorted({*(c for c in protected if c < len(fn)), *most[: max(0, PER_CLASS_ROWS - len(protected))]})


def _per_class_table(evaluation: dict, class_names, protected: set[int]) -> Table:
    # Seven narrow columns fit in 80 columns even with a ~20-character class name.
    shown = _shown_classes(evaluation, protected)
    total = len(evaluation["fn_per_class"])
    title = "Per class" if len(shown) == total else (
        f"Per class: {len(shown)} of {total:,}, the protected ones and the most missed (--json holds every class)")
    table = Table(title=title, title_justify="left")
    table.add_column("class", justify="right", no_wrap=True)
    table.add_column("name", overflow="ellipsis", max_width=20, no_wrap=True)
    table.add_column("support", justify="right")
    table.add_column("FN", justify="right")
    table.add_column("FNR", justify="right")
    table.add_column("recall", justify="right")
    table.add_column("precision", justify="right")
    support = evaluation.get("support_per_class") or [
        sum(row) for row in evaluation.get("confusion", [])
    ]
    recall = evaluation.get("recall_per_class") or [None] * len(support)
    precision = evaluation.get("precision_per_class") or [None] * len(support)
    for c in shown:
        fn = evaluation["fn_per_class"][c]
        n_c = support[c] if c < len(support) else None
        fnr = (fn / n_c) if n_c else None
        is_prot = c in protected
        # Marked with '*' as well as colour, so it survives plain-text logs and CI output.
        table.add_row(
            f"{c}*" if is_prot else str(c),
            _name(class_names, c),
            DASH if n_c is None else str(n_c),
            str(fn),
            _pct(fnr),
            _pct(recall[c] if c < len(recall) else None),
            _pct(precision[c] if c < len(precision) else None),
            style=PROTECTED_STYLE if is_prot else None,
        )
    return table


def _protected_table(evaluation: dict, class_names) -> Table:
    table = Table(title="Protected classes", title_justify="left")
    table.add_column("class", justify="right", no_wrap=True)
    table.add_column("name", overflow="ellipsis", max_width=16, no_wrap=True)
    table.add_column("FN", justify="right")
    table.add_column("FNR [95% CI]", justify="right", no_wrap=True)
    table.add_column("FPR", justify="right")
    table.add_column("AUC", justify="right")
    for p in evaluation.get("protected", []):
        c = int(p["class"])
        ci = p.get("fnr_ci95")
        ci_txt = f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci and p.get("fnr") is not None else ""
        table.add_row(
            str(c),
            _name(class_names, c),
            str(p["fn"]),
            _pct(p.get("fnr")) + ci_txt,
            _pct(p.get("fpr"), 2),
            _auc(p.get("auc")),
            style=PROTECTED_STYLE,
        )
    return table


def render_evaluation(
    evaluation: dict, class_names: list[str] | None = None, title: str = ""
) -> RenderableType:
    """A renderable: title line, accuracy, per-class table (protected rows marked '*'), protected summary."""
    protected = {int(p["class"]) for p in evaluation.get("protected", [])}
    head = Text()
    if title:
        head.append(title, style="bold")
        head.append("\n")
    head.append(f"accuracy {_pct(evaluation.get('accuracy'), 2)}")
    head.append(f" on {evaluation.get('n', '?')} samples")
    if protected:
        head.append("   (* = protected class)", style="dim")
    parts: list[RenderableType] = [head, _per_class_table(evaluation, class_names, protected)]
    if protected:
        parts.append(_protected_table(evaluation, class_names))
    return Group(*parts)


def print_evaluation(
    evaluation: dict,
    class_names: list[str] | None = None,
    title: str = "",
    console: Console | None = None,
) -> None:
    """Print `render_evaluation(...)` to `console` (a new stdout Console by default)."""
    (console or out_console()).print(render_evaluation(evaluation, class_names, title))
