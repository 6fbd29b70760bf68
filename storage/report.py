"""Write a run's rank tables (Markdown, CSV, LaTeX) from its scores and the metric directions."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Mapping

import polars as pl

from storage.files import atomic_write_bytes, resolve
from storage.paper import paper_tables
from storage.ranking import Direction, cell_means, diagnostics_frame, diagnostics_table, nan_report, rank_tables
from storage.record import RunRecord
from storage.results import RunStore

__all__ = ["unfinished_cells", "write_report"]


def unfinished_cells(store: RunStore, record: RunRecord) -> list[str]:
    """The record's cells (``dataset/architecture``) that have no success marker: a report of the run covers
    only what they wrote so far."""
    return [f"{c.dataset}/{c.architecture}" for c in record.cells if store.cell_done(c.dataset, c.architecture) is None]


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None,
                 directions: Mapping[str, Direction] | None = None,
                 paper: tuple[pl.DataFrame, str] | None = None) -> dict[str, list[Path]]:
    """Rank tables of the run at ``run`` into ``out`` (default ``<run>/report``, local runs only).

    ``directions`` (metric → ``higher``/``lower``) defaults to the run record's ``metric_directions``,
    which the job writes from the metric registry. A ``nan_report.csv`` lists every (combination,
    method, metric) with undefined values. Where the record's cells carry second-moment
    ``diagnostics`` (Expected Grad-CAM's M̂), a ``diagnostics`` table lists them and the rank tables
    mark (†) a method in every table that includes a cell where its M̂ is rank-deficient. With
    ``paper`` (its reported values and their source, :func:`storage.paper.read_paper_values`), the
    ``paper_comparison`` and ``paper_agreement`` tables set them beside this run's.
    """
    store = RunStore(os.fspath(run))
    record: RunRecord | None = None
    if directions is None:
        record = store.read_record()
        directions = record.metric_directions
        if not directions:
            raise KeyError(f"run record of {store.location} has no metric_directions; pass directions explicitly")
    else:
        try:
            record = store.read_record()
        except FileNotFoundError:  # explicit directions need no record; without one there are no diagnostics
            pass
    if out is None:
        if "://" in store.location:
            raise ValueError("give a local output folder for the report of a remote run")
        out = Path(store.location) / "report"
    scores = store.scores()
    diagnostics = diagnostics_frame(record.cells if record is not None else [])
    tables = rank_tables(scores, directions, diagnostics if diagnostics.height else None)
    unfinished = [] if record is None else unfinished_cells(store, record)
    if unfinished:
        listed = ", ".join(unfinished[:3]) + (", …" if len(unfinished) > 3 else "")
        note = (f"Incomplete run: {len(unfinished)} of {len(record.cells)} cells have not finished ({listed}); "
                "these tables cover the shards written so far. Rerun the job to complete it.")
        tables = {name: replace(table, notes=[note, *table.notes]) for name, table in tables.items()}
    written = {name: table.write(out, name) for name, table in tables.items()}
    report = nan_report(cell_means(scores))
    path = Path(out) / "nan_report.csv"
    atomic_write_bytes(*resolve(path), report.write_csv().encode())
    written["nan_report"] = [path]
    if paper is not None:
        for name, table in paper_tables(scores, *paper).items():
            written[name] = table.write(out, name)
    if diagnostics.height:
        written["diagnostics"] = diagnostics_table(diagnostics).write(out, "diagnostics")
    return written
