"""Expected Grad-CAM (Buono et al., "Not All CAMs Are Complete", TMLR 2026).

The channel-scaling predictor of a target layer with activations ``A`` is
``g(z) = y^c(z_1·A^1, …, z_K·A^K)``, with ``z0 = 1`` the unperturbed network
(:mod:`attribution.channel_scaling`). Expected Grad-CAM's channel weights minimise the explanation
infidelity (Yeh et al. 2019; the paper's eq. 14)

    INFD(α) = E_I[(Iᵀα − (g(z0) − g(z0 − I)))²]

over a perturbation distribution of ``I`` (Definition 3.9, eq. 20); the minimiser (Theorem 3.10, eq. 21) is

    α* = (M̂ + λ·Id)⁻¹ · (1/M) Σ_m I_m ⟨I_m, φ^EG_m⟩,    M̂ = (1/M) Σ_m I_m I_mᵀ,

and the map is ``ReLU(Σ_k α*_k A^k)`` (Definition 3.11, eq. 22). By completeness,
``⟨I, φ^EG⟩ = g(z0) − g(z0 − I)``; ``estimator="closed_form"`` uses that exact difference.
Perturbation distributions:

* ``"data"`` (the paper's default, Definition 3.8 and App. B.1): ``I = 1 − a·h(x')``, ``x'`` drawn
  from a reference distribution of the same dataset (its train split; never the explained image),
  a new ``x'`` per perturbation, ``a ~ U(0, 1)``, ``h`` the global average pool of the target layer's
  maps of ``x'`` (eq. 19); ``M = 2K`` (Table 2). ``M̂`` has rank ``≤ min(M, K, R + 1)`` with ``R`` distinct
  references: the paper's full-rank regime needs ``R ≥ K − 1`` reference images, and a smaller pool
  raises a :class:`~attribution.channel_scaling.RankDeficientWarning` (:meth:`ExpectedGradCAM.diagnostics`).
* ``"gaussian"``: ``I ~ N(μ·1, σ²·Id)`` (App. A.1.5).
* ``"dirac"``: a point mass at ``I0`` (App. A.1.5, eqs. 53 and 68). ``M̂ = I0 I0ᵀ`` is singular; the
  minimum-norm solution ``α = I0 (g(z0) − g(z0 − I0)) / ‖I0‖²`` satisfies completeness at ``I0``.

The perturbation set depends only on the reference features and the seed, so ``M̂`` and its
Cholesky factor (float64) are built once per (model, layer) and reused for every image.

Cost per image, by the route of :class:`~attribution.channel_scaling.ChannelScaling`: when the
network after the layer is a global average pool and a linear classifier (ResNet, Inception v3,
EfficientNet), ``g`` is affine in ``z`` with ``∂g/∂z = w^c ⊙ GAP(A)`` and ``α* = P·∂g/∂z``,
``P = (M̂ + λ·Id)⁻¹M̂`` computed once: no pass after the target layer at all. At full rank ``P → Id``,
so the weights are ``w^c ⊙ GAP(A)`` — what Ablation-CAM (times ``y^c``) and Integrated Grad-CAM also
give on such heads; the methods differ on nonlinear heads. A pooled nonlinear head (ConvNeXt) runs
on ``(M, K)`` pooled vectors; pools and ReLUs before a linear layer (VGG, AlexNet, DenseNet) make
that layer linear in ``z ≥ 0``, so each perturbation costs ``K`` of its columns; any other suffix (ViT
blocks) runs on the ``M`` scaled activations, ``batch_size`` rows at a time.

``estimator="expected_gradients"`` is the paper's Monte Carlo route ``⟨I_m, φ^EG_m⟩``, with
``φ^EG_m`` the mean over ``N`` baselines ``z' = z0 − I_m + σ·ε`` (``ε ~ N(0, Id)``, σ = 0.1) of the
``T``-step midpoint Riemann sum of ``∇g`` on the straight path from ``z'`` to ``z0``. Eq. 17 as printed
integrates from ``z' ~ N(0, σ²)`` to ``z0 − I``, which contradicts Remark B.4 (``N = 1``, ``𝒟 = δ₀`` gives
``φ^IG`` on the path ``z0 − I → z0``); this module follows Remark B.4. For ``g`` affine in ``z`` the route
is exact for every ``N`` and ``T``. It costs ``M·N·T`` gradients of ``g`` per image and exists to
compare the two estimators.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attribution.channel_scaling import (
    ChannelScaling,
    Diagnostics,
    PerturbationSet,
    SecondMoment,
    check_reference_pool,
    data_aware_perturbations,
    dirac_perturbation,
    gaussian_perturbations,
    pool_features,
)
from attribution.layout import FeatureLayout
from attribution.methods.base import (
    ChannelWeights,
    LayerPass,
    Seeds,
    Targets,
    WeightedCAM,
    check_images,
    forward_pass,
    sample_generators,
)
from attribution.methods.registry import register
from attribution.needs import Need
from attribution.params import integer, non_negative, number, positive
from attribution.split import LayerSplit

__all__ = ["ExpectedGradCAM", "Regression", "cam_infidelity"]

Perturbation = Literal["data", "gaussian", "dirac"]
Estimator = Literal["closed_form", "expected_gradients"]


def cam_infidelity(weights: Tensor, perturbations: Tensor, deltas: Tensor) -> Tensor:
    """The paper's eq. 14 on a perturbation sample: ``(1/M) Σ_m (I_mᵀ α − Δ_m)²`` per image.

    ``weights`` (B, K), ``perturbations`` (M, K), ``deltas`` (B, M) with ``Δ_m = g(z0) − g(z0 − I_m)``.
    """
    return (weights @ perturbations.T - deltas).pow(2).mean(dim=1)


@dataclass
class Regression:
    """Expected Grad-CAM's regression for a batch: its solution and the sample it was fitted on."""

    weights: Tensor  # (B, K): α*
    maps: Tensor  # (B, K, U, V): A
    perturbations: Tensor  # (M, K): I_m (float64)
    deltas: Tensor  # (B, M): g(z0) − g(z0 − I_m) (or its Expected-Gradients estimate), float64
    diagnostics: Diagnostics
    targets: Tensor  # (B,): the classes explained

    def infidelity(self, weights: Tensor | None = None) -> Tensor:
        """Eq. 14 of ``weights`` (default: α*) on this regression's perturbation sample."""
        weights = self.weights if weights is None else weights
        return cam_infidelity(weights.double(), self.perturbations, self.deltas)


