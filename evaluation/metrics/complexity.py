"""Complexity metrics: how concentrated a map is (Quantus defaults: ``abs`` and per-sample max-normalisation)."""

from __future__ import annotations

import torch

from attribution.params import non_negative
from evaluation.base import Batch, Metric, flat, mark_undefined, safe_divide
from evaluation.registry import register

__all__ = ["Complexity", "Sparseness", "EffectiveComplexity"]


@register
class Complexity(Metric):
    """Entropy of the fractional contributions ``p_i = |a_i| / Σ_j |a_j|`` (Bhatt et al., IJCAI 2020, eq. 4).

    ``-Σ p_i log p_i`` with ``0 log 0 = 0`` (Quantus adds 1e-12 inside the log: a difference below
    N·1e-12). Lower is simpler; a constant map has the maximum, ``log N``. An all-zero map is undefined.
    """

    name, direction, category, take_abs = "complexity", "lower", "complexity", True

    def score(self, batch: Batch) -> torch.Tensor:
        a = flat(self.prepare(batch.maps))
        total = a.sum(dim=1, keepdim=True)
        p = safe_divide(a, total)
        return mark_undefined(-torch.special.xlogy(p, p).sum(dim=1), total[:, 0] == 0, self.name, "all-zero map")


@register
class Sparseness(Metric):
    """Gini index of ``|a|`` (Chalasani et al., ICML 2020, sec. 5.3): ``Σ_i (2i − N − 1) a_(i) / (N Σ a)``.

    ``a_(i)`` sorted ascending. 0 for a constant map, → 1 for a single non-zero pixel. Quantus adds
    1e-7 to every value first (a relative change below 1e-6 on normalised maps); here the index is
    exact and an all-zero map is undefined instead.
    """

    name, direction, category, take_abs = "sparseness", "higher", "complexity", True

    def score(self, batch: Batch) -> torch.Tensor:
        a = flat(self.prepare(batch.maps)).sort(dim=1).values
        n = a.shape[1]
        weights = 2 * torch.arange(1, n + 1, device=a.device, dtype=a.dtype) - n - 1
        total = a.sum(dim=1)
        gini = safe_divide((a * weights).sum(dim=1), n * total)
        return mark_undefined(gini, total == 0, self.name, "all-zero map")


@register
class EffectiveComplexity(Metric):
    """Number of pixels with ``|a| > eps`` after max-normalisation (Nguyen & Martínez, 2020); 0 for an all-zero map."""

    name, direction, category, take_abs = "effective_complexity", "lower", "complexity", True

    def __init__(self, eps: float = 1e-5) -> None:
        self.eps = non_negative("eps", eps)

    def score(self, batch: Batch) -> torch.Tensor:
        return (flat(self.prepare(batch.maps)) > self.eps).sum(dim=1).to(torch.float64)
