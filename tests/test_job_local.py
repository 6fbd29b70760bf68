"""The local executor (no Ray, this process): the same rows, retries, resume, progress and Ctrl-C as the Ray job."""

from __future__ import annotations

import pytest
from test_job_ray import METHODS, METRICS, assert_a_model_failure_is_retried, assert_same_scores, grid_spec, scores

from jobs.local import choose_executor
from jobs.pipeline import GridInterruptedError, run_grid
from jobs.plan import plan_cells
from jobs.spec import SpecError, load_spec, parse_spec
from storage.builders import build
from storage.results import RunStore


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    location = tmp_path_factory.mktemp("manifests") / "demo"
    build("demo", None, location, shard_size=2)  # 12 images in 6 shards
    return str(location)


@pytest.fixture
def state(tmp_path, monkeypatch):
    folder = tmp_path / "state"
    folder.mkdir()
    monkeypatch.setenv("CAMGRID_TEST_STATE", str(folder))
    return folder


def run(spec: dict, out, lines: list[str] | None = None, **kwargs):
    return run_grid(parse_spec(spec, "jobtest.yaml"), out, echo=(lines.append if lines is not None else print),
                    executor="local", **kwargs)


@pytest.fixture(scope="module")
def baseline(manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "baseline"
    lines: list[str] = []
    summary = run(grid_spec(manifest), out, lines)
    return out, summary, lines


def test_a_local_run_writes_every_row_once_without_ray(baseline, manifest):
    import ray

    out, summary, lines = baseline
    assert not ray.is_initialized()
    (plan,) = plan_cells(parse_spec(grid_spec(manifest), "jobtest.yaml"), summary.run)
    images = {i for ids in plan.images.values() for i in ids}
    frame = scores(out)
    assert frame.height == len(images) * len(METHODS) * len(METRICS) == 6 * 3 * 7
    assert set(zip(frame["image_id"], frame["method"], frame["metric"])) == {
        (i, m, k) for i in images for m in METHODS for k in METRICS}
    marker = RunStore(str(out)).cell_done("demo", "lite0")
    assert marker.placement["executor"] == "local" and marker.attempts == 1
    assert RunStore(str(out)).reference_features("demo", "lite0").num_rows == 4
    assert any(line.startswith("placement: in this process without Ray") for line in lines)
    assert any("[demo/lite0] 6/6 images" in line and "done" in line for line in lines)


def test_a_model_failure_is_retried_locally_and_every_row_lands_once(baseline, manifest, state, tmp_path):
    assert_a_model_failure_is_retried(run, manifest, state, tmp_path / "flaky", baseline[0])


def test_ctrl_c_stops_a_local_run_at_once_and_the_rerun_completes_it(baseline, manifest, state, tmp_path):
    from job_faults import InterruptingEvaluator

    InterruptingEvaluator.calls = 0
    out = tmp_path / "interrupted"
    lines: list[str] = []
    with pytest.raises(GridInterruptedError, match="rerun the same command to resume"):
        run(grid_spec(manifest), out, lines, evaluator=InterruptingEvaluator)
    assert any("interrupted: every shard written so far stays" in line for line in lines)
    store = RunStore(str(out))
    (plan,) = plan_cells(parse_spec(grid_spec(manifest), "jobtest.yaml"), "r")
    assert store.cell_done("demo", "lite0") is None and 0 < len(store.done_shards("demo", "lite0")) < len(plan.images)
    run(grid_spec(manifest), out, lines, evaluator=InterruptingEvaluator)  # the directory is free again
    assert_same_scores(scores(out), scores(baseline[0]))


def test_progress_moves_within_a_local_batch(manifest, monkeypatch, tmp_path):
    from job_faults import SlowMethodsEvaluator

    monkeypatch.setenv("CAMGRID_TEST_METHOD_SECONDS", "3")
    lines: list[str] = []
    spec = grid_spec(manifest, samples=2, methods={"gradcam": {}, "hirescam": {}}, metrics={"sparseness": {}})
    run(spec, tmp_path / "slow", lines, evaluator=SlowMethodsEvaluator)
    progress = [line for line in lines if line.startswith("[demo/lite0] 0/2 images")]
    assert any("computing gradcam" in line for line in progress), lines
    assert any("(2/4 maps, computing hirescam)" in line for line in progress), lines


def test_the_executor_is_local_only_where_ray_would_add_nothing(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    demo = load_spec("demo")
    assert choose_executor(demo, None) == "local"
    assert choose_executor(demo, "10.0.0.1:6379") == "ray"
    assert choose_executor(load_spec("demo", overrides={"resources": {"actors_per_cell": 2}}), None) == "ray"
    assert choose_executor(load_spec("demo", overrides={"resources": {"concurrent_cells": 2}}), None) == "ray"
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.1:6379")  # inside `ray job submit`
    assert choose_executor(demo, None) == "ray"
    with pytest.raises(ValueError, match="executor 'local' runs in this process"):
        run_grid(demo, "/nonexistent/never-written", address="10.0.0.1:6379", executor="local")


def test_cpu_work_keeps_freed_memory_where_glibc_allows():
    import platform

    from jobs.devices import retain_freed_memory

    assert retain_freed_memory() is (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_explaining_only_correct_images_excludes_the_misclassified_ones_quietly(manifest, tmp_path):
    """``explain: correct`` (IDGI's evaluation): the images the model misclassifies are stored as excluded, the
    others are scored exactly as in a run of every image, the console names none of them, and a rerun adds
    nothing."""
    import polars as pl
    import pyarrow.parquet as pq
    import torch

    from storage.manifest import decode_image
    from storage.results import MISCLASSIFIED

    def spec(explain: str) -> dict:  # at 224 px Lite0 classifies some of the demo's images correctly
        return grid_spec(manifest, datasets={"demo": {"manifest": manifest, "explain": explain}},
                         architectures={"lite0": {"model": "efficientnet_lite0", "weights": "package"}},
                         references=None, methods={"gradcam": {}},
                         metrics={"deletion": {"steps": 4}, "sufficiency": {"threshold": 1.0}})

    (plan,) = plan_cells(parse_spec(spec("correct"), "jobtest.yaml"), "r")
    loaded = plan.model.load()
    rows = {r["image_id"]: r for r in pq.read_table(manifest).to_pylist()}
    ids = sorted(i for shard in plan.images.values() for i in shard)
    with torch.no_grad():
        predicted = loaded.model(torch.stack([loaded.preprocessing(decode_image(rows[i])) for i in ids])).argmax(1)
    correct = {i for i, p in zip(ids, predicted.tolist()) if plan.classes[rows[i]["label"]] == p}
    assert 0 < len(correct) < len(ids)  # both kinds are drawn, so the test can tell them apart

    out, lines = tmp_path / "correct", []
    run(spec("correct"), out, lines)
    frame = scores(out)
    assert set(frame["image_id"]) == correct and frame.height == len(correct) * 2
    store = RunStore(str(out))
    excluded = store.skipped_images()
    assert set(excluded["image_id"]) == set(ids) - correct and set(excluded["reason"]) == {MISCLASSIFIED}
    assert not any("skipped image" in line for line in lines)
    count = len(ids) - len(correct)
    assert any(f"done ({count} misclassified image{'s' * (count > 1)} excluded)" in line for line in lines), lines
    run(spec("all"), tmp_path / "all", [])
    every = scores(tmp_path / "all").filter(pl.col("image_id").is_in(list(correct)))
    assert_same_scores(frame.filter(pl.col("metric") == "deletion"), every.filter(pl.col("metric") == "deletion"))

    run(spec("correct"), out, lines)
    assert scores(out).height == frame.height and store.skipped_images().height == excluded.height


def test_explaining_only_correct_images_needs_labels_in_the_models_classes(manifest):
    spec = grid_spec(manifest, datasets={"demo": {"manifest": manifest, "explain": "correct", "target": "predicted"}},
                     architectures={"lite0": {"model": "efficientnet_lite0", "weights": "none", "num_classes": 7,
                                              "input_size": 96}})
    with pytest.raises(SpecError, match="explain: correct compares the prediction with the label"):
        plan_cells(parse_spec(spec, "jobtest.yaml"), "r")
    with pytest.raises(SpecError, match="datasets.demo.explain"):
        parse_spec(grid_spec(manifest, datasets={"demo": {"manifest": manifest, "explain": "right"}}), "jobtest.yaml")
