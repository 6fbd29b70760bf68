"""Result datasets under one run directory: saliency maps, long-form scores and the run record.

Layout (local path or object-store URI)::

    <run>/run.json                                                      the run record
    <run>/saliency/dataset=<d>/architecture=<a>/shard-SSSSS.parquet      one row per image × method
    <run>/scores/dataset=<d>/architecture=<a>/shard-SSSSS.parquet        one row per image × method × metric
    <run>/cells/dataset=<d>/architecture=<a>.json                       success marker of a finished cell
    <run>/references/dataset=<d>/architecture=<a>/features.parquet      h(x') of the cell's reference images
    <run>/skipped/dataset=<d>/architecture=<a>/shard-SSSSS.json        images of the shard that could not be evaluated
    <run>/inflight/dataset=<d>/architecture=<a>/<host>-<pid>.json       the batch a worker is on: its image ids and the
                                                                        method it computes (progress, crash forensics)

A part is named by its cell (the hive directories) and shard, and written atomically, so a retried
task overwrites its own part and a rerun can skip the shards whose parts exist: no row is lost or
written twice. The hive columns (``dataset``, ``architecture``) live in the directory names, not
in the files; the readers (Polars lazy scans) put them back.

Maps are stored compactly: float16 values of ``map / max|map|`` plus that float32 scale, so
every map keeps ~3 significant digits whatever its magnitude (raw CAM values span 1e-8…1e4, which
plain float16 would flush or overflow).
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import socket
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from typing import Iterator, Mapping, Sequence

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pydantic import ValidationError

from storage.files import (
    atomic_write_bytes,
    atomic_write_table,
    exists,
    is_local,
    join,
    list_files,
    read_file,
    resolve,
)
from storage.record import CellMarker, RunRecord

__all__ = ["MISCLASSIFIED", "NAME", "InFlight", "SALIENCY_SCHEMA", "SCORES_SCHEMA", "REFERENCE_FEATURES_SCHEMA",
           "ROWS_SCHEMA", "RunInUseError", "RunStore", "saliency_table", "decode_maps"]

SALIENCY_SCHEMA = pa.schema([
    pa.field("run", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("target", pa.int64(), nullable=False),
    pa.field("map_height", pa.int32(), nullable=False),
    pa.field("map_width", pa.int32(), nullable=False),
    pa.field("scale", pa.float32(), nullable=False),
    pa.field("map", pa.binary(), nullable=False),  # float16 little-endian, row-major, values / scale
    pa.field("seconds", pa.float64(), nullable=False),
])

SCORES_SCHEMA = pa.schema([
    pa.field("run", pa.string(), nullable=False),
    pa.field("method", pa.string(), nullable=False),
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("target", pa.int64(), nullable=False),
    pa.field("metric", pa.string(), nullable=False),
    pa.field("value", pa.float64()),  # NaN where the metric is undefined for the sample
    pa.field("seconds", pa.float64(), nullable=False),
])

REFERENCE_FEATURES_SCHEMA = pa.schema([
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("pool", pa.string(), nullable=False),  # "fit" (the method's perturbations) or "held_out" (the metric's)
    pa.field("features", pa.list_(pa.float32()), nullable=False),  # h(x') = GAP of the target layer, (K,)
])

SCORE_TYPE = pa.struct([
    pa.field("metric", pa.string(), nullable=False),
    pa.field("value", pa.float64()),  # NaN where undefined
    pa.field("seconds", pa.float64(), nullable=False),  # per image
])

ROWS_SCHEMA = pa.schema([  # what an evaluator sends the driver: one row per (image, method), or per skipped image
    pa.field("image_id", pa.string(), nullable=False),
    pa.field("shard", pa.int32(), nullable=False),
    pa.field("method", pa.string()),  # null on a skipped image's row, as every field below but ``skipped``
    pa.field("target", pa.int64()),
    pa.field("predicted", pa.int64()),  # the model's class (pooled metrics need it)
    pa.field("map_height", pa.int32()),
    pa.field("map_width", pa.int32()),
    pa.field("map", pa.binary()),  # the raw coarse map, float32 little-endian, row-major
    pa.field("seconds", pa.float64()),  # the method's time per image
    pa.field("scores", pa.list_(SCORE_TYPE)),  # every per-batch metric's score of this map
    pa.field("skipped", pa.string()),  # why the image could not be evaluated (it cannot be decoded, its mask …)
])

KINDS = ("saliency", "scores")
MISCLASSIFIED = "misclassified: the model's top-1 class is not the label's (explain: correct)"  # the reason an
# image is excluded, not skipped: the spec explains only correctly classified images


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")  # what a dataset, architecture or run may be called


def _check_name(kind: str, value: str) -> str:
    """``value`` if it can name a partition directory as it is (no '/', '=', '%', glob or space characters)."""
    if not isinstance(value, str) or NAME.fullmatch(value) is None:
        raise ValueError(f"{kind} name {value!r} cannot be used as a partition directory (letters, digits and "
                         "_ . + - only, not first)")
    return value


def saliency_table(run: str, method: str, image_ids: Sequence[str], targets: Sequence[int], maps: np.ndarray,
                   seconds: Sequence[float]) -> pa.Table:
    """Rows of one method's (B, U, V) maps, each stored as float16 ``map / scale`` with ``scale = max|map|``."""
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim != 3 or maps.shape[0] != len(image_ids):
        raise ValueError(f"maps must be (B, U, V) with B = {len(image_ids)} image ids, got {maps.shape}")
    with np.errstate(invalid="ignore"):
        scale = np.abs(maps).reshape(len(maps), -1).max(axis=1)
    divisor = np.where((scale > 0) & np.isfinite(scale), scale, 1.0).astype(np.float32)
    coded = (maps / divisor[:, None, None]).astype("<f2")
    batch = len(image_ids)
    return pa.table({
        "run": [run] * batch, "method": [method] * batch, "image_id": list(image_ids),
        "target": np.asarray(targets, dtype=np.int64), "map_height": np.full(batch, maps.shape[1], np.int32),
        "map_width": np.full(batch, maps.shape[2], np.int32), "scale": divisor,
        "map": [row.tobytes() for row in coded], "seconds": np.asarray(seconds, dtype=np.float64),
    }, schema=SALIENCY_SCHEMA)


