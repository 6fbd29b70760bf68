"""The paper's own channel-level metrics (Buono et al., "Not All CAMs Are Complete", TMLR 2026).

Both score a CAM of the form ``Σ_k w_k A^k`` through its channel weights ``w`` in the channel-scaling
predictor ``g(z) = y^c(z_1·A^1, …, z_K·A^K)``; a method without channel weights (HiRes-CAM, LayerCAM)
is undefined (NaN with the reason). They need the method itself and its target layer
(``method=…, layer=…``); ``weights=`` (B, K) may be passed where the caller already has them.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attribution.methods import ExpectedGradCAM, WeightedCAM, cam_infidelity
from attribution.methods.base import forward_pass
from attribution.split import split_at
from evaluation.base import Metric, mark_undefined
from evaluation.perturbation import check_model_inputs
from evaluation.registry import register

__all__ = ["CAMInfidelity", "CompletenessGap"]


class _ChannelMetric(Metric):
    category, normalise = "faithfulness", False
    needs = frozenset({"model", "method"})

    def __call__(
        self, maps, *, images=None, model=None, targets=None, method=None, layer=None, weights=None, seeds=None, **_
    ) -> Tensor:
        images, model, targets = check_model_inputs(self.name, images, model, targets, maps)
        if method is None or layer is None:
            raise ValueError(f"{self.name} needs the method and its target layer (method=…, layer=…)")
        if weights is None and not isinstance(method, WeightedCAM):
            undefined = torch.ones(len(maps), dtype=torch.bool, device=maps.device)
            reason = f"{type(method).__name__} is not a channel-weighted CAM (Σ_k w_k A^k)"
            return mark_undefined(
                torch.zeros(len(maps), dtype=torch.float64, device=maps.device), undefined, self.name, reason
            )
        if weights is None:
            weights = method.channel_weights(model, layer, images, targets, seeds=seeds)
        return self.score(torch.as_tensor(weights, device=images.device).double(), model, layer, images, targets)

    def score(self, weights: Tensor, model, layer: str, images: Tensor, targets: Tensor) -> Tensor:
        """The metric of channel weights ``(B, K)``."""
        raise NotImplementedError


@register
class CAMInfidelity(_ChannelMetric):
    """Eq. 14: ``(1/M) Σ_m (I_mᵀ w − (g(1) − g(1 − I_m)))²`` over data-aware perturbations
    ``I = 1 − a·h(x')`` (App. B.1: ``x'`` from ``reference``, ``a ~ U(0, 1)``, ``h`` the pooled target-layer
    maps; ``M = 2K`` by default). Lower is better; Expected Grad-CAM's weights minimise it on the
    sample they were fitted on (Theorem 3.10).

    The evaluation sample is drawn with this metric's ``seed`` — by default not the seed Expected
    Grad-CAM fits with, so the score is a held-out estimate of the expectation.
    """

    name, direction = "cam_infidelity", "lower"

    def __init__(
        self, reference: Tensor | None = None, n_perturbations: int | None = None, seed: int = 1, batch_size: int = 64
    ):
        self.probe = ExpectedGradCAM(
            reference=reference, n_perturbations=n_perturbations, seed=seed, batch_size=batch_size
        )

    def score(self, weights, model, layer, images, targets) -> Tensor:
        fit = self.probe.regression(model, layer, images, targets)
        return cam_infidelity(weights, fit.perturbations.double(), fit.deltas.double())


@register
class CompletenessGap(_ChannelMetric):
    """Relative violation of completeness at the zero baseline: ``|Σ_k w_k − (g(1) − g(0))| / |g(1) − g(0)|``,
    the gap between the weights' total and the target-score change from the layer's activations to
    none (the paper's completeness axiom in the channel-scaling space). 0 is complete; lower is
    better; undefined where ``g(1) = g(0)``.
    """

    name, direction = "completeness_gap", "lower"

    def score(self, weights, model, layer, images, targets) -> Tensor:
        split = split_at(model, layer)
        base = forward_pass(split, images, targets)
        with torch.no_grad():
            change = (
                base.target_scores()
                - base.scaled_scores(split, torch.zeros_like(weights[:1], dtype=base.feats.dtype))[:, 0]
            ).double()
        gap = (weights.sum(dim=1) - change).abs() / torch.where(change != 0, change.abs(), torch.ones_like(change))
        return mark_undefined(gap, change == 0, self.name, "g(1) = g(0): the layer does not change the target score")
