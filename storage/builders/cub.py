"""CUB-200-2011 with its segmentations (``CUB_200_2011.tgz`` + ``segmentations.tgz``).

Layout (``root`` = the ``CUB_200_2011`` folder)::

    images.txt  image_class_labels.txt  classes.txt  train_test_split.txt  bounding_boxes.txt
    images/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.jpg …
    segmentations/001.Black_footed_Albatross/Black_Footed_Albatross_0001_796111.png   (or ../segmentations)

The segmentations average five annotators (grey levels); the mask is the majority (≥ 128).
Class names drop the ``001.`` prefix and use spaces. Splits follow ``train_test_split.txt``
(1 = train, 0 = test; ``all`` is both). A train (reference) manifest needs no segmentations:
without the folder its images simply have no mask.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from storage.builders.common import (
    Candidate,
    DatasetIndex,
    open_mask_image,
    read_table_file,
    require_path,
    unknown_split,
)

VERSION = "1"
SPLITS = ("train", "test", "all")
LAYOUT = "CUB_200_2011/{images.txt,image_class_labels.txt,classes.txt,train_test_split.txt,images/} + segmentations/"


def _majority_mask(path: Path) -> np.ndarray:
    with open_mask_image(path) as image:
        return np.asarray(image.convert("L")) >= 128


def index_cub(root: Path, split: str = "test") -> DatasetIndex:
    if split not in SPLITS:
        raise unknown_split("CUB-200-2011", split, SPLITS)
    paths = dict(read_table_file(root / "images.txt", "CUB images.txt", 2))
    labels = dict(read_table_file(root / "image_class_labels.txt", "CUB image_class_labels.txt", 2))
    classes = read_table_file(root / "classes.txt", "CUB classes.txt", 2)
    is_train = dict(read_table_file(root / "train_test_split.txt", "CUB train_test_split.txt", 2))
    boxes = {i: tuple(map(float, box.split())) for i, box in read_table_file(root / "bounding_boxes.txt",
                                                                             "CUB bounding_boxes.txt", 2)}
    segmentations = next((p for p in (root / "segmentations", root.parent / "segmentations") if p.is_dir()), None)
    if segmentations is None:  # a train (reference) split goes on: each image's mask file is then missing
        if split != "train":
            require_path(root / "segmentations", "CUB segmentations folder (segmentations.tgz)", LAYOUT)
        segmentations = root / "segmentations"
    names = [name.split(".", 1)[1].replace("_", " ") for _, name in sorted(classes, key=lambda c: int(c[0]))]
    candidates = []
    for image_id, relative in sorted(paths.items(), key=lambda item: int(item[0])):
        image_split = "train" if is_train.get(image_id) == "1" else "test"
        if split not in ("all", image_split):
            continue
        x, y, w, h = boxes[image_id]
        mask = partial(_majority_mask, segmentations / Path(relative).with_suffix(".png"))
        candidates.append(Candidate(Path(relative).stem, int(labels[image_id]) - 1, image_split,
                                    str(root / "images" / relative), mask=mask, boxes=((x, y, x + w, y + h),)))
    return DatasetIndex("cub200", names, candidates, str(root), split=split)
