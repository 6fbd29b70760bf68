"""CAMs computed from one forward pass and the gradient ``∂y^c/∂A`` at the target layer."""

from __future__ import annotations

import torch
from torch import Tensor

from attribution.methods.base import CAMMethod, Targets, WeightedCAM, gradient_pass
from attribution.methods.registry import register
from attribution.split import LayerSplit

__all__ = [
    "GradCAM",
    "GradCAMPlusPlus",
    "XGradCAM",
    "HiResCAM",
    "LayerCAM",
    "gradcam_weights",
    "gradcampp_weights",
]


def gradcam_weights(maps: Tensor, grads: Tensor) -> Tensor:
    """Selvaraju et al. 2017, eq. (1): ``α_k = (1/Z) Σ_uv ∂y^c/∂A^k_uv``."""
    return grads.mean(dim=(2, 3))


def gradcampp_weights(maps: Tensor, grads: Tensor) -> Tensor:
    """Chattopadhay et al. 2018 (Grad-CAM++), Sec. 3 with the exponential output ``Y = exp(S)``:

    ``a^k_uv = g² / (2 g² + Σ_ab A^k_ab · g³)`` with ``g = ∂S^c/∂A^k_uv``, and
    ``w_k = Σ_uv a^k_uv · ReLU(g)`` (the ``exp(S)`` factor cancels between numerator and
    denominator and only rescales ``w``, so it is dropped, as in every public implementation).
    """
    g2 = grads.pow(2)
    denom = 2 * g2 + maps.sum(dim=(2, 3), keepdim=True) * g2 * grads
    alpha = torch.where(denom != 0, g2 / torch.where(denom != 0, denom, torch.ones_like(denom)), torch.zeros_like(g2))
    return (alpha * grads.clamp(min=0)).sum(dim=(2, 3))


@register("gradcam")
class GradCAM(WeightedCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1–2): ``Σ_k α_k A^k``, α the mean gradient."""

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> tuple[Tensor, Tensor]:
        p = gradient_pass(split, images, targets)
        return gradcam_weights(p.maps, p.grad_maps), p.maps


@register("gradcampp")
class GradCAMPlusPlus(WeightedCAM):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018); weights from :func:`gradcampp_weights`."""

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> tuple[Tensor, Tensor]:
        p = gradient_pass(split, images, targets)
        return gradcampp_weights(p.maps, p.grad_maps), p.maps


@register("xgradcam")
class XGradCAM(WeightedCAM):
    """XGrad-CAM (Fu et al., BMVC 2020, eq. 9): ``w_k = Σ_uv (A^k_uv / Σ_ab A^k_ab) ∂y^c/∂A^k_uv``.

    A channel whose activations sum to zero gets weight 0 (the ratio is undefined there).
    """

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> tuple[Tensor, Tensor]:
        p = gradient_pass(split, images, targets)
        maps, grads = p.maps, p.grad_maps
        total = maps.sum(dim=(2, 3))
        safe = torch.where(total != 0, total, torch.ones_like(total))
        weights = torch.where(total != 0, (maps * grads).sum(dim=(2, 3)) / safe, torch.zeros_like(total))
        return weights, maps


@register("hirescam")
class HiResCAM(CAMMethod):
    """HiRes-CAM (Draelos & Carin 2020, eq. 5): ``Σ_k ∂y^c/∂A^k ⊙ A^k`` (element-wise)."""

    def _maps(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> Tensor:
        p = gradient_pass(split, images, targets)
        return (p.grad_maps * p.maps).sum(dim=1)


@register("layercam")
class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al., TIP 2021, eq. 6–7): ``Σ_k ReLU(∂y^c/∂A^k) ⊙ A^k``."""

    def _maps(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> Tensor:
        p = gradient_pass(split, images, targets)
        return (p.grad_maps.clamp(min=0) * p.maps).sum(dim=1)
