"""Faithfulness metrics: does removing what the map ranks first change the model's output most?

All are batched torch (see :mod:`evaluation.perturbation`) except the segmentation inside IROF
(scikit-image SLIC, as Quantus). A map ``(B, H, W)`` ranks pixels; a perturbed pixel takes the
baseline value in every channel. Quantus counts *features* (pixel × channel) and, on RGB input,
broadcasts the map over channels, so its ``features_in_step = 3·k`` equals our ``k`` pixels per step.

Curves are integrated on an x-axis normalised to ``[0, 1]`` (``trapz / (P − 1)`` over ``P`` points),
so a score does not grow with the number of steps; Quantus integrates with ``dx = 1`` (its value is
ours × ``(P − 1)``). Deletion, Pixel Flipping and Insertion−Deletion share one deletion curve (and
Insertion one insertion curve) when they score the same :class:`evaluation.base.Batch` (its memo).
Deletion, Insertion and Insertion−Deletion also take SAMP's protocol (Zhang et al., ICLR 2024, seed 002
App. A.4.1) as parameters: the full-score normalisation, the rectangle mean and the blur of the start.

Quantus 0.6.0 vs 0.4.4 (used by the paper): 0.4.4 evaluated one sample at a time, so its default
max-normalisation was per sample; 0.6.0 normalises over the whole batch unless ``normalise_axes`` is
set. Here normalisation is per sample, i.e. 0.4.4's behaviour, and results do not depend on batching.
"""

from __future__ import annotations

import math
from typing import Literal, cast

import numpy as np
import torch
from skimage.segmentation import slic
from torch import Tensor

from attribution.blur import rise_blur
from attribution.needs import Need
from attribution.params import integer, non_negative, positive
from evaluation.base import Batch, Metric, flat, mark_undefined, safe_divide
from evaluation.perturbation import (
    Baseline,
    baseline_image,
    baseline_needs,
    check_baseline,
    class_scores,
    model_inputs,
    perturbed_scores,
    pixel_steps,
    target_scores,
    trapezoid,
)
from evaluation.registry import register

__all__ = [
    "IROF",
    "Deletion",
    "FaithfulnessEstimate",
    "Infidelity",
    "Insertion",
    "InsertionMinusDeletion",
    "PixelFlipping",
    "Sufficiency",
    "rise_blur",
]


CurveNormalisation = Literal["none", "full_score"]
AreaRule = Literal["trapezoid", "mean"]


def _pixels_per_step(maps: Tensor, steps: int) -> int:
    return math.ceil(maps.shape[1] * maps.shape[2] / steps)


class _ModelMetric(Metric):
    """A metric that scores the model on perturbed copies of the images: softmax or logit scores of
    the target class, and the images per forward pass (default :func:`evaluation.perturbation.rows_per_pass`)."""

    needs = frozenset({Need.MODEL})

    def __init__(self, softmax: bool = True, batch_size: int | None = None) -> None:
        self.softmax = softmax
        self.batch_size = integer("batch_size", batch_size, 1, optional=True)

    def _inputs(self, batch: Batch) -> tuple[Tensor, Tensor, torch.nn.Module, Tensor]:
        images, model, targets = model_inputs(self.name, batch)
        return self.prepare(batch.maps).to(images.dtype), images, model, targets


class _CurveMetric(_ModelMetric):
    """The ranked-pixel curves: ``steps`` (≈ points of the curve; ``H·W/steps`` pixels per step, rounded
    up) and the ``baseline`` that removed pixels take (default: the model's black, ``Need.BLACK``)."""

    def __init__(
        self, steps: int = 224, baseline: Baseline = "black", softmax: bool = True, batch_size: int | None = None
    ) -> None:
        super().__init__(softmax, batch_size)
        self.steps = integer("steps", steps, 1)
        self.baseline = check_baseline(self.name, baseline)

    @property
    def needs(self) -> frozenset[Need]:
        return baseline_needs(self.baseline)

    def fill(self, batch: Batch, images: Tensor) -> Tensor:
        """The baseline image, broadcastable to ``images``."""
        return baseline_image(images, self.baseline, batch.black)

    def ranked_scores(self, maps: Tensor, start: Tensor, fill: Tensor, model: torch.nn.Module, targets: Tensor, *,
                      extra_step: int, cumulative: bool = True) -> tuple[Tensor, Tensor]:
        """``(steps, scores)``: each pixel's step in the map's ranking, and the target scores of copies of
        ``start`` whose steps' pixels are taken from ``fill`` (cumulatively, or one step at a time);
        ``extra_step`` adds the copy after the last step."""
        steps = pixel_steps(maps, _pixels_per_step(maps, self.steps))
        scores = perturbed_scores(
            model,
            start,
            fill,
            steps,
            int(steps.max()) + 1 + extra_step,
            targets,
            softmax=self.softmax,
            batch_size=self.batch_size,
            cumulative=cumulative,
        )
        return steps, scores

    def deletion_curve(self, batch: Batch) -> Tensor:
        """Target scores while the top-ranked pixels are replaced by the baseline, ``(B, S + 1)``:
        point ``s`` has the first ``s`` steps deleted (point 0 is the image itself)."""

        def compute() -> Tensor:
            maps, images, model, targets = self._inputs(batch)
            return self.ranked_scores(maps, images, self.fill(batch, images), model, targets, extra_step=1)[1].double()

        return batch.memoised(("deletion_curve", self.steps, str(self.baseline), self.softmax, self.normalise,
                               self.take_abs), compute)


