"""CIFAR-10, the python version (``cifar-10-python.tar.gz`` unpacked).

Layout (``root``, or ``root/cifar-10-batches-py``)::

    batches.meta   data_batch_1 … data_batch_5   test_batch      (pickled dicts)

Split ``train`` is the five ``data_batch_*`` files (50,000 images), ``test`` the ``test_batch``.

Images exist only inside the pickles, so they are embedded as lossless PNG; ``image_id`` is
``<batch>_<row>`` (CIFAR's own file names are not unique).
"""

from __future__ import annotations

import pickle
from functools import partial
from pathlib import Path

import numpy as np

from storage.builders.common import Candidate, DatasetIndex, png_bytes, require_path, unknown_split
from storage.manifest import ManifestError

VERSION = "1"
LAYOUT = "cifar-10-batches-py/{batches.meta,data_batch_1..5,test_batch}"
SPLITS = {"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}


_NUMPY_ARRAYS = {  # what a pickled numpy array refers to, and nothing else
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}


class _DataUnpickler(pickle.Unpickler):
    """Unpickles plain data (dicts, lists, bytes, numbers, numpy arrays) and refuses every other global:
    a CIFAR-10 batch holds nothing else, and a pickle naming a function would run it."""

    def find_class(self, module: str, name: str) -> type:
        if (module, name) in _NUMPY_ARRAYS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it refers to {module}.{name}, which a CIFAR-10 batch never does "
                                     "(refused: unpickling it would run code from the data)")


def _unpickle(path: Path) -> dict:
    with open(require_path(path, "CIFAR-10 batch", LAYOUT), "rb") as handle:
        try:
            batch = _DataUnpickler(handle, encoding="bytes").load()
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as err:
            raise ManifestError(f"CIFAR-10 batch {path} is not a readable data pickle: {err}") from err
    if not isinstance(batch, dict):
        raise ManifestError(f"CIFAR-10 batch {path} holds a {type(batch).__name__}, not a dict")
    return batch


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
            raise ManifestError(f"CIFAR-10 batch {root / batch_name}: data is {data.shape}, "
                                f"expected ({len(labels)}, 3072)")
        pixels = data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # CIFAR's rows are channel-major
        candidates += [Candidate(f"{batch_name}_{row:05d}", int(label), split, None,
                                 load=partial(png_bytes, pixels[row])) for row, label in enumerate(labels)]
    return DatasetIndex("cifar10", names, candidates, str(root), split=split)
