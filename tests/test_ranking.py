"""Rank tables against a hand-computed example (directions, average ranks for ties, NaN accounting)."""

from __future__ import annotations

import math

import polars as pl
import pytest

from storage.ranking import cell_means, combination_ranks, nan_report, rank_tables

NAN = math.nan
# (dataset, method, metric) → the two images' values; every combination uses architecture "a1"
VALUES = {
    ("d1", "A", "ins"): [0.8, 0.6], ("d1", "B", "ins"): [0.5, 0.5], ("d1", "C", "ins"): [0.7, 0.7],
    ("d1", "A", "del"): [0.1, 0.3], ("d1", "B", "del"): [0.4, NAN], ("d1", "C", "del"): [0.3, 0.3],
    ("d2", "A", "ins"): [0.2, 0.4], ("d2", "B", "ins"): [0.9, 0.7], ("d2", "C", "ins"): [NAN, NAN],
    ("d2", "A", "del"): [0.5, 0.5], ("d2", "B", "del"): [0.5, 0.5], ("d2", "C", "del"): [0.1, 0.1],
}
DIRECTIONS = {"ins": "higher", "del": "lower"}


@pytest.fixture
def scores() -> pl.DataFrame:
    return pl.DataFrame([{"run": "r", "dataset": d, "architecture": "a1", "method": m, "image_id": f"i{k}",
                          "target": 0, "metric": metric, "value": v, "seconds": 0.0}
                         for (d, m, metric), values in VALUES.items() for k, v in enumerate(values)])


def column(table, name):
    return dict(zip(table.frame["method"].to_list(), table.frame[name].to_list()))


def test_combination_ranks_by_hand(scores):
    ranks = combination_ranks(cell_means(scores), DIRECTIONS).collect()
    got = {(r["dataset"], r["method"], r["metric"]): r["rank"] for r in ranks.iter_rows(named=True)}
    assert got == {
        ("d1", "A", "ins"): 1.5, ("d1", "C", "ins"): 1.5, ("d1", "B", "ins"): 3.0,  # tie → average rank
        ("d1", "A", "del"): 1.0, ("d1", "C", "del"): 2.0, ("d1", "B", "del"): 3.0,  # B's NaN image left out
        ("d2", "B", "ins"): 1.0, ("d2", "A", "ins"): 2.0, ("d2", "C", "ins"): None,  # all-NaN: no rank
        ("d2", "C", "del"): 1.0, ("d2", "A", "del"): 2.5, ("d2", "B", "del"): 2.5,
    }


def test_tables_by_hand(scores):
    tables = rank_tables(scores.lazy(), DIRECTIONS)
    assert sorted(tables) == ["ranks_architecture_a1", "ranks_dataset_d1", "ranks_dataset_d2", "table12a_means",
                              "table12b_ranks"]
    means, ranks = tables["table12a_means"], tables["table12b_ranks"]
    assert column(means, "ins") == pytest.approx({"A": 0.5, "B": 0.65, "C": 0.7})
    assert column(means, "del") == pytest.approx({"A": 0.35, "B": 0.45, "C": 0.2})
    assert column(ranks, "ins") == pytest.approx({"A": 1.75, "B": 2.0, "C": 1.5})
    assert column(ranks, "del") == pytest.approx({"A": 1.75, "B": 2.75, "C": 1.5})
    assert column(ranks, "mean rank") == pytest.approx({"A": 1.75, "B": 2.375, "C": 1.5})
    assert column(tables["ranks_dataset_d1"], "ins") == pytest.approx({"A": 1.5, "B": 3.0, "C": 1.5})
    assert column(tables["ranks_architecture_a1"], "del") == column(ranks, "del")
    assert means.notes == ["del: 1 of 4 values undefined (NaN) for B",
                           "ins: 2 of 4 values undefined (NaN), no mean in 1 combination(s) for C"]


