"""Whether a file answers a row as a device does, one at a time: run alone, its first rows must get the logits they got
in the batches `cwtool verify` judged (a forward normalized with each batch's statistics passed at 256 rows a call and
missed every protected sample one row at a time); a dynamically quantized ONNX file differs by design, and is said so.
numpy only (plus the runtime verify opened)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from toolchain.errors import UserError

__all__ = ["ALONE_ROWS", "answers_alone_otherwise", "scaled_per_call"]


ALONE_ROWS = 8  # rows a file is also run on one at a time


def answers_alone_otherwise(runner, x, logits) -> tuple[str, str] | None:
    """(what, its likely cause) where the file's answers judged here are not a device's (None: they are): run one row at
    a time, as a device runs a classifier, the first rows get other logits than in the batches judged (a forward
    normalized with each batch's statistics passed the gate at 256 rows a call, and missed every protected sample one row
    at a time)."""
    n = min(ALONE_ROWS, len(logits))
    if n < 2:
        return None
    rows = [np.asarray(runner.predict(x[i : i + 1]), dtype=np.float64) for i in range(n)]
    together = np.asarray(logits[:n], dtype=np.float64)
    odd = next((r.shape for r in rows if r.shape != (1, *together.shape[1:])), None)
    if odd is not None:
        return f"answers one row with outputs of shape {odd}, where {n} rows get {together.shape}", "a squeeze of the batch?"
    alone = np.concatenate(rows)
    scale = max(1.0, float(np.abs(together).max()))
    differs = float(np.abs(alone - together).max())
    if not differs <= 0.02 * scale:
        decisions = int(np.sum(alone.argmax(1) != together.argmax(1)))
        return (f"answers rows otherwise one at a time than in the batches judged here (logits differ by up to {differs:.3g}, "
                f"{decisions} of the first {n} decisions): a device that runs it a row at a time gets other answers",
                "its forward uses statistics of the batch?")
    return None


_PER_CALL_SCALE = ("DynamicQuantizeLinear", "DynamicQuantizeMatMul", "DynamicQuantizeLSTM")


def scaled_per_call(path) -> bool:
    """Whether ``path`` is a dynamically quantized ONNX file (onnxruntime's quantize_dynamic): each call scales its
    activations from its own rows, so a row's logits move with the rows beside it by design (5-13% of their scale on a
    reviewer's tabular file)."""
    from toolchain.runtimes import describe_graph

    if Path(path).suffix.lower() != ".onnx":
        return False
    try:
        ops = describe_graph(path).get("ops") or []
    except UserError:  # unread here: judged as any other file
        return False
    return any(op in _PER_CALL_SCALE for op in ops)
