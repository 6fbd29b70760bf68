"""The per-batch work of a cell: decode images, compute every method's maps and every metric's scores.

:class:`CellEvaluator` is the callable class that Ray Data's ``map_batches`` runs in an actor pool
(it does not import Ray, so it runs in a notebook too: :func:`evaluate_in_process`). It loads its
model once, on the GPU Ray assigned it when there is one, and turns a batch of manifest rows into
one row per (image, method) of :data:`storage.results.ROWS_SCHEMA`: the raw coarse map, the
seconds it took and every per-batch metric's score. Metrics that compare the images of a whole
shard (``Need.SHARD``) are computed by the driver once the shard is complete (:mod:`jobs.assemble`).
An image that cannot be read comes as one skipped row with the reason; so does, with the reason
:data:`storage.results.MISCLASSIFIED`, one the model misclassifies where the dataset explains only correct ones.

What a method or metric needs is supplied by one rule per need (:class:`attribution.needs.Need`):
a reference pool's stored features as its ``reference_features``, and everything else through the
:class:`evaluation.Batch` each method's maps are scored in — the model, targets, masks, the
model's normalisation and black, the channel weights and the method re-run as the explainer. No method or metric is
named here.

Seeds: every random draw of a method or metric for an image comes from
``image_seed(run seed, dataset, architecture, image_id)``, so results do not depend on the batch
size, the shard order or the number of actors.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from attribution.channel_scaling import RankDeficientWarning, reference_features
from attribution.methods import Attribution, BoundMethod, CAMMethod
from attribution.models import LoadedModel, Preprocessing
from attribution.needs import POOLS, Need
from attribution.postprocess import check_finite
from evaluation import Batch, Metric
from jobs.devices import compute_device
from jobs.plan import IMAGE_COLUMNS, CellPlan, ReferencePlan, image_seed
from jobs.spec import ComponentSpec, Target
from storage.files import resolve
from storage.manifest import CorruptImageError, decode_image, ground_truth_mask
from storage.results import MISCLASSIFIED, ROWS_SCHEMA, InFlight, RunStore

__all__ = ["CellEvaluator", "ReferenceFeaturizer", "check_reference_features", "evaluate_in_process",
           "features_by_pool", "pooled_metrics", "row_scores", "supplied"]

def supplied(entry: ComponentSpec, features: Mapping[str, torch.Tensor],
             black: tuple[float, ...] | None = None) -> CAMMethod | Metric:
    """A method or metric built from its spec entry, with what it needs at construction: the features of the
    reference pool it declares and, for a method that declares ``Need.BLACK`` (one that masks the pixel
    image), the model's black. A metric's other needs come in the :class:`evaluation.Batch` it scores."""
    instance = entry.create()
    inputs: dict[str, Any] = {}
    pool = instance.reference_pool
    if pool is not None:
        if pool not in features:
            raise ValueError(f"{entry.name} draws from the {pool!r} reference pool, which this cell has no features of")
        inputs["reference_features"] = features[pool]
    if entry.kind == "method" and Need.BLACK in instance.needs:
        if black is None:
            raise ValueError(f"{entry.name} masks the pixel image and needs the model's black image")
        inputs["black"] = black
    return entry.create(**inputs) if inputs else instance


def pooled_metrics(plan: CellPlan) -> list[str]:
    """The plan's metrics that score a whole shard at once (computed by the driver)."""
    return [name for name, entry in plan.metrics.items() if Need.SHARD in entry.create().needs]


def _load_cell_model(plan: CellPlan, torch_threads: int | None) -> tuple[torch.device, LoadedModel]:
    """The cell's model on this actor's device (the GPU Ray assigned, if any)."""
    device = torch.device(compute_device(None))
    if device.type == "cpu":  # Ray sets OMP_NUM_THREADS to the actor's (fractional) CPUs: 1
        torch.set_num_threads(torch_threads or os.cpu_count() or 1)
    return device, plan.model.load(device)


def check_reference_features(table: pa.Table, references: ReferencePlan, where: str) -> None:
    """Raise unless the stored features are exactly those of the planned reference images, in their pools."""
    stored = set(zip(table.column("image_id").to_pylist(), table.column("pool").to_pylist()))
    planned = {(i, pool) for pool, ids in references.pools.items() for i in ids}
    if len(stored) != table.num_rows or stored != planned:
        raise ValueError(f"{where}: the stored reference features are not those of this cell's reference images")


