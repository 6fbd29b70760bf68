"""Performance Information Curves: SIC and AIC (Kapishnikov et al., "XRAI: Better Attributions Through
Regions", ICCV 2019; used again for Guided IG, CVPR 2021), as PAIR's ``saliency.metrics.pic`` computes them,
with the information of an image estimated by its lossless WebP size, or by its MS-SSIM to the original
(the variant of IDGI, Yang et al., CVPR 2023, that seed 004 §4.4 reports).

Per image ``x`` (its uint8 pixels), map ``s`` and class ``c`` (the batch's target):

1. a random mask ``R`` of ``⌊random_fraction·H·W⌋`` pixels, drawn from the sample's seed, so every method
   is scored against the same fully blurred image of ``x`` (PAIR: a new mask per image, the same for
   every method);
2. ``x_M``, the image rebuilt from its pixels in a mask ``M`` and the four corners: every other pixel is
   linearly interpolated on the Delaunay triangulation of the known ones (PAIR's ``griddata``), the
   mean colour outside their hull, rounded to uint8 (:func:`reveal`); ``x₀ = x_R`` is fully blurred;
3. for each threshold ``t`` (ascending fractions of the most salient pixels)
   ``x_t = x_M`` with ``M = {s ≥ quantile(s, 1 − t)} ∪ R``;
4. the information ``I``: the bytes of the image saved as lossless WebP at quality 100 with Pillow
   (:func:`webp_size`), or ``MS-SSIM(·, x)`` (:func:`ms_ssim`); the score ``f``: the softmax
   probability of ``c`` (SIC) or ``𝟙[argmax = c]`` (AIC);
5. the points ``x̂_t = clip((I(x_t) − I(x₀)) / (I(x) − I(x₀)), 0, 1)``,
   ``ŷ_t = clip((f(x_t) − f(x₀)) / (f(x) − f(x₀)), 0, 1)`` — ``ŷ`` its running maximum over ``t`` when
   ``keep_monotonous`` — with ``(0, 0)`` and ``(1, 1)`` added, interpolated linearly at ``x = k/P``,
   ``k = 0 … P − 1`` (``P = num_data_points``), and ``y = 1`` at ``x = 1`` (:func:`information_curve`);
6. the area under that curve (trapezoid rule): PAIR's ``PicMetricResult.auc``.

An image is undefined (NaN, logged) where PAIR raises ``ComputePicMetricError``: ``f(x) <
min_pred_value``, ``I(x₀) ≥ I(x)`` or ``f(x₀) ≥ f(x)``. With MS-SSIM ``I(x) = 1``; its normalisation
between the fully blurred image and the original, and its settings (pytorch-msssim's defaults), are
inferred: seed 004 gives none.

PAIR aggregates the curves of a set of images (``aggregate_individual_pic_results``) by their mean or
median at each ``x`` and reports the area under the aggregate curve. With ``aggregate="mean"`` a
sample's value is its own curve's area, and the mean over the defined samples is PAIR's mean aggregate
exactly (the trapezoid rule is linear and the x-grid is shared). The median curve's area is no mean of
per-image values: ``aggregate="median"`` (PAIR's default) compares the samples of a call
(``Need.SHARD``) and gives every defined sample the area under the call's median curve, so their mean
is PAIR's median aggregate over the call; a sample's value is not comparable across calls. The grid job
scores each image alone (``aggregate="mean"``): its cell means are PAIR's mean aggregate, and its plan
refuses the median, whose whole-shard call would need the model in the job's driver.

The model takes normalised images: the pixels are ``round(255 · clip(x·std + mean, 0, 1))`` with the
model's ``mean``/``std``, the batch's normalisation (``Need.NORMALISATION``), and every image is scored as
the model sees its uint8 pixels, the original included, as PAIR's ``pred_func`` is. The maps are read as
given (no ``abs``, no max-normalisation).
"""

from __future__ import annotations

import io
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, features
from scipy.interpolate import LinearNDInterpolator
from threadpoolctl import threadpool_limits
from torch import Tensor, nn

from attribution.methods.base import sample_generators
from attribution.needs import Need
from attribution.normalisation import Normalisation
from attribution.params import integer, number
from evaluation.base import Batch, Metric, mark_undefined
from evaluation.perturbation import class_scores, model_inputs, rows_per_pass
from evaluation.registry import register

