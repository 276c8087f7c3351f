"""A seeded training loop and batched inference; CUDA when present, else CPU; in the arithmetic and memory order
`toolchain.models.fast_paths` chooses (``precision``).

Inputs are a float32 array held in memory or rows read on demand (`toolchain.data.samples`): the same seeded
batches either way, read through `toolchain.models.batches` (DataLoader workers for rows read on demand).
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
from torch import nn

from toolchain.config import MAX_EPOCHS, MAX_LR, TRAIN_PRECISIONS, device_problem
from toolchain.models.fast_paths import autocast, autocast_dtype, in_channels_last, probe_rows, runs_channels_last, fp32_hint, training_dtype
from toolchain.models.memory import check_training_fits
from toolchain.models.modes import evaluating
from toolchain.data.dataset import Augment
from toolchain.data.samples import batch_rows, is_lazy
from toolchain.errors import Interrupted, UserError, describe
from toolchain.models.augment import Augmenter
from toolchain.report.pace import RowPace
from toolchain.models.batches import BatchReader, auto_workers, give_back_freed_memory

# loss_fn(logits, targets, batch_indices, inputs) -> scalar; batch_indices index the training arrays so
# a loss can look up per-sample data (cached teacher logits) without a custom loader; inputs are the batch as
# the model saw it (augmented, when the config augments).
LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass
class TrainConfig:
    epochs: int = 10
    lr: float = 2e-3
    batch_size: int = 128
    weight_decay: float = 0.0
    seed: int = 0
    augment: Augment | None = None  # training augmentation (toolchain.models.augment), drawn from the seed
    workers: int | None = None  # DataLoader processes for inputs read on demand; None: batches.auto_workers
    precision: str = "auto"  # auto | fp32 | bf16: the forward's arithmetic (autocast_dtype)
    diverged_hint: str = "lower --lr"  # what a run whose weights turn NaN should change (compress adds its loss weights)

    def __post_init__(self):
        for name in ("lr", "weight_decay"):
            if not math.isfinite(getattr(self, name)):
                raise ValueError(f"{name} must be a finite number")
        for ok, message in ((self.epochs >= 0, "epochs must be >= 0"), (self.batch_size >= 1, "batch_size must be >= 1"),
                            (0 < self.lr <= MAX_LR, f"lr must be > 0 and at most {MAX_LR:g} (Adam moves each weight by about lr a step)"),
                            (self.epochs <= MAX_EPOCHS, f"epochs must be at most {MAX_EPOCHS:,}"),
                            (self.weight_decay >= 0, "weight_decay must be >= 0")):
            if not ok:
                raise ValueError(message)
        if self.precision not in TRAIN_PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(TRAIN_PRECISIONS)}")


def _has_unused_parameters(model: nn.Module, x, device: torch.device) -> bool:
    """Whether some trainable parameter gets no gradient from the forward (an auxiliary head kept from training):
    DistributedDataParallel must then be told, or its second step fails. One forward on two rows, eval mode
    (no batch-norm statistics move), nothing stored; the graph it records is walked, not run backward (an eval-mode
    backward of a pruned residual net in channels-last order crashed the process in oneDNN: SIGSEGV, a double free)."""
    params = [p for p in model.parameters() if p.requires_grad]
    with evaluating(model), torch.enable_grad():
        out = model(probe_rows(x, device)).float().sum()
        reached = _weights_reached(out)
    return any(id(p) not in reached for p in params)


def _weights_reached(output: torch.Tensor) -> set[int]:
    """The ids of the leaf tensors whose gradient ``output``'s recorded graph would accumulate."""
    reached, seen, stack = set(), set(), [output.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        leaf = getattr(node, "variable", None)  # an AccumulateGrad node: the gradient's destination
        if leaf is not None:
            reached.add(id(leaf))
        stack.extend(next_node for next_node, _ in node.next_functions)
    return reached


def pick_device(requested: str = "auto") -> torch.device:
    from toolchain import distributed

    own = distributed.device_of_this_process()
    if own is not None and requested in ("auto", "cuda"):  # torchrun with NCCL: this process's GPU (distributed.start)
        return own
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    problem = device_problem(requested)
    if problem is not None:
        raise UserError(problem)
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"--device {requested}: no CUDA device here; use --device auto or cpu")
    try:
        return torch.device(requested)
    except RuntimeError as exc:
        raise UserError(f"--device '{requested}' is not a device torch knows: use auto, cpu or cuda[:N]") from exc


