"""CIFAR-10, the python version (``cifar-10-python.tar.gz`` unpacked).

Layout (``root``, or ``root/cifar-10-batches-py``)::

    batches.meta   data_batch_1 … data_batch_5   test_batch      (pickled dicts)

Split ``train`` is the five ``data_batch_*`` files (50,000 images), ``test`` the ``test_batch``.

Images exist only inside the pickles, so they are embedded as lossless PNG; ``image_id`` is
``<batch>_<row>`` (CIFAR's own file names are not unique).
"""

from __future__ import annotations

import io
import pickle
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from storage.builders.common import Candidate, DatasetIndex, require_path, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
LAYOUT = "cifar-10-batches-py/{batches.meta,data_batch_1..5,test_batch}"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


def _unpickle(path: Path) -> dict:
    with open(require_path(path, "CIFAR-10 batch", LAYOUT), "rb") as handle:
        try:
            return pickle.load(handle, encoding="bytes")
        except (pickle.UnpicklingError, EOFError, ValueError) as err:
            raise ManifestError(f"CIFAR-10 batch {path} is not a readable pickle: {err}") from err


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels.reshape(3, 32, 32).transpose(1, 2, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


def index_cifar10(root: Path, split: str = "test") -> DatasetIndex:
    if split not in SPLITS:
        raise unknown_split("CIFAR-10", split, sorted(SPLITS))
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    names = [n.decode() for n in _unpickle(root / "batches.meta")[b"label_names"]]
    candidates = []
    for batch_name in SPLITS[split]:
        batch = _unpickle(root / batch_name)
        data, labels = np.asarray(batch[b"data"], dtype=np.uint8), batch[b"labels"]
        if data.shape != (len(labels), 3072):
            raise ManifestError(f"CIFAR-10 batch {root / batch_name}: data is {data.shape}, expected ({len(labels)}, 3072)")
        candidates += [Candidate(f"{batch_name}_{row:05d}", int(label), split, None, load=partial(_png, data[row]))
                       for row, label in enumerate(labels)]
    return DatasetIndex("cifar10", names, candidates, str(root), split=split)
