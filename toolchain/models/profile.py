"""Model size and cost: parameter count, multiply-accumulates, fp32 bytes."""

from __future__ import annotations

from typing import Any

from torch import nn


def count_params(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters counted once)."""
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, example_input: Any) -> int:
    """Multiply-accumulates per sample of a forward pass on ``example_input``, in eval mode: those of every
    convolution and matrix product torch runs (torch's own FLOP counter, halved), functional ones and attention's
    included, and of recurrent layers (whose fused kernels that counter does not see): what a datasheet's MAC/s and the
    count of an ONNX file's graph (toolchain.runtimes) mean. Bias adds, normalization, activations and pooling are not
    counted (Torch-Pruning's op counter adds them: 7% more for a MobileNetV2 at 224 px, which cwtool had reported as its
    MACs); a forward the FLOP counter cannot follow (one that takes gradients itself) is counted by that op counter."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from toolchain.models.modes import evaluating

    batch = int(example_input.shape[0]) if isinstance(example_input, torch.Tensor) and example_input.dim() else 1
    names = {m: n for n, m in model.named_modules()}
    recurrent: dict[str, int] = {}  # the counter's name of a recurrent layer -> its multiply-accumulates

    def steps_of(m, inputs, output):  # every step of every layer and direction multiplies its input and hidden weights
        x = inputs[0] if inputs else None
        if isinstance(x, torch.nn.utils.rnn.PackedSequence):
            rows = int(x.data.shape[0])
        elif isinstance(x, torch.Tensor):
            rows = int(x.shape[0] * x.shape[1]) if x.dim() == 3 else int(x.shape[0])
        else:
            return
        key = ".".join(filter(None, (type(model).__name__, names[m])))
        recurrent[key] = recurrent.get(key, 0) + rows * sum(p.numel() for n, p in m.named_parameters() if n.startswith("weight_"))

    hooks = [m.register_forward_hook(steps_of) for m in model.modules() if isinstance(m, torch.nn.RNNBase)]
    try:
        with evaluating(model), torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(example_input)
    except Exception:  # noqa: BLE001 - the counter's module tracking fails on a forward that runs autograd itself
        import torch_pruning as tp

        with torch.no_grad():
            return int(tp.utils.count_ops_and_params(model, example_input)[0])
    finally:
        for h in hooks:
            h.remove()
    seen = counter.get_flop_counts()  # a GRU, or an LSTM with projections, runs matrix products the counter sees
    unseen = sum(macs for key, macs in recurrent.items() if not sum(seen.get(key, {}).values()))
    return int(round((counter.get_total_flops() / 2 + unseen) / max(1, batch)))


def model_bytes_fp32(model: nn.Module) -> int:
    """Bytes of the model's parameters and floating-point buffers (e.g. BN running stats) stored as fp32."""
    n = count_params(model)
    n += sum(b.numel() for b in model.buffers() if b.is_floating_point())
    return 4 * n
