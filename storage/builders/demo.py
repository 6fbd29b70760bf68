"""The bundled offline ``demo`` manifest (scikit-image photos plus composites with exact masks) and its reference pool.

Split ``photos``: the photos that ship in scikit-image's wheel and show an ImageNet class, labelled
with it (no ground truth). Split ``synthetic``: each photo, shrunk, pasted at a seeded position on
one of scikit-image's textures (grass, gravel, brick); the ground-truth mask is the pasted
rectangle, exact by construction, so localisation metrics run offline. Labels are in ImageNet's
label space (torchvision's category names).

The ``demo_references`` manifest (:func:`demo_references_manifest`) is the demo's *reference
distribution*: the pool Expected Grad-CAM draws the reference image ``x'`` of each data-aware
perturbation ``I = 1 - a·h(x')`` from. With ``R`` distinct references the estimated second-moment
matrix ``M̂`` has rank at most ``R + 1``, and the method needs it at full rank ``K`` (the explained
layer's channels: ``K = 1280`` for the demo's EfficientNet-Lite0), so the pool holds several
thousand distinct images (default 4096), none of them an explained image or its source photo.
Each row is a seeded random-resized crop (torchvision ``RandomResizedCrop`` sampling: 8–100 % of
the area, aspect 3/4–4/3), randomly flipped left-right, resized to 256×256 and JPEG-encoded, of one
of :data:`REFERENCE_PHOTOS`, all files inside installed wheels (read from the package folders,
never downloaded): scikit-learn's sample images china and flower; matplotlib's grace_hopper; and
scikit-image's camera, coins, moon, hubble_deep_field, retina, immunohistochemistry, motorcycle
(the left stereo view), text and clock — none of the demo's photos (chelsea, coffee, rocket,
astronaut) or textures (grass, gravel, brick). Grayscale photos become RGB. Split ``reference``,
label = the source photo's index, ``image_id`` ``<photo>-<NNNNN>``; no masks, no boxes. Crop
``k`` of photo ``p`` depends only on ``(pool seed, p, k)``; the build's seed picks which crops
(stratified by photo), so the manifest's bytes are a function of ``(n, seed)``.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import io
import math
import os
from pathlib import Path

import numpy as np
from PIL import Image

from storage.builders.common import Candidate, DatasetIndex, build_manifest, png_bytes
from storage.manifest import Manifest, ManifestError, read_manifest

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
        candidates += [Candidate(name, label, "photos", None, load=lambda p=photos[name]: png_bytes(np.asarray(p)))
                       for name, label in labelled.items()]
    if split in ("all", "synthetic"):
        rng = np.random.default_rng(seed)
        for name, label in labelled.items():
            for copy in range(per_photo):
                texture_name = TEXTURES[copy % len(TEXTURES)]
                canvas, mask = composite(photos[name], getattr(data, texture_name)(), rng)
                candidates.append(Candidate(f"{name}_on_{texture_name}_{copy}", label, "synthetic", None,
                                            load=lambda c=canvas: png_bytes(c), mask=lambda m=mask: m))
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


# --- the reference distribution (``demo_references``) ------------------------------------------

REFERENCES_VERSION = "1"
REFERENCE_SIZE = 256  # every crop is REFERENCE_SIZE² pixels
REFERENCE_SCALE = (0.08, 1.0)  # fraction of the photo's area a crop covers (as RandomResizedCrop)
REFERENCE_RATIO = (3 / 4, 4 / 3)  # crop aspect ratio (width / height), sampled log-uniformly
REFERENCE_JPEG_QUALITY = 90
REFERENCE_SHARD_SIZE = 512
REFERENCE_PER_PHOTO = 4096  # crops per photo in the pool a build samples from (12 photos: 49152)

# photo name → (distribution, file inside the installed package); photos only, none of the demo's
REFERENCE_PHOTOS: dict[str, tuple[str, str]] = {
    "china": ("scikit-learn", "sklearn/datasets/images/china.jpg"),
    "flower": ("scikit-learn", "sklearn/datasets/images/flower.jpg"),
    "grace_hopper": ("matplotlib", "matplotlib/mpl-data/sample_data/grace_hopper.jpg"),
    "camera": ("scikit-image", "skimage/data/camera.png"),
    "coins": ("scikit-image", "skimage/data/coins.png"),
    "moon": ("scikit-image", "skimage/data/moon.png"),
    "hubble_deep_field": ("scikit-image", "skimage/data/hubble_deep_field.jpg"),
    "retina": ("scikit-image", "skimage/data/retina.jpg"),
    "immunohistochemistry": ("scikit-image", "skimage/data/ihc.png"),
    "motorcycle": ("scikit-image", "skimage/data/motorcycle_left.png"),
    "text": ("scikit-image", "skimage/data/text.png"),
    "clock": ("scikit-image", "skimage/data/clock_motion.png"),
}


def reference_photo_path(name: str) -> Path:
    """The file of reference photo ``name`` inside its installed package (located without importing it)."""
    distribution, relative = REFERENCE_PHOTOS[name]
    package, _, rest = relative.partition("/")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"reference photo {name!r} needs the {distribution} package "
                                f"(pip install {distribution})")
    path = Path(list(spec.submodule_search_locations)[0]) / rest
    if not path.is_file():
        raise FileNotFoundError(f"reference photo {name!r}: {path} is not in the installed {distribution}")
    return path


def reference_photos(names: tuple[str, ...] = tuple(REFERENCE_PHOTOS)) -> list[tuple[str, Image.Image]]:
    """``(name, RGB image)`` of each reference photo, read from the installed packages' files (no network)."""
    photos = []
    for name in names:
        with Image.open(reference_photo_path(name)) as image:
            photos.append((name, image.convert("RGB")))
    return photos


