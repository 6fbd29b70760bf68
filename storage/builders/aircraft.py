"""FGVC-Aircraft 2013b at the variant level, with boxes (``fgvc-aircraft-2013b.tar.gz``).

Layout (``root`` = ``fgvc-aircraft-2013b``, or its ``data`` folder)::

    data/images/1025794.jpg …   data/variants.txt   data/images_variant_<split>.txt   data/images_box.txt

Boxes are as given (``xmin ymin xmax ymax``, 1-based pixels); images keep their copyright banner.
Each split reads its own ``images_variant_<split>.txt``: train, val, trainval (train + val) or test.
"""

from __future__ import annotations

from pathlib import Path

from storage.builders.common import Candidate, DatasetIndex, read_table_file, require_path, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
SPLITS = ("train", "val", "trainval", "test")


def index_aircraft(root: Path, split: str = "test") -> DatasetIndex:
    if split not in SPLITS:
        raise unknown_split("FGVC-Aircraft", split, SPLITS)
    data = root / "data" if (root / "data").is_dir() else root
    names = [line.strip() for line in require_path(data / "variants.txt", "FGVC-Aircraft variants.txt")
             .read_text().splitlines() if line.strip()]
    label_of = {name: i for i, name in enumerate(names)}
    boxes = {i: tuple(map(float, b.split())) for i, b in read_table_file(data / "images_box.txt",
                                                                         "FGVC-Aircraft images_box.txt", 2)}
    candidates = []
    for image_id, variant in read_table_file(data / f"images_variant_{split}.txt",
                                             f"FGVC-Aircraft images_variant_{split}.txt", 2):
        if variant not in label_of:
            raise ManifestError(f"images_variant_{split}.txt: variant {variant!r} of {image_id} is not in variants.txt")
        box = (boxes[image_id],) if image_id in boxes else None
        candidates.append(Candidate(image_id, label_of[variant], split, str(data / "images" / f"{image_id}.jpg"),
                                    boxes=box))
    return DatasetIndex("fgvc_aircraft", names, candidates, str(root), split=split)
