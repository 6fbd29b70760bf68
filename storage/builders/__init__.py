"""Manifest builders: one per dataset layout, each indexing its annotations into candidates.

``build("cub200", root, out, n=500)`` samples ``n`` images (stratified by class, deterministic in
``seed``), checks each, and writes the manifest; ``BUILDERS`` lists what exists.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from storage.builders import aircraft, cifar10, coco, cub, demo, dogs, flowers, folder, imagenet, pets
from storage.builders.common import DatasetIndex, build_manifest
from storage.builders.demo import SAMPLE_PHOTOS, demo_manifest, sample_images
from storage.manifest import Manifest

__all__ = ["Builder", "BUILDERS", "build", "UnknownBuilderError", "demo_manifest", "sample_images", "SAMPLE_PHOTOS"]


class UnknownBuilderError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Builder:
    """A dataset layout: how to index it, its default split, and the sample size the paper used."""

    index: Callable[..., DatasetIndex]
    version: str
    default_split: str
    paper_n: int | None
    description: str


BUILDERS: dict[str, Builder] = {
    "imagenet": Builder(imagenet.index_imagenet_val, imagenet.VERSION, "val", 5000, "ILSVRC2012 validation"),
    "cifar10": Builder(cifar10.index_cifar10, cifar10.VERSION, "test", None, "CIFAR-10 python batches"),
    "coco": Builder(coco.index_coco, coco.VERSION, "val", 500, "COCO 2017 instances, one category's union mask"),
    "cub200": Builder(cub.index_cub, cub.VERSION, "test", 500, "CUB-200-2011 with segmentations"),
    "oxford_pets": Builder(pets.index_pets, pets.VERSION, "test", 500, "Oxford-IIIT Pet with trimaps"),
    "flowers102": Builder(flowers.index_flowers, flowers.VERSION, "test", 500, "Flowers-102 with segmentations"),
    "stanford_dogs": Builder(dogs.index_dogs, dogs.VERSION, "test", 500, "Stanford Dogs with boxes"),
    "fgvc_aircraft": Builder(aircraft.index_aircraft, aircraft.VERSION, "test", 500, "FGVC-Aircraft with boxes"),
    "folder": Builder(folder.index_folder, folder.VERSION, "all", None, "ImageFolder layout (your own data)"),
    "demo": Builder(demo.index_demo, demo.VERSION, "all", None, "bundled offline demo (scikit-image photos)"),
}


def build(name: str, root: str | os.PathLike | None, out: str | os.PathLike, *, n: int | None = None,
          seed: int = 0, split: str | None = None, embed: bool = True, shard_size: int = 100,
          progress: Callable[[int, int], None] | None = None, **options: Any) -> Manifest:
    """Index dataset ``name`` at ``root`` and write a manifest of ``n`` sampled images to ``out``."""
    if name not in BUILDERS:
        close = difflib.get_close_matches(name, list(BUILDERS), n=3)
        raise UnknownBuilderError(f"unknown dataset builder {name!r}; known: {', '.join(BUILDERS)}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))
    builder = BUILDERS[name]
    index = builder.index(Path(root) if root is not None else None, split or builder.default_split, **options)
    return build_manifest(index, out, n=n, seed=seed, embed=embed, shard_size=shard_size, builder=name,
                          builder_version=builder.version, progress=progress)
