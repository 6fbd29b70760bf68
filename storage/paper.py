"""A paper's reported values beside a run's: per (cell, method, metric), and the agreement of the two rankings.

A paper's values are a CSV with one row per reported number: ``table`` (the paper's table), ``dataset``,
``architecture``, ``method`` and ``metric`` (as the run names them), ``value`` as printed, and
``scale``, the factor that takes this run's mean to the paper's unit (``100`` where the paper prints a
fraction as a percentage). Presets that reproduce a paper's tables ship theirs (``jobs/presets/paper``).
"""

from __future__ import annotations

import os
from pathlib import Path

import polars as pl
from scipy.stats import kendalltau

from storage.ranking import cell_means
from storage.render import PlainTable

__all__ = ["PAPER_SCHEMA", "paper_tables", "read_paper_values"]

PAPER_SCHEMA = {"table": pl.String, "dataset": pl.String, "architecture": pl.String, "method": pl.String,
                "metric": pl.String, "value": pl.Float64, "scale": pl.Float64}
_KEY = ["dataset", "architecture", "method", "metric"]


def read_paper_values(path: str | os.PathLike) -> pl.DataFrame:
    """A paper-values CSV, checked: every column of :data:`PAPER_SCHEMA`, numbers where numbers belong."""
    try:
        frame = pl.read_csv(path, schema_overrides=PAPER_SCHEMA)
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError) as err:
        raise ValueError(f"paper values {os.fspath(path)}: {str(err).splitlines()[0]}") from None
    missing = [column for column in PAPER_SCHEMA if column not in frame.columns]
    if missing:
        raise ValueError(f"paper values {os.fspath(path)}: missing column {missing[0]!r} "
                         f"(expected {', '.join(PAPER_SCHEMA)})")
    frame = frame.select(list(PAPER_SCHEMA))
    if frame.null_count().sum_horizontal().item():
        row = frame.with_row_index().filter(pl.any_horizontal(pl.all().is_null())).row(0, named=True)
        raise ValueError(f"paper values {os.fspath(path)}: row {row['index'] + 2} has an empty field")
    duplicated = frame.filter(frame.select(_KEY).is_duplicated())
    if duplicated.height:
        raise ValueError(f"paper values {os.fspath(path)}: {dict(duplicated.select(_KEY).row(0, named=True))} "
                         "is given twice")
    return frame


ANY = "*"  # a paper value's dataset or architecture that is an average over all of them
SECONDS = "seconds"  # the metric name of a method's running time per image (the saliency rows' ``seconds``)


def _run_values(scores: pl.DataFrame | pl.LazyFrame, seconds: pl.DataFrame | pl.LazyFrame | None) -> pl.DataFrame:
    """This run's values as the paper reports them: per cell, method and metric the mean over images, and the
    averages of those means over datasets, architectures or both (``*``), as tables that average over
    combinations (Table 12a) print them. A method's seconds per image count as the metric ``seconds``."""
    means = cell_means(scores).select(*_KEY, "mean", "n")
    if seconds is not None:
        times = (_lazy(seconds).group_by("dataset", "architecture", "method")
                 .agg(mean=pl.col("seconds").mean(), n=pl.len().cast(pl.UInt32))
                 .with_columns(metric=pl.lit(SECONDS)).select(*_KEY, "mean", "n"))
        means = pl.concat([means.with_columns(pl.col("n").cast(pl.UInt32)), times])
    cells = means.collect()
    levels = [cells]
    for over in (["dataset"], ["architecture"], ["dataset", "architecture"]):
        keep = [k for k in _KEY if k not in over]
        levels.append(cells.filter(pl.col("mean").is_not_nan()).group_by(keep)
                      .agg(pl.col("mean").mean(), pl.col("n").sum())
                      .with_columns(**{column: pl.lit(ANY) for column in over}).select(*_KEY, "mean", "n"))
    return pl.concat([level.with_columns(pl.col("n").cast(pl.UInt32)) for level in levels])


def _lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def paper_tables(scores: pl.DataFrame | pl.LazyFrame, paper: pl.DataFrame, source: str | Path,
                 seconds: pl.DataFrame | pl.LazyFrame | None = None) -> dict[str, PlainTable]:
    """``paper_comparison``: per reported number, the paper's value, this run's (its mean × ``scale``) and the
    difference; ``paper_agreement``: per (table, cell, metric), Kendall's τ-b between the paper's and this run's
    values over the methods both have (the rank agreement; ``–`` with fewer than three methods).

    A reported value whose dataset or architecture is ``*`` is an average over them; this run's counterpart is
    the mean of its cell means. ``seconds`` (the saliency rows: dataset, architecture, method, seconds) gives the
    methods' running times, which the paper reports as the metric ``seconds`` (Table 10)."""
    means = _run_values(scores, seconds)
    joined = (paper.join(means, on=_KEY, how="left")
              .with_columns(this_run=pl.col("mean") * pl.col("scale"))
              .with_columns(difference=pl.col("this_run") - pl.col("value"))
              .rename({"value": "paper", "n": "images"})
              .select("table", *_KEY, "paper", "this_run", "difference", "images")
              .sort("table", *_KEY))
    missing = joined.filter(pl.col("this_run").is_null()).height
    notes = [f"Reported values: {source}. this_run = the run's mean over images × the paper's scale."]
    if missing:
        notes.append(f"{missing} of the paper's {joined.height} values have no counterpart in this run (–).")
    rows = []
    for (table, dataset, architecture, metric), group in joined.group_by(
            ["table", "dataset", "architecture", "metric"], maintain_order=True):
        both = group.drop_nulls("this_run").filter(pl.col("this_run").is_not_nan())
        tau = (float(kendalltau(both["paper"].to_numpy(), both["this_run"].to_numpy()).statistic)
               if both.height >= 3 else None)
        rows.append({"table": table, "dataset": dataset, "architecture": architecture, "metric": metric,
                     "methods": both.height, "kendall_tau": tau})
    agreement = pl.DataFrame(rows, schema={"table": pl.String, "dataset": pl.String, "architecture": pl.String,
                                           "metric": pl.String, "methods": pl.Int64, "kendall_tau": pl.Float64})
    return {"paper_comparison": PlainTable("The paper's values beside this run's", joined, notes),
            "paper_agreement": PlainTable("Rank agreement with the paper per metric (Kendall's τ-b)",
                                          agreement.sort("table", "dataset", "architecture", "metric"),
                                          [f"Reported values: {source}. τ = 1: the same order of methods; "
                                           "0: unrelated; −1: reversed."])}
