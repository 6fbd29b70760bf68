"""CAMs computed from one forward pass and the gradient ``∂y^c/∂A`` at the target layer."""

from __future__ import annotations

from torch import Tensor

from attribution.methods.base import Attribution, CAMMethod, ChannelWeights, Seeds, Targets, WeightedCAM, gradient_pass
from attribution.methods.registry import register
from attribution.numerics import safe_divide
from attribution.split import LayerSplit

__all__ = [
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "LayerCAM",
    "XGradCAM",
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
    alpha = safe_divide(g2, denom)
    return (alpha * grads.clamp(min=0)).sum(dim=(2, 3))


@register
class GradCAM(WeightedCAM):
    """Grad-CAM (Selvaraju et al., ICCV 2017, eq. 1–2): ``Σ_k α_k A^k``, α the mean gradient."""

    name = "gradcam"

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        p = gradient_pass(split, images, targets)
        return ChannelWeights(gradcam_weights(p.maps, p.grad_maps), p.maps, p.targets)


@register
class GradCAMPlusPlus(WeightedCAM):
    """Grad-CAM++ (Chattopadhay et al., WACV 2018); weights from :func:`gradcampp_weights`."""

    name = "gradcampp"

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        p = gradient_pass(split, images, targets)
        return ChannelWeights(gradcampp_weights(p.maps, p.grad_maps), p.maps, p.targets)


@register
class XGradCAM(WeightedCAM):
    """XGrad-CAM (Fu et al., BMVC 2020, eq. 9): ``w_k = Σ_uv (A^k_uv / Σ_ab A^k_ab) ∂y^c/∂A^k_uv``.

    A channel whose activations sum to zero gets weight 0 (the ratio is undefined there).
    """

    name = "xgradcam"

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        p = gradient_pass(split, images, targets)
        maps, grads = p.maps, p.grad_maps
        total = maps.sum(dim=(2, 3))
        weights = safe_divide((maps * grads).sum(dim=(2, 3)), total)
        return ChannelWeights(weights, maps, p.targets)


@register
class HiResCAM(CAMMethod):
    """HiRes-CAM (Draelos & Carin 2020, eq. 5): ``Σ_k ∂y^c/∂A^k ⊙ A^k`` (element-wise)."""

    name = "hirescam"

    def _attribute(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> Attribution:
        p = gradient_pass(split, images, targets)
        return Attribution((p.grad_maps * p.maps).sum(dim=1), p.targets, None)


@register
class LayerCAM(CAMMethod):
    """LayerCAM (Jiang et al., TIP 2021, eq. 6–7): ``Σ_k ReLU(∂y^c/∂A^k) ⊙ A^k``."""

    name = "layercam"

    def _attribute(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> Attribution:
        p = gradient_pass(split, images, targets)
        return Attribution((p.grad_maps.clamp(min=0) * p.maps).sum(dim=1), p.targets, None)