def _references_source() -> str:
    """The pool's provenance, package versions included (a new version may ship other pixels)."""
    versions = []
    for distribution in sorted({d for d, _ in REFERENCE_PHOTOS.values()}):
        try:
            versions.append(f"{distribution} {importlib.metadata.version(distribution)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{distribution} (not installed)")
    return "random-resized crops of the sample photos of " + ", ".join(versions)


def random_resized_box(rng: np.random.Generator, width: int, height: int, scale: tuple[float, float] = REFERENCE_SCALE,
                       ratio: tuple[float, float] = REFERENCE_RATIO) -> tuple[int, int, int, int]:
    """A ``(left, top, right, bottom)`` crop as torchvision's ``RandomResizedCrop.get_params`` draws it.

    Ten tries at a crop of a uniform fraction of the area and a log-uniform aspect ratio that fits;
    failing those, the largest central crop whose aspect ratio is within ``ratio``.
    """
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            top, left = int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1))
            return left, top, left + w, top + h
    if width / height < ratio[0]:
        w, h = width, round(width / ratio[0])
    elif width / height > ratio[1]:
        w, h = round(height * ratio[1]), height
    else:
        w, h = width, height
    left, top = (width - w) // 2, (height - h) // 2
    return left, top, left + w, top + h


def reference_crop(photo: Image.Image, pool_seed: int, label: int, copy: int) -> bytes:
    """Crop ``copy`` of photo ``label``: JPEG bytes of a random-resized, maybe flipped, 256² crop.

    The crop depends only on ``(pool_seed, label, copy)`` (its own random stream), not on which
    other crops a build takes.
    """
    rng = np.random.default_rng([pool_seed, label, copy])
    box = random_resized_box(rng, photo.width, photo.height)
    flip = bool(rng.random() < 0.5)
    crop = photo.resize((REFERENCE_SIZE, REFERENCE_SIZE), Image.Resampling.BILINEAR, box=box)
    if flip:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    buffer = io.BytesIO()
    crop.save(buffer, format="JPEG", quality=REFERENCE_JPEG_QUALITY)
    return buffer.getvalue()


def index_demo_references(root: Path | None = None, split: str = "reference", per_photo: int = REFERENCE_PER_PHOTO,
                          seed: int = 0) -> DatasetIndex:
    """The pool: ``per_photo`` lazily made crops of each reference photo (``root`` is unused).

    ``seed`` is the pool's seed (which crop each ``image_id`` is); the manifest build's own seed
    picks which of them are taken.
    """
    if split not in ("reference", "all"):
        raise ManifestError(f"demo_references split {split!r} unknown; choose from reference, all")
    if seed < 0 or per_photo < 1:
        raise ValueError(f"demo_references needs seed >= 0 and per_photo >= 1 (got {seed}, {per_photo})")
    photos = reference_photos()
    candidates = [Candidate(f"{name}-{copy:05d}", label, "reference", None,
                            load=functools.partial(reference_crop, photo, seed, label, copy))
                  for label, (name, photo) in enumerate(photos) for copy in range(per_photo)]
    return DatasetIndex("demo_references", [name for name, _ in photos], candidates, _references_source())


def default_demo_references_location(n: int, seed: int) -> Path:
    """Where :func:`demo_references_manifest` caches a pool: next to the demo manifest, one folder per ``(n, seed)``."""
    return default_demo_location().parent / f"demo_references-n{n}-seed{seed}"


def demo_references_manifest(n: int = 4096, seed: int = 0, location: str | os.PathLike | None = None) -> Manifest:
    """``n`` reference crops (stratified over :data:`REFERENCE_PHOTOS`), built once and then read from the cache.

    The same manifest as ``camgrid manifest build demo_references -n N --seed S``. The cache is
    rebuilt when its builder version, ``n``, ``seed`` or the source packages' versions differ.
    """
    location = Path(location) if location is not None else default_demo_references_location(n, seed)
    if location.exists():
        try:
            manifest = read_manifest(location)
        except ManifestError:
            manifest = None
        if manifest is not None and _is_current_references(manifest.metadata, n, seed):
            return manifest
    return build_manifest(index_demo_references(), location, n=n, seed=seed, shard_size=REFERENCE_SHARD_SIZE,
                          builder="demo_references", builder_version=REFERENCES_VERSION)


def _is_current_references(metadata: dict, n: int, seed: int) -> bool:
    sample = metadata.get("sample") or {}
    return (metadata.get("builder") == "demo_references" and metadata.get("builder_version") == REFERENCES_VERSION
            and sample.get("n") == n and sample.get("seed") == seed and metadata.get("source") == _references_source())
