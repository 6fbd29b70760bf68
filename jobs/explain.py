"""Explain a few images with every method and draw the maps over them (``camgrid explain``)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from attribution.channel_scaling import reference_features
from attribution.methods import create_method
from attribution.models import LoadedModel, imagenet_categories, open_image
from attribution.models.preprocessing import Preprocessing
from attribution.needs import Need
from attribution.postprocess import check_finite, minmax_normalize
from storage.builders import demo_references_manifest, sample_images
from storage.manifest import decode_image, read_manifest

__all__ = ["Explanation", "explain_images", "load_images", "manifest_reference_features", "save_overlay_grid"]


@dataclass
class Explanation:
    names: list[str]
    images: Tensor  # (B, C, H, W) normalised, C = 3 or 1
    targets: Tensor  # (B,)
    labels: list[str]
    maps: dict[str, Tensor]  # method → (B, H, W) in [0, 1]
    seconds: dict[str, float]  # method → wall time for the batch


def load_images(paths: Sequence[str | Path]) -> list[tuple[str, Image.Image]]:
    """``(name, image)`` for the given files, or scikit-image's bundled photos when none are given."""
    if not paths:
        return sample_images()
    return [(Path(p).stem, open_image(p)) for p in paths]


def manifest_reference_features(
    loaded: LoadedModel, manifest: str | None, n: int, progress: Callable[[str], None] = print, batch_size: int = 32
) -> Tensor:
    """``h(x')`` of ``n`` images drawn from a reference manifest (default: the bundled offline pool of crops)."""
    source = demo_references_manifest() if manifest is None else read_manifest(manifest)
    table = source.table.select(["image_id", "image", "image_uri"])
    pick = np.sort(np.random.default_rng(0).permutation(table.num_rows)[:n])  # a seeded draw over the whole pool
    rows = table.take(pick).to_pylist()
    device = next(loaded.model.parameters()).device
    progress(f"  reference features of {len(rows)} images from {source.location}")
    features = []
    for start in range(0, len(rows), batch_size):
        chunk = torch.stack([loaded.preprocessing(decode_image(r)) for r in rows[start : start + batch_size]])
        features.append(reference_features(loaded.model, loaded.layer, chunk.to(device), layout=loaded.layout))
    return torch.cat(features)


def explain_images(
    loaded: LoadedModel,
    photos: list[tuple[str, Image.Image]],
    methods: Sequence[str],
    method_params: dict[str, dict] | None = None,
    progress: Callable[[str], None] = print,
    references: str | None = None,
) -> Explanation:
    """Maps of every method for every photo (top-1 class as target), upsampled and normalised.

    Expected Grad-CAM draws its perturbations from ``2K`` images of the reference manifest
    ``references`` (default: the bundled offline pool of crops of photos other than the demo's),
    enough for a full-rank ``M̂``; never from the explained images.
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
        params = dict(method_params.get(name, {}))
        declared = create_method(name, **params)
        if Need.BLACK in declared.needs:  # it masks the pixel image: towards the model's black
            params["black"] = loaded.preprocessing.black
        if declared.reference_pool is not None:
            channels = reference_features(loaded.model, loaded.layer, images[:1], layout=loaded.layout).shape[1]
            params["reference_features"] = manifest_reference_features(loaded, references, 2 * channels, progress)
        method = create_method(name, **params)
        with method.bind(loaded.model, loaded.layer, loaded.layout) as bound:
            attribution = bound(images, targets)
        if attribution.diagnostics is not None:
            progress(f"  {name}: {attribution.diagnostics.describe()}")
        check_finite(attribution.raw)
        maps[name] = display_scale(attribution.scored(tuple(images.shape[-2:])), type(method).rectified).cpu()
        seconds[name] = time.perf_counter() - start
        progress(f"  {name:<20} {seconds[name]:7.2f} s for {len(images)} images")
    return Explanation([n for n, _ in photos], images.cpu(), targets.cpu(), labels, maps, seconds)


def display_scale(maps: Tensor, rectified: bool, percentile: float = 99.0) -> Tensor:
    """Maps ``(B, H, W)`` in ``[0, 1]`` for display. A CAM (``rectified``): min-max per image. A signed input-space
    map: ``|a|`` clipped at its ``percentile``-th value per image, as PAIR ``saliency``'s VisualizeImageGrayscale
    draws IG, Blur IG and Guided IG; min-max scaling would leave all but a few extreme pixels at one colour."""
    if rectified:
        return minmax_normalize(maps)
    magnitude = maps.abs().flatten(1)
    top = torch.quantile(magnitude.double(), percentile / 100.0, dim=1).to(maps.dtype).clamp_min(1e-12)
    return (magnitude / top[:, None]).clamp(0.0, 1.0).reshape(maps.shape)


def save_overlay_grid(explanation: Explanation, preprocessing: Preprocessing, path: str | Path) -> Path:
    """One row per image, one column per method: the map in 'jet' over the image (a grayscale one drawn in grey)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rgb = preprocessing.denormalize(explanation.images).expand(-1, 3, -1, -1).permute(0, 2, 3, 1).numpy()
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
