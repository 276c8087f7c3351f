"""The class-dependent loss of Entezari & Saukh (2019), made real, plus optional distillation.

L = CE weighted by gamma on protected classes
    + rank_weight * mean over (protected, other) pairs of max(0, 1 - (s_pos - s_neg))^2
    + distill_weight * T^2 * KL(teacher || student), samples of protected classes weighted by gamma
    + agree_weight * mean over the protected class's samples of (s_student - s_teacher)^2

s is the protected class's log-odds, logit_k - logsumexp(other logits): monotone in its softmax
probability, so the rank term is a differentiable surrogate of the one-vs-rest AUC cwtool reports. The agreement term
pulls the student's log-odds to the dense model's on the protected samples: the guarded operating point's
margin grows with how many of them the two models decide differently (docs/FN_PROMISE.md).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from toolchain.models.fast_paths import autocast, runs_channels_last


def protected_log_odds(logits: torch.Tensor, k: int) -> torch.Tensor:
    others = torch.cat([logits[:, :k], logits[:, k + 1 :]], dim=1)
    return logits[:, k] - torch.logsumexp(others, dim=1)


def squared_hinge_rank_loss(logits: torch.Tensor, targets: torch.Tensor, k: int, margin: float = 1.0) -> torch.Tensor:
    """Mean over (positive, negative) pairs in the batch; 0 when the batch lacks either side."""
    score = protected_log_odds(logits, k)
    pos, neg = score[targets == k], score[targets != k]
    if pos.numel() == 0 or neg.numel() == 0:
        return logits.new_zeros(())
    gaps = margin - (pos[:, None] - neg[None, :])
    return F.relu(gaps).pow(2).mean()


class LiveTeacher(nn.Module):
    """The dense model as the distillation target of augmented batches (their logits cannot be cached): a frozen
    copy run on each batch in the retraining's arithmetic and memory order, as the cached logits are computed. In
    fp32 on contiguous weights the teacher's forward took most of an augmented step."""

    def __init__(self, dense: nn.Module, x, dtype: torch.dtype | None, device: torch.device):
        super().__init__()
        self.model = copy.deepcopy(dense).to(device).eval()  # the dense model keeps its own memory order
        self.model.requires_grad_(False)
        self.dtype, self.device = dtype, device
        self.channels_last = runs_channels_last(self.model, x, device)

    def train(self, mode: bool = True):
        return super().train(False)  # a target: its batch norm always uses the dense model's statistics

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.no_grad(), autocast(self.dtype, self.device):
            return self.model(inputs).float()


@dataclass
class ClassDependentLoss:
    num_classes: int
    protected: list[int]
    gamma: float = 1.0
    rank_weight: float = 0.0
    teacher_logits: torch.Tensor | None = None  # indexed by training-row number
    teacher_model: torch.nn.Module | None = None  # or computed live on the batch (augmented inputs cannot be cached)
    distill_weight: float = 0.0
    temperature: float = 4.0
    distill_uniform: bool = False  # distillation over samples alike, not weighted like the CE
    agree_weight: float = 0.0

    def __post_init__(self):
        weights = torch.ones(self.num_classes)
        weights[self.protected] = self.gamma
        self.class_weights = weights

    def set_weight(self, k: int, weight: float) -> None:
        """One protected class's CE (and distillation) weight: the Lagrange rule moves it between epochs."""
        self.class_weights[k] = float(weight)

    def _teacher_logits(self, idx: torch.Tensor, inputs: torch.Tensor | None) -> torch.Tensor | None:
        if self.teacher_logits is not None:
            return self.teacher_logits[idx.to(self.teacher_logits.device)]
        if self.teacher_model is not None and inputs is not None:
            with torch.no_grad():
                return self.teacher_model(inputs).float()
        return None

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, idx: torch.Tensor, inputs: torch.Tensor | None = None) -> torch.Tensor:
        weights = self.class_weights.to(logits.device)
        loss = F.cross_entropy(logits, targets, weight=weights)
        if self.rank_weight:
            rank = sum(squared_hinge_rank_loss(logits, targets, k) for k in self.protected) / len(self.protected)
            loss = loss + self.rank_weight * rank
        teacher = self._teacher_logits(idx, inputs) if self.distill_weight or self.agree_weight else None
        if teacher is not None:
            teacher = teacher.to(logits.device)
        if teacher is not None and self.agree_weight:
            gaps = [protected_log_odds(logits, k)[targets == k] - protected_log_odds(teacher, k)[targets == k] for k in self.protected]
            gaps = torch.cat(gaps)
            if gaps.numel():
                loss = loss + self.agree_weight * gaps.pow(2).mean()
        if teacher is not None and self.distill_weight:
            t = self.temperature
            per_sample = F.kl_div(
                F.log_softmax(logits / t, dim=1), F.log_softmax(teacher / t, dim=1), log_target=True, reduction="none"
            ).sum(1)
            sample_weights = torch.ones_like(per_sample) if self.distill_uniform else weights[targets]
            loss = loss + self.distill_weight * t * t * (per_sample * sample_weights).sum() / sample_weights.sum()
        return loss
