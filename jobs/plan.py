"""Expand a grid spec into cells: per (dataset, architecture), the manifest shards and images to run.

Planning happens on the driver before Ray starts, so a bad manifest, label space or spec field
fails in seconds with a message that names it. Per dataset, a seeded class-stratified draw
(:mod:`storage.sampling`) first holds out the ``references`` (Expected Grad-CAM's and
``cam_infidelity``'s data-aware reference set, never explained themselves), then takes the
``samples`` images to explain from the rest; every architecture of a dataset sees the same images.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from attribution.models import architecture
from attribution.models.preprocessing import Preprocessing
from jobs.spec import PACKAGED_WEIGHTS, ArchitectureSpec, DatasetSpec, GridSpec, SpecError
from storage.files import list_files, resolve
from storage.manifest import Manifest, read_manifest
from storage.sampling import hash_key, select_stratified

__all__ = ["CellPlan", "plan_cells", "image_seed", "open_manifest", "preprocessing_for"]

IMAGE_COLUMNS = ["image_id", "label", "label_name", "image", "image_uri", "mask", "boxes", "width", "height", "shard"]


@dataclass(frozen=True)
class CellPlan:
    """Everything an actor needs to evaluate one cell, as plain picklable data."""

    run: str
    dataset: str
    architecture: str
    model: str
    weights: str
    layer: str | None
    input_size: int | None
    num_classes: int
    manifest: str
    files: Mapping[int, str]  # shard → manifest part (path or URI)
    images: Mapping[int, tuple[str, ...]]  # shard → image ids to explain, sorted
    targets: Mapping[int, int] | None  # manifest label → model class; None: explain the predicted class
    references: tuple[dict[str, Any], ...]  # manifest rows of the reference images
    methods: Mapping[str, Mapping[str, Any]]
    metrics: Mapping[str, Mapping[str, Any]]
    seed: int
    batch_size: int
    map_size: tuple[int, int] = field(default=(0, 0))  # the model's input side: maps are scored at this size

    @property
    def name(self) -> str:
        return f"{self.dataset}/{self.architecture}"

    @property
    def total(self) -> int:
        return sum(len(ids) for ids in self.images.values())


def image_seed(seed: int, dataset: str, architecture_name: str, image_id: str) -> int:
    """The seed of every random draw for one image in one cell: a hash of (run seed, cell, image id)."""
    return int.from_bytes(hash_key(seed, f"{dataset}\x1f{architecture_name}\x1f{image_id}"), "little") >> 1


def preprocessing_for(model: str, layer: str | None, input_size: int | None) -> Preprocessing:
    """The registry's preprocessing of ``model``, or a plain resize to ``input_size`` (e.g. CIFAR-10 at 96×96)."""
    base = architecture(model, layer).preprocessing()
    if input_size is None:
        return base
    return Preprocessing(input_size, input_size, base.mean, base.std, base.interpolation)


def open_manifest(spec: GridSpec, dataset: DatasetSpec) -> Manifest:
    """The dataset's manifest (``bundled:demo`` is built into the cache on first use)."""
    location = spec.manifest_location(dataset)
    if location == "bundled:demo":
        from storage.builders import demo_manifest

        return demo_manifest()
    try:
        return read_manifest(location)
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{spec.source}: datasets.{dataset.name}.manifest: {err}") from None


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


def _targets(
    spec: GridSpec, dataset: DatasetSpec, arch: ArchitectureSpec, manifest: Manifest, num_classes: int
) -> dict[int, int] | None:
    if dataset.target == "predicted":
        return None
    where = f"{spec.source}: datasets.{dataset.name}"
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


def _select(spec: GridSpec, manifest: Manifest) -> tuple[list[dict[str, Any]], dict[int, tuple[str, ...]]]:
    rows = manifest.table.select(["image_id", "label", "shard"]).to_pylist()
    wanted = spec.references + (spec.samples or 0)
    if spec.samples is not None and wanted > len(rows):
        raise SpecError(
            f"{spec.source}: manifest {manifest.location} has {len(rows)} images, fewer than the "
            f"{spec.references} references + {spec.samples} samples asked for"
        )
    if spec.references >= len(rows):
        raise SpecError(
            f"{spec.source}: references: {spec.references} of the manifest's {len(rows)} images "
            "would leave none to explain"
        )
    def pick(items: list[dict[str, Any]], n: int | None, salt: int) -> list[dict[str, Any]]:
        return select_stratified(items, n, spec.seed + salt, label=lambda r: r["label"], key=lambda r: r["image_id"],
                                 accept=lambda r: r)

    reference_ids = {r["image_id"] for r in pick(rows, spec.references, 0)} if spec.references else set()
    chosen = pick([r for r in rows if r["image_id"] not in reference_ids], spec.samples, 1)
    images: dict[int, list[str]] = {}
    for row in chosen:
        images.setdefault(row["shard"], []).append(row["image_id"])
    held_out = manifest.table.filter(
        pc.is_in(manifest.table.column("image_id"), value_set=pa.array(sorted(reference_ids), type=pa.string()))
    )
    references = held_out.select(["image_id", "image", "image_uri"]).to_pylist()
    return sorted(references, key=lambda r: r["image_id"]), {s: tuple(sorted(ids)) for s, ids in images.items()}


def plan_cells(spec: GridSpec, run: str) -> list[CellPlan]:
    """One plan per (dataset, architecture), in the spec's order; errors name the field or file."""
    plans = []
    for dataset in spec.datasets:
        manifest = open_manifest(spec, dataset)
        references, images = _select(spec, manifest)
        files = _shard_files(manifest)
        for arch in spec.architectures:
            weights = spec.weights_for(dataset, arch)
            num_classes = arch.num_classes or (
                1000
                if weights in PACKAGED_WEIGHTS or weights.startswith(("torchvision:", "timm"))
                else len(manifest.class_names)
            )
            size = preprocessing_for(arch.model, arch.layer, arch.input_size).crop
            plans.append(
                CellPlan(
                    run=run,
                    dataset=dataset.name,
                    architecture=arch.name,
                    model=arch.model,
                    weights=weights,
                    layer=arch.layer,
                    input_size=arch.input_size,
                    num_classes=num_classes,
                    manifest=manifest.location,
                    files={s: files[s] for s in images},
                    images=images,
                    targets=_targets(spec, dataset, arch, manifest, num_classes),
                    references=tuple(references),
                    methods=spec.methods,
                    metrics=spec.metrics,
                    seed=spec.seed,
                    batch_size=spec.batch_size,
                    map_size=(size, size),
                )
            )
    return plans
