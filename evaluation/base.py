"""The metric interface: a typed batch of inputs, declared needs and the NaN policy.

A metric scores a :class:`Batch` — saliency maps ``(B, H, W)`` at input resolution and whatever
else it declares in ``needs`` (:class:`attribution.needs.Need`: the model, masks, boxes, a re-explainer,
channel weights, the model's black or its normalisation, a reference pool, a whole shard) — and gives one float64 per
sample, on the maps' device. ``metric(maps, images=…, model=…, targets=…)`` builds the batch in one
line; an input the batch does not know is a ``TypeError``, a missing one a ``ValueError`` naming it.
A batch's ``memo`` belongs to its maps: metrics scoring the same batch share their curves and
re-explanations through it, and a batch of other maps starts with an empty one.

Undefined values are NaN, and every NaN is logged with its reason and sample indices — never a
silent 0. Maps are preprocessed as Quantus does by default, per metric: ``abs`` then division by
``max|a|`` **per sample** (Quantus's batch-wide default axes are one of its traps).
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, ClassVar, Literal, TypeVar

import torch
from torch import Tensor, nn

from attribution.layout import FeatureLayout
from attribution.needs import Need, reference_pool_of
from attribution.normalisation import Normalisation
from attribution.numerics import safe_divide

__all__ = ["Batch", "Explainer", "Metric", "flat", "mark_undefined", "normalise_by_max", "safe_divide"]

log = logging.getLogger("evaluation")
T = TypeVar("T")
Explainer = Callable[[Tensor, Tensor], Tensor]  # (images, targets) → scored maps (B, H, W), the same method re-run


def flat(tensor: Tensor) -> Tensor:
    """(B, …) → (B, N) float64."""
    return tensor.reshape(len(tensor), -1).to(torch.float64)


def normalise_by_max(maps: Tensor) -> Tensor:
    """``a / max|a|`` per sample; an all-zero map stays zero (Quantus's ``normalise_by_max``)."""
    peak = flat(maps).abs().amax(dim=1)
    return safe_divide(maps, peak.reshape(-1, *[1] * (maps.dim() - 1)))


def mark_undefined(values: Tensor, undefined: Tensor, metric: str, reason: str) -> Tensor:
    """Set ``values[undefined]`` to NaN and log which samples (rows) and why."""
    if bool(undefined.any()):
        samples = undefined.reshape(len(undefined), -1).any(dim=1).nonzero().flatten().tolist()
        log.warning("%s undefined for samples %s: %s", metric, samples, reason)
        values = values.masked_fill(undefined, float("nan"))
    return values


@dataclass(frozen=True, eq=False)
class Batch:
    """The maps a metric scores and the inputs they came from, checked against each other once.

    ``maps`` (B, H, W); ``images`` (B, C, H, W) as the model takes them; ``targets`` (B,) explained
    classes; ``masks`` (B, H, W) ground truth; ``seeds`` (B,) per-sample seeds (a sample's random
    draws do not depend on the batch); ``black`` the model's black image (``−mean/std`` per channel);
    ``layer``/``layout`` the method's target layer and ``weights`` (B, K) its channel weights
    (``None`` for a method without them); ``explainer`` the same method re-run; ``predicted`` (B,) the
    model's classes where the caller has them; ``boxes`` one float ``(n_i, 4)`` tensor per map of the
    explained class's ground-truth boxes ``(xmin, ymin, xmax, ymax)`` in the maps' continuous pixel
    coordinates (pixel ``(u, v)`` covers ``[u, u+1) × [v, v+1)`` and lies in a box if its centre does,
    as :func:`storage.manifest.boxes_to_mask`), ``n_i = 0`` allowed; ``normalisation`` the model's
    ``mean``/``std`` (its black is ``black`` where that is not given, and must equal it where it is).
    ``memo`` holds what metrics of these maps share.
    """

    maps: Tensor
    images: Tensor | None = None
    targets: Tensor | None = None
    model: nn.Module | None = None
    masks: Tensor | None = None
    seeds: Tensor | None = None
    black: tuple[float, ...] | None = None
    layer: str | None = None
    layout: FeatureLayout | None = None
    weights: Tensor | None = None
    explainer: Explainer | None = None
    predicted: Tensor | None = None
    boxes: tuple[Tensor, ...] | None = None
    normalisation: Normalisation | None = None
    memo: dict[tuple, Any] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        maps = self.maps
        if not isinstance(maps, Tensor) or maps.dim() != 3:
            raise ValueError(f"maps must be a (B, H, W) tensor, got {_shape(maps)}")
        b, h, w = maps.shape
        if self.images is not None and (self.images.dim() != 4 or self.images.shape[0] != b
                                        or tuple(self.images.shape[2:]) != (h, w)):
            raise ValueError(f"images {_shape(self.images)} do not match maps {_shape(maps)} "
                             "(expected (B, C, H, W) with the maps' B, H, W)")
        if self.masks is not None and tuple(self.masks.shape) != (b, h, w):
            raise ValueError(f"masks {_shape(self.masks)} do not match maps {_shape(maps)}")
        if self.weights is not None and (self.weights.dim() != 2 or self.weights.shape[0] != b):
            raise ValueError(f"channel weights {_shape(self.weights)} are not (B, K) for {b} maps")
        device = self.images.device if self.images is not None else maps.device
        for name in ("targets", "predicted", "seeds"):
            value = getattr(self, name)
            if value is None:
                continue
            value = torch.as_tensor(value, device=device if name != "seeds" else None)
            if value.is_floating_point() or value.dtype == torch.bool:
                raise TypeError(f"{name} must be integers, got dtype {value.dtype}")
            value = value.long().reshape(-1)
            if len(value) != b:
                raise ValueError(f"{len(value)} {name} for {b} maps")
            object.__setattr__(self, name, value)
        if self.black is not None:
            object.__setattr__(self, "black", tuple(float(v) for v in self.black))
        if self.normalisation is not None:
            self._check_normalisation(self.normalisation)
        if self.boxes is not None:
            object.__setattr__(self, "boxes", _checked_boxes(self.boxes, b))

    def _check_normalisation(self, normalisation: Normalisation) -> None:
        if not isinstance(normalisation, Normalisation):
            raise TypeError(f"normalisation must be a Normalisation(mean, std), got {type(normalisation).__name__}")
        if self.images is not None and self.images.shape[1] != normalisation.channels:
            raise ValueError(f"the normalisation has {normalisation.channels} channels but the images "
                             f"{_shape(self.images)} have {self.images.shape[1]}")
        if self.black is None:
            object.__setattr__(self, "black", normalisation.black)
        elif len(self.black) != normalisation.channels or not all(
                math.isclose(a, b, rel_tol=1e-4, abs_tol=1e-4) for a, b in zip(self.black, normalisation.black)):
            raise ValueError(f"black {self.black} is not the normalisation's black −mean/std = {normalisation.black}")

    def subset(self, index: Sequence[int]) -> Batch:
        """The samples ``index`` of this batch (with a memo of their own)."""
        rows = torch.as_tensor(list(index), dtype=torch.long)
        return replace(self, **{name: _take(getattr(self, name), rows) for name in _PER_SAMPLE})

    def require(self, metric: str, *names: str) -> tuple:
        """The inputs ``names``, or a ``ValueError`` naming every one that is missing."""
        missing = [_DESCRIBED.get(name, name) for name in names if getattr(self, name) is None]
        if missing:
            raise ValueError(f"{metric} needs {', '.join(missing)}")
        return tuple(getattr(self, name) for name in names)

    def memoised(self, key: tuple, compute: Callable[[], T]) -> T:
        """``compute()`` once per ``key`` for these maps."""
        if key not in self.memo:
            self.memo[key] = compute()
        return self.memo[key]


_DESCRIBED = {"masks": "ground-truth masks", "boxes": "ground-truth boxes",
              "layer": "the method's target layer (layer=…)",
              "explainer": "an explainer (images, targets → maps) to re-explain perturbed inputs",
              "black": "the model's black image (black = −mean/std per channel)",
              "normalisation": "the model's input normalisation (normalisation=Normalisation(mean, std))"}
_PER_SAMPLE = ("maps", "images", "targets", "masks", "seeds", "weights", "predicted", "boxes")


def _checked_boxes(boxes: Sequence[Tensor], b: int) -> tuple[Tensor, ...]:
    """One float64 ``(n, 4)`` tensor of finite ``(xmin, ymin, xmax, ymax)`` per map, each with ``min ≤ max``."""
    if len(boxes) != b:
        raise ValueError(f"{len(boxes)} box sets for {b} maps (one (n, 4) tensor per map)")
    checked = []
    for i, value in enumerate(boxes):
        value = torch.as_tensor(value, dtype=torch.float64)
        if value.dim() != 2 or value.shape[1] != 4:
            raise ValueError(f"boxes of sample {i} are {_shape(value)}, not (n, 4)")
        if not torch.isfinite(value).all() or bool((value[:, 2:] < value[:, :2]).any()):
            raise ValueError(f"boxes of sample {i} are not finite (xmin, ymin, xmax, ymax) with min ≤ max")
        checked.append(value)
    return tuple(checked)


def _take(value: Any, rows: Tensor) -> Any:
    if isinstance(value, tuple):
        return tuple(value[i] for i in rows.tolist())
    return value[rows.to(value.device)] if isinstance(value, Tensor) else value


def _shape(value: Any) -> str:
    return str(tuple(value.shape)) if isinstance(value, Tensor) else type(value).__name__


Direction = Literal["higher", "lower"]
_NEED_FIELDS = {Need.MODEL: ("images", "model", "targets"), Need.MASKS: ("masks",), Need.BOXES: ("boxes",),  # the
                Need.EXPLAINER: ("explainer",), Need.CHANNEL_WEIGHTS: ("layer",),  # Batch fields that supply each need
                Need.BLACK: ("black",), Need.NORMALISATION: ("normalisation",)}


class Metric(ABC):
    """A saliency metric: ``metric(batch)`` or ``metric(maps, **inputs)`` → ``(B,)`` float64, NaN where undefined.

    Subclasses set ``name``, ``direction``, ``category`` and ``needs`` (a class attribute, or a
    property where the needs depend on parameters) and implement :meth:`score`.
    """

    name: ClassVar[str]
    direction: ClassVar[Direction]
    category: ClassVar[str]
    needs: frozenset[Need] = frozenset()
    take_abs: ClassVar[bool] = False  # Quantus's default ``abs`` for this metric
    normalise: ClassVar[bool] = True  # Quantus's default ``normalise`` (by max|a|, per sample)

    @property
    def reference_pool(self) -> str | None:
        """The reference pool this metric scores on (``"held_out"``), as its needs declare."""
        return reference_pool_of(self.needs)

    def __call__(
        self,
        maps: Tensor | Batch,
        *,
        images: Tensor | None = None,
        targets: Tensor | Sequence[int] | None = None,
        model: nn.Module | None = None,
        masks: Tensor | None = None,
        seeds: Tensor | Sequence[int] | None = None,
        black: Sequence[float] | None = None,
        layer: str | None = None,
        layout: FeatureLayout | None = None,
        weights: Tensor | None = None,
        explainer: Explainer | None = None,
        predicted: Tensor | Sequence[int] | None = None,
        boxes: Sequence[Tensor] | None = None,
        normalisation: Normalisation | None = None,
    ) -> Tensor:
        if isinstance(maps, Batch):
            given = [k for k, v in locals().items() if k not in ("self", "maps") and v is not None]
            if given:
                raise TypeError(f"{self.name}: pass inputs in the Batch or as keywords, not both ({', '.join(given)})")
            batch = maps
        else:
            batch = Batch(maps, images, targets, model, masks, seeds, black, layer, layout, weights, explainer,
                          predicted, boxes, normalisation)
        batch.require(self.name, *(name for need, names in _NEED_FIELDS.items() if need in self.needs
                                   for name in names))
        return self.score(batch)

    @abstractmethod
    def score(self, batch: Batch) -> Tensor:
        """One float64 per map of ``batch``."""

    def prepare(self, maps: Tensor) -> Tensor:
        """The maps as this metric reads them: float64, finite, max-normalised and ``abs`` as Quantus's defaults."""
        if not torch.isfinite(maps).all():
            raise ValueError(
                f"{self.name}: maps of samples "
                f"{(~torch.isfinite(flat(maps))).any(1).nonzero().flatten().tolist()} contain NaN/inf"
            )
        maps = maps.to(torch.float64)
        maps = normalise_by_max(maps) if self.normalise else maps
        return maps.abs() if self.take_abs else maps

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({params})"

