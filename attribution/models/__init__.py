"""Model registry, weight sources and preprocessing."""

from attribution.models.preprocessing import Preprocessing, open_image
from attribution.models.registry import (
    ARCHITECTURES,
    DEFAULT_ARCHITECTURE,
    Architecture,
    LoadedModel,
    architecture,
    imagenet_categories,
    load_model,
)
from attribution.models.weights import WeightsUnavailableError, load_checkpoint

__all__ = [
    "ARCHITECTURES",
    "DEFAULT_ARCHITECTURE",
    "Architecture",
    "LoadedModel",
    "Preprocessing",
    "WeightsUnavailableError",
    "architecture",
    "imagenet_categories",
    "load_checkpoint",
    "load_model",
    "open_image",
]
