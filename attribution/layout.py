"""How a target layer's output is laid out, and how to view it as K maps of U×V.

CNN layers give ``(B, K, U, V)``. Transformer layers give tokens ``(B, N, K)`` with ``prefix``
class/register tokens followed by a ``U×V`` grid of patch tokens; their CAM is computed on the
patch tokens reshaped to ``(B, K, U, V)`` (the ViT reshape of Grad-CAM implementations).
Channel scaling (the ``z`` of Expected Grad-CAM) multiplies the channel axis wherever it is.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

__all__ = ["FeatureLayout", "SpatialLayout", "TokenLayout", "infer_layout"]


class FeatureLayout:
    """Interface: view activations as maps, and scale their channels."""

    def to_maps(self, feats: Tensor) -> Tensor:
        """The activations as ``(B, K, U, V)`` maps."""
        raise NotImplementedError

    def scale_channels(self, feats: Tensor, z: Tensor) -> Tensor:
        """``feats`` with channel ``k`` multiplied by ``z[..., k]``; leading axes of ``feats`` and ``z``
        broadcast (``(B, 1, …)`` activations × ``(1, P, K)`` scales → ``(B, P, …)``)."""
        raise NotImplementedError


@dataclass(frozen=True)
class SpatialLayout(FeatureLayout):
    """Convolutional feature maps ``(B, K, U, V)``."""

    def to_maps(self, feats: Tensor) -> Tensor:
        if feats.ndim != 4:
            raise ValueError(f"expected (B, K, U, V) activations, got shape {tuple(feats.shape)}")
        return feats

    def scale_channels(self, feats: Tensor, z: Tensor) -> Tensor:
        return feats * z[..., None, None]


@dataclass(frozen=True)
class TokenLayout(FeatureLayout):
    """Tokens ``(B, N, K)``: ``prefix`` leading tokens, then a ``grid`` of patch tokens (row-major)."""

    prefix: int
    grid: tuple[int, int]

    def to_maps(self, feats: Tensor) -> Tensor:
        b, n, k = feats.shape
        u, v = self.grid
        if n - self.prefix != u * v:
            raise ValueError(f"{n} tokens do not hold {self.prefix} prefix tokens and a {u}x{v} grid")
        return feats[:, self.prefix :].transpose(1, 2).reshape(b, k, u, v)

    def scale_channels(self, feats: Tensor, z: Tensor) -> Tensor:
        return feats * z[..., None, :]


def infer_layout(feats: Tensor) -> FeatureLayout:
    """Guess the layout of a layer with no registry entry: 4-D is spatial, 3-D is tokens
    with the largest square grid and the remaining tokens as prefix (197 → 1 + 14×14)."""
    if feats.ndim == 4:
        return SpatialLayout()
    if feats.ndim == 3:
        n = feats.shape[1]
        side = math.isqrt(n)
        return TokenLayout(prefix=n - side * side, grid=(side, side))
    raise ValueError(f"cannot view activations of shape {tuple(feats.shape)} as maps; pass a layout")
