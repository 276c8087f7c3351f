"""What a graph description holds, and the arithmetic every format's reader shares.

A format's ``describe_graph(path)`` (runtimes/onnx_graph.py, runtimes/litert_graph.py) returns

    ops                    operator names in graph order, or None when nothing here can read them
                           (then ``ops_note`` says why)
    macs                   multiply-accumulates per sample of the Conv/Gemm/MatMul/FC layers
    weight_bytes           bytes of the constant tensors the operators read
    activation_peak_bytes  peak of live activation bytes at batch 1 (see activation_peak)

numpy only; targets.py turns these into memory and latency estimates for a device profile.
"""

from __future__ import annotations

from typing import Hashable, Iterable, Sequence

# Operations one row may ask for: multiply-accumulates, and an operation for each element an operator makes or reads.
# A ResNet-50 at 224 px asks for about 4e9; a 5.7 KB file chaining 4096x4096 products of its input ran 230 s a call.
MAX_WORK = 2 * 10**11


def static_nbytes(shape: Iterable, itemsize: int) -> int:
    """Bytes of one tensor at batch 1: dynamic or unknown dims (the batch) count as 1."""
    n = 1
    for d in shape:
        n *= d if isinstance(d, int) and d > 0 else 1
    return n * itemsize


def activation_peak(order: Sequence[tuple[list, list]], sizes: dict, inputs: Iterable[Hashable], outputs: Iterable[Hashable]) -> int:
    """Peak of live activation bytes running ops in order (each op: (input tensors, output tensors)).
    A tensor lives from its producer (or the start, for graph inputs) until its last consumer (or the
    end, for graph outputs); ``sizes`` holds the activations' bytes (weights are not in it)."""
    outputs = list(outputs)
    last_use: dict = {}
    for i, (ins, _) in enumerate(order):
        for t in ins:
            if t in sizes:
                last_use[t] = i
    for t in outputs:
        last_use[t] = len(order)
    live = {t: sizes.get(t, 0) for t in inputs}
    peak = sum(live.values())
    for i, (ins, outs) in enumerate(order):
        for t in outs:
            if t in sizes:
                live[t] = sizes[t]
        peak = max(peak, sum(live.values()))
        for t in list(live):
            if last_use.get(t, -1) <= i and t not in outputs:
                del live[t]
    return int(peak)


def check_work(work: int, path, what: str = "a row") -> None:
    """Refuse a file whose operators ask for more than MAX_WORK operations for ``what``: a call that runs for minutes
    (and verify calls a file once a row) is no small device's classifier; time is bounded by nothing else."""
    from toolchain.errors import UserError

    if work > MAX_WORK:
        raise UserError(f"{path} asks for about {work:.1e} operations for {what} (multiply-accumulates, and one for each "
                        f"element an operator makes or reads; cwtool runs at most {MAX_WORK:.0e}, 50 times a ResNet-50 at "
                        "224 px): no small device's classifier, or a corrupt file; re-export it")
