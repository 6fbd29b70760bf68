"""MNIST in its IDX files (LeCun et al.; seed 002 §4.1 evaluates on its test set).

Layout (``root``, or ``root/MNIST/raw`` as torchvision downloads it; each file plain or ``.gz``)::

    train-images-idx3-ubyte   train-labels-idx1-ubyte   t10k-images-idx3-ubyte   t10k-labels-idx1-ubyte

Split ``train`` is the 60,000 training images, ``test`` the 10,000 ``t10k`` ones. An IDX file is a
big-endian header (magic number ``0x0803`` for uint8 images, ``0x0801`` for uint8 labels, then the
count and, for images, the rows and columns) followed by the bytes. Images exist only inside these
files, so they are embedded as lossless grayscale PNG; ``image_id`` is ``<split>_<row>``; the class
names are the digits ``"0"`` … ``"9"``.
"""

from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path

import numpy as np

from storage.builders.common import Candidate, DatasetIndex, png_bytes, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
LAYOUT = "{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz], in ROOT or ROOT/MNIST/raw"
SPLITS = {"train": "train", "test": "t10k"}
CLASS_NAMES = [str(digit) for digit in range(10)]
_IMAGES, _LABELS = 0x0803, 0x0801  # IDX magic numbers: uint8 data with 3 dimensions, with 1


def _find(root: Path, name: str) -> Path:
    """The IDX file ``name`` under ``root`` or ``root/MNIST/raw``, plain or gzipped."""
    for folder in (root, root / "MNIST" / "raw"):
        for candidate in (folder / name, folder / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"missing MNIST file {root / name} (expected layout: {LAYOUT})")


def _read_idx(path: Path, magic: int, dims: int) -> np.ndarray:
    """The uint8 array of an IDX file, checked against its header; errors name the file."""
    try:
        payload = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as err:
        raise ManifestError(f"MNIST file {path} cannot be read: {err}") from err
    header = 4 * (1 + dims)
    if len(payload) < header:
        raise ManifestError(f"MNIST file {path} is {len(payload)} bytes, shorter than its {header}-byte IDX header")
    found, *shape = (int(v) for v in np.frombuffer(payload[:header], dtype=">u4"))
    if found != magic:
        raise ManifestError(f"MNIST file {path} has magic number {found:#06x}, expected {magic:#06x} "
                            f"(an IDX file of uint8 {'images' if magic == _IMAGES else 'labels'})")
    expected = int(np.prod(shape))
    if len(payload) - header != expected:
        raise ManifestError(f"MNIST file {path} holds {len(payload) - header} data bytes, but its header says "
                            f"{' × '.join(map(str, shape))} = {expected}")
    return np.frombuffer(payload, dtype=np.uint8, offset=header).reshape(shape)


def index_mnist(root: Path, split: str = "test") -> DatasetIndex:
    if split not in SPLITS:
        raise unknown_split("MNIST", split, sorted(SPLITS))
    image_file = _find(root, f"{SPLITS[split]}-images-idx3-ubyte")
    label_file = _find(root, f"{SPLITS[split]}-labels-idx1-ubyte")
    images, labels = _read_idx(image_file, _IMAGES, 3), _read_idx(label_file, _LABELS, 1)
    if len(images) != len(labels):
        raise ManifestError(f"MNIST file {image_file} has {len(images)} images but {label_file} has "
                            f"{len(labels)} labels")
    if len(labels) and labels.max() > 9:
        row = int(np.argmax(labels > 9))
        raise ManifestError(f"MNIST file {label_file}: label {labels[row]} at row {row} is not a digit 0-9")
    candidates = [Candidate(f"{split}_{row:05d}", int(label), split, None, load=partial(png_bytes, images[row]))
                  for row, label in enumerate(labels)]
    return DatasetIndex("mnist", list(CLASS_NAMES), candidates, str(image_file.parent), split=split)
