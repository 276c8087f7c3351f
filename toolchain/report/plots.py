"""plots/: the trade a run made, as PNG (matplotlib, Agg; no torch).

- rounds.png: per protected class, its FN and FP against the parameters kept, round by round
  (validation, at each ticket's operating point), with the FN budget line and the dense model and the
  shipped ticket marked; and the accuracy with its budget.
- ledger.png: FN and FP of the protected classes for the dense and pruned torch models and every file
  (test), the budget marked.
- confusion.png: per protected class, where its test samples went and what was taken for it, dense
  model against the shipped one.

Counts get integer ticks; a series that is zero everywhere is not drawn as bars of nothing but named
in the title.
"""

from __future__ import annotations

from pathlib import Path

DENSE, SHIPPED, BUDGET, FP_COLOR, FN_COLOR = "#555555", "#2a7", "#c33", "#e8a33d", "#3b6fb6"
FAILED_TICKET = "the run's ticket (not to ship: the run failed)"  # a failed run's, in rounds.png's legend and caption
CAPTIONS = {  # what each plot shows, for report.html
    "rounds.png": "Pruning rounds (validation, at each ticket's operating point): FN and FP of each protected class "
                  "against the parameters kept, the FN budget, the dense model and the shipped ticket; accuracy with its budget.",
    "ledger.png": "Every model and file on the test split: FN and FP of each protected class, with the FN budget.",
    "confusion.png": "Where each protected class's test samples went (missed) and which classes were taken for it "
                     "(false alarms), dense model against the compressed one.",
}


def caption(name: str, report: dict) -> str:
    """What a plot shows, for report.html: a failed run's ticket is no shipped one (its legend says so too)."""
    from toolchain.report.deploy import run_failed

    text = CAPTIONS.get(name, name)
    return text.replace("the shipped ticket", FAILED_TICKET) if run_failed(report) else text


MAX_BARS = 12  # classes a confusion panel draws, the most counted first: a 1,000-class head's every class would be a blur

MAX_COLUMNS = 3  # panels a row: ten protected classes in one row made a figure 50 inches wide, unreadable scaled down


