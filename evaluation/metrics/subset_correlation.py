"""Subset-correlation faithfulness: Sensitivity-N (Ancona et al., ICLR 2018) and μFidelity (Bhatt et al., IJCAI 2020).

Both draw ``R`` random subsets ``S`` of a fixed size per image, set ``S`` to the baseline and
correlate, over the subsets, the attribution of ``S`` with the drop of the target score:

    corr_S( Σ_{i∈S} a_i , f(x) − f(x_[x_S = x̄_S]) )

(Ancona et al.'s "sensitivity-n"; Bhatt et al. def. 3, "faithfulness correlation"). A map
``(B, H, W)`` gives one attribution per pixel and a removed pixel takes the baseline in every channel;
Quantus draws *features* (pixel × channel) instead, which is the same on one-channel input. On an
affine model with ``a = Σ_c w ⊙ (x − x̄)`` the two series are equal and the correlation is 1.

Subsets come from one CPU generator per sample, seeded from (metric seed, sample seed)
(:func:`attribution.methods.base.sample_generators`), so a score depends on neither the batch nor
the device; Quantus draws from numpy's global generator. The perturbed copies of all samples go
through the model together, ``batch_size`` rows at a time. Undefined (NaN, logged) where the
attribution sums or the score drops are constant over the subsets (Xplique gives 0 there).
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import ClassVar, Literal, cast

import torch
from torch import Tensor, nn

from attribution.methods.base import sample_generators
from attribution.needs import Need
from attribution.params import integer
from evaluation.base import Batch, Metric, flat, mark_undefined
from evaluation.perturbation import (
    Baseline,
    baseline_image,
    baseline_needs,
    check_baseline,
    model_inputs,
    rows_per_pass,
    target_scores,
)
from evaluation.registry import register

__all__ = ["Correlation", "MuFidelity", "SensitivityN", "subset_scores", "subset_size_parameter"]

Correlation = Literal["pearson", "spearman"]
Size = int | float  # a count (int ≥ 1) or a fraction in (0, 1) of the units (pixels or grid cells)


def subset_size_parameter(metric: str, name: str, value: object) -> Size:
    """``value`` if it is a count (an integer ≥ 1) or a fraction in (0, 1), else a ``ValueError`` naming ``name``."""
    if isinstance(value, Integral) and not isinstance(value, bool) and value >= 1:
        return int(value)
    if isinstance(value, Real) and not isinstance(value, (bool, Integral)) and 0 < value < 1:
        return float(value)
    raise ValueError(f"{metric}: {name} must be an integer ≥ 1 or a fraction in (0, 1); got {value!r}")


class _SubsetCorrelation(Metric):
    """Draws random subsets of a fixed size per image and correlates attribution sums with score drops;
    subclasses name the subset size and the number of subsets (``size_param``, ``runs_param``)."""

    direction, category = "higher", "faithfulness"
    normalise = False  # a correlation ignores Quantus's max-normalisation, whose rounding would only split ties
    size_param: ClassVar[str]
    runs_param: ClassVar[str]

    def __init__(self, baseline: Baseline, correlation: Correlation, softmax: bool, seed: int,
                 batch_size: int | None) -> None:
        if correlation not in ("pearson", "spearman"):
            raise ValueError(f"{self.name}: correlation must be 'pearson' or 'spearman'; got {correlation!r}")
        self.baseline = check_baseline(self.name, baseline)
        self.correlation = cast(Correlation, correlation)
        self.softmax = softmax
        self.seed = integer("seed", seed, 0)
        self.batch_size = integer("batch_size", batch_size, 1, optional=True)

    @property
    def needs(self) -> frozenset[Need]:
        return baseline_needs(self.baseline)

    def units(self, h: int, w: int) -> Tensor:
        """``(H·W,)`` the unit (subset element) of each pixel: the pixel itself."""
        return torch.arange(h * w)

    def units_per_subset(self, n_units: int) -> int:
        """Units per subset: the size parameter's count, or ``round(fraction · n_units)`` (at least 1)."""
        size = getattr(self, self.size_param)
        k = size if isinstance(size, int) else max(1, round(size * n_units))
        if k >= n_units:
            raise ValueError(f"{self.name}: {self.size_param}={size!r} is {k} of {n_units} units; "
                             "a subset must leave at least one out")
        return k

    def draw(self, batch: Batch, n_units: int) -> Tensor:
        """``(B, R, U)`` bool: each sample's ``R`` subsets, uniform among those of :meth:`units_per_subset` units."""
        k, runs = self.units_per_subset(n_units), getattr(self, self.runs_param)
        subsets = torch.zeros(len(batch.maps), runs, n_units, dtype=torch.bool)
        for row, generator in zip(subsets, sample_generators(self.seed, batch.seeds, len(batch.maps))):
            row.scatter_(1, torch.rand(runs, n_units, generator=generator).argsort(dim=1)[:, :k], True)
        return subsets

    def score(self, batch: Batch) -> Tensor:
        h, w = batch.maps.shape[1:]
        units = self.units(h, w)
        return self.correlations(batch, self.draw(batch, int(units.max()) + 1), units)

    def correlations(self, batch: Batch, subsets: Tensor, units: Tensor | None = None) -> Tensor:
        """The correlation per sample ``(B,)`` on given subsets ``(B, R, U)`` (bool) of ``units`` ``(H·W,)``
        (default: each pixel its own unit, ``U = H·W``)."""
        images, model, targets = model_inputs(self.name, batch)
        maps = flat(self.prepare(batch.maps))
        units = torch.arange(maps.shape[1]) if units is None else units
        unit_sums = torch.zeros(len(maps), subsets.shape[2], dtype=torch.float64, device=maps.device)
        unit_sums.scatter_add_(1, units.to(maps.device).expand_as(maps), maps)
        attributions = torch.stack([s.to(maps.device, torch.float64) @ u for s, u in zip(subsets, unit_sums)])
        fill = baseline_image(images, self.baseline, batch.black)
        full = target_scores(model, images, targets, self.softmax).double()
        drops = full[:, None] - subset_scores(model, images, fill, subsets, units, targets, softmax=self.softmax,
                                              batch_size=self.batch_size).double()
        constant = _constant(attributions) | _constant(drops)
        corr = _pearson(*(map(_ranks, (attributions, drops)) if self.correlation == "spearman"
                          else (attributions, drops)))
        return mark_undefined(corr, constant, self.name, "constant attribution sums or score drops over the subsets")


