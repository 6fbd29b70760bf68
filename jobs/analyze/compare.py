"""How two solutions of Expected Grad-CAM's regression are compared in App. B (Figs. 6 and 7).

Weights by cosine and relative error, heatmaps (Definition 3.11, eq. 22: ``ReLU(Σ_k α_k A^k)``,
upsampled to the input and min-max scaled) by SSIM, second-moment matrices by their relative
Frobenius distance (Fig. 6a) and their spectra by rank, effective rank and condition numbers.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg
import scipy.stats
import torch
from skimage.metrics import structural_similarity
from torch import Tensor

from attribution.methods import Regression
from attribution.methods.base import weighted_sum
from attribution.postprocess import minmax_normalize, scored_map

__all__ = [
    "effective_rank",
    "heatmaps",
    "loglog_slope",
    "map_ssim",
    "relative_error",
    "relative_frobenius",
    "second_moment",
    "weight_cosine",
    "whitened_condition",
]


def heatmaps(fit: Regression, size: tuple[int, int]) -> np.ndarray:
    """``ReLU(Σ_k α_k A^k)`` (eq. 22) of a regression, upsampled to ``size`` and scaled to ``[0, 1]``: ``(B, H, W)``."""
    raw = weighted_sum(fit.weights.float(), fit.maps.float())
    return minmax_normalize(scored_map(raw, size)).detach().cpu().numpy().astype(np.float64)


def map_ssim(maps: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """SSIM of each map to its reference (``(B, H, W)`` in ``[0, 1]``) → ``(B,)``."""
    return np.array([structural_similarity(a, b, data_range=1.0) for a, b in zip(maps, reference)])


def weight_cosine(weights: Tensor, reference: Tensor) -> np.ndarray:
    """``cos(α, α_ref)`` per image (``(B, K)`` each) → ``(B,)``."""
    return torch.nn.functional.cosine_similarity(weights.double(), reference.double(), dim=1).cpu().numpy()


def relative_error(values: Tensor, reference: Tensor) -> np.ndarray:
    """``‖v − v_ref‖₂ / ‖v_ref‖₂`` per row (``(B, D)`` each) → ``(B,)``."""
    values, reference = values.double(), reference.double()
    return ((values - reference).norm(dim=1) / reference.norm(dim=1)).cpu().numpy()


def second_moment(fit: Regression) -> np.ndarray:
    """``M̂ = (1/M) Σ_m I_m I_mᵀ`` of the perturbations a regression was fitted on: ``(K, K)`` float64."""
    perturbations = fit.perturbations.detach().cpu().double().numpy()
    return perturbations.T @ perturbations / perturbations.shape[0]


def relative_frobenius(matrix: np.ndarray, reference: np.ndarray) -> float:
    """``‖M̂ − M_ref‖_F / ‖M_ref‖_F`` (Fig. 6a)."""
    return float(np.linalg.norm(matrix - reference) / np.linalg.norm(reference))


def effective_rank(matrix: np.ndarray) -> float:
    """``exp(H(p))`` of the normalised eigenvalues ``p`` of a PSD matrix (Roy & Vetterli's effective rank)."""
    eigenvalues = np.clip(np.linalg.eigvalsh(matrix), 0.0, None)
    return float(np.exp(scipy.stats.entropy(eigenvalues))) if eigenvalues.sum() > 0 else 0.0


def whitened_condition(matrix: np.ndarray, reference: np.ndarray) -> float:
    """``κ(M_ref^{-1/2} M̂ M_ref^{-1/2})``: the condition number eq. 94 predicts, that of an isotropic population.

    The generalised eigenvalues of ``(M̂, M_ref)``; ``inf`` when ``M̂`` is singular, ``nan`` when ``M_ref`` is.
    """
    try:
        eigenvalues = scipy.linalg.eigh(matrix, reference, eigvals_only=True)
    except np.linalg.LinAlgError:
        return math.nan
    top, bottom = float(eigenvalues[-1]), float(eigenvalues[0])
    return top / bottom if bottom > top * matrix.shape[0] * np.finfo(np.float64).eps else math.inf


def loglog_slope(x: np.ndarray, y: np.ndarray) -> float | None:
    """The least-squares slope of ``log y`` on ``log x`` over the finite positive points (``None`` below two)."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
    if keep.sum() < 2 or np.unique(x[keep]).size < 2:
        return None
    return float(scipy.stats.linregress(np.log(x[keep]), np.log(y[keep])).slope)