def test_best_bold_second_underlined(scores):
    means = rank_tables(scores, DIRECTIONS)["table12a_means"]
    # ins: B's 95% interval (0.60–0.70, two images per combination) reaches C's 0.70, a tie for best; A is second
    assert means.standing("ins") == [2, 1, 1] and means.standing("del") == [2, None, 1]
    markdown = means.to_markdown()
    assert "| C | **0.200** | **0.700** |" in markdown and "| A | <u>0.350</u> | <u>0.500</u> |" in markdown
    assert "| B | 0.450 | **0.650** |" in markdown and "- Tied within their intervals (marked alike, no win): ins best: B, C" \
        in markdown
    assert "| method | del ↓ | ins ↑ |" in markdown and "- ins: 2 of 4 values undefined" in markdown
    latex = means.to_latex()
    assert r"C & \textbf{0.200} & \textbf{0.700} \\" in latex and r"\textbf{0.650}" in latex
    assert r"\underline{0.500}" in latex
    assert means.to_csv().splitlines()[0] == "method,del,ins"
    ranks = rank_tables(scores, DIRECTIONS)["table12b_ranks"]
    assert ranks.standing("ins") == [2, None, 1]  # ranks: lower is better whatever the metric's direction


def test_ties_for_best_are_all_bold_and_latex_is_escaped():
    frame = pl.DataFrame({"dataset": ["d"] * 3, "architecture": ["a"] * 3, "method": ["m_1", "m_2", "m_3"],
                          "metric": ["top_k"] * 3, "value": [0.5, 0.5, 0.1]})
    table = rank_tables(frame, {"top_k": "higher"})["table12a_means"]
    assert table.standing("top_k") == [1, 1, 2]
    assert r"m\_1 & \textbf{0.500}" in table.to_latex() and r"top\_k $\uparrow$" in table.to_latex()


def test_missing_direction_and_nan_report(scores):
    with pytest.raises(KeyError, match="no direction .* for metric\\(s\\) del"):
        rank_tables(scores, {"ins": "higher"})
    with pytest.raises(ValueError, match="'higher' or 'lower'"):
        rank_tables(scores, {"ins": "up", "del": "lower"})
    report = nan_report(cell_means(scores))
    assert report.select("dataset", "method", "metric", "n_nan", "n").rows() == [("d1", "B", "del", 1, 2),
                                                                               ("d2", "C", "ins", 2, 2)]


def test_written_files(scores, tmp_path):
    paths = rank_tables(scores, DIRECTIONS)["table12b_ranks"].write(tmp_path, "table12b_ranks")
    assert sorted(p.name for p in paths) == ["table12b_ranks.csv", "table12b_ranks.md", "table12b_ranks.tex"]
    assert pl.read_csv(tmp_path / "table12b_ranks.csv")["mean rank"].to_list() == pytest.approx([1.75, 2.375, 1.5])


def test_means_equal_up_to_float_noise_tie_whatever_their_order():
    base = 0.123456789
    for noise in (1e-10, -1e-10):
        frame = pl.DataFrame({"dataset": ["d"] * 3, "architecture": ["a"] * 3, "method": ["gradcam", "xgradcam", "other"],
                              "metric": ["ins"] * 3, "value": [base, base * (1 + noise), 0.5]})
        ranks = combination_ranks(cell_means(frame), {"ins": "higher"}).collect()
        got = dict(zip(ranks["method"], ranks["rank"]))
        assert got == {"other": 1.0, "gradcam": 2.5, "xgradcam": 2.5}
    apart = pl.DataFrame({"dataset": ["d"] * 2, "architecture": ["a"] * 2, "method": ["x", "y"], "metric": ["del"] * 2,
                          "value": [0.5, 0.5 * (1 + 1e-4)]})
    ranks = combination_ranks(cell_means(apart), {"del": "lower"}).collect()
    assert dict(zip(ranks["method"], ranks["rank"])) == {"x": 1.0, "y": 2.0}  # a real difference still orders


def test_running_time_is_seconds_per_image_with_the_ratio_to_gradcam():
    from storage.ranking import running_time_table

    saliency = pl.DataFrame({"dataset": "d", "architecture": ["a"] * 4 + ["b"] * 2,
                             "method": ["gradcam", "gradcam", "scorecam", "scorecam", "scorecam", "scorecam"],
                             "seconds": [0.1, 0.3, 2.0, 4.0, 1.0, 1.0]})
    frame = running_time_table(saliency).frame
    rows = {(r["architecture"], r["method"]): r for r in frame.iter_rows(named=True)}
    assert rows[("a", "scorecam")]["seconds"] == 3.0 and rows[("a", "scorecam")]["ratio"] == 15.0
    assert rows[("a", "gradcam")]["images"] == 2 and rows[("b", "scorecam")]["ratio"] is None  # no Grad-CAM in b