def subset_scores(model: nn.Module, images: Tensor, fill: Tensor, subsets: Tensor, units: Tensor, targets: Tensor,
                  *, softmax: bool, batch_size: int | None) -> Tensor:
    """Target scores ``(B, R)`` of the copies of ``images`` ``(B, C, H, W)`` that take ``fill`` (broadcastable
    to them) on the pixels whose unit ``units`` ``(H·W,)`` is in the subset: copy ``r`` of image ``b``
    removes the units ``subsets[b, r]`` (``(B, R, U)`` bool, moved to the images' device a chunk at a time)."""
    b, c, h, w = images.shape
    fill = fill.expand(b, c, h, w)
    runs = subsets.shape[1]
    subsets, units = subsets.reshape(b * runs, -1), units.to(subsets.device)
    image_of = torch.arange(b * runs, device=images.device) // runs
    scores = torch.empty(b * runs, device=images.device, dtype=images.dtype)
    step = rows_per_pass(batch_size, images.device)
    for first in range(0, b * runs, step):
        chunk = slice(first, first + step)
        img = image_of[chunk]
        removed = subsets[chunk][:, units].to(images.device).reshape(-1, 1, h, w)
        copies = torch.where(removed, fill[img], images[img]).contiguous(memory_format=torch.channels_last)
        scores[chunk] = target_scores(model, copies, targets[img], softmax)
    return scores.reshape(b, runs)


def _constant(values: Tensor) -> Tensor:
    return values.amax(dim=1) == values.amin(dim=1)


def _ranks(values: Tensor) -> Tensor:
    """Average ranks along dim 1, ties sharing the mean of their positions (``scipy.stats.rankdata``)."""
    ordered, order = values.sort(dim=1, stable=True)
    n = values.shape[1]
    position = torch.arange(n, device=values.device, dtype=torch.float64).expand_as(ordered)
    starts = torch.ones_like(ordered, dtype=torch.bool)
    starts[:, 1:] = ordered[:, 1:] != ordered[:, :-1]
    ends = torch.ones_like(starts)
    ends[:, :-1] = starts[:, 1:]
    first = torch.where(starts, position, torch.zeros_like(position)).cummax(dim=1).values
    last = torch.where(ends, position, torch.full_like(position, n - 1)).flip(1).cummin(dim=1).values.flip(1)
    return torch.empty_like(position).scatter_(1, order, (first + last) / 2 + 1)


