"""The papers' reported values ship beside their presets and are set beside a run's in the report."""

from __future__ import annotations

import math

import polars as pl
import pytest

from jobs.paper import paper_values, presets_with_paper_values
from jobs.spec import load_spec
from storage.paper import paper_tables, read_paper_values

AGGREGATE = "*"  # a dataset or architecture of "*": the paper's mean over all of the preset's (Tables 12a, 13-25)
METHOD_TIME = "seconds"  # the method's time per image (the saliency table's column), not a metric (Table 10)


def test_every_reported_value_names_a_cell_method_and_metric_of_its_preset():
    assert {"opticam_imagenet_cnn", "opticam_localization", "opticam_ablation", "fine_grained_40", "imagenet_table1",
            "imagenet_table5", "imagenet_table8", "coco_localization", "cifar10_infidelity",
            "timing"} <= set(presets_with_paper_values())
    for preset in presets_with_paper_values():
        spec = load_spec(preset)
        frame, source = paper_values(preset)
        assert source.endswith(f"{preset}.csv") and frame.height
        datasets, architectures = {d.name for d in spec.datasets}, {a.name for a in spec.architectures}
        for row in frame.iter_rows(named=True):
            assert row["dataset"] in datasets | {AGGREGATE}, (preset, row)
            assert row["architecture"] in architectures | {AGGREGATE}, (preset, row)
            assert row["method"] in spec.methods, (preset, row)
            assert row["metric"] in spec.metrics or (preset == "timing" and row["metric"] == METHOD_TIME), (preset, row)


def test_fake_cams_box_scores_are_the_same_on_every_network():
    # seed 003 Table A7: LE, F1, BoxAcc and SP of Fake-CAM depend on the boxes alone
    frame, _ = paper_values("opticam_localization")
    fake = frame.filter(pl.col("method") == "fakecam")
    for metric in ("localization_error", "localization_f1", "box_accuracy", "standard_pointing"):
        assert fake.filter(pl.col("metric") == metric)["value"].n_unique() == 1, metric
    assert fake.filter(pl.col("metric") == "saliency_metric")["value"].n_unique() == 2  # SM uses the model


def _scores(values: dict[str, list[float]]) -> pl.DataFrame:
    rows = [{"dataset": "d", "architecture": "a", "method": method, "metric": "m", "value": v}
            for method, vs in values.items() for v in vs]
    return pl.DataFrame(rows)


def _paper(values: dict[str, float], table: str = "1") -> pl.DataFrame:
    return pl.DataFrame({"table": table, "dataset": "d", "architecture": "a", "method": list(values), "metric": "m",
                         "value": list(values.values()), "scale": 100.0})


def test_the_comparison_scales_this_runs_means_and_measures_rank_agreement():
    scores = _scores({"x": [0.1, 0.3], "y": [0.5], "z": [0.9]})
    tables = paper_tables(scores, _paper({"x": 25.0, "y": 40.0, "z": 80.0, "w": 1.0}), "p.csv")
    comparison = tables["paper_comparison"].frame
    x = comparison.filter(pl.col("method") == "x").row(0, named=True)
    assert math.isclose(x["this_run"], 20.0) and math.isclose(x["difference"], -5.0) and x["images"] == 2
    assert comparison.filter(pl.col("method") == "w")["this_run"].is_null().all()  # no counterpart
    assert any("1 of the paper's 4 values" in note for note in tables["paper_comparison"].notes)
    (agreement,) = tables["paper_agreement"].frame.iter_rows(named=True)
    assert agreement["methods"] == 3 and math.isclose(agreement["kendall_tau"], 1.0)
    reversed_order = paper_tables(scores, _paper({"x": 80.0, "y": 40.0, "z": 25.0}), "p.csv")
    assert math.isclose(reversed_order["paper_agreement"].frame["kendall_tau"][0], -1.0)
    two = paper_tables(scores, _paper({"x": 1.0, "y": 2.0}), "p.csv")
    assert two["paper_agreement"].frame["kendall_tau"][0] is None  # too few methods for a rank agreement


def test_averages_over_combinations_and_running_times_have_counterparts():
    rows = [{"dataset": d, "architecture": a, "method": "x", "metric": "m", "value": v}
            for d, a, v in (("d1", "a1", 0.1), ("d1", "a1", 0.3), ("d1", "a2", 0.6), ("d2", "a1", 0.5),
                            ("d2", "a2", float("nan")))]  # cell d2/a2 has no defined value: left out of averages
    paper = pl.DataFrame({"table": ["12a", "14", "15", "10"], "dataset": ["*", "d1", "*", "d1"],
                          "architecture": ["*", "*", "a1", "a1"], "method": "x", "metric": ["m", "m", "m", "seconds"],
                          "value": [0.4, 0.4, 0.35, 0.01], "scale": 1.0})
    seconds = pl.DataFrame({"dataset": "d1", "architecture": "a1", "method": "x", "seconds": [0.02, 0.04]})
    comparison = paper_tables(pl.DataFrame(rows), paper, "p.csv", seconds)["paper_comparison"].frame
    ours = dict(zip(comparison["table"], comparison["this_run"]))
    assert math.isclose(ours["12a"], (0.2 + 0.6 + 0.5) / 3)  # the mean of the cell means, not of the images
    assert math.isclose(ours["14"], (0.2 + 0.6) / 2) and math.isclose(ours["15"], (0.2 + 0.5) / 2)
    assert math.isclose(ours["10"], 0.03)


@pytest.mark.parametrize(("text", "message"), [
    ("table,dataset,architecture,method,metric,value\n1,d,a,x,m,1\n", "missing column 'scale'"),
    ("table,dataset,architecture,method,metric,value,scale\n1,d,a,x,m,,100\n", "row 2 has an empty field"),
    ("table,dataset,architecture,method,metric,value,scale\n1,d,a,x,m,1,100\n2,d,a,x,m,2,100\n", "is given twice"),
    ("table,dataset,architecture,method,metric,value,scale\n1,d,a,x,m,one,100\n", "p.csv"),
])
def test_a_bad_paper_file_is_one_line_naming_it(tmp_path, text, message):
    path = tmp_path / "p.csv"
    path.write_text(text)
    with pytest.raises(ValueError, match=message) as caught:
        read_paper_values(path)
    assert "\n" not in str(caught.value)
