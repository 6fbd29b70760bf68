"""App. B of Buono et al., "Not All CAMs Are Complete": the Monte Carlo budgets of Expected Grad-CAM.

Expected Grad-CAM's weights (Theorem 3.10, eq. 21) solve ``(M̂ + λ·Id) α = (1/M) Σ_m I_m ⟨I_m, φ^EG_m⟩`` with
``M̂ = (1/M) Σ_m I_m I_mᵀ`` over ``M`` data-aware perturbations ``I_m = 1 − a_m·h(x'_m)`` (Definition 3.8,
eq. 18) and ``φ^EG`` an ``N``-baseline, ``T``-step Monte Carlo estimate (eq. 17). Two sweeps:

* :func:`m_sweep` (App. B.2, Fig. 6): ``M`` across ``M = K`` at a fixed reference pool of ``R`` images.
  Per ``M``: the rank of ``M̂`` against ``min(M, K)`` (Prop. B.1, eq. 93) and ``min(M, K, R + 1)`` (the ``R``
  references and ``1`` span at most ``R + 1`` directions), the effective rank (the exponential of the spectral
  entropy), ``κ(M̂)``, ``κ(Cov I)`` (Fig. 6d) and the whitened ``κ(M_ref^{-1/2} M̂ M_ref^{-1/2})`` beside the
  Marchenko–Pastur prediction ``((√ρ + 1)/(√ρ − 1))²`` at ``ρ = M/K`` (Remark B.2, eq. 94: 33.97 at
  ``ρ = 2``), the relative Frobenius error ``‖M̂ − M_ref‖_F/‖M_ref‖_F`` (Fig. 6a, Prop. B.3, eq. 95: ``O(1/√M)``); per image the cosine of the
  weights to the large-``M`` solution ``α_∞`` (Fig. 6b), the SSIM of the heatmaps (Fig. 6c) and the
  surrogate infidelity (Fig. 6f): eq. 14 on an independent sample of ``M_eval`` perturbations of the same
  pool with exact differences ``g(z0) − g(z0 − I)`` (the estimator of the ``cam_infidelity`` metric).
* :func:`n_sweep` (App. B.3, Fig. 7): ``N`` of the Expected-Gradients route at fixed perturbations. Per
  image: the relative error of the attributions ``⟨I_m, φ^EG_m⟩`` and of the weights to a large-``N``
  solution (Fig. 7a), the weight cosine (7b), heatmap SSIM (7c), the completeness gap
  ``‖⟨I, φ^EG⟩ − (g(z0) − g(z0 − I))‖ / ‖g(z0) − g(z0 − I)‖`` over the ``M`` perturbations (7d), the
  infidelity (7e; beside that of the closed-form weights, which use the exact differences) and ``‖α‖₂`` (7f).
  One more row is Integrated Gradients: ``N = 1`` with ``𝒟 = δ₀`` (``σ = 0``), which Remark B.4 identifies
  with ``φ^IG``.

The Marchenko–Pastur law is that of i.i.d. isotropic samples. ``κ(M̂)`` and ``κ(Cov I)`` of real features
also carry the population's own anisotropy; the whitened ``κ`` removes it, but data-aware perturbations
scale a random direction by ``a ~ U(0, 1)``, whose spread widens the spectrum beyond eq. 94 (a scale mixture:
about 2.5× at ``ρ = 2``); Gaussian perturbations (``features=None``) follow eq. 94. Perturbations of a pool
smaller than ``M`` reuse references, which makes ``M̂`` a less noisy estimate of the pool's moment than
i.i.d. draws.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
from torch import Tensor, nn

from attribution.channel_scaling import ChannelScaling, RankDeficientWarning
from attribution.layout import FeatureLayout
from attribution.methods import ExpectedGradCAM, Regression
from attribution.methods.base import forward_pass
from attribution.split import split_at
from jobs.analyze.compare import (
    effective_rank,
    heatmaps,
    loglog_slope,
    map_ssim,
    relative_error,
    relative_frobenius,
    second_moment,
    weight_cosine,
    whitened_condition,
)
from jobs.analyze.tables import summarise

__all__ = [
    "MSweep",
    "NSweep",
    "SmallReferencePoolWarning",
    "Subject",
    "eg_regression",
    "m_sweep",
    "n_sweep",
    "rank_bound",
]

M_IMAGE_COLUMNS = ("weight_cosine", "map_ssim", "infidelity", "reference_infidelity", "weight_norm")
M_MATRIX_COLUMNS = ("rank", "rank_bound", "effective_rank", "above_ridge", "condition_number",
                    "covariance_condition_number", "whitened_condition_number", "marchenko_pastur",
                    "frobenius_error")
N_COLUMNS = ("attribution_error", "weight_error", "weight_cosine", "map_ssim", "completeness_gap", "infidelity",
             "closed_form_infidelity", "weight_norm")


class SmallReferencePoolWarning(UserWarning):
    """``R + 1 < K``: the pool spans fewer than ``K`` directions, so ``M̂`` is singular at every ``M``."""


def rank_bound(perturbations: int, channels: int, pool: int | None) -> int:
    """``min(M, K)`` (Prop. B.1, eq. 93), and ``min(M, K, R + 1)`` for data-aware perturbations of ``R`` references."""
    bound = min(perturbations, channels)
    return bound if pool is None else min(bound, pool + 1)


@dataclass(frozen=True, eq=False)
class Subject:
    """What both sweeps hold fixed: network, target layer, explained images and their classes, reference pool.

    ``features`` are ``h(x')`` of the ``R`` reference images (eq. 19), ``(R, K)``; ``None`` draws Gaussian
    perturbations ``I ~ N(0, 0.1²·Id)`` instead (App. A.1.5). ``batch_size`` bounds the rows after the layer
    evaluated at once; ``route`` is how ``g`` is evaluated (``"affine"``: GAP and a linear classifier, where the
    Expected-Gradients route is exact for every ``N`` and ``T``).
    """

    model: nn.Module
    layer: str
    images: Tensor
    targets: Tensor
    features: Tensor | None
    channels: int
    route: str
    layout: FeatureLayout | None = None
    ridge: float = 1e-6
    batch_size: int = 64

    @classmethod
    def of(
        cls,
        model: nn.Module,
        layer: str,
        images: Tensor,
        features: Tensor | None = None,
        *,
        layout: FeatureLayout | None = None,
        ridge: float = 1e-6,
        batch_size: int = 64,
    ) -> Subject:
        """Explain each image's top class; ``K`` and the route of ``g`` from one pass of the images."""
        split = split_at(model, layer, layout)
        base = forward_pass(split, images, None)
        route = ChannelScaling(split, base.feats, base.live, base.layout, base.targets).route
        if features is not None and features.shape[1] != base.maps.shape[1]:
            raise ValueError(f"reference features have {features.shape[1]} channels; layer {layer!r} has "
                             f"{base.maps.shape[1]}")
        return cls(model, layer, images, base.targets, features, base.maps.shape[1], route, layout, ridge, batch_size)

    @property
    def pool(self) -> int | None:
        """``R``, the reference images the data-aware perturbations draw from (``None``: Gaussian)."""
        return None if self.features is None else self.features.shape[0]

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.images.shape[-2:])

    def regression(self, perturbations: int, seed: int, *, sample_seeds: Sequence[int] | None = None,
                   **estimator: object) -> Regression:
        """Expected Grad-CAM's regression on ``perturbations`` draws of seed ``seed`` (closed form unless
        ``estimator`` says otherwise); ``M̂``'s rank deficiency is measured here, so it is not warned about."""
        pool = {"reference_features": self.features} if self.features is not None else {"perturbation": "gaussian"}
        method = ExpectedGradCAM(**pool, n_perturbations=perturbations, ridge=self.ridge, batch_size=self.batch_size,
                                 seed=seed, **estimator)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RankDeficientWarning)
            return method.regression(self.model, self.layer, self.images, self.targets, seeds=sample_seeds,
                                     layout=self.layout)

    def check_pool(self) -> None:
        """Warn (:class:`SmallReferencePoolWarning`) when ``R + 1 < K``: no ``M`` reaches full rank."""
        if self.pool is not None and self.pool + 1 < self.channels:
            warnings.warn(f"R = {self.pool} reference images span at most {self.pool + 1} < K = {self.channels} "
                          f"directions: rank(M̂) ≤ {self.pool + 1} at every M, the M = K transition is out of reach; "
                          f"use ≥ {self.channels - 1} references", SmallReferencePoolWarning, stacklevel=3)


