"""Classification metrics of Opti-CAM (Zhang et al., CVIU 2024, eq. 13–15).

The image is multiplied by its saliency map, min-max normalised to ``[0, 1]`` per sample (the maps
come at input resolution, so upsampling is the caller's), and the target's softmax probability on
the masked image ``o`` is compared with that on the image ``p``. Each metric is given per sample
(× 100); the mean over a dataset is the paper's percentage. A constant map has no min-max
normalisation and is undefined.

``mask_space="pixel"`` (the default) masks the ``[0, 1]`` pixel image, so masked-out pixels turn
black: Opti-CAM's official code normalises inside the model and multiplies the pixel image by the
map. On the model's normalised input this is ``x ⊙ s + black ⊙ (1 − s)`` with ``black = −mean/std``
(:func:`attribution.postprocess.mask_images`; ``Need.BLACK``). ``"normalized"`` masks the model's
input, ``x ⊙ s``, which moves masked-out pixels to the dataset's mean colour.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from attribution.needs import Need
from attribution.postprocess import mask_images
from evaluation.base import Batch, Metric, flat, mark_undefined, safe_divide
from evaluation.perturbation import (
    MaskSpace,
    check_mask_space,
    mask_needs,
    model_inputs,
    target_scores,
)
from evaluation.registry import register

__all__ = ["AverageDrop", "AverageGain", "AverageIncrease", "MaskedConfidence", "masked_confidence"]


@dataclass(frozen=True)
class MaskedConfidence:
    """What masking the images by their maps gives, per sample."""

    saliency: Tensor  # (B, H, W) the map min-max normalised to [0, 1] (all zeros for a constant map), float64
    p: Tensor  # (B,) the target's softmax probability on the image, float64
    o: Tensor  # (B,) the target's softmax probability on the masked image, float64
    constant: Tensor  # (B,) bool: the map is constant (no min-max normalisation)


def masked_confidence(metric: Metric, batch: Batch, mask_space: MaskSpace) -> MaskedConfidence:
    """``p``, ``o`` and the saliency of ``batch``'s maps as ``metric`` prepares them, masked in ``mask_space``;
    computed once per batch, mask space and preparation (AD/AI/AG and ADCC share it through the batch's memo)."""
    images, model, targets = model_inputs(metric.name, batch)
    black = batch.require(metric.name, "black")[0] if mask_space == "pixel" else None
    maps = metric.prepare(batch.maps)

    def compute() -> MaskedConfidence:
        low, high = flat(maps).amin(dim=1), flat(maps).amax(dim=1)
        saliency = safe_divide(maps - low[:, None, None], (high - low)[:, None, None])
        p = target_scores(model, images, targets, softmax=True).double()
        o = target_scores(model, mask_images(images, saliency, black), targets, softmax=True).double()
        return MaskedConfidence(saliency, p, o, high == low)

    return batch.memoised(("masked_confidence", mask_space, metric.normalise, metric.take_abs), compute)


class _MaskedConfidence(Metric):
    category, normalise = "classification", False

    def __init__(self, mask_space: MaskSpace = "pixel") -> None:
        self.mask_space = check_mask_space(self.name, mask_space)

    @property
    def needs(self) -> frozenset[Need]:
        return mask_needs(self.mask_space)

    def confidences(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """``p`` (image), ``o`` (masked image) and which maps are constant, each ``(B,)``; shared by AD/AI/AG."""
        masked = masked_confidence(self, batch, self.mask_space)
        return masked.p, masked.o, masked.constant


@register
class AverageDrop(_MaskedConfidence):
    """Average Drop (eq. 13): ``100 · max(0, p − o) / p``. Lower is better."""

    name, direction = "average_drop", "lower"

    def score(self, batch: Batch) -> Tensor:
        p, o, constant = self.confidences(batch)
        return mark_undefined(100 * (p - o).clamp(min=0) / p, constant, self.name, "constant map")


@register
class AverageIncrease(_MaskedConfidence):
    """Average Increase (eq. 14): ``100 · 1[p < o]``, the share of images whose confidence rises. Higher is better."""

    name, direction = "average_increase", "higher"

    def score(self, batch: Batch) -> Tensor:
        p, o, constant = self.confidences(batch)
        return mark_undefined(100 * (p < o).double(), constant, self.name, "constant map")


@register
class AverageGain(_MaskedConfidence):
    """Average Gain (eq. 15): ``100 · max(0, o − p) / (1 − p)``. Higher is better."""

    name, direction = "average_gain", "higher"

    def score(self, batch: Batch) -> Tensor:
        p, o, constant = self.confidences(batch)
        certain = p >= 1
        gain = 100 * safe_divide((o - p).clamp(min=0), torch.where(certain, torch.zeros_like(p), 1 - p))
        gain = mark_undefined(gain, constant, self.name, "constant map")
        return mark_undefined(gain, certain & ~constant, self.name, "p = 1: no gain is possible")
