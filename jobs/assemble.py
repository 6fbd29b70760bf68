"""Driver side of a cell: gather the actors' rows per manifest shard and write each finished shard once.

Rows arrive in whatever order and grouping Ray Data produces; a retried task may deliver the
same (image, method) twice. Rows are keyed by (shard, image, method), so a repeat replaces its
twin (results are deterministic) and nothing is counted twice. An image the actor could not read
(it cannot be decoded, its mask does not fit it) comes as one ``skipped`` row with the reason: the
shard is complete without its rows, and the reason is written with the shard. When a shard holds every expected
(image, method), its pooled metrics (Sufficiency: the pool is the shard) are computed, and its
saliency and score parts are written atomically through :class:`storage.results.RunStore` — one
file per (cell, shard), replaced, never appended. A shard that is still incomplete when the
pipeline fails is simply not written, and the rerun redoes it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from attribution.needs import Need
from attribution.postprocess import scored_map
from evaluation import Batch
from jobs.evaluate import pooled_metrics
from jobs.plan import CellPlan
from storage.files import resolve
from storage.results import SALIENCY_SCHEMA, SCORES_SCHEMA, RunStore, saliency_table

__all__ = ["ShardAssembler"]


@dataclass
class ShardAssembler:
    """Collects one cell's output rows and writes every shard as soon as it is complete."""

    store: RunStore
    plan: CellPlan
    pending: set[int]  # shards still to write in this attempt
    rows: dict[int, dict[tuple[str, str], dict]] = field(default_factory=dict)
    skipped: dict[int, dict[str, str]] = field(default_factory=dict)  # shard → image id → why it was not evaluated
    written: list[int] = field(default_factory=list)
    images_done: int = 0  # images with every method's row in, written or not
    maps_done: int = 0  # (image, method) rows in, written or not
    bytes_written: int = 0
    write_seconds: float = 0.0

    def __post_init__(self) -> None:
        self.pooled = {name: self.plan.metrics[name].create() for name in pooled_metrics(self.plan)}
        self.methods = list(self.plan.methods)
        self.rectified = {name: type(entry.create()).rectified for name, entry in self.plan.methods.items()}
        self._per_image: dict[tuple[int, str], int] = {}
        self._shard_boxes: dict[int, dict[str, torch.Tensor]] = {}
        self._reported: set[str] = set()

    def add(self, batch: pa.Table) -> list[int]:
        """Take a batch of output rows; returns the shards this completed and wrote."""
        finished = []
        for row in batch.to_pylist():
            shard = row["shard"]
            if row["image_id"] not in self.plan.images.get(shard, ()):
                raise ValueError(
                    f"cell {self.plan.name}: unexpected row for image {row['image_id']!r} of shard {shard}"
                )
            if shard not in self.pending:  # a retried task repeating rows of a shard already written
                continue
            rows = self.rows.setdefault(shard, {})
            if row["skipped"] is not None:
                skipped = self.skipped.setdefault(shard, {})
                if row["image_id"] not in skipped:
                    skipped[row["image_id"]] = row["skipped"]
                    self.images_done += 1
                    self.maps_done += len(self.methods)
            else:
                key = (row["image_id"], row["method"])
                if key not in rows:  # a retried task's repeat replaces its twin without counting twice
                    self.maps_done += 1
                    self._per_image[(shard, row["image_id"])] = self._per_image.get((shard, row["image_id"]), 0) + 1
                    self.images_done += self._per_image[(shard, row["image_id"])] == len(self.methods)
                rows[key] = row
            evaluated = len(self.plan.images[shard]) - len(self.skipped.get(shard, {}))
            if len(rows) == evaluated * len(self.methods) and shard not in finished:
                finished.append(shard)
        for shard in finished:
            self._write(shard)
        return finished

    def new_skips(self) -> list[tuple[str, str]]:
        """``(image id, reason)`` of the skipped images that came in since the last call."""
        news = [(i, reason) for skipped in self.skipped.values() for i, reason in skipped.items()
                if i not in self._reported]
        self._reported.update(i for i, _ in news)
        return news

    def _write(self, shard: int) -> None:
        start = time.perf_counter()
        rows = self.rows.pop(shard)
        skipped = self.skipped.get(shard, {})
        ids = [image_id for image_id in self.plan.images[shard] if image_id not in skipped]
        saliency, scores = [], []
        for method in self.methods:
            if not ids:
                break
            group = [rows[(image_id, method)] for image_id in ids]
            height, width = group[0]["map_height"], group[0]["map_width"]
            maps = np.stack([np.frombuffer(r["map"], dtype="<f4").reshape(height, width) for r in group])
            targets = [r["target"] for r in group]
            saliency.append(saliency_table(self.plan.run, method, ids, targets, maps, [r["seconds"] for r in group]))
            columns = {"image_id": [], "target": [], "metric": [], "value": [], "seconds": []}
            per_batch = [{score["metric"]: score for score in r["scores"]} for r in group]
            for name in self.plan.metrics:
                if name in self.pooled:
                    values, seconds = self._pooled(name, maps, [r["predicted"] for r in group], shard, ids,
                                                   self.rectified[method])
                else:
                    values = [scores_of[name]["value"] for scores_of in per_batch]
                    seconds = [scores_of[name]["seconds"] for scores_of in per_batch]
                columns["image_id"] += ids
                columns["target"] += targets
                columns["metric"] += [name] * len(ids)
                columns["value"] += [float("nan") if v is None else v for v in values]
                columns["seconds"] += seconds
            count = len(columns["image_id"])
            scores.append(
                pa.table({"run": [self.plan.run] * count, "method": [method] * count, **columns}, schema=SCORES_SCHEMA)
            )
        self.bytes_written += self.store.write_shard(
            self.plan.dataset, self.plan.architecture, shard,
            pa.concat_tables(saliency) if saliency else SALIENCY_SCHEMA.empty_table(),
            pa.concat_tables(scores) if scores else SCORES_SCHEMA.empty_table(), skipped)
        self.pending.discard(shard)
        self.written.append(shard)
        self.write_seconds += time.perf_counter() - start

    def _pooled(self, name: str, coarse: np.ndarray, predicted: list[int], shard: int, ids: list[str],
                rectify: bool) -> tuple[list[float], list[float]]:
        """A pooled metric over the shard's maps, upsampled exactly as the actors upsample them (and the images'
        ground-truth boxes through the model's preprocessing, where the metric needs them)."""
        start = time.perf_counter()
        metric = self.pooled[name]
        maps = scored_map(torch.from_numpy(coarse.copy()), self.plan.model.image_size, rectify)
        boxes = self._boxes(shard, ids) if Need.BOXES in metric.needs else None
        values = metric(Batch(maps, predicted=torch.tensor(predicted), boxes=boxes)).tolist()
        return values, [(time.perf_counter() - start) / len(values)] * len(values)

    def _boxes(self, shard: int, ids: list[str]) -> tuple[torch.Tensor, ...]:
        """The ground-truth boxes of images ``ids`` of ``shard``, in the model's input coordinates."""
        if shard not in self._shard_boxes:
            filesystem, path = resolve(self.plan.files[shard])
            table = pq.read_table(path, columns=["image_id", "boxes", "width", "height"], filesystem=filesystem)
            preprocessing = self.plan.model.preprocessing
            self._shard_boxes = {shard: {
                row["image_id"]: preprocessing.boxes([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]]
                                                      for b in row["boxes"] or []], row["width"], row["height"])
                for row in table.to_pylist()}}
        return tuple(self._shard_boxes[shard][i] for i in ids)
