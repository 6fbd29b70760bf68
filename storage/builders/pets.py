"""Oxford-IIIT Pet with its trimaps (``images.tar.gz`` + ``annotations.tar.gz``).

Layout (``root``)::

    images/Abyssinian_1.jpg …
    annotations/{list.txt,trainval.txt,test.txt}     "Abyssinian_100 1 1 1" (name, class id, species, breed id)
    annotations/trimaps/Abyssinian_1.png             1 = pet, 2 = background, 3 = boundary

The mask is the pet with its boundary band (trimap ≠ 2). The dataset's training split is
``trainval`` (``train`` names it too; rows record ``trainval``); a trainval (reference) image whose
trimap is missing is kept without a mask.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from storage.builders.common import Candidate, DatasetIndex, open_mask_image, read_table_file, unknown_split

VERSION = "1"
SPLITS = {"trainval": ("trainval",), "test": ("test",), "all": ("trainval", "test")}  # annotations/<name>.txt
ALIASES = {"train": "trainval"}


def _trimap_mask(path: Path) -> np.ndarray:
    with open_mask_image(path) as image:
        return np.asarray(image) != 2


def index_pets(root: Path, split: str = "test") -> DatasetIndex:
    split = ALIASES.get(split, split)
    if split not in SPLITS:
        raise unknown_split("Oxford-IIIT Pet", split, ["train (= trainval)", *SPLITS])
    annotations = root / "annotations"
    every = read_table_file(annotations / "list.txt", "Oxford-IIIT Pet annotations/list.txt", 4)
    breed = {int(class_id): name.rsplit("_", 1)[0].replace("_", " ") for name, class_id, _, _ in every}
    names = [breed[i] for i in sorted(breed)]
    candidates = [Candidate(name, int(class_id) - 1, part, str(root / "images" / f"{name}.jpg"),
                            mask=partial(_trimap_mask, annotations / "trimaps" / f"{name}.png"))
                  for part in SPLITS[split]
                  for name, class_id, _, _ in read_table_file(annotations / f"{part}.txt",
                                                              f"Oxford-IIIT Pet annotations/{part}.txt", 4)]
    return DatasetIndex("oxford_pets", names, candidates, str(root), split=split)