@dataclass(eq=False)
class _FittedSet:
    moment: SecondMoment  # M̂ and its factor, on the device
    perturbations: Tensor  # (M, K) float64 on the device
    reference: Tensor | None  # (R, K) h(x') of the pool on the device, float64 (to refuse explaining a reference)
    reference_sq_norms: Tensor | None = None  # (R,) ‖h(x')‖²


@register
class ExpectedGradCAM(WeightedCAM):
    """Expected Grad-CAM: infidelity-optimal channel weights (see the module docstring).

    Args:
        reference: normalised reference images ``(R, C, H, W)`` for data-aware perturbations; their
            features ``h(x')`` are computed once per (model, layer).
        reference_features: precomputed ``h(x')`` ``(R, K)`` of the reference images instead
            (:func:`attribution.channel_scaling.reference_features`).
        perturbation: ``"data"``, ``"gaussian"`` or ``"dirac"``.
        n_perturbations: ``M``; default ``2K`` (``1`` for the Dirac case).
        ridge: Tikhonov ``λ``.
        gaussian_mean, gaussian_std: ``μ`` and ``σ`` of the Gaussian case.
        dirac_point: ``I0`` of the Dirac case (a scalar times ``1``, or a ``(K,)`` tensor).
        estimator: ``"closed_form"`` (exact differences) or ``"expected_gradients"``.
        eg_baselines, eg_steps, eg_sigma: ``N``, ``T`` and ``σ`` of the Expected-Gradients route.
        batch_size: rows after the target layer evaluated at once on the general route (bounds memory).
        fast_path: evaluate ``g`` in closed form (affine heads), on pooled vectors (pooled heads) or through
            the first linear layer folded per channel (stem), where the network after the layer allows it
            (exact); ``False`` runs every perturbation through the whole suffix, for comparison.
        seed: seed of the perturbation set (and, with per-image seeds, of the EG baselines).
    """

    name = "expected_gradcam"

    def __init__(
        self,
        reference: Tensor | None = None,
        reference_features: Tensor | None = None,
        perturbation: Perturbation = "data",
        n_perturbations: int | None = None,
        ridge: float = 1e-6,
        gaussian_mean: float = 0.0,
        gaussian_std: float = 0.1,
        dirac_point: float | Tensor = 1.0,
        estimator: Estimator = "closed_form",
        eg_baselines: int = 100,
        eg_steps: int = 50,
        eg_sigma: float = 0.1,
        batch_size: int = 64,
        fast_path: bool = True,
        seed: int = 0,
    ) -> None:
        if perturbation not in ("data", "gaussian", "dirac"):
            raise ValueError(f"unknown perturbation distribution {perturbation!r}; use 'data', 'gaussian' or 'dirac'")
        if estimator not in ("closed_form", "expected_gradients"):
            raise ValueError(f"unknown estimator {estimator!r}; use 'closed_form' or 'expected_gradients'")
        check_reference_pool(reference, reference_features)
        if not isinstance(dirac_point, Tensor):
            number("dirac_point", dirac_point)
        if not isinstance(fast_path, bool):
            raise TypeError(f"fast_path must be True or False; got {fast_path!r}")
        self.reference, self.reference_features = reference, reference_features
        self.perturbation = perturbation
        self.n_perturbations = integer("n_perturbations", n_perturbations, 1, optional=True)
        self.ridge = positive("ridge", ridge)
        self.gaussian_mean = number("gaussian_mean", gaussian_mean)
        self.gaussian_std = non_negative("gaussian_std", gaussian_std)
        self.dirac_point = dirac_point
        self.estimator = estimator
        self.eg_baselines = integer("eg_baselines", eg_baselines, 1)
        self.eg_steps = integer("eg_steps", eg_steps, 1)
        self.eg_sigma = non_negative("eg_sigma", eg_sigma)
        self.batch_size = integer("batch_size", batch_size, 1)
        self.fast_path, self.seed = fast_path, integer("seed", seed)
        self._sets: weakref.WeakKeyDictionary[LayerSplit, _FittedSet] = weakref.WeakKeyDictionary()

    @property
    def needs(self) -> frozenset[Need]:
        """Data-aware perturbations draw from the dataset's fitting pool; the Gaussian and Dirac cases do not."""
        return frozenset({Need.FIT_REFERENCES}) if self.perturbation == "data" else frozenset()

    def __repr__(self) -> str:
        if self.reference is not None:
            ref = f"reference={tuple(self.reference.shape)}"
        elif self.reference_features is not None:
            ref = f"reference_features={tuple(self.reference_features.shape)}"
        else:
            ref = "reference=None"
        return (
            f"ExpectedGradCAM({ref}, perturbation={self.perturbation!r}, M={self.n_perturbations}, "
            f"estimator={self.estimator!r}, seed={self.seed})"
        )

    # -- public API -------------------------------------------------------------------------
    def regression(
        self,
        model: nn.Module,
        layer: str,
        images: Tensor,
        targets: Targets = None,
        *,
        seeds: Seeds = None,
        layout: FeatureLayout | None = None,
    ) -> Regression:
        """The weights together with the perturbation sample and differences they were fitted on."""
        check_images(images)
        return self._regress(self.bind(model, layer, layout).split, images, targets, seeds)

    def diagnostics(
        self, model: nn.Module, layer: str, *, layout: FeatureLayout | None = None, device: torch.device | None = None
    ) -> Diagnostics:
        """``M``, ``K``, distinct references, rank and condition number of this method's ``M̂`` for (model, layer)."""
        split = self.bind(model, layer, layout).split
        device = device or next(model.parameters()).device
        return self._fitted_set(split, self._channels(split, model, device), device).moment.diagnostics

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> ChannelWeights:
        fit = self._regress(split, images, targets, seeds)
        return ChannelWeights(fit.weights, fit.maps, fit.targets, fit.diagnostics)

    def _release(self, split: LayerSplit) -> None:
        self._sets.pop(split, None)

    # -- the regression -----------------------------------------------------------------------
    def _regress(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> Regression:
        base = forward_pass(split, images, targets)
        fitted = self._fitted_set(split, base.maps.shape[1], images.device)
        if fitted.reference is not None:
            _reject_reference_members(base.maps.mean(dim=(2, 3)), fitted.reference, fitted.reference_sq_norms)
        g = ChannelScaling(
            split, base.feats, base.live, base.layout, base.targets, chunk=self.batch_size, fast_path=self.fast_path
        )
        I = fitted.perturbations
        gradient = g.linear_gradient() if self.perturbation != "dirac" else None
        if self.estimator == "expected_gradients":
            deltas = self._expected_gradient_deltas(g, base, I, sample_generators(self.seed, seeds, len(images)))
        elif gradient is not None:
            deltas = gradient @ I.T
        else:
            deltas = g.differences(I)
        if self.perturbation == "dirac":  # minimum-norm solution of the rank-one system
            weights = deltas[:, :1] * I[0] / I[0].dot(I[0])
        elif gradient is not None and self.estimator == "closed_form":
            weights = gradient @ fitted.moment.projection.T  # α* = P ∂g/∂z, exact for an affine g
        else:
            weights = fitted.moment.solve(deltas @ I / I.shape[0])  # (M̂ + λI)⁻¹ (1/M) Σ_m Δ_m I_m
        return Regression(weights.to(base.feats.dtype), base.maps, I, deltas, fitted.moment.diagnostics, base.targets)

    def _expected_gradient_deltas(
        self, g: ChannelScaling, base: LayerPass, I: Tensor, generators: list[torch.Generator]
    ) -> Tensor:
        """``⟨I_m, φ^EG_m⟩``: Expected Gradients of ``g`` from ``z' = z0 − I_m + σε`` to ``z0`` (eqs. 17, 21)."""
        b, device, dtype = base.feats.shape[0], base.feats.device, base.feats.dtype
        m_total, k = I.shape
        n, t_steps = self.eg_baselines, self.eg_steps
        t = (torch.arange(t_steps, device=device, dtype=dtype) + 0.5) / t_steps  # midpoint Riemann sum
        index = torch.arange(b, device=device).repeat_interleave(n * t_steps)
        deltas = torch.empty(b, m_total, device=device, dtype=torch.float64)
        for m in range(m_total):
            eps = torch.stack([torch.randn((n, k), generator=gen) for gen in generators]).to(device, dtype)  # (B, N, K)
            start = (1 - I[m].to(dtype)) + self.eg_sigma * eps  # baselines z'
            z = (start[:, :, None] + t[None, None, :, None] * (1 - start)[:, :, None]).reshape(-1, k)
            grads = torch.cat(
                [
                    g.gradient(z[s : s + self.batch_size], index[s : s + self.batch_size])
                    for s in range(0, z.shape[0], self.batch_size)
                ]
            )
            phi = grads.reshape(b, n * t_steps, k).double().mean(dim=1)  # φ^EG_m: mean over baselines and steps
            deltas[:, m] = phi @ I[m]
        return deltas

    # -- the perturbation set, once per (model, layer) ------------------------------------------
    def _channels(self, split: LayerSplit, model: nn.Module, device: torch.device) -> int:
        if self.reference_features is not None:
            return self.reference_features.shape[1]
        probe = self.reference[:1] if self.reference is not None else None
        if probe is None:
            raise ValueError("the number of channels is known once an image is explained; call the method first")
        with torch.no_grad():
            feats, _ = split.features(probe.to(device))
        return split.layout_for(feats).to_maps(feats).shape[1]

    def _fitted_set(self, split: LayerSplit, channels: int, device: torch.device) -> _FittedSet:
        cached = self._sets.get(split)
        if cached is not None and cached.perturbations.device == device:
            return cached
        if cached is not None:
            fitted = _FittedSet(cached.moment.to(device), cached.perturbations.to(device),
                                *(None if t is None else t.to(device) for t in (cached.reference,
                                                                                 cached.reference_sq_norms)))
            self._sets[split] = fitted
            return fitted
        features = self._reference_pool(split, device) if self.perturbation == "data" else None
        if features is not None and features.shape[1] != channels:
            raise ValueError(
                f"reference features have {features.shape[1]} channels but layer {split.layer!r} has {channels}"
            )
        pset = self._perturbations(channels, features)
        reference = None if features is None else features.to(device, torch.float64)
        fitted = _FittedSet(SecondMoment.of(pset, self.ridge).to(device), pset.perturbations.to(device), reference,
                            None if reference is None else reference.pow(2).sum(dim=1))
        self._sets[split] = fitted
        return fitted

    def _perturbations(self, channels: int, features: Tensor | None) -> PerturbationSet:
        m = self.perturbations(channels)
        if self.perturbation == "dirac":
            return dirac_perturbation(self.dirac_point, channels)
        if self.perturbation == "gaussian":
            return gaussian_perturbations(channels, m, self.gaussian_mean, self.gaussian_std, self.seed)
        assert features is not None
        return data_aware_perturbations(features, m, self.seed)

    def second_moment(self, channels: int, *, warn: bool = True) -> SecondMoment:
        """``M̂`` of this method's perturbations for a layer of ``channels`` channels, without a model
        (data-aware perturbations need ``reference_features``); ``.diagnostics`` says its rank."""
        if self.perturbation == "data" and self.reference_features is None:
            raise ValueError("second_moment without a model needs reference_features")
        features = None if self.reference_features is None else self.reference_features.detach().float().cpu()
        return SecondMoment.of(self._perturbations(channels, features), self.ridge, warn=warn)

    def perturbations(self, channels: int) -> int | None:
        """``M``: ``n_perturbations``, else ``2K`` (one for the Dirac case)."""
        return 1 if self.perturbation == "dirac" else self.n_perturbations or 2 * channels

    def fit_diagnostics(self, channels: int) -> Diagnostics | None:
        """The diagnostics of ``M̂`` (:meth:`second_moment`), without warning."""
        return self.second_moment(channels, warn=False).diagnostics

    def _reference_pool(self, split: LayerSplit, device: torch.device) -> Tensor:
        features = pool_features(split, self.reference, self.reference_features, device)
        if features is None:
            raise ValueError(
                "Expected Grad-CAM with data-aware perturbations needs a reference distribution: "
                "ExpectedGradCAM(reference=images) or (reference_features=h) from the dataset's train split, "
                "at least K images for a full-rank M̂"
            )
        return features


def _reject_reference_members(gap: Tensor, reference: Tensor, reference_sq_norms: Tensor) -> None:
    """Raise if an explained image is one of the reference images (identical pooled features).

    ``‖g − r‖² = ‖g‖² + ‖r‖² − 2 g·r`` with the pool's ``‖r‖²`` computed once. A match is within 1e-4 relative:
    the pool's features may come from another batch composition or memory layout (1e-7 apart on the CPU,
    more with TF32 on a GPU), while distinct images differ by far more.
    """
    gap = gap.double()
    sq = gap.pow(2).sum(dim=1, keepdim=True)
    distance_sq = (sq + reference_sq_norms[None] - 2 * gap @ reference.T).clamp(min=0)
    hits = (distance_sq <= 1e-8 * sq.clamp(min=1e-24)).any(dim=1)
    if hits.any():
        raise ValueError(
            f"images {hits.nonzero().flatten().tolist()} of the batch are in Expected Grad-CAM's reference set; "
            "explain an image with references that exclude it"
        )
