"""ILSVRC2012 validation set, as unpacked from ``ILSVRC2012_img_val.tar`` and the devkit.

Layout (``root``)::

    ILSVRC2012_img_val/ILSVRC2012_val_00000001.JPEG …        (or val/…JPEG)
    ILSVRC2012_devkit_t12/data/ILSVRC2012_validation_ground_truth.txt
    ILSVRC2012_devkit_t12/data/meta.mat
    ILSVRC2012_bbox_val_v3/val/ILSVRC2012_val_00000001.xml   (optional: boxes; or val/…xml)

Labels follow torchvision/timm: the index of the synset in sorted WordNet-id order (the devkit's
ILSVRC2012_ID order differs). Boxes are taken from the val XMLs as given (pixel coordinates).
"""

from __future__ import annotations

from pathlib import Path

from storage.builders.common import Candidate, DatasetIndex, load_mat, read_voc_boxes, require_path
from storage.manifest import ManifestError

VERSION = "1"
LAYOUT = "ILSVRC2012_img_val/*.JPEG and ILSVRC2012_devkit_t12/data/{meta.mat,ILSVRC2012_validation_ground_truth.txt}"


def _first_dir(root: Path, names: tuple[str, ...], pattern: str) -> Path | None:
    for name in names:
        folder = root / name
        if folder.is_dir() and next(folder.glob(pattern), None) is not None:
            return folder
    return None


def index_imagenet_val(root: Path, split: str = "val") -> DatasetIndex:
    if split != "val":
        raise ManifestError(f"imagenet builder reads the validation set only, not split {split!r}")
    devkit = require_path(root / "ILSVRC2012_devkit_t12" / "data", "ILSVRC2012 devkit", LAYOUT)
    synsets = load_mat(devkit / "meta.mat", "devkit meta.mat")["synsets"]
    leaves = [s for s in synsets if int(s["num_children"]) == 0]
    id_to_wnid = {int(s["ILSVRC2012_ID"]): str(s["WNID"]) for s in leaves}
    wnid_words = {str(s["WNID"]): str(s["words"]).split(", ")[0] for s in leaves}
    wnids = sorted(wnid_words)
    label_of = {wnid: i for i, wnid in enumerate(wnids)}
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
    return DatasetIndex("imagenet", [wnid_words[w] for w in wnids], candidates, str(root))
