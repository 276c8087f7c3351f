"""Do compress and Torch-Pruning keep the same channels? For a model, each prunable layer's channels ranked by
compress's magnitude score (toolchain.prune.importance) and by Torch-Pruning's MagnitudeImportance with the same
norm; printed: how many of the top KEEP share each ranking keeps in common, and the rank correlation.

    python reproduce/importance_overlap.py MODEL.pt --input-shape 1,28,28 [--norm 2] [--keep 0.31]

Reads no data: magnitudes only. Used to tell whether a gap between compress's one-shot runs and the anchor's
comes from which channels are removed or from the retraining after it.
"""

from __future__ import annotations

import argparse

import torch


def overlaps(model: torch.nn.Module, example: torch.Tensor, norm: int, keep: float) -> list[dict]:
    import torch_pruning as tp

    from toolchain.prune import importance
    from toolchain.prune.graph import ChannelGraph

    graph = ChannelGraph(model, example)
    ours = importance.magnitude_scores(graph, norm=norm)
    names = {m: n for n, m in model.named_modules()}
    theirs = tp.importance.MagnitudeImportance(p=norm)
    rows = []
    for group in graph.dg.get_all_groups():
        name = names[group[0].dep.target.module]
        if name not in ours:
            continue
        a, b = theirs(group).double(), ours[name]
        k = max(1, int(keep * len(a)))
        shared = set(torch.topk(a, k).indices.tolist()) & set(torch.topk(b, k).indices.tolist())
        ranks = torch.stack([a.argsort().argsort(), b.argsort().argsort()]).double()
        rows.append({"layer": name, "channels": len(a), "kept": k, "kept_by_both": len(shared),
                     "rank_correlation": round(torch.corrcoef(ranks)[0, 1].item(), 4)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model")
    parser.add_argument("--input-shape", required=True, help="C,H,W")
    parser.add_argument("--norm", type=int, default=2)
    parser.add_argument("--keep", type=float, default=0.31, help="share of each layer's channels kept")
    args = parser.parse_args()
    from toolchain.models.loading import load_model

    model = load_model(args.model).module.eval()
    example = torch.zeros(1, *(int(v) for v in args.input_shape.split(",")))
    print("| layer | channels | kept | kept by both | rank correlation |\n|---|---:|---:|---:|---:|")
    for row in overlaps(model, example, args.norm, args.keep):
        print(f"| {row['layer']} | {row['channels']} | {row['kept']} | {row['kept_by_both']} | {row['rank_correlation']} |")


if __name__ == "__main__":
    main()
