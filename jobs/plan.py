"""Expand a grid spec into cells: per (dataset, architecture), the manifest shards and images to run.

Planning happens on the driver before Ray starts, so a bad manifest, label space or spec field
fails in seconds with a message that names it. Per dataset, seeded class-stratified draws
(:mod:`storage.sampling`) take the reference images from its reference source (a separate
manifest, normally the train split, or else held out of the dataset's own manifest and never
explained) and split them into two disjoint pools: ``fit``, which Expected Grad-CAM's
perturbations draw from, and ``held_out``, which ``cam_infidelity`` scores on. The ``samples``
images to explain come from the rest; every architecture of a dataset sees the same images.
Plans carry image ids only: the actors read the images (and the stored reference features) themselves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from attribution.models.config import ModelConfig
from attribution.models.registry import check_weights, predicts_imagenet
from attribution.models.weights import checkpoint_digest, checkpoint_path
from attribution.needs import POOLS, Need, reference_pool_of
from jobs.spec import ArchitectureSpec, ComponentSpec, DatasetSpec, Explain, GridSpec, SpecError, Target
from storage.files import list_files, resolve
from storage.manifest import Manifest, read_manifest
from storage.sampling import hash_key, select_stratified

__all__ = ["CellPlan", "ReferencePlan", "plan_cells", "image_seed", "open_manifest", "model_config",
           "reference_pools", "regime_warnings"]

IMAGE_COLUMNS = ["image_id", "label", "label_name", "image", "image_uri", "mask", "boxes", "width", "height", "shard"]
REFERENCE_COLUMNS = ["image_id", "image", "image_uri"]
_DRIVER_NEEDS = frozenset({Need.SHARD, Need.BOXES})  # what a whole-shard metric gets: the stored maps and the boxes


@dataclass(frozen=True)
class ReferencePlan:
    """A dataset's reference images: where they are and which ids go to which pool (no image bytes)."""

    manifest: str
    files: Mapping[int, str]  # shard → manifest part holding reference images
    pools: Mapping[str, tuple[str, ...]]  # "fit" / "held_out" → image ids, sorted; disjoint
    note: str | None = None  # why the pools are smaller than the spec asked for

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(sorted(i for ids in self.pools.values() for i in ids))


@dataclass(frozen=True)
class CellPlan:
    """Everything an actor needs to evaluate one cell, as plain picklable data."""

    run: str
    dataset: str
    architecture: str
    model: ModelConfig
    manifest: str
    files: Mapping[int, str]  # shard → manifest part (path or URI)
    images: Mapping[int, tuple[str, ...]]  # shard → image ids to explain, sorted
    target: Target  # the class each stored map explains: the label (through ``classes``) or the prediction
    classes: Mapping[int, int] | None  # manifest label → model class; None where nothing reads the label
    references: ReferencePlan | None  # None: no method or metric draws reference images
    methods: Mapping[str, ComponentSpec]
    metrics: Mapping[str, ComponentSpec]
    seed: int
    batch_size: int
    location: str = ""  # the run directory (the actors read the cell's stored reference features from it)
    digest: str = ""  # of what the cell's results depend on beyond the spec: images, references, weights
    explain: Explain = "all"  # "correct": the images the model misclassifies are excluded

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.architecture}"

    def for_actors(self) -> CellPlan:
        """The plan without its reference image ids, for the actors' constructors: they read the cell's
        stored reference features, which the driver has checked against those ids, and the
        constructor arguments stay small whatever the pool size."""
        if self.references is None:
            return self
        return replace(self, references=replace(self.references, files={}, pools={}))

    def targets_of(self, kind: Target, labels: Iterable[int], predicted: Iterable[int]) -> list[int]:
        """The model classes that maps of target ``kind`` explain, for images of these labels and predictions."""
        if kind == "predicted":
            return list(predicted)
        if self.classes is None:
            raise ValueError(f"cell {self.name}: no label → class mapping was planned for label targets")
        return [self.classes[label] for label in labels]

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.images.values())