def _grid(plt, panels: int, width: float, height: float, most: int = MAX_COLUMNS):
    """A figure of ``panels`` axes, at most ``most`` a row, each ``width`` x ``height`` inches; the axes in order."""
    columns = min(panels, most)
    rows = -(-panels // columns)
    fig, grid = plt.subplots(rows, columns, figsize=(width * columns, height * rows), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[panels:]:
        ax.remove()
    return fig, axes[:panels]


def _save(fig, path: Path) -> Path:
    """Staged and moved into place, like every file cwtool writes: never written through an existing name's bytes."""
    import matplotlib.pyplot as plt

    from toolchain.io import cannot_write, staged_path

    fig.tight_layout()
    try:
        with staged_path(path) as tmp:
            try:
                fig.savefig(tmp, dpi=110, format="png")
            except OSError as exc:  # a full disk: said of the plot (the staged name meant nothing)
                raise cannot_write(path, exc) from exc
    finally:
        plt.close(fig)
    return path


def _integer_counts(ax, bottom: float = 0) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.yaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
    ax.set_ylim(bottom=bottom)


def _params_axis(ax, params: list[int]) -> None:
    """Log scale, the dense model on the left, a tick at each model's size (12.3k), no minor ticks."""
    ax.set_xscale("log")
    ticks = sorted(set(params))
    ax.set_xticks(ticks, [f"{p / 1000:.3g}k" if p >= 1000 else str(p) for p in ticks], fontsize=8)
    ax.minorticks_off()
    ax.set_xlim(max(ticks) * 1.25, min(ticks) / 1.25)
    ax.set_xlabel("parameters (log scale; rounds go right)")


NAME_CHARS = 24  # of a class name in a plot: a 40-character name ran three panel titles into each other


def _name(report: dict, k: int, most: int = NAME_CHARS) -> str:
    """A class as a plot names it, its name cut to ``most`` characters (the reports give it whole); its name comes from
    a file: matplotlib takes no lone surrogate (a folder name that is not UTF-8 ended compress in exit 3) and reads text
    between two $ as mathematics."""
    from toolchain.errors import one_line

    names = report.get("class_names") or []
    if not (k < len(names) and names[k] != str(k)):
        return f"class {k}"
    shown = one_line(names[k])
    shown = shown if len(shown) <= most else shown[: most - 1].rstrip() + "\u2026"
    return f"class {k} ({shown.replace('$', chr(92) + '$')})"


def _title(ax, text: str, inches: float) -> None:
    """A panel's title wrapped to the panel's width, ``inches`` (about 9 characters an inch at this size)."""
    import textwrap

    ax.set_title("\n".join(textwrap.fill(line, int(9 * inches)) for line in text.split("\n")), fontsize=10)


def _rounds(report: dict, folder: Path, plt) -> Path | None:
    from toolchain.report.deploy import run_failed

    rounds = [s for s in report["stages"] if s["stage"] == "prune_round"]
    if not rounds:
        return None
    base = report["baseline"]
    shipped = next((s["round"] for s in report["stages"] if s["stage"] == "shrunk"), None)
    ticket = FAILED_TICKET if run_failed(report) else "shipped ticket"
    budget = report["config"].get("max_fn_increase", 0)
    protected = report["protected"]
    # the legends go below the axes: inside, they covered the dense model's markers (the x axis runs from it)
    fig, axes = _grid(plt, len(protected) + 1, 4.6, 5.2)
    params = [s["params"] for s in rounds]
    for i, k in enumerate(protected):
        ax = axes[i]
        dense = base["val"]["protected"][i]
        fn = [s["val"]["protected"][i]["fn"] for s in rounds]
        fp = [s["val"]["protected"][i]["fp"] for s in rounds]
        # FP hollow and larger, FN on top: where both are 0 each stays in sight
        ax.plot(params, fp, "s--", color=FP_COLOR, ms=9, mfc="none", mew=1.5, label="FP (false alarms)", zorder=2)
        ax.plot(params, fn, "o-", color=FN_COLOR, label="FN (missed)", zorder=3)
        ax.plot([base["params"]], [dense["fn"]], "*", ms=14, color=DENSE, label="dense model FN")
        ax.plot([base["params"]], [dense["fp"]], "P", ms=10, color=DENSE, label="dense model FP")
        ax.axhline(dense["fn"] + budget, color=BUDGET, ls=":", label=f"FN budget (dense + {budget})")
        for r, p, f in zip((s["round"] for s in rounds), params, fn):
            ax.annotate(f"r{r}", (p, f), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
            if r == shipped:
                ax.plot([p], [f], "o", ms=14, mfc="none", mec=SHIPPED, mew=2, label=ticket)
        _integer_counts(ax, bottom=-0.4)  # markers at 0 stay whole
        ax.set_ylim(top=max(fn + fp + [dense["fn"] + budget, dense["fp"]]) * 1.15 + 1)
        _params_axis(ax, params + [base["params"]])
        ax.set(ylabel="validation count")
        _title(ax, f"{_name(report, k)}: FN and FP per round", 4.6)
        ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    ax = axes[-1]
    ax.plot(params, [s["val"]["accuracy"] for s in rounds], "o-", color=FN_COLOR, label="ticket")
    ax.plot([base["params"]], [base["val"]["accuracy"]], "*", ms=14, color=DENSE, label="dense model")
    ax.axhline(base["val"]["accuracy"] - report["config"]["max_accuracy_drop"], color=BUDGET, ls=":", label="accuracy budget")
    _params_axis(ax, params + [base["params"]])
    ax.set(ylabel="validation accuracy", title="accuracy per round")
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=2)
    return _save(fig, folder / "rounds.png")


def _bars(ax, labels: list[str], series: dict[str, tuple[list[int], str]]) -> list[str]:
    """Grouped bars of the series that are not zero everywhere (labelled with their values); returns
    the names of the all-zero series, for the title."""
    drawn = {name: v for name, v in series.items() if any(v[0])}
    width = 0.8 / max(1, len(drawn))
    for j, (name, (values, color)) in enumerate(drawn.items()):
        bars = ax.bar([i + (j - (len(drawn) - 1) / 2) * width for i in range(len(labels))], values, width, color=color, label=name)
        ax.bar_label(bars, fontsize=7)
    ax.set_xticks(range(len(labels)), labels, rotation=20, ha="right", fontsize=8)
    _integer_counts(ax)
    return [name for name in series if name not in drawn]


def _ledger(report: dict, folder: Path, plt) -> Path | None:
    if not report.get("artifacts"):
        return None
    shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
    models = [("dense torch", report["baseline"]["test"]), ("pruned torch", shrunk["test"])]
    models += [(f"{a['format']} {a['precision']}", a["evaluation"]) for a in report["artifacts"]]
    budget = report["config"].get("max_fn_increase", 0)
    protected = report["protected"]
    width = max(6.0, 1.1 * len(models))
    fig, axes = _grid(plt, len(protected), width, 4, most=2)  # three made a page-wide figure of 3-pt text
    for i, k in enumerate(protected):
        ax = axes[i]
        fn = [e["protected"][i]["fn"] for _, e in models]
        fp = [e["protected"][i]["fp"] for _, e in models]
        zero = _bars(ax, [name for name, _ in models], {"FN (missed)": (fn, FN_COLOR), "FP (false alarms)": (fp, FP_COLOR)})
        ax.axhline(fn[0] + budget, color=BUDGET, ls=":", label=f"FN budget (dense + {budget})")
        ax.set_ylim(top=max(fn + fp + [fn[0] + budget]) * 1.2 + 1)
        note = f"; {' and '.join(zero)}: 0 for every model" if zero else ""
        ax.set(ylabel="test count", xlabel="model or file")
        _title(ax, f"{_name(report, k)} on test{note}", width)
        ax.legend(fontsize=7)
    return _save(fig, folder / "ledger.png")


def _confusion(report: dict, folder: Path, plt) -> Path | None:
    from toolchain.metrics import misses_and_takings
    from toolchain.report.deploy import run_failed

    shrunk = next((s for s in report["stages"] if s["stage"] == "shrunk"), None)
    protected = report["protected"]
    before = {k: misses_and_takings(report["baseline"]["test"], k) for k in protected}
    after = {k: misses_and_takings((shrunk or {}).get("test"), k) for k in protected}
    if not all(before.values()) or not all(after.values()):
        return None
    compressed = "run's model (pruned.pt, not to ship)" if run_failed(report) else "compressed (pruned.pt)"
    fig, axes = plt.subplots(len(protected), 2, figsize=(10, 4.2 * len(protected)), squeeze=False)
    for i, k in enumerate(protected):
        # side 0: k's samples predicted as j (misses); side 1: class j's samples predicted as k (false alarms)
        for ax, (what, side) in zip(axes[i], (("missed: predicted as", 0), ("false alarms: true class", 1))):
            was, now = before[k][side], after[k][side]
            others = sorted(set(was) | set(now), key=lambda j: (-(was.get(j, 0) + now.get(j, 0)), j))
            most = f", the {MAX_BARS} most counted of {len(others):,} classes" if len(others) > MAX_BARS else ""
            others = sorted(others[:MAX_BARS])
            title = f"{_name(report, k)}, {what} (test{most})"
            _title(ax, title, 5)
            if not others:
                ax.text(0.5, 0.5, "none, before or after", ha="center", va="center", transform=ax.transAxes)
                ax.set_axis_off()
                continue
            counts = {"dense model": ([was.get(j, 0) for j in others], DENSE), compressed: ([now.get(j, 0) for j in others], SHIPPED)}
            zero = _bars(ax, [_name(report, j, most=14) for j in others], counts)
            if zero:  # on a line of its own: on one, the title ran past the figure's edge
                _title(ax, f"{title}\n{' and '.join(zero)}: none", 5)
            ax.set(ylabel="test samples")
            ax.set_ylim(top=max(max(v) for v, _ in counts.values()) * 1.4 + 1)  # room for the legend above the bars
            ax.legend(fontsize=7, loc="upper right")
    return _save(fig, folder / "confusion.png")


def plot_report(report: dict, folder: Path) -> list[Path]:
    """Write the plots a run has data for into ``folder``; returns their paths."""
    plt = pyplot()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        written = [_rounds(report, folder, plt), _ledger(report, folder, plt), _confusion(report, folder, plt)]
    finally:
        _drop_scratch_config()
    return [p for p in written if p is not None]


_scratch_config: list = []  # a config folder made for matplotlib where it had none it could write


def pyplot():
    """matplotlib.pyplot, drawing to files. Where HOME has no config or cache folder matplotlib can write (a container's
    user, a read-only home), matplotlib printed two WARNING lines and left a /tmp/matplotlib-* folder behind (its atexit
    cleanup never runs: cwtool ends with os._exit): it gets a folder of cwtool's, removed once the plots are drawn."""
    import logging
    import os
    import sys
    import tempfile

    if "matplotlib" not in sys.modules and not os.environ.get("MPLCONFIGDIR") and not _home_folders_writable():
        _scratch_config.append(tempfile.mkdtemp(prefix="cwtool-matplotlib-"))
        os.environ["MPLCONFIGDIR"] = _scratch_config[-1]
    logging.getLogger("matplotlib").setLevel(logging.ERROR)  # its warnings are not the user's to act on
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _home_folders_writable() -> bool:
    """Whether matplotlib's config and cache folders (XDG's, else under ~) exist or can be made, and can be written."""
    import os

    for base in (os.environ.get("XDG_CONFIG_HOME") or "~/.config", os.environ.get("XDG_CACHE_HOME") or "~/.cache"):
        folder = Path(base).expanduser() / "matplotlib"
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            return False
        if not os.access(folder, os.W_OK):
            return False
    return True


def _drop_scratch_config() -> None:
    import os
    import shutil

    while _scratch_config:
        folder = _scratch_config.pop()
        shutil.rmtree(folder, ignore_errors=True)
        if os.environ.get("MPLCONFIGDIR") == folder:  # not handed on to a process started later
            del os.environ["MPLCONFIGDIR"]
