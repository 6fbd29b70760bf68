"""The metric interface and the NaN policy.

A metric maps saliency maps ``(B, H, W)`` at input resolution (plus, as it needs, the images,
ground-truth masks, the model and targets) to one float64 per sample, on the maps' device.
Undefined values are NaN, and every NaN is logged with its reason and sample indices — never a
silent 0. Maps are preprocessed as Quantus does by default, per metric: ``abs`` then division by
``max|a|`` **per sample** (Quantus's batch-wide default axes are one of its traps).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ClassVar, Literal, TypeVar

import torch

from attribution.methods.base import ReferencePool

__all__ = ["Metric", "cached", "mark_undefined", "normalise_by_max", "flat"]

log = logging.getLogger("evaluation")
T = TypeVar("T")


def flat(tensor: torch.Tensor) -> torch.Tensor:
    """(B, …) → (B, N) float64."""
    return tensor.reshape(len(tensor), -1).to(torch.float64)


def normalise_by_max(maps: torch.Tensor) -> torch.Tensor:
    """``a / max|a|`` per sample; an all-zero map stays zero (Quantus's ``normalise_by_max``)."""
    peak = flat(maps).abs().amax(dim=1)
    return maps / torch.where(peak > 0, peak, torch.ones_like(peak)).reshape(-1, *[1] * (maps.dim() - 1))


def cached(cache: dict | None, key: tuple, compute: Callable[[], T]) -> T:
    """``cache[key]``, computed once by ``compute()``; with no cache, computed every time."""
    if cache is None:
        return compute()
    if key not in cache:
        cache[key] = compute()
    return cache[key]


def mark_undefined(values: torch.Tensor, undefined: torch.Tensor, metric: str, reason: str) -> torch.Tensor:
    """Set ``values[undefined]`` to NaN and log which samples (rows) and why."""
    if bool(undefined.any()):
        samples = undefined.reshape(len(undefined), -1).any(dim=1).nonzero().flatten().tolist()
        log.warning("%s undefined for samples %s: %s", metric, samples, reason)
        values = values.masked_fill(undefined, float("nan"))
    return values


class Metric:
    """A saliency metric: ``metric(maps, **inputs) → (B,)`` float64 with NaN where undefined.

    ``maps`` are ``(B, H, W)`` at the images' resolution. Keyword inputs, each needed only by the
    metrics that declare it: ``images`` (B, C, H, W) as the model takes them, ``model``, ``targets``
    (B,), ``masks`` (B, H, W), ``explainer`` (images → maps, the same method re-run; robustness),
    ``seeds`` (B,) per-sample seeds (random draws do not depend on the batch), ``method`` and ``layer`` (the
    channel-level metrics read a CAM's channel weights), and ``cache``: a dict
    shared by the metrics scoring the *same* maps of the same batch, so that Insertion, Deletion and
    Pixel Flipping share one deletion curve and Max-/Avg-Sensitivity one set of re-explanations.
    Pooled metrics (``pooled = True``) compare the samples of a call with each other.
    """

    name: ClassVar[str]
    direction: ClassVar[Literal["higher", "lower"]]
    category: ClassVar[str]
    needs: ClassVar[frozenset[str]] = frozenset()  # of {"model", "masks", "explainer", "method"}
    take_abs: ClassVar[bool] = False  # Quantus's default ``abs`` for this metric
    normalise: ClassVar[bool] = True  # Quantus's default ``normalise`` (by max|a|, per sample)
    pooled: ClassVar[bool] = False  # scores depend on the other samples of the call
    reference_pool: ClassVar[ReferencePool | None] = None  # "held_out": the job gives it held-out reference features

    def prepare(self, maps: torch.Tensor) -> torch.Tensor:
        if maps.dim() != 3:
            raise ValueError(f"{self.name}: maps must be (B, H, W), got shape {tuple(maps.shape)}")
        if not torch.isfinite(maps).all():
            raise ValueError(
                f"{self.name}: maps of samples "
                f"{(~torch.isfinite(flat(maps))).any(1).nonzero().flatten().tolist()} contain NaN/inf"
            )
        maps = maps.to(torch.float64)
        maps = normalise_by_max(maps) if self.normalise else maps
        return maps.abs() if self.take_abs else maps

    def check_masks(self, maps: torch.Tensor, masks: torch.Tensor | None) -> torch.Tensor:
        if masks is None:
            raise ValueError(f"{self.name} needs ground-truth masks")
        if masks.shape != maps.shape:
            raise ValueError(f"{self.name}: masks {tuple(masks.shape)} do not match maps {tuple(maps.shape)}")
        return masks.to(device=maps.device, dtype=torch.bool)
