"""What every manifest builder shares: candidates, annotation readers, and the sampling/encoding loop.

A builder only *indexes* its dataset's on-disk layout into :class:`Candidate` rows (cheap: it reads
annotation files, not images). :func:`build_manifest` then samples, reads and checks each chosen
image (and its mask), records every rejected one with the reason, and writes the manifest.

An evaluation split needs every image's ground truth, so an image whose mask file is missing is
rejected. A *reference* manifest (the train split Expected Grad-CAM draws its data-aware
perturbations from) needs none: with ``require_masks=False`` such an image is kept, without a mask.
"""

from __future__ import annotations

import io
import logging
import os
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pyarrow as pa
from PIL import Image, UnidentifiedImageError

from storage.files import read_bytes
from storage.manifest import (
    DECODE_ERRORS,
    MANIFEST_SCHEMA,
    Manifest,
    ManifestError,
    encode_mask,
    open_rgb,
    write_manifest,
)
from storage.sampling import SampleTooSmallError, select_stratified

__all__ = ["Box", "Candidate", "DatasetIndex", "build_manifest", "png_bytes", "require_path", "read_table_file",
           "read_voc_boxes", "read_voc_annotation", "VocObject", "load_mat", "open_mask_image", "unknown_split"]

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]  # xmin, ymin, xmax, ymax in the image's pixel coordinates


def png_bytes(pixels: np.ndarray) -> bytes:
    """``(H, W)`` or ``(H, W, 3)`` uint8 pixels as lossless PNG bytes, for images that exist only as arrays."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@dataclass(frozen=True)
class Candidate:
    """One image a builder may put in its manifest."""

    image_id: str
    label: int
    split: str
    uri: str | None  # the image file (None when the image only exists in memory, e.g. a CIFAR pickle)
    load: Callable[[], bytes] | None = None  # encoded bytes, when there is no file
    mask: Callable[[], np.ndarray] | None = None  # boolean (H, W) object mask, read lazily
    boxes: tuple[Box, ...] | None = None

    def read(self) -> bytes:
        return self.load() if self.load is not None else read_bytes(self.uri)


@dataclass
class DatasetIndex:
    """A dataset's candidates and label space, as indexed from its on-disk layout."""

    dataset: str
    class_names: list[str]
    candidates: list[Candidate]
    source: str
    skipped: list[dict[str, str]] = field(default_factory=list)  # annotation-level skips (e.g. an empty class)
    split: str | None = None  # the split indexed, as the rows record it (None: whatever the candidates say)

    @property
    def split_name(self) -> str:
        """The split indexed: ``split``, else the candidates' splits (comma-separated when several)."""
        return self.split if self.split is not None else ",".join(sorted({c.split for c in self.candidates}))


def require_path(path: Path, what: str, layout_hint: str = "") -> Path:
    """``path`` if it exists, else a ``FileNotFoundError`` saying which annotation file is missing."""
    if not path.exists():
        hint = f" (expected layout: {layout_hint})" if layout_hint else ""
        raise FileNotFoundError(f"missing {what}: {path}{hint}")
    return path


