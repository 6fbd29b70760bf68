"""ILSVRC2012, as unpacked from ``ILSVRC2012_img_val.tar`` / ``ILSVRC2012_img_train.tar`` and the devkit.

Layout (``root``)::

    ILSVRC2012_devkit_t12/data/meta.mat                      (both splits: the label space)
    ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt             (split val)
    ILSVRC2012_img_val/ILSVRC2012_val_00000001.JPEG …        (split val; or val/…JPEG)
    ILSVRC2012_bbox_val_v3/val/ILSVRC2012_val_00000001.xml   (optional: boxes; or bbox_val/…, val/…xml)
    train/n01440764/n01440764_10026.JPEG …                   (split train; or ILSVRC2012_img_train/…)
    ILSVRC2012_bbox_train_v2/n01440764/n01440764_10026.xml   (optional: boxes; or bbox_train/…,
                                                              or next to the images in train/<wnid>/)

The train split is the extracted ``ILSVRC2012_img_train.tar`` with each per-class ``<wnid>.tar``
unpacked into its ``<wnid>/`` folder. Labels follow torchvision/timm for both splits: the index of
the synset in sorted WordNet-id order over the devkit's 1000 leaf synsets (the devkit's
ILSVRC2012_ID order differs), named by the first of the synset's words. Boxes are taken from the
XMLs as given (pixel coordinates); an image without one has no boxes.
"""

from __future__ import annotations

import os
from pathlib import Path

from storage.builders.common import Candidate, DatasetIndex, load_mat, read_voc_boxes, require_path, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
SPLITS = ("val", "train")
LAYOUT = ("ILSVRC2012_devkit_t12/data/{meta.mat,ILSVRC2012_validation_ground_truth.txt} with "
          "ILSVRC2012_img_val/*.JPEG (val) or train/<wnid>/<wnid>_<n>.JPEG (train)")


def _first_dir(root: Path, names: tuple[str, ...], pattern: str) -> Path | None:
    for name in names:
        folder = root / name
        if folder.is_dir() and next(folder.glob(pattern), None) is not None:
            return folder
    return None


def label_space(root: Path) -> tuple[list[str], list[str], dict[int, str]]:
    """``(sorted wnids, class names, ILSVRC2012_ID → wnid)`` of the devkit's leaf synsets."""
    devkit = require_path(root / "ILSVRC2012_devkit_t12" / "data", "ILSVRC2012 devkit", LAYOUT)
    synsets = load_mat(devkit / "meta.mat", "devkit meta.mat")["synsets"]
    leaves = [s for s in synsets if int(s["num_children"]) == 0]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
    wnid_words = {str(s["WNID"]): str(s["words"]).split(", ")[0] for s in leaves}
    wnids = sorted(wnid_words)
    return wnids, [wnid_words[w] for w in wnids], id_to_wnid


def index_imagenet(root: Path, split: str = "val") -> DatasetIndex:
    if split not in SPLITS:
        raise unknown_split("ILSVRC2012 (imagenet)", split, SPLITS)
    return _index_val(root) if split == "val" else _index_train(root)



def _index_val(root: Path) -> DatasetIndex:
    wnids, names, id_to_wnid = label_space(root)
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
    devkit = root / "ILSVRC2012_devkit_t12" / "data"
    truth_file = require_path(devkit / "ILSVRC2012_validation_ground_truth.txt", "validation ground truth", LAYOUT)
    truth = [int(line) for line in truth_file.read_text().split()]
    images = _first_dir(root, ("ILSVRC2012_img_val", "val"), "*.JPEG")
    if images is None:
        raise FileNotFoundError(f"missing ILSVRC2012 validation images under {root} (expected layout: {LAYOUT})")
    box_dir = _first_dir(root, ("ILSVRC2012_bbox_val_v3/val", "bbox_val", "val"), "*.xml")
    candidates = []
    for number, synset_id in enumerate(truth, 1):
        if synset_id not in id_to_wnid:
            raise ManifestError(f"{truth_file}:{number}: ILSVRC2012_ID {synset_id} is not a leaf synset in meta.mat")
        stem = f"ILSVRC2012_val_{number:08d}"
        boxes = None
        if box_dir is not None and (box_dir / f"{stem}.xml").exists():
            boxes = tuple(box for _, box in read_voc_boxes(box_dir / f"{stem}.xml"))
        candidates.append(Candidate(stem, label_of[id_to_wnid[synset_id]], "val", str(images / f"{stem}.JPEG"),
                                    boxes=boxes))
    return DatasetIndex("imagenet", names, candidates, str(root), split="val")


def _files(folder: Path, suffix: str) -> dict[str, str]:
    """``stem → file name`` of the files in ``folder`` ending in ``suffix`` (any case); none if absent."""
    if not folder.is_dir():
        return {}
    with os.scandir(folder) as entries:
        return {entry.name[: -len(suffix)]: entry.name for entry in entries
                if entry.name.lower().endswith(suffix) and entry.is_file()}


def _index_train(root: Path) -> DatasetIndex:
    wnids, names, _ = label_space(root)
    images = next((root / name for name in ("train", "ILSVRC2012_img_train") if (root / name).is_dir()), None)
    if images is None:
        raise FileNotFoundError(f"missing ILSVRC2012 training images under {root}: no train/ folder "
                                f"(expected layout: {LAYOUT})")
    folders = {p.name for p in images.iterdir() if p.is_dir()}
    strays = sorted(folders - set(wnids))
    if strays:
        raise ManifestError(f"{images}: folder {strays[0]!r} is not one of the devkit's 1000 leaf synsets")
    if not folders and next(images.glob("n*.tar"), None) is not None:
        raise ManifestError(f"{images} holds the per-class <wnid>.tar archives: unpack each into its <wnid>/ folder")
    box_root = next((root / name for name in ("ILSVRC2012_bbox_train_v2", "bbox_train")
                     if (root / name).is_dir()), None)
    candidates, skipped = [], []
    for label, wnid in enumerate(wnids):
        if wnid not in folders:
            skipped.append({"image_id": "", "source": str(images / wnid),
                            "reason": f"class {wnid} ({names[label]}) has no training images"})
            continue
        beside = _files(images / wnid, ".xml")
        xmls = _files(box_root / wnid, ".xml") if box_root is not None else {}
        for stem, name in sorted(_files(images / wnid, ".jpeg").items()):
            boxes = None
            if stem in xmls or stem in beside:
                xml = box_root / wnid / xmls[stem] if stem in xmls else images / wnid / beside[stem]
                boxes = tuple(box for _, box in read_voc_boxes(xml))
            candidates.append(Candidate(stem, label, "train", str(images / wnid / name), boxes=boxes))
    return DatasetIndex("imagenet", names, candidates, str(root), skipped, split="train")
