"""Stanford Dogs with its boxes (``images.tar``, ``annotation.tar``, ``lists.tar``).

Layout (``root``)::

    Images/n02085620-Chihuahua/n02085620_10074.jpg …
    Annotation/n02085620-Chihuahua/n02085620_10074          (VOC-style XML, no extension)
    train_list.mat  test_list.mat                           (file_list, labels 1..120)

Class names come from the folder names (``n02085620-Chihuahua`` → ``Chihuahua``). Split ``train``
reads ``train_list.mat`` (12,000 images), ``test`` reads ``test_list.mat`` (8,580).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from storage.builders.common import Candidate, DatasetIndex, load_mat, read_voc_boxes, require_path, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
SPLITS = ("train", "test")
LAYOUT = "Images/<wnid>-<breed>/*.jpg, Annotation/<wnid>-<breed>/<stem>, {train,test}_list.mat"


def index_dogs(root: Path, split: str = "test") -> DatasetIndex:
    if split not in SPLITS:
        raise unknown_split("Stanford Dogs", split, SPLITS)
    lists = load_mat(root / f"{split}_list.mat", f"Stanford Dogs {split}_list.mat")
    files = [str(f) for f in np.atleast_1d(lists["file_list"])]
    labels = [int(label) for label in np.atleast_1d(lists["labels"])]
    folders = sorted(p.name for p in require_path(root / "Images", "Stanford Dogs Images/ folder", LAYOUT).iterdir()
                     if p.is_dir())
    names = [folder.split("-", 1)[1].replace("_", " ") for folder in folders]
    annotations = require_path(root / "Annotation", "Stanford Dogs Annotation/ folder", LAYOUT)
    candidates = []
    for relative, label in zip(files, labels):
        folder = relative.split("/", 1)[0]
        if folder not in folders or folders.index(folder) != label - 1:
            raise ManifestError(f"{split}_list.mat: {relative} has label {label}, which is not its folder's class")
        annotation = annotations / Path(relative).with_suffix("")
        boxes = tuple(box for _, box in read_voc_boxes(annotation)) if annotation.exists() else None
        candidates.append(Candidate(Path(relative).stem, label - 1, split, str(root / "Images" / relative),
                                    boxes=boxes))
    return DatasetIndex("stanford_dogs", names, candidates, str(root), split=split)
