"""The explicit post-processing steps after a method's raw coarse map: ReLU, upsample, normalise.

They are kept separate so that a metric or a comparison can apply them in whichever order its
definition needs (pytorch-grad-cam, for instance, normalises before it upsamples).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from attribution.numerics import safe_divide

__all__ = ["check_finite", "mask_images", "minmax_normalize", "relu", "scored_map", "upsample"]


def check_finite(maps: Tensor) -> Tensor:
    """Raise if any map holds NaN or ±inf, naming the samples; return ``maps`` unchanged."""
    bad = ~torch.isfinite(maps.reshape(maps.shape[0], -1)).all(dim=1)
    if bad.any():
        raise ValueError(f"saliency maps of samples {bad.nonzero().flatten().tolist()} contain NaN or infinite values")
    return maps


def relu(maps: Tensor) -> Tensor:
    """Keep the positive evidence, as every CAM's final ``ReLU`` (e.g. Grad-CAM eq. 2)."""
    return maps.clamp(min=0)


def upsample(maps: Tensor, size: tuple[int, int], mode: str = "bilinear") -> Tensor:
    """``(B, U, V)`` or ``(B, K, U, V)`` maps → the same at ``size`` (half-pixel centres)."""
    squeeze = maps.ndim == 3
    x = maps[:, None] if squeeze else maps
    out = F.interpolate(x, size=size, mode=mode, align_corners=False if mode in ("bilinear", "bicubic") else None)
    return out[:, 0] if squeeze else out


def scored_map(raw: Tensor, size: tuple[int, int], rectify: bool = True) -> Tensor:
    """The map that metrics score and overlays show: ``upsample(relu(raw), size)``, ``(B, U, V)`` → ``(B, H, W)``;
    without ``rectify`` (an input-space method's signed map) ``upsample(raw, size)``."""
    return upsample(relu(raw) if rectify else raw, size)


def minmax_normalize(maps: Tensor, eps: float = 0.0) -> Tensor:
    """Scale each map (over its last two axes) to [0, 1]: ``(S − min S) / (max S − min S)``.

    A constant map has no range; it maps to all zeros (so a masked input becomes the zero image).
    """
    lo = maps.amin(dim=(-2, -1), keepdim=True)
    hi = maps.amax(dim=(-2, -1), keepdim=True)
    span = hi - lo + eps
    return safe_divide(maps - lo, span)


def mask_images(images: Tensor, masks: Tensor, black: Tensor | Sequence[float] | None) -> Tensor:
    """The model's input ``images`` ``(B, C, H, W)`` masked by ``masks`` ``(B, H, W)`` in ``[0, 1]``.

    With the model's ``black`` (``−mean/std`` per channel) the *pixel* image is masked: for the model's
    input ``x = (p − mean)/std`` of the ``[0, 1]`` image ``p``,

        ((p ⊙ s) − mean)/std = x ⊙ s + black ⊙ (1 − s),

    so masked-out pixels turn black — where Opti-CAM's official code masks (its model normalises inside,
    and the ``[0, 1]`` image is multiplied by the map). With ``black=None`` the model's input itself is
    masked, ``x ⊙ s``, which moves masked-out pixels to the dataset's mean colour.
    """
    s = masks[:, None].to(images.dtype)
    if black is None:
        return images * s
    fill = torch.as_tensor(black, dtype=images.dtype, device=images.device).reshape(1, -1, 1, 1)
    return images * s + fill * (1 - s)