def image_seed(seed: int, dataset: str, architecture_name: str, image_id: str) -> int:
    """The seed of every random draw for one image in one cell: a hash of (run seed, cell, image id)."""
    return int.from_bytes(hash_key(seed, f"{dataset}\x1f{architecture_name}\x1f{image_id}"), "little") >> 1


def open_manifest(spec: GridSpec, dataset: DatasetSpec) -> Manifest:
    """The dataset's manifest (``bundled:demo`` is built into the cache on first use)."""
    return _open(spec, dataset, spec.manifest_location(dataset), "manifest")


def _shard_files(manifest: Manifest) -> dict[int, str]:
    filesystem, path = resolve(manifest.location)
    files = [path] if filesystem.get_file_info(path).type.name == "File" else list_files(filesystem, path, ".parquet")
    scheme = manifest.location.split("://", 1)[0] + "://" if "://" in manifest.location else ""
    by_shard: dict[int, str] = {}
    for file in files:
        shards = pc.unique(pq.read_table(file, columns=["shard"], filesystem=filesystem).column("shard")).to_pylist()
        for shard in shards:
            if shard in by_shard:
                raise SpecError(f"manifest {manifest.location}: shard {shard} is split over two files")
            by_shard[shard] = scheme + file
    return by_shard


def _label_classes(
    spec: GridSpec, dataset: DatasetSpec, arch: ArchitectureSpec, manifest: Manifest, num_classes: int
) -> dict[int, int] | None:
    """Manifest label → model class, where the dataset's target or a metric's is the label, or only correctly
    classified images are explained; else ``None``."""
    by_label = [m.name for m in spec.metrics.values() if m.target == "label"]
    if dataset.target == "predicted" and not by_label and dataset.explain == "all":
        return None
    where = f"{spec.source}: datasets.{dataset.name}"
    if dataset.target == "predicted":
        where += (f" (metric {by_label[0]} explains the label)" if by_label
                  else " (explain: correct compares the prediction with the label)")
    if dataset.classes is not None:
        missing = sorted(set(manifest.class_names) - set(dataset.classes))
        if missing:
            raise SpecError(f"{where}.classes: no model class for label {missing[0]!r} of manifest {manifest.location}")
        mapping = {i: int(dataset.classes[name]) for i, name in enumerate(manifest.class_names)}
    elif len(manifest.class_names) == num_classes:
        mapping = {i: i for i in range(num_classes)}
    else:
        raise SpecError(
            f"{where}: its manifest has {len(manifest.class_names)} classes but architecture {arch.name} "
            f"predicts {num_classes}; map label names to model classes (datasets.{dataset.name}.classes) "
            "or explain the predicted class (target: predicted)"
        )
    bad = sorted({c for c in mapping.values() if not 0 <= c < num_classes})
    if bad:
        raise SpecError(f"{where}: model class {bad[0]} is outside architecture {arch.name}'s {num_classes} classes")
    return mapping


def _check_metric_targets(spec: GridSpec, dataset: DatasetSpec) -> None:
    """A metric of the whole shard scores the stored maps, which explain the dataset's target: it cannot take another."""
    for entry in spec.metrics.values():
        if entry.target not in (None, dataset.target) and Need.SHARD in entry.create().needs:
            raise SpecError(f"{spec.source}: metrics.{entry.name}.target: {entry.name} scores a whole shard of the stored "
                            f"maps, which explain datasets.{dataset.name}'s target ({dataset.target}); drop its target "
                            "or set the dataset's")


def _check_pooled_needs(spec: GridSpec) -> None:
    """A metric of the whole shard is computed by the driver, which holds the stored maps, the predictions and
    the ground-truth boxes, but no model or images: such a metric may need nothing else."""
    for entry in spec.metrics.values():
        needs = entry.create().needs
        if Need.SHARD in needs and needs - _DRIVER_NEEDS:
            raise SpecError(f"{spec.source}: metrics.{entry.name}: with {entry.params or 'its defaults'}, "
                            f"{entry.registered} compares the images of a whole shard and needs "
                            f"{', '.join(sorted(map(str, needs - _DRIVER_NEEDS)))}, which the job's driver does not "
                            "hold; choose parameters that score each image alone (SIC/AIC: aggregate: mean, whose "
                            "mean over the images is PAIR's mean aggregate)")


