"""The per-batch work of a cell: decode images, compute every method's maps and every metric's scores.

:class:`CellEvaluator` is the callable class that Ray Data's ``map_batches`` runs in an actor pool
(it does not import Ray, so it runs in a notebook too). It loads its model once, on the GPU Ray
assigned it when there is one, and turns a batch of manifest rows into one output row per
(image, method): the raw coarse map (float32), the seconds it took, and one column per metric
score (``score:<metric>``) and time (``time:<metric>``). Pooled metrics (Sufficiency) compare the
images of a whole shard, so the driver computes them once the shard is complete
(:mod:`jobs.assemble`); the batch carries the predicted classes they need.

Seeds: every random draw of a method or metric for an image comes from
``image_seed(run seed, dataset, architecture, image_id)``, so results do not depend on the batch
size, the shard order or the number of actors.
"""

from __future__ import annotations

import inspect
import logging
import os
import time
import warnings
from typing import Any, Callable, Mapping

import numpy as np
import pyarrow as pa
import torch

from attribution.channel_scaling import RankDeficientWarning, reference_features
from attribution.methods import WeightedCAM, create_method
from attribution.models import LoadedModel, load_model
from attribution.models.preprocessing import Preprocessing
from attribution.postprocess import check_finite, relu, upsample
from evaluation import create_metric
from evaluation.registry import metric_class
from jobs.plan import POOLS, CellPlan, ReferencePlan, image_seed, preprocessing_for
from storage.manifest import decode_image, ground_truth_mask
from storage.results import RunStore

__all__ = ["CellEvaluator", "ReferenceFeaturizer", "check_reference_features", "features_by_pool", "output_schema",
           "pooled_metrics"]


def _bound(factory: Callable[..., Any], name: str, params: Mapping[str, Any], features: dict[str, torch.Tensor],
           black: tuple[float, ...]) -> Any:
    """A method or metric with what the job supplies: the features of the reference pool it declares
    (``reference_pool``) and, where it takes a ``baseline``, the model's true black ``−mean/std``."""
    instance = factory(name, **params)
    extra: dict[str, Any] = {}
    if instance.reference_pool is not None:
        extra["reference_features"] = features[instance.reference_pool]
    if "baseline" in inspect.signature(type(instance).__init__).parameters and "baseline" not in params:
        extra["baseline"] = black  # the image that is black after normalisation, as (x − mean) / std
    return factory(name, **params, **extra) if extra else instance


def pooled_metrics(plan: CellPlan) -> list[str]:
    """The plan's metrics that score a whole shard at once (computed by the driver)."""
    return [name for name in plan.metrics if metric_class(name).pooled]


def output_schema(plan: CellPlan) -> pa.Schema:
    """One row per (image, method): the raw map, its time, and every per-batch metric's score and time."""
    fields = [
        pa.field("image_id", pa.string()),
        pa.field("shard", pa.int32()),
        pa.field("method", pa.string()),
        pa.field("target", pa.int64()),
        pa.field("predicted", pa.int64()),
        pa.field("map_height", pa.int32()),
        pa.field("map_width", pa.int32()),
        pa.field("map", pa.binary()),
        pa.field("seconds", pa.float64()),
    ]
    pooled = pooled_metrics(plan)
    for name in plan.metrics:
        if name not in pooled:
            fields += [pa.field(f"score:{name}", pa.float64()), pa.field(f"time:{name}", pa.float64())]
    return pa.schema(fields)