def _pearson(a: Tensor, b: Tensor) -> Tensor:
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    return (a * b).sum(dim=1) / torch.where(norm > 0, norm, torch.ones_like(norm))


@register
class SensitivityN(_SubsetCorrelation):
    """Sensitivity-N (Ancona et al., ICLR 2018): a map has sensitivity-n when
    ``Σ_{i∈S} a_i = f(x) − f(x_[x_S = x̄])`` for every subset of ``n`` pixels; scored, as Ancona et al.,
    by the Pearson correlation of the two over ``nr_samples`` subsets drawn uniformly. Higher is better.

    ``n`` is a pixel count (int) or a fraction of the ``H·W`` pixels (float in (0, 1)); one
    configuration per ``n``, e.g. ``sens_n_10: {metric: sensitivity_n, n: 10}``, traces the curve
    over ``n`` (Ancona et al. sweep ``n`` up to ≈ 80 % of the features); the defaults, 10 % of the
    pixels and 100 subsets, are this module's choice. Scores are pre-softmax
    logits; removed pixels take the model's black by default (Quantus's ``"black"``, each image's
    minimum, is ``baseline="min"``). SAMP (seed 002 §4.3.2, Fig. 5) reports this correlation and
    does not state ``n``. Quantus's ``SensitivityN`` is another metric: pixels are removed
    cumulatively in attribution order and the correlation is taken across the samples per step.
    """

    name, size_param, runs_param = "sensitivity_n", "n", "nr_samples"

    def __init__(self, n: Size = 0.1, nr_samples: int = 100, baseline: Baseline = "black",
                 correlation: Correlation = "pearson", softmax: bool = False, seed: int = 0,
                 batch_size: int | None = None) -> None:
        super().__init__(baseline, correlation, softmax, seed, batch_size)
        self.n = subset_size_parameter(self.name, "n", n)
        self.nr_samples = integer("nr_samples", nr_samples, 2)


@register
class MuFidelity(_SubsetCorrelation):
    """μFidelity (Bhatt et al., IJCAI 2020, def. 3): the correlation, over ``nr_runs`` random subsets
    ``S`` of ``subset_size`` units, between ``Σ_{i∈S} a_i`` and ``f(x) − f(x_[x_S = x₀])``. Higher is better.

    The defaults are Quantus 0.6.0's ``FaithfulnessCorrelation`` (100 runs, 224 pixels, Pearson,
    logits; its ``"black"`` is ``baseline="min"`` here). ``grid_size`` draws ``g × g`` grid cells
    instead of pixels, upsampled to the image by nearest neighbour with half-pixel centres; with
    ``grid_size=9, subset_size=0.2, nr_runs=200, baseline=0.0, correlation="spearman"`` this is
    Xplique's ``MuFidelity`` (cited by SAMP, seed 002 App. A.5.5 Table 7, via Novello et al. 2022,
    whose settings the seed does not give), except that Xplique removes each cell independently
    with probability 0.2 (a subset size that varies), draws the same cells for every image of its
    batch and turns an undefined correlation into 0.
    """

    name, size_param, runs_param = "mu_fidelity", "subset_size", "nr_runs"

    def __init__(self, subset_size: Size = 224, nr_runs: int = 100, grid_size: int | None = None,
                 baseline: Baseline = "black", correlation: Correlation = "pearson", softmax: bool = False,
                 seed: int = 0, batch_size: int | None = None) -> None:
        super().__init__(baseline, correlation, softmax, seed, batch_size)
        self.subset_size = subset_size_parameter(self.name, "subset_size", subset_size)
        self.nr_runs = integer("nr_runs", nr_runs, 2)
        self.grid_size = integer("grid_size", grid_size, 2, optional=True)

    def units(self, h: int, w: int) -> Tensor:
        """``(H·W,)`` each pixel's grid cell (raster order) or the pixel itself without a grid."""
        if self.grid_size is None:
            return super().units(h, w)
        g = self.grid_size
        if g > min(h, w):
            raise ValueError(f"{self.name}: grid_size={g} exceeds the image side ({h}×{w})")
        rows = (2 * torch.arange(h) + 1) * g // (2 * h)
        cols = (2 * torch.arange(w) + 1) * g // (2 * w)
        return (rows[:, None] * g + cols[None]).reshape(-1)

