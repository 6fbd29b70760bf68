"""Manifest builders: one per dataset layout, each indexing its annotations into candidates.

``build("cub200", root, out, n=500)`` samples ``n`` images (stratified by class, deterministic in
``seed``), checks each, and writes the manifest; ``BUILDERS`` lists what exists.

Every builder also reads its dataset's training split (``split="train"``), the reference
distribution Expected Grad-CAM draws its data-aware perturbations from, built as a manifest of its
own. A reference split (``Builder.reference_splits``) does not need ground truth: an image whose
mask file is missing is kept without a mask, where an evaluation split rejects it.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from storage.builders import aircraft, cifar10, coco, cub, demo, dogs, flowers, folder, imagenet, mnist, pets, voc
from storage.builders.common import DatasetIndex, build_manifest
from storage.builders.demo import (
    REFERENCE_PHOTOS,
    SAMPLE_PHOTOS,
    demo_manifest,
    demo_references_manifest,
    sample_images,
)
from storage.manifest import Manifest

__all__ = ["Builder", "BUILDERS", "build", "UnknownBuilderError", "demo_manifest", "sample_images", "SAMPLE_PHOTOS",
           "demo_references_manifest", "REFERENCE_PHOTOS"]


class UnknownBuilderError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


@dataclass(frozen=True)
class Builder:
    """A dataset layout: how to index it, its default split, and the sample size the paper used.

    ``reference_splits`` are the splits (as the rows record them) that reference sets are drawn
    from; building one of them does not require masks.
    """

    index: Callable[..., DatasetIndex]
    version: str
    default_split: str
    paper_n: int | None
    description: str
    reference_splits: tuple[str, ...] = ("train",)


BUILDERS: dict[str, Builder] = {
    "imagenet": Builder(imagenet.index_imagenet, imagenet.VERSION, "val", 5000, "ILSVRC2012 validation (or train)"),
    "cifar10": Builder(cifar10.index_cifar10, cifar10.VERSION, "test", None, "CIFAR-10 python batches"),
    "mnist": Builder(mnist.index_mnist, mnist.VERSION, "test", None, "MNIST IDX files"),
    "coco": Builder(coco.index_coco, coco.VERSION, "val", 500, "COCO 2017 instances, one category's union mask"),
    "cub200": Builder(cub.index_cub, cub.VERSION, "test", 500, "CUB-200-2011 with segmentations"),
    "oxford_pets": Builder(pets.index_pets, pets.VERSION, "test", 500, "Oxford-IIIT Pet with trimaps",
                           ("trainval", "all")),
    "flowers102": Builder(flowers.index_flowers, flowers.VERSION, "test", 500, "Flowers-102 with segmentations",
                          ("train", "val", "trainval", "all")),
    "stanford_dogs": Builder(dogs.index_dogs, dogs.VERSION, "test", 500, "Stanford Dogs with boxes"),
    "fgvc_aircraft": Builder(aircraft.index_aircraft, aircraft.VERSION, "test", 500, "FGVC-Aircraft with boxes",
                             ("train", "val", "trainval", "all")),
    "voc2007": Builder(voc.index_voc2007, voc.VERSION, "test", None,
                       "PASCAL VOC2007, a row per (image, class) with its boxes (pointing game)",
                       ("train", "val", "trainval")),
    "folder": Builder(folder.index_folder, folder.VERSION, "all", None, "ImageFolder layout (your own data)"),
    "demo": Builder(demo.index_demo, demo.VERSION, "all", None, "bundled offline demo (scikit-image photos)", ()),
    "demo_references": Builder(demo.index_demo_references, demo.REFERENCES_VERSION, "reference", None,
                               "bundled offline reference pool (crops of sample photos)", ("reference",)),
}


def build(name: str, root: str | os.PathLike | None, out: str | os.PathLike, *, n: int | None = None,
          seed: int = 0, split: str | None = None, embed: bool = True, shard_size: int = 100,
          progress: Callable[[int, int], None] | None = None, require_masks: bool | None = None,
          **options: Any) -> Manifest:
    """Index dataset ``name`` at ``root`` and write a manifest of ``n`` sampled images to ``out``.

    ``split`` defaults to the builder's evaluation split; ``split="train"`` builds a reference set.
    ``require_masks`` (default: true except for the builder's reference splits) rejects images
    whose mask file is missing.
    """
    if name not in BUILDERS:
        close = difflib.get_close_matches(name, list(BUILDERS), n=3)
        raise UnknownBuilderError(f"unknown dataset builder {name!r}; known: {', '.join(BUILDERS)}"
                                  + (f" (did you mean {close[0]!r}?)" if close else ""))
    builder = BUILDERS[name]
    index = builder.index(Path(root) if root is not None else None, split or builder.default_split, **options)
    if require_masks is None:
        require_masks = index.split_name not in builder.reference_splits
    return build_manifest(index, out, n=n, seed=seed, embed=embed, shard_size=shard_size, builder=name,
                          builder_version=builder.version, progress=progress, require_masks=require_masks)
