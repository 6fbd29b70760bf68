"""PASCAL VOC2007 (``VOCtrainval_06-Nov-2007.tar`` + ``VOCtest_06-Nov-2007.tar``): one row per (image, class).

Layout (``root`` = the ``VOC2007`` folder, the ``VOCdevkit`` folder holding it, or a folder holding
``VOCdevkit``)::

    VOCdevkit/VOC2007/ImageSets/Main/{train,val,trainval,test}.txt         one image id per line
    VOCdevkit/VOC2007/Annotations/000001.xml          <size>, and per <object>: <name> <difficult> <bndbox>
    VOCdevkit/VOC2007/JPEGImages/000001.jpg
    VOCdevkit/VOC2007/ImageSets/Segmentation/<split>.txt    (optional: the images with a segmentation)
    VOCdevkit/VOC2007/SegmentationClass/000032.png          palette PNG: class 1..20, 0 background, 255 void

VOC images are multi-label and a manifest row has one label, so each image gives one row per class
present in it: image_id ``<id>.<class>`` (``000001.dog``), label = the class's position in the 20
VOC classes, boxes = that class's boxes, mask = that class's pixels of ``SegmentationClass`` (void
excluded) for an image of the split's segmentation list, else none. Sampling is stratified by class
over these rows; the pointing game (Zhang et al. 2018) evaluates every row of the 4952 test images.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from storage.builders.common import (
    Box,
    Candidate,
    DatasetIndex,
    VocObject,
    open_mask_image,
    read_voc_annotation,
    require_path,
    unknown_split,
)
from storage.manifest import ManifestError

VERSION = "1"
SPLITS = ("train", "val", "trainval", "test")
SUBSETS = ("all", "difficult")
CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow", "diningtable",
           "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train", "tvmonitor")
LAYOUT = "VOCdevkit/VOC2007/{Annotations/<id>.xml, JPEGImages/<id>.jpg, ImageSets/Main/<split>.txt}"


def find_voc2007(root: Path) -> Path:
    """The ``VOC2007`` folder: ``root`` itself, ``root/VOC2007`` or ``root/VOCdevkit/VOC2007``."""
    for folder in (root, root / "VOC2007", root / "VOCdevkit" / "VOC2007"):
        if (folder / "Annotations").is_dir() and (folder / "ImageSets").is_dir():
            return folder
    raise FileNotFoundError(f"no VOC2007 folder (holding Annotations/ and ImageSets/) at {root}, "
                            f"{root / 'VOC2007'} or {root / 'VOCdevkit' / 'VOC2007'} (expected layout: {LAYOUT})")


def voc_box(box: Box) -> Box:
    """A VOC box in the manifest's convention: ``(xmin - 1, ymin - 1, xmax, ymax)``.

    VOC numbers pixels from 1 and its boxes are inclusive: ``xmin..xmax`` are the first and last
    pixel columns covered. The manifest's boxes are continuous coordinates over 0-based pixels,
    where pixel ``u`` spans ``[u, u + 1)`` and belongs to a box if its centre ``u + 0.5`` does
    (:func:`storage.manifest.boxes_to_mask`). Columns ``xmin..xmax`` are 0-based ``xmin - 1 ..
    xmax - 1``, which span ``[xmin - 1, xmax)``, so the box covers exactly the pixels VOC names
    and its width ``xmax - xmin + 1`` is VOC's pixel count (rows likewise).
    """
    xmin, ymin, xmax, ymax = box
    return xmin - 1, ymin - 1, xmax, ymax


def _class_mask(path: Path, value: int) -> np.ndarray:
    with open_mask_image(path) as image:
        if image.mode not in ("P", "L"):
            raise ValueError(f"{path} is a {image.mode} image, not a palette PNG of class indices")
        return np.asarray(image) == value


def _image_ids(path: Path) -> list[str]:
    return [line.split()[0] for line in path.read_text().splitlines() if line.strip()]


def _read_objects(path: Path) -> tuple[int, dict[str, list[VocObject]]]:
    """``(image area, class name → its objects)`` of one annotation file."""
    size, objects = read_voc_annotation(require_path(path, "VOC2007 annotation"))
    if size is None:
        raise ManifestError(f"{path}: <size> is missing")
    by_class: dict[str, list[VocObject]] = {}
    for number, obj in enumerate(objects, 1):
        if obj.name not in CLASSES:
            raise ManifestError(f"{path}: object {number} <name> {obj.name!r} is not one of the 20 VOC classes")
        by_class.setdefault(obj.name, []).append(obj)
    return size[0] * size[1], by_class


def _area(box: Box) -> float:
    return (box[2] - box[0]) * (box[3] - box[1])


def index_voc2007(root: Path, split: str = "test", *, difficult: bool = False, subset: str = "all") -> DatasetIndex:
    """Index VOC2007's ``split``: a row per (image, class present), in the pointing game's protocol.

    ``difficult``: with the default ``False`` a class whose every object in the image is flagged
    difficult gives no row, the (image, class) pairs the pointing game scores (Zhang et al.'s
    protocol, as TorchRay's benchmark applies it); ``True`` keeps those pairs too. A row's boxes
    are every box of its class, difficult ones included: they are the class's ground truth, and a
    point on a difficult instance of the class is a hit in that protocol.

    ``subset="difficult"`` keeps Zhang et al.'s *Difficult* set: the pairs whose class's boxes
    cover in total (the sum of their areas, in pixels) less than a quarter of the image, in an image
    with an object of another class, difficult or not (a distractor); ``"all"`` keeps every pair.
    """
    if split not in SPLITS:
        raise unknown_split("PASCAL VOC2007", split, SPLITS)
    if subset not in SUBSETS:
        raise ManifestError(f"PASCAL VOC2007 subset {subset!r} unknown; choose from {', '.join(SUBSETS)}")
    voc = find_voc2007(root)
    ids = _image_ids(require_path(voc / "ImageSets" / "Main" / f"{split}.txt", f"VOC2007 {split} image list", LAYOUT))
    segmentation_list = voc / "ImageSets" / "Segmentation" / f"{split}.txt"
    segmented = set(_image_ids(segmentation_list)) if segmentation_list.exists() else set()
    candidates = []
    for image_id in ids:
        image_area, by_class = _read_objects(voc / "Annotations" / f"{image_id}.xml")
        for label, name in enumerate(CLASSES):
            objects = by_class.get(name)
            if not objects or (not difficult and all(obj.difficult for obj in objects)):
                continue
            boxes = tuple(voc_box(obj.box) for obj in objects)
            if subset == "difficult" and (len(by_class) < 2 or 4 * sum(map(_area, boxes)) >= image_area):
                continue
            mask = None
            if image_id in segmented:
                mask = partial(_class_mask, voc / "SegmentationClass" / f"{image_id}.png", label + 1)
            candidates.append(Candidate(f"{image_id}.{name}", label, split, str(voc / "JPEGImages" / f"{image_id}.jpg"),
                                        mask=mask, boxes=boxes))
    return DatasetIndex("voc2007", list(CLASSES), candidates, str(voc), split=split)
