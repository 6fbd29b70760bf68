"""Batched perturbation machinery shared by the faithfulness and classification metrics.

Every perturbation metric scores the model on many modified copies of each image (one per step of
a curve). Here the copies are built chunk by chunk on the images' device and pushed through the
model ``batch_size`` rows at a time: Quantus's per-step numpy loop becomes a handful of large
forward passes. A pixel's *step* is its rank in the map's descending order divided by the pixels
per step; the copy at step ``s`` of a cumulative curve perturbs the pixels whose step is ``< s``,
the copy of a single-step perturbation those whose step is ``== s``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor, nn

__all__ = [
    "rows_per_pass",
    "Baseline",
    "baseline_image",
    "pixel_steps",
    "class_scores",
    "target_scores",
    "perturbed_scores",
    "trapezoid",
    "check_model_inputs",
]

Baseline = Literal["min", "mean"] | float | Sequence[float]


def rows_per_pass(batch_size: int | None, device: torch.device) -> int:
    """Images per forward pass: as given, else 16 on CPU (larger batches fall out of cache: EfficientNet-Lite0
    at 240² runs 2× slower per image at 64 rows than at 16) and 128 on an accelerator."""
    if batch_size is not None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        return batch_size
    return 16 if device.type == "cpu" else 128


def check_model_inputs(
    metric: str,
    images: Tensor | None,
    model: nn.Module | None,
    targets: Tensor | None,
    maps: Tensor,
    *,
    need_targets: bool = True,
) -> tuple[Tensor, nn.Module, Tensor | None]:
    """The images, model and targets a model-based metric needs, checked against the maps."""
    given = {"model": model, "images": images, "targets": targets if need_targets else 0}
    missing = [name for name, value in given.items() if value is None]
    if missing:
        raise ValueError(f"{metric} needs {', '.join(missing)}")
    if images.dim() != 4 or images.shape[0] != maps.shape[0] or images.shape[2:] != maps.shape[1:]:
        raise ValueError(
            f"{metric}: images {tuple(images.shape)} do not match maps {tuple(maps.shape)} "
            "(expected (B, C, H, W) with the maps' B, H, W)"
        )
    if targets is None:
        return images, model, None
    targets = torch.as_tensor(targets, device=images.device).long().reshape(-1)
    if targets.shape[0] != images.shape[0]:
        raise ValueError(f"{metric}: {targets.shape[0]} targets for {images.shape[0]} images")
    return images, model, targets


def baseline_image(images: Tensor, baseline: Baseline) -> Tensor:
    """The value a perturbed pixel takes, broadcastable to ``images`` ``(B, C, H, W)``.

    ``"min"`` is Quantus's ``"black"`` (the darkest value of each image over all channels), ``"mean"``
    its ``"mean"`` (each image's mean over all channels); a number or a per-channel sequence is a
    fixed value in the model's input space, e.g. ``-mean/std`` for a true black after normalisation.
    """
    if baseline == "min":
        return images.amin(dim=(1, 2, 3), keepdim=True)
    if baseline == "mean":
        return images.mean(dim=(1, 2, 3), keepdim=True)
    if isinstance(baseline, str):
        raise ValueError(f"unknown baseline {baseline!r}; use 'min', 'mean', a number or one number per channel")
    value = torch.as_tensor(baseline, dtype=images.dtype, device=images.device).reshape(-1)
    if value.numel() not in (1, images.shape[1]):
        raise ValueError(f"baseline has {value.numel()} values for {images.shape[1]} channels")
    return value.reshape(1, -1, 1, 1)


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