def reference_pools(spec: GridSpec) -> set[str]:
    """The reference pools the spec's methods and metrics draw from (``fit``, ``held_out``), as they declare."""
    needs = [entry.create().needs for entry in (*spec.methods.values(), *spec.metrics.values())]
    return {pool for pool in map(reference_pool_of, needs) if pool is not None}


def model_config(spec: GridSpec, dataset: DatasetSpec, arch: ArchitectureSpec, classes: int) -> ModelConfig:
    """The cell's model resolved once: weights for the cell, the target layer, and ``num_classes`` (the spec's;
    else 1000 for hub and packaged weights, which predict ImageNet's classes, else the manifest's ``classes``)."""
    weights = spec.weights_for(dataset, arch)
    num_classes = arch.num_classes or (1000 if predicts_imagenet(weights) else classes)
    config = ModelConfig.resolve(arch.model, weights, layer=arch.layer, num_classes=num_classes,
                                 input_size=arch.input_size)
    try:
        config.check_layer()
    except ValueError as err:
        raise SpecError(f"{spec.source}: architectures.{arch.name}.layer: {err}") from None
    try:
        check_weights(config.name, config.weights, config.num_classes)
    except ValueError as err:
        raise SpecError(f"{spec.source}: architectures.{arch.name}.weights: {err}") from None
    return config


def _channels(arch: ArchitectureSpec) -> int | None:
    return ModelConfig.resolve(arch.model, layer=arch.layer).channels


def _pool_sizes(spec: GridSpec, pools: set[str]) -> dict[str, int]:
    """Images per pool: the spec's sizes, ``auto`` resolved from the grid's largest ``K``."""
    sizes = {"fit": spec.references.pool, "held_out": spec.references.held_out}
    if any(sizes[p] == "auto" for p in pools):
        channels = {a.name: _channels(a) for a in spec.architectures}
        unknown = [name for name, k in channels.items() if k is None]
        if unknown:
            raise SpecError(
                f"{spec.source}: references: architecture {unknown[0]} has no known channel count K for "
                "'auto' reference pools; give references.pool and references.held_out as numbers"
            )
        k = max(channels.values())
        sizes = {"fit": 2 * k if sizes["fit"] == "auto" else sizes["fit"],
                 "held_out": k if sizes["held_out"] == "auto" else sizes["held_out"]}
    return {p: int(sizes[p]) if p in pools else 0 for p in POOLS}


def _pick(spec: GridSpec, items: list[dict[str, Any]], n: int | None, salt: int) -> list[dict[str, Any]]:
    return select_stratified(items, n, spec.seed + salt, label=lambda r: r["label"], key=lambda r: r["image_id"],
                             accept=lambda r: r)


def _reference_plan(spec: GridSpec, dataset: DatasetSpec, manifest: Manifest, sizes: dict[str, int],
                    explained: set[str]) -> ReferencePlan | None:
    """Draw the dataset's reference pools from its reference source (or from its own manifest),
    never one of the ``explained`` images (a reference manifest may share images with the dataset's)."""
    wanted = sum(sizes.values())
    if wanted == 0:
        return None
    location = spec.reference_location(dataset)
    source = manifest if location is None else _open(spec, dataset, location, "references", wanted)
    rows = [r for r in source.table.select(["image_id", "label", "shard"]).to_pylist()
            if r["image_id"] not in explained]
    sizes, note = _fit_to_source(spec, dataset, source.location, location is None, len(rows), sizes)
    chosen = _pick(spec, rows, sum(sizes.values()), 2)
    fit = {r["image_id"] for r in _pick(spec, chosen, sizes["fit"], 3)} if sizes["fit"] else set()
    held_out = sorted(r["image_id"] for r in chosen if r["image_id"] not in fit)
    pools = {"fit": tuple(sorted(fit)), "held_out": tuple(held_out)}
    shards = {r["shard"] for r in chosen}
    files = _shard_files(source)
    return ReferencePlan(source.location, {s: files[s] for s in sorted(shards)}, pools, note)


