"""Rank tables from long-form scores (Polars, lazy): the paper's Table 12 (a)/(b) and Tables 13–25.

1. Cell means: per (dataset, architecture, method, metric), the mean of the non-NaN values, with
   the count of NaN values kept next to it (``n_nan``) — never dropped silently.
2. Combination ranks: within each (dataset, architecture, metric), methods are ranked by their
   cell mean in the metric's direction (1 = best); ties share the average rank. A method whose
   cell mean is undefined (all its values NaN) has no rank there; that is counted too.
3. Tables: the mean over combinations of the cell means (12a); the mean rank over combinations
   (12b), overall or within each architecture (13–20) or dataset (21–25). Every combination weighs
   the same, whatever its number of images.
4. Second-moment diagnostics (Expected Grad-CAM's M̂, App. B.2), from the run record's cells: a
   table of M, K, R, pool, rank, κ and the Marchenko–Pastur κ per (dataset, architecture, method);
   in every rank table that includes a cell where a method's M̂ is rank-deficient, that method is
   marked (†) and a note names those cells — its weights are not the infidelity optimum there.
"""

from __future__ import annotations

from typing import Iterable, Literal, Mapping

import polars as pl

from storage.record import CellRecord
from storage.render import PlainTable, RankTable

__all__ = ["TIE_RTOL", "Direction", "cell_means", "combination_ranks", "mean_table", "rank_table", "rank_tables",
           "nan_report", "diagnostics_frame", "diagnostics_table", "RANK_DEFICIENT"]

Direction = Literal["higher", "lower"]
CELL = ["dataset", "architecture"]
RANK_DEFICIENT = "†"  # after a method's name: rank(M̂) < K in some cell the table includes
DIAGNOSTICS_SCHEMA = {"dataset": pl.String, "architecture": pl.String, "method": pl.String,
                      "perturbations": pl.Int64, "channels": pl.Int64, "references": pl.Int64, "pool": pl.Int64,
                      "rank": pl.Int64, "condition_number": pl.Float64,
                      "covariance_condition_number": pl.Float64, "marchenko_pastur": pl.Float64,
                      "above_ridge": pl.Int64,
                      "full_rank": pl.Boolean}
_EXAMPLES = 3  # rank-deficient cells named in a note before "…"
TIE_RTOL = 1e-6  # cell means this close (relative) rank as ties


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


def combination_ranks(means: pl.LazyFrame, directions: Mapping[str, Direction],
                      rtol: float = TIE_RTOL) -> pl.LazyFrame:
    """Each method's rank within each (dataset, architecture, metric); ties get the average rank.

    Means closer than ``rtol`` (relative to the larger magnitude) are tied: float noise must not order
    two methods whose scores are the same number (Grad-CAM and XGrad-CAM on a GAP head differ by ~1e-9).
    Sorted means are chained into one tie while each is within ``rtol`` of the previous one.
    """
    metrics = means.select(pl.col("metric").unique()).collect()["metric"].to_list()
    group = [*CELL, "metric"]
    oriented = pl.when(pl.col("higher")).then(-pl.col("mean")).otherwise(pl.col("mean"))
    previous = pl.col("_oriented").shift(1).over(group, order_by="_oriented")
    scale = pl.max_horizontal(pl.col("_oriented").abs(), previous.abs())
    starts_tie = ((pl.col("_oriented") - previous).abs() > rtol * scale).fill_null(True)
    return (means.join(_directions_frame(metrics, directions), on="metric")
            .with_columns(_oriented=oriented)
            .with_columns(_position=pl.col("_oriented").rank("ordinal").over(group),
                          _tie=starts_tie.cum_sum().over(group, order_by="_oriented"))
            .with_columns(rank=pl.when(pl.col("_oriented").is_null()).then(None)
                          .otherwise(pl.col("_position").mean().over([*group, "_tie"])))
            .drop("_oriented", "_position", "_tie"))


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


def diagnostics_frame(cells: Iterable[CellRecord]) -> pl.DataFrame:
    """One row per (dataset, architecture, method) of the run record's cells' ``diagnostics``.

    Columns: the cell and method, then the recorded ``perturbations`` (M), ``channels`` (K),
    ``references`` (R), ``pool``, ``rank``, ``condition_number`` and ``covariance_condition_number``
    (null when singular), ``marchenko_pastur`` and ``full_rank``. Cells without diagnostics add no row.
    """
    keys = list(DIAGNOSTICS_SCHEMA)[3:]
    rows = [{"dataset": cell.dataset, "architecture": cell.architecture, "method": method,
             **{key: values.get(key) for key in keys}}
            for cell in cells for method, values in cell.diagnostics.items()]
    frame = pl.DataFrame(rows, schema=DIAGNOSTICS_SCHEMA, strict=False)
    frame = frame.with_columns(pl.col("full_rank").fill_null(pl.col("rank") == pl.col("channels")))
    return frame.unique([*CELL, "method"], keep="last", maintain_order=True).sort([*CELL, "method"])