class _AreaMetric(_CurveMetric):
    """The areas under the Deletion and Insertion curves, by RISE's protocol (the defaults) or SAMP's.

    SAMP's protocol (Zhang et al., ICLR 2024, seed 002 §4.1 and App. A.4.1): the pre-softmax logit
    (``softmax=False``); ``normalise_curve="full_score"``, each point divided by the full image's
    score, ``ŷ^k = y^k / y^T`` (the curve's own full-image point: Deletion's first, Insertion's
    last); ``auc="mean"``, the rectangle mean ``(1/(K+1)) Σ_{k=0}^{K} ŷ^k`` over the ``K + 1``
    points (not bounded to ``[0, 1]``), where ``"trapezoid"`` is the trapezoid on an x-axis
    normalised to ``[0, 1]``; Insertion from a blur of kernel ``blur_kernel`` and σ ``blur_sigma``
    (RISE's 11/5, SAMP's on MNIST and CIFAR-10; 31/5 on ImageNet). SAMP's ``s_m`` pixels per step
    is ``steps = ⌈H·W / s_m⌉`` (a step takes ``⌈H·W / steps⌉`` pixels, the last one the rest):
    28 for ``s_m = 224·8`` at 224² (``K = 28``), 79 for ``s_m = 10`` at MNIST's 28², 103 at
    CIFAR-10's 32². SAMP's "zero-filled image" is the pixel-space black (``baseline="black"``), or
    the normalised tensor's zeros (``baseline=0.0``) if it followed RISE's code there too.
    """

    def __init__(
        self,
        steps: int = 224,
        baseline: Baseline = "black",
        softmax: bool = True,
        batch_size: int | None = None,
        normalise_curve: CurveNormalisation = "none",
        auc: AreaRule = "trapezoid",
        blur_kernel: int = 11,
        blur_sigma: float = 5.0,
    ) -> None:
        super().__init__(steps, baseline, softmax, batch_size)
        self.normalise_curve = cast(CurveNormalisation, _choice(self.name, "normalise_curve", normalise_curve,
                                                                ("none", "full_score")))
        self.auc = cast(AreaRule, _choice(self.name, "auc", auc, ("trapezoid", "mean")))
        self.blur_kernel = integer("blur_kernel", blur_kernel, 1)
        if self.blur_kernel % 2 == 0:
            raise ValueError(f"{self.name}: blur_kernel must be odd; got {blur_kernel!r}")
        self.blur_sigma = positive("blur_sigma", blur_sigma)

    def insertion_curve(self, batch: Batch) -> Tensor:
        """Target scores while the top-ranked pixels are copied onto a blurred image, ``(B, S + 1)``."""

        def compute() -> Tensor:
            maps, images, model, targets = self._inputs(batch)
            start = rise_blur(images, self.blur_kernel, self.blur_sigma)
            return self.ranked_scores(maps, start, images, model, targets, extra_step=1)[1].double()

        return batch.memoised(("insertion_curve", self.steps, self.softmax, self.normalise, self.take_abs,
                               self.blur_kernel, self.blur_sigma), compute)

    def area(self, curve: Tensor, full: Tensor) -> Tensor:
        """The area under ``(B, P)`` curves whose full-image scores are ``full`` ``(B,)``, by ``auc`` after
        ``normalise_curve``; NaN (logged) where a full-score normalisation divides by 0."""
        if self.normalise_curve == "full_score":
            curve = mark_undefined(safe_divide(curve, full[:, None]), (full == 0)[:, None].expand_as(curve),
                                   self.name, "the full image's score is 0 (normalise_curve='full_score')")
        return curve.mean(dim=1) if self.auc == "mean" else trapezoid(curve)

    def deletion_area(self, batch: Batch) -> Tensor:
        curve = self.deletion_curve(batch)
        return self.area(curve, curve[:, 0])

    def insertion_area(self, batch: Batch) -> Tensor:
        curve = self.insertion_curve(batch)
        return self.area(curve, curve[:, -1])