__all__ = [
    "AGGREGATES",
    "AIC",
    "INFORMATION",
    "MS_SSIM_WEIGHTS",
    "PAIR_THRESHOLDS",
    "SIC",
    "PICEvidence",
    "curve_area",
    "information_curve",
    "ms_ssim",
    "random_mask",
    "reveal",
    "revealed_mask",
    "webp_size",
]

Information = Literal["webp", "msssim"]
Aggregate = Literal["mean", "median"]
INFORMATION: tuple[Information, ...] = ("webp", "msssim")
AGGREGATES: tuple[Aggregate, ...] = ("mean", "median")
PAIR_THRESHOLDS = (0.005, 0.01, 0.02, 0.03, 0.04, 0.05, 0.07, 0.10, 0.13, 0.21, 0.34, 0.5, 0.75)  # PAIR's example
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)  # Wang et al. 2003, five scales
_WINDOW, _SIGMA, _K1, _K2 = 11, 1.5, 0.01, 0.03


def random_mask(height: int, width: int, fraction: float, generator: torch.Generator) -> np.ndarray:
    """A boolean ``(H, W)`` mask of ``⌊fraction·H·W⌋`` pixels drawn without replacement from ``generator``
    (PAIR's ``generate_random_mask``)."""
    mask = np.zeros(height * width, dtype=bool)
    mask[torch.randperm(height * width, generator=generator)[: int(height * width * fraction)].numpy()] = True
    return mask.reshape(height, width)


def revealed_mask(saliency: np.ndarray, fraction: float) -> np.ndarray:
    """The pixels of the top ``fraction`` of ``saliency`` ``(H, W)``: ``s ≥ quantile(s, 1 − fraction)``
    (numpy's linear quantile; ties at the cut are all revealed)."""
    return saliency >= np.quantile(saliency, 1 - fraction)


