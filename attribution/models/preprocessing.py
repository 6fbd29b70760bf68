"""Per-architecture preprocessing (colour mode, resize, center crop, mean, std) and image loading."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor
from torchvision.transforms import InterpolationMode
from torchvision.transforms import v2 as T

from attribution.normalisation import Normalisation

ArrayLike = Any  # a (H, W) array: numpy, a tensor or nested lists

__all__ = ["Preprocessing", "open_image"]


@dataclass(frozen=True)
class Preprocessing:
    """Convert to ``channels`` (3: RGB, 1: grayscale, PIL's ``"L"``), resize the short side to ``resize``,
    center-crop ``crop``, scale to [0, 1], normalise by ``mean`` and ``std`` (one value per channel)."""

    resize: int
    crop: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"
    channels: int = 3

    def __post_init__(self) -> None:
        if self.channels not in (1, 3):
            raise ValueError(f"preprocessing channels must be 1 (grayscale) or 3 (RGB); got {self.channels!r}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"preprocessing mean {self.mean} and std {self.std} need one value per channel "
                             f"({self.channels})")

    @classmethod
    def from_torchvision(cls, weights: Any) -> Preprocessing:
        """The preprocessing of a torchvision weights enum entry (its ``transforms()``)."""
        t = weights.transforms()
        return cls(t.resize_size[0], t.crop_size[0], tuple(t.mean), tuple(t.std), t.interpolation.value)

    @classmethod
    def from_timm(cls, cfg: Any) -> Preprocessing:
        """The preprocessing of a timm pretrained config (input size, crop fraction, mean, std)."""
        size = cfg.input_size[-1]
        return cls(int(size / cfg.crop_pct), size, tuple(cfg.mean), tuple(cfg.std), cfg.interpolation or "bilinear")

    def transform(self) -> T.Compose:
        return T.Compose(
            [
                T.ToImage(),
                T.Resize(self.resize, interpolation=InterpolationMode(self.interpolation), antialias=True),
                T.CenterCrop(self.crop),
                T.ToDtype(torch.float32, scale=True),
                T.Normalize(self.mean, self.std),
            ]
        )

    def __call__(self, image: Image.Image) -> Tensor:
        """A PIL image → a normalised ``(channels, crop, crop)`` tensor."""
        return self.transform()(image.convert("L" if self.channels == 1 else "RGB"))

    def mask(self, mask: ArrayLike) -> Tensor:
        """A boolean ``(H, W)`` object mask through the same resize and crop as its image: ``(crop, crop)`` bool."""
        from torchvision.transforms.v2 import functional as F

        tensor = torch.as_tensor(mask, dtype=torch.uint8)[None]
        tensor = F.resize(tensor, [self.resize], interpolation=InterpolationMode.NEAREST)
        return F.center_crop(tensor, [self.crop])[0].bool()

    def boxes(self, boxes: ArrayLike, width: int, height: int) -> Tensor:
        """Pixel boxes ``(n, 4)`` (xmin, ymin, xmax, ymax) of a ``width × height`` image through the same resize
        and crop as the image, clipped to the crop; boxes left with no area are dropped. ``(m, 4)`` float32."""
        from torchvision import tv_tensors
        from torchvision.transforms.v2 import functional as F

        given = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        moved = tv_tensors.BoundingBoxes(given, format="XYXY", canvas_size=(height, width))
        moved = F.clamp_bounding_boxes(F.center_crop(F.resize(moved, [self.resize]), [self.crop]))
        out = moved.as_subclass(Tensor)
        return out[(out[:, 2] > out[:, 0]) & (out[:, 3] > out[:, 1])]

    @property
    def black(self) -> tuple[float, ...]:
        """The black image after normalisation, ``−mean/std`` per channel (the baseline ``"black"`` of the metrics)."""
        return self.normalisation.black

    @property
    def normalisation(self) -> Normalisation:
        """The ``mean``/``std`` scaling alone, as the metrics that score pixels take it."""
        return Normalisation(self.mean, self.std)

    def denormalize(self, images: Tensor) -> Tensor:
        """Normalised ``(B, channels, H, W)`` → [0, 1] pixels, for display."""
        mean = torch.tensor(self.mean, device=images.device)[:, None, None]
        std = torch.tensor(self.std, device=images.device)[:, None, None]
        return (images * std + mean).clamp(0, 1)


def open_image(source: str | Path | bytes) -> Image.Image:
    """Decode an image file or encoded bytes; a missing or corrupt image raises naming it."""
    name = "<bytes>" if isinstance(source, bytes) else str(source)
    if not isinstance(source, bytes) and not Path(source).is_file():
        raise FileNotFoundError(f"image file not found: {name}")
    try:
        image = Image.open(io.BytesIO(source) if isinstance(source, bytes) else source)
        image.load()
    except (UnidentifiedImageError, OSError, SyntaxError) as err:
        raise ValueError(f"corrupt or unreadable image {name}: {err}") from err
    return image.convert("RGB")
