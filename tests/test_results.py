"""Result datasets: atomic shard parts, resume without duplicates, lazy scans, compact maps."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch

from storage.record import CellMarker, run_record
from storage.results import SCORES_SCHEMA, RunInUseError, RunStore, saliency_table


def shard_tables(run: str, shard: int, methods=("gradcam", "egc"), metrics=("insertion", "sparseness"), value=0.5):
    ids = [f"img{shard}_{k}" for k in range(3)]
    rng = np.random.default_rng(shard)
    saliency = pa.concat_tables([saliency_table(run, m, ids, [1, 2, 3], rng.standard_normal((3, 7, 7)), [0.1] * 3)
                                 for m in methods])
    scores = pa.Table.from_pylist([{"run": run, "method": m, "image_id": i, "target": 1, "metric": metric,
                                    "value": value, "seconds": 0.01}
                                   for m in methods for i in ids for metric in metrics], schema=SCORES_SCHEMA)
    return saliency, scores


def test_rewriting_a_shard_replaces_it_and_resume_sees_finished_shards(tmp_path):
    store = RunStore(tmp_path / "run")
    for shard in (0, 1):
        store.write_shard("cub200", "resnet50", shard, *shard_tables("r1", shard))
    store.write_shard("cub200", "resnet50", 1, *shard_tables("r1", 1, value=0.9))  # a retried task
    store.write_shard("pets", "vgg16", 0, *shard_tables("r1", 0))
    assert store.done_shards("cub200", "resnet50") == {0, 1} and store.shard_done("pets", "vgg16", 0)
    assert not store.shard_done("pets", "vgg16", 1)
    scores = store.scores().collect()
    assert scores.height == 3 * 2 * 3 * 2  # 3 parts × methods × images × metrics, no duplicates
    assert scores.select(pl.struct("dataset", "architecture", "method", "image_id", "metric").is_unique().all()).item()
    retried = scores.filter((pl.col("dataset") == "cub200") & pl.col("image_id").str.starts_with("img1"))
    assert (retried["value"] == 0.9).all()
    hidden = [p for p in (tmp_path / "run").rglob("*") if p.name.startswith(".")]
    assert hidden == []  # no temporary files left behind


def test_a_half_written_part_is_not_a_done_shard(tmp_path):
    store = RunStore(tmp_path / "run")
    saliency, scores = shard_tables("r1", 0)
    store.write_shard("cub200", "resnet50", 0, saliency, scores)
    (tmp_path / "run" / "scores" / "dataset=cub200" / "architecture=resnet50" / "shard-00000.parquet").unlink()
    assert store.done_shards("cub200", "resnet50") == set()


def test_maps_round_trip_with_relative_float16_precision(tmp_path):
    store = RunStore(tmp_path / "run")
    maps = np.random.default_rng(0).standard_normal((3, 7, 7)) * np.array([1e-8, 1.0, 3e4])[:, None, None]
    maps[0, 0, 0] = 0.0
    table = saliency_table("r", "gradcam", ["a", "b", "c"], [0, 0, 0], maps, [0.0] * 3)
    nan_maps = np.full((1, 7, 7), np.nan)
    nan_table = saliency_table("r", "ablationcam", ["a"], [0], nan_maps, [0.0])
    zero_table = saliency_table("r", "fakecam", ["a"], [0], np.zeros((1, 7, 7)), [0.0])
    empty_scores = pa.Table.from_pylist([], schema=SCORES_SCHEMA)
    store.write_shard("d", "a", 0, pa.concat_tables([table, nan_table, zero_table]), empty_scores)
    ids, decoded = store.maps(dataset="d", architecture="a", method="gradcam")
    assert ids == ["a", "b", "c"] and decoded.dtype == torch.float32 and decoded.shape == (3, 7, 7)
    scale = np.abs(maps).max(axis=(1, 2))[:, None, None]
    assert np.all(np.abs(decoded.numpy() - maps) <= 1e-3 * scale)
    assert decoded[0, 0, 0] == 0.0
    assert torch.isnan(store.maps(dataset="d", architecture="a", method="ablationcam")[1]).all()
    assert (store.maps(dataset="d", architecture="a", method="fakecam")[1] == 0).all()
    assert len(table.column("map")[0].as_py()) == 7 * 7 * 2  # two bytes per value
    with pytest.raises(KeyError, match="no saliency maps for method 'hirescam'"):
        store.maps(dataset="d", architecture="a", method="hirescam")


def test_run_record_and_cell_markers(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    record = run_record("r1", {"methods": ["gradcam"]}, seed=3)
    store.write_record(record)
    again = store.read_record()
    assert again == record and again.seed == 3 and again.config == {"methods": ["gradcam"]}
    assert torch.__version__.startswith(again.versions["torch"].split("+")[0])
    assert {"host", "python", "cpus", "gpus"} <= set(again.hardware)
    (tmp_path / "run" / "run.json").write_text('{"run": "r1", "created": "now", "seed": "three"}')
    with pytest.raises(ValueError, match=r"run\.json: seed: Input should be a valid integer"):
        store.read_record()
    store.write_record(record)
    assert store.cell_done("cub200", "vgg16") is None
    store.mark_cell_done("cub200", "vgg16", CellMarker(images=500, attempts=2))
    assert store.cell_done("cub200", "vgg16") == CellMarker(images=500, attempts=2)
    assert json.loads((tmp_path / "run" / "run.json").read_text())["run"] == "r1"


def test_a_record_of_an_earlier_version_reads_with_its_model_nested(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    old = run_record("r1", {}, seed=0).model_dump()
    old["cells"] = [{"dataset": "demo", "architecture": "lite0", "images": 4, "shards": [0], "manifest": "bundled:demo",
                     "model": "efficientnet_lite0", "layer": "bn2", "input_size": None, "weights": "package",
                     "references": None}]
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps(old))
    (cell,) = store.read_record().cells
    assert (cell.model.name, cell.model.layer, cell.model.weights, cell.model.input_size) == (
        "efficientnet_lite0", "bn2", "package", None)


def test_bad_partition_names_and_missing_results(tmp_path):
    store = RunStore(tmp_path / "run")
    with pytest.raises(ValueError, match="dataset name 'a/b'"):
        store.write_shard("a/b", "x", 0, *shard_tables("r", 0))
    with pytest.raises(FileNotFoundError, match="no scores results"):
        store.scores()


def test_a_run_directory_with_glob_characters_reads_only_its_own_parts(tmp_path):
    for name, value in (("run[1]", 0.25), ("run1", 0.75)):  # "run[1]" as a glob would match "run1"
        store = RunStore(str(tmp_path / name))
        saliency = saliency_table("r", "gradcam", ["a"], [0], np.ones((1, 2, 2)), [0.0])
        scores = pa.Table.from_pylist([{"run": "r", "method": "gradcam", "image_id": "a", "target": 0,
                                        "metric": "auc", "value": value, "seconds": 0.0}], schema=SCORES_SCHEMA)
        store.write_shard("d", "a", 0, saliency, scores)
    frame = RunStore(str(tmp_path / "run[1]")).scores().collect()
    assert frame["value"].to_list() == [0.25] and frame["dataset"].to_list() == ["d"]
    with pytest.raises(ValueError, match="dataset name 'a%20b' cannot be used"):
        RunStore(str(tmp_path / "x")).write_shard("a%20b", "a", 0, saliency, scores)


def test_a_damaged_part_is_not_a_done_shard(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    saliency = saliency_table("r", "gradcam", ["a"], [0], np.ones((1, 2, 2)), [0.0])
    for shard in (0, 1):
        store.write_shard("d", "a", shard, saliency, pa.Table.from_pylist([], schema=SCORES_SCHEMA))
    assert store.done_shards("d", "a") == {0, 1}
    part = tmp_path / "run" / "scores" / "dataset=d" / "architecture=a" / "shard-00001.parquet"
    part.write_bytes(part.read_bytes()[:-20])  # truncated: the footer is gone
    assert store.done_shards("d", "a") == {0} and not store.shard_done("d", "a", 1)


def test_a_run_directory_has_one_writer_at_a_time(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    with store.lock():
        with pytest.raises(RunInUseError, match=r"run is in use by another camgrid run \(pid \d+ on .*\); wait"):
            with RunStore(str(tmp_path / "run")).lock():
                pass
    with RunStore(str(tmp_path / "run")).lock():  # released on exit
        pass
    assert store.scan  # the lock file is hidden: it is no result part
    assert not list((tmp_path / "run").glob("*.parquet"))
