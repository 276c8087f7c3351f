"""The memory a training step needs, estimated before any step runs: a model's activations grow with the image's area,
and on a CPU an allocation the machine cannot back is not an error but the kernel's out-of-memory kill (no message, no
log line, nothing cleaned up)."""

from __future__ import annotations

import torch
from torch import nn

from toolchain.errors import UserError
from toolchain.limits import available_memory, format_bytes

STEP_PER_OUTPUT = 1.4  # a training step's growth in memory per byte of its layers' outputs, at the least measured


def activation_bytes(model: nn.Module, sample_shape: tuple[int, ...], rows: int, element_bytes: int = 4) -> int | None:
    """Bytes of the outputs of ``model``'s leaf layers that backward would keep for ``rows`` samples of ``sample_shape`` (those
    that depend on a trainable weight: a frozen backbone's and a checkpointed block's inner outputs are not kept), at least:
    functional ops add to it. Measured on a copy of the model on the meta device, which allocates nothing and leaves the
    model as it was; None where the forward cannot run there (numpy or a data-dependent branch inside it)."""
    import copy

    seen: list[torch.Tensor] = []  # held: an in-place layer's output is its input, counted once; a view (Flatten) not at all

    def count(_module, _inputs, output):
        for t in output if isinstance(output, (tuple, list)) else (output,):
            if (isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad and t._base is None
                    and not any(t is s for s in seen)):
                seen.append(t)

    try:
        # the weights are not copied: the memo hands deepcopy their meta stand-ins
        memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad) for p in model.parameters()}
        memo.update({id(b): torch.empty_like(b, device="meta") for b in model.buffers()})
        memo.update({id(v): torch.empty_like(v, device="meta") for m in model.modules() for v in vars(m).values()
                     if isinstance(v, torch.Tensor) and id(v) not in memo})  # a plain tensor attribute (a lookup table)
        twin = copy.deepcopy(model, memo)
        for m in twin.modules():
            m._forward_hooks.clear()  # a user's hooks (capturing outputs) stay on the model; pre-hooks compute weights
            if not any(True for _ in m.children()):
                m.register_forward_hook(count)  # a TorchScript module takes no hook: no estimate
        with torch.enable_grad():
            twin.eval()(torch.empty((rows, *sample_shape), device="meta"))
    except Exception:  # noqa: BLE001 - a model the meta device cannot follow: no estimate, training finds out
        return None
    return sum(t.numel() for t in seen) * element_bytes


def check_training_fits(model: nn.Module, x, batch_size: int, device: torch.device, low_precision: bool = False) -> None:
    """Refuse, before the first step or probe, a batch of ``x``'s samples whose input and layer outputs alone exceed the
    memory available: on a CPU it would be killed without a word. A GPU's own allocator raises an error training reports.
    The estimate is meant to be low: a training step of each built-in architecture grew memory by 1.4 to 4 times its layers'
    outputs (their gradients, the inputs functional ops keep), and a batch is held at least twice (as read, and as the
    model takes it: a copy in channels-last order, in bf16, augmented)."""
    rows = min(int(batch_size), len(x))
    sample_shape = tuple(int(s) for s in x.shape[1:])
    if device.type != "cpu" or rows < 1:
        return
    avail = available_memory()
    if avail is None:
        return
    acts = activation_bytes(model, sample_shape, rows, 2 if low_precision else 4)
    if acts is None:
        return
    batch = 2 * 4 * rows * int(torch.Size(sample_shape).numel())
    need = batch + int(STEP_PER_OUTPUT * acts)
    if need > avail[0]:
        shape = "x".join(str(int(s)) for s in sample_shape)
        raise UserError(f"a training step on {rows:,} samples of {shape} needs about {format_bytes(need)} of memory or more (the "
                        f"batch twice, {format_bytes(batch)}; the layers' outputs and their gradients, "
                        f"{format_bytes(need - batch)}), more than the {format_bytes(avail[0])} "
                        f"available ({avail[1]}): give a smaller --batch-size, or smaller images (--image-size, --resize)")