def read_table_file(path: Path, what: str, columns: int) -> list[list[str]]:
    """Whitespace-separated rows of an annotation text file; the last column keeps its spaces."""
    rows = []
    for number, line in enumerate(require_path(path, what).read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split(maxsplit=columns - 1)
        if len(parts) != columns:
            raise ManifestError(f"{path}:{number}: expected {columns} fields, got {line!r}")
        rows.append(parts)
    return rows


def load_mat(path: Path, what: str) -> dict[str, Any]:
    """A MATLAB annotation file (scipy), squeezed."""
    from scipy.io import loadmat

    try:
        return loadmat(require_path(path, what), squeeze_me=True)
    except (ValueError, TypeError, OSError) as err:
        raise ManifestError(f"{what} {path} is not a readable .mat file: {err}") from err


@dataclass(frozen=True)
class VocObject:
    """One ``<object>`` of a Pascal-VOC style XML: its name, its box as written, its difficult flag."""

    name: str
    box: Box
    difficult: bool


def _voc_number(path: Path, element: ET.Element | None, tag: str, where: str) -> float:
    text = None if element is None else element.findtext(tag)
    try:
        return float(text)
    except (TypeError, ValueError):
        found = "missing" if text is None else f"{text.strip()!r}, not a number"
        raise ManifestError(f"{path}: {where} <{tag}> is {found}") from None


def read_voc_annotation(path: Path) -> tuple[tuple[int, int] | None, list[VocObject]]:
    """``(image size (width, height), objects)`` of a Pascal-VOC style XML; the size is None when absent.

    A file that is not XML, or a box coordinate, size or ``<difficult>`` flag that is missing or not
    a number, is a one-line ``ManifestError`` naming the file and the field. An object without
    ``<name>`` is named ``""``; one without ``<difficult>`` is not difficult.
    """
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as err:
        raise ManifestError(f"box annotation {path} is not valid XML: {err}") from err
    size_element = root.find("size")
    size = None if size_element is None else tuple(int(_voc_number(path, size_element, tag, "<size>"))
                                                   for tag in ("width", "height"))
    objects = []
    for number, obj in enumerate(root.iter("object"), 1):
        where = f"object {number}"
        coords = tuple(_voc_number(path, obj.find("bndbox"), tag, f"{where} <bndbox>")
                       for tag in ("xmin", "ymin", "xmax", "ymax"))
        difficult = _voc_number(path, obj, "difficult", where) if obj.find("difficult") is not None else 0
        if difficult not in (0, 1):
            raise ManifestError(f"{path}: {where} <difficult> is {difficult:g}, not 0 or 1")
        objects.append(VocObject((obj.findtext("name") or "").strip(), coords, bool(difficult)))
    return size, objects


def read_voc_boxes(path: Path) -> list[tuple[str, Box]]:
    """``(object name, box)`` pairs of a Pascal-VOC style XML (ImageNet val boxes, Stanford Dogs)."""
    return [(obj.name, obj.box) for obj in read_voc_annotation(path)[1]]


def open_mask_image(path: Path) -> Image.Image:
    """A segmentation/trimap image file, with ``FileNotFoundError`` when the annotation is absent."""
    if not path.exists():
        raise FileNotFoundError(f"missing mask file {path}")
    return Image.open(path)


def _check_image(payload: bytes) -> tuple[int, int]:
    """``(width, height)`` of the image as it is decoded for the model (after its EXIF orientation)."""
    return open_rgb(payload).size


def build_manifest(index: DatasetIndex, out: str | os.PathLike, *, n: int | None, seed: int = 0,
                   embed: bool = True, shard_size: int = 100, builder: str, builder_version: str,
                   progress: Callable[[int, int], None] | None = None, require_masks: bool = True) -> Manifest:
    """Sample ``n`` images of ``index`` (stratified by class), check them, and write the manifest.

    An image that is missing, cannot be decoded, or whose mask is corrupt or of another size is
    left out and recorded in the manifest metadata (``skipped``) with the reason; its class draws
    a replacement. So is one whose mask file is missing, unless ``require_masks`` is false (a
    reference set): then the image is kept with no mask. Fewer usable images than ``n`` is an
    error, never a silently short manifest. The metadata's ``sample`` records the split, ``n``,
    ``seed``, the number of candidates and ``require_masks``.
    """
    if not index.candidates:
        raise ManifestError(f"{index.dataset}: no images found under {index.source}")
    if not embed and any(c.uri is None for c in index.candidates):
        raise ManifestError(f"{index.dataset}: images exist only inside the dataset files; use embed=True")
    skipped = list(index.skipped)
    done = 0
    wanted = len(index.candidates) if n is None else n

    def accept(candidate: Candidate) -> dict[str, Any] | None:
        nonlocal done

        def skip(reason: str) -> None:
            log.warning("%s: skipping %s: %s", index.dataset, candidate.image_id, reason)
            skipped.append({"image_id": candidate.image_id, "source": candidate.uri or "", "reason": reason})

        try:
            payload = candidate.read()
        except FileNotFoundError as err:
            return skip(f"missing image file: {err}")
        try:
            width, height = _check_image(payload)
        except Image.DecompressionBombError as err:
            return skip(f"image over Pillow's pixel limit (PIL.Image.MAX_IMAGE_PIXELS): {err}")
        except DECODE_ERRORS as err:
            return skip(f"corrupt image: {err}")
        mask = None
        if candidate.mask is not None:
            try:
                array = candidate.mask()
            except FileNotFoundError as err:
                if require_masks:
                    return skip(str(err))
                array = None  # a reference image needs no ground truth
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
                return skip(f"corrupt mask: {err}")
            if array is not None:
                if array.shape != (height, width):
                    return skip(f"mask is {array.shape[1]}×{array.shape[0]} but the image is {width}×{height}")
                mask = encode_mask(array)
        boxes = None if candidate.boxes is None else [dict(zip(("xmin", "ymin", "xmax", "ymax"), b))
                                                      for b in candidate.boxes]
        done += 1
        if progress is not None:
            progress(done, wanted)
        return {"dataset": index.dataset, "split": candidate.split, "image_id": candidate.image_id,
                "label": candidate.label, "label_name": index.class_names[candidate.label],
                "image": payload if embed else None, "image_uri": None if embed else candidate.uri,
                "mask": mask, "boxes": boxes, "width": width, "height": height}

    try:
        rows = select_stratified(index.candidates, n, seed, label=lambda c: c.label, key=lambda c: c.image_id,
                                 accept=accept)
    except SampleTooSmallError as err:
        reasons = "; ".join(f"{s['image_id']}: {s['reason']}" for s in skipped[:3])
        raise ManifestError(f"{index.dataset}: {err}" + (f" — skipped {reasons}" if reasons else "")) from err
    if not rows:
        raise ManifestError(f"{index.dataset}: every image under {index.source} was skipped")
    for position, row in enumerate(rows):
        row["shard"] = position // shard_size
    table = pa.Table.from_pylist(rows, schema=MANIFEST_SCHEMA)
    sample = {"split": index.split_name, "n": n, "seed": seed, "candidates": len(index.candidates),
              "require_masks": require_masks}
    return write_manifest(table, out, class_names=index.class_names, builder=builder,
                          builder_version=builder_version, source=index.source, sample=sample, skipped=skipped)


def unknown_split(dataset: str, split: str, allowed: Sequence[str]) -> ManifestError:
    """The one-line error for a split name a dataset does not have."""
    return ManifestError(f"{dataset} split {split!r} unknown; choose from {', '.join(allowed)}")