def decode_maps(frame: pl.DataFrame) -> "torch.Tensor":  # noqa: F821
    """The (N, U, V) float32 maps of saliency rows (all rows must share one map shape)."""
    import torch

    shapes = frame.select("map_height", "map_width").unique()
    if shapes.height != 1:
        raise ValueError(f"rows hold maps of {shapes.height} different shapes; select one method/architecture")
    height, width = shapes.row(0)
    values = np.frombuffer(b"".join(frame["map"].to_list()), dtype="<f2").astype(np.float32)
    maps = values.reshape(frame.height, height, width) * frame["scale"].to_numpy()[:, None, None]
    return torch.from_numpy(maps)


@dataclass(frozen=True)
class InFlight:
    """A batch a worker started and has not returned: its images, the method it is computing (``None`` before the
    first and after the last) and how many of the cell's methods it has finished on them."""

    images: tuple[str, ...]
    method: str | None = None
    methods_done: int = 0

    def to_json(self) -> bytes:
        return json.dumps({"images": list(self.images), "method": self.method,
                           "methods_done": self.methods_done}).encode()

    @classmethod
    def from_json(cls, data: bytes) -> InFlight:
        value = json.loads(data)
        return cls(tuple(value["images"]), value["method"], int(value["methods_done"]))


class RunInUseError(RuntimeError):
    """Another process is writing into this run directory."""


