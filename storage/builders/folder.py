"""A folder of images in the ImageFolder layout, for users' own data.

Layout (``root``)::

    <class name>/<image>.{jpg,jpeg,png,bmp,webp,tif,tiff} …    (nested folders allowed below a class)

Labels index the sorted class-folder names (torchvision's ``ImageFolder`` convention). A class
folder without images keeps its label and is recorded as a skip; ``image_id`` is the path below
``root`` without the extension.
"""

from __future__ import annotations

from pathlib import Path

from storage.builders.common import Candidate, DatasetIndex

VERSION = "1"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def index_folder(root: Path, split: str = "all", dataset: str | None = None) -> DatasetIndex:
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise FileNotFoundError(f"{root} has no class folders (expected <root>/<class>/<image>)")
    candidates, skipped = [], []
    for label, name in enumerate(classes):
        files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not files:
            skipped.append({"image_id": "", "source": str(root / name), "reason": f"class {name!r} has no images"})
        candidates += [Candidate(str(p.relative_to(root).with_suffix("")), label, split, str(p)) for p in files]
    return DatasetIndex(dataset or root.name, classes, candidates, str(root), skipped)
