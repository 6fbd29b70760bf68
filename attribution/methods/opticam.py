"""Opti-CAM and the Fake-CAM baseline, as seed 003 (Zhang et al., "Opti-CAM: Optimizing saliency maps for
interpretability", CVIU 2024) defines them.

Opti-CAM (§3.2) weights the target layer's maps by ``w = softmax(u)`` and finds the ``u`` that maximises the
target score of the input masked by the upsampled, normalised map:

    S_ℓ(x; u) = Σ_k softmax(u)_k A_ℓ^k                       (eq. 8, h = identity as in §5.1)
    s = n(up(S_ℓ(x; u)))                                      (bilinear up to the input size; n: eqs. 16–18)
    F_ℓ^c(x; u) = g_c(f(x ⊙ s))                               (eq. 10, "Mask")
    u* = argmax_u F_ℓ^c(x; u),   Opti-CAM map = S_ℓ(x; u*)   (eqs. 9, 11)

Fake-CAM (Poppi et al., CVPRW 2021, discussed in seed 003 §4) is the map that is 1 everywhere but 0 at the
top-left pixel: it scores near-perfect Average Drop and Increase while explaining nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from attribution.methods.base import (
    Attribution,
    CAMMethod,
    ChannelWeights,
    Seeds,
    Targets,
    WeightedCAM,
    forward_pass,
    weighted_sum,
)
from attribution.methods.registry import register
from attribution.needs import Need
from attribution.numerics import safe_divide
from attribution.params import check_black, choice, integer, non_negative, positive
from attribution.postprocess import mask_images, minmax_normalize, upsample
from attribution.split import LayerSplit

__all__ = ["FakeCAM", "MaskSpace", "Normalization", "Objective", "OptiCAM", "OptiCAMObjective", "Selector",
           "normalize", "select"]

Normalization = Literal["range", "max", "sigmoid"]
Objective = Literal["mask", "diff", "iomask", "iodiff"]
Selector = Literal["logit", "probability"]
MaskSpace = Literal["pixel", "normalized"]

NORMALIZATIONS: tuple[Normalization, ...] = ("range", "max", "sigmoid")
OBJECTIVES: tuple[Objective, ...] = ("mask", "diff", "iomask", "iodiff")
SELECTORS: tuple[Selector, ...] = ("logit", "probability")
MASK_SPACES: tuple[MaskSpace, ...] = ("pixel", "normalized")


def normalize(maps: Tensor, normalization: Normalization) -> Tensor:
    """``n`` of each map over its last two axes: range (eq. 16) ``(A − min A)/(max A − min A)``, max (eq. 17)
    ``A / max A`` or sigmoid (eq. 18) ``1/(1 + e^{−a_ij})``. A zero range or maximum gives a zero map."""
    if choice("normalization", normalization, NORMALIZATIONS) == "range":
        return minmax_normalize(maps)
    if normalization == "max":
        return safe_divide(maps, maps.amax(dim=(-2, -1), keepdim=True))
    return maps.sigmoid()


def select(logits: Tensor, targets: Tensor, selector: Selector) -> Tensor:
    """``g_c(y)`` per sample: the target logit ``y_c`` (``"logit"``) or its probability ``softmax(y)_c``."""
    scores = logits.softmax(dim=1) if selector == "probability" else logits
    return scores.gather(1, targets[:, None]).squeeze(1)


@dataclass(frozen=True)
class OptiCAMObjective:
    """``F_ℓ^c(x; u)`` of one batch, per sample: ``u (B, K)`` → ``(B,)``.

    Mask (eq. 10) ``g_c(f(x ⊙ s))``; Diff (eq. 19) ``−|g_c(f(x)) − g_c(f(x ⊙ s))|``; IOMask (A1)
    ``g_c(f(x ⊙ s)) − g_c(f(x ⊙ (1 − s)))``; IODiff (A2)
    ``−|g_c(f(x)) − g_c(f(x ⊙ s))| + |g_c(f(x)) − g_c(f(x ⊙ (1 − s)))|``, with ``s = n(up(S_ℓ(x; u)))`` and
    ``⊙`` the masking of :func:`attribution.postprocess.mask_images`.
    """

    split: LayerSplit
    images: Tensor  # (B, C, H, W), normalised
    maps: Tensor  # (B, K, U, V): A_ℓ
    targets: Tensor  # (B,): c
    original: Tensor  # (B,): g_c(f(x))
    objective: Objective
    normalization: Normalization
    selector: Selector
    black: Tensor | None  # (C,): the model's black image; None masks the normalised tensor

    def saliency(self, u: Tensor) -> Tensor:
        """``s = n(up(S_ℓ(x; u)))`` ``(B, H, W)``, bilinear up to the images' size."""
        raw = weighted_sum(u.softmax(dim=1), self.maps)
        return normalize(upsample(raw, tuple(self.images.shape[-2:])), self.normalization)

    def __call__(self, u: Tensor) -> Tensor:
        s = self.saliency(u)
        inside = self.objective in ("mask", "diff")
        masks = s if inside else torch.cat([s, 1 - s])
        images = self.images if inside else self.images.repeat(2, 1, 1, 1)
        targets = self.targets if inside else self.targets.repeat(2)
        logits = self.split.head(*self.split.features(mask_images(images, masks, self.black)))
        scores = select(logits, targets, self.selector)
        if self.objective == "mask":
            return scores
        if self.objective == "diff":
            return -(self.original - scores).abs()
        kept, removed = scores.chunk(2)
        if self.objective == "iomask":
            return kept - removed
        return -(self.original - kept).abs() + (self.original - removed).abs()