def _choice(metric: str, name: str, value: object, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ValueError(f"{metric}: {name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return cast(str, value)


@register
class Deletion(_AreaMetric):
    """Deletion AUC (Petsiuk et al., RISE, BMVC 2018, sec. 4.1): the area under the target-probability
    curve as the top-ranked pixels are deleted, ``steps`` at a time, from the image (point 0) to the
    fully deleted one; x-axis normalised to ``[0, 1]``. Lower is better. SAMP's protocol is a choice
    of parameters (:class:`_AreaMetric`).

    Deleted pixels take the model's black by default (``−mean/std``, what the image is after
    normalisation where it was black); RISE's reference code deletes to zeros of the *normalised*
    tensor (``baseline=0.0``, the dataset's mean colour) and Quantus's ``"black"`` is each image's
    darkest value (``baseline="min"``).
    """

    name, direction, category = "deletion", "lower", "faithfulness"

    def score(self, batch: Batch) -> Tensor:
        return self.deletion_area(batch)


@register
class Insertion(_AreaMetric):
    """Insertion AUC (RISE, sec. 4.1): start from the image blurred by a Gaussian (kernel 11, σ = 5,
    RISE's ``gkern(11, 5)``; :func:`rise_blur`) and copy in the top-ranked pixels ``steps`` at a time;
    the area under the target-probability curve, x-axis normalised to ``[0, 1]``. Higher is better.
    SAMP's protocol is a choice of parameters (:class:`_AreaMetric`).

    torchvision's blur pads by reflection; RISE's convolution zero-pads (darker borders). The
    baseline is not used (the start is the blurred image); it is a parameter so that Insertion and
    Deletion read the same spec.
    """

    name, direction, category = "insertion", "higher", "faithfulness"
    needs = frozenset({Need.MODEL})

    def score(self, batch: Batch) -> Tensor:
        return self.insertion_area(batch)


@register
class InsertionMinusDeletion(_AreaMetric):
    """Insertion AUC − Deletion AUC (the paper's Table 12 summary of both RISE curves), each by the same
    protocol (:class:`_AreaMetric`). Higher is better."""

    name, direction, category = "insertion_minus_deletion", "higher", "faithfulness"

    def score(self, batch: Batch) -> Tensor:
        return self.insertion_area(batch) - self.deletion_area(batch)


@register
class PixelFlipping(_CurveMetric):
    """Pixel Flipping (Bach et al., PLOS ONE 2015): the target probability as the top-ranked pixels are
    flipped to the baseline cumulatively; Quantus's curve starts *after* the first step (points
    ``1 … S``). Score: its area on a normalised x-axis (Quantus's ``return_auc_per_sample`` is this
    × ``(S − 1)``). Lower is better.
    """

    name, direction, category = "pixel_flipping", "lower", "faithfulness"

    def score(self, batch: Batch) -> Tensor:
        return trapezoid(self.deletion_curve(batch)[:, 1:])


@register
class FaithfulnessEstimate(_CurveMetric):
    """Faithfulness Estimate (Alvarez-Melis & Jaakkola, NeurIPS 2018, eq. 5): the Pearson correlation,
    over steps, between the attribution of the pixels removed at that step *alone* and the drop of
    the target logit ``f(x) − f(x with those pixels at the baseline)``. Higher is better; undefined
    (NaN) where either series is constant. Quantus default: logits.
    """

    name, direction, category = "faithfulness_estimate", "higher", "faithfulness"

    def __init__(
        self, steps: int = 224, baseline: Baseline = "black", softmax: bool = False, batch_size: int | None = None
    ) -> None:
        super().__init__(steps, baseline, softmax, batch_size)

    def score(self, batch: Batch) -> Tensor:
        maps, images, model, targets = self._inputs(batch)
        fill = self.fill(batch, images)
        steps, perturbed = self.ranked_scores(maps, images, fill, model, targets, extra_step=0, cumulative=False)
        n = perturbed.shape[1]
        drops = (target_scores(model, images, targets, self.softmax)[:, None] - perturbed).double()
        attributions = torch.zeros(len(maps), n, dtype=torch.float64, device=maps.device)
        attributions.scatter_add_(1, steps, flat(maps))
        return _pearson(attributions, drops, self.name)


def _pearson(a: Tensor, b: Tensor, metric: str) -> Tensor:
    a, b = a - a.mean(dim=1, keepdim=True), b - b.mean(dim=1, keepdim=True)
    norm = a.norm(dim=1) * b.norm(dim=1)
    corr = safe_divide((a * b).sum(dim=1), norm)
    return mark_undefined(corr, norm == 0, metric, "constant attribution or constant output change over the steps")


@register
class IROF(_ModelMetric):
    """Iterative Removal Of Features (Rieger & Hansen, 2020): SLIC superpixels (scikit-image, on the
    input as Quantus does) are ranked by mean attribution and replaced cumulatively by the image's
    per-channel mean; the curve is ``f(x_s)/f(x)`` of the target probability, ``s = 0 … S`` with
    ``S`` segments. Score: the area *over* the curve on a normalised x-axis, ``1 − trapz/S``. Higher is better.

    Quantus 0.6.0 integrates ``s = 1 … S`` with ``dx = 1`` (``AOC = S − trapz``), its default
    ``perturb_func`` cannot broadcast a one-channel mask onto RGB input, and its ``"mean"`` baseline
    is the mean of the whole (already perturbed) batch; the per-image channel mean here is
    the original's baseline and does not depend on the batch.
    """

    name, direction, category = "irof", "higher", "faithfulness"

    def __init__(self, softmax: bool = True, batch_size: int | None = None, n_segments: int = 100) -> None:
        super().__init__(softmax, batch_size)
        self.n_segments = integer("n_segments", n_segments, 1)

    def segments(self, images: Tensor) -> Tensor:
        """``(B, H·W)`` SLIC segment labels of each image (``start_label=0``)."""
        labels = [
            slic(np.moveaxis(x, 0, -1).astype(np.float64), n_segments=self.n_segments, start_label=0)
            for x in images.detach().cpu().numpy()
        ]
        return torch.as_tensor(np.stack(labels), device=images.device).reshape(len(images), -1).long()

    def curve(self, maps: Tensor, images: Tensor, model: torch.nn.Module, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``f(x_s)/f(x)`` for ``s = 0 … max S`` ``(B, max S + 1)`` and each image's segment count ``S``."""
        segments = self.segments(images)
        counts = segments.max(dim=1).values + 1
        n_max = int(counts.max())
        totals = torch.zeros(len(maps), n_max, dtype=torch.float64, device=maps.device).scatter_add_(
            1, segments, flat(maps)
        )
        sizes = torch.zeros_like(totals).scatter_add_(1, segments, torch.ones_like(flat(maps)))
        means = torch.where(sizes > 0, safe_divide(totals, sizes), torch.full_like(totals, -math.inf))
        order = torch.sort(means, dim=1, descending=True, stable=True).indices
        rank = torch.empty_like(order).scatter_(
            1, order, torch.arange(n_max, device=order.device).expand_as(order).contiguous()
        )
        baseline = images.mean(dim=(2, 3), keepdim=True)
        scores = perturbed_scores(
            model,
            images,
            baseline,
            rank.gather(1, segments),
            n_max + 1,
            targets,
            softmax=self.softmax,
            batch_size=self.batch_size,
        ).double()
        return scores / scores[:, :1], counts

    def score(self, batch: Batch) -> Tensor:
        maps, images, model, targets = self._inputs(batch)
        ratios, counts = self.curve(maps, images, model, targets)
        return torch.stack([1 - trapezoid(ratios[i : i + 1, : int(counts[i]) + 1])[0] for i in range(len(maps))])


@register
class Sufficiency(Metric):
    """Sufficiency (Dasgupta et al., ICML 2022): among the other samples whose explanations lie within
    ``threshold`` of this one (standardised Euclidean distance, divided by the largest distance in
    the pool), the share predicted as the same class. Higher is better.

    A *pooled* metric: the pool is the samples passed together, so the grid jobs call it on a
    whole manifest shard, never on a Ray batch. Quantus 0.6.0 uses its batch as the pool too, and
    gives 0 where no sample is close; that is undefined here (NaN with a reason). Features with zero
    variance over the pool carry no distance and are dropped (scipy's ``seuclidean`` divides by 0).
    """

    name, direction, category, take_abs = "sufficiency", "higher", "faithfulness", True
    needs = frozenset({Need.SHARD})

    def __init__(self, threshold: float = 0.6) -> None:
        self.threshold = non_negative("threshold", threshold)

    def score(self, batch: Batch) -> Tensor:
        """The pool is the batch; its ``predicted`` classes, or the model's on its images."""
        maps = self.prepare(batch.maps)
        predicted = batch.predicted
        if predicted is None:
            images, model = batch.require(self.name, "images", "model")  # or the batch's predicted classes
            predicted = class_scores(model, images, softmax=False).argmax(dim=1)
        predicted = predicted.to(maps.device)
        a = flat(maps)
        variance = a.var(dim=0, unbiased=True) if len(a) > 1 else torch.zeros_like(a[0])
        keep = variance > 0
        scaled = a[:, keep] / variance[keep].sqrt()
        distance = torch.cdist(scaled, scaled)
        peak = distance.max()
        distance = distance / peak if peak > 0 else distance
        close = (distance <= self.threshold) & ~torch.eye(len(a), dtype=torch.bool, device=a.device)
        same = (predicted[None] == predicted[:, None]) & close
        neighbours = close.sum(dim=1)
        share = safe_divide(same.sum(dim=1).double(), neighbours.double())
        return mark_undefined(
            share.double(), neighbours == 0, self.name, "no other sample's explanation within the threshold"
        )


@register
class Infidelity(Metric):
    """Infidelity as Quantus 0.6.0 computes it (after Yeh et al., NeurIPS 2019, eq. 1): square patches
    of ``patch_size`` are set to the baseline one after another in raster order, *cumulatively*;
    after each, the squared error between the drop of the target logit ``f(x) − f(x̃)`` and the
    attribution's prediction ``Σ a·(x − x̃)`` (map summed over channels); the mean over patches, then
    over patch sizes. Lower is better. An image whose side is not a multiple of the patch is padded
    symmetrically, as Quantus pads.

    Yeh et al. draw random perturbations; Quantus's default here is deterministic, so its
    ``n_perturb_samples`` repetitions are identical and are computed once. This follows 0.6.0's
    elementwise ``Σ a·(x − x̃)``; 0.4.4 (the paper's version) looped per sample, and its form of this
    sum was not checked here (no 0.4.4 source offline). Not normalised (Quantus ``normalise=False``). The paper's own
    channel-level infidelity is :class:`evaluation.metrics.completeness.CAMInfidelity`.
    """

    name, direction, category, normalise = "infidelity", "lower", "faithfulness", False

    def __init__(
        self,
        patch_sizes: tuple[int, ...] = (4,),
        baseline: Baseline = "black",
        softmax: bool = False,
        batch_size: int | None = None,
    ) -> None:
        self.patch_sizes = tuple(integer("patch_sizes", size, 1) for size in patch_sizes)
        if not self.patch_sizes:
            raise ValueError(f"{self.name}: patch_sizes must name at least one patch size")
        self.baseline, self.softmax = check_baseline(self.name, baseline), softmax
        self.batch_size = integer("batch_size", batch_size, 1, optional=True)

    @property
    def needs(self) -> frozenset[Need]:
        return baseline_needs(self.baseline)

    def score(self, batch: Batch) -> Tensor:
        images, model, targets = model_inputs(self.name, batch)
        maps = self.prepare(batch.maps)
        h, w = maps.shape[1:]
        fill = baseline_image(images, self.baseline, batch.black)
        gain = flat(maps) * flat((images - fill).sum(dim=1))  # a_p · Σ_c (x − x̃)_{c,p} once pixel p is replaced
        full = target_scores(model, images, targets, self.softmax).double()
        losses = []
        for size in self.patch_sizes:
            blocks = _raster_blocks(h, w, size, maps.device).expand(len(maps), -1)
            n = int(blocks.max()) + 1
            scores = perturbed_scores(
                model, images, fill, blocks, n, targets, softmax=self.softmax, batch_size=self.batch_size, offset=1
            ).double()
            predicted = (
                torch.zeros(len(maps), n, dtype=torch.float64, device=maps.device)
                .scatter_add_(1, blocks, gain)
                .cumsum(1)
            )
            losses.append((full[:, None] - scores - predicted).pow(2).mean(dim=1))
        return torch.stack(losses).mean(dim=0)


def _raster_blocks(h: int, w: int, size: int, device: torch.device) -> Tensor:
    """``(1, H·W)`` raster index of each pixel's ``size × size`` block after Quantus's symmetric padding."""
    pad_h, pad_w = (-h) % size // 2, (-w) % size // 2
    rows = (torch.arange(h, device=device) + pad_h) // size
    cols = (torch.arange(w, device=device) + pad_w) // size
    return (rows[:, None] * math.ceil((w + (-w) % size) / size) + cols[None]).reshape(1, -1)
