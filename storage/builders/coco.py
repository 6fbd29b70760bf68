"""COCO 2017 instances: one category's union mask per image (the paper's Tables 6–7).

Layout (``root``)::

    annotations/instances_val2017.json     val2017/000000000139.jpg …          (split val)
    annotations/instances_train2017.json   train2017/000000000009.jpg …        (split train)

The label space is COCO's 80 categories in id order (label = position, label_name = name). Each
chosen category contributes the images that contain it, with the union of its instance masks
(polygons and RLE, crowd regions included, decoded with pycocotools) and its instance boxes.
"""

from __future__ import annotations

import difflib
import json
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np

from storage.builders.common import Candidate, DatasetIndex, require_path, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
LAYOUT = "annotations/instances_<split>2017.json and <split>2017/*.jpg"
SPLITS = ("val", "train")


def union_mask(segmentations: Sequence, height: int, width: int) -> np.ndarray:
    """Boolean (H, W) union of COCO segmentations (polygon lists, uncompressed or compressed RLE)."""
    from pycocotools import mask as mask_utils

    rles = []
    for segmentation in segmentations:
        if isinstance(segmentation, list):
            rles.extend(mask_utils.frPyObjects(segmentation, height, width))
        elif isinstance(segmentation.get("counts"), list):
            rles.append(mask_utils.frPyObjects(segmentation, height, width))
        else:
            rles.append(segmentation)
    if not rles:
        return np.zeros((height, width), dtype=bool)
    return mask_utils.decode(mask_utils.merge(rles)).astype(bool)


def index_coco(root: Path, split: str = "val", categories: Sequence[str] = ("zebra",)) -> DatasetIndex:
    if split not in SPLITS:
        raise unknown_split("COCO 2017", split, SPLITS)
    path = require_path(root / "annotations" / f"instances_{split}2017.json", "COCO instances file", LAYOUT)
    try:
        coco = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ManifestError(f"COCO annotations {path} are not valid JSON: {err}") from err
    cats = sorted(coco["categories"], key=lambda c: c["id"])
    names = [c["name"] for c in cats]
    position = {c["id"]: i for i, c in enumerate(cats)}
    by_name = {c["name"]: c["id"] for c in cats}
    if not categories:
        raise ManifestError("choose at least one COCO category")
    for name in categories:
        if name not in by_name:
            close = difflib.get_close_matches(name, names, n=3)
            raise ManifestError(f"unknown COCO category {name!r}" + (f"; did you mean {close}?" if close else ""))
    images = {image["id"]: image for image in coco["images"]}
    annotations: dict[tuple[int, int], list[dict]] = {}
    for ann in coco["annotations"]:
        annotations.setdefault((ann["image_id"], ann["category_id"]), []).append(ann)
    folder = root / f"{split}2017"
    candidates = []
    for name in categories:
        cat_id = by_name[name]
        chosen = sorted(image_id for image_id, c in annotations if c == cat_id)
        if not chosen:
            raise ManifestError(f"COCO category {name!r} has no annotated images in {path}")
        for image_id in chosen:
            image, anns = images[image_id], annotations[(image_id, cat_id)]
            boxes = tuple((x, y, x + w, y + h) for x, y, w, h in (a["bbox"] for a in anns))
            mask = partial(union_mask, [a["segmentation"] for a in anns], image["height"], image["width"])
            suffix = "" if len(categories) == 1 else f"#{name}"
            candidates.append(Candidate(f"{image_id:012d}{suffix}", position[cat_id], split,
                                        str(folder / image["file_name"]), mask=mask, boxes=boxes))
    return DatasetIndex("coco", names, candidates, str(root), split=split)
