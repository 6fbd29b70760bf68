"""Real photos that ship in scikit-image's wheel, for offline demos and tests."""

from __future__ import annotations

from PIL import Image

__all__ = ["SAMPLE_PHOTOS", "sample_images"]

# scikit-image loader name → ImageNet classes the photo shows (for reading predictions)
SAMPLE_PHOTOS: dict[str, tuple[int, ...]] = {
    "chelsea": (281, 282, 285),  # tabby, tiger cat, Egyptian cat
    "coffee": (967,),  # espresso
    "rocket": (657, 744),  # missile, projectile
    "astronaut": (),  # no ImageNet class for a person
}


def sample_images(names: tuple[str, ...] = tuple(SAMPLE_PHOTOS)) -> list[tuple[str, Image.Image]]:
    """``(name, RGB image)`` for each bundled photo (no download: these files are in the wheel)."""
    from skimage import data

    return [(name, Image.fromarray(getattr(data, name)()).convert("RGB")) for name in names]