@dataclass(frozen=True)
class MSweep:
    """Fig. 6: ``table`` has one row per (repeat, ``M``, image); the matrix columns repeat over images."""

    channels: int
    pool: int | None
    route: str
    reference_perturbations: int
    evaluation_perturbations: int
    table: pl.DataFrame

    def summary(self) -> pl.DataFrame:
        """Mean and standard deviation per ``M`` over images and repeats."""
        return summarise(self.table, ["perturbations", "ratio"], M_MATRIX_COLUMNS + M_IMAGE_COLUMNS)

    def slope(self) -> float | None:
        """The fitted log-log slope of the Frobenius error in ``M`` (Fig. 6a; eq. 95 predicts ``−1/2``)."""
        summary = self.summary()
        return loglog_slope(summary["perturbations"].to_numpy(), summary["frobenius_error_mean"].to_numpy())


@dataclass(frozen=True)
class NSweep:
    """Fig. 7: ``table`` has one row per (``N``, baseline distribution, image)."""

    channels: int
    pool: int | None
    route: str
    perturbations: int
    steps: int
    sigma: float
    reference_baselines: int
    evaluation_perturbations: int
    rank: int
    table: pl.DataFrame

    def summary(self) -> pl.DataFrame:
        """Mean and standard deviation per (``N``, baseline distribution) over images."""
        return summarise(self.table, ["baselines", "baseline", "sigma"], N_COLUMNS)

    def slope(self) -> float | None:
        """The fitted log-log slope of the attribution error in ``N`` (Fig. 7a; the CLT rate is ``−1/2``)."""
        summary = self.summary().filter(pl.col("baseline") == "gaussian")
        return loglog_slope(summary["baselines"].to_numpy(), summary["attribution_error_mean"].to_numpy())


