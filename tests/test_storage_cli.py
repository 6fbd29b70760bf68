"""``camgrid manifest build|show`` and ``camgrid report`` through the command line."""

from __future__ import annotations

import dataset_layouts as layouts
import numpy as np
import pyarrow as pa
from click.testing import CliRunner

from jobs.cli import main
from storage.record import CellRecord, run_record
from storage.results import SCORES_SCHEMA, RunStore, saliency_table


def test_manifest_build_and_show(tmp_path):
    layouts.cifar10(tmp_path / "cifar")
    runner = CliRunner()
    built = runner.invoke(main, ["manifest", "build", "cifar10", str(tmp_path / "cifar"), "--out",
                                 str(tmp_path / "m"), "-n", "6", "--shard-size", "4"])
    assert built.exit_code == 0, built.output
    assert "6/6 images" in built.output and "6 images, 2 shards, 10 classes, 0 skipped" in built.output
    shown = runner.invoke(main, ["manifest", "show", str(tmp_path / "m")])
    assert shown.exit_code == 0 and "builder cifar10 v1" in shown.output and "cifar10" in shown.output


def test_manifest_errors_name_the_problem(tmp_path):
    runner = CliRunner()
    missing = runner.invoke(main, ["manifest", "build", "cub200", str(tmp_path), "--out", str(tmp_path / "m")])
    assert missing.exit_code != 0 and "missing CUB images.txt" in missing.output
    unknown = runner.invoke(main, ["manifest", "build", "cifar", str(tmp_path), "--out", str(tmp_path / "m")])
    assert unknown.exit_code != 0 and "did you mean 'cifar10'" in unknown.output
    no_root = runner.invoke(main, ["manifest", "build", "imagenet", "--out", str(tmp_path / "m")])
    assert no_root.exit_code != 0 and "ROOT" in no_root.output
    shown = runner.invoke(main, ["manifest", "show", str(tmp_path / "nothing")])
    assert shown.exit_code != 0 and "no manifest at" in shown.output


def test_report_uses_the_directions_in_the_run_record(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_record(run_record("r", {}, seed=0, metric_directions={"insertion": "higher", "deletion": "lower"}))
    rows = [{"run": "r", "method": m, "image_id": str(i), "target": 0, "metric": metric, "value": v, "seconds": 0.0}
            for i in range(2) for m, metric, v in [("gradcam", "insertion", 0.4), ("egc", "insertion", 0.6),
                                                   ("gradcam", "deletion", 0.2), ("egc", "deletion", 0.3)]]
    saliency = saliency_table("r", "gradcam", ["0"], [0], np.ones((1, 2, 2)), [0.0])
    store.write_shard("demo", "lite0", 0, saliency, pa.Table.from_pylist(rows, schema=SCORES_SCHEMA))
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert result.exit_code == 0, result.output
    assert "| egc | <u>2.000</u> | **1.000** | **1.500** |" in result.output
    assert (tmp_path / "run" / "report" / "table12a_means.tex").exists()
    assert (tmp_path / "run" / "report" / "nan_report.csv").exists()
    unfinished = run_record("r", {}, seed=0, metric_directions={"insertion": "higher", "deletion": "lower"},
                            cells=[CellRecord(dataset="demo", architecture="lite0", images=2)])
    store.write_record(unfinished)
    warned = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--no-overlays"])
    assert warned.exit_code == 0 and "warning: the run is incomplete: 1 cell(s) have not finished (demo/lite0)" in (
        warned.output)
    store.write_record(run_record("r", {}, seed=0))
    missing = CliRunner().invoke(main, ["report", str(tmp_path / "run")])
    assert missing.exit_code != 0 and "no metric_directions" in missing.output


def test_manifest_build_train_split_for_a_reference_set(tmp_path):
    layouts.cifar10(tmp_path / "cifar")
    runner = CliRunner()
    usage = runner.invoke(main, ["manifest", "build", "--help"])
    assert usage.exit_code == 0 and "--split" in usage.output
    assert "camgrid manifest build cub200 ~/data/CUB_200_2011 --split train --out manifests/cub200_train -n 4096" \
        in usage.output
    assert "reference sets for Expected Grad-CAM are built from the train split" in " ".join(usage.output.split())
    built = runner.invoke(main, ["manifest", "build", "cifar10", str(tmp_path / "cifar"), "--split", "train", "--out",
                                 str(tmp_path / "train"), "-n", "4"])
    assert built.exit_code == 0, built.output
    assert "(split train): 4 images, 1 shards, 10 classes, 0 skipped" in built.output
    shown = runner.invoke(main, ["manifest", "show", str(tmp_path / "train")])
    assert shown.exit_code == 0 and "│ cifar10 ┆ train ┆ 4 " in shown.output
    wrong = runner.invoke(main, ["manifest", "build", "cifar10", str(tmp_path / "cifar"), "--split", "tset", "--out",
                                 str(tmp_path / "m")])
    assert wrong.exit_code != 0 and "CIFAR-10 split 'tset' unknown; choose from test, train" in wrong.output


def _two_method_run(tmp_path):
    store = RunStore(tmp_path / "run")
    store.write_record(run_record("r", {}, seed=0, metric_directions={"insertion": "higher"}))
    rows = [{"run": "r", "method": m, "image_id": str(i), "target": 0, "metric": "insertion", "value": v,
             "seconds": 0.0} for i in range(2) for m, v in [("gradcam", 0.4), ("egc", 0.6), ("fakecam", 0.5)]]
    saliency = saliency_table("r", "gradcam", ["0"], [0], np.ones((1, 2, 2)), [0.0])
    store.write_shard("demo", "lite0", 0, saliency, pa.Table.from_pylist(rows, schema=SCORES_SCHEMA))
    return store


def test_report_sets_a_papers_values_beside_the_runs(tmp_path):
    _two_method_run(tmp_path)
    paper = tmp_path / "paper.csv"
    paper.write_text("table,dataset,architecture,method,metric,value,scale\n"
                     "1,demo,lite0,gradcam,insertion,30.0,100\n1,demo,lite0,egc,insertion,70.0,100\n"
                     "1,demo,lite0,fakecam,insertion,50.0,100\n")
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--no-overlays", "--paper", str(paper)])
    assert result.exit_code == 0, result.output
    comparison = (tmp_path / "run" / "report" / "paper_comparison.csv").read_text()
    assert "gradcam,insertion,30.0,40.0,10.0,2" in comparison
    agreement = (tmp_path / "run" / "report" / "paper_agreement.csv").read_text()
    assert "1,demo,lite0,insertion,3,1.0" in agreement


def test_a_full_disk_during_the_report_leaves_whole_files_and_says_so(tmp_path, monkeypatch):
    import errno
    import os

    _two_method_run(tmp_path)
    assert CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--no-overlays"]).exit_code == 0
    report = tmp_path / "run" / "report"
    before = {p.name: p.read_bytes() for p in report.iterdir()}

    def full(descriptor):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr("storage.files.os.fsync", full)
    result = CliRunner().invoke(main, ["report", str(tmp_path / "run"), "--no-overlays"])
    assert result.exit_code == 1 and "could not write the report" in result.output
    assert "No space left on device" in result.output and "Traceback" not in result.output
    assert {p.name: p.read_bytes() for p in report.iterdir()} == before  # nothing empty, nothing half-written
