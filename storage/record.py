"""The run record (``run.json``): what a run was, typed — its spec, cells, versions and hardware.

One model per level: :class:`RunRecord` holds the run's identity (name, fingerprint of the spec,
seed), the spec as plain data (``config``), each metric's direction (what the rank tables need),
the package versions and hardware, and one :class:`CellRecord` per (dataset, architecture) with
the manifest, the model as it was resolved (:class:`ModelRecord`), the reference pools and, once
its reference stage ran, the second-moment diagnostics of every method fitted on them. The job
writes it, the report and the pictures read it; a file that does not parse is an error naming it.
"""

from __future__ import annotations

import os
import platform
import socket
import sys
from datetime import datetime, timezone
from importlib import metadata as package_metadata
from typing import Any, Iterable, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["CellMarker", "CellRecord", "DiagnosticValues", "ModelRecord", "ReferenceRecord", "RunRecord", "run_record"]

DiagnosticValues = dict[str, float | int | bool | None]  # one method's M̂ diagnostics (M, K, R, rank, κ, …)
PACKAGES = ("camgrid", "torch", "torchvision", "timm", "quantus", "ray", "polars", "pyarrow", "numpy")


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ModelRecord(_Record):
    """The model of a cell as it was resolved: registry name, weights source, target layer, input side."""

    name: str
    weights: str
    layer: str
    num_classes: int
    image_size: int | None = Field(description="the side of the images the model took (after resize and crop)")
    input_size: int | None = Field(None, description="the spec's resize side, instead of the registry's preprocessing")


class ReferenceRecord(_Record):
    """A cell's reference images: their manifest and how many went to each pool (the ids are stored
    with their features under ``references/``)."""

    manifest: str
    fit: int = 0
    held_out: int = 0


class CellRecord(_Record):
    """One (dataset, architecture) cell: its images and shards, manifest, model, reference pools and diagnostics."""

    dataset: str
    architecture: str
    images: int
    shards: list[int] = []
    manifest: str | None = None
    model: ModelRecord | None = None
    references: ReferenceRecord | None = None
    digest: str | None = Field(None, description="of the cell's images, references, weights and targets as planned: "
                                                 "a resume on other data is refused")
    diagnostics: dict[str, DiagnosticValues] = Field(default_factory=dict,
                                                     description="method → its M̂ diagnostics in this cell")

    @model_validator(mode="before")
    @classmethod
    def _nested_model(cls, data: Any) -> Any:
        """Records of earlier versions kept the model flat (``model`` its name, ``layer``, ``input_size``,
        ``weights`` beside it): read them as a :class:`ModelRecord` without a known image side."""
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = dict(data)
            flat = {key: data.pop(key, None) for key in ("layer", "input_size", "weights")}
            data["model"] = {"name": data["model"], "weights": flat["weights"] or "pretrained",
                             "layer": flat["layer"] or "", "num_classes": data.pop("num_classes", 1000),
                             "input_size": flat["input_size"], "image_size": flat["input_size"]}
        return data


class CellMarker(_Record):
    """The success marker of a finished cell (``cells/dataset=…/architecture=….json``): what it took."""

    images: int
    shards: list[int] = []
    skipped: int = Field(0, description="images that could not be evaluated (the run's skipped/ folder says why)")
    seconds: float = 0.0
    attempts: int = 1
    bytes_written: int = 0
    write_seconds: float = 0.0
    placement: dict[str, float | int | str] = Field(default_factory=dict,
                                                    description="the actors' resources and the executor (ray, local)")
    diagnostics: dict[str, DiagnosticValues] = Field(default_factory=dict)


class RunRecord(_Record):
    run: str
    created: str
    seed: int
    config: dict[str, Any] = Field(default_factory=dict, description="the grid spec as plain data")
    fingerprint: str | None = None
    metric_directions: dict[str, Literal["higher", "lower"]] = Field(default_factory=dict)
    cells: list[CellRecord] = []
    versions: dict[str, str | None] = Field(default_factory=dict)
    hardware: dict[str, Any] = Field(default_factory=dict)

    def cell(self, dataset: str, architecture: str) -> CellRecord | None:
        return next((c for c in self.cells if (c.dataset, c.architecture) == (dataset, architecture)), None)

    def with_cell(self, cell: CellRecord) -> RunRecord:
        """This record with ``cell`` in place of the record's cell of the same (dataset, architecture)."""
        if self.cell(cell.dataset, cell.architecture) is None:
            raise KeyError(f"run {self.run} has no cell {cell.dataset}/{cell.architecture}")
        cells = [cell if (c.dataset, c.architecture) == (cell.dataset, cell.architecture) else c for c in self.cells]
        return self.model_copy(update={"cells": cells})

    def with_diagnostics(self, dataset: str, architecture: str, diagnostics: dict[str, DiagnosticValues]) -> RunRecord:
        """This record with the cell's ``diagnostics`` replaced."""
        cell = self.cell(dataset, architecture)
        if cell is None:
            raise KeyError(f"run {self.run} has no cell {dataset}/{architecture}")
        return self.with_cell(CellRecord.model_validate({**cell.model_dump(), "diagnostics": diagnostics}))


def run_record(run: str, config: dict[str, Any], seed: int, packages: Iterable[str] = PACKAGES,
               **fields: Any) -> RunRecord:
    """A new record of run ``run``: its config and seed, the versions of ``packages`` and the driver's hardware."""
    versions = {}
    for name in packages:
        try:
            versions[name] = package_metadata.version(name)
        except package_metadata.PackageNotFoundError:
            versions[name] = None
    hardware: dict[str, Any] = {"host": socket.gethostname(), "platform": platform.platform(),
                                "python": sys.version.split()[0], "cpus": os.cpu_count()}
    try:
        import torch

        hardware["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    except ImportError:
        hardware["gpus"] = []
    return RunRecord(run=run, created=datetime.now(timezone.utc).isoformat(), seed=seed, config=config,
                     versions=versions, hardware=hardware, **fields)
