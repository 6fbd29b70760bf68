"""Classification metrics of Opti-CAM (Zhang et al., CVIU 2024, eq. 13–15).

The image is multiplied by its saliency map, min-max normalised to ``[0, 1]`` per sample (the maps
come at input resolution, so upsampling is the caller's), and the target's softmax probability on
the masked image ``o`` is compared with that on the image ``p``. Each metric is given per sample
(× 100); the mean over a dataset is the paper's percentage. A constant map has no min-max
normalisation and is undefined.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attribution.needs import Need
from evaluation.base import Batch, Metric, flat, mark_undefined, safe_divide
from evaluation.perturbation import model_inputs, target_scores
from evaluation.registry import register

__all__ = ["AverageDrop", "AverageIncrease", "AverageGain"]


class _MaskedConfidence(Metric):
    category, normalise = "classification", False
    needs = frozenset({Need.MODEL})

    def confidences(self, batch: Batch) -> tuple[Tensor, Tensor, Tensor]:
        """``p`` (image), ``o`` (masked image) and which maps are constant, each ``(B,)``; shared by AD/AI/AG."""
        maps = self.prepare(batch.maps)
        images, model, targets = model_inputs(self.name, batch)

        def compute() -> tuple[Tensor, Tensor, Tensor]:
            low, high = flat(maps).amin(dim=1), flat(maps).amax(dim=1)
            constant = high == low
            saliency = safe_divide(maps - low[:, None, None], (high - low)[:, None, None]).to(images.dtype)
            p = target_scores(model, images, targets, softmax=True).double()
            o = target_scores(model, images * saliency[:, None], targets, softmax=True).double()
            return p, o, constant

        return batch.memoised(("masked_confidence",), compute)


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