def _load_cell_model(plan: CellPlan, torch_threads: int | None) -> tuple[torch.device, LoadedModel, Preprocessing]:
    """The cell's model on this actor's device (the GPU Ray assigned, if any) and its preprocessing."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cpu":  # Ray sets OMP_NUM_THREADS to the actor's (fractional) CPUs: 1
        torch.set_num_threads(torch_threads or os.cpu_count() or 1)
    loaded = load_model(plan.model, plan.weights, layer=plan.layer, num_classes=plan.num_classes, device=device)
    return device, loaded, preprocessing_for(plan.model, plan.layer, plan.input_size)


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
        self.device, self.loaded, self.preprocessing = _load_cell_model(plan, torch_threads)

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        images = torch.stack([self.preprocessing(decode_image(row)) for row in rows]).to(self.device)
        features = reference_features(self.loaded.model, self.loaded.layer, images, layout=self.loaded.layout)
        flat = pa.array(features.cpu().numpy().astype("<f4").ravel())
        column = pa.FixedSizeListArray.from_arrays(flat, features.shape[1]).cast(pa.list_(pa.float32()))
        return pa.table({"image_id": [row["image_id"] for row in rows], "features": column})


class CellEvaluator:
    """Ray Data ``map_batches`` callable: a batch of manifest rows → one row per (image, method)."""

    def __init__(self, plan: CellPlan, torch_threads: int | None = None):
        self.plan = plan
        # NaN reasons and rank diagnostics stay out of the driver's console: the report's nan_report.csv
        # lists every undefined score, and the driver prints each cell's M̂ diagnostics once
        logging.getLogger("evaluation").setLevel(os.environ.get("CAMGRID_METRIC_LOG_LEVEL", "ERROR"))
        warnings.filterwarnings("ignore", category=RankDeficientWarning)
        self.device, self.loaded, self.preprocessing = _load_cell_model(plan, torch_threads)
        features = self._reference_features()
        black = tuple(-m / s for m, s in zip(self.preprocessing.mean, self.preprocessing.std))
        self.methods = {name: _bound(create_method, name, params, features, black)
                        for name, params in plan.methods.items()}
        pooled = set(pooled_metrics(plan))
        self.metrics = {
            name: _bound(create_metric, name, params, features, black)
            for name, params in plan.metrics.items()
            if name not in pooled
        }
        self.schema = output_schema(plan)

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

    def _decode(self, rows: list[dict[str, Any]]) -> tuple[torch.Tensor, torch.Tensor | None, list[bool]]:
        images = torch.stack([self.preprocessing(decode_image(row)) for row in rows]).to(self.device)
        masks = [ground_truth_mask(row) for row in rows]
        has_mask = [m is not None for m in masks]
        stacked = None
        if any(has_mask):
            size = images.shape[-2:]
            stacked = torch.stack(
                [self.preprocessing.mask(m) if m is not None else torch.zeros(size, dtype=torch.bool) for m in masks]
            ).to(self.device)
        return images, stacked, has_mask

    def __call__(self, batch: pa.Table) -> pa.Table:
        rows = batch.to_pylist()
        ids = [row["image_id"] for row in rows]
        images, masks, has_mask = self._decode(rows)
        seeds = torch.tensor([image_seed(self.plan.seed, self.plan.dataset, self.plan.architecture, i) for i in ids])
        model, layer, layout = self.loaded.model, self.loaded.layer, self.loaded.layout
        with torch.no_grad():
            predicted = model(images).argmax(dim=1)
        if self.plan.targets is None:
            targets = predicted
        else:
            targets = torch.tensor([self.plan.targets[row["label"]] for row in rows], device=self.device)
        columns: dict[str, list] = {name: [] for name in self.schema.names}
        for name, method in self.methods.items():
            start = time.perf_counter()
            try:
                if isinstance(method, WeightedCAM):
                    raw, weights = method.maps_and_weights(model, layer, images, targets, seeds=seeds, layout=layout)
                else:
                    raw, weights = method(model, layer, images, targets, seeds=seeds, layout=layout), None
                check_finite(raw)
            except ValueError as err:
                raise ValueError(f"cell {self.plan.name}, method {name}, images {ids}: {err}") from err
            raw = raw.detach()
            maps = upsample(relu(raw), images.shape[-2:])
            seconds = (time.perf_counter() - start) / len(rows)
            scores = self._score(name, method, maps, weights, images, targets, masks, has_mask, seeds)
            coarse = raw.float().cpu().numpy()
            columns["image_id"] += ids
            columns["shard"] += [row["shard"] for row in rows]
            columns["method"] += [name] * len(rows)
            columns["target"] += targets.tolist()
            columns["predicted"] += predicted.tolist()
            columns["map_height"] += [coarse.shape[1]] * len(rows)
            columns["map_width"] += [coarse.shape[2]] * len(rows)
            columns["map"] += [m.astype("<f4").tobytes() for m in coarse]
            columns["seconds"] += [seconds] * len(rows)
            for metric, (values, metric_seconds) in scores.items():
                columns[f"score:{metric}"] += values
                columns[f"time:{metric}"] += [metric_seconds] * len(rows)
        return pa.table(columns, schema=self.schema)

    def _score(self, method_name, method, maps, weights, images, targets, masks, has_mask, seeds):
        """Every per-batch metric of one method's maps: ``metric → (values, seconds per image)``."""
        model, layer, layout = self.loaded.model, self.loaded.layer, self.loaded.layout

        def explainer(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            return upsample(relu(method(model, layer, x, t, layout=layout).detach()), x.shape[-2:])

        cache: dict = {}
        out = {}
        for name, metric in self.metrics.items():
            start = time.perf_counter()
            inputs = dict(
                images=images,
                model=model,
                targets=targets,
                explainer=explainer,
                seeds=seeds,
                method=method,
                layer=layer,
                weights=weights,
            )
            if "masks" in metric.needs and not all(has_mask):
                values = self._on_masked(metric, maps, masks, has_mask, inputs)
            else:
                values = metric(maps, masks=masks, cache=cache, **inputs).cpu().tolist()
            out[name] = (values, (time.perf_counter() - start) / len(maps))
        return out

    @staticmethod
    def _on_masked(metric, maps, masks, has_mask, inputs) -> list[float]:
        """A localisation metric on the images that have a ground-truth mask; NaN (logged) for the others."""
        values = [float("nan")] * len(maps)
        keep = [i for i, present in enumerate(has_mask) if present]
        logging.getLogger("evaluation").warning(
            "%s undefined for samples %s: no ground-truth mask",
            metric.name,
            [i for i, present in enumerate(has_mask) if not present],
        )
        if keep:
            index = torch.tensor(keep)
            subset = {
                k: (v[index.to(v.device)] if isinstance(v, torch.Tensor) else v)
                for k, v in inputs.items()
                if k != "weights"
            }
            scored = metric(maps[index.to(maps.device)], masks=masks[index.to(masks.device)], **subset).cpu().tolist()
            for i, value in zip(keep, scored):
                values[i] = value
        return values
