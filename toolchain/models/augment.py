"""Training augmentation on model inputs: a random resized crop and a horizontal flip, drawn per sample.

Applied by the training loop to each batch of the train split (never in evaluation, calibration, scoring
or the gate). The draws come from a generator seeded by the training seed and are made for the global
batch in the order of the batches, so they do not depend on DataLoader workers or, under torchrun, on
the number of processes (each takes the draws of its share).
"""

from __future__ import annotations

import math

import torch
from torch.nn import functional as F

from toolchain.data.dataset import Augment
from toolchain.errors import UserError

__all__ = ["Augmenter"]

_SEED_OFFSET = 0x5EED  # the augmentation's generator is its own: the batch order stays the plain run's


class Augmenter:
    def __init__(self, spec: Augment, sample_shape: tuple[int, ...], seed: int):
        if len(sample_shape) != 3:
            raise UserError(f"--augment needs image samples (C, H, W); these have shape {tuple(sample_shape)}: drop --augment")
        self.spec = spec
        self.height, self.width = int(sample_shape[1]), int(sample_shape[2])
        self.generator = torch.Generator().manual_seed(int(seed) + _SEED_OFFSET)

    def draw(self, n: int) -> list[torch.Tensor]:
        """[top, left, height, width, flip] of ``n`` samples (int64 tensors of length n)."""
        g, H, W = self.generator, self.height, self.width
        top = torch.zeros(n, dtype=torch.long)
        left = torch.zeros(n, dtype=torch.long)
        h = torch.full((n,), H, dtype=torch.long)
        w = torch.full((n,), W, dtype=torch.long)
        if self.spec.crop_scale is not None:
            lo, hi = self.spec.crop_scale
            log_lo, log_hi = math.log(self.spec.crop_ratio[0]), math.log(self.spec.crop_ratio[1])
            for i in range(n):  # torchvision's RandomResizedCrop.get_params: ten tries, then the whole image
                for _ in range(10):
                    u = torch.rand(2, generator=g, dtype=torch.float64)
                    area = H * W * (lo + (hi - lo) * float(u[0]))
                    ratio = math.exp(log_lo + (log_hi - log_lo) * float(u[1]))
                    cw, ch = int(round(math.sqrt(area * ratio))), int(round(math.sqrt(area / ratio)))
                    if 0 < cw <= W and 0 < ch <= H:
                        pos = torch.rand(2, generator=g, dtype=torch.float64)
                        top[i], left[i] = int(float(pos[0]) * (H - ch + 1)), int(float(pos[1]) * (W - cw + 1))
                        h[i], w[i] = ch, cw
                        break
        flip = (torch.rand(n, generator=g) < 0.5).long() if self.spec.flip else torch.zeros(n, dtype=torch.long)
        return [top, left, h, w, flip]

    def apply(self, x: torch.Tensor, draws: list[torch.Tensor]) -> torch.Tensor:
        """The batch ``x`` (N, C, H, W) augmented by ``draws`` (a new tensor)."""
        top, left, h, w, flip = (d.tolist() for d in draws)
        out = torch.empty_like(x)
        for i in range(len(x)):
            crop = x[i : i + 1, :, top[i] : top[i] + h[i], left[i] : left[i] + w[i]]
            if (h[i], w[i]) != (self.height, self.width):
                crop = F.interpolate(crop, size=(self.height, self.width), mode="bilinear", align_corners=False)
            out[i] = crop[0].flip(-1) if flip[i] else crop[0]
        return out
