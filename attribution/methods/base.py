"""The method interface every CAM shares, and the one forward/gradient pass they build on.

A method bound to a model and a target layer (:meth:`CAMMethod.bind`) maps ``images (B,C,H,W)``
and ``targets (B,)`` to an :class:`Attribution`: the raw coarse maps ``(B, U, V)`` on the images'
device, the classes explained and, for methods of the form ``Σ_k w_k A^k``, the channel weights
``w`` (``(B, K)``) that the paper's CAM-level infidelity (eq. 14) scores. ReLU, upsampling and
normalisation are separate steps (:mod:`attribution.postprocess`; :func:`scored_map` is the map
metrics score). ``method(model, layer, images, targets)`` is ``method.bind(model, layer)(images, targets).raw``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import ClassVar, NamedTuple, Self

import torch
from torch import Tensor, nn

from attribution.channel_scaling import Diagnostics
from attribution.layout import FeatureLayout
from attribution.needs import Need, ReferencePool, reference_pool_of
from attribution.postprocess import scored_map
from attribution.split import LayerSplit, check_eval_mode, release_split, split_at

__all__ = [
    "Attribution",
    "BoundMethod",
    "CAMMethod",
    "ChannelWeights",
    "LayerPass",
    "ReferencePool",
    "Targets",
    "WeightedCAM",
    "forward_pass",
    "gradient_pass",
    "resolve_targets",
    "sample_generators",
    "weighted_sum",
]

Targets = int | Sequence[int] | Tensor | None
Seeds = Tensor | Sequence[int] | None


def check_images(images: Tensor) -> None:
    """Raise unless ``images`` is a non-empty, finite, floating-point ``(B, C, H, W)`` batch."""
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


def sample_generators(seed: int, seeds: Seeds, batch: int) -> list[torch.Generator]:
    """One CPU generator per sample, seeded from (method seed, sample seed).

    Draws are made on the CPU and moved to the device, so a sample's noise depends on neither
    its position in the batch nor the device. ``seeds=None`` gives every sample the same stream.
    """
    per_sample = [0] * batch if seeds is None else [int(s) for s in torch.as_tensor(seeds).reshape(-1).tolist()]
    if len(per_sample) != batch:
        raise ValueError(f"seeds must hold one seed per image: expected {batch}, got {len(per_sample)}")
    return [torch.Generator().manual_seed(hash((seed, s)) & 0x7FFF_FFFF_FFFF_FFFF) for s in per_sample]




@dataclass(frozen=True)
class Attribution:
    """What a bound method returns for a batch."""

    raw: Tensor  # (B, U, V) raw coarse maps, detached; (B, H, W) for an input-space method
    targets: Tensor  # (B,) the classes explained (the given ones or each image's top class)
    weights: Tensor | None  # (B, K) channel weights w of Σ_k w_k A^k; None for methods without them
    diagnostics: Diagnostics | None = None  # Expected Grad-CAM: rank and condition of its M̂
    inputs: Tensor | None = None  # (B, C, H, W) attributions to the input pixels (path methods); raw is their map
    rectified: bool = True  # a CAM's map is ReLU'd before it is scored; an input-space method's is signed

    def scored(self, size: tuple[int, int]) -> Tensor:
        """The maps metrics score, ``upsample(relu(raw), size)`` ``(B, H, W)`` (no ReLU when not ``rectified``)."""
        return scored_map(self.raw, size, self.rectified)


class ChannelWeights(NamedTuple):
    """A weighted CAM's computation: ``Σ_k weights_k maps^k`` explains ``targets``."""

    weights: Tensor  # (B, K)
    maps: Tensor  # (B, K, U, V): the activations A
    targets: Tensor  # (B,)
    diagnostics: Diagnostics | None = None  # of the regression the weights solve, where there is one


