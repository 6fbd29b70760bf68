"""Parquet manifests: one row per image, sharded, with the label space in the file metadata.

A manifest is a directory of ``part-SSSSS.parquet`` files (one per shard) that all carry the same
schema and metadata (class names, builder, builder version, sampling parameters, recorded skips).
The image is either embedded (``image``: the original encoded bytes, not re-encoded) or referenced
(``image_uri``: a path or URI readable through pyarrow's filesystems, e.g. ``s3://…``).
Ground truth is an optional PNG mask (0 = background, 255 = object) and/or pixel boxes
``(xmin, ymin, xmax, ymax)`` in the image's own coordinates.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from typing import Any, Iterator, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image, ImageOps, UnidentifiedImageError

from storage.files import atomic_write_table, is_local, join, list_files, read_bytes, resolve

__all__ = ["MANIFEST_SCHEMA", "SCHEMA_VERSION", "ManifestError", "ManifestSchemaError", "CorruptImageError",
           "Manifest", "write_manifest", "read_manifest", "decode_image", "decode_mask", "encode_mask", "open_rgb",
           "DECODE_ERRORS",
           "boxes_to_mask", "ground_truth_mask"]

SCHEMA_VERSION = "1"

BOX = pa.struct([("xmin", pa.float32()), ("ymin", pa.float32()), ("xmax", pa.float32()), ("ymax", pa.float32())])

MANIFEST_SCHEMA = pa.schema([
    pa.field("dataset", pa.string(), nullable=False),
    pa.field("split", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("label", pa.int64(), nullable=False),
    pa.field("label_name", pa.string(), nullable=False),
    pa.field("image", pa.binary()),
    pa.field("image_uri", pa.string()),
    pa.field("mask", pa.binary()),
    pa.field("boxes", pa.list_(BOX)),
    pa.field("width", pa.int32(), nullable=False),
    pa.field("height", pa.int32(), nullable=False),
    pa.field("shard", pa.int32(), nullable=False),
])

_META_KEY = b"camgrid.manifest"


class ManifestError(ValueError):
    """A manifest that cannot be built or read (missing, empty, inconsistent)."""


class ManifestSchemaError(ManifestError):
    """A manifest column that is missing or has the wrong type."""


class CorruptImageError(ManifestError):
    """Image bytes that PIL cannot decode."""


@dataclass(frozen=True)
class Manifest:
    """A validated manifest in memory: the rows plus its metadata."""

    table: pa.Table
    class_names: tuple[str, ...]
    metadata: dict[str, Any] = field(default_factory=dict)
    location: str = ""

    def __len__(self) -> int:
        return self.table.num_rows

    @property
    def datasets(self) -> list[str]:
        return sorted(set(self.table.column("dataset").to_pylist()))

    @property
    def shards(self) -> list[int]:
        return sorted(set(self.table.column("shard").to_pylist()))

    @property
    def skipped(self) -> list[dict[str, str]]:
        """Images the builder left out, each with the reason (corrupt, missing file, missing mask…)."""
        return list(self.metadata.get("skipped", []))

    def shard(self, index: int) -> pa.Table:
        return self.table.filter(pc.equal(self.table.column("shard"), index))

    def to_polars(self) -> pl.DataFrame:
        return pl.from_arrow(self.table)

    def records(self) -> Iterator[dict[str, Any]]:
        """Rows as dictionaries, in manifest order."""
        for batch in self.table.to_batches():
            yield from batch.to_pylist()


def _validate(table: pa.Table, location: str) -> None:
    where = f"manifest {location!r}"
    for expected in MANIFEST_SCHEMA:
        if expected.name not in table.column_names:
            raise ManifestSchemaError(f"{where}: missing column {expected.name!r} ({expected.type})")
        actual = table.schema.field(expected.name).type
        if actual != expected.type:
            raise ManifestSchemaError(
                f"{where}: column {expected.name!r} has type {actual}, expected {expected.type}")
        if not expected.nullable and table.column(expected.name).null_count:
            raise ManifestSchemaError(f"{where}: column {expected.name!r} has null values")
    if table.num_rows == 0:
        raise ManifestError(f"{where} is empty (no images)")
    neither = pc.and_(pc.is_null(table.column("image")), pc.is_null(table.column("image_uri")))
    if pc.any(neither).as_py():
        row = pc.index(neither, True).as_py()
        raise ManifestSchemaError(f"{where}: row {row} (image_id {table.column('image_id')[row]}) has neither "
                                  "'image' bytes nor an 'image_uri'")
    keys = pc.binary_join_element_wise(table.column("dataset"), table.column("split"), table.column("image_id"), "\x1f")
    if pc.count_distinct(keys).as_py() != table.num_rows:
        counts = pl.from_arrow(table.select(["dataset", "split", "image_id"])).group_by(pl.all()).len()
        duplicate = counts.filter(pl.col("len") > 1).row(0, named=True)
        raise ManifestError(f"{where}: duplicate image_id {duplicate['image_id']!r} in {duplicate['dataset']}/"
                            f"{duplicate['split']}")


def write_manifest(table: pa.Table, location: str | os.PathLike, *, class_names: Sequence[str],
                   builder: str, builder_version: str, **metadata: Any) -> Manifest:
    """Validate ``table`` and write it as one Parquet file per shard, atomically.

    On a local disk the shards are written into a temporary sibling directory that is then renamed
    into place, so an interrupted build leaves the previous manifest (or nothing), never a mix.
    """
    where = f"manifest {os.fspath(location)!r}"
    missing = [name for name in MANIFEST_SCHEMA.names if name not in table.column_names]
    if missing:
        raise ManifestSchemaError(f"{where}: missing column {missing[0]!r}")
    try:
        table = table.select(MANIFEST_SCHEMA.names).cast(MANIFEST_SCHEMA)
    except (ValueError, pa.ArrowInvalid, pa.ArrowNotImplementedError) as err:
        raise ManifestSchemaError(f"{where}: {err}") from err
    _validate(table, os.fspath(location))
    labels = pc.unique(table.column("label")).to_pylist()
    if min(labels) < 0 or max(labels) >= len(class_names):
        raise ManifestError(f"labels span {min(labels)}..{max(labels)} but there are {len(class_names)} class names")
    info = {"schema_version": SCHEMA_VERSION, "class_names": list(class_names), "builder": builder,
            "builder_version": builder_version, **metadata}
    table = table.replace_schema_metadata({_META_KEY: json.dumps(info).encode()})
    filesystem, path = resolve(location)
    staging = f"{path.rstrip('/')}.{uuid.uuid4().hex}.tmp" if is_local(filesystem) else path
    for shard in sorted(pc.unique(table.column("shard")).to_pylist()):
        part = table.filter(pc.equal(table.column("shard"), shard))
        atomic_write_table(filesystem, join(staging, f"part-{shard:05d}.parquet"), part)
    if is_local(filesystem):
        retired = f"{path.rstrip('/')}.{uuid.uuid4().hex}.old"
        if os.path.exists(path):
            os.replace(path, retired)
        os.replace(staging, path)
        shutil.rmtree(retired, ignore_errors=True)
    return Manifest(table, tuple(class_names), info, os.fspath(location))


def read_manifest(location: str | os.PathLike) -> Manifest:
    """Read and validate a manifest directory (or a single Parquet file); errors name the bad column."""
    filesystem, path = resolve(location)
    info = filesystem.get_file_info(path)
    if info.type.name == "NotFound":
        raise FileNotFoundError(f"no manifest at {os.fspath(location)}")
    files = [path] if info.type.name == "File" else list_files(filesystem, path, ".parquet")
    if not files:
        raise ManifestError(f"manifest {os.fspath(location)!r} is empty (no .parquet files)")
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, filesystem=filesystem))
        except (pa.ArrowInvalid, OSError) as err:
            raise ManifestError(f"manifest part {file} is not a readable Parquet file: {err}") from err
    raw = tables[0].schema.metadata or {}
    if _META_KEY not in raw:
        raise ManifestSchemaError(f"manifest {os.fspath(location)!r}: no camgrid metadata (class names) in {files[0]}")
    metadata = json.loads(raw[_META_KEY])
    try:
        table = pa.concat_tables([t.replace_schema_metadata(None) for t in tables], promote_options="none")
    except pa.ArrowInvalid as err:
        raise ManifestSchemaError(f"manifest {os.fspath(location)!r}: parts have different schemas: {err}") from err
    _validate(table, os.fspath(location))
    return Manifest(table, tuple(metadata["class_names"]), metadata, os.fspath(location))


DECODE_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError)


def open_rgb(payload: bytes) -> Image.Image:
    """Encoded image bytes as the RGB image a viewer shows: turned by its EXIF orientation, and 16-bit
    grayscale scaled to 8 bits (``convert("RGB")`` would clip it to white). Raises one of :data:`DECODE_ERRORS`,
    :class:`PIL.Image.DecompressionBombError` for an image over Pillow's pixel limit."""
    with Image.open(io.BytesIO(payload)) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("I;16", "I;16B", "I;16L", "I"):
            values = np.asarray(image, dtype=np.float64)
            image = Image.fromarray(np.clip(np.round(values / 257.0), 0, 255).astype(np.uint8), mode="L")
        return image.convert("RGB")


