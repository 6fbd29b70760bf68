"""The bundled offline ``demo`` manifest: scikit-image's photos plus composites with exact masks.

Split ``photos``: the photos that ship in scikit-image's wheel and show an ImageNet class, labelled
with it (no ground truth). Split ``synthetic``: each photo, shrunk, pasted at a seeded position on
one of scikit-image's textures (grass, gravel, brick); the ground-truth mask is the pasted
rectangle, exact by construction, so localisation metrics run offline. Labels are in ImageNet's
label space (torchvision's category names).
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image

from storage.builders.common import Candidate, DatasetIndex, build_manifest
from storage.manifest import Manifest, read_manifest

VERSION = "2"  # 2: four images per shard, so the demo grid streams several shards

# scikit-image loader name → ImageNet classes the photo shows; the first is the manifest label
SAMPLE_PHOTOS: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    "coffee": (967,),  # espresso
    "rocket": (657, 744),  # missile, projectile
    "astronaut": (),  # no ImageNet class for a person: in sample_images, not in the manifest
}
TEXTURES = ("grass", "gravel", "brick")
CANVAS = 224


def sample_images(names: tuple[str, ...] = tuple(SAMPLE_PHOTOS)) -> list[tuple[str, Image.Image]]:
    """``(name, RGB image)`` for each bundled photo (no download: these files are in the wheel)."""
    from skimage import data

    return [(name, Image.fromarray(getattr(data, name)()).convert("RGB")) for name in names]


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in torchvision's (sorted WordNet id) order."""
    from torchvision.models import ResNet50_Weights

    return list(ResNet50_Weights.IMAGENET1K_V1.meta["categories"])


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def composite(photo: Image.Image, texture: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """``photo`` shrunk to a longer side of 80–128 px and pasted on a ``CANVAS``² crop of ``texture``.

    Returns the RGB canvas and the boolean mask of exactly the pasted pixels.
    """
    top, left = (int(rng.integers(0, s - CANVAS + 1)) for s in texture.shape[:2])
    canvas = np.repeat(texture[top:top + CANVAS, left:left + CANVAS, None], 3, axis=2).astype(np.uint8)
    side = int(rng.integers(80, 129))
    scale = side / max(photo.size)
    width, height = max(1, round(photo.width * scale)), max(1, round(photo.height * scale))
    pasted = np.asarray(photo.resize((width, height), Image.Resampling.BILINEAR))
    y, x = int(rng.integers(0, CANVAS - height + 1)), int(rng.integers(0, CANVAS - width + 1))
    canvas[y:y + height, x:x + width] = pasted
    mask = np.zeros((CANVAS, CANVAS), dtype=bool)
    mask[y:y + height, x:x + width] = True
    return canvas, mask


def index_demo(root: Path | None = None, split: str = "all", per_photo: int = 3, seed: int = 0) -> DatasetIndex:
    from skimage import data

    labelled = {name: labels[0] for name, labels in SAMPLE_PHOTOS.items() if labels}
    photos = dict(sample_images(tuple(labelled)))
    candidates = []
    if split in ("all", "photos"):
        candidates += [Candidate(name, label, "photos", None, load=lambda p=photos[name]: _png(np.asarray(p)))
                       for name, label in labelled.items()]
    if split in ("all", "synthetic"):
        rng = np.random.default_rng(seed)
        for name, label in labelled.items():
            for copy in range(per_photo):
                texture_name = TEXTURES[copy % len(TEXTURES)]
                canvas, mask = composite(photos[name], getattr(data, texture_name)(), rng)
                candidates.append(Candidate(f"{name}_on_{texture_name}_{copy}", label, "synthetic", None,
                                            load=lambda c=canvas: _png(c), mask=lambda m=mask: m))
    return DatasetIndex("demo", imagenet_class_names(), candidates, "scikit-image sample data")


def default_demo_location() -> Path:
    """Where the demo manifest is cached: ``$CAMGRID_CACHE`` or ``~/.cache/camgrid``, ``/manifests/demo``."""
    cache = os.environ.get("CAMGRID_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME", "~/.cache"), "camgrid")
    return Path(cache).expanduser() / "manifests" / "demo"


def demo_manifest(location: str | os.PathLike | None = None) -> Manifest:
    """The demo manifest, built on first use (a second or two) and read from the cache after."""
    location = Path(location) if location is not None else default_demo_location()
    if location.exists():
        manifest = read_manifest(location)
        if manifest.metadata.get("builder_version") == VERSION:
            return manifest
    return build_manifest(index_demo(), location, n=None, seed=0, shard_size=4, builder="demo", builder_version=VERSION)