def m_sweep(
    subject: Subject,
    budgets: Sequence[int],
    *,
    reference: int,
    evaluation: int,
    seed: int = 0,
    repeats: int = 1,
) -> MSweep:
    """Sweep the perturbation count ``M`` over ``budgets`` (App. B.2, Fig. 6; see the module docstring).

    ``reference`` is ``M_ref`` of ``M_ref`` and ``α_∞`` (seed ``seed + repeats``); ``evaluation`` the held-out
    sample of the surrogate infidelity (seed ``seed + repeats + 1``); repeat ``r`` draws with seed ``seed + r``.
    """
    subject.check_pool()
    k, pool = subject.channels, subject.pool
    ref = subject.regression(reference, seed + repeats)
    held_out = subject.regression(evaluation, seed + repeats + 1)
    ref_matrix, ref_maps = second_moment(ref), heatmaps(ref, subject.size)
    ref_infidelity = held_out.infidelity(ref.weights).cpu().numpy()
    rows = []
    for repeat in range(repeats):
        for m in budgets:
            fit = subject.regression(m, seed + repeat)
            matrix, d = second_moment(fit), fit.diagnostics
            shared = {
                "repeat": repeat, "perturbations": m, "ratio": m / k, "references": d.references,
                "rank": d.rank, "rank_bound": rank_bound(m, k, pool), "effective_rank": effective_rank(matrix),
                "above_ridge": d.above_ridge, "condition_number": d.condition_number,
                "covariance_condition_number": d.covariance_condition_number,
                "whitened_condition_number": whitened_condition(matrix, ref_matrix),
                "marchenko_pastur": math.nan if d.marchenko_pastur is None else d.marchenko_pastur,
                "frobenius_error": relative_frobenius(matrix, ref_matrix),
            }
            per_image = {
                "weight_cosine": weight_cosine(fit.weights, ref.weights),
                "map_ssim": map_ssim(heatmaps(fit, subject.size), ref_maps),
                "infidelity": held_out.infidelity(fit.weights).cpu().numpy(),
                "reference_infidelity": ref_infidelity,
                "weight_norm": fit.weights.double().norm(dim=1).cpu().numpy(),
            }
            rows += _image_rows(shared, per_image, fit.targets)
    return MSweep(k, pool, subject.route, reference, evaluation, pl.DataFrame(rows))