def seed_everything(seed: int) -> None:
    """Python's, numpy's and torch's generators from ``seed`` (any --seed up to 2**31 - 1 times the 1,000 a round adds;
    numpy's legacy generator takes 32 bits, and it is the same seed below that)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def train(
    model: nn.Module,
    x,
    y: np.ndarray,
    config: TrainConfig,
    loss_fn: LossFn | None = None,
    after_step: Callable[[nn.Module], None] | None = None,
    device: torch.device | None = None,
    progress=None,
    description: str = "train",
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    epoch_losses: list | None = None,
    say_pace: Callable[[str], None] | None = None,
) -> nn.Module:
    """Train in place with Adam. ``after_step`` runs after every optimizer step (e.g. re-apply
    pruning masks). ``progress`` is an optional ``rich.progress.Progress`` for an epoch bar.
    ``epoch_losses``: each epoch's mean training loss (over every process's share of the batches) is appended to it,
    before ``on_epoch_end``. ``say_pace``: where a long epoch says how far it is (its batches, every PACE_SECONDS; an
    epoch of 20,000 images of 224 px on a CPU takes an hour); the progress bar moves within an epoch too.
    Under torchrun (toolchain.distributed) the model is wrapped in DistributedDataParallel and each
    process takes its share of every batch of the same seeded order. ``x`` is an array or rows read on
    demand (read ahead by ``config.workers`` DataLoader processes); ``config.augment`` augments each batch."""
    from toolchain import distributed

    device = device or pick_device()
    model.to(device).train()
    group = distributed.current()
    check_training_fits(model, x, math.ceil(config.batch_size / (1 if group is None else group.world)), device,
                        autocast_dtype(config.precision, device) is not None)
    channels_last = runs_channels_last(model, x, device)  # before DistributedDataParallel sees the weights
    low_precision = training_dtype(model, x, config.precision, device, config.batch_size)
    net = model
    if group is not None:
        from torch.nn.parallel import DistributedDataParallel

        gpu = device.index if device.index is not None else torch.cuda.current_device() if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=[gpu] if gpu is not None else None,
                                      find_unused_parameters=_has_unused_parameters(model, x, device))
    share = 1 if group is None else group.world
    check_batch_shares(model, config.batch_size, share)
    generator = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    lazy = is_lazy(x)
    xs = x if lazy else torch.as_tensor(x, dtype=torch.float32)
    ys = torch.as_tensor(y, dtype=torch.long)
    if device.type == "cuda" and not lazy:  # small data sets fit; avoids a host->device copy per batch
        xs, ys = xs.to(device), ys.to(device)
    augment = Augmenter(config.augment, x.shape[1:], config.seed) if config.augment is not None else None
    if not any(p.requires_grad for p in model.parameters()):
        raise UserError("the model has no parameter to train (it has none, or every one has requires_grad=False): "
                        "cwtool trains and retrains it")
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = max(1, int(np.ceil(len(xs) / config.batch_size)))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=config.lr, total_steps=max(1, config.epochs * steps_per_epoch)
    )
    loss_fn = loss_fn or (lambda logits, t, idx, inputs: nn.functional.cross_entropy(logits, t))
    task = progress.add_task(description, total=config.epochs) if progress is not None else None
    workers = config.workers if config.workers is not None else auto_workers(x, steps_per_epoch, share)
    reader = BatchReader(x, workers, pin_memory=device.type == "cuda") if lazy else None
    labels = int(ys.max()) + 1 if len(ys) else 0
    try:
        for epoch in range(1, config.epochs + 1):
            loss_sum, steps = torch.zeros((), device=device), 0  # summed on the device: one sync an epoch, not a step
            order = torch.randperm(len(xs), generator=generator)
            plan = []  # (this process's rows, augmentation of them) of every step, in order
            for start in range(0, len(xs), config.batch_size):
                idx = order[start : start + config.batch_size]
                if len(idx) < 2 * share and _has_batchnorm(model):
                    continue  # BatchNorm cannot train on a single sample (every process decides alike)
                draws = augment.draw(len(idx)) if augment is not None else None  # for the global batch: alike everywhere
                if group is not None:
                    idx = idx[group.rank :: group.world]  # this process's share of the global batch
                    draws = None if draws is None else [d[group.rank :: group.world] for d in draws]
                plan.append((idx, draws))
            inputs = reader.read([idx.numpy() for idx, _ in plan]) if lazy else (xs[idx] for idx, _ in plan)
            batches = RowPace(f"{description}, epoch {epoch}/{config.epochs}", len(plan), unit="batches", say=say_pace)
            for step, ((idx, draws), xb) in enumerate(zip(plan, inputs), start=1):
                xb, yb = xb.to(device, non_blocking=True), ys[idx].to(device, non_blocking=True)
                if draws is not None:
                    xb = augment.apply(xb, draws)
                if channels_last:
                    xb = xb.contiguous(memory_format=torch.channels_last)
                with autocast(low_precision, device):
                    try:
                        logits = net(xb)
                    except (KeyboardInterrupt, Interrupted):
                        raise
                    except BaseException as exc:  # sys.exit or a BaseException of its own in a user's forward is its failure too
                        failed = _forward_failed(exc, model, epoch, low_precision)
                        if failed is exc:
                            raise
                        raise failed from exc
                _check_training_output(logits, len(yb), labels)
                loss = loss_fn(logits.float(), yb, idx, xb)
                if epoch_losses is not None:
                    loss_sum, steps = loss_sum + loss.detach(), steps + 1
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                if after_step is not None:
                    after_step(model)
                if lazy:  # image-sized batches: their freed blocks go back to the OS at once
                    give_back_freed_memory()
                if say_pace is not None:
                    batches(step)
                if task is not None:
                    progress.update(task, completed=epoch - 1 + step / len(plan))
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise UserError(f"training diverged in epoch {epoch}: the weights became NaN or infinite; {config.diverged_hint} "
                                f"(the peak --lr was {config.lr:g}){fp32_hint(low_precision)}")
            if group is not None:
                distributed.same_buffers(model)  # before anything reads the model: every process decides alike
            if epoch_losses is not None:  # NaN: no step ran (BatchNorm skips one-row batches), not a loss of 0
                loss_sum = distributed.mean_over_processes(loss_sum)  # every process plans as many steps
                epoch_losses.append(float(loss_sum) / steps if steps else float("nan"))
            if on_epoch_end is not None:
                on_epoch_end(epoch, model)
            if task is not None:
                progress.update(task, completed=epoch)
    finally:
        if reader is not None:
            reader.close()
        if channels_last:
            model.to(memory_format=torch.contiguous_format)  # what export, shrinking and saving expect
        model.zero_grad(set_to_none=True)  # the last step's gradients: as large as the weights, kept with every round's model
    if task is not None:
        progress.remove_task(task)
    return model.eval()


_LIBRARY_MODELS = ("toolchain", "torch", "torchvision", "pytorchcv", "timm")


def _check_training_output(logits, rows: int, labels: int) -> None:
    """A training batch's output is the logits the loss needs: a forward that returns something else in training mode
    (its eval-mode probes passed) is the model's fault, said in one line, not a crash in the loss. Shapes only: no sync."""
    if not isinstance(logits, torch.Tensor):
        raise UserError(f"the model's forward returned a {type(logits).__name__} in training mode, not a tensor of logits")
    if logits.dim() != 2 or logits.shape[0] != rows or logits.shape[1] < labels or not logits.is_floating_point():
        raise UserError(f"the model's forward returned shape {tuple(logits.shape)} ({logits.dtype}) in training mode for a batch of "
                        f"{rows} rows; expected ({rows}, classes) floating-point logits, with at least {labels} classes")
    if not logits.requires_grad:
        raise UserError("the model's forward returned logits detached from its parameters in training mode (a .detach(), "
                        ".data or torch.no_grad in it): nothing could train them")


