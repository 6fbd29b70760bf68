"""CAMs that average gradients over many perturbed copies of the input image."""

from __future__ import annotations

import torch
from torch import Tensor

from attribution.methods.base import ChannelWeights, Seeds, Targets, WeightedCAM, gradient_pass, sample_generators
from attribution.methods.registry import register
from attribution.numerics import safe_divide
from attribution.params import integer, non_negative
from attribution.split import LayerSplit

__all__ = ["IntegratedGradCAM", "SmoothGradCAMPlusPlus"]


def _gradient_sums(split: LayerSplit, copies: Tensor, targets: Tensor, batch_size: int, powers: int) -> list[Tensor]:
    """``Σ_n (∂y^c/∂A(x_n))^p`` for p = 1..powers over copies ``(B, N, C, H, W)``, chunked."""
    b, n = copies.shape[:2]
    sums: list[Tensor] = []
    per_chunk = max(1, batch_size // b)
    for start in range(0, n, per_chunk):
        chunk = copies[:, start : start + per_chunk]
        m = chunk.shape[1]
        p = gradient_pass(split, chunk.reshape(b * m, *copies.shape[2:]), targets.repeat_interleave(m))
        g = p.grad_maps.reshape(b, m, *p.grad_maps.shape[1:])
        terms = [g.pow(k).sum(dim=1) for k in range(1, powers + 1)]
        sums = terms if not sums else [s + t for s, t in zip(sums, terms)]
    return sums


@register
class SmoothGradCAMPlusPlus(WeightedCAM):
    """Smooth Grad-CAM++ (Omeiza et al. 2019, Sec. 3): Grad-CAM++ with the first, second and
    third derivatives replaced by their means over ``n_samples`` noisy inputs
    ``x + ε``, ``ε ~ N(0, (noise·(max x − min x))²)`` (SmoothGrad's relative noise level):

        D_p = (1/n) Σ_i (∂S^c/∂A^k(x + ε_i))^p,   a = D_2 / (2 D_2 + Σ_ab A^k_ab D_3),
        w_k = Σ_uv a_uv · ReLU(D_1),

    with ``A`` the activations of the clean image.
    """

    name = "smoothgradcampp"

    def __init__(self, n_samples: int = 20, noise: float = 0.15, batch_size: int = 64, seed: int = 0) -> None:
        self.n_samples = integer("n_samples", n_samples, 1)
        self.noise = non_negative("noise", noise)
        self.batch_size = integer("batch_size", batch_size, 1)
        self.seed = integer("seed", seed)

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        clean = gradient_pass(split, images, targets)
        scale = (images.amax(dim=(1, 2, 3)) - images.amin(dim=(1, 2, 3))) * self.noise
        noise = torch.stack(
            [torch.randn((self.n_samples, *images.shape[1:]), generator=g) for g in sample_generators(self.seed, seeds, len(images))]
        ).to(images.device, images.dtype)
        copies = images[:, None] + noise * scale[:, None, None, None, None]
        d1, d2, d3 = (s / self.n_samples for s in _gradient_sums(split, copies, clean.targets, self.batch_size, 3))
        maps = clean.maps
        denom = 2 * d2 + maps.sum(dim=(2, 3), keepdim=True) * d3
        alpha = safe_divide(d2, denom)
        return ChannelWeights((alpha * d1.clamp(min=0)).sum(dim=(2, 3)), maps, clean.targets)


@register
class IntegratedGradCAM(WeightedCAM):
    """Integrated Grad-CAM (Sattarzadeh et al., ICASSP 2021): Grad-CAM's gradient term replaced
    by its path integral along the straight input path ``x_j = x' + (j/m)(x − x')``:

        w_k = Σ_uv (1/m) Σ_{j=1..m} ∂S^c(x_j)/∂A^k_uv · (A^k_uv(x) − A^k_uv(x')),

    a right Riemann sum with ``steps = m``; the baseline ``x'`` is the all-zero (normalised)
    image. Summed over channels, ``Σ_k w_k = S^c(x) − S^c(x')`` up to the Riemann error when
    ``A`` is affine along the path — the completeness of the paper's framework, where Integrated
    Grad-CAM is the integrated gradient of ``g(z)`` from ``z' = A(x')/A(x)`` to ``z0 = 1``.
    """

    name = "integrated_gradcam"

    def __init__(self, steps: int = 25, batch_size: int = 64) -> None:
        self.steps = integer("steps", steps, 1)
        self.batch_size = integer("batch_size", batch_size, 1)

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        end = gradient_pass(split, images, targets)
        baseline = torch.zeros_like(images)
        with torch.no_grad():
            start_maps = split.layout_for(end.feats).to_maps(split.features(baseline)[0])
        t = torch.arange(1, self.steps + 1, device=images.device, dtype=images.dtype) / self.steps
        path = baseline[:, None] + t[None, :, None, None, None] * (images - baseline)[:, None]
        (grad_sum,) = _gradient_sums(split, path, end.targets, self.batch_size, 1)
        weights = (grad_sum / self.steps * (end.maps - start_maps)).sum(dim=(2, 3))
        return ChannelWeights(weights, end.maps, end.targets)
