"""Expected Grad-CAM (Buono et al., "Not All CAMs Are Complete", TMLR 2026).

The channel-scaling predictor of a target layer with activations ``A`` is
``g(z) = y^c(z_1·A^1, …, z_K·A^K)``, with ``z0 = 1`` the unperturbed network. Expected Grad-CAM's
channel weights minimise the explanation infidelity (Yeh et al. 2019; the paper's eq. 14)

    INFD(α) = E_I[(Iᵀα − (g(z0) − g(z0 − I)))²]

over a perturbation distribution of ``I``; the minimiser (Definition 3.9, Theorem 3.10) is

    α* = (M̂ + λ·Id)⁻¹ · (1/M) Σ_m I_m (g(z0) − g(z0 − I_m)),    M̂ = (1/M) Σ_m I_m I_mᵀ,

and the map is ``ReLU(Σ_k α*_k A^k)`` as for Grad-CAM. Perturbation distributions:

* ``"data"`` (the paper's default, App. B.1): ``I = 1 − a·h(x')``, ``x'`` a reference image
  of the same dataset (never the explained one), ``a ~ U(0, 1)``, ``h`` the global average pool
  of the target layer's maps of ``x'``; ``M = 2K``.
* ``"gaussian"``: ``I ~ N(μ·1, σ²·Id)`` (App. A.1.5).
* ``"dirac"``: a point mass at ``I0`` (App. A.1.5, eq. 53 and 68). ``M̂ = I0 I0ᵀ`` is singular; the
  minimum-norm solution ``α = I0 (g(z0) − g(z0 − I0)) / ‖I0‖²`` satisfies completeness at ``I0``.

The perturbation set depends only on the reference set and the seed, so ``M̂`` and its Cholesky
factor (in float64) are computed once per (model, layer) and reused for every image. Data-aware
perturbations span at most ``R + 1`` directions (``R`` reference images), so with fewer
references than channels ``M̂`` is singular and ``λ`` selects the minimum-norm solution. Per image the cost is
``M`` evaluations of the network *after* the target layer (batched, ``batch_size`` rows at a time)
and one triangular solve.

``estimator="expected_gradients"`` replaces each exact difference ``g(z0) − g(z0 − I)`` by the
paper's Monte Carlo route ``⟨I, φ^EG⟩``: Expected Gradients of ``g`` from ``N`` baselines
``z' = z0 − I + σ·ε`` (``ε ~ N(0, Id)``, σ = 0.1) to ``z0`` with ``T`` midpoint Riemann steps, which by
completeness converges to ``g(z0) − E g(z')``. It costs ``M·N·T`` suffix gradients per image and
exists to compare the two estimators.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from attribution.methods.base import LayerPass, Targets, WeightedCAM, check_images, forward_pass, sample_generators
from attribution.methods.registry import register
from attribution.split import LayerSplit, split_at

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
    perturbations: Tensor  # (M, K): I_m
    deltas: Tensor  # (B, M): g(z0) − g(z0 − I_m) (or its Expected-Gradients estimate)

    def infidelity(self, weights: Tensor | None = None) -> Tensor:
        """Eq. 14 of ``weights`` (default: α*) on this regression's perturbation sample."""
        return cam_infidelity(self.weights if weights is None else weights, self.perturbations, self.deltas)


@dataclass(eq=False)
class _PerturbationSet:
    perturbations: Tensor  # (M, K)
    cholesky: Tensor | None  # lower factor of M̂ + λ·Id; None for the Dirac case
    reference_gap: Tensor | None  # (R, K) h(x') of the reference images


