"""Pictures of a finished run: per cell, a few images with every method's stored map over them.

Everything comes from the run directory: ``run.json`` names each cell's manifest, model and input
size; the maps are the saliency parts (raw coarse maps, decoded); the images are re-read from the
manifest and put through the same resize and crop as in the job.
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
import torch

from attribution.models.config import ModelConfig
from attribution.postprocess import scored_map
from jobs.explain import Explanation, display_scale, save_overlay_grid
from jobs.spec import parse_components
from storage.builders import demo_manifest
from storage.manifest import decode_image, read_manifest
from storage.results import RunStore

__all__ = ["write_overlays"]


def _manifest(location: str):
    return demo_manifest() if location == "bundled:demo" else read_manifest(location)


def write_overlays(run: str | os.PathLike, out: str | os.PathLike, images_per_cell: int = 4) -> list[Path]:
    """One PNG per finished cell under ``out`` (``<dataset>_<architecture>.png``): rows are the cell's first
    ``images_per_cell`` images (by id), columns the methods, each map as scored (ReLU'd but for an input-space
    method's signed map), upsampled and scaled by :func:`jobs.explain.display_scale`."""
    store = RunStore(os.fspath(run))
    record = store.read_record()
    configured = parse_components("method", record.config.get("methods", {}))
    written = []
    for cell in record.cells:
        if cell.manifest is None or cell.model is None or store.cell_done(cell.dataset, cell.architecture) is None:
            continue
        preprocessing = ModelConfig.resolve(cell.model.name, layer=cell.model.layer,
                                            input_size=cell.model.input_size).preprocessing
        in_cell = (pl.col("dataset") == cell.dataset) & (pl.col("architecture") == cell.architecture)
        frame = store.saliency().filter(in_cell).select("image_id", "method", "target").collect()
        ids = sorted(set(frame["image_id"]))[:images_per_cell]
        methods = sorted(set(frame["method"]))
        manifest = _manifest(cell.manifest)
        rows = {r["image_id"]: r for r in manifest.records() if r["image_id"] in set(ids)}
        images = torch.stack([preprocessing(decode_image(rows[i])) for i in ids])
        maps = {}
        for method in methods:
            _, coarse = store.maps(dataset=cell.dataset, architecture=cell.architecture, method=method, image_ids=ids)
            rectify = type(configured[method].create()).rectified if method in configured else True
            maps[method] = display_scale(scored_map(coarse, tuple(images.shape[-2:]), rectify), rectify)
        targets = torch.tensor(frame.filter(pl.col("method") == methods[0]).sort("image_id")["target"][: len(ids)])
        labels = [rows[i]["label_name"] for i in ids]
        explanation = Explanation(ids, images, targets, labels, maps, {})
        path = Path(out) / f"{cell.dataset}_{cell.architecture}.png"
        written.append(save_overlay_grid(explanation, preprocessing, path))
    return written
