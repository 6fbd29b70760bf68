"""Box-based localisation metrics of Opti-CAM (Zhang et al., CVIU 2024, App. B.1, eqs. A1–A7) and the pointing game.

Ground truth is the batch's ``boxes`` (``Need.BOXES``): per image the boxes 𝓑 of the explained class
``c`` in the maps' pixel coordinates. A box is the set of pixels whose centre it contains (the rule
of :func:`storage.manifest.boxes_to_mask`), ``U = ∪𝓑``, and an IoU is that of pixel sets. An image
with no box containing a pixel centre is undefined (NaN, logged) for every metric that reads boxes.

The common step of App. B.1: the map ``S^c`` is binarised at its mean (``S > mean S``), the largest
8-connected component of that mask is kept (:func:`scipy.ndimage.label`; the component met first in
raster order among equally large ones) and ``B_p`` is its bounding box, the smallest pixel rectangle
holding it. A constant map has no pixel above its mean, so ``B_p`` and the metrics built on it are
undefined. Values are fractions in ``[0, 1]`` (the paper's percentages / 100), except SM.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage
from torch import Tensor

from attribution.needs import Need
from attribution.params import integer, non_negative, number
from attribution.postprocess import minmax_normalize
from evaluation.base import Batch, Metric, flat, mark_undefined, safe_divide
from evaluation.perturbation import class_scores, model_inputs, rows_per_pass
from evaluation.registry import register

__all__ = [
    "BoxAccuracy",
    "LocalizationError",
    "LocalizationF1",
    "OfficialMetric",
    "PointingGame",
    "SaliencyMetric",
    "largest_component_box",
    "mean_threshold_box",
    "pixel_boxes",
]

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)
NO_COMPONENT = "constant map: no pixel above its mean"


def pixel_boxes(boxes: Tensor, height: int, width: int) -> Tensor:
    """``(n, 4)`` boxes ``(xmin, ymin, xmax, ymax)`` → ``(m, 4)`` int64 pixel rectangles ``(x0, y0, x1, y1)``.

    A rectangle holds the pixels ``x0 ≤ u < x1``, ``y0 ≤ v < y1`` whose centre ``(u + ½, v + ½)`` lies
    in the box, clipped to the ``height × width`` map; boxes that contain no pixel centre are dropped.
    """
    edges = torch.ceil(boxes.to(torch.float64) - 0.5).long()
    x, y = edges[:, 0::2].clamp(0, width), edges[:, 1::2].clamp(0, height)
    rects = torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1)
    return rects[(rects[:, 2] > rects[:, 0]) & (rects[:, 3] > rects[:, 1])]


def _component_box(mask: np.ndarray) -> np.ndarray | None:
    labels, count = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if count == 0:
        return None
    largest = int(np.bincount(labels.ravel(), minlength=count + 1)[1:].argmax())
    rows, cols = ndimage.find_objects(labels)[largest]
    return np.array([cols.start, rows.start, cols.stop, rows.stop], dtype=np.int64)


def largest_component_box(mask: Tensor) -> Tensor | None:
    """The pixel rectangle ``(x0, y0, x1, y1)`` around the largest 8-connected component of a boolean
    ``(H, W)`` mask (the first in raster order among equally large ones); ``None`` for an empty mask."""
    box = _component_box(mask.cpu().numpy())
    return None if box is None else torch.from_numpy(box)


def mean_threshold_box(saliency: Tensor) -> Tensor | None:
    """``B_p`` (App. B.1): the box of the largest component of ``{S > mean S}``; ``None`` for a constant map."""
    return largest_component_box(saliency > saliency.mean())


def _area(rects: np.ndarray) -> np.ndarray:
    return (rects[..., 2] - rects[..., 0]) * (rects[..., 3] - rects[..., 1])


def _best_iou(box: np.ndarray, rects: np.ndarray) -> float:
    """``max_{B ∈ 𝓑} IoU(box, B)`` of pixel rectangles (a half-open rectangle's area is its pixel count)."""
    width = (np.minimum(box[2], rects[:, 2]) - np.maximum(box[0], rects[:, 0])).clip(min=0)
    height = (np.minimum(box[3], rects[:, 3]) - np.maximum(box[1], rects[:, 1])).clip(min=0)
    overlap = width * height
    return float((overlap / (_area(box) + _area(rects) - overlap)).max())


def _ground_truth(metric: Metric, batch: Batch) -> list[Tensor]:
    """Each image's ground-truth pixel rectangles."""
    (boxes,) = batch.require(metric.name, "boxes")
    height, width = batch.maps.shape[1:]
    return [pixel_boxes(b, height, width) for b in boxes]


def _without_boxes(metric: Metric, values: Tensor, batch: Batch, rects: list[Tensor]) -> Tensor:
    """``values`` with NaN (logged) for the images that have no ground-truth pixel."""
    given = torch.tensor([len(b) for b in batch.boxes], device=values.device)
    kept = torch.tensor([len(r) for r in rects], device=values.device)
    values = mark_undefined(values, given == 0, metric.name, "no ground-truth box")
    return mark_undefined(values, (given > 0) & (kept == 0), metric.name, "no ground-truth box contains a pixel centre")


def _predicted_boxes(metric: Metric, batch: Batch) -> list[Tensor | None]:
    """``B_p`` per map, shared by the metrics of one batch."""
    maps = metric.prepare(batch.maps)
    return batch.memoised(("mean_threshold_box",), lambda: [mean_threshold_box(s) for s in maps])


def _localization_iou(metric: Metric, batch: Batch) -> Tensor:
    """``max_{B ∈ 𝓑} IoU(B, B_p)`` per image, NaN (logged) where ``B_p`` or 𝓑 is missing."""
    rects = _ground_truth(metric, batch)
    predicted = _predicted_boxes(metric, batch)
    values = torch.full((len(rects),), math.nan, dtype=torch.float64, device=batch.maps.device)
    for i, (box, gt) in enumerate(zip(predicted, rects)):
        if box is not None and len(gt):
            values[i] = _best_iou(box.numpy(), gt.numpy())
    missing = torch.tensor([box is None for box in predicted], device=values.device)
    return _without_boxes(metric, mark_undefined(values, missing, metric.name, NO_COMPONENT), batch, rects)


class _BoxMetric(Metric):
    category, normalise = "localization", False
    needs = frozenset({Need.BOXES})


@register
class LocalizationError(_BoxMetric):
    """Localisation error (App. B.1 eq. A2): ``LE = 1 − max_{B ∈ 𝓑} IoU(B, B_p)``, the ILSVRC
    localisation criterion (Russakovsky et al., IJCV 2015) without the class. Lower is better."""

    name, direction = "localization_error", "lower"

    def score(self, batch: Batch) -> Tensor:
        return 1 - _localization_iou(self, batch)


@register
class OfficialMetric(_BoxMetric):
    """Official metric (App. B.1 eq. A1): ``OM = 1 − max_{B ∈ 𝓑} IoU(B, B_p) · 𝟙[c_p = c]``, with ``c``
    the batch's targets and ``c_p`` its ``predicted`` classes where given, else the model's top class
    on the images. Lower is better."""

    name, direction = "official_metric", "lower"
    needs = frozenset({Need.BOXES, Need.MODEL})

    def score(self, batch: Batch) -> Tensor:
        iou = _localization_iou(self, batch)
        images, model, targets = model_inputs(self.name, batch)
        predicted = batch.predicted
        if predicted is None:
            predicted = class_scores(model, images, softmax=False).argmax(dim=1)
        correct = (predicted.to(targets.device) == targets).to(iou.device)
        return 1 - iou * correct


@register
class LocalizationF1(_BoxMetric):
    """Pixel-wise F1 (App. B.1, eqs. A3–A4): ``F1 = 2PR / (P + R)`` with ``P = Σ_{p∈U} S_p / Σ_p S_p``
    (the energy pointing game) and ``R = Σ_{p∈U} S_p / |U|``, on the map min-max normalised to
    ``[0, 1]`` per sample. ``F1 = 0`` where the map has no mass in ``U``; a constant map has no
    min-max normalisation and is undefined. Higher is better."""

    name, direction = "localization_f1", "higher"

    def score(self, batch: Batch) -> Tensor:
        maps = minmax_normalize(self.prepare(batch.maps))
        rects = _ground_truth(self, batch)
        union = torch.zeros_like(maps, dtype=torch.bool)
        for i, gt in enumerate(rects):
            for x0, y0, x1, y1 in gt.tolist():
                union[i, y0:y1, x0:x1] = True
        a, u = flat(maps), flat(union)
        inside = (a * u).sum(dim=1)
        precision, recall = safe_divide(inside, a.sum(dim=1)), safe_divide(inside, u.sum(dim=1))
        f1 = safe_divide(2 * precision * recall, precision + recall)
        f1 = mark_undefined(f1, a.amax(dim=1) == 0, self.name, "constant map")
        return _without_boxes(self, f1, batch, rects)


@register
class BoxAccuracy(_BoxMetric):
    """Box accuracy (Choe et al., CVPR 2020; App. B.1 eq. A5) on the grids of MaxBoxAccV2 (Choe et al.,
    TPAMI 2022). On the map min-max normalised to ``[0, 1]``, ``B_p^η`` is the box of the largest
    component of ``{S > η}`` and an image is a hit at ``(η, δ)`` when ``max_{B ∈ 𝓑} IoU(B_p^η, B) ≥ δ``;
    the score is the mean over ``δ`` in ``thresholds_iou`` of the maximum over
    ``η ∈ {0, threshold_step, …} ∩ [0, 1)`` of the hit rate over images. Higher is better.

    The maximum over ``η`` is taken across the images of the call, so call it on a whole shard
    (``Need.SHARD``). The value of an image is the mean over ``δ`` of its hit at the ``η`` that
    maximises the call's hit rate for that ``δ`` (the smallest such ``η``): the mean of the values of a
    call's images is the call's MaxBoxAccV2; an image's value is not comparable across calls. Images
    without boxes are NaN and take no part in the maximum. A mask with no component counts as a miss.
    Choe et al.'s code thresholds the map quantised to 8 bits, keeps the OpenCV contour of largest
    polygon area (V2: the best box over every contour) and counts box areas with inclusive corners;
    this follows the seed's largest component, by pixel count, on the unquantised map.
    """

    name, direction = "box_accuracy", "higher"
    needs = frozenset({Need.BOXES, Need.SHARD})

    def __init__(self, thresholds_iou: Sequence[float] = (0.3, 0.5, 0.7), threshold_step: float = 0.01) -> None:
        if isinstance(thresholds_iou, str) or not isinstance(thresholds_iou, Sequence) or not thresholds_iou:
            raise ValueError(f"thresholds_iou must be a non-empty sequence of numbers in (0, 1]; "
                             f"got {thresholds_iou!r}")
        for delta in thresholds_iou:
            if number("thresholds_iou", delta, 0, strict=True) > 1:
                raise ValueError(f"thresholds_iou must lie in (0, 1]; got {delta!r}")
        self.thresholds_iou = tuple(float(d) for d in thresholds_iou)
        step = number("threshold_step", threshold_step, 0, strict=True)
        if step > 1:
            raise ValueError(f"threshold_step must lie in (0, 1]; got {threshold_step!r}")
        self.threshold_step = step

    def score(self, batch: Batch) -> Tensor:
        maps = minmax_normalize(self.prepare(batch.maps))
        rects = _ground_truth(self, batch)
        values = torch.full((len(maps),), math.nan, dtype=torch.float64, device=maps.device)
        scored = [i for i, gt in enumerate(rects) if len(gt)]
        if scored:
            etas = np.arange(0.0, 1.0, self.threshold_step)
            best = np.zeros((len(scored), len(etas)))
            for row, i in enumerate(scored):
                saliency, gt = maps[i].cpu().numpy(), rects[i].numpy()
                for col, eta in enumerate(etas):
                    box = _component_box(saliency > eta)
                    best[row, col] = 0.0 if box is None else _best_iou(box, gt)
            deltas = np.array(self.thresholds_iou)
            hits = (best[None] >= deltas[:, None, None]).astype(np.float64)  # (δ, image, η)
            chosen = hits.mean(axis=1).argmax(axis=1)
            per_image = hits[np.arange(len(deltas)), :, chosen].mean(axis=0)
            values[scored] = torch.from_numpy(per_image).to(maps.device)
        return _without_boxes(self, values, batch, rects)


@register
class PointingGame(_BoxMetric):
    """Pointing game (Zhang et al., IJCV 2018): a hit when the map's maximum lies within
    ``tolerance`` pixels of ``U`` — the distance between pixel centres from the maximal pixel to the
    nearest pixel of ``U``, 0 inside; ``tolerance = 0`` is the standard pointing game SP of App. B.1
    eq. A6. TorchRay counts ``distance < tolerance``; this counts ``≤``. Higher is better; the mean
    over categories is the report's.

    Maximal pixels that tie: ``ties="fraction"`` (default) gives the share of them that hit — the
    expected hit of a random choice among them, so a flat map scores the area share of ``U`` around
    it; ``ties="any"`` gives a hit when any of them hits, which scores ≈ 1 for Fake-CAM (ones with a
    0 at the top-left pixel), as seed 003 Table A7 (SP = 99.8).
    """

    name, direction = "pointing_game", "higher"

    def __init__(self, tolerance: float = 15, ties: Literal["any", "fraction"] = "fraction") -> None:
        self.tolerance = non_negative("tolerance", tolerance)
        if ties not in ("any", "fraction"):
            raise ValueError(f"ties must be 'any' or 'fraction'; got {ties!r}")
        self.ties = ties

    def score(self, batch: Batch) -> Tensor:
        maps = self.prepare(batch.maps)
        rects = _ground_truth(self, batch)
        values = torch.full((len(maps),), math.nan, dtype=torch.float64, device=maps.device)
        for i, gt in enumerate(rects):
            if not len(gt):
                continue
            v, u = (maps[i] == maps[i].max()).nonzero(as_tuple=True)
            gt = gt.to(maps.device)
            dx = (gt[None, :, 0] - u[:, None]).clamp(min=0) + (u[:, None] - gt[None, :, 2] + 1).clamp(min=0)
            dy = (gt[None, :, 1] - v[:, None]).clamp(min=0) + (v[:, None] - gt[None, :, 3] + 1).clamp(min=0)
            hit = (dx**2 + dy**2).amin(dim=1) <= self.tolerance**2
            values[i] = hit.any().double() if self.ties == "any" else hit.double().mean()
        return _without_boxes(self, values, batch, rects)


def _crop(image: Tensor, box: Tensor) -> Tensor:
    """The ``(1, C, H, W)`` image cut to the pixel rectangle ``box`` and resized (bilinear) back to ``H × W``."""
    x0, y0, x1, y1 = box.tolist()
    return F.interpolate(image[:, :, y0:y1, x0:x1], size=image.shape[-2:], mode="bilinear", align_corners=False)


@register
class SaliencyMetric(Metric):
    """Saliency metric (Dabkowski & Gal, NeurIPS 2017; App. B.1 eq. A7):
    ``SM = log max(0.05, |B_p| / (h·w)) − log p^c``, with ``p^c`` the softmax probability of the
    target class when the image cropped to ``B_p`` and resized (bilinear) to the input size ``h × w``
    is classified. Needs no boxes. Unbounded; lower is better.
    """

    name, direction, category, normalise = "saliency_metric", "lower", "localization", False
    needs = frozenset({Need.MODEL})

    def __init__(self, batch_size: int | None = None) -> None:
        self.batch_size = integer("batch_size", batch_size, 1, optional=True)

    def score(self, batch: Batch) -> Tensor:
        images, model, targets = model_inputs(self.name, batch)
        predicted = _predicted_boxes(self, batch)
        height, width = batch.maps.shape[1:]
        values = torch.full((len(predicted),), math.nan, dtype=torch.float64, device=batch.maps.device)
        defined = [i for i, box in enumerate(predicted) if box is not None]
        step = rows_per_pass(self.batch_size, images.device)
        for first in range(0, len(defined), step):
            chunk = defined[first:first + step]
            crops = torch.cat([_crop(images[i:i + 1], predicted[i]) for i in chunk])
            log_p = class_scores(model, crops, softmax=False).double().log_softmax(dim=1)
            log_p = log_p.gather(1, targets[chunk][:, None].to(log_p.device))[:, 0].to(values.device)
            area = torch.stack([(b[2] - b[0]) * (b[3] - b[1]) for b in (predicted[i] for i in chunk)])
            share = area.to(device=values.device, dtype=torch.float64) / (height * width)
            values[chunk] = share.clamp(min=0.05).log() - log_p
        missing = torch.tensor([box is None for box in predicted], device=values.device)
        return mark_undefined(values, missing, self.name, NO_COMPONENT)
