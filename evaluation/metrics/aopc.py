"""AOPC: the area over the most-relevant-first perturbation curve (Samek et al., "Evaluating the visualization
of what a deep neural network has learned", IEEE TNNLS 2016), as seed 003 (Opti-CAM, §5.3.3, Table 4)
measures it with Quantus's ``RegionPerturbation``: patch size 14 and 10 regions (Quantus's defaults are 8
and 100).

Regions are square windows of ``patch_size`` pixels a side, ranked by the sum of the map over the window
(Quantus max-normalises the map and takes no ``abs``; neither changes the ranking), most relevant first.
Two sets of candidate windows, after the two Quantus implementations:

- ``"sliding"`` (Quantus ≤ 0.4.4): a window at every top-left offset inside the image; a window may run
  past the right or bottom edge, where the map counts 0 and nothing is perturbed. In ranked order a
  window is kept only if it overlaps none kept before, until ``regions`` are kept.
- ``"grid"`` (Quantus ≥ 0.5, e.g. 0.6.0): the tiles of a grid of non-overlapping windows, after
  zero-padding each side to a multiple of ``patch_size`` (half the padding before, the extra pixel
  after); the ``regions`` tiles of the largest sums.

Equal sums are ranked in raster order of the window's top-left corner (Quantus leaves their order to
numpy's unstable sort). Every channel of the kept windows takes the baseline, cumulatively: ``x⁽ᵏ⁾``
has windows ``1 … k`` at the baseline and ``x⁽⁰⁾ = x``. The score ``f`` is the target's softmax
probability (Quantus's default) and

    AOPC = (1/(L+1)) Σ_{k=0}^{L} (f(x⁽⁰⁾) − f(x⁽ᵏ⁾)),    L = regions,

a difference of probabilities (Quantus's curve holds the terms ``k = 1 … L``; the ``k = 0`` term is 0).
Seed 003 does not state the scale of Table 4's AOPC column. Higher is better. A sample in whose image
fewer than ``regions`` windows can be kept is undefined (NaN).
"""

from __future__ import annotations

from typing import Literal, cast

import torch
import torch.nn.functional as F
from torch import Tensor

from attribution.needs import Need
from attribution.params import integer
from evaluation.base import Batch, Metric, mark_undefined
from evaluation.perturbation import (
    Baseline,
    baseline_image,
    baseline_needs,
    check_baseline,
    model_inputs,
    perturbed_scores,
)
from evaluation.registry import register

__all__ = ["AOPC", "WINDOWS", "Windows"]

Windows = Literal["sliding", "grid"]
WINDOWS: tuple[Windows, ...] = ("sliding", "grid")


@register
class AOPC(Metric):
    """AOPC of the most-relevant-first region perturbation (see the module). Higher is better."""

    name, direction, category = "aopc", "higher", "faithfulness"

    def __init__(
        self,
        patch_size: int = 14,
        regions: int = 10,
        baseline: Baseline = "black",
        softmax: bool = True,
        windows: Windows = "sliding",
        batch_size: int | None = None,
    ) -> None:
        self.patch_size = integer("patch_size", patch_size, 1)
        self.regions = integer("regions", regions, 1)
        self.baseline = check_baseline(self.name, baseline)
        if type(softmax) is not bool:
            raise ValueError(f"{self.name}: softmax must be True or False; got {softmax!r}")
        self.softmax = softmax
        if windows not in WINDOWS:
            raise ValueError(f"{self.name}: windows must be one of {', '.join(map(repr, WINDOWS))}; got {windows!r}")
        self.windows = cast(Windows, windows)
        self.batch_size = integer("batch_size", batch_size, 1, optional=True)

    @property
    def needs(self) -> frozenset[Need]:
        return baseline_needs(self.baseline)

    def _corners(self, side: int) -> Tensor:
        """The candidate windows' first row (or column) along an image side of ``side`` pixels."""
        p = self.patch_size
        if self.windows == "sliding":
            return torch.arange(side)
        before = (-side) % p // 2
        return torch.arange(-before, side, p)

    def regions_of(self, maps: Tensor) -> tuple[Tensor, Tensor]:
        """``(owner, kept)``: ``(B, H·W)`` the kept window (``0 … L−1``, in order) each pixel lies in, ``L``
        where it lies in none, and ``(B,)`` how many windows were kept."""
        b, h, w = maps.shape
        p, device = self.patch_size, maps.device
        padded = F.pad(maps[:, None], (p - 1, p - 1, p - 1, p - 1))
        column_sums = F.avg_pool2d(padded, (p, 1), stride=1, divisor_override=1)
        sums = F.avg_pool2d(column_sums, (1, p), stride=1, divisor_override=1)[:, 0]  # (i, j) at [i + p − 1, j + p − 1]
        rows, cols = self._corners(h).to(device), self._corners(w).to(device)
        sums = sums[:, rows + p - 1][:, :, cols + p - 1].reshape(b, -1)
        top, left = rows.repeat_interleave(len(cols)), cols.repeat(len(rows))
        available = torch.ones_like(sums, dtype=torch.bool)
        chosen, found = [], []
        for _ in range(self.regions):
            best = sums.masked_fill(~available, -torch.inf).argmax(dim=1)  # the first maximum: raster order
            chosen.append(best)
            found.append(available.gather(1, best[:, None])[:, 0])
            i, j = top[best][:, None], left[best][:, None]
            available &= ((top - i).abs() >= p) | ((left - j).abs() >= p)
        best, hit = torch.stack(chosen, dim=1), torch.stack(found, dim=1)  # (B, L)
        offset = torch.arange(p, device=device)
        r = top[best][:, :, None] + offset.repeat_interleave(p)  # (B, L, p²): rows and columns of the windows
        c = left[best][:, :, None] + offset.repeat(p)
        valid = hit[:, :, None] & (r >= 0) & (r < h) & (c >= 0) & (c < w)
        index = torch.where(valid, r * w + c, h * w).reshape(b, -1)  # pixels outside the image go to a spare column
        window = torch.arange(self.regions, device=device).repeat_interleave(p * p).expand(b, -1)
        owner = torch.full((b, h * w + 1), self.regions, dtype=torch.long, device=device)
        owner.scatter_(1, index, window)
        return owner[:, :-1], hit.sum(dim=1)

    def curve(self, batch: Batch) -> Tensor:
        """``f(x⁽⁰⁾) − f(x⁽ᵏ⁾)`` for ``k = 0 … L``, ``(B, L + 1)`` float64 (windows not kept perturb nothing)."""
        return self._measure(batch)[0]

    def _measure(self, batch: Batch) -> tuple[Tensor, Tensor]:
        """The curve and how many windows were kept per sample, once per batch and parameters."""

        def compute() -> tuple[Tensor, Tensor]:
            images, model, targets = model_inputs(self.name, batch)
            owner, kept = self.regions_of(self.prepare(batch.maps))
            fill = baseline_image(images, self.baseline, batch.black)
            scores = perturbed_scores(model, images, fill, owner, self.regions + 1, targets, softmax=self.softmax,
                                      batch_size=self.batch_size).double()
            return scores[:, :1] - scores, kept

        return batch.memoised(("aopc_curve", self.patch_size, self.regions, str(self.baseline), self.softmax,
                               self.windows, self.normalise, self.take_abs), compute)

    def score(self, batch: Batch) -> Tensor:
        curve, kept = self._measure(batch)
        return mark_undefined(curve.mean(dim=1), kept < self.regions, self.name,
                              f"fewer than {self.regions} non-overlapping {self.patch_size}×{self.patch_size} "
                              "windows fit in the image")
