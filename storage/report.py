"""Write a run's rank tables (Markdown, CSV, LaTeX) from its scores and the metric directions, with their supplementary:
bootstrap intervals of the cell means, Friedman's test with Nemenyi's CD per metric and its diagram."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

import polars as pl

from storage.cd_diagram import write_cd_diagrams
from storage.files import atomic_write_bytes, resolve
from storage.html_report import Summary, write_html
from storage.paper import paper_tables
from storage.ranking import (
    Direction,
    cell_means,
    diagnostics_frame,
    diagnostics_table,
    friedman_table,
    intervals_table,
    nan_report,
    rank_tables,
    running_time_table,
)
from storage.record import RunRecord
from storage.render import PlainTable, RankTable
from storage.results import MISCLASSIFIED, RunStore
from storage.statistics import CELL, bootstrap_intervals, friedman_nemenyi

__all__ = ["unfinished_cells", "write_report"]


def unfinished_cells(store: RunStore, record: RunRecord) -> list[str]:
    """The record's cells (``dataset/architecture``) that have no success marker: a report of the run covers
    only what they wrote so far."""
    return [f"{c.dataset}/{c.architecture}" for c in record.cells if store.cell_done(c.dataset, c.architecture) is None]


def _summary(store: RunStore, record: RunRecord | None, scores: pl.LazyFrame, directions: Mapping[str, Direction],
             unfinished: list[str], notes: list[str]) -> Summary:
    """The HTML page's summary: the record's cells with their images, those scored and whether they finished (without
    a record: the cells scored and their images), the methods, the metrics scored, the notes."""
    scored = scores.group_by(CELL).agg(scored=pl.col("image_id").n_unique()).collect()
    if record is not None and record.cells:
        planned = pl.DataFrame([{"dataset": c.dataset, "architecture": c.architecture, "images": c.images,
                                 "finished": f"{c.dataset}/{c.architecture}" not in unfinished} for c in record.cells])
        cells = (planned.join(scored, on=CELL, how="left").with_columns(pl.col("scored").fill_null(0))
                 .select(*CELL, "images", "scored", "finished"))
    else:
        cells = scored.rename({"scored": "images"})
    present = set(scores.select(pl.col("metric").unique()).collect()["metric"])
    methods = sorted(scores.select(pl.col("method").unique()).collect()["method"])
    return Summary(record.run if record is not None else Path(store.location).name, cells.sort(CELL), methods,
                   {metric: direction for metric, direction in directions.items() if metric in present}, notes)


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

    Images that could not be read (:meth:`storage.results.RunStore.skipped_images`) are listed in
    ``skipped_images.csv`` and noted under the rank tables.

    ``confidence_intervals`` lists each combination's mean with its bootstrap interval
    (:func:`storage.statistics.bootstrap_intervals`), which decide the means table's marks. Where some metric has
    2 or more methods over 2 or more combinations, the ``friedman`` table gives Friedman's test and Nemenyi's CD per
    metric and ``cd_diagrams`` their diagrams (``figures/cd_<metric>.png``).

    Last, ``html`` is the report as one page, ``index.html`` (:func:`storage.html_report.write_html`): every table,
    diagram and file above, the overlays already in ``out/overlays`` and, for a local run, the analysis figures of
    the run directory.
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
    intervals = bootstrap_intervals(scores)
    tables = rank_tables(scores, directions, diagnostics if diagnostics.height else None, intervals)
    tests = {metric: result for metric, result in friedman_nemenyi(cell_means(scores), directions).items()
             if result.defined}
    supplementary = {"confidence_intervals": intervals_table(intervals)}
    if tests:
        supplementary["friedman"] = friedman_table(tests)
    seconds = store.saliency().select("dataset", "architecture", "method", "seconds")
    supplementary["running_time"] = running_time_table(seconds)
    unfinished = [] if record is None else unfinished_cells(store, record)
    notes: list[str] = []
    if unfinished:
        listed = ", ".join(unfinished[:3]) + (", …" if len(unfinished) > 3 else "")
        note = (f"Incomplete run: {len(unfinished)} of {len(record.cells)} cells have not finished ({listed}); "
                "these tables cover the shards written so far. Rerun the job to complete it.")
        notes.append(note)
        tables = {name: replace(table, notes=[note, *table.notes]) for name, table in tables.items()}
        supplementary = {name: replace(table, notes=[note, *table.notes]) for name, table in supplementary.items()}
    skipped = store.skipped_images()
    misclassified = skipped.filter(pl.col("reason") == MISCLASSIFIED)
    for count, what in ((skipped.height - misclassified.height, "could not be read and were not evaluated"),
                        (misclassified.height, "are misclassified by their cell's model and were excluded, as the "
                                               "spec explains only correctly classified images")):
        if count:
            note = (f"{count} image(s) {what} (skipped_images.csv lists them, with why); every method's scores "
                    "leave them out alike.")
            notes.append(note)
            tables = {name: replace(table, notes=[note, *table.notes]) for name, table in tables.items()}
    written = {name: table.write(out, name) for name, table in tables.items()}
    if skipped.height:
        path = Path(out) / "skipped_images.csv"
        atomic_write_bytes(*resolve(path), skipped.write_csv().encode())
        written["skipped_images"] = [path]
    report = nan_report(cell_means(scores))
    path = Path(out) / "nan_report.csv"
    atomic_write_bytes(*resolve(path), report.write_csv().encode())
    written["nan_report"] = [path]
    shown: dict[str, RankTable | PlainTable] = dict(tables)
    if paper is not None:
        for name, table in paper_tables(scores, *paper, seconds).items():
            written[name] = table.write(out, name)
            shown[name] = table
    if diagnostics.height:
        shown["diagnostics"] = diagnostics_table(diagnostics)
        written["diagnostics"] = shown["diagnostics"].write(out, "diagnostics")
    written.update({name: table.write(out, name) for name, table in supplementary.items()})
    shown.update(supplementary)
    if tests:
        written["cd_diagrams"] = write_cd_diagrams(tests.values(), Path(out) / "figures")
    summary = _summary(store, record, scores, directions, unfinished, notes)
    local = None if "://" in store.location else store.location
    written["html"] = [write_html(out, written, title=f"camgrid report: {summary.run}", tables=shown, summary=summary,
                                  run_dir=local)]
    return written
