"""The paper's own channel-level metrics (Buono et al., "Not All CAMs Are Complete", TMLR 2026).

Both score a CAM of the form ``Σ_k w_k A^k`` through its channel weights ``w`` in the channel-scaling
predictor ``g(z) = y^c(z_1·A^1, …, z_K·A^K)``; a method without channel weights (HiRes-CAM, LayerCAM)
is undefined (NaN with the reason). They need the method itself and its target layer
(``method=…, layer=…``); ``weights=`` (B, K) may be passed where the caller already has them.
"""

from __future__ import annotations

import weakref
from typing import ClassVar

import torch
from torch import Tensor

from attribution.channel_scaling import ChannelScaling, check_reference_pool, data_aware_perturbations, pool_features
from attribution.methods import WeightedCAM, cam_infidelity
from attribution.methods.base import LayerPass, forward_pass
from attribution.split import LayerSplit, split_at
from evaluation.base import Metric, ReferencePool, mark_undefined
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


def _predictor(model, layer: str, images: Tensor, targets: Tensor) -> tuple[LayerSplit, LayerPass, ChannelScaling]:
    split = split_at(model, layer)
    base = forward_pass(split, images, targets)
    return split, base, ChannelScaling(split, base.feats, base.live, base.layout, base.targets)


@register
class CAMInfidelity(_ChannelMetric):
    """Eq. 14 on held-out data-aware perturbations: ``(1/M) Σ_m (I_mᵀ w − (g(1) − g(1 − I_m)))²`` with
    ``I_m = 1 − a_m·h(x'_m)`` (Definition 3.8: ``a ~ U(0, 1)``, ``h`` the pooled target-layer maps, a new
    ``x'_m`` per perturbation; ``M = 2K`` by default). Lower is better.

    What is held out: the reference images ``x'``. Give this metric a pool disjoint from the one
    Expected Grad-CAM was fitted on (the job splits each dataset's reference source into the two
    by a seeded draw). Expected Grad-CAM minimises eq. 14 on its own fitting sample by construction
    (Theorem 3.10); on unseen references the score measures how well the weights generalise to the
    perturbation distribution, which is what the theorem's expectation promises, and every method
    is scored on the same held-out draw. ``seed`` draws the ``a_m`` and the order of the references.
    """

    name, direction = "cam_infidelity", "lower"
    reference_pool: ClassVar[ReferencePool] = "held_out"

    def __init__(
        self,
        reference: Tensor | None = None,
        reference_features: Tensor | None = None,
        n_perturbations: int | None = None,
        seed: int = 1,
    ):
        check_reference_pool(reference, reference_features)
        if n_perturbations is not None and (isinstance(n_perturbations, bool) or not isinstance(n_perturbations, int)
                                            or n_perturbations < 1):
            raise ValueError(f"n_perturbations must be an integer ≥ 1; got {n_perturbations!r}")
        self.reference, self.reference_features = reference, reference_features
        self.n_perturbations, self.seed = n_perturbations, seed
        self._features: weakref.WeakKeyDictionary[LayerSplit, Tensor] = weakref.WeakKeyDictionary()

    def _pool(self, split: LayerSplit, device) -> Tensor:
        if split not in self._features:
            features = pool_features(split, self.reference, self.reference_features, device)
            if features is None:
                raise ValueError(
                    "cam_infidelity needs held-out reference images (reference=…) or their features "
                    "(reference_features=…), disjoint from the ones Expected Grad-CAM was fitted on"
                )
            self._features[split] = features
        return self._features[split]

    def score(self, weights, model, layer, images, targets) -> Tensor:
        split, base, g = _predictor(model, layer, images, targets)
        features = self._pool(split, images.device)
        if features.shape[1] != base.maps.shape[1]:
            raise ValueError(f"reference features have {features.shape[1]} channels; layer {layer!r} has "
                             f"{base.maps.shape[1]}")
        pset = data_aware_perturbations(features, self.n_perturbations or 2 * base.maps.shape[1], self.seed)
        I = pset.perturbations.to(images.device)
        return cam_infidelity(weights, I, g.differences(I))


@register
class CompletenessGap(_ChannelMetric):
    """Relative violation of completeness at the zero baseline: ``|Σ_k w_k − (g(1) − g(0))| / |g(1) − g(0)|``,
    the gap between the weights' total and the target-score change from the layer's activations to
    none (the paper's completeness axiom in the channel-scaling space). 0 is complete; lower is
    better; undefined where ``g(1) = g(0)``.
    """

    name, direction = "completeness_gap", "lower"

    def score(self, weights, model, layer, images, targets) -> Tensor:
        _, _, g = _predictor(model, layer, images, targets)
        change = g.differences(torch.ones_like(weights[:1]))[:, 0]  # g(1) − g(0)
        gap = (weights.sum(dim=1) - change).abs() / torch.where(change != 0, change.abs(), torch.ones_like(change))
        return mark_undefined(gap, change == 0, self.name, "g(1) = g(0): the layer does not change the target score")
