"""Bootstrap intervals, Friedman's test with Nemenyi's CD, the win rule, and the report's uncertainty outputs."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
from matplotlib.image import imread
from scipy import stats

from storage.cd_diagram import cliques, draw
from storage.ranking import cell_means, rank_tables
from storage.record import CellMarker, CellRecord, run_record
from storage.render import Intervals, RankTable
from storage.report import write_report
from storage.results import SCORES_SCHEMA, RunStore, saliency_table
from storage.statistics import (
    bootstrap_intervals,
    critical_difference,
    friedman_nemenyi,
    places,
    separable,
)

NAN = math.nan
# block (dataset, architecture) → means of A, B, C; lower is better for "del", higher for "ins"
BLOCKS = {("d1", "a1"): (0.1, 0.2, 0.3), ("d1", "a2"): (0.2, 0.1, 0.3), ("d2", "a1"): (0.1, 0.3, 0.2),
          ("d2", "a2"): (0.1, 0.2, 0.2), ("d3", "a1"): (0.4, 0.1, NAN)}  # d3/a1: C has no mean, the block is dropped
COMPLETE = [values for values in BLOCKS.values() if not any(map(math.isnan, values))]


def block_means(metric: str = "del") -> pl.DataFrame:
    """Cell means as :func:`cell_means` gives them, one row per (block, method)."""
    return pl.DataFrame([{"dataset": d, "architecture": a, "method": m, "metric": metric,
                          "mean": None if math.isnan(v) else v}
                         for (d, a), values in BLOCKS.items() for m, v in zip("ABC", values)])


def scores_frame(groups: dict[tuple[str, str, str, str], list[float]]) -> pl.DataFrame:
    return pl.DataFrame([{"dataset": d, "architecture": a, "method": m, "metric": metric, "image_id": str(i),
                          "value": v}
                         for (d, a, m, metric), values in groups.items() for i, v in enumerate(values)],
                        schema_overrides={"value": pl.Float64})


def test_friedman_statistic_and_p_value_are_scipys_and_mean_ranks_are_the_hand_ones():
    result = friedman_nemenyi(block_means(), {"del": "lower"})["del"]
    expected = stats.friedmanchisquare(*np.array(COMPLETE).T)
    assert result.statistic == pytest.approx(expected.statistic) and result.p_value == pytest.approx(expected.pvalue)
    # ranks per block: (1, 2, 3), (2, 1, 3), (1, 3, 2), (1, 2.5, 2.5)
    assert result.mean_ranks == pytest.approx({"A": 5 / 4, "B": 8.5 / 4, "C": 10.5 / 4})
    assert (result.blocks, result.dropped, result.defined) == (4, 1, True)
    assert result.critical_difference == pytest.approx(critical_difference(3, 4))


def test_direction_ranks_the_best_first():
    lower = friedman_nemenyi(block_means("del"), {"del": "lower"})["del"]
    higher = friedman_nemenyi(block_means("ins"), {"ins": "higher"})["ins"]
    assert min(lower.mean_ranks, key=lower.mean_ranks.get) == "A"  # the smallest means
    assert max(higher.mean_ranks, key=higher.mean_ranks.get) == "A"
    assert higher.mean_ranks == pytest.approx({m: 4 - r for m, r in lower.mean_ranks.items()})  # k + 1 − rank
    assert higher.statistic == pytest.approx(lower.statistic)


def test_friedman_with_too_few_methods_or_blocks_is_marked_undefined():
    two = friedman_nemenyi(block_means().filter(pl.col("method") != "C"), {"del": "lower"})["del"]
    assert math.isnan(two.statistic) and math.isnan(two.p_value)  # scipy's test needs 3 methods
    assert two.defined and two.blocks == 5 and two.critical_difference == pytest.approx(critical_difference(2, 5))
    one = friedman_nemenyi(block_means().filter(pl.col("dataset") == "d1", pl.col("architecture") == "a1"),
                           {"del": "lower"})["del"]
    assert not one.defined and one.blocks == 1 and math.isnan(one.critical_difference)
    with pytest.raises(ValueError, match="no cell means"):
        friedman_nemenyi(block_means().clear(), {"del": "lower"})
    with pytest.raises(KeyError, match="no direction"):
        friedman_nemenyi(block_means(), {"ins": "higher"})


def test_critical_difference_is_demsars():
    assert critical_difference(4, 10) == pytest.approx(1.483, abs=5e-4)  # q = 2.569 (Demšar 2006, Table 5a)
    assert critical_difference(4, 10) == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 10)), abs=1e-3)
    for k, q in {2: 1.960, 3: 2.343, 5: 2.728, 10: 3.164}.items():
        assert critical_difference(k, 7) / math.sqrt(k * (k + 1) / 42) == pytest.approx(q, abs=1e-3)
    with pytest.raises(ValueError, match="2 or more methods"):
        critical_difference(1, 10)


def test_bootstrap_interval_agrees_with_scipy_contains_the_mean_and_is_seeded():
    rng = np.random.default_rng(0)
    x = rng.gamma(2.0, 0.1, 40)
    frame = scores_frame({("d", "a", "m", "ins"): [*x, NAN], ("d", "a", "n", "ins"): list(rng.random(40))})
    for method in ("BCa", "percentile"):
        row = bootstrap_intervals(frame, method=method, resamples=500, seed=7).row(0, named=True)
        reference = stats.bootstrap((np.sort(x),), np.mean, n_resamples=500, method=method,
                                    rng=np.random.default_rng(7)).confidence_interval
        assert (row["low"], row["high"]) == pytest.approx((reference.low, reference.high), rel=1e-12)
        assert row["low"] < row["mean"] < row["high"] and row["mean"] == pytest.approx(x.mean())
        assert (row["n"], row["n_nan"]) == (41, 1)
    once = bootstrap_intervals(frame, seed=3)
    assert bootstrap_intervals(frame.sample(fraction=1.0, shuffle=True, seed=1), seed=3).equals(once)
    assert not bootstrap_intervals(frame, seed=4).equals(once)


def test_bootstrap_interval_narrows_with_more_images_and_needs_two_values():
    rng = np.random.default_rng(1)
    frame = scores_frame({("d", "a", "few", "ins"): list(rng.random(50)),
                          ("d", "a", "many", "ins"): list(rng.random(2000)),
                          ("d", "a", "one", "ins"): [0.3, NAN], ("d", "a", "none", "ins"): [NAN],
                          ("d", "a", "same", "ins"): [0.25] * 5})
    rows = {r["method"]: r for r in bootstrap_intervals(frame).iter_rows(named=True)}
    width = {m: rows[m]["high"] - rows[m]["low"] for m in ("few", "many")}
    assert width["many"] < width["few"] / 3  # ~ 1/√n: √40 ≈ 6.3
    assert (rows["one"]["mean"], rows["one"]["low"], rows["one"]["high"]) == (0.3, None, None)
    assert (rows["none"]["mean"], rows["none"]["low"], rows["none"]["n_nan"]) == (None, None, 1)
    assert rows["same"]["low"] == rows["same"]["high"] == 0.25


def test_separable_and_places():
    assert separable((0.1, 0.2), (0.3, 0.4)) and not separable((0.1, 0.3), (0.3, 0.4))  # touching is a tie
    assert not separable((0.5, 0.5), (0.5 * (1 + 1e-9), 0.5 * (1 + 1e-9)))  # float noise is no gap
    assert places([0.7, 0.65, 0.5, None], [(0.69, 0.71), (0.6, 0.72), (0.45, 0.55), None], higher=True) == [1, 1, 2,
                                                                                                         None]
    assert places([0.7, 0.65, 0.5], [(0.69, 0.71), (0.6, 0.68), (0.45, 0.55)], higher=True) == [1, 2, None]
    assert places([0.2, 0.1, 0.1, 0.3], higher=False) == [2, 1, 1, None]  # no intervals: the values alone


def test_overlapping_intervals_are_no_win_and_separated_ones_are():
    frame = pl.DataFrame({"method": ["A", "B", "C"], "ins": [0.70, 0.68, 0.40]})
    overlapping = Intervals({"ins": [(0.66, 0.74), (0.64, 0.72), (0.38, 0.42)]}, "95% intervals.")
    table = RankTable("t", frame, {"ins": "higher"}, intervals=overlapping)
    assert table.standing("ins") == [1, 1, 2]
    markdown = table.to_markdown()
    assert "| A | **0.700** |" in markdown and "| B | **0.680** |" in markdown and "| C | <u>0.400</u> |" in markdown
    assert markdown.endswith("- 95% intervals.\n- Tied within their intervals (marked alike, no win): ins best: A, B\n")
    separated = Intervals({"ins": [(0.69, 0.71), (0.67, 0.685), (0.38, 0.42)]}, "95% intervals.")
    table = RankTable("t", frame, {"ins": "higher"}, intervals=separated)
    assert table.standing("ins") == [1, 2, None] and "Tied" not in table.to_markdown()
    assert table.to_latex().count(r"\textbf") == 1


def test_the_means_table_marks_a_win_only_beyond_the_intervals():
    rng = np.random.default_rng(2)
    cells = [("d1", "a1"), ("d1", "a2"), ("d2", "a1")]
    close = scores_frame({(d, a, m, "ins"): list(mu + rng.normal(0, 0.1, 60)) for d, a in cells
                          for m, mu in (("A", 0.50), ("B", 0.51), ("C", 0.20))})
    means = rank_tables(close, {"ins": "higher"})["table12a_means"]
    assert dict(zip(means.frame["method"], means.standing("ins"))) == {"A": 1, "B": 1, "C": 2}
    assert "Tied within their intervals (marked alike, no win): ins best: A, B" in means.to_markdown()
    apart = close.with_columns(value=pl.when(pl.col("method") == "B").then(pl.col("value") + 0.3)
                               .otherwise(pl.col("value")))
    means = rank_tables(apart, {"ins": "higher"})["table12a_means"]
    assert dict(zip(means.frame["method"], means.standing("ins"))) == {"A": 2, "B": 1, "C": None}


def test_the_rank_tables_tie_mean_ranks_closer_than_the_cd():
    rows = {}
    for k in range(10):  # A always first; B and C take turns: mean ranks 1, 2.5, 2.5
        b, c = (0.2, 0.3) if k % 2 else (0.3, 0.2)
        rows.update({(f"d{k}", "a", "A", "del"): [0.1], (f"d{k}", "a", "B", "del"): [b],
                     (f"d{k}", "a", "C", "del"): [c]})
    ranks = rank_tables(scores_frame(rows), {"del": "lower"})["table12b_ranks"]
    assert ranks.frame["del"].to_list() == [1.0, 2.5, 2.5]
    assert ranks.standing("del") == [1, 2, 2]  # 1.5 > CD(3, 10) = 1.048 > 0
    assert "del 1.048 (N = 10)" in ranks.to_markdown()
    few = rank_tables(scores_frame({key: v for key, v in rows.items() if key[0] in ("d0", "d1", "d2")}),
                      {"del": "lower"})["table12b_ranks"]
    assert few.standing("del") == [1, 1, 1]  # CD(3, 3) = 1.913: no win
    single = rank_tables(scores_frame({key: v for key, v in rows.items() if key[0] == "d0"}),
                         {"del": "lower"})["ranks_dataset_d0"]
    assert single.frame["del"].to_list() == [1.0, 3.0, 2.0] and single.standing("del") == [1, None, 2]
    assert "No CD for del, mean rank" in single.to_markdown()  # one combination: marked by value alone


def test_cliques_join_the_methods_closer_than_the_cd():
    ranks = {"A": 1.0, "B": 1.5, "C": 2.9, "D": 3.2}
    assert cliques(ranks, 1.0) == [["A", "B"], ["C", "D"]]
    assert cliques(ranks, 2.0) == [["A", "B", "C"], ["B", "C", "D"]]
    assert cliques(ranks, 0.1) == []


METHODS = {"gradcam": 0.40, "expected_gradcam": 0.60, "hirescam": 0.45, "layercam": 0.30}
CELLS = [(d, a) for d in ("cub200", "pets") for a in ("resnet50", "vgg16")]


def make_run(path, cells=CELLS):
    store = RunStore(path)
    rng = np.random.default_rng(3)
    store.write_record(run_record("r", {}, seed=0, metric_directions={"insertion": "higher", "deletion": "lower"},
                                  cells=[CellRecord(dataset=d, architecture=a, images=20) for d, a in cells]))
    for dataset, architecture in cells:
        rows = [{"run": "r", "method": m, "image_id": str(i), "target": 0, "metric": metric,
                 "value": float(mu + shift + rng.normal(0, 0.05)), "seconds": 0.0}
                for i in range(20) for m, mu in METHODS.items()
                for metric, shift in (("insertion", 0.2), ("deletion", -0.2))]
        saliency = saliency_table("r", "gradcam", ["0"], [0], np.ones((1, 2, 2)), [0.0])
        store.write_shard(dataset, architecture, 0, saliency, pa.Table.from_pylist(rows, schema=SCORES_SCHEMA))
        store.mark_cell_done(dataset, architecture, CellMarker(images=20, shards=[0]))
    return store


def test_the_report_writes_intervals_the_friedman_table_and_cd_diagrams(tmp_path):
    store = make_run(tmp_path / "run")
    written = write_report(tmp_path / "run")
    out = tmp_path / "run" / "report"
    assert [p.name for p in written["confidence_intervals"]] == ["confidence_intervals.md", "confidence_intervals.csv",
                                                                 "confidence_intervals.tex"]
    intervals = pl.read_csv(out / "confidence_intervals.csv")
    assert intervals.columns == ["dataset", "architecture", "method", "metric", "mean", "low", "high", "n", "n_nan"]
    assert intervals.height == len(CELLS) * len(METHODS) * 2
    assert (intervals["low"] < intervals["mean"]).all() and (intervals["mean"] < intervals["high"]).all()
    friedman = pl.read_csv(out / "friedman.csv")
    assert friedman.columns == ["metric", "methods", "blocks", "dropped", "chi2", "p", "CD", *sorted(METHODS)]
    row = friedman.filter(pl.col("metric") == "insertion").row(0, named=True)
    means = cell_means(store.scores()).filter(pl.col("metric") == "insertion").collect()
    samples = [means.filter(pl.col("method") == m).sort("dataset", "architecture")["mean"].to_numpy()
               for m in sorted(METHODS)]
    assert row["chi2"] == pytest.approx(stats.friedmanchisquare(*samples).statistic)
    assert (row["methods"], row["blocks"], row["dropped"]) == (4, 4, 0)
    assert row["CD"] == pytest.approx(critical_difference(4, 4))
    assert row["expected_gradcam"] == 1.0 and row["layercam"] == 4.0
    assert "Friedman's statistic (1937)" in (out / "friedman.md").read_text()
    assert [p.name for p in written["cd_diagrams"]] == ["cd_deletion.png", "cd_insertion.png"]
    for path in written["cd_diagrams"]:
        assert path.parent == out / "figures" and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert path.stat().st_size > 10_000
        height, width, _ = imread(path).shape
        assert width > 600 and height > 200
    ranks = (out / "table12b_ranks.md").read_text()
    assert "CD over the N combinations where every method has a mean: deletion 2.345 (N = 4)" in ranks


def test_a_single_combination_gets_intervals_but_no_friedman_part(tmp_path):
    make_run(tmp_path / "run", CELLS[:1])
    written = write_report(tmp_path / "run")
    assert "confidence_intervals" in written and "friedman" not in written and "cd_diagrams" not in written
    assert not (tmp_path / "run" / "report" / "figures").exists()


def test_draw_refuses_an_undefined_result():
    one = friedman_nemenyi(block_means().filter(pl.col("dataset") == "d3"), {"del": "lower"})["del"]
    with pytest.raises(ValueError, match="no critical difference"):
        draw(one)
