"""The paper's channel-scaling predictor ``g(z)``, its perturbations and its second-moment matrix.

Buono et al., "Not All CAMs Are Complete" (TMLR 2026). For a target layer with activations
``A = (A^1, …, A^K)`` the predictor is ``g(z; A) = y^c(z_1·A^1, …, z_K·A^K)`` around ``z0 = 1``
(eq. 14). Everything built on it lives here, so Expected Grad-CAM and the metrics that score
channel weights share one definition:

* :func:`reference_features` — ``h(x') = GAP(A(x'))`` of reference images (eq. 19);
* :func:`data_aware_perturbations` — ``I_m = 1 − a_m·h(x'_m)``, ``a_m ~ U(0, 1)``, each ``m``
  drawing its own reference image ``x'_m`` (Definition 3.8, eq. 18); also the Gaussian and
  Dirac distributions of App. A.1.5;
* :class:`SecondMoment` — ``M̂ = (1/M) Σ_m I_m I_mᵀ``, the Cholesky factor of ``M̂ + λ·Id``
  (App. A.1.5, eq. 55) and its :class:`Diagnostics`: ``M``, ``K``, distinct references ``R``,
  numerical rank, condition number and the Marchenko–Pastur prediction of App. B.2 (eq. 94);
* :class:`ChannelScaling` — ``g`` for a batch of images, ``Δ_m = g(z0) − g(z0 − I_m)`` and
  ``∂g/∂z``, on the cheapest route the network allows.

Rank. ``rank(M̂) ≤ min(M, K)`` (Prop. B.1), and data-aware perturbations from ``R`` distinct
reference images span at most ``R + 1`` directions (``1`` and the ``h(x'_r)``), so
``rank(M̂) ≤ min(M, K, R + 1)``: full rank needs ``M ≥ K`` *and* ``R ≥ K − 1`` distinct references.
A rank-deficient ``M̂`` is still solvable with ``λ`` but gives weights "qualitatively different from
the population optimum" (App. B.2); building one emits a :class:`RankDeficientWarning`.

Routes of ``g`` (chosen from the traced graph, :attr:`attribution.split.LayerSplit.pooled_head`):

* ``"affine"``: the network after the layer is a global average pool and a linear classifier
  (ResNet, Inception v3, EfficientNet). ``g(z) = w^c·(z ⊙ GAP(A)) + b^c`` is affine in ``z``,
  ``Δ_m = I_mᵀ ∂g/∂z`` exactly, and no suffix pass is needed at all;
* ``"pooled"``: a global average pool followed by any head (ConvNeXt's LayerNorm → Linear).
  Scaling commutes with the pool, so ``g(1 − I_m)`` runs the head on ``(M, K)`` pooled vectors;
* ``"stem"``: channel-wise pools and ReLUs, then a linear layer (VGG, AlexNet; DenseNet). For
  ``z ≥ 0`` — every data-aware ``z = a·h(x')`` of a post-ReLU layer such as VGG's and AlexNet's —
  that layer is linear in ``z`` (:class:`attribution.split.LinearStem`): one pass of it per image, then
  ``K`` columns per ``z``. Rows with a negative scale (DenseNet's ``norm5`` is a BatchNorm output, so
  its ``h`` has negative channels; Gaussian perturbations) take the general route;
* ``"general"``: any other suffix (VGG's max-pool and MLP, ViT blocks, DenseNet's final ReLU)
  runs on the ``(M, K, U, V)`` scaled activations, ``chunk`` rows at a time.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Literal

import torch
from torch import Tensor, nn

from attribution.layout import FeatureLayout, SpatialLayout
from attribution.split import LayerSplit, split_at

__all__ = [
    "ChannelScaling",
    "Diagnostics",
    "PerturbationSet",
    "RankDeficientWarning",
    "SecondMoment",
    "check_reference_pool",
    "data_aware_perturbations",
    "dirac_perturbation",
    "gaussian_perturbations",
    "marchenko_pastur_condition",
    "pool_features",
    "pooled_features",
    "reference_features",
]

Route = Literal["affine", "pooled", "stem", "general"]
STEM_ROWS = 256  # scalings per call of the stem route's tail (its activations are (rows, hidden width))
POOLED_ROWS = 4096  # pooled (image, scaling) rows per call of a pooled head


class RankDeficientWarning(UserWarning):
    """``M̂`` has rank below ``K``: the infidelity-optimal weights are not identified (App. B.2)."""


# -- reference features -------------------------------------------------------------------------------


def reference_features(
    model: nn.Module,
    layer: str,
    images: Tensor,
    *,
    batch_size: int = 64,
    layout: FeatureLayout | None = None,
) -> Tensor:
    """``h(x') = (GAP(A^1(x')), …, GAP(A^K(x')))`` of each reference image (eq. 19): ``(R, K)`` float32.

    ``images`` are normalised ``(R, C, H, W)``, moved to the model's device ``batch_size`` at a time.
    """
    return pooled_features(split_at(model, layer, layout), images, next(model.parameters()).device, batch_size)


def pooled_features(split: LayerSplit, images: Tensor, device: torch.device, batch_size: int = 64) -> Tensor:
    """``h`` of ``images`` through an existing split, on ``device``: ``(R, K)`` float32."""
    features = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            chunk = images[start : start + batch_size].to(device).contiguous(memory_format=torch.channels_last)
            feats, _ = split.features(chunk)
            features.append(split.layout_for(feats).to_maps(feats).mean(dim=(2, 3)).float())
    return torch.cat(features)


def check_reference_pool(reference: Tensor | None, reference_features: Tensor | None) -> None:
    """A reference pool is given as normalised images ``(R, C, H, W)`` or as their ``h(x')`` ``(R, K)``, not both."""
    from attribution.methods.base import check_images

    if reference is not None and reference_features is not None:
        raise ValueError("give reference images or their features (reference_features), not both")
    if reference is not None:
        check_images(reference)
    if reference_features is not None and (reference_features.ndim != 2 or reference_features.shape[0] == 0):
        raise ValueError(f"reference_features must be (R, K); got shape {tuple(reference_features.shape)}")


def pool_features(
    split: LayerSplit, reference: Tensor | None, reference_features: Tensor | None, device: torch.device
) -> Tensor | None:
    """``h(x')`` of a reference pool on the CPU: the given features, or those of the images through ``split``."""
    if reference_features is not None:
        return reference_features.detach().float().cpu()
    return None if reference is None else pooled_features(split, reference, device).cpu()


# -- perturbation sets ----------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class PerturbationSet:
    """``M`` perturbations ``I_m`` (float64 ``(M, K)``) and, for data-aware ones, the reference each drew."""

    perturbations: Tensor
    sources: Tensor | None = None  # (M,) row of the reference pool each I_m was built from
    pool: int | None = None  # size R of the reference pool

    @property
    def distinct_references(self) -> int | None:
        return None if self.sources is None else int(self.sources.unique().numel())


def data_aware_perturbations(features: Tensor, n: int, seed: int) -> PerturbationSet:
    """``I_m = 1 − a_m·h(x'_m)`` with ``a_m ~ U(0, 1)`` (Definition 3.8, eq. 18), ``m = 1 … n``.

    ``features`` is ``h`` of the reference pool ``(R, K)``. Each perturbation draws its own reference:
    without replacement when ``R ≥ n``; otherwise every reference is used ``⌊n/R⌋`` or ``⌈n/R⌉`` times
    (successive random permutations of the pool), which keeps all ``R`` references distinct in the set.
    """
    if features.ndim != 2 or features.shape[0] == 0:
        raise ValueError(f"reference features must be a non-empty (R, K) tensor; got shape {tuple(features.shape)}")
    if not torch.isfinite(features).all():
        raise ValueError("reference features contain NaN or infinite values")
    generator = torch.Generator().manual_seed(seed)
    pool = features.shape[0]
    rounds = -(-n // pool)
    sources = torch.cat([torch.randperm(pool, generator=generator) for _ in range(rounds)])[:n]
    a = torch.rand((n, 1), generator=generator, dtype=torch.float64)
    perturbations = 1 - a * features.detach().cpu().double()[sources]
    return PerturbationSet(perturbations, sources, pool)


def gaussian_perturbations(channels: int, n: int, mean: float, std: float, seed: int) -> PerturbationSet:
    """``I ~ N(μ·1, σ²·Id)`` (App. A.1.5)."""
    generator = torch.Generator().manual_seed(seed)
    return PerturbationSet(mean + std * torch.randn((n, channels), generator=generator, dtype=torch.float64))


def dirac_perturbation(point: float | Tensor, channels: int) -> PerturbationSet:
    """A point mass at ``I0`` (App. A.1.5, eqs. 53 and 68): a scalar times ``1`` or a ``(K,)`` vector."""
    value = torch.as_tensor(point, dtype=torch.float64)
    return PerturbationSet(value.expand(channels).clone()[None] if value.ndim == 0 else value.reshape(1, channels))


# -- the second-moment matrix ---------------------------------------------------------------------------


def marchenko_pastur_condition(perturbations: int, channels: int) -> float | None:
    """``κ ≈ ((√ρ + 1)/(√ρ − 1))²`` for ``ρ = M/K > 1`` (Remark B.2, eq. 94); ``None`` when ``ρ ≤ 1``."""
    rho = perturbations / channels
    if rho <= 1:
        return None
    return ((math.sqrt(rho) + 1) / (math.sqrt(rho) - 1)) ** 2


@dataclass(frozen=True)
class Diagnostics:
    """What decides whether ``M̂`` identifies the optimal weights (App. B.2)."""

    perturbations: int  # M
    channels: int  # K
    references: int | None  # distinct reference images among the M draws (data-aware only)
    pool: int | None  # size of the reference pool drawn from
    rank: int  # numerical rank of M̂
    condition_number: float  # λ_max / λ_min of M̂ (inf when singular)
    covariance_condition_number: float  # of Cov(I), the quantity Fig. 6(d) compares with eq. 94 (inf when singular)
    marchenko_pastur: float | None  # eq. 94 at ρ = M/K (None for ρ ≤ 1)
    above_ridge: int  # eigenvalues of M̂ above λ: the directions the data decides (the ridge decides the rest)

    @property
    def full_rank(self) -> bool:
        return self.rank == self.channels

    def to_dict(self) -> dict[str, float | int | bool | None]:
        out: dict[str, float | int | bool | None] = asdict(self)
        for key in ("condition_number", "covariance_condition_number"):
            out[key] = None if math.isinf(out[key]) else out[key]
        out["full_rank"] = self.full_rank
        return out

    def describe(self) -> str:
        refs = "" if self.references is None else f", R = {self.references} distinct references"
        mp = "" if self.marchenko_pastur is None else f", Marchenko–Pastur {self.marchenko_pastur:.3g} at ρ = M/K"
        return (f"M = {self.perturbations}, K = {self.channels}{refs}: rank(M̂) = {self.rank}/{self.channels}, "
                f"κ(M̂) = {_kappa(self.condition_number)}, κ(Cov I) = {_kappa(self.covariance_condition_number)}, "
                f"{self.above_ridge}/{self.channels} eigenvalues above λ{mp}")


def _kappa(value: float) -> str:
    return "inf" if math.isinf(value) else f"{value:.3g}"


def _rank_and_condition(matrix: Tensor, ridge: float) -> tuple[int, float, int]:
    """Of a PSD matrix: numerical rank (eigenvalues above ``λ_max·K·eps``), ``λ_max/λ_min`` (inf below full
    rank) and the eigenvalues above the Tikhonov ``ridge``."""
    eigenvalues = torch.linalg.eigvalsh(matrix)
    k, top, bottom = matrix.shape[0], float(eigenvalues[-1]), float(eigenvalues[0])
    rank = int((eigenvalues > top * k * torch.finfo(matrix.dtype).eps).sum()) if top > 0 else 0
    return rank, top / bottom if rank == k and bottom > 0 else math.inf, int((eigenvalues > ridge).sum())


@dataclass(eq=False)
class SecondMoment:
    """``M̂ = (1/M) Σ_m I_m I_mᵀ`` of a perturbation set, with the factor of ``M̂ + λ·Id`` (float64).

    Built once per (model, layer, reference set) and reused for every image: the weights of
    Theorem 3.10 (eq. 21) are ``solve((1/M) Σ_m Δ_m I_m)``.
    """

    perturbations: PerturbationSet
    ridge: float
    matrix: Tensor  # M̂, (K, K) float64
    factor: Tensor  # lower Cholesky factor of M̂ + λ·Id
    diagnostics: Diagnostics

    @classmethod
    def of(cls, pset: PerturbationSet, ridge: float, *, warn: bool = True) -> SecondMoment:
        """Factor ``M̂ + λ·Id``; warn (:class:`RankDeficientWarning`) when ``rank(M̂) < K``."""
        I = pset.perturbations
        m, k = I.shape
        matrix = I.T @ I / m
        rank, condition, above_ridge = _rank_and_condition(matrix, ridge)
        centred = I - I.mean(dim=0)
        _, covariance_condition, _ = _rank_and_condition(centred.T @ centred / max(m - 1, 1), ridge)
        diagnostics = Diagnostics(m, k, pset.distinct_references, pset.pool, rank, condition, covariance_condition,
                                  marchenko_pastur_condition(m, k), above_ridge)
        factor, info = torch.linalg.cholesky_ex(matrix + ridge * torch.eye(k, dtype=torch.float64))
        if info.any():
            raise ValueError(f"M̂ + λI is not positive definite ({diagnostics.describe()}, λ = {ridge}); raise ridge")
        if warn and not diagnostics.full_rank and m > 1:
            message = (
                f"rank-deficient second-moment matrix: {diagnostics.describe()}. The weights are not the "
                "infidelity optimum (App. B.2); use M ≥ K perturbations from ≥ K distinct reference images"
            )
            warnings.warn(message, RankDeficientWarning, stacklevel=3)
        return cls(pset, ridge, matrix, factor, diagnostics)

    def to(self, device: torch.device) -> SecondMoment:
        return SecondMoment(self.perturbations, self.ridge, self.matrix.to(device), self.factor.to(device),
                            self.diagnostics)

    def solve(self, rhs: Tensor) -> Tensor:
        """``(M̂ + λ·Id)⁻¹ r`` for each row ``r`` of ``rhs`` ``(B, K)`` (float64)."""
        return torch.cholesky_solve(rhs.double().T, self.factor).T

    @cached_property
    def projection(self) -> Tensor:
        """``P = (M̂ + λ·Id)⁻¹ M̂``: the weights of an affine ``g`` are ``P ∂g/∂z`` (``→ ∂g/∂z`` at full rank)."""
        return torch.cholesky_solve(self.matrix, self.factor)


# -- the predictor --------------------------------------------------------------------------------------


class ChannelScaling:
    """``g(z) = y^c(z_1·A^1, …, z_K·A^K)`` for every image of a batch (the predictor of eq. 14).

    ``feats``/``live`` are the split's activations of ``B`` images, ``targets`` their classes;
    ``chunk`` bounds the rows evaluated at once on the general route; ``fast_path=False`` takes the
    general route even where the pooled or affine one applies (they agree to float rounding).
    """

    def __init__(
        self,
        split: LayerSplit,
        feats: Tensor,
        live: tuple,
        layout: FeatureLayout,
        targets: Tensor,
        chunk: int = 64,
        fast_path: bool = True,
    ) -> None:
        self.split, self.feats, self.live, self.layout, self.targets = split, feats, live, layout, targets
        self.chunk = chunk
        spatial = fast_path and isinstance(layout, SpatialLayout)
        self.head = split.pooled_head if spatial else None
        self.pooled = None if self.head is None else self.head.pool(feats)
        self.stem = split.linear_stem if spatial and self.head is None else None

    @property
    def route(self) -> Route:
        """The route of ``g``; ``"stem"`` holds for the rows with ``z ≥ 0`` (the others take the general route)."""
        if self.head is not None:
            return "affine" if self.head.classifier is not None else "pooled"
        return "stem" if self.stem is not None else "general"

    @cached_property
    def _channel_matrices(self) -> Tensor:
        with torch.no_grad():
            return self.stem.channel_matrix(self.feats)

    @property
    def batch(self) -> int:
        return self.feats.shape[0]

    def scores(self, z: Tensor) -> Tensor:
        """``g(z_p)`` for every image and every row of ``z`` ``(P, K)`` → ``(B, P)``."""
        z = z.to(self.feats.device, self.feats.dtype)
        if self.head is not None:
            step = max(1, POOLED_ROWS // self.batch)
            return torch.cat([self._pooled_scores(z[s : s + step]) for s in range(0, z.shape[0], step)], dim=1)
        out = torch.empty(self.batch, z.shape[0], device=z.device, dtype=self.feats.dtype)
        stem_rows = (z >= 0).all(dim=1) if self.stem is not None else torch.zeros(len(z), dtype=torch.bool)
        if stem_rows.any():  # rows with a negative scale take the general route
            rows = z[stem_rows]
            out[:, stem_rows] = torch.stack([
                torch.cat([self.stem.target_scores(matrix, rows[s : s + STEM_ROWS], target)
                           for s in range(0, rows.shape[0], STEM_ROWS)])
                for matrix, target in zip(self._channel_matrices, self.targets.tolist())
            ])
        if not stem_rows.all():
            rows = z[~stem_rows]
            step = max(1, self.chunk // self.batch)
            out[:, ~stem_rows] = torch.cat(
                [self._scaled_scores(rows[s : s + step]) for s in range(0, rows.shape[0], step)], dim=1
            )
        return out

    def _pooled_scores(self, z: Tensor) -> Tensor:
        index = torch.arange(self.batch, device=z.device).repeat_interleave(z.shape[0])
        rows = (self.pooled[:, None] * z[None]).flatten(0, 1)
        return self.head.target_scores(rows, self.targets[index]).reshape(self.batch, z.shape[0])

    def _scaled_scores(self, z: Tensor) -> Tensor:
        b, p = self.batch, z.shape[0]
        scaled = self.layout.scale_channels(self.feats[:, None], z[None]).flatten(0, 1)  # (B·P, …)
        index = torch.arange(b, device=z.device).repeat_interleave(p)
        return self.split.target_scores(scaled, self.live, self.targets[index], index).reshape(b, p)

    def differences(self, perturbations: Tensor) -> Tensor:
        """``Δ_m = g(z0) − g(z0 − I_m)`` for every image, ``(B, M)`` (exact on every route)."""
        gradient = self.linear_gradient()
        with torch.no_grad():
            if gradient is not None:
                return gradient @ perturbations.to(gradient.device, torch.float64).T
            ones = torch.ones((1, perturbations.shape[1]), dtype=self.feats.dtype, device=self.feats.device)
            return (self.scores(ones) - self.scores(1 - perturbations)).double()

    def linear_gradient(self) -> Tensor | None:
        """``∂g/∂z = w^c ⊙ GAP(A)`` ``(B, K)`` float64 when ``g`` is affine in ``z`` (the affine route), else ``None``."""
        if self.head is None:
            return None
        gradient = self.head.score_gradient(self.pooled, self.targets)
        return None if gradient is None else gradient.detach().double()

    def gradient(self, z: Tensor, index: Tensor) -> Tensor:
        """``∂g/∂z`` at row ``r`` of ``z`` ``(R, K)`` for image ``index[r]``."""
        z = z.detach().to(self.feats.device, self.feats.dtype).requires_grad_(True)
        with torch.enable_grad():
            if self.head is not None:
                score = self.head.target_scores(self.pooled[index] * z, self.targets[index])
            else:
                scaled = self.layout.scale_channels(self.feats[index], z)
                score = self.split.target_scores(scaled, self.live, self.targets[index], index)
            (grad,) = torch.autograd.grad(score.sum(), z)
        return grad
