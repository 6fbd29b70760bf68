"""The method interface every CAM shares, and the one forward/gradient pass they build on.

A method maps ``(model, layer, images (B,C,H,W), targets (B,))`` to raw coarse maps
``(B, U, V)`` on the images' device. ReLU, upsampling and normalisation are separate steps
(:mod:`attribution.postprocess`). Methods that produce ``Σ_k w_k A^k`` also expose their
channel weights ``w`` (``(B, K)``), which the paper's CAM-level infidelity (eq. 14) scores.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import Tensor, nn

from attribution.layout import FeatureLayout
from attribution.split import LayerSplit, split_at

__all__ = [
    "CAMMethod",
    "WeightedCAM",
    "LayerPass",
    "Targets",
    "forward_pass",
    "gradient_pass",
    "resolve_targets",
    "weighted_sum",
    "sample_generators",
]

Targets = int | Sequence[int] | Tensor | None


def check_images(images: Tensor) -> None:
    if not isinstance(images, Tensor):
        raise TypeError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W); got shape {tuple(images.shape)}")
    if not images.is_floating_point():
        raise ValueError(f"images must be a normalized floating-point tensor; got dtype {images.dtype}")
    if images.shape[0] == 0:
        raise ValueError("images is an empty batch")
    if not torch.isfinite(images).all():
        raise ValueError("images contain NaN or infinite values")


def resolve_targets(targets: Targets, logits: Tensor) -> Tensor:
    """Per-sample class indices ``(B,)``: the given ones (validated) or the top class."""
    batch, classes = logits.shape
    if targets is None:
        return logits.argmax(dim=1)
    t = torch.as_tensor(targets, device=logits.device)
    if t.is_floating_point() or t.is_complex():
        raise TypeError(f"targets must be integers, got dtype {t.dtype}")
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"targets must hold one class per image: expected shape ({batch},), got {tuple(t.shape)}")
    bad = (t < 0) | (t >= classes)
    if bad.any():
        raise ValueError(f"target out of range [0, {classes}) for the model's {classes} classes: {t[bad].tolist()}")
    return t.long()


@dataclass
class LayerPass:
    """One pass through a split model: activations as maps, optional gradients, logits, targets."""

    feats: Tensor
    live: tuple
    layout: FeatureLayout
    logits: Tensor
    targets: Tensor
    grads: Tensor | None = None

    @property
    def maps(self) -> Tensor:
        return self.layout.to_maps(self.feats)

    @property
    def grad_maps(self) -> Tensor:
        assert self.grads is not None, "pass computed without gradients"
        return self.layout.to_maps(self.grads)

    def target_scores(self, logits: Tensor | None = None) -> Tensor:
        """The target logit of each image (from ``logits`` if given, else this pass's)."""
        logits = self.logits if logits is None else logits
        return logits.gather(1, self.targets[:, None]).squeeze(1)


def forward_pass(split: LayerSplit, images: Tensor, targets: Targets) -> LayerPass:
    """Activations and logits, no gradients."""
    with torch.no_grad():
        feats, live = split.features(images)
        logits = split.head(feats, live)
    return LayerPass(feats, live, split.layout_for(feats), logits, resolve_targets(targets, logits))


def gradient_pass(split: LayerSplit, images: Tensor, targets: Targets) -> LayerPass:
    """Activations, logits and ``∂y^c/∂A`` (only the suffix is differentiated)."""
    with torch.no_grad():
        feats, live = split.features(images)
    feats = feats.detach().requires_grad_(True)
    with torch.enable_grad():
        logits = split.head(feats, live)
        resolved = resolve_targets(targets, logits.detach())
        score = logits.gather(1, resolved[:, None]).sum()
        (grads,) = torch.autograd.grad(score, feats)
    return LayerPass(feats.detach(), live, split.layout_for(feats), logits.detach(), resolved, grads)


def weighted_sum(weights: Tensor, maps: Tensor) -> Tensor:
    """``Σ_k w_k A^k``: ``(B, K)`` weights and ``(B, K, U, V)`` maps → ``(B, U, V)``."""
    return torch.einsum("bk,bkuv->buv", weights, maps)


def sample_generators(seed: int, seeds: Tensor | Sequence[int] | None, batch: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (method seed, sample seed).

    Draws are made on the CPU and moved to the device, so a sample's noise depends on neither
    its position in the batch nor the device. ``seeds=None`` gives every sample the same stream.
    """
    per_sample = [0] * batch if seeds is None else [int(s) for s in torch.as_tensor(seeds).reshape(-1).tolist()]
    if len(per_sample) != batch:
        raise ValueError(f"seeds must hold one seed per image: expected {batch}, got {len(per_sample)}")
    return [torch.Generator().manual_seed(hash((seed, s)) & 0x7FFF_FFFF_FFFF_FFFF) for s in per_sample]


ReferencePool = Literal["fit", "held_out"]


class CAMMethod(ABC):
    """A saliency method over one target layer."""

    name: ClassVar[str]

    @property
    def reference_pool(self) -> ReferencePool | None:
        """``"fit"`` for a method whose perturbations draw from a dataset's reference pool (the job
        passes that pool's features as ``reference_features``); ``None`` for the others."""
        return None

    def __call__(
        self,
        model: nn.Module,
        layer: str,
        images: Tensor,
        targets: Targets = None,
        *,
        seeds: Tensor | Sequence[int] | None = None,
        layout: FeatureLayout | None = None,
    ) -> Tensor:
        """Raw coarse maps ``(B, U, V)`` for ``targets`` (``None``: each image's top class)."""
        check_images(images)
        return self._maps(split_at(model, layer, layout), images, targets, seeds)

    @abstractmethod
    def _maps(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> Tensor: ...

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"


class WeightedCAM(CAMMethod):
    """A CAM of the form ``Σ_k w_k A^k``; subclasses compute the channel weights ``w``."""

    def channel_weights(
        self,
        model: nn.Module,
        layer: str,
        images: Tensor,
        targets: Targets = None,
        *,
        seeds: Tensor | Sequence[int] | None = None,
        layout: FeatureLayout | None = None,
    ) -> Tensor:
        """The channel weights ``(B, K)``."""
        return self.maps_and_weights(model, layer, images, targets, seeds=seeds, layout=layout)[1]

    def maps_and_weights(
        self,
        model: nn.Module,
        layer: str,
        images: Tensor,
        targets: Targets = None,
        *,
        seeds: Tensor | Sequence[int] | None = None,
        layout: FeatureLayout | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The raw maps ``(B, U, V)`` and the channel weights ``(B, K)`` that make them, from one computation."""
        check_images(images)
        weights, maps = self._weights(split_at(model, layer, layout), images, targets, seeds)
        return weighted_sum(weights, maps), weights

    def _maps(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> Tensor:
        weights, maps = self._weights(split, images, targets, seeds)
        return weighted_sum(weights, maps)

    @abstractmethod
    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> tuple[Tensor, Tensor]:
        """``(weights (B, K), maps (B, K, U, V))``."""
