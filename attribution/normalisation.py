"""A model's input normalisation ``x = (p − mean) / std`` of pixels ``p ∈ [0, 1]``, and its inverse to uint8.

The metrics that score images as pixels (SIC and AIC rebuild and compress uint8 images) take it from the
batch they score (``Need.NORMALISATION``), so the pixels they see are those the model was given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Normalisation"]


@dataclass(frozen=True)
class Normalisation:
    """Per-channel ``mean`` and ``std`` (``std > 0``) of ``x = (p − mean) / std``."""

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        for name in ("mean", "std"):
            values = getattr(self, name)
            if isinstance(values, str) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"normalisation {name} must be one number per channel; got {values!r}")
            if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
                raise ValueError(f"normalisation {name} must be finite numbers; got {values!r}")
            object.__setattr__(self, name, tuple(float(v) for v in values))
        if len(self.mean) != len(self.std):
            raise ValueError(f"normalisation mean and std must have one value per channel each; got {len(self.mean)} "
                             f"and {len(self.std)}")
        if min(self.std) <= 0:
            raise ValueError(f"normalisation std must be > 0 per channel; got {self.std}")

    @property
    def channels(self) -> int:
        return len(self.mean)

    @property
    def black(self) -> tuple[float, ...]:
        """The black image ``p = 0`` as the model takes it: ``−mean/std`` per channel."""
        return tuple(-m / s for m, s in zip(self.mean, self.std))

    def to_pixels(self, images: Tensor) -> np.ndarray:
        """Normalised ``(B, C, H, W)`` → ``(B, H, W, C)`` uint8, ``round(255 · clip(x·std + mean, 0, 1))``."""
        self._check(images)
        m = torch.tensor(self.mean, dtype=torch.float64).reshape(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=torch.float64).reshape(1, -1, 1, 1)
        pixels = ((images.detach().cpu().double() * s + m).clamp(0, 1) * 255).round()
        return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def from_pixels(self, pixels: np.ndarray, like: Tensor) -> Tensor:
        """``(N, H, W, C)`` uint8 → the model's ``(N, C, H, W)`` input, in ``like``'s dtype and device."""
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).to(like.device, like.dtype) / 255
        self._check(x)
        m = torch.tensor(self.mean, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
        s = torch.tensor(self.std, dtype=like.dtype, device=like.device).reshape(1, -1, 1, 1)
        return (x - m) / s

    def _check(self, images: Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != self.channels:
            raise ValueError(f"a normalisation of {self.channels} channels cannot take images "
                             f"{tuple(images.shape)}")