@dataclass(frozen=True)
class RunStore:
    """One run directory (a local path or an object-store URI) and its result datasets."""

    location: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "location", os.fspath(self.location))

    @cached_property
    def _fs(self) -> tuple[pafs.FileSystem, str]:
        return resolve(self.location)

    def _cell_dir(self, kind: str, dataset: str, architecture: str) -> str:
        _, root = self._fs
        return join(root, kind, f"dataset={_check_name('dataset', dataset)}",
                    f"architecture={_check_name('architecture', architecture)}")

    def part_path(self, kind: str, dataset: str, architecture: str, shard: int) -> str:
        if kind not in KINDS:
            raise ValueError(f"unknown result kind {kind!r}; known: {KINDS}")
        return join(self._cell_dir(kind, dataset, architecture), f"shard-{shard:05d}.parquet")

    @contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run directory for one writer: a second run into it fails at once, naming the holder.

        A local directory is locked with ``flock`` on ``.lock`` (released by the system when the holder
        exits, however it exits); an object store has no such lock, and its runs are not guarded."""
        filesystem, root = self._fs
        if not is_local(filesystem):
            yield
            return
        path = os.path.join(root, ".lock")
        try:
            os.makedirs(root, exist_ok=True)
            descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:  # a read-only folder, a file in the way, a full disk
            raise OSError(f"{self.location}: cannot write the run directory ({err.strerror or err}); "
                          "give another --out") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(descriptor, 4096, 0).decode(errors="replace").strip() or "another process"
                raise RunInUseError(f"{self.location} is in use by another camgrid run ({holder}); wait for it to "
                                    "finish or give another --out") from None
            os.ftruncate(descriptor, 0)
            os.pwrite(descriptor, f"pid {os.getpid()} on {socket.gethostname()}".encode(), 0)
            yield
        finally:
            os.close(descriptor)  # releases the lock

    # -- writing ---------------------------------------------------------------------------------

    def write_shard(self, dataset: str, architecture: str, shard: int, saliency: pa.Table, scores: pa.Table,
                    skipped: Mapping[str, str] | None = None) -> int:
        """Write one shard's saliency and score parts (scores last: their presence marks the shard done), after the
        reasons of its images that could not be evaluated (``skipped``: image id → why).

        Returns the bytes written. Rewriting a shard replaces both parts, never appends.
        """
        filesystem, _ = self._fs
        written = 0
        path = self._skipped_path(dataset, architecture, shard)
        if skipped:
            payload = json.dumps(dict(sorted(skipped.items())), ensure_ascii=False).encode()
            written += len(payload)
            atomic_write_bytes(filesystem, path, payload)
        elif exists(filesystem, path):  # the shard's images read this time
            filesystem.delete_file(path)
        for kind, table, schema in (("saliency", saliency, SALIENCY_SCHEMA), ("scores", scores, SCORES_SCHEMA)):
            table = table.select(schema.names).cast(schema)
            written += atomic_write_table(filesystem, self.part_path(kind, dataset, architecture, shard), table)
        return written

    def _skipped_path(self, dataset: str, architecture: str, shard: int) -> str:
        _, root = self._fs
        return join(root, "skipped", f"dataset={_check_name('dataset', dataset)}",
                    f"architecture={_check_name('architecture', architecture)}", f"shard-{shard:05d}.json")

    def skipped_images(self) -> pl.DataFrame:
        """The images of written shards that could not be evaluated: dataset, architecture, shard, image_id, reason."""
        filesystem, root = self._fs
        rows = []
        for path in list_files(filesystem, join(root, "skipped"), ".json"):
            parts = path.rsplit("/", 3)[-3:]
            dataset, architecture = (part.split("=", 1)[1] for part in parts[:2])
            shard = int(parts[2][6:11])
            if not self.shard_done(dataset, architecture, shard):
                continue  # a shard being redone
            for image_id, reason in json.loads(read_file(filesystem, path)).items():
                rows.append({"dataset": dataset, "architecture": architecture, "shard": shard, "image_id": image_id,
                             "reason": reason})
        schema = {"dataset": pl.String, "architecture": pl.String, "shard": pl.Int32, "image_id": pl.String,
                  "reason": pl.String}
        return pl.DataFrame(rows, schema=schema).sort("dataset", "architecture", "image_id")

    def shard_done(self, dataset: str, architecture: str, shard: int) -> bool:
        return shard in self.done_shards(dataset, architecture)

    def done_shards(self, dataset: str, architecture: str) -> set[int]:
        filesystem, _ = self._fs
        found: list[set[int]] = []
        for kind in KINDS:
            selector = pafs.FileSelector(self._cell_dir(kind, dataset, architecture), allow_not_found=True)
            names = [info.base_name for info in filesystem.get_file_info(selector)]
            found.append({int(n[6:11]) for n in names if n.startswith("shard-") and n.endswith(".parquet")})
        return {shard for shard in found[0] & found[1] if self._readable(dataset, architecture, shard)}

    def _readable(self, dataset: str, architecture: str, shard: int) -> bool:
        """Whether both parts of a shard are whole Parquet files (a damaged part is redone, never trusted)."""
        filesystem, _ = self._fs
        for kind in KINDS:
            try:
                pq.read_metadata(self.part_path(kind, dataset, architecture, shard), filesystem=filesystem)
            except (OSError, pa.ArrowInvalid):
                return False
        return True

    def _marker_path(self, dataset: str, architecture: str) -> str:
        _, root = self._fs
        return join(root, "cells", f"dataset={_check_name('dataset', dataset)}",
                    f"architecture={_check_name('architecture', architecture)}.json")

    def mark_cell_done(self, dataset: str, architecture: str, marker: CellMarker) -> None:
        filesystem, _ = self._fs
        path = self._marker_path(dataset, architecture)
        atomic_write_bytes(filesystem, path, marker.model_dump_json(indent=2).encode())

    def cell_done(self, dataset: str, architecture: str) -> CellMarker | None:
        """The cell's success marker, or ``None`` while it is not finished."""
        filesystem, _ = self._fs
        path = self._marker_path(dataset, architecture)
        return CellMarker.model_validate_json(read_file(filesystem, path)) if exists(filesystem, path) else None

    def _in_flight_dir(self, dataset: str, architecture: str) -> str:
        _, root = self._fs
        return join(root, "inflight", f"dataset={_check_name('dataset', dataset)}",
                    f"architecture={_check_name('architecture', architecture)}")

    def mark_in_flight(self, dataset: str, architecture: str, worker: str, batch: InFlight) -> None:
        """Record the batch ``worker`` (``host-pid``) is on: what a crash of its process leaves, and how far it is."""
        filesystem, _ = self._fs
        path = join(self._in_flight_dir(dataset, architecture), f"{worker}.json")
        atomic_write_bytes(filesystem, path, batch.to_json())

    def clear_in_flight(self, dataset: str, architecture: str, worker: str | None = None) -> None:
        """Forget what ``worker`` (every worker: ``None``) of the cell was working on."""
        filesystem, _ = self._fs
        folder = self._in_flight_dir(dataset, architecture)
        paths = ([join(folder, f"{worker}.json")] if worker is not None
                 else list_files(filesystem, folder, ".json"))
        for path in paths:
            try:
                filesystem.delete_file(path)
            except (FileNotFoundError, OSError):
                pass

    def in_flight(self, dataset: str, architecture: str) -> dict[str, InFlight]:
        """``worker → batch`` of the batches the cell's workers started and did not finish."""
        filesystem, _ = self._fs
        out = {}
        for path in list_files(filesystem, self._in_flight_dir(dataset, architecture), ".json"):
            try:
                out[path.rsplit("/", 1)[1][: -len(".json")]] = InFlight.from_json(read_file(filesystem, path))
            except (FileNotFoundError, OSError, ValueError, KeyError, TypeError):
                continue  # finished (and removed) while being listed, or being rewritten
        return out

    def _features_path(self, dataset: str, architecture: str) -> str:
        _, root = self._fs
        return join(root, "references", f"dataset={_check_name('dataset', dataset)}",
                    f"architecture={_check_name('architecture', architecture)}", "features.parquet")

    def write_reference_features(self, dataset: str, architecture: str, table: pa.Table) -> int:
        """Store a cell's reference features (``image_id``, ``pool``, ``features`` float32 ``(K,)``), atomically."""
        filesystem, _ = self._fs
        table = table.select(REFERENCE_FEATURES_SCHEMA.names)
        if not table.schema.field("features").type.value_type.equals(pa.float32()):
            raise TypeError(f"reference features must be float32, got {table.schema.field('features').type}")
        return atomic_write_table(filesystem, self._features_path(dataset, architecture), table)

    def reference_features(self, dataset: str, architecture: str) -> pa.Table | None:
        """The cell's stored reference features, or ``None`` when the stage has not run yet."""
        filesystem, _ = self._fs
        path = self._features_path(dataset, architecture)
        if not exists(filesystem, path):
            return None
        return pq.read_table(path, filesystem=filesystem)

    def write_record(self, record: RunRecord) -> None:
        filesystem, root = self._fs
        atomic_write_bytes(filesystem, join(root, "run.json"), record.model_dump_json(indent=2).encode())

    def read_record(self) -> RunRecord:
        """The run record; ``FileNotFoundError`` when there is none, ``ValueError`` naming the file when it
        does not parse."""
        filesystem, root = self._fs
        path = join(root, "run.json")
        try:
            return RunRecord.model_validate_json(read_file(filesystem, path))
        except ValidationError as err:
            problem = err.errors()[0]
            where = ".".join(str(p) for p in problem["loc"]) or "the record"
            raise ValueError(f"{join(self.location, 'run.json')}: {where}: {problem['msg']}") from None

    # -- reading ---------------------------------------------------------------------------------

    def scan(self, kind: str) -> pl.LazyFrame:
        """A lazy Polars scan of ``saliency`` or ``scores``, with ``dataset`` and ``architecture`` columns."""
        if kind not in KINDS:
            raise ValueError(f"unknown result kind {kind!r}; known: {KINDS}")
        filesystem, root = self._fs
        if not exists(filesystem, join(root, kind)):
            raise FileNotFoundError(f"no {kind} results under {self.location}")
        scheme = self.location.split("://", 1)[0] + "://" if "://" in self.location else ""
        files = [scheme + path for path in list_files(filesystem, join(root, kind), ".parquet")]
        if not files:
            raise FileNotFoundError(f"no {kind} results under {self.location}")
        schema = {"dataset": pl.String, "architecture": pl.String}
        # the parts are listed, not globbed: a run directory may hold '[', '*' or '?' in its name
        return pl.scan_parquet(files, hive_partitioning=True, hive_schema=schema, glob=False)

    def scores(self) -> pl.LazyFrame:
        return self.scan("scores")

    def saliency(self) -> pl.LazyFrame:
        return self.scan("saliency")

    def maps(self, *, dataset: str, architecture: str, method: str,
             image_ids: Sequence[str] | None = None) -> tuple[list[str], "torch.Tensor"]:  # noqa: F821
        """``(image_ids, maps (N, U, V))`` of one method in one cell, in image-id order."""
        query = self.saliency().filter((pl.col("dataset") == dataset) & (pl.col("architecture") == architecture)
                                       & (pl.col("method") == method))
        if image_ids is not None:
            query = query.filter(pl.col("image_id").is_in(list(image_ids)))
        frame = query.sort("image_id").collect()
        if frame.height == 0:
            raise KeyError(f"no saliency maps for method {method!r} in cell {dataset}/{architecture}")
        return frame["image_id"].to_list(), decode_maps(frame)
