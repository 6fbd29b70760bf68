"""The report's second-moment diagnostics: their table, † on rank-deficient cells' methods, old runs unchanged."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from storage.ranking import diagnostics_frame, rank_tables
from storage.record import CellMarker, CellRecord, run_record
from storage.report import write_report
from storage.results import SCORES_SCHEMA, RunStore, saliency_table

DIRECTIONS = {"insertion": "higher", "deletion": "lower"}
CELLS = [("cub200", "resnet50"), ("pets", "vgg16")]
SCORES = [("gradcam", "insertion", 0.4), ("expected_gradcam", "insertion", 0.6), ("gradcam", "deletion", 0.2),
          ("expected_gradcam", "deletion", 0.3)]
FULL = {"perturbations": 4096, "channels": 2048, "references": 4096, "pool": 5994, "rank": 2048,
        "condition_number": 1234.5678, "covariance_condition_number": 40.5, "marchenko_pastur": 33.97, "above_ridge": 2048, "full_rank": True}
DEFICIENT = {"perturbations": 64, "channels": 512, "references": 50, "pool": None, "rank": 51,
             "condition_number": None, "covariance_condition_number": None, "marchenko_pastur": None, "above_ridge": 51, "full_rank": False}
NOTE = ("† expected_gradcam: rank(M̂) < K in 1 of {n} {cells} (pets/vgg16 rank 51/512); "
        "its weights are not the infidelity optimum (App. B.2)")
MARKED = ["table12a_means", "table12b_ranks", "ranks_dataset_pets", "ranks_architecture_vgg16"]
UNMARKED = ["ranks_dataset_cub200", "ranks_architecture_resnet50"]


def make_run(path, diagnostics: bool = True):
    store = RunStore(path)
    cells = [CellRecord(dataset=d, architecture=a, images=2) for d, a in CELLS]
    record = run_record("r", {}, seed=0, metric_directions=DIRECTIONS, cells=cells)
    if diagnostics:
        record = record.with_diagnostics(*CELLS[0], {"expected_gradcam": FULL})
        record = record.with_diagnostics(*CELLS[1], {"expected_gradcam": DEFICIENT})
    store.write_record(record)
    for k, (dataset, architecture) in enumerate(CELLS):
        rows = [{"run": "r", "method": m, "image_id": str(i), "target": 0, "metric": metric,
                 "value": v + 0.1 * k, "seconds": 0.0}
                for i in range(2) for m, metric, v in SCORES]
        saliency = saliency_table("r", "gradcam", ["0"], [0], np.ones((1, 2, 2)), [0.0])
        store.write_shard(dataset, architecture, 0, saliency, pa.Table.from_pylist(rows, schema=SCORES_SCHEMA))
        store.mark_cell_done(dataset, architecture, CellMarker(images=2, shards=[0]))
    return store


def test_a_report_of_an_unfinished_run_says_so_in_every_table(tmp_path):
    store = make_run(tmp_path / "run")
    (tmp_path / "run" / "cells" / "dataset=pets" / "architecture=vgg16.json").unlink()
    written = write_report(tmp_path / "run")
    note = ("Incomplete run: 1 of 2 cells have not finished (pets/vgg16); these tables cover the shards written "
            "so far. Rerun the job to complete it.")
    for name, paths in written.items():
        if name not in ("nan_report", "diagnostics"):
            assert all(note in p.read_text() for p in paths if p.suffix == ".md"), name
    assert store.cell_done("cub200", "resnet50") is not None


def read(out, name, suffix):
    return (out / f"{name}.{suffix}").read_text()


def test_diagnostics_table_lists_every_cell_with_its_values(tmp_path):
    make_run(tmp_path / "run")
    written = write_report(tmp_path / "run")
    out = tmp_path / "run" / "report"
    assert sorted(p.name for p in written["diagnostics"]) == ["diagnostics.csv", "diagnostics.md", "diagnostics.tex"]
    csv = pl.read_csv(out / "diagnostics.csv")
    assert csv.columns == ["dataset", "architecture", "method", "M", "K", "R", "pool", "rank", "κ", "κ Cov", "MP κ",
                           "above λ", "full rank"]
    assert csv.rows() == [("cub200", "resnet50", "expected_gradcam", 4096, 2048, 4096, 5994, 2048, 1234.5678, 40.5,
                           33.97, 2048, "yes"),
                          ("pets", "vgg16", "expected_gradcam", 64, 512, 50, None, 51, None, None, None, 51, "no")]
    markdown = read(out, "diagnostics", "md")
    assert "| dataset | architecture | method | M | K | R | pool | rank | κ | κ Cov | MP κ | above λ | full rank |" in markdown
    assert "|:---|:---|:---|---:|---:|---:|---:|---:|---:|---:|---:|---:|:---|" in markdown
    assert "| cub200 | resnet50 | expected_gradcam | 4096 | 2048 | 4096 | 5994 | 2048 | 1235 | 40.5 | 33.97 | 2048 | yes |" \
        in markdown
    assert "| pets | vgg16 | expected_gradcam | 64 | 512 | 50 | – | 51 | – | – | – | 51 | no |" in markdown
    assert "**" not in markdown.split("\n", 1)[1] and "<u>" not in markdown  # nothing highlighted but the title
    latex = read(out, "diagnostics", "tex")
    assert (r"dataset & architecture & method & M & K & R & pool & rank & $\kappa$ & $\kappa$ Cov & MP $\kappa$ & "
            r"above $\lambda$ & full rank \\") in latex
    assert r"pets & vgg16 & expected\_gradcam & 64 & 512 & 50 & – & 51 & – & – & – & 51 & no \\" in latex
    assert r"\caption{Second-moment diagnostics of \^{M} per combination (App. B.2)}" in latex
    assert r"\begin{tabular}{lllrrrrrrrrrl}" in latex and r"\textbf" not in latex and r"\underline" not in latex


def test_rank_deficient_cells_are_marked_in_the_tables_that_include_them(tmp_path):
    make_run(tmp_path / "run")
    write_report(tmp_path / "run")
    out = tmp_path / "run" / "report"
    for name in MARKED:
        n = 2 if name.startswith("table12") else 1
        note = NOTE.format(n=n, cells="cell" if n == 1 else "cells")
        markdown, csv, latex = (read(out, name, s) for s in ("md", "csv", "tex"))
        assert f"- {note}" in markdown and f"% {note}" in latex, name
        assert "| expected_gradcam† |" in markdown and "| gradcam |" in markdown and markdown.count("†") == 2
        assert sorted(pl.read_csv(out / f"{name}.csv")["method"]) == ["expected_gradcam†", "gradcam"], csv
        assert "\nexpected\\_gradcam$^\\dagger$ & " in latex, name
    for name in UNMARKED:
        for suffix in ("md", "csv", "tex"):
            text = read(out, name, suffix)
            assert "†" not in text and "dagger" not in text and "rank(M̂)" not in text, (name, suffix)
        assert sorted(pl.read_csv(out / f"{name}.csv")["method"]) == ["expected_gradcam", "gradcam"]


def test_a_run_without_diagnostics_reports_as_before(tmp_path):
    store = make_run(tmp_path / "run", diagnostics=False)
    written = write_report(tmp_path / "run")
    out = tmp_path / "run" / "report"
    expected = rank_tables(store.scores(), DIRECTIONS)
    uncertainty = ["confidence_intervals", "friedman", "running_time"]
    assert set(written) == {*expected, "nan_report", *uncertainty, "cd_diagrams", "html"}
    assert not (out / "diagnostics.md").exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["nan_report.csv", "figures", "index.html",
         *(f"{name}.{s}" for name in [*expected, *uncertainty] for s in ("md", "csv", "tex"))])
    assert [p.name for p in written["cd_diagrams"]] == ["cd_deletion.png", "cd_insertion.png"]
    for name, table in expected.items():
        assert not table.marks
        assert read(out, name, "md") == table.to_markdown() and read(out, name, "tex") == table.to_latex()
        assert read(out, name, "csv") == table.to_csv()
        assert "†" not in read(out, name, "md") + read(out, name, "csv") + read(out, name, "tex")
    # the same with no "cells" at all and with explicit directions and no record
    store.write_record(store.read_record().model_copy(update={"cells": []}))
    assert set(write_report(tmp_path / "run", tmp_path / "again")) == set(written)
    (tmp_path / "run" / "run.json").unlink()
    assert set(write_report(tmp_path / "run", tmp_path / "bare", DIRECTIONS)) == set(written)


def test_full_rank_everywhere_gives_the_table_but_no_marks(tmp_path):
    store = make_run(tmp_path / "run")
    store.write_record(store.read_record().with_diagnostics(*CELLS[1], {"expected_gradcam": FULL}))
    written = write_report(tmp_path / "run")
    assert written["diagnostics"]
    assert all("†" not in p.read_text() for name, paths in written.items() if name not in ("diagnostics", "cd_diagrams")
               for p in paths)


def test_note_counts_only_included_cells_and_names_at_most_three():
    datasets = [f"d{k}" for k in range(5)]
    scores = pl.DataFrame([{"dataset": d, "architecture": "a", "method": m, "metric": "ins", "value": 0.5}
                           for d in datasets for m in ("egc", "gc")])
    cells = [CellRecord(dataset=d, architecture="a", images=1,
                        diagnostics={"egc": {**DEFICIENT, "rank": 10 + k, "full_rank": k == 0}})
             for k, d in enumerate(datasets)]
    cells.append(CellRecord(dataset="unscored", architecture="a", images=1, diagnostics={"egc": DEFICIENT}))
    cells.append(CellRecord(dataset="d0", architecture="b", images=1, diagnostics={"gc": DEFICIENT}))  # no scores
    cells.append(CellRecord(dataset="d9", architecture="a", images=1,
                            diagnostics={"egc": {**FULL, "full_rank": None}}))
    frame = diagnostics_frame(cells)
    assert frame.filter(pl.col("dataset") == "d9")["full_rank"].to_list() == [True]  # no flag: rank == K
    frame = frame.filter(pl.col("dataset") != "d9")
    assert frame.height == 7 and frame.filter(~pl.col("full_rank")).height == 6
    tables = rank_tables(scores, {"ins": "higher"}, frame)
    overall = tables["table12b_ranks"]
    assert overall.marks == {"egc": "†"}
    assert overall.notes == ["† egc: rank(M̂) < K in 4 of 5 cells (d1/a rank 11/512, d2/a rank 12/512, "
                             "d3/a rank 13/512, …); its weights are not the infidelity optimum (App. B.2)"]
    assert tables["ranks_dataset_d0"].marks == {} and tables["ranks_dataset_d0"].notes == []
    assert tables["ranks_dataset_d4"].notes == ["† egc: rank(M̂) < K in 1 of 1 cell (d4/a rank 14/512); its "
                                                "weights are not the infidelity optimum (App. B.2)"]
    assert math.isclose(overall.frame["mean rank"].sum(), 3.0)  # the values themselves are unchanged
    assert sorted(rank_tables(scores, {"ins": "higher"}, frame)) == sorted(rank_tables(scores, {"ins": "higher"}))


def test_diagnostics_frame_of_cells_without_diagnostics_is_empty():
    frame = diagnostics_frame([CellRecord(dataset="d", architecture="a", images=1),
                               CellRecord(dataset="e", architecture="a", images=1, diagnostics={})])
    assert frame.height == 0 and frame.schema["full_rank"] == pl.Boolean
    with pytest.raises(ValueError, match="dataset"):
        CellRecord(architecture="a", images=1, diagnostics={"egc": FULL})