def reveal(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """``image`` ``(H, W, C)`` uint8 rebuilt from its pixels in ``mask`` ``(H, W)`` and its four corners (PAIR's
    ``create_blurred_image``, ``method="linear"``).

    The known pixels keep their values; the others are interpolated linearly on the Delaunay
    triangulation of the known ones (one triangulation for all channels), take the image's mean colour
    outside its hull, and are rounded to uint8.
    """
    known = mask.copy()
    known[[0, 0, -1, -1], [0, -1, 0, -1]] = True
    if known.all():
        return image.copy()
    with threadpool_limits(limits=1, user_api="blas"):  # the per-triangle solves stall on contended BLAS threads
        values = LinearNDInterpolator(np.argwhere(known), image[known].astype(np.float64), fill_value=np.nan)(
            np.argwhere(~known)
        )
    values = np.where(np.isnan(values), image.mean(axis=(0, 1)), values)
    rebuilt = image.astype(np.float32)
    rebuilt[~known] = values
    return np.round(rebuilt).astype(np.uint8)


def webp_size(image: np.ndarray) -> int:
    """Bytes of ``image`` ``(H, W, C)`` uint8 saved as lossless WebP at quality 100 by Pillow (PAIR's
    ``estimate_image_entropy``)."""
    buffer = io.BytesIO()
    Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(
        buffer, format="webp", lossless=True, quality=100
    )
    return buffer.tell()


def _gaussian_filter(x: Tensor, window: Tensor) -> Tensor:
    """Separable ``window`` filter of each channel of ``(N, C, H, W)``, without padding."""
    c, k = x.shape[1], len(window)
    x = F.conv2d(x, window.reshape(1, 1, 1, k).expand(c, 1, 1, k), groups=c)
    return F.conv2d(x, window.reshape(1, 1, k, 1).expand(c, 1, k, 1), groups=c)


def _ssim_terms(x: Tensor, y: Tensor, window: Tensor, data_range: float) -> tuple[Tensor, Tensor]:
    """Mean SSIM and mean contrast-structure term per (image, channel) (Wang et al., IEEE TIP 2004, eq. 13)."""
    c1, c2 = (_K1 * data_range) ** 2, (_K2 * data_range) ** 2
    mu_x, mu_y = _gaussian_filter(x, window), _gaussian_filter(y, window)
    var_x = _gaussian_filter(x * x, window) - mu_x**2
    var_y = _gaussian_filter(y * y, window) - mu_y**2
    cov = _gaussian_filter(x * y, window) - mu_x * mu_y
    cs = (2 * cov + c2) / (var_x + var_y + c2)
    ssim = (2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs
    return ssim.mean(dim=(2, 3)), cs.mean(dim=(2, 3))


def ms_ssim(
    images: Tensor, reference: Tensor, *, data_range: float = 255.0, weights: Sequence[float] = MS_SSIM_WEIGHTS
) -> Tensor:
    """MS-SSIM (Wang, Simoncelli & Bovik, Asilomar 2003) of each image ``(N, C, H, W)`` against ``reference``
    (``(1 or N, C, H, W)``), ``(N,)`` float64, as pytorch-msssim 1.0.0 computes it (its window is float32,
    which moves the value by about 1e-6; here it is float64).

    An 11-tap Gaussian window of σ = 1.5 without padding, ``K₁ = 0.01``, ``K₂ = 0.03``; one scale per
    weight, 2×2 average pooling between scales (odd sides padded); the contrast-structure terms of
    the first scales and the SSIM of the last, each clipped at 0, raised to their weights and
    multiplied, per channel, then averaged over channels. ``weights=(1,)`` is single-scale SSIM.
    """
    levels = len(weights)
    height, width = images.shape[-2:]
    if min(height, width) <= (_WINDOW - 1) * 2 ** (levels - 1):
        raise ValueError(f"MS-SSIM with {levels} scales needs images whose sides exceed "
                         f"{(_WINDOW - 1) * 2 ** (levels - 1)} pixels; got {height}×{width}")
    x, y = images.double(), reference.double().expand_as(images)
    coords = torch.arange(_WINDOW, dtype=torch.float64, device=x.device) - _WINDOW // 2
    window = torch.exp(-(coords**2) / (2 * _SIGMA**2))
    window = window / window.sum()
    terms = []
    for level in range(levels):
        ssim, cs = _ssim_terms(x, y, window, data_range)
        if level < levels - 1:
            terms.append(cs.clamp(min=0))
            padding = (x.shape[2] % 2, x.shape[3] % 2)
            x, y = F.avg_pool2d(x, 2, padding=padding), F.avg_pool2d(y, 2, padding=padding)
    terms.append(ssim.clamp(min=0))
    powers = torch.tensor(weights, dtype=torch.float64, device=x.device).reshape(-1, 1, 1)
    return torch.prod(torch.stack(terms) ** powers, dim=0).mean(dim=1)


def curve_area(x: np.ndarray, y: np.ndarray) -> float:
    """The trapezoid rule ``Σ (x_{k+1} − x_k)(y_k + y_{k+1})/2``."""
    return float((np.diff(x) * (y[1:] + y[:-1]) / 2.0).sum())


def information_curve(
    information: np.ndarray, scores: np.ndarray, *, keep_monotonous: bool = True, num_data_points: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """One image's curve (steps 5–6 of the module), ``(x, y)`` with ``P + 1`` points.

    ``information`` and ``scores`` are those of ``[x₀, x_t for each threshold, x]``; needs
    ``I(x₀) < I(x)`` and ``f(x₀) < f(x)``. Points of equal ``x̂`` keep their threshold order before the
    added ``(0, 0)`` and ``(1, 1)``, and the interpolation at such an ``x̂`` takes the last of them
    (PAIR's ``interp1d``: a stable sort, then ``numpy.interp``).
    """
    x = np.clip((information[1:-1] - information[0]) / (information[-1] - information[0]), 0.0, 1.0)
    y = np.clip((scores[1:-1] - scores[0]) / (scores[-1] - scores[0]), 0.0, 1.0)
    if keep_monotonous:
        y = np.maximum.accumulate(y)
    xs, ys = np.append(x, [0.0, 1.0]), np.append(y, [0.0, 1.0])
    order = np.argsort(xs, kind="stable")
    grid = np.linspace(0.0, 1.0, num_data_points, endpoint=False)
    return np.append(grid, 1.0), np.append(np.interp(grid, xs[order], ys[order]), 1.0)


@dataclass(frozen=True)
class PICEvidence:
    """What SIC and AIC of one batch share, per sample and image ``[x₀, x_t for each threshold, x]``
    ``(B, T + 2)``: the information, the target's softmax probability and whether it is the top class."""

    information: np.ndarray
    probability: np.ndarray
    correct: np.ndarray


class _InformationCurve(Metric):
    """SIC or AIC (see the module).

    Args:
        information: ``"webp"`` (lossless WebP bytes) or ``"msssim"`` (MS-SSIM to the original; sides > 160 px).
        thresholds: ascending fractions in ``(0, 1]`` of the most salient pixels revealed (PAIR's example list).
        random_fraction: fraction in ``[0, 1)`` of random pixels that seed the fully blurred image.
        min_pred_value: images scored below it on the original are undefined (PAIR's default 0.8).
        keep_monotonous: the running maximum of ``ŷ`` (PAIR's default, the XRAI paper's choice).
        num_data_points: ``P``, the interpolation grid ``k/P`` (PAIR's 1000).
        aggregate: ``"mean"`` (per-sample areas) or ``"median"`` (the call's median curve, ``Need.SHARD``).
        seed: the random masks' seed, with each sample's seed.
        batch_size: images per forward pass (default :func:`evaluation.perturbation.rows_per_pass`).
    """

    direction, category, normalise = "higher", "faithfulness", False

    def __init__(
        self,
        information: Information = "webp",
        thresholds: Sequence[float] = PAIR_THRESHOLDS,
        random_fraction: float = 0.01,
        min_pred_value: float = 0.8,
        keep_monotonous: bool = True,
        num_data_points: int = 1000,
        aggregate: Aggregate = "mean",
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        if information not in INFORMATION:
            raise ValueError(f"{self.name}: information must be 'webp' or 'msssim'; got {information!r}")
        if information == "webp" and not features.check("webp"):
            raise ValueError(f"{self.name}: information 'webp' needs Pillow built with WebP support")
        self.information = information
        self.thresholds = _thresholds(thresholds)
        self.random_fraction = number("random_fraction", random_fraction, 0)
        if self.random_fraction >= 1:
            raise ValueError(f"random_fraction must lie in [0, 1); got {random_fraction!r}")
        self.min_pred_value = number("min_pred_value", min_pred_value, 0)
        if self.min_pred_value > 1:
            raise ValueError(f"min_pred_value must lie in [0, 1]; got {min_pred_value!r}")
        if keep_monotonous is not True and keep_monotonous is not False:
            raise ValueError(f"keep_monotonous must be True or False; got {keep_monotonous!r}")
        self.keep_monotonous = keep_monotonous
        self.num_data_points = integer("num_data_points", num_data_points, 1)
        if aggregate not in AGGREGATES:
            raise ValueError(f"{self.name}: aggregate must be 'mean' or 'median'; got {aggregate!r}")
        self.aggregate = aggregate
        self.seed = integer("seed", seed)
        self.batch_size = integer("batch_size", batch_size, 1, optional=True)

    @property
    def needs(self) -> frozenset[Need]:
        needs = {Need.MODEL, Need.NORMALISATION}
        return frozenset(needs | {Need.SHARD} if self.aggregate == "median" else needs)

    @abstractmethod
    def scores(self, evidence: PICEvidence) -> np.ndarray:
        """``f`` of each sample's images, ``(B, T + 2)``."""

    def score(self, batch: Batch) -> Tensor:
        images, model, targets = model_inputs(self.name, batch)
        (normalisation,) = batch.require(self.name, "normalisation")
        maps = self.prepare(batch.maps)
        key = ("pic_evidence", self.information, self.thresholds, self.random_fraction, self.seed)
        evidence = batch.memoised(key, lambda: self._evidence(maps, images, model, targets, batch.seeds,
                                                              normalisation))
        information, scores = evidence.information, self.scores(evidence)
        unsure = scores[:, -1] < self.min_pred_value
        flat = ~unsure & (information[:, 0] >= information[:, -1])
        no_drop = ~unsure & ~flat & (scores[:, 0] >= scores[:, -1])
        defined = np.flatnonzero(~(unsure | flat | no_drop))
        values = np.full(len(scores), np.nan)
        if len(defined):
            curves = [information_curve(information[i], scores[i], keep_monotonous=self.keep_monotonous,
                                        num_data_points=self.num_data_points) for i in defined]
            if self.aggregate == "mean":
                values[defined] = [curve_area(x, y) for x, y in curves]
            else:
                values[defined] = curve_area(curves[0][0], np.median(np.stack([y for _, y in curves]), axis=0))
        out = torch.from_numpy(values).to(batch.maps.device)
        for undefined, reason in ((unsure, "the model's score on the image is below min_pred_value"),
                                  (flat, "the fully blurred image holds no less information than the image"),
                                  (no_drop, "the model's score on the fully blurred image is not below the image's")):
            out = mark_undefined(out, torch.from_numpy(undefined).to(out.device), self.name, reason)
        return out

    def _evidence(self, maps: Tensor, images: Tensor, model: nn.Module, targets: Tensor,
                  seeds: Tensor | None, normalisation: Normalisation) -> PICEvidence:
        b, _, h, w = images.shape
        pixels = normalisation.to_pixels(images)
        saliency = maps.detach().cpu().numpy()
        generators = sample_generators(self.seed, seeds, b)
        stack = []
        for i in range(b):
            base = random_mask(h, w, self.random_fraction, generators[i])
            stack.append([reveal(pixels[i], base),
                          *(reveal(pixels[i], revealed_mask(saliency[i], t) | base) for t in self.thresholds),
                          pixels[i]])
        revealed = np.stack([np.stack(row) for row in stack])  # (B, T + 2, H, W, C)
        if self.information == "webp":
            information = np.array([[webp_size(image) for image in row] for row in revealed], dtype=np.float64)
        else:
            rows = [torch.from_numpy(row).to(images.device).permute(0, 3, 1, 2) for row in revealed]
            information = np.stack([ms_ssim(row, row[-1:]).cpu().numpy() for row in rows])
        probability, correct = self._predictions(revealed, model, targets, images, normalisation)
        return PICEvidence(information, probability, correct)

    def _predictions(self, revealed: np.ndarray, model: nn.Module, targets: Tensor, like: Tensor,
                     normalisation: Normalisation) -> tuple[np.ndarray, np.ndarray]:
        b, n = revealed.shape[:2]
        flat = revealed.reshape(b * n, *revealed.shape[2:])
        rows = targets.to(like.device).repeat_interleave(n)
        step = rows_per_pass(self.batch_size, like.device)
        probability, correct = [], []
        for first in range(0, len(flat), step):
            target = rows[first : first + step]
            probs = class_scores(model, normalisation.from_pixels(flat[first : first + step], like), softmax=True)
            probability.append(probs.gather(1, target[:, None]).squeeze(1).double().cpu())
            correct.append((probs.argmax(dim=1) == target).cpu())
        return torch.cat(probability).reshape(b, n).numpy(), torch.cat(correct).reshape(b, n).numpy()


def _thresholds(values: object) -> tuple[float, ...]:
    message = "thresholds must be a non-empty, strictly ascending sequence of fractions in (0, 1]"
    if isinstance(values, str) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{message}; got {values!r}")
    out = tuple(number("thresholds", t, 0, strict=True) for t in values)
    if out[-1] > 1 or any(b <= a for a, b in pairwise(out)):
        raise ValueError(f"{message}; got {values!r}")
    return out


@register
class SIC(_InformationCurve):
    """Softmax Information Curve (Kapishnikov et al. 2019): the area under the normalised softmax
    probability of the target as a function of the normalised information revealed (see the module).
    Higher is better."""

    name = "sic"

    def scores(self, evidence: PICEvidence) -> np.ndarray:
        return evidence.probability


@register
class AIC(_InformationCurve):
    """Accuracy Information Curve (Kapishnikov et al. 2019): as SIC with the score 1 where the target
    is the model's top class and 0 elsewhere (see the module). Higher is better."""

    name = "aic"

    def scores(self, evidence: PICEvidence) -> np.ndarray:
        return evidence.correct.astype(np.float64)
