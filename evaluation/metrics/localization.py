"""Localisation metrics: agreement of a map with a ground-truth object mask (``needs = {"masks"}``).

Maps are max-normalised per sample (Quantus's default); ``abs`` as Quantus's default per metric.
An empty mask makes every one of them undefined (NaN, logged).
"""

from __future__ import annotations

import torch

from attribution.needs import Need
from attribution.params import integer
from evaluation.base import Batch, Metric, flat, mark_undefined, safe_divide
from evaluation.registry import register

__all__ = [
    "AttributionLocalisation",
    "TopKIntersection",
    "RelevanceRankAccuracy",
    "RelevanceMassAccuracy",
    "LocalisationAUC",
]

EMPTY = "empty ground-truth mask"


def _inputs(metric: Metric, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
    """``(a, s)``: the prepared maps and the masks, both ``(B, H·W)``."""
    (masks,) = batch.require(metric.name, "masks")
    s = masks.to(device=batch.maps.device, dtype=torch.bool)
    return flat(metric.prepare(batch.maps)), s.reshape(len(s), -1)


def _share_inside(metric: Metric, a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``Σ_{in} a / Σ a`` per sample; NaN (logged) where the map sums to zero or the mask is empty."""
    total = a.sum(dim=1)
    share = safe_divide((a * s).sum(dim=1), total)
    share = mark_undefined(share, total == 0, metric.name, "map sums to zero")
    return mark_undefined(share, s.sum(dim=1) == 0, metric.name, EMPTY)


@register
class AttributionLocalisation(Metric):
    """Share of positive relevance inside the mask (Kohlbrenner et al., IJCNN 2020, eq. 3): ``Σ_{in} a / Σ a``.

    ``weighted=True`` multiplies by the mask's share of the image. Quantus 0.6.0 divides by
    ``x_batch[2:].size`` there (a batch slice, not the image size); this uses the image size.
    Undefined for an empty mask or a map with no relevance (Quantus returns 0 via its +1e-9).
    """

    name, direction, category, take_abs = "attribution_localisation", "higher", "localization", True
    needs = frozenset({Need.MASKS})

    def __init__(self, weighted: bool = False) -> None:
        self.weighted = weighted

    def score(self, batch: Batch) -> torch.Tensor:
        a, s = _inputs(self, batch)
        ratio = _share_inside(self, a, s)
        return ratio * s.sum(dim=1) / s.shape[1] if self.weighted else ratio


@register
class TopKIntersection(Metric):
    """Share of the ``k`` most relevant pixels that lie in the mask (Theiner et al., 2021).

    Ties at the k-th value are broken by ``torch.topk`` (Quantus uses ``np.argsort``; both are
    arbitrary among equal values).
    """

    name, direction, category = "top_k_intersection", "higher", "localization"
    needs = frozenset({Need.MASKS})

    def __init__(self, k: int = 1000) -> None:
        self.k = integer("k", k, 1)

    def score(self, batch: Batch) -> torch.Tensor:
        a, s = _inputs(self, batch)
        if self.k > a.shape[1]:
            raise ValueError(f"{self.name}: k = {self.k} exceeds the {a.shape[1]} pixels of a map")
        top = a.topk(self.k, dim=1).indices
        return mark_undefined(s.gather(1, top).to(torch.float64).mean(dim=1), s.sum(dim=1) == 0, self.name, EMPTY)


@register
class RelevanceRankAccuracy(Metric):
    """Share of the ``K = |mask|`` most relevant pixels inside the mask (Arras et al., Inf. Fusion 2022, eq. 6)."""

    name, direction, category = "relevance_rank_accuracy", "higher", "localization"
    needs = frozenset({Need.MASKS})

    def score(self, batch: Batch) -> torch.Tensor:
        a, s = _inputs(self, batch)
        size = s.sum(dim=1)
        order = a.argsort(dim=1, descending=True, stable=True)
        ranked_in_mask = s.gather(1, order)
        within_top = torch.arange(a.shape[1], device=a.device)[None, :] < size[:, None]
        hits = (ranked_in_mask & within_top).sum(dim=1).to(torch.float64)
        return mark_undefined(safe_divide(hits, size.to(hits.dtype)), size == 0, self.name, EMPTY)


@register
class RelevanceMassAccuracy(Metric):
    """Share of the relevance mass inside the mask (Arras et al., Inf. Fusion 2022, eq. 5): ``Σ_{in} a / Σ a``."""

    name, direction, category = "relevance_mass_accuracy", "higher", "localization"
    needs = frozenset({Need.MASKS})

    def score(self, batch: Batch) -> torch.Tensor:
        return _share_inside(self, *_inputs(self, batch))


@register
class LocalisationAUC(Metric):
    """ROC AUC of the map as a pixel classifier of the mask (Fawcett 2006), i.e. the Mann–Whitney
    probability ``P(a_in > a_out) + ½ P(a_in = a_out)`` — what Quantus gets from sklearn's ROC curve.

    Undefined when the mask is empty or covers the whole image.
    """

    name, direction, category = "auc", "higher", "localization"
    needs = frozenset({Need.MASKS})

    def score(self, batch: Batch) -> torch.Tensor:
        a, s = _inputs(self, batch)
        values = torch.full((len(a),), float("nan"), dtype=torch.float64, device=a.device)
        for i, (scores, inside) in enumerate(zip(a, s)):
            positives, negatives = scores[inside], scores[~inside].sort().values
            if len(positives) and len(negatives):
                below = torch.searchsorted(negatives, positives, side="left").to(torch.float64)
                not_above = torch.searchsorted(negatives, positives, side="right").to(torch.float64)
                values[i] = ((below + not_above) / 2).sum() / (len(positives) * len(negatives))
        size = s.sum(dim=1)
        values = mark_undefined(values, size == s.shape[1], self.name, "mask covers the whole image")
        return mark_undefined(values, size == 0, self.name, EMPTY)