def features_by_pool(table: pa.Table) -> dict[str, torch.Tensor]:
    """Stored reference features as ``pool → (R, K)`` float32, rows in image-id order within a pool."""
    table = table.sort_by([("pool", "ascending"), ("image_id", "ascending")])
    values = table.column("features").combine_chunks()
    matrix = np.asarray(values.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    matrix = matrix.reshape(table.num_rows, -1)
    pools = np.asarray(table.column("pool").to_pylist())
    return {pool: torch.from_numpy(matrix[pools == pool]) for pool in POOLS if (pools == pool).any()}


class ReferenceFeaturizer:
    """Ray Data ``map_batches`` callable: reference manifest rows → ``h(x')`` of the cell's model (eq. 19).

    The first stage of a cell: the features of its reference images are computed once, on the
    cell's actors, and stored in the run directory; every evaluator of the cell reads them from there.
    """

    def __init__(self, plan: CellPlan, torch_threads: int | None = None):
        self.device, self.loaded = _load_cell_model(plan, torch_threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        images = torch.stack([self.loaded.preprocessing(decode_image(row)) for row in rows]).to(self.device)
        features = reference_features(self.loaded.model, self.loaded.layer, images, layout=self.loaded.layout)
        flat = pa.array(features.cpu().numpy().astype("<f4").ravel())
        column = pa.FixedSizeListArray.from_arrays(flat, features.shape[1]).cast(pa.list_(pa.float32()))
        return pa.table({"image_id": [row["image_id"] for row in rows], "features": column})


class CellEvaluator:
    """Ray Data ``map_batches`` callable: a batch of manifest rows → one row per (image, method), yielded
    method by method."""

    def __init__(self, plan: CellPlan, torch_threads: int | None = None):
        self.plan = plan
        # NaN reasons and rank diagnostics stay out of the driver's console: the report's nan_report.csv
        # lists every undefined score, and the driver prints each cell's M̂ diagnostics once
        logging.getLogger("evaluation").setLevel(os.environ.get("CAMGRID_METRIC_LOG_LEVEL", "ERROR"))
        warnings.filterwarnings("ignore", category=RankDeficientWarning)
        self.device, self.loaded = _load_cell_model(plan, torch_threads)
        features = self._reference_features()
        black = self.loaded.preprocessing.black
        self.methods = {name: supplied(entry, features, black) for name, entry in plan.methods.items()}
        pooled = set(pooled_metrics(plan))
        self.metrics = {name: supplied(entry, features) for name, entry in plan.metrics.items() if name not in pooled}
        self.metric_targets: dict[str, Target] = {name: plan.metrics[name].target or plan.target
                                                  for name in self.metrics}
        self.bound = {name: method.bind(self.loaded.model, self.loaded.layer, self.loaded.layout)
                      for name, method in self.methods.items()}

    @property
    def preprocessing(self) -> Preprocessing:
        """The cell's preprocessing (what its images go through before the model)."""
        return self.loaded.preprocessing

    def _reference_features(self) -> dict[str, torch.Tensor]:
        """The cell's stored ``h(x')`` per pool, on this actor's device (computed by the job's first stage)."""
        if self.plan.references is None:
            return {}
        if not self.plan.location:
            raise ValueError(f"cell {self.plan.name}: the plan has no run directory to read reference features from "
                             "(plan_cells(spec, run, location))")
        table = RunStore(self.plan.location).reference_features(self.plan.dataset, self.plan.architecture)
        if table is None:
            raise FileNotFoundError(f"cell {self.plan.name}: no stored reference features in {self.plan.location}")
        return {pool: features.to(self.device) for pool, features in features_by_pool(table).items()}

    # -- one batch ------------------------------------------------------------------------------------

    def _decode(self, rows: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], torch.Tensor | None,
                                                          list[torch.Tensor | None], tuple[torch.Tensor, ...],
                                                          dict[str, str]]:
        """The batch's rows that can be read, their images, ground-truth masks (``None`` where a row has none) and
        boxes (``(n, 4)``, maybe ``n = 0``), all through the model's preprocessing; and, per image id, why each
        other row cannot be read (its image or mask cannot be decoded or is missing, its mask has another size)."""
        preprocessing = self.loaded.preprocessing
        kept, images, masks, skipped = [], [], [], {}
        for row in rows:
            try:
                image, mask = decode_image(row), ground_truth_mask(row)
                if mask is not None and mask.shape != (image.height, image.width):
                    raise CorruptImageError(f"the mask of image {row['image_id']!r} is {mask.shape[1]}×{mask.shape[0]}"
                                            f" but the image is {image.width}×{image.height}")
            except (CorruptImageError, FileNotFoundError) as err:
                skipped[row["image_id"]] = str(err)
                continue
            kept.append(row)
            images.append(preprocessing(image))
            masks.append(None if mask is None else preprocessing.mask(mask).to(self.device))
        boxes = tuple(preprocessing.boxes([[b["xmin"], b["ymin"], b["xmax"], b["ymax"]] for b in row["boxes"] or []],
                                          row["width"], row["height"]).to(self.device) for row in kept)
        return kept, torch.stack(images).to(self.device) if images else None, masks, boxes, skipped

    def _skipped_rows(self, rows: list[dict[str, Any]], skipped: Mapping[str, str]) -> pa.Table:
        """One output row per image that cannot be evaluated: its id, shard and why."""
        return pa.Table.from_pylist([{"image_id": row["image_id"], "shard": row["shard"],
                                      "skipped": skipped[row["image_id"]]}
                                     for row in rows if row["image_id"] in skipped], schema=ROWS_SCHEMA)

    def __call__(self, batch: pa.Table) -> Iterator[pa.Table]:
        """The batch's output rows, one table per method as each method finishes (so progress moves within
        a batch)."""
        rows = batch.to_pylist()
        ids = [row["image_id"] for row in rows]
        store = RunStore(self.plan.location) if self.plan.location else None
        if store is None:
            yield from self._evaluate(rows, ids, lambda method, done: None)
            return

        # the batch's record tells the driver which method is being computed (Ray Data returns a batch's rows
        # only when the whole batch is done), and a crash of this process (killed, out of memory) leaves the ids
        # for the driver to name; an exception names them itself
        def mark(method: str | None, done: int) -> None:
            store.mark_in_flight(self.plan.dataset, self.plan.architecture, self.worker,
                                 InFlight(tuple(ids), method, done))

        mark(None, 0)
        try:
            yield from self._evaluate(rows, ids, mark)
        finally:
            store.clear_in_flight(self.plan.dataset, self.plan.architecture, self.worker)

    @property
    def worker(self) -> str:
        """This process as ``host-pid``."""
        return f"{socket.gethostname()}-{os.getpid()}"

    def _evaluate(self, rows: list[dict[str, Any]], ids: list[str],
                  mark: Callable[[str | None, int], None]) -> Iterator[pa.Table]:
        readable, images, masks, boxes, skipped = self._decode(rows)
        if skipped:
            yield self._skipped_rows(rows, skipped)
        if images is None:
            return
        with torch.no_grad():
            predicted = self.loaded.model(images).argmax(dim=1)
        if self.plan.explain == "correct":
            correct = predicted.eq(torch.tensor(self.plan.targets_of("label", [row["label"] for row in readable], []),
                                                device=predicted.device)).tolist()
            if not all(correct):
                yield self._skipped_rows(readable, {row["image_id"]: MISCLASSIFIED
                                                    for row, ok in zip(readable, correct) if not ok})
                keep = [i for i, ok in enumerate(correct) if ok]
                if not keep:
                    return
                index = torch.tensor(keep, device=images.device)
                readable, images, predicted = [readable[i] for i in keep], images[index], predicted[index]
                masks, boxes = [masks[i] for i in keep], tuple(boxes[i] for i in keep)
        rows, ids = readable, [row["image_id"] for row in readable]
        seeds = torch.tensor([image_seed(self.plan.seed, self.plan.dataset, self.plan.architecture, i) for i in ids])
        labels, predicted_list = [row["label"] for row in rows], predicted.tolist()
        kinds = dict.fromkeys([self.plan.target, *self.metric_targets.values()])
        targets_of = {kind: torch.tensor(self.plan.targets_of(kind, labels, predicted_list), device=self.device)
                      for kind in kinds}
        targets = targets_of[self.plan.target]
        target_list = targets.tolist()
        for done, (name, bound) in enumerate(self.bound.items()):
            mark(name, done)
            start = time.perf_counter()
            attribution = self._attribute(name, bound, images, targets, seeds, ids)
            seconds = (time.perf_counter() - start) / len(rows)
            batches = {self.plan.target: self._batch(attribution, images, seeds, predicted, bound, boxes)}
            for kind in kinds:
                if kind not in batches:
                    other = self._retargeted(name, bound, attribution, images, targets_of[kind], seeds, ids)
                    batches[kind] = (batches[self.plan.target] if other is attribution
                                     else self._batch(other, images, seeds, predicted, bound, boxes))
            scores = self._score(batches, masks)
            coarse = attribution.raw.float().cpu().numpy()
            yield pa.Table.from_pylist([
                {"image_id": ids[i], "shard": row["shard"], "method": name, "target": target_list[i],
                 "predicted": predicted_list[i], "map_height": coarse.shape[1], "map_width": coarse.shape[2],
                 "map": coarse[i].astype("<f4").tobytes(), "seconds": seconds,
                 "scores": [{"metric": metric, "value": values[i], "seconds": per_image}
                            for metric, (values, per_image) in scores.items()]}
                for i, row in enumerate(rows)], schema=ROWS_SCHEMA)

    def _attribute(self, name: str, bound: BoundMethod, images: torch.Tensor, targets: torch.Tensor,
                   seeds: torch.Tensor, ids: list[str]) -> Attribution:
        try:
            attribution = bound(images, targets, seeds=seeds)
            check_finite(attribution.raw)
        except ValueError as err:
            raise ValueError(f"cell {self.plan.name}, method {name}, images {ids}: {err}") from err
        return attribution

    def _retargeted(self, name: str, bound: BoundMethod, attribution: Attribution, images: torch.Tensor,
                    targets: torch.Tensor, seeds: torch.Tensor, ids: list[str]) -> Attribution:
        """``attribution`` explaining ``targets`` instead: recomputed for the images whose target differs."""
        differ = (targets != attribution.targets).nonzero().flatten()
        if len(differ) == 0:
            return attribution
        redo = self._attribute(name, bound, images[differ], targets[differ], seeds[differ.cpu()],
                               [ids[i] for i in differ.tolist()])
        raw = attribution.raw.clone()
        raw[differ] = redo.raw
        weights = None
        if attribution.weights is not None and redo.weights is not None:
            weights = attribution.weights.clone()
            weights[differ] = redo.weights
        return Attribution(raw, targets, weights, attribution.diagnostics)

    def _batch(self, attribution: Attribution, images: torch.Tensor, seeds: torch.Tensor, predicted: torch.Tensor,
               bound: BoundMethod, boxes: tuple[torch.Tensor, ...]) -> Batch:
        """What the metrics score for one method's maps: every input a metric may declare a need of."""
        return Batch(attribution.scored(tuple(images.shape[-2:])), images=images, targets=attribution.targets,
                     model=self.loaded.model, seeds=seeds, layer=bound.layer, layout=bound.layout,
                     weights=attribution.weights, explainer=bound.explainer(), predicted=predicted, boxes=boxes,
                     normalisation=self.loaded.preprocessing.normalisation)

    def _score(self, batches: Mapping[Target, Batch],
               masks: list[torch.Tensor | None]) -> dict[str, tuple[list[float], float]]:
        """Every per-batch metric of one method's maps: ``metric → (values, seconds per image)``.

        Each metric scores the batch of its target's maps (metrics of one target share its memo); those
        that need masks score the images that have one, and are NaN (logged) for the others."""
        out = {}
        for name, metric in self.metrics.items():
            batch = batches[self.metric_targets[name]]
            start = time.perf_counter()
            if Need.MASKS in metric.needs:
                values = self._on_masked(metric, batch, masks)
            else:
                values = metric(batch).cpu().tolist()
            out[name] = (values, (time.perf_counter() - start) / len(batch.maps))
        return out

    @staticmethod
    def _on_masked(metric: Metric, batch: Batch, masks: list[torch.Tensor | None]) -> list[float]:
        values = [float("nan")] * len(masks)
        keep = [i for i, mask in enumerate(masks) if mask is not None]
        if len(keep) < len(masks):
            logging.getLogger("evaluation").warning("%s undefined for samples %s: no ground-truth mask", metric.name,
                                                    [i for i, mask in enumerate(masks) if mask is None])
        if keep:
            subset = replace(batch.subset(keep), masks=torch.stack([masks[i] for i in keep]))
            for i, value in zip(keep, metric(subset).cpu().tolist()):
                values[i] = value
        return values


def _plan_rows(plan: CellPlan) -> pa.Table:
    """The manifest rows of the plan's images, read from its shard files."""
    wanted = pa.array(sorted(i for ids in plan.images.values() for i in ids))
    parts = []
    for shard in sorted(plan.images):
        filesystem, path = resolve(plan.files[shard])
        table = pq.read_table(path, columns=IMAGE_COLUMNS, filesystem=filesystem)
        parts.append(table.filter(pc.is_in(table.column("image_id"), value_set=wanted)))
    return pa.concat_tables(parts)


def evaluate_in_process(plan: CellPlan, batch_size: int | None = None,
                        evaluator: CellEvaluator | None = None) -> pa.Table:
    """The cell's output rows (:data:`storage.results.ROWS_SCHEMA`) from one evaluator in this process, no Ray:
    its images in batches of ``batch_size`` (default: the plan's)."""
    evaluator = evaluator or CellEvaluator(plan)
    rows = _plan_rows(plan)
    step = batch_size or plan.batch_size
    return pa.concat_tables([table for offset in range(0, rows.num_rows, step)
                             for table in evaluator(rows.slice(offset, step))])


def row_scores(rows: pa.Table) -> dict[tuple[str, str, str], float]:
    """``(image_id, method, metric) → value`` of output rows."""
    return {(row["image_id"], row["method"], score["metric"]): score["value"]
            for row in rows.to_pylist() for score in row["scores"]}