@register
class OptiCAM(WeightedCAM):
    """Opti-CAM (seed 003 §3.2, eqs. 8–11): ``w = softmax(u*)``, ``S = Σ_k w_k A^k`` (eq. 8) with
    ``u* = argmax_u F_ℓ^c(x; u)`` (eqs. 9, 11).

    ``F`` is ``objective``: ``"mask"`` (eq. 10, the default), ``"diff"`` (eq. 19), ``"iomask"`` (A1) or
    ``"iodiff"`` (A2) (:class:`OptiCAMObjective`); ``n`` is ``normalization``: ``"range"`` (eq. 16, the
    default), ``"max"`` (eq. 17) or ``"sigmoid"`` (eq. 18); ``g_c`` is ``selector``: ``"logit"`` ``y_c`` (the
    paper's) or ``"probability"`` ``softmax(y)_c``.

    ``u`` starts at 0 (uniform weights: the channel-mean map; the official code's ``u₀ = 0.5·1`` gives the same
    weights and the same Adam path) and Adam (learning rate ``lr``) takes at most ``iterations`` steps
    (App. A: lr 0.1, at most 100 iterations, early stop when the change in loss is below 1e-10; App. F.2:
    100 is optimal; 50, the official demo's and Table A12's setting, is twice as fast at about 6 % lower AG).
    A sample stops when its objective changes by less than ``tolerance`` in one step and is not updated
    again; the loop ends when every sample has stopped. The loss is a sum over samples and Adam is
    element-wise, so a batch gives its samples' results one by one. The returned ``u`` is, per sample, the
    iterate with the largest objective among all evaluated (the start and the last included), so the
    objective at the returned weights is never below its value at the uniform start.

    ``mask_space="pixel"`` (the official code, whose model normalises internally) masks the [0, 1] pixel
    image ``p``: for the model's input ``x = (p − mean)/std``, ``((p ⊙ s) − mean)/std = x ⊙ s + black ⊙ (1 − s)``
    with ``black = −mean/std`` per channel (pass ``black=``; zeros for a model that takes [0, 1] pixels), so
    masked pixels turn black. ``"normalized"`` masks the model's input, ``x ⊙ s``, turning them to the mean
    colour; ``black`` is unused there.

    The paper's layers (App. A, F.2): VGG16-BN ``features.42`` (block 5 conv 3 and its ReLU, before the last
    max pool; layer 42 of Table A13), ResNet-50 ``layer4`` (the last block's output, as the official code;
    App. A names conv3 of bottleneck 2 of block 4), ViT-B/16 and DeiT-B/16 ``blocks.11.norm1`` in timm (the layer
    norm of self-attention block 12; ``encoder.layers.encoder_layer_11.ln_1`` in torchvision's ``vit_b_16``).
    Gradients are taken with respect to ``u`` only.
    """

    name = "opticam"

    def __init__(
        self,
        iterations: int = 100,
        lr: float = 0.1,
        tolerance: float = 1e-10,
        normalization: Normalization = "range",
        objective: Objective = "mask",
        selector: Selector = "logit",
        mask_space: MaskSpace = "pixel",
        black: Sequence[float] | None = None,
    ) -> None:
        self.iterations = integer("iterations", iterations, 0)
        self.lr = positive("lr", lr)
        self.tolerance = non_negative("tolerance", tolerance)
        self.normalization = choice("normalization", normalization, NORMALIZATIONS)
        self.objective = choice("objective", objective, OBJECTIVES)
        self.selector = choice("selector", selector, SELECTORS)
        self.mask_space = choice("mask_space", mask_space, MASK_SPACES)
        self.black = check_black(black)

    @property
    def needs(self) -> frozenset[Need]:
        """The model's black image when masking the pixel image."""
        return frozenset({Need.BLACK}) if self.mask_space == "pixel" else frozenset()

    def _black_for(self, images: Tensor) -> Tensor | None:
        if self.mask_space == "normalized":
            return None
        if self.black is None:
            raise ValueError("opticam masks the pixel image, so pass black= (the model's black image −mean/std per "
                             "channel; zeros for a model that takes [0, 1] pixels) or mask_space=\"normalized\"")
        if len(self.black) != images.shape[1]:
            raise ValueError(f"black has {len(self.black)} values but the images have {images.shape[1]} channels")
        return torch.tensor(self.black, device=images.device, dtype=images.dtype)

    def objective_function(self, split: LayerSplit, images: Tensor, targets: Targets = None) -> OptiCAMObjective:
        """The objective ``F_ℓ^c(x; ·)`` that this method maximises for ``images`` on ``split``."""
        black = self._black_for(images)
        base = forward_pass(split, images, targets)
        original = select(base.logits, base.targets, self.selector)
        return OptiCAMObjective(split, images, base.maps, base.targets, original, self.objective, self.normalization,
                                self.selector, black)

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        objective = self.objective_function(split, images, targets)
        return ChannelWeights(self.maximise(objective).softmax(dim=1), objective.maps, objective.targets)

    def maximise(self, objective: OptiCAMObjective) -> Tensor:
        """``u*`` ``(B, K)``: per sample, the Adam iterate with the largest objective (eq. 9)."""
        u = torch.zeros(objective.maps.shape[:2], device=objective.maps.device, dtype=objective.maps.dtype,
                        requires_grad=True)
        optimizer = torch.optim.Adam([u], lr=self.lr)
        with torch.enable_grad():
            value = objective(u)
            best_u, best = u.detach().clone(), value.detach()
            active = torch.ones_like(best, dtype=torch.bool)
            for _ in range(self.iterations):
                if not active.any():
                    break
                (u.grad,) = torch.autograd.grad(-value.sum(), u)
                previous = u.detach().clone()
                optimizer.step()
                with torch.no_grad():
                    u.copy_(torch.where(active[:, None], u, previous))
                new = objective(u)
                current = new.detach()
                improved = active & (current > best)
                best_u = torch.where(improved[:, None], u.detach(), best_u)
                best = torch.where(improved, current, best)
                active = active & ((current - value.detach()).abs() >= self.tolerance)
                value = new
        return best_u


@register
class FakeCAM(CAMMethod):
    """Fake-CAM (Poppi et al., CVPRW 2021; seed 003 §4): 1 everywhere but 0 at the top-left pixel, at the
    images' resolution, whatever the model. The raw map is ``(B, H, W)``, so the scored map (an upsampling to
    the same size) is that map exactly."""

    name = "fakecam"

    def _attribute(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> Attribution:
        resolved = forward_pass(split, images, targets).targets
        fake = torch.ones(images.shape[0], *images.shape[-2:], device=images.device, dtype=images.dtype)
        fake[:, 0, 0] = 0
        return Attribution(fake, resolved, None)