def eg_regression(
    subject: Subject,
    baselines: int,
    *,
    perturbations: int,
    steps: int,
    sigma: float,
    seed: int = 0,
    stream: int = 0,
) -> Regression:
    """The Expected-Gradients route of eq. 21: ``N = baselines`` baselines ``z' = z0 − I + σε`` and ``T = steps``
    midpoint steps per perturbation (eq. 17). ``σ = 0`` with ``N = 1`` is ``φ^IG`` (Remark B.4). The perturbations
    depend on ``seed`` only; ``stream`` picks independent baseline noise for the same perturbations."""
    sample_seeds = [stream * len(subject.images) + i for i in range(len(subject.images))]
    return subject.regression(perturbations, seed, sample_seeds=sample_seeds, estimator="expected_gradients",
                              eg_baselines=baselines, eg_steps=steps, eg_sigma=sigma)


def n_sweep(
    subject: Subject,
    baselines: Sequence[int],
    *,
    reference: int,
    perturbations: int,
    steps: int,
    evaluation: int,
    sigma: float = 0.1,
    seed: int = 0,
) -> NSweep:
    """Sweep the baseline count ``N`` over ``baselines`` (App. B.3, Fig. 7; see the module docstring).

    All fits share one set of ``perturbations`` (seed ``seed``); ``reference`` is the large ``N`` compared with
    (its own baseline noise); ``evaluation`` the held-out sample of the infidelity (seed ``seed + 1``).
    """
    exact = subject.regression(perturbations, seed)
    held_out = subject.regression(evaluation, seed + 1)
    ref = eg_regression(subject, reference, perturbations=perturbations, steps=steps, sigma=sigma, seed=seed,
                        stream=1)
    ref_maps = heatmaps(ref, subject.size)
    exact_infidelity = held_out.infidelity(exact.weights).cpu().numpy()
    fits = [(n, "gaussian", sigma, eg_regression(subject, n, perturbations=perturbations, steps=steps, sigma=sigma,
                                                  seed=seed)) for n in baselines]
    fits.append((1, "dirac", 0.0, eg_regression(subject, 1, perturbations=perturbations, steps=steps, sigma=0.0,
                                                seed=seed)))
    rows = []
    for n, kind, scale, fit in fits:
        shared = {"baselines": n, "baseline": kind, "sigma": scale}
        per_image = {
            "attribution_error": relative_error(fit.deltas, ref.deltas),
            "weight_error": relative_error(fit.weights, ref.weights),
            "weight_cosine": weight_cosine(fit.weights, ref.weights),
            "map_ssim": map_ssim(heatmaps(fit, subject.size), ref_maps),
            "completeness_gap": relative_error(fit.deltas, exact.deltas),
            "infidelity": held_out.infidelity(fit.weights).cpu().numpy(),
            "closed_form_infidelity": exact_infidelity,
            "weight_norm": fit.weights.double().norm(dim=1).cpu().numpy(),
        }
        rows += _image_rows(shared, per_image, fit.targets)
    return NSweep(subject.channels, subject.pool, subject.route, perturbations, steps, sigma, reference, evaluation,
                  exact.diagnostics.rank, pl.DataFrame(rows))


def _image_rows(shared: dict[str, object], per_image: dict[str, np.ndarray], targets: Tensor) -> list[dict]:
    """One row per image: the shared values, the image's index and class, and its entry of each per-image array."""
    return [
        {**shared, "image": i, "target": int(target), **{key: float(values[i]) for key, values in per_image.items()}}
        for i, target in enumerate(targets.tolist())
    ]
