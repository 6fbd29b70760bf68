"""Uncertainty of the rank tables: bootstrap intervals, Friedman's test with Nemenyi's critical difference, the win rule.

1. Combination ranks: within each (dataset, architecture, metric) block, methods ranked by their cell mean in the
   metric's direction (1 = best), ties averaged — the ranks of the tables and of Friedman's test alike.
2. Bootstrap (Efron 1979): per (dataset, architecture, method, metric), the mean over images and its interval from
   the resampled means θ*_b = Σ_i c_bi x_i / n, c_b ~ Multinomial(n, 1/n) (``scipy.stats.bootstrap``; percentile,
   basic or BCa, Efron & Tibshirani 1993 §13, §14.3).
3. Friedman (1937): with R̄_j the mean rank of method j over N blocks of k methods,
   χ²_F = 12N / (k(k+1)) · [Σ_j R̄_j² − k(k+1)²/4] (tie-corrected), χ²(k − 1) under equal methods
   (``scipy.stats.friedmanchisquare``). Nemenyi's critical difference (Demšar 2006, §3.2.2):
   CD = q_α · √(k(k+1) / (6N)), q_α = Q_{1−α}(k, ∞) / √2 with Q the studentized range.
4. The win rule: two values are *separable* when their intervals are disjoint; a table marks as best the best value
   and every value not separable from it (a tie, not a win), and as second the best of the rest with every value of
   the rest not separable from that one.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal

import numpy as np
import polars as pl
from scipy import stats

__all__ = ["CONFIDENCE", "TIE_RTOL", "Direction", "FriedmanResult", "Interval", "bootstrap_intervals",
           "combination_ranks", "critical_difference", "friedman_nemenyi", "places", "separable"]

Direction = Literal["higher", "lower"]
Interval = tuple[float, float]
CELL = ["dataset", "architecture"]
KEYS = [*CELL, "method", "metric"]
CONFIDENCE = 0.95
TIE_RTOL = 1e-6  # cell means this close (relative) rank as ties; intervals this close touch
_COUNTS = 1 << 22  # resample counts held at once: resamples per batch × images


def _lazy(frame: pl.DataFrame | pl.LazyFrame) -> pl.LazyFrame:
    return frame.lazy() if isinstance(frame, pl.DataFrame) else frame


def _directions_frame(metrics: list[str], directions: Mapping[str, Direction]) -> pl.LazyFrame:
    missing = sorted(set(metrics) - set(directions))
    if missing:
        raise KeyError(f"no direction (higher/lower is better) given for metric(s) {', '.join(missing)}")
    wrong = {m: d for m, d in directions.items() if d not in ("higher", "lower")}
    if wrong:
        raise ValueError(f"direction must be 'higher' or 'lower', got {wrong}")
    return pl.LazyFrame({"metric": metrics, "higher": [directions[m] == "higher" for m in metrics]},
                        schema={"metric": pl.String, "higher": pl.Boolean})


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


def _bootstrap(values: np.ndarray, *, confidence: float, resamples: int, seed: int,
               method: str) -> tuple[np.ndarray, np.ndarray]:
    """Bounds for each row of ``values`` (groups × n): one ``scipy.stats.bootstrap`` over the n image positions.

    A resample of positions is a count vector c (Σ c = n); every row's resampled mean is c · x / n, so one
    matrix product gives all rows' means — the same resamples as ``bootstrap`` of each row alone.
    """
    groups, size = values.shape

    def means(positions: np.ndarray, axis: int = -1) -> np.ndarray:
        positions = np.asarray(positions, dtype=np.intp)
        width = positions.shape[-1]
        flat = positions.reshape(-1, width)
        offsets = np.arange(len(flat))[:, None] * size
        counts = np.bincount((flat + offsets).ravel(), minlength=len(flat) * size).reshape(len(flat), size)
        return (values @ counts.T.astype(np.float64) / width).reshape(groups, *positions.shape[:-1])

    with warnings.catch_warnings(), np.errstate(divide="ignore", invalid="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)  # BCa of a constant row: set below
        result = stats.bootstrap((np.arange(size),), means, n_resamples=resamples, batch=max(1, _COUNTS // size),
                                 vectorized=True, confidence_level=confidence, method=method,
                                 rng=np.random.default_rng(seed))
    constant = values.min(axis=1) == values.max(axis=1)
    low = np.where(constant, values[:, 0], result.confidence_interval.low)
    high = np.where(constant, values[:, 0], result.confidence_interval.high)
    return low, high


def bootstrap_intervals(scores: pl.DataFrame | pl.LazyFrame, *, confidence: float = CONFIDENCE,
                        resamples: int = 1000, seed: int = 0,
                        method: Literal["percentile", "basic", "BCa"] = "BCa") -> pl.DataFrame:
    """Per (dataset, architecture, method, metric): ``mean`` of the defined values, its interval ``low``–``high``.

    ``n`` counts the group's values and ``n_nan`` the undefined ones (NaN or null), which are left out. The
    interval of a group equals ``scipy.stats.bootstrap((x,), np.mean, n_resamples=resamples, method=method,
    confidence_level=confidence, rng=np.random.default_rng(seed))`` of its defined values ``x`` in ascending order,
    so it depends on the values and the seed only, not on the rows' order; groups of one size share the resamples.
    A group with fewer than two defined values has null bounds; one of equal values has ``low == high``.
    """
    value = pl.col("value")
    undefined = value.is_null() | value.is_nan()
    groups = (_lazy(scores).group_by(KEYS).agg(n=pl.len(), n_nan=undefined.sum(),
                                               values=value.filter(~undefined).sort())
              .sort(KEYS).collect())
    counts = groups["values"].list.len().to_numpy()
    low, high = np.full(groups.height, np.nan), np.full(groups.height, np.nan)
    for size in np.unique(counts[counts >= 2]):
        rows = np.flatnonzero(counts == size)
        values = groups[rows]["values"].explode().to_numpy().reshape(len(rows), int(size))
        low[rows], high[rows] = _bootstrap(values, confidence=confidence, resamples=resamples, seed=seed,
                                           method=method)
    return groups.select(*KEYS, mean=pl.col("values").list.mean(), low=pl.Series(low, nan_to_null=True),
                         high=pl.Series(high, nan_to_null=True), n=pl.col("n").cast(pl.Int64),
                         n_nan=pl.col("n_nan").cast(pl.Int64))


@cache
def _q(methods: int, alpha: float) -> float:
    return float(stats.studentized_range.ppf(1 - alpha, methods, np.inf)) / math.sqrt(2)


def critical_difference(methods: int, blocks: int, alpha: float = 0.05) -> float:
    """Nemenyi's CD = q_α · √(k(k+1) / (6N)) for k ``methods`` over N ``blocks`` (Demšar 2006, §3.2.2).

    q_α = Q_{1−α}(k, ∞) / √2, Q the studentized range (``scipy.stats.studentized_range``): two mean ranks that
    differ by at least CD differ at level α, all pairs at once.
    """
    if methods < 2 or blocks < 1:
        raise ValueError(f"a critical difference needs 2 or more methods and 1 or more blocks, got {methods} "
                         f"and {blocks}")
    return _q(methods, alpha) * math.sqrt(methods * (methods + 1) / (6 * blocks))


@dataclass(frozen=True)
class FriedmanResult:
    """Friedman's test and Nemenyi's CD for one metric over the combinations (blocks) where every method has a mean.

    ``statistic`` (χ²_F) and ``p_value`` are NaN with fewer than 3 methods (``scipy.stats.friedmanchisquare``) or
    2 blocks; ``critical_difference`` is NaN with fewer than 2 of either (:attr:`defined` false). ``dropped``
    counts the blocks left out because some method has no mean there; ``mean_ranks`` are over the ``blocks`` kept.
    """

    metric: str
    statistic: float
    p_value: float
    blocks: int
    dropped: int
    mean_ranks: dict[str, float]
    critical_difference: float
    alpha: float

    @property
    def defined(self) -> bool:
        """Whether there are 2 or more methods and 2 or more blocks: a CD (and with 3 methods, a test)."""
        return len(self.mean_ranks) >= 2 and self.blocks >= 2


def _friedman(metric: str, methods: list[str], ranks: np.ndarray, dropped: int, alpha: float) -> FriedmanResult:
    blocks, k = ranks.shape
    statistic = p_value = critical = math.nan
    if k >= 3 and blocks >= 2:
        with np.errstate(divide="ignore", invalid="ignore"):  # every block tied: no test (NaN)
            result = stats.friedmanchisquare(*ranks.T)
        statistic, p_value = float(result.statistic), float(result.pvalue)
    if k >= 2 and blocks >= 2:
        critical = critical_difference(k, blocks, alpha)
    mean_ranks = ranks.mean(axis=0) if blocks else np.full(k, math.nan)
    return FriedmanResult(metric, statistic, p_value, blocks, dropped, dict(zip(methods, mean_ranks.tolist())),
                          critical, alpha)


def friedman_nemenyi(means: pl.DataFrame | pl.LazyFrame, directions: Mapping[str, Direction], *,
                     alpha: float = 0.05) -> dict[str, FriedmanResult]:
    """Per metric of ``means`` (:func:`storage.ranking.cell_means`): Friedman's test and Nemenyi's CD over the blocks.

    Blocks are the (dataset, architecture) combinations; methods are ranked in each by :func:`combination_ranks`
    (1 = best in the metric's direction, ties averaged). The methods are those with a mean in some block; a block
    where one of them has none is dropped (and counted). The ranks are the samples given to
    ``scipy.stats.friedmanchisquare``, which ranks them again unchanged, so float-noise ties stay ties.
    """
    ranks = combination_ranks(_lazy(means), directions).collect()
    if ranks.height == 0:
        raise ValueError("no cell means to test")
    wide = ranks.pivot(on="method", index=[*CELL, "metric"], values="rank", sort_columns=True)
    results = {}
    for (metric,), blocks in sorted(wide.partition_by("metric", as_dict=True).items()):
        methods = [column for column in blocks.columns[3:] if blocks[column].null_count() < blocks.height]
        complete = blocks.select(methods).drop_nulls()
        matrix = complete.to_numpy().astype(np.float64).reshape(complete.height, len(methods))
        results[metric] = _friedman(metric, methods, matrix, blocks.height - complete.height, alpha)
    return results


def separable(a: Interval, b: Interval, rtol: float = TIE_RTOL) -> bool:
    """Whether intervals ``a`` and ``b`` are disjoint: one ends before the other begins by more than ``rtol`` of the
    larger magnitude. Overlapping or touching intervals (two equal values among them) are not separable."""
    start, end = max(a[0], b[0]), min(a[1], b[1])
    return start - end > rtol * max(abs(start), abs(end))


def places(values: Sequence[float | None], intervals: Sequence[Interval | None] | None = None, *,
           higher: bool) -> list[int | None]:
    """Per value: 1 for the best and every value not :func:`separable` from it; 2 for the best of the rest and every
    value of the rest not separable from that one; else None.

    ``intervals[i]`` is value i's ``(low, high)``; a missing one (or none at all) is the value itself, so without
    intervals 1 marks the best value with its ties and 2 the second-best. Undefined values (None, NaN) take no place.
    """
    defined = [i for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    bounds = {i: (intervals[i] if intervals is not None and intervals[i] is not None else (values[i], values[i]))
              for i in defined}
    rest = sorted(defined, key=lambda i: -values[i] if higher else values[i])
    out: list[int | None] = [None] * len(values)
    for place in (1, 2):
        if not rest:
            break
        leader = bounds[rest[0]]
        group = [i for i in rest if not separable(leader, bounds[i])]
        for i in group:
            out[i] = place
        rest = [i for i in rest if i not in group]
    return out