def _forward_failed(exc: BaseException, model: nn.Module, epoch: int, low_precision) -> BaseException:
    """What a forward that raised while training becomes: a user's own architecture failing in training mode (its
    eval-mode probe passed) is bad input, exit 2, with the bf16 way out where autocast was on; a lost torchrun peer
    and a fault in cwtool's or a library's model stay what they are."""
    from toolchain import distributed

    users = any(type(m).__module__.split(".")[0] not in _LIBRARY_MODELS for m in model.modules())  # a factory may return nn.Sequential
    if distributed.peer_lost(exc) or not users:
        return exc
    arithmetic = low_precision is not None and isinstance(exc, Exception)  # sys.exit is no rounding error
    hint = "; it ran under bf16 autocast: --train-precision fp32 trains in fp32" if arithmetic else ""
    return UserError(f"the model's forward failed while training, in epoch {epoch} ({describe(exc)}){hint}")


def check_batch_shares(model: nn.Module, batch_size: int, processes: int) -> None:
    """A BatchNorm model cannot train on a batch that leaves a process fewer than 2 rows: ``train`` skips such batches, and
    a --batch-size below 2 per process skipped them all (no step, said nowhere)."""
    if batch_size < 2 * processes and _has_batchnorm(model):
        each = f" leaves some of the {processes} torchrun processes fewer than 2 rows of a batch" if processes > 1 else " is one row"
        raise UserError(f"--batch-size {batch_size}{each}, and BatchNorm cannot train on one row: give --batch-size "
                        f"{2 * processes} or more" + (", or fewer processes" if processes > 1 else ""))


