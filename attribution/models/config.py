"""One model as a run uses it, resolved once: registry entry, weights, target layer, layout, classes, preprocessing.

Like timm's pretrained configs, a :class:`ModelConfig` is plain, picklable data that says everything
about a model without building it: the planner resolves it from a spec, the actors load it, and the
run record keeps what resolves it again (:class:`storage.record.ModelRecord`), through which the
pictures re-read images with the same preprocessing.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, replace

import torch

from attribution.layout import FeatureLayout
from attribution.models.preprocessing import Preprocessing
from attribution.models.registry import LoadedModel, architecture, load_model

__all__ = ["ModelConfig"]


@dataclass(frozen=True)
class ModelConfig:
    """A model resolved from its registry entry.

    ``name``: a registry name or ``torchvision:<name>`` / ``timm:<name>``; ``weights``: as
    :func:`attribution.models.load_model` takes them; ``layer``: the target layer (the entry's default
    when not given); ``channels``: its ``K`` when the registry knows it; ``input_size``: a plain resize
    and crop to this side instead of the registry's preprocessing (e.g. CIFAR-10 at 96×96).
    """

    name: str
    weights: str
    layer: str
    num_classes: int
    preprocessing: Preprocessing
    layout: FeatureLayout | None
    channels: int | None
    input_size: int | None = None

    @classmethod
    def resolve(cls, name: str, weights: str = "pretrained", *, layer: str | None = None,
                num_classes: int = 1000, input_size: int | None = None) -> ModelConfig:
        """The configuration of ``name`` (unknown names and layers of unregistered models are a ``ValueError``)."""
        entry = architecture(name, layer)
        preprocessing = entry.preprocessing()
        if input_size is not None:
            preprocessing = replace(preprocessing, resize=input_size, crop=input_size)
        return cls(name, weights, entry.target_layer, num_classes, preprocessing, entry.layout, entry.channels,
                   input_size)

    @property
    def image_size(self) -> tuple[int, int]:
        """The side of the images the model takes, as ``(H, W)``: maps are scored at this size."""
        return (self.preprocessing.crop, self.preprocessing.crop)

    def check_layer(self) -> None:
        """Raise a one-line ``ValueError`` unless the target layer is a module of the model (built without weights
        on the meta device: no download, no memory), naming the closest module names."""
        with torch.device("meta"):
            model = architecture(self.name, self.layer).build(self.num_classes)
        names = [name for name, _ in model.named_modules() if name]
        if self.layer not in names:
            close = difflib.get_close_matches(self.layer, names, n=3, cutoff=0.5)
            hint = f"did you mean {', '.join(map(repr, close))}?" if close else f"its last modules: {', '.join(names[-4:])}"
            raise ValueError(f"layer {self.layer!r} is not a module of {self.name}; {hint}")

    def load(self, device: str | torch.device = "cpu") -> LoadedModel:
        """Build the model with its weights, in eval mode on ``device``, with this configuration's preprocessing."""
        loaded = load_model(self.name, self.weights, layer=self.layer, num_classes=self.num_classes, device=device)
        return replace(loaded, preprocessing=self.preprocessing)
