"""Explain a few images with every method and draw the maps over them (``camgrid explain``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from attribution.methods import create_method
from attribution.models import LoadedModel, imagenet_categories, open_image
from attribution.models.preprocessing import Preprocessing
from attribution.postprocess import check_finite, minmax_normalize, relu, upsample
from storage.builders import sample_images

__all__ = ["Explanation", "explain_images", "load_images", "save_overlay_grid"]


@dataclass
class Explanation:
    names: list[str]
    images: Tensor  # (B, 3, H, W) normalised
    targets: Tensor  # (B,)
    labels: list[str]
    maps: dict[str, Tensor]  # method → (B, H, W) in [0, 1]
    seconds: dict[str, float]  # method → wall time for the batch


def load_images(paths: Sequence[str | Path]) -> list[tuple[str, Image.Image]]:
    """``(name, image)`` for the given files, or scikit-image's bundled photos when none are given."""
    if not paths:
        return sample_images()
    return [(Path(p).stem, open_image(p)) for p in paths]


def explain_images(
    loaded: LoadedModel,
    photos: list[tuple[str, Image.Image]],
    methods: Sequence[str],
    method_params: dict[str, dict] | None = None,
    progress: Callable[[str], None] = print,
) -> Explanation:
    """Maps of every method for every photo (top-1 class as target), upsampled and normalised.

    Expected Grad-CAM's reference set for an image is every *other* photo (leave-one-out), as
    the paper draws references from the dataset and never the explained image itself.
    """
    method_params = method_params or {}
    device = next(loaded.model.parameters()).device
    images = torch.stack([loaded.preprocessing(img) for _, img in photos]).to(device)
    with torch.no_grad():
        logits = loaded.model(images)
    targets = logits.argmax(dim=1)
    categories = imagenet_categories() if logits.shape[1] == 1000 else None
    labels = [categories[t] if categories else str(int(t)) for t in targets.tolist()]
    maps: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    for name in methods:
        start = time.perf_counter()
        if name == "expected_gradcam":
            if len(images) < 2:
                raise ValueError("Expected Grad-CAM needs at least two images here: each is explained against the others")
            raw = torch.cat(
                [
                    create_method(name, reference=torch.cat([images[:i], images[i + 1 :]]), **method_params.get(name, {}))(
                        loaded.model, loaded.layer, images[i : i + 1], targets[i : i + 1], layout=loaded.layout
                    )
                    for i in range(len(images))
                ]
            )
        else:
            method = create_method(name, **method_params.get(name, {}))
            raw = method(loaded.model, loaded.layer, images, targets, layout=loaded.layout)
        maps[name] = minmax_normalize(upsample(relu(check_finite(raw)), images.shape[-2:])).cpu()
        seconds[name] = time.perf_counter() - start
        progress(f"  {name:<20} {seconds[name]:7.2f} s for {len(images)} images")
    return Explanation([n for n, _ in photos], images.cpu(), targets.cpu(), labels, maps, seconds)


def save_overlay_grid(explanation: Explanation, preprocessing: Preprocessing, path: str | Path) -> Path:
    """One row per image, one column per method: the map in 'jet' over the image."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = preprocessing.denormalize(explanation.images).permute(0, 2, 3, 1).numpy()
    methods = list(explanation.maps)
    rows, cols = len(rgb), len(methods) + 1
    fig, axes = plt.subplots(rows, cols, figsize=(1.9 * cols, 2.0 * rows), squeeze=False)
    for r in range(rows):
        axes[r, 0].imshow(rgb[r])
        axes[r, 0].set_title(f"{explanation.names[r]}\n→ {explanation.labels[r][:18]}", fontsize=8)
        for c, name in enumerate(methods, start=1):
            axes[r, c].imshow(rgb[r])
            axes[r, c].imshow(explanation.maps[name][r].numpy(), cmap="jet", alpha=0.5, vmin=0, vmax=1)
            if r == 0:
                axes[r, c].set_title(name, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