def _has_batchnorm(model: nn.Module) -> bool:
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


# Rows a prediction batch: a CPU keeps a small batch's activations in its caches (fmnist-cnn on validation: 3.7 s
# at 128 rows, 6.6 s at 1,024, the same logits to the bit); an accelerator wants them many.
PREDICT_ROWS = {"cpu": 128, "cuda": 1024, "mps": 1024}


@torch.no_grad()
def predict_logits(model: nn.Module, x, batch_size: int | None = None, device: torch.device | None = None,
                   workers: int | None = None, precision: str = "fp32") -> np.ndarray:
    """Logits of ``model`` on ``x`` as float32 numpy, in eval mode, batched: at most ``batch_size`` rows (default
    PREDICT_ROWS for the device) and BATCH_BYTES of input a batch (toolchain.data.samples), rows read on demand read
    ahead by ``workers``. Conv nets
    run in channels-last order (as in training: half the time of a 28x28 CNN's forward on a CPU), in fp32 unless
    ``precision`` says otherwise (a distillation target may be bf16; what decides an operating point may not)."""
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    model.eval()
    step = batch_rows(x, batch_size or PREDICT_ROWS.get(device.type, PREDICT_ROWS["cpu"]))
    plan = [np.arange(start, min(start + step, len(x))) for start in range(0, len(x), step)]
    out = []
    pace = RowPace("the torch model", len(x))
    already = in_channels_last(model)  # called from inside training (the Lagrange rule): leave its order alone
    channels_last = already or (len(plan) > 1 and runs_channels_last(model, x, device))  # one batch: not worth the probe
    order = torch.channels_last if channels_last else torch.contiguous_format
    low_precision = training_dtype(model, x, precision, device)
    try:
        with autocast(low_precision, device):
            if not is_lazy(x):
                for index in plan:
                    xb = torch.as_tensor(x[index[0] : index[-1] + 1], dtype=torch.float32, device=device)
                    out.append(model(xb.contiguous(memory_format=order)).float().cpu())
                    pace(int(index[-1]) + 1)
            else:
                from toolchain import distributed

                group = distributed.current()
                if workers is None:
                    workers = auto_workers(x, len(plan), 1 if group is None else group.world)
                with BatchReader(x, workers) as reader:
                    for index, xb in zip(plan, reader.read(plan)):
                        out.append(model(xb.to(device).contiguous(memory_format=order)).float().cpu())
                        give_back_freed_memory()
                        pace(int(index[-1]) + 1)
    finally:
        if channels_last and not already:
            model.to(memory_format=torch.contiguous_format)
    if not out:
        return np.zeros((0, 0), dtype=np.float32)
    return torch.cat(out).numpy()