def _fit_to_source(spec: GridSpec, dataset: DatasetSpec, source: str, held_in_manifest: bool, images: int,
                   sizes: dict[str, int]) -> tuple[dict[str, int], str | None]:
    """The pool sizes the source can give: ``auto`` pools shrink in proportion (with a note saying so);
    explicit sizes the source cannot give are an error."""
    # held out of the manifest: leave the samples to explain (all images: half the manifest at least)
    available = images - (spec.samples if spec.samples is not None else images // 2) if held_in_manifest else images
    wanted = sum(sizes.values())
    if available >= wanted:
        return sizes, None
    explicit = (spec.references.pool != "auto" and sizes["fit"]) or (spec.references.held_out != "auto"
                                                                       and sizes["held_out"])
    if explicit or available < sum(1 for n in sizes.values() if n):
        where = f"{spec.source}: datasets.{dataset.name}"
        if held_in_manifest:
            raise SpecError(
                f"{where}: manifest {source} has {images} images, fewer than the {wanted} reference images + "
                f"{spec.samples or images // 2} samples asked for; give datasets.{dataset.name}.references a reference "
                "manifest (its train split) or ask for fewer (references.pool, references.held_out)"
            )
        raise SpecError(f"{where}.references: {source} has {images} images, fewer than the {wanted} asked for "
                        "(references.pool + references.held_out)")
    shrunk = {p: max(1, int(n * available / wanted)) if n else 0 for p, n in sizes.items()}
    return shrunk, (f"{dataset.name}: its reference source {source} has {available} usable images, fewer than "
                    f"the {wanted} asked for; drawing {shrunk['fit']} + {shrunk['held_out']}")


def _select(spec: GridSpec, manifest: Manifest, excluded: set[str]) -> dict[int, tuple[str, ...]]:
    """The images to explain, per shard: ``samples`` drawn from the manifest without the ``excluded`` ids."""
    rows = [r for r in manifest.table.select(["image_id", "label", "shard"]).to_pylist()
            if r["image_id"] not in excluded]
    if spec.samples is not None and spec.samples > len(rows):
        held = f" after holding out {len(excluded)} reference images" if excluded else ""
        raise SpecError(
            f"{spec.source}: manifest {manifest.location} has {len(rows)} images{held}, fewer than the "
            f"{spec.samples} samples asked for"
        )
    images: dict[int, list[str]] = {}
    for row in _pick(spec, rows, spec.samples, 1):
        images.setdefault(row["shard"], []).append(row["image_id"])
    return {s: tuple(sorted(ids)) for s, ids in images.items()}


def _open(spec: GridSpec, dataset: DatasetSpec, location: str, field_name: str,
          images: int | None = None) -> Manifest:
    """The manifest at ``location``; a bundled reference pool is built (once, into the cache) with ``images``
    crops: the pools' size, all of which are drawn."""
    if location.startswith("bundled:"):
        from storage.builders import demo_manifest, demo_references_manifest

        sized = {"n": images} if images else {}
        bundled = {"bundled:demo": demo_manifest,
                   "bundled:demo_references": lambda: demo_references_manifest(**sized)}
        if location not in bundled:
            raise SpecError(f"{spec.source}: datasets.{dataset.name}.{field_name}: unknown bundled manifest "
                            f"{location!r}; bundled: {', '.join(bundled)}")
        return bundled[location]()
    try:
        return read_manifest(location)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{spec.source}: datasets.{dataset.name}.{field_name}: {err}") from None


def regime_warnings(plans: list[CellPlan]) -> list[str]:
    """One line per (cell, method) whose ``M̂`` cannot reach rank ``K``: ``min(M, K, R + 1) < K`` (Prop. B.1)."""
    lines = list(dict.fromkeys(p.references.note for p in plans if p.references and p.references.note))
    for plan in plans:
        if plan.model.channels is None or plan.references is None:
            continue
        k, r = plan.model.channels, len(plan.references.pools["fit"])
        for name, entry in plan.methods.items():
            method = entry.create()
            m = method.perturbations(k)
            if method.reference_pool != "fit" or m is None:
                continue
            bound = min(m, k, r + 1)
            if bound < k:
                lines.append(
                    f"{plan.name}: {name} draws M = {m} perturbations from R = {r} reference images but the "
                    f"layer has K = {k} channels, so rank(M̂) ≤ {bound} < K: its weights are not the infidelity "
                    "optimum (App. B.2); give the dataset a reference manifest of ≥ K images (its train split)"
                )
    return lines


def _update(digest: hashlib.blake2b, value: Any) -> None:
    if isinstance(value, bytes):
        digest.update(len(value).to_bytes(8, "little") + value)
    else:
        digest.update(repr(value).encode() + b"\x1f")


def _images_digest(manifest: Manifest, ids: Iterable[str]) -> str:
    """A digest of images as the manifest holds them: ids, shards, labels, image bytes or URIs, masks, boxes."""
    table = manifest.table
    table = table.filter(pc.is_in(table.column("image_id"), value_set=pa.array(sorted(ids), pa.string())))
    table = table.sort_by("image_id")
    digest = hashlib.blake2b(digest_size=16)
    for column in ("image_id", "shard", "label", "image", "image_uri", "mask", "boxes"):
        if column in table.column_names:
            for value in table.column(column).to_pylist():
                _update(digest, value)
    return digest.hexdigest()


def _weights_digest(spec: GridSpec, arch: ArchitectureSpec, weights: str) -> str:
    """The weights source, and for a checkpoint the digest of its bytes (a missing file is an error here)."""
    path = checkpoint_path(weights)
    if path is None:
        return weights
    try:
        return f"{weights}#{checkpoint_digest(path)}"
    except FileNotFoundError as err:
        raise SpecError(f"{spec.source}: architectures.{arch.name}.weights: {err}") from None


def _cell_digest(images: str, references: ReferencePlan | None, model: ModelConfig, weights: str,
                 classes: Mapping[int, int] | None) -> str:
    digest = hashlib.blake2b(digest_size=16)
    for part in (images, None if references is None else references.pools, weights, model.layer, model.num_classes,
                 model.input_size, None if classes is None else sorted(classes.items())):
        _update(digest, part)
    return digest.hexdigest()


def plan_cells(spec: GridSpec, run: str, location: str = "") -> list[CellPlan]:
    """One plan per (dataset, architecture), in the spec's order; errors name the field or file."""
    plans = []
    sizes = _pool_sizes(spec, reference_pools(spec))
    _check_pooled_needs(spec)
    for dataset in spec.datasets:
        _check_metric_targets(spec, dataset)
        manifest = open_manifest(spec, dataset)
        if spec.reference_location(dataset) is None:  # held out of the manifest first, then the samples
            references = _reference_plan(spec, dataset, manifest, sizes, set())
            images = _select(spec, manifest, set(references.ids) if references else set())
        else:  # the samples first; the reference manifest's copies of them are never drawn
            images = _select(spec, manifest, set())
            explained = {i for ids in images.values() for i in ids}
            references = _reference_plan(spec, dataset, manifest, sizes, explained)
        files = _shard_files(manifest)
        explained_digest = _images_digest(manifest, (i for ids in images.values() for i in ids))
        for arch in spec.architectures:
            model = model_config(spec, dataset, arch, len(manifest.class_names))
            classes = _label_classes(spec, dataset, arch, manifest, model.num_classes)
            weights = _weights_digest(spec, arch, model.weights)
            plans.append(
                CellPlan(
                    run=run,
                    dataset=dataset.name,
                    architecture=arch.name,
                    model=model,
                    manifest=manifest.location,
                    files={s: files[s] for s in images},
                    images=images,
                    target=dataset.target,
                    classes=classes,
                    references=references,
                    methods=spec.methods,
                    metrics=spec.metrics,
                    seed=spec.seed,
                    batch_size=spec.batch_size,
                    location=location,
                    digest=_cell_digest(explained_digest, references, model, weights, classes),
                    explain=dataset.explain,
                )
            )
    return plans
