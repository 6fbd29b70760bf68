"""Rank tables from long-form scores (Polars, lazy): the paper's Table 12 (a)/(b) and Tables 13–25.

1. Cell means: per (dataset, architecture, method, metric), the mean of the non-NaN values, with
   the count of NaN values kept next to it (``n_nan``) — never dropped silently.
2. Combination ranks: within each (dataset, architecture, metric), methods are ranked by their
   cell mean in the metric's direction (1 = best); ties share the average rank. A method whose
   cell mean is undefined (all its values NaN) has no rank there; that is counted too.
3. Tables: the mean over combinations of the cell means (12a); the mean rank over combinations
   (12b), overall or within each architecture (13–20) or dataset (21–25). Every combination weighs
   the same, whatever its number of images.
"""

from __future__ import annotations

from typing import Literal, Mapping

import polars as pl

from storage.render import RankTable

__all__ = ["Direction", "cell_means", "combination_ranks", "mean_table", "rank_table", "rank_tables",
           "nan_report"]

Direction = Literal["higher", "lower"]
CELL = ["dataset", "architecture"]


def _lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def cell_means(scores: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Per (dataset, architecture, method, metric): ``mean`` of defined values, ``n``, ``n_nan``."""
    value = pl.col("value")
    undefined = value.is_null() | value.is_nan()
    return (_lazy(scores).group_by([*CELL, "method", "metric"])
            .agg(mean=value.filter(~undefined).mean(), n=pl.len(), n_nan=undefined.sum()))


def _directions_frame(metrics: list[str], directions: Mapping[str, Direction]) -> pl.LazyFrame:
    missing = sorted(set(metrics) - set(directions))
    if missing:
        raise KeyError(f"no direction (higher/lower is better) given for metric(s) {', '.join(missing)}")
    wrong = {m: d for m, d in directions.items() if d not in ("higher", "lower")}
    if wrong:
        raise ValueError(f"direction must be 'higher' or 'lower', got {wrong}")
    return pl.LazyFrame({"metric": metrics, "higher": [directions[m] == "higher" for m in metrics]})


def combination_ranks(means: pl.LazyFrame, directions: Mapping[str, Direction]) -> pl.LazyFrame:
    """Each method's rank within each (dataset, architecture, metric); ties get the average rank."""
    metrics = means.select(pl.col("metric").unique()).collect()["metric"].to_list()
    oriented = pl.when(pl.col("higher")).then(-pl.col("mean")).otherwise(pl.col("mean"))
    return (means.join(_directions_frame(metrics, directions), on="metric")
            .with_columns(rank=oriented.rank("average").over([*CELL, "metric"])))


def nan_report(means: pl.LazyFrame) -> pl.DataFrame:
    """The (cell, method, metric) groups with undefined values: how many of how many."""
    return (means.filter(pl.col("n_nan") > 0).select([*CELL, "method", "metric", "n_nan", "n"])
            .sort([*CELL, "method", "metric"]).collect())


def _wide(long: pl.LazyFrame, value: str, metrics: list[str]) -> pl.DataFrame:
    frame = long.collect().pivot(on="metric", index="method", values=value).sort("method")
    return frame.select("method", *[m for m in metrics if m in frame.columns])


def _notes(means: pl.LazyFrame) -> list[str]:
    report = (means.group_by("method", "metric").agg(pl.col("n_nan").sum(), pl.col("n").sum(),
                                                     undefined_cells=pl.col("mean").is_null().sum())
              .filter(pl.col("n_nan") > 0).sort("method", "metric").collect())
    return [f"{r['method']} / {r['metric']}: {r['n_nan']} of {r['n']} values undefined (NaN)"
            + (f", no mean in {r['undefined_cells']} combination(s)" if r["undefined_cells"] else "")
            for r in report.iter_rows(named=True)]


def mean_table(means: pl.LazyFrame, directions: Mapping[str, Direction], metrics: list[str],
               title: str = "Mean of each metric per method (Table 12a)") -> RankTable:
    """Mean over combinations of the cell means, per method and metric."""
    long = means.group_by("method", "metric").agg(pl.col("mean").mean())
    frame = _wide(long, "mean", metrics)
    return RankTable(title, frame, {m: directions[m] for m in frame.columns[1:]}, _notes(means))


def rank_table(ranks: pl.LazyFrame, metrics: list[str], title: str, means: pl.LazyFrame) -> RankTable:
    """Mean rank over combinations per method and metric, plus the mean over metrics (lower is better)."""
    long = ranks.group_by("method", "metric").agg(pl.col("rank").mean())
    frame = _wide(long, "rank", metrics)
    present = frame.columns[1:]
    frame = frame.with_columns(pl.mean_horizontal(present).alias("mean rank"))
    return RankTable(title, frame, {column: "lower" for column in [*present, "mean rank"]}, _notes(means))


def rank_tables(scores: pl.DataFrame | pl.LazyFrame, directions: Mapping[str, Direction]) -> dict[str, RankTable]:
    """Every table of the paper's appendix layout, keyed by a file-name-safe name.

    ``table12a_means``, ``table12b_ranks``, ``ranks_architecture_<a>`` for each architecture and
    ``ranks_dataset_<d>`` for each dataset.
    """
    means = cell_means(scores).collect().lazy()
    metrics = sorted(means.select(pl.col("metric").unique()).collect()["metric"].to_list())
    if not metrics:
        raise ValueError("no scores to rank")
    ranks = combination_ranks(means, directions).collect().lazy()
    tables = {"table12a_means": mean_table(means, directions, metrics),
              "table12b_ranks": rank_table(ranks, metrics, "Average rank across combinations (Table 12b)", means)}
    for by in ("architecture", "dataset"):
        values = sorted(means.select(pl.col(by).unique()).collect()[by].to_list())
        for value in values:
            subset = pl.col(by) == value
            tables[f"ranks_{by}_{value}"] = rank_table(ranks.filter(subset), metrics,
                                                       f"Average rank, {by} {value}", means.filter(subset))
    return tables
