"""Write a run's rank tables (Markdown, CSV, LaTeX) from its scores and the metric directions."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

from storage.ranking import Direction, nan_report, cell_means, rank_tables
from storage.results import RunStore

__all__ = ["write_report"]


def write_report(run: str | os.PathLike, out: str | os.PathLike | None = None,
                 directions: Mapping[str, Direction] | None = None) -> dict[str, list[Path]]:
    """Rank tables of the run at ``run`` into ``out`` (default ``<run>/report``, local runs only).

    ``directions`` (metric → ``higher``/``lower``) defaults to the run record's ``metric_directions``,
    which the job writes from the metric registry. A ``nan_report.csv`` lists every (combination,
    method, metric) with undefined values.
    """
    store = RunStore(os.fspath(run))
    if directions is None:
        directions = store.read_record().get("metric_directions")
        if not directions:
            raise KeyError(f"run record of {store.location} has no metric_directions; pass directions explicitly")
    if out is None:
        if "://" in store.location:
            raise ValueError("give a local output folder for the report of a remote run")
        out = Path(store.location) / "report"
    scores = store.scores()
    written = {name: table.write(out, name) for name, table in rank_tables(scores, directions).items()}
    report = nan_report(cell_means(scores))
    path = Path(out) / "nan_report.csv"
    report.write_csv(path)
    written["nan_report"] = [path]
    return written
