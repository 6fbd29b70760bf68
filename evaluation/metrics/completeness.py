"""The paper's own channel-level metrics (Buono et al., "Not All CAMs Are Complete", TMLR 2026).

Both score a CAM of the form ``Σ_k w_k A^k`` through its channel weights ``w`` in the channel-scaling
predictor ``g(z) = y^c(z_1·A^1, …, z_K·A^K)`` (``Need.CHANNEL_WEIGHTS``: the batch's ``weights`` (B, K)
and the method's target ``layer``). A method without channel weights (HiRes-CAM, LayerCAM) gives
``weights=None``, and the metric is undefined for it (NaN with the reason).
"""

from __future__ import annotations

import weakref

import torch
from torch import Tensor, nn

from attribution.channel_scaling import ChannelScaling, check_reference_pool, data_aware_perturbations, pool_features
from attribution.layout import FeatureLayout
from attribution.methods import cam_infidelity
from attribution.methods.base import LayerPass, forward_pass
from attribution.needs import Need
from attribution.params import integer
from attribution.split import LayerSplit, split_at
from evaluation.base import Batch, Metric, mark_undefined, safe_divide
from evaluation.perturbation import model_inputs
from evaluation.registry import register

__all__ = ["CAMInfidelity", "CompletenessGap"]


class _ChannelMetric(Metric):
    category, normalise = "faithfulness", False
    needs = frozenset({Need.MODEL, Need.CHANNEL_WEIGHTS})

    def score(self, batch: Batch) -> Tensor:
        images, model, targets = model_inputs(self.name, batch)
        (layer,) = batch.require(self.name, "layer")
        if batch.weights is None:
            undefined = torch.ones(len(images), dtype=torch.bool, device=images.device)
            zeros = torch.zeros(len(images), dtype=torch.float64, device=images.device)
            return mark_undefined(zeros, undefined, self.name, "the method has no channel weights (Σ_k w_k A^k)")
        predictor = _Predictor.of(model, layer, batch.layout, images, targets)
        return self.channel_score(batch.weights.to(images.device).double(), predictor)

    def channel_score(self, weights: Tensor, predictor: _Predictor) -> Tensor:
        """The metric of channel weights ``(B, K)``."""
        raise NotImplementedError


class _Predictor:
    """The split at the target layer, the images' pass through it and ``g(z)`` on them."""

    def __init__(self, split: LayerSplit, base: LayerPass) -> None:
        self.split, self.base = split, base
        self.g = ChannelScaling(split, base.feats, base.live, base.layout, base.targets)

    @classmethod
    def of(cls, model: nn.Module, layer: str, layout: FeatureLayout | None, images: Tensor,
           targets: Tensor) -> _Predictor:
        split = split_at(model, layer, layout)
        return cls(split, forward_pass(split, images, targets))

    @property
    def channels(self) -> int:
        return self.base.maps.shape[1]


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
    needs = frozenset({Need.MODEL, Need.CHANNEL_WEIGHTS, Need.HELD_OUT_REFERENCES})

    def __init__(
        self,
        reference: Tensor | None = None,
        reference_features: Tensor | None = None,
        n_perturbations: int | None = None,
        seed: int = 1,
    ) -> None:
        check_reference_pool(reference, reference_features)
        self.reference, self.reference_features = reference, reference_features
        self.n_perturbations = integer("n_perturbations", n_perturbations, 1, optional=True)
        self.seed = integer("seed", seed, 0)
        self._features: weakref.WeakKeyDictionary[LayerSplit, Tensor] = weakref.WeakKeyDictionary()

    def _pool(self, split: LayerSplit, device: torch.device) -> Tensor:
        if split not in self._features:
            features = pool_features(split, self.reference, self.reference_features, device)
            if features is None:
                raise ValueError(
                    "cam_infidelity needs held-out reference images (reference=…) or their features "
                    "(reference_features=…), disjoint from the ones Expected Grad-CAM was fitted on"
                )
            self._features[split] = features
        return self._features[split]

    def channel_score(self, weights: Tensor, predictor: _Predictor) -> Tensor:
        features = self._pool(predictor.split, weights.device)
        if features.shape[1] != predictor.channels:
            raise ValueError(f"reference features have {features.shape[1]} channels; layer "
                             f"{predictor.split.layer!r} has {predictor.channels}")
        pset = data_aware_perturbations(features, self.n_perturbations or 2 * predictor.channels, self.seed)
        I = pset.perturbations.to(weights.device)
        return cam_infidelity(weights, I, predictor.g.differences(I))


@register
class CompletenessGap(_ChannelMetric):
    """Relative violation of completeness at the zero baseline: ``|Σ_k w_k − (g(1) − g(0))| / |g(1) − g(0)|``,
    the gap between the weights' total and the target-score change from the layer's activations to
    none (the paper's completeness axiom in the channel-scaling space). 0 is complete; lower is
    better; undefined where ``g(1) = g(0)``.
    """

    name, direction = "completeness_gap", "lower"

    def channel_score(self, weights: Tensor, predictor: _Predictor) -> Tensor:
        change = predictor.g.differences(torch.ones_like(weights[:1]))[:, 0]  # g(1) − g(0)
        gap = safe_divide((weights.sum(dim=1) - change).abs(), change.abs())
        return mark_undefined(gap, change == 0, self.name, "g(1) = g(0): the layer does not change the target score")