def diagnostics_table(diagnostics: pl.DataFrame,
                      title: str = "Second-moment diagnostics of M̂ per combination (App. B.2)") -> PlainTable:
    """The :func:`diagnostics_frame` rows as a plain table: M, K, R, pool, rank, κ, MP κ, full rank."""
    frame = diagnostics.select(*CELL, "method", M="perturbations", K="channels", R="references", pool="pool",
                               rank="rank", κ="condition_number",
                               **{"κ Cov": "covariance_condition_number", "MP κ": "marchenko_pastur",
                                  "above λ": "above_ridge", "full rank": "full_rank"})
    notes = ["M perturbations, K channels, R distinct reference images drawn from a pool of that size; "
             "κ = λmax/λmin of M̂ and κ Cov of the perturbations' covariance (– when singular); "
             "MP κ = the Marchenko–Pastur κ at ρ = M/K (eq. 94; – for ρ ≤ 1), which App. B.2 compares with κ Cov; "
             "above λ: eigenvalues of M̂ above the Tikhonov λ (the directions the data, not the ridge, decides)"]
    return PlainTable(title, frame, notes)


def _rank_deficiency(means: pl.LazyFrame, diagnostics: pl.DataFrame | None) -> tuple[dict[str, str], list[str]]:
    """Marks and notes for the methods whose M̂ is rank-deficient in a cell that ``means`` includes."""
    if diagnostics is None or diagnostics.height == 0:
        return {}, []
    cells = means.select(*CELL, "method").unique().collect()
    deficient = (cells.join(diagnostics.filter(~pl.col("full_rank")), on=[*CELL, "method"])
                 .sort([*CELL, "method"]))
    marks, notes = {}, []
    for method in sorted(set(deficient["method"])):
        rows = deficient.filter(pl.col("method") == method).rows(named=True)
        total = cells.filter(pl.col("method") == method).height
        named = [f"{r['dataset']}/{r['architecture']} rank {r['rank']}/{r['channels']}" for r in rows[:_EXAMPLES]]
        listed = ", ".join(named) + (", …" if len(rows) > _EXAMPLES else "")
        marks[method] = RANK_DEFICIENT
        notes.append(f"{RANK_DEFICIENT} {method}: rank(M̂) < K in {len(rows)} of {total} "
                     f"{'cell' if total == 1 else 'cells'} ({listed}); "
                     "its weights are not the infidelity optimum (App. B.2)")
    return marks, notes


def mean_table(means: pl.LazyFrame, directions: Mapping[str, Direction], metrics: list[str],
               title: str = "Mean of each metric per method (Table 12a)",
               diagnostics: pl.DataFrame | None = None) -> RankTable:
    """Mean over combinations of the cell means, per method and metric (``diagnostics``: see :func:`rank_tables`)."""
    long = means.group_by("method", "metric").agg(pl.col("mean").mean())
    frame = _wide(long, "mean", metrics)
    marks, deficient = _rank_deficiency(means, diagnostics)
    return RankTable(title, frame, {m: directions[m] for m in frame.columns[1:]}, _notes(means) + deficient,
                     marks=marks)


def rank_table(ranks: pl.LazyFrame, metrics: list[str], title: str, means: pl.LazyFrame,
               diagnostics: pl.DataFrame | None = None) -> RankTable:
    """Mean rank over combinations per method and metric, plus the mean over metrics (lower is better)."""
    long = ranks.group_by("method", "metric").agg(pl.col("rank").mean())
    frame = _wide(long, "rank", metrics)
    present = frame.columns[1:]
    frame = frame.with_columns(pl.mean_horizontal(present).alias("mean rank"))
    marks, deficient = _rank_deficiency(means, diagnostics)
    return RankTable(title, frame, {column: "lower" for column in [*present, "mean rank"]},
                     _notes(means) + deficient, marks=marks)


def rank_tables(scores: pl.DataFrame | pl.LazyFrame, directions: Mapping[str, Direction],
                diagnostics: pl.DataFrame | None = None) -> dict[str, RankTable]:
    """Every table of the paper's appendix layout, keyed by a file-name-safe name.

    ``table12a_means``, ``table12b_ranks``, ``ranks_architecture_<a>`` for each architecture and
    ``ranks_dataset_<d>`` for each dataset. With ``diagnostics`` (a :func:`diagnostics_frame`), a
    method whose M̂ is rank-deficient in any combination a table includes is marked there
    (:data:`RANK_DEFICIENT`), with a note naming those combinations.
    """
    means = cell_means(scores).collect().lazy()
    metrics = sorted(means.select(pl.col("metric").unique()).collect()["metric"].to_list())
    if not metrics:
        raise ValueError("no scores to rank")
    ranks = combination_ranks(means, directions).collect().lazy()
    tables = {"table12a_means": mean_table(means, directions, metrics, diagnostics=diagnostics),
              "table12b_ranks": rank_table(ranks, metrics, "Average rank across combinations (Table 12b)", means,
                                           diagnostics)}
    for by in ("architecture", "dataset"):
        values = sorted(means.select(pl.col(by).unique()).collect()[by].to_list())
        for value in values:
            subset = pl.col(by) == value
            tables[f"ranks_{by}_{value}"] = rank_table(ranks.filter(subset), metrics, f"Average rank, {by} {value}",
                                                       means.filter(subset), diagnostics)
    return tables
