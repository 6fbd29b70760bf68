"""Rank tables from long-form scores (Polars, lazy): the paper's Table 12 (a)/(b) and Tables 13–25.

1. Cell means: per (dataset, architecture, method, metric), the mean of the non-NaN values, with
   the count of NaN values kept next to it (``n_nan``) — never dropped silently.
2. Combination ranks: within each (dataset, architecture, metric), methods are ranked by their
   cell mean in the metric's direction (1 = best); ties share the average rank. A method whose
   cell mean is undefined (all its values NaN) has no rank there; that is counted too.
3. Tables: the mean over combinations of the cell means (12a); the mean rank over combinations
   (12b), overall or within each architecture (13–20) or dataset (21–25). Every combination weighs
   the same, whatever its number of images.
4. Marks: bold for the best value and underline for the second, given only where the values' intervals are
   disjoint (:mod:`storage.statistics`); a value whose interval overlaps the best's shares the bold (a tie).
   A mean's interval combines its combinations' bootstrap intervals; a mean rank's is ± CD/2, Nemenyi's
   critical difference over the table's combinations. The Friedman test and the bootstrap intervals are
   tables of their own.
5. Second-moment diagnostics (Expected Grad-CAM's M̂, App. B.2), from the run record's cells: a
   table of M, K, R, pool, rank, κ and the Marchenko–Pastur κ per (dataset, architecture, method);
   in every rank table that includes a cell where a method's M̂ is rank-deficient, that method is
   marked (†) and a note names those cells — its weights are not the infidelity optimum there.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import polars as pl

from storage.record import CellRecord
from storage.render import Intervals, PlainTable, RankTable
from storage.statistics import (
    CELL,
    CONFIDENCE,
    KEYS,
    TIE_RTOL,
    Direction,
    FriedmanResult,
    bootstrap_intervals,
    combination_ranks,
    friedman_nemenyi,
)

__all__ = ["RANK_DEFICIENT", "TIE_RTOL", "Direction", "cell_means", "combination_ranks", "diagnostics_frame",
           "diagnostics_table", "friedman_table", "intervals_table", "mean_table", "nan_report", "rank_table",
           "rank_tables", "running_time_table"]

RANK_DEFICIENT = "†"  # after a method's name: rank(M̂) < K in some cell the table includes
DIAGNOSTICS_SCHEMA = {"dataset": pl.String, "architecture": pl.String, "method": pl.String,
                      "perturbations": pl.Int64, "channels": pl.Int64, "references": pl.Int64, "pool": pl.Int64,
                      "rank": pl.Int64, "condition_number": pl.Float64,
                      "covariance_condition_number": pl.Float64, "marchenko_pastur": pl.Float64,
                      "above_ridge": pl.Int64,
                      "full_rank": pl.Boolean}
_EXAMPLES = 3  # rank-deficient cells named in a note before "…"


def _lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def cell_means(scores: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    """Per (dataset, architecture, method, metric): ``mean`` of defined values, ``n``, ``n_nan``."""
    value = pl.col("value")
    undefined = value.is_null() | value.is_nan()
    return (_lazy(scores).group_by([*CELL, "method", "metric"])
            .agg(mean=value.filter(~undefined).mean(), n=pl.len(), n_nan=undefined.sum()))


def nan_report(means: pl.LazyFrame) -> pl.DataFrame:
    """The (cell, method, metric) groups with undefined values: how many of how many."""
    return (means.filter(pl.col("n_nan") > 0).select([*CELL, "method", "metric", "n_nan", "n"])
            .sort([*CELL, "method", "metric"]).collect())


def _wide(long: pl.LazyFrame, value: str, metrics: list[str]) -> pl.DataFrame:
    frame = long.collect().pivot(on="metric", index="method", values=value).sort("method")
    return frame.select("method", *[m for m in metrics if m in frame.columns])


def _notes(means: pl.LazyFrame) -> list[str]:
    """One line per metric and count of undefined values, naming the methods it holds for ("every method" when all
    do): a metric undefined for the images without a mask is one line, not one per method."""
    report = (means.group_by("method", "metric").agg(pl.col("n_nan").sum(), pl.col("n").sum(),
                                                     undefined_cells=pl.col("mean").is_null().sum())
              .collect())
    methods = report["method"].n_unique()
    groups = (report.filter(pl.col("n_nan") > 0)
              .group_by("metric", "n_nan", "n", "undefined_cells").agg(pl.col("method").sort())
              .sort("metric", "n_nan", "n", "undefined_cells"))
    return [f"{r['metric']}: {r['n_nan']} of {r['n']} values undefined (NaN)"
            + (f", no mean in {r['undefined_cells']} combination(s)" if r["undefined_cells"] else "")
            + (" for every method" if len(r["method"]) == methods > 1 else f" for {', '.join(r['method'])}")
            for r in groups.iter_rows(named=True)]


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
    notes = [("M perturbations, K channels, R distinct reference images drawn from a pool of that size; "
              "κ = λmax/λmin of M̂ and κ Cov of the perturbations' covariance (– when singular); "
              "MP κ = the Marchenko–Pastur κ at ρ = M/K (eq. 94; – for ρ ≤ 1), which App. B.2 compares with κ Cov; "
              "above λ: eigenvalues of M̂ above the Tikhonov λ (the directions the data, not the ridge, decides)")]
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


def _mean_intervals(frame: pl.DataFrame, means: pl.LazyFrame, intervals: pl.DataFrame,
                    confidence: float) -> Intervals:
    """Each mean's interval from its combinations' intervals: h = √(Σ_d (Σ_a h_da)²) / C on either side."""
    cells = (means.filter(pl.col("mean").is_not_null()).select(KEYS).collect()
             .join(intervals.select(*KEYS, "mean", "low", "high"), on=KEYS, how="left")
             .with_columns(below=(pl.col("mean") - pl.col("low")).fill_null(0.0),
                           above=(pl.col("high") - pl.col("mean")).fill_null(0.0)))
    widths = (cells.group_by("dataset", "method", "metric")
              .agg(pl.col("below", "above").sum(), cells=pl.len(), unbounded=pl.col("low").is_null().sum())
              .group_by("method", "metric")
              .agg((pl.col("below", "above") ** 2).sum().sqrt() / pl.col("cells").sum(), pl.col("unbounded").sum()))
    bounds = {}
    for metric in frame.columns[1:]:
        joined = frame.select("method", metric).join(widths.filter(pl.col("metric") == metric), on="method",
                                                     how="left", maintain_order="left")
        bounds[metric] = [None if value is None or below is None else (value - below, value + above)
                          for value, below, above in joined.select(metric, "below", "above").iter_rows()]
    unbounded = int(widths["unbounded"].sum())
    note = (f"Bold: the best mean and every mean whose {confidence:.0%} interval overlaps its interval (not "
            "separable: a tie, no win); underlined: the same for the best of the rest. A mean's interval combines "
            "its combinations' bootstrap intervals of their means over images: half-widths add over a dataset's "
            "architectures (the same images) and in quadrature over datasets, divided by the number of combinations")
    if unbounded:
        note += (f"; {unbounded} combination(s) with fewer than two defined values have no interval and add no "
                 "width")
    return Intervals(bounds, note + ".")


def mean_table(means: pl.LazyFrame, directions: Mapping[str, Direction], metrics: list[str],
               title: str = "Mean of each metric per method (Table 12a)",
               diagnostics: pl.DataFrame | None = None, intervals: pl.DataFrame | None = None,
               confidence: float = CONFIDENCE) -> RankTable:
    """Mean over combinations of the cell means, per method and metric (``diagnostics``: see :func:`rank_tables`).

    With ``intervals`` (:func:`storage.statistics.bootstrap_intervals` of the cells, at ``confidence``), each mean
    gets the interval h = √(Σ_d (Σ_a h_da)²) / C on either side, over the C combinations with a mean and the
    half-widths h_da of dataset d and architecture a: a dataset's architectures score the same images (their errors
    are taken as fully correlated), different datasets independent ones. The marks follow from these intervals.
    """
    long = means.group_by("method", "metric").agg(pl.col("mean").mean())
    frame = _wide(long, "mean", metrics)
    marks, deficient = _rank_deficiency(means, diagnostics)
    bounds = None if intervals is None else _mean_intervals(frame, means, intervals, confidence)
    return RankTable(title, frame, {m: directions[m] for m in frame.columns[1:]}, _notes(means) + deficient,
                     marks=marks, intervals=bounds)


def _rank_intervals(frame: pl.DataFrame, metrics: list[str], tests: Mapping[str, FriedmanResult]) -> Intervals:
    """Each mean rank ± CD/2 (Nemenyi's, per metric); the mean over metrics ± the mean of their CDs / 2."""
    critical = {m: tests[m].critical_difference for m in metrics if m in tests and tests[m].defined}
    if critical and len(critical) == len(metrics):
        critical["mean rank"] = sum(critical.values()) / len(critical)
    bounds = {column: [None if r is None or math.isnan(r) else (r - cd / 2, r + cd / 2) for r in frame[column]]
              for column, cd in critical.items()}
    alpha = next(iter(tests.values())).alpha if tests else 1 - CONFIDENCE
    listed = [f"{m} {critical[m]:.3f} (N = {tests[m].blocks})" for m in metrics if m in critical]
    if "mean rank" in critical:
        listed.append(f"mean rank {critical['mean rank']:.3f} (the metrics' mean: taken as fully dependent)")
    note = (f"Bold: the best mean rank and every one within Nemenyi's critical difference CD of it (α = {alpha:g}, "
            "Demšar 2006; not separable: a tie, no win); underlined: the same for the best of the rest.")
    if listed:
        note += f" CD over the N combinations where every method has a mean: {', '.join(listed)}."
    missing = [column for column in [*metrics, "mean rank"] if column not in critical]
    if missing:
        note += (f" No CD for {', '.join(missing)} (fewer than 2 methods or 2 combinations where all have a "
                 "mean): marked by value alone.")
    return Intervals(bounds, note)


def rank_table(ranks: pl.LazyFrame, metrics: list[str], title: str, means: pl.LazyFrame,
               diagnostics: pl.DataFrame | None = None,
               tests: Mapping[str, FriedmanResult] | None = None) -> RankTable:
    """Mean rank over combinations per method and metric, plus the mean over metrics (lower is better).

    With ``tests`` (:func:`storage.statistics.friedman_nemenyi` of the same combinations), a mean rank's interval
    is ± CD/2, so two overlap when they differ by less than Nemenyi's CD; the mean over metrics uses the mean of the
    metrics' CDs (metrics scored on the same maps are taken as fully dependent). A column without a CD (fewer than 2
    methods or complete combinations) is marked by value alone.
    """
    long = ranks.group_by("method", "metric").agg(pl.col("rank").mean())
    frame = _wide(long, "rank", metrics)
    present = frame.columns[1:]
    frame = frame.with_columns(pl.mean_horizontal(present).alias("mean rank"))
    marks, deficient = _rank_deficiency(means, diagnostics)
    bounds = None if tests is None else _rank_intervals(frame, present, tests)
    return RankTable(title, frame, {column: "lower" for column in [*present, "mean rank"]},
                     _notes(means) + deficient, marks=marks, intervals=bounds)


def rank_tables(scores: pl.DataFrame | pl.LazyFrame, directions: Mapping[str, Direction],
                diagnostics: pl.DataFrame | None = None, intervals: pl.DataFrame | None = None, *,
                confidence: float = CONFIDENCE) -> dict[str, RankTable]:
    """Every table of the paper's appendix layout, keyed by a file-name-safe name.

    ``table12a_means``, ``table12b_ranks``, ``ranks_architecture_<a>`` for each architecture and
    ``ranks_dataset_<d>`` for each dataset. With ``diagnostics`` (a :func:`diagnostics_frame`), a
    method whose M̂ is rank-deficient in any combination a table includes is marked there
    (:data:`RANK_DEFICIENT`), with a note naming those combinations. Bold and underline follow the win
    rule: in the means table from ``intervals`` (:func:`storage.statistics.bootstrap_intervals` of ``scores`` at
    ``confidence``, computed when not given), in each rank table from Nemenyi's CD over its combinations at
    α = 1 − ``confidence``.
    """
    means = cell_means(scores).collect().lazy()
    metrics = sorted(means.select(pl.col("metric").unique()).collect()["metric"].to_list())
    if not metrics:
        raise ValueError("no scores to rank")
    if intervals is None:
        intervals = bootstrap_intervals(scores, confidence=confidence)
    alpha = 1 - confidence
    ranks = combination_ranks(means, directions).collect().lazy()
    tables = {"table12a_means": mean_table(means, directions, metrics, diagnostics=diagnostics, intervals=intervals,
                                           confidence=confidence),
              "table12b_ranks": rank_table(ranks, metrics, "Average rank across combinations (Table 12b)", means,
                                           diagnostics, friedman_nemenyi(means, directions, alpha=alpha))}
    for by in ("architecture", "dataset"):
        values = sorted(means.select(pl.col(by).unique()).collect()[by].to_list())
        for value in values:
            subset = pl.col(by) == value
            tests = friedman_nemenyi(means.filter(subset), directions, alpha=alpha)
            tables[f"ranks_{by}_{value}"] = rank_table(ranks.filter(subset), metrics, f"Average rank, {by} {value}",
                                                       means.filter(subset), diagnostics, tests)
    return tables


def friedman_table(results: Mapping[str, FriedmanResult],
                   title: str = "Friedman's test and Nemenyi's critical difference per metric") -> PlainTable:
    """One row per result: its metric, k methods, N blocks and those dropped, χ² (``chi2``), ``p``, ``CD``, then each
    method's mean rank over the N blocks (a column per method)."""
    methods = sorted({method for result in results.values() for method in result.mean_ranks})
    schema = {"metric": pl.String, "methods": pl.Int64, "blocks": pl.Int64, "dropped": pl.Int64,
              "chi2": pl.Float64, "p": pl.Float64, "CD": pl.Float64, **dict.fromkeys(methods, pl.Float64)}
    rows = [{"metric": r.metric, "methods": len(r.mean_ranks), "blocks": r.blocks, "dropped": r.dropped,
             "chi2": r.statistic, "p": r.p_value, "CD": r.critical_difference, **r.mean_ranks}
            for r in results.values()]
    frame = pl.DataFrame(rows, schema=schema).fill_nan(None)
    alpha = next(iter(results.values())).alpha if results else 1 - CONFIDENCE
    note = ("Blocks: the combinations where every method has a mean (dropped: those where one has none); mean "
            "ranks over them, 1 = best. chi2: Friedman's statistic (1937), p from χ²(k − 1); – with fewer than 3 "
            f"methods. CD: Nemenyi's critical difference at α = {alpha:g} (Demšar 2006): mean ranks closer than CD "
            "are not separable (figures/cd_<metric>.png).")
    return PlainTable(title, frame, [note])


def intervals_table(intervals: pl.DataFrame, confidence: float = CONFIDENCE) -> PlainTable:
    """The :func:`storage.statistics.bootstrap_intervals` rows as a plain table: cell, method, metric, mean, bounds."""
    title = f"Bootstrap {confidence:.0%} confidence intervals of the mean over images per combination"
    note = ("low–high: the bootstrap interval of the mean (Efron 1979; scipy.stats.bootstrap); n values, of which "
            "n_nan undefined and left out; – where fewer than two are defined.")
    return PlainTable(title, intervals.select(*KEYS, "mean", "low", "high", "n", "n_nan"), [note])


def running_time_table(saliency: pl.DataFrame | pl.LazyFrame, reference: str = "gradcam") -> PlainTable:
    """Seconds per image of each method per combination (the method's own time, metrics excluded; Table 10's
    R.T.), its spread over images and, where the run has ``reference``, the ratio to it in the same cell."""
    times = (_lazy(saliency).group_by(*CELL, "method")
             .agg(seconds=pl.col("seconds").mean(), std=pl.col("seconds").std(), images=pl.len())
             .collect())
    baseline = times.filter(pl.col("method") == reference).select(*CELL, _baseline=pl.col("seconds"))
    frame = (times.join(baseline, on=CELL, how="left")
             .with_columns(ratio=pl.col("seconds") / pl.col("_baseline")).drop("_baseline")
             .sort(*CELL, "seconds"))
    note = ("seconds: the mean time per image of the method's maps (each batch's time over its images), std its spread "
            f"over the batches; ratio: seconds over {reference}'s in the same cell (– without it).")
    return PlainTable("Running time per image (seconds)", frame, [note])