class BoundMethod:
    """A method bound to ``(model, layer, layout)``: call it on images; a context manager too.

    The split of the model at the layer is taken on the first call and kept; leaving the ``with``
    block (or :meth:`release`) drops it from the split cache, together with what the method fitted
    on it (Expected Grad-CAM's perturbation set).
    """

    def __init__(self, method: CAMMethod, model: nn.Module, layer: str, layout: FeatureLayout | None = None) -> None:
        self.method = method
        self.model = model
        self.layer = layer
        self.layout = layout
        self._split: LayerSplit | None = None

    @property
    def name(self) -> str:
        """The method's registry name."""
        return self.method.name

    @property
    def split(self) -> LayerSplit:
        """The model cut at the layer, viewed through the layout (:func:`attribution.split.split_at`)."""
        if self._split is None:
            self._split = split_at(self.model, self.layer, self.layout)
        return self._split

    def __call__(self, images: Tensor, targets: Targets = None, *, seeds: Seeds = None) -> Attribution:
        """The attribution of ``targets`` (``None``: each image's top class) for ``images``.

        ``seeds`` (one per image) seed a stochastic method's draws per sample, so an image's result
        does not depend on the batch it is in.
        """
        check_images(images)
        check_eval_mode(self.model)
        return self.method._attribute(self.split, images, targets, seeds)

    def explainer(self) -> Callable[[Tensor, Tensor], Tensor]:
        """``(images, targets) → scored maps (B, H, W)`` at the images' size, detached: the method
        re-run on new inputs, as robustness metrics need."""

        def explain(images: Tensor, targets: Tensor) -> Tensor:
            return self(images, targets).scored(tuple(images.shape[-2:])).detach()

        return explain

    def release(self) -> None:
        """Drop the split this binding took, and what the method cached for it."""
        if self._split is not None:
            self.method._release(self._split)
            release_split(self.model, self.layer, self.layout, self._split)
            self._split = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"{self.method!r}.bind({type(self.model).__name__}, {self.layer!r}, layout={self.layout!r})"


class CAMMethod(ABC):
    """A saliency method over one target layer (an input-space method ignores the layer)."""

    name: ClassVar[str]
    rectified: ClassVar[bool] = True  # its map is scored after a ReLU (every CAM's final step, Grad-CAM eq. 2)

    @property
    def needs(self) -> frozenset[Need]:
        """Inputs beyond the model and images (:class:`attribution.needs.Need`); none by default."""
        return frozenset()

    @property
    def reference_pool(self) -> ReferencePool | None:
        """``"fit"`` for a method whose perturbations draw from a dataset's reference pool (the job
        passes that pool's features as ``reference_features``); ``None`` for the others."""
        return reference_pool_of(self.needs)

    def perturbations(self, channels: int) -> int | None:
        """How many perturbations this method fits on for a target layer of ``channels`` channels (Expected
        Grad-CAM's ``M``); ``None`` for a method that fits nothing."""
        return None

    def fit_diagnostics(self, channels: int) -> Diagnostics | None:
        """The diagnostics of what this method fits once per target layer of ``channels`` channels, from its
        constructor inputs alone (no model); ``None`` for a method that fits nothing."""
        return None

    def bind(self, model: nn.Module, layer: str, layout: FeatureLayout | None = None) -> BoundMethod:
        """This method on ``model`` at ``layer`` (activations viewed through ``layout``; ``None``: inferred)."""
        return BoundMethod(self, model, layer, layout)

    def __call__(
        self,
        model: nn.Module,
        layer: str,
        images: Tensor,
        targets: Targets = None,
        *,
        seeds: Seeds = None,
        layout: FeatureLayout | None = None,
    ) -> Tensor:
        """Raw coarse maps ``(B, U, V)`` for ``targets`` (``None``: each image's top class)."""
        return self.bind(model, layer, layout)(images, targets, seeds=seeds).raw

    @abstractmethod
    def _attribute(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> Attribution:
        """The attribution of checked ``images`` on ``split``."""

    def _release(self, split: LayerSplit) -> None:
        """Drop what this method cached for ``split``."""

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
        seeds: Seeds = None,
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
        seeds: Seeds = None,
        layout: FeatureLayout | None = None,
    ) -> tuple[Tensor, Tensor]:
        """The raw maps ``(B, U, V)`` and the channel weights ``(B, K)`` that make them, from one computation."""
        result = self.bind(model, layer, layout)(images, targets, seeds=seeds)
        return result.raw, result.weights

    def _attribute(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> Attribution:
        weights, maps, resolved, diagnostics = self._weights(split, images, targets, seeds)
        return Attribution(weighted_sum(weights, maps).detach(), resolved, weights.detach(), diagnostics)

    @abstractmethod
    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        """The weights ``(B, K)``, the maps ``(B, K, U, V)`` they weight and the resolved targets."""
