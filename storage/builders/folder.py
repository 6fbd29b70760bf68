"""A folder of images in the ImageFolder layout, for users' own data.

Layout (``root``), either one ImageFolder (split ``all``, the default)::

    <class name>/<image>.{jpg,jpeg,png,bmp,webp,tif,tiff} …    (nested folders allowed below a class)

or one ImageFolder per split (split ``train``, ``val``, ``test`` or any other folder name)::

    train/<class name>/<image>.jpg …     val/<class name>/<image>.jpg …

Labels index the sorted class-folder names (torchvision's ``ImageFolder`` convention); with split
folders, the label space is the sorted union of every split folder's classes, so a train
(reference) manifest and a test manifest of the same root agree on every label. A class folder
without images keeps its label and is recorded as a skip; ``image_id`` is the path below ``root``
without the extension (``train/cats/0001`` with split folders, so ids never repeat across splits), or
with it where two images differ only in their extension (``cats/0001.jpg`` and ``cats/0001.png``).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from storage.builders.common import Candidate, DatasetIndex, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
SPLIT_NAMES = ("train", "val", "test")


def _subfolders(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _image_id(relative: Path, stems: Counter[Path]) -> str:
    """The path below the root without its extension, unless another image differs from it only by that."""
    stem = relative.with_suffix("")
    return str(relative if stems[stem] > 1 else stem)


def index_folder(root: Path, split: str = "all", dataset: str | None = None) -> DatasetIndex:
    if not root.is_dir():
        raise FileNotFoundError(f"no image folder at {root}")
    if split == "all":
        folder = root
        classes = _subfolders(root)
        if classes and set(classes) <= set(SPLIT_NAMES) and all(_subfolders(root / c) for c in classes):
            raise ManifestError(f"{root} holds split folders ({', '.join(classes)}), not class folders: "
                                f"choose the split, e.g. split {classes[0]!r}")
    else:
        splits = [name for name in _subfolders(root) if _subfolders(root / name)]
        if split not in splits:
            raise unknown_split(f"ImageFolder {root}", split, ["all", *splits])
        folder = root / split
        classes = sorted({name for other in splits for name in _subfolders(root / other)})
    if not classes:
        raise FileNotFoundError(f"{folder} has no class folders (expected {folder}/<class>/<image>)")
    candidates, skipped = [], []
    for label, name in enumerate(classes):
        directory = folder / name  # may be absent from this split folder
        found = directory.rglob("*") if directory.is_dir() else ()
        files = sorted(p for p in found if p.suffix.lower() in EXTENSIONS and p.is_file())
        if not files:
            skipped.append({"image_id": "", "source": str(directory), "reason": f"class {name!r} has no images"})
        stems = Counter(p.relative_to(root).with_suffix("") for p in files)
        candidates += [Candidate(_image_id(p.relative_to(root), stems), label, split, str(p)) for p in files]
    return DatasetIndex(dataset or root.name, classes, candidates, str(root), skipped, split=split)