@register("expected_gradcam")
class ExpectedGradCAM(WeightedCAM):
    """Expected Grad-CAM: infidelity-optimal channel weights (see the module docstring).

    Args:
        reference: normalised reference images ``(R, C, H, W)`` for data-aware perturbations.
        perturbation: ``"data"``, ``"gaussian"`` or ``"dirac"``.
        n_perturbations: ``M``; default ``2K`` (``1`` for the Dirac case).
        ridge: Tikhonov ``λ``.
        gaussian_mean, gaussian_std: ``μ`` and ``σ`` of the Gaussian case.
        dirac_point: ``I0`` of the Dirac case (a scalar times ``1``, or a ``(K,)`` tensor).
        estimator: ``"closed_form"`` (exact differences) or ``"expected_gradients"``.
        eg_baselines, eg_steps, eg_sigma: ``N``, ``T`` and ``σ`` of the Expected-Gradients route.
        batch_size: suffix rows evaluated at once (bounds memory; on CPU larger chunks fall out of
            cache — ``benchmarks/bench_methods.py --egc-chunks 32,128,512`` compares them).
        seed: seed of the perturbation set (and, with per-image seeds, of the EG baselines).
    """

    def __init__(
        self,
        reference: Tensor | None = None,
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
        seed: int = 0,
    ):
        if perturbation not in ("data", "gaussian", "dirac"):
            raise ValueError(f"unknown perturbation distribution {perturbation!r}; use 'data', 'gaussian' or 'dirac'")
        if estimator not in ("closed_form", "expected_gradients"):
            raise ValueError(f"unknown estimator {estimator!r}; use 'closed_form' or 'expected_gradients'")
        if reference is not None:
            check_images(reference)
        self.reference = reference
        self.perturbation, self.n_perturbations, self.ridge = perturbation, n_perturbations, ridge
        self.gaussian_mean, self.gaussian_std, self.dirac_point = gaussian_mean, gaussian_std, dirac_point
        self.estimator, self.eg_baselines, self.eg_steps, self.eg_sigma = estimator, eg_baselines, eg_steps, eg_sigma
        self.batch_size, self.seed = batch_size, seed
        self._sets: weakref.WeakKeyDictionary[LayerSplit, _PerturbationSet] = weakref.WeakKeyDictionary()

    def __repr__(self) -> str:
        ref = None if self.reference is None else tuple(self.reference.shape)
        return (
            f"ExpectedGradCAM(reference={ref}, perturbation={self.perturbation!r}, M={self.n_perturbations}, "
            f"estimator={self.estimator!r}, seed={self.seed})"
        )

    # -- public API -------------------------------------------------------------------------
    def regression(
        self, model: nn.Module, layer: str, images: Tensor, targets: Targets = None, *, seeds=None, layout=None
    ) -> Regression:
        """The weights together with the perturbation sample and differences they were fitted on."""
        check_images(images)
        return self._regress(split_at(model, layer, layout), images, targets, seeds)

    def _weights(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> tuple[Tensor, Tensor]:
        fit = self._regress(split, images, targets, seeds)
        return fit.weights, fit.maps

    # -- the regression -----------------------------------------------------------------------
    def _regress(self, split: LayerSplit, images: Tensor, targets: Targets, seeds) -> Regression:
        base = forward_pass(split, images, targets)
        pset = self._perturbation_set(split, base)
        if pset.reference_gap is not None:
            _reject_reference_members(base.maps.mean(dim=(2, 3)), pset.reference_gap)
        I = pset.perturbations
        if self.estimator == "closed_form":
            deltas = self._exact_deltas(split, base, I)
        else:
            deltas = self._expected_gradient_deltas(split, base, I, sample_generators(self.seed, seeds, len(images)))
        if pset.cholesky is None:  # Dirac: minimum-norm solution of the rank-one system
            weights = deltas[:, :1] * I[0] / I[0].dot(I[0])
        else:
            rhs = deltas.double() @ I.double() / I.shape[0]  # (B, K): (1/M) Σ_m Δ_m I_m
            weights = torch.cholesky_solve(rhs.T, pset.cholesky).T.to(deltas.dtype)
        return Regression(weights, base.maps, I, deltas)

    def _rows_per_chunk(self, batch: int) -> int:
        return max(1, self.batch_size // batch)

    def _exact_deltas(self, split: LayerSplit, base: LayerPass, I: Tensor) -> Tensor:
        """``Δ_m = g(z0) − g(z0 − I_m)`` for every image, ``(B, M)``."""
        step = self._rows_per_chunk(base.feats.shape[0])
        with torch.no_grad():
            scores = [base.scaled_scores(split, 1 - I[start : start + step]) for start in range(0, I.shape[0], step)]
        return base.target_scores()[:, None] - torch.cat(scores, dim=1)

    def _expected_gradient_deltas(self, split: LayerSplit, base: LayerPass, I: Tensor, generators) -> Tensor:
        """``⟨I_m, φ^EG_m⟩``: Expected Gradients of ``g`` from ``z' = z0 − I_m + σε`` to ``z0``."""
        b, device, dtype = base.feats.shape[0], base.feats.device, base.feats.dtype
        m_total, k = I.shape
        n, t_steps = self.eg_baselines, self.eg_steps
        t = (torch.arange(t_steps, device=device, dtype=dtype) + 0.5) / t_steps  # midpoint Riemann sum
        deltas = torch.empty(b, m_total, device=device, dtype=dtype)
        for m in range(m_total):
            eps = torch.stack([torch.randn((n, k), generator=g) for g in generators]).to(device, dtype)  # (B, N, K)
            start = (1 - I[m]) + self.eg_sigma * eps  # baselines z'
            direction = 1 - start  # z0 − z'
            z = (start[:, :, None] + t[None, None, :, None] * direction[:, :, None]).reshape(-1, k)
            index = torch.arange(b, device=device).repeat_interleave(n * t_steps)
            grads = torch.cat(
                [
                    self._score_gradient(split, base, z[s : s + self.batch_size], index[s : s + self.batch_size])
                    for s in range(0, z.shape[0], self.batch_size)
                ]
            ).reshape(b, n, t_steps, k)
            deltas[:, m] = (grads.mean(dim=2) * direction).sum(dim=2).mean(dim=1)
        return deltas

    @staticmethod
    def _score_gradient(split: LayerSplit, base: LayerPass, z: Tensor, index: Tensor) -> Tensor:
        """``∂g/∂z`` at row ``r`` of ``z``, scaling the activations of image ``index[r]``."""
        z = z.detach().requires_grad_(True)
        with torch.enable_grad():
            scaled = base.layout.scale_channels(base.feats[index], z)
            (grad,) = torch.autograd.grad(split.target_scores(scaled, base.live, base.targets[index], index).sum(), z)
        return grad

    # -- the perturbation set, once per (model, layer) ------------------------------------------
    def _perturbation_set(self, split: LayerSplit, base: LayerPass) -> _PerturbationSet:
        cached = self._sets.get(split)
        if cached is not None and cached.perturbations.device == base.feats.device:
            return cached
        k = base.maps.shape[1]
        generator = torch.Generator().manual_seed(self.seed)
        dtype, device = base.feats.dtype, base.feats.device
        reference_gap = None
        if self.perturbation == "dirac":
            point = torch.as_tensor(self.dirac_point, dtype=dtype)
            I = point.expand(k).clone()[None] if point.ndim == 0 else point.reshape(1, k)
            pset = _PerturbationSet(I.to(device), None, None)
        else:
            m = self.n_perturbations or 2 * k
            if self.perturbation == "gaussian":
                I = self.gaussian_mean + self.gaussian_std * torch.randn((m, k), generator=generator, dtype=dtype)
            else:
                reference_gap = self._reference_gap(split, base).cpu()
                pick = torch.randint(reference_gap.shape[0], (m,), generator=generator)
                a = torch.rand((m, 1), generator=generator, dtype=dtype)
                I = 1 - a * reference_gap[pick]
            I = I.to(device)
            exact = I.double()  # λ = 1e-6 leaves M̂ + λI too ill-conditioned for a float32 factor
            second_moment = exact.T @ exact / m + self.ridge * torch.eye(k, device=device, dtype=torch.float64)
            cholesky, info = torch.linalg.cholesky_ex(second_moment)
            if info.any():
                raise ValueError(
                    f"M̂ + λI is not positive definite (M = {m}, K = {k}, λ = {self.ridge}); raise ridge or n_perturbations"
                )
            pset = _PerturbationSet(I, cholesky, None if reference_gap is None else reference_gap.to(device))
        self._sets[split] = pset
        return pset

    def _reference_gap(self, split: LayerSplit, base: LayerPass) -> Tensor:
        if self.reference is None:
            raise ValueError(
                "Expected Grad-CAM with data-aware perturbations needs reference images "
                "(ExpectedGradCAM(reference=...)): images of the same dataset, not the explained ones"
            )
        gaps = []
        with torch.no_grad():
            for start in range(0, self.reference.shape[0], 64):
                chunk = self.reference[start : start + 64].to(base.feats.device, base.feats.dtype)
                gaps.append(base.layout.to_maps(split.features(chunk)[0]).mean(dim=(2, 3)))
        return torch.cat(gaps)


def _reject_reference_members(gap: Tensor, reference_gap: Tensor) -> None:
    """Raise if an explained image is one of the reference images (identical pooled features)."""
    distance = torch.cdist(gap, reference_gap)
    scale = gap.norm(dim=1, keepdim=True).clamp(min=1e-12)
    hits = (distance <= 1e-6 * scale).any(dim=1)
    if hits.any():
        raise ValueError(
            f"images {hits.nonzero().flatten().tolist()} of the batch are in Expected Grad-CAM's reference set; "
            "explain an image with references that exclude it"
        )
