"""Batched perturbation machinery shared by the faithfulness and classification metrics.

Every perturbation metric scores the model on many modified copies of each image (one per step of
a curve). Here the copies are built chunk by chunk on the images' device and pushed through the
model ``batch_size`` rows at a time: Quantus's per-step numpy loop becomes a handful of large
forward passes. A pixel's *step* is its rank in the map's descending order divided by the pixels
per step; the copy at step ``s`` of a cumulative curve perturbs the pixels whose step is ``< s``,
the copy of a single-step perturbation those whose step is ``== s``. Masking an image by a saliency
map (:func:`attribution.postprocess.mask_images`, in pixel or normalised space) is here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal, cast

import torch
from torch import Tensor, nn

from attribution.needs import Need
from evaluation.base import Batch

__all__ = [
    "MASK_SPACES",
    "Baseline",
    "MaskSpace",
    "baseline_image",
    "baseline_needs",
    "check_baseline",
    "check_mask_space",
    "class_scores",
    "mask_needs",
    "model_inputs",
    "perturbed_scores",
    "pixel_steps",
    "rows_per_pass",
    "target_scores",
    "trapezoid",
]

Baseline = Literal["black", "min", "mean"] | float | Sequence[float]
MaskSpace = Literal["pixel", "normalized"]
MASK_SPACES: tuple[MaskSpace, ...] = ("pixel", "normalized")


def model_inputs(metric: str, batch: Batch) -> tuple[Tensor, nn.Module, Tensor]:
    """The images, model and targets a model-based metric needs (``Need.MODEL``), from ``batch``."""
    return batch.require(metric, "images", "model", "targets")


def rows_per_pass(batch_size: int | None, device: torch.device) -> int:
    """Images per forward pass: as given, else 16 on CPU (larger batches fall out of cache: EfficientNet-Lite0
    at 240² runs 2× slower per image at 64 rows than at 16) and 128 on an accelerator."""
    if batch_size is not None:
        return batch_size
    return 16 if device.type == "cpu" else 128


def baseline_image(images: Tensor, baseline: Baseline, black: Sequence[float] | None = None) -> Tensor:
    """The value a perturbed pixel takes, broadcastable to ``images`` ``(B, C, H, W)``.

    ``"black"`` is the model's black image, ``black = −mean/std`` per channel (the image that is 0 in
    pixel space); ``"min"`` is Quantus's ``"black"`` (the darkest value of each image over all
    channels), ``"mean"`` its ``"mean"`` (each image's mean over all channels); a number or a
    per-channel sequence is a fixed value in the model's input space.
    """
    if baseline == "black":
        if black is None:
            raise ValueError("baseline 'black' is the model's black image: give black = −mean/std per channel "
                             "(Preprocessing.black), or choose baseline 'min', 'mean' or a value")
        baseline = black
    elif baseline == "min":
        return images.amin(dim=(1, 2, 3), keepdim=True)
    elif baseline == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True)
    if isinstance(baseline, str):
        raise ValueError(f"unknown baseline {baseline!r}; use 'black', 'min', 'mean', a number or one number "
                         "per channel")
    value = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).reshape(-1)
    if value.numel() not in (1, images.shape[1]):
        raise ValueError(f"baseline has {value.numel()} values for {images.shape[1]} channels")
    return value.reshape(1, -1, 1, 1)


def baseline_needs(baseline: Baseline) -> frozenset[Need]:
    """What a perturbation metric with this baseline needs: the model, and its black for ``"black"``."""
    return frozenset({Need.MODEL, Need.BLACK}) if baseline == "black" else frozenset({Need.MODEL})


def check_baseline(metric: str, baseline: Baseline) -> Baseline:
    """``baseline`` if it names a known baseline or is a number or sequence of numbers, else a ``ValueError``."""
    if isinstance(baseline, str):
        if baseline not in ("black", "min", "mean"):
            raise ValueError(f"{metric}: unknown baseline {baseline!r}; use 'black', 'min', 'mean', a number or one "
                             "number per channel")
        return baseline
    values = [baseline] if isinstance(baseline, (int, float)) else list(baseline)
    if not values or any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{metric}: baseline must be 'black', 'min', 'mean', a number or numbers, got {baseline!r}")
    return baseline if isinstance(baseline, (int, float)) else tuple(float(v) for v in values)


def check_mask_space(metric: str, mask_space: object) -> MaskSpace:
    """``mask_space`` if it is ``"pixel"`` or ``"normalized"``, else a ``ValueError`` naming the parameter."""
    if mask_space not in MASK_SPACES:
        raise ValueError(f"{metric}: mask_space must be one of {', '.join(map(repr, MASK_SPACES))}; "
                         f"got {mask_space!r}")
    return cast(MaskSpace, mask_space)


def mask_needs(mask_space: MaskSpace) -> frozenset[Need]:
    """What a metric masking images in ``mask_space`` needs: the model, and its black in pixel space."""
    return frozenset({Need.MODEL, Need.BLACK}) if mask_space == "pixel" else frozenset({Need.MODEL})


def pixel_steps(maps: Tensor, pixels_per_step: int) -> Tensor:
    """``(B, H·W)`` step index of every pixel: its rank in descending map order // ``pixels_per_step``.

    Ties keep raster order (a stable sort), so the order is deterministic on every device.
    """
    flat = maps.reshape(len(maps), -1)
    order = torch.sort(flat, dim=1, descending=True, stable=True).indices
    rank = torch.empty_like(order)
    rank.scatter_(1, order, torch.arange(flat.shape[1], device=flat.device).expand_as(order).contiguous())
    return rank // pixels_per_step


def class_scores(model: nn.Module, images: Tensor, softmax: bool) -> Tensor:
    """Logits (or softmax probabilities) ``(B, classes)``, without gradients."""
    with torch.no_grad():
        out = model(images)
    return out.softmax(dim=1) if softmax else out


def target_scores(model: nn.Module, images: Tensor, targets: Tensor, softmax: bool) -> Tensor:
    """The target class's logit (or probability) per image, ``(B,)``."""
    return class_scores(model, images, softmax).gather(1, targets[:, None]).squeeze(1)


def perturbed_scores(
    model: nn.Module,
    start: Tensor,
    finish: Tensor,
    steps: Tensor,
    n_points: int,
    targets: Tensor,
    *,
    softmax: bool,
    batch_size: int | None,
    cumulative: bool = True,
    offset: int = 0,
) -> Tensor:
    """Target scores of the perturbed copies, ``(B, n_points)``.

    Copy ``s`` (``s = offset … offset + n_points − 1``) of image ``b`` takes ``finish`` on the pixels
    whose step is ``< s`` (``cumulative``) or ``== s`` (single step) and ``start`` elsewhere.
    ``start``/``finish`` are ``(B, C, H, W)`` or broadcastable to it; ``steps`` is ``(B, H·W)``.
    """
    b, c, h, w = start.shape
    finish = finish.expand(b, c, h, w)
    rows = torch.arange(b * n_points, device=start.device)
    image_of, point_of = rows // n_points, rows % n_points + offset
    scores = torch.empty(b * n_points, device=start.device, dtype=start.dtype)
    compare: Callable[[Tensor, Tensor], Tensor] = torch.lt if cumulative else torch.eq
    step = rows_per_pass(batch_size, start.device)
    for first in range(0, len(rows), step):
        chunk = slice(first, first + step)
        img, pt = image_of[chunk], point_of[chunk]
        perturbed = compare(steps[img], pt[:, None]).reshape(-1, 1, h, w)
        copies = torch.where(perturbed, finish[img], start[img]).contiguous(memory_format=torch.channels_last)
        scores[chunk] = target_scores(model, copies, targets[img], softmax)
    return scores.reshape(b, n_points)


def trapezoid(curve: Tensor) -> Tensor:
    """Area under ``(B, P)`` curves on an x-axis normalised to ``[0, 1]``: ``trapz(curve) / (P − 1)``."""
    return torch.trapezoid(curve, dim=1) / (curve.shape[1] - 1)
