"""Oxford Flowers-102 with its segmentations (``102flowers.tgz``, ``imagelabels.mat``, ``setid.mat``,
``102segmentations.tgz``).

Layout (``root``)::

    jpg/image_00001.jpg …   imagelabels.mat   setid.mat   segmim/segmim_00001.jpg …

The segmentation images paint the background pure blue (0, 0, 254); the mask is every pixel that
is not (JPEG-tolerant: blue ≥ 180 while red and green ≤ 70). Class names are torchvision's list
(the dataset ships none). Splits are ``setid.mat``'s ``trnid`` (train), ``valid`` (val) and
``tstid`` (test); ``trainval`` is train and val together. The training-side splits (train, val,
trainval: reference sets) need no segmentations: without ``segmim/`` their images have no mask.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from storage.builders.common import Candidate, DatasetIndex, load_mat, open_mask_image, require_path, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
SPLITS = {"train": ("trnid",), "val": ("valid",), "trainval": ("trnid", "valid"), "test": ("tstid",),
          "all": ("trnid", "valid", "tstid")}  # all: a reference source larger than the training side


def _not_blue_mask(path: Path) -> np.ndarray:
    with open_mask_image(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(np.int16)
    background = (rgb[..., 2] >= 180) & (rgb[..., 0] <= 70) & (rgb[..., 1] <= 70)
    return ~background


def index_flowers(root: Path, split: str = "test") -> DatasetIndex:
    from torchvision.datasets import Flowers102

    if split not in SPLITS:
        raise unknown_split("Flowers-102", split, list(SPLITS))
    labels = np.atleast_1d(load_mat(root / "imagelabels.mat", "Flowers-102 imagelabels.mat")["labels"])
    setid = load_mat(root / "setid.mat", "Flowers-102 setid.mat")
    absent = [key for key in SPLITS[split] if key not in setid]
    if absent:
        raise ManifestError(f"Flowers-102 setid.mat {root / 'setid.mat'} has no {absent[0]!r} list")
    ids = {int(i) for key in SPLITS[split] for i in np.atleast_1d(setid[key])}
    if split == "test":  # the training-side splits go on without it: each image's mask file is then missing
        require_path(root / "segmim", "Flowers-102 segmentations folder segmim/ (102segmentations.tgz)")
    candidates = []
    for image_id in sorted(ids):
        if not 1 <= image_id <= len(labels):
            raise ManifestError(f"setid.mat lists image {image_id} but imagelabels.mat has {len(labels)} labels")
        candidates.append(Candidate(f"image_{image_id:05d}", int(labels[image_id - 1]) - 1, split,
                                    str(root / "jpg" / f"image_{image_id:05d}.jpg"),
                                    mask=partial(_not_blue_mask, root / "segmim" / f"segmim_{image_id:05d}.jpg")))
    return DatasetIndex("flowers102", list(Flowers102.classes), candidates, str(root), split=split)
