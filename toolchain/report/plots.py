"""plots/: the size/FN trade of the pruning rounds and the per-artifact ledger, as PNG (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_report(report: dict, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    written = []
    rounds = [s for s in report["stages"] if s["stage"] == "prune_round"]
    dense_params = report["baseline"]["params"]
    if rounds:
        fig, (ax_acc, ax_fn) = plt.subplots(1, 2, figsize=(10, 4))
        x = [100 * s["params"] / dense_params for s in rounds]
        ax_acc.plot(x, [s["val"]["accuracy"] for s in rounds], "o-", label="ticket (at operating point)")
        ax_acc.axhline(report["baseline"]["val"]["accuracy"], color="grey", ls="--", label="dense")
        floor = report["baseline"]["val"]["accuracy"] - report["config"]["max_accuracy_drop"]
        ax_acc.axhline(floor, color="red", ls=":", label="accuracy budget")
        ax_acc.set(xlabel="parameters kept (% of dense)", ylabel="validation accuracy", title="accuracy per round")
        for k_index, k in enumerate(report["protected"]):
            fn = [s["val"]["protected"][k_index]["fn"] for s in rounds]
            fp = [s["val"]["protected"][k_index]["fp"] for s in rounds]
            ax_fn.plot(x, fn, "o-", label=f"class {k} FN")
            ax_fn.plot(x, fp, "s--", label=f"class {k} FP")
            ax_fn.axhline(report["baseline"]["val"]["protected"][k_index]["fn"], color="grey", ls=":")
        ax_fn.set(xlabel="parameters kept (% of dense)", ylabel="validation count", title="protected classes per round")
        for ax in (ax_acc, ax_fn):
            ax.invert_xaxis()
            ax.legend(fontsize=8)
        written.append(_save(fig, folder / "rounds.png"))
    if report.get("artifacts"):
        names = ["dense torch", "pruned torch"] + [f"{a['format']} {a['precision']}" for a in report["artifacts"]]
        shrunk = next(s for s in report["stages"] if s["stage"] == "shrunk")
        evals = [report["baseline"]["test"], shrunk["test"]] + [a["evaluation"] for a in report["artifacts"]]
        fig, ax = plt.subplots(figsize=(8, 3.8))
        width = 0.8 / max(1, len(report["protected"]))
        highest = 0
        for k_index, k in enumerate(report["protected"]):
            values = [e["protected"][k_index]["fn"] for e in evals]
            bars = ax.bar([i + k_index * width for i in range(len(names))], values, width, label=f"class {k} FN (test)")
            ax.bar_label(bars, fontsize=8)  # a zero must read as 0, not as a missing bar
            highest = max(highest, *values)
        ax.set_ylim(0, highest * 1.15 + 1)
        ax.set_xticks([i + width * (len(report["protected"]) - 1) / 2 for i in range(len(names))], names, rotation=20, ha="right")
        ax.set(ylabel="false negatives (test)", title="protected FN of every model and file")
        ax.legend(fontsize=8)
        written.append(_save(fig, folder / "ledger.png"))
    return written