def decode_image(record: dict[str, Any]) -> Image.Image:
    """The RGB image of one manifest row (embedded bytes or read through its URI), as :func:`open_rgb` decodes it."""
    payload = record["image"] if record.get("image") is not None else read_bytes(record["image_uri"])
    try:
        return open_rgb(payload)
    except DECODE_ERRORS as err:
        raise CorruptImageError(f"image {record.get('image_id')!r} ({record.get('image_uri') or 'embedded'}) "
                                f"cannot be decoded: {err}") from err


def encode_mask(mask: np.ndarray) -> bytes:
    """A boolean (H, W) mask as an 8-bit PNG (0 / 255)."""
    buffer = io.BytesIO()
    Image.fromarray(np.asarray(mask, dtype=bool).astype(np.uint8) * 255, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


def decode_mask(payload: bytes) -> np.ndarray:
    """The boolean (H, W) mask stored by :func:`encode_mask`."""
    with Image.open(io.BytesIO(payload)) as image:
        return np.asarray(image.convert("L")) >= 128


def boxes_to_mask(boxes: Sequence[dict[str, float]], width: int, height: int) -> np.ndarray:
    """Union of pixel boxes as a boolean (H, W) mask; pixel (u, v) is in a box if its centre is."""
    mask = np.zeros((height, width), dtype=bool)
    for box in boxes:
        x0, y0 = int(np.ceil(box["xmin"] - 0.5)), int(np.ceil(box["ymin"] - 0.5))
        x1, y1 = int(np.ceil(box["xmax"] - 0.5)), int(np.ceil(box["ymax"] - 0.5))
        mask[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
    return mask


def ground_truth_mask(record: dict[str, Any]) -> np.ndarray | None:
    """The row's object mask: the stored mask, else its boxes rasterised, else ``None``. Raises
    :class:`CorruptImageError` naming the image where its mask cannot be decoded."""
    if record.get("mask") is not None:
        try:
            return decode_mask(record["mask"])
        except DECODE_ERRORS as err:
            raise CorruptImageError(f"the mask of image {record.get('image_id')!r} cannot be decoded: {err}") from err
    if record.get("boxes"):
        return boxes_to_mask(record["boxes"], record["width"], record["height"])
    return None

