"""The Ray job end to end on embedded local Ray: exact rows, resume, determinism, faults."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import polars as pl
import pyarrow.parquet as pq
import pytest
import yaml

from jobs.pipeline import GridFailedError, run_grid
from jobs.plan import plan_cells
from jobs.ray_setup import start_ray
from jobs.spec import load_spec, parse_spec
from storage.builders import build
from storage.report import write_report
from storage.results import RunStore

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent
METHODS = {"gradcam": {}, "expected_gradcam": {}, "hirescam": {}}
METRICS = {
    "deletion": {"steps": 4},
    "sufficiency": {"threshold": 1.0},  # pooled over each shard by the driver; 1.0: every other image is near
    "cam_infidelity": {"n_perturbations": 64},  # channel weights; NaN for HiRes-CAM
    "max_sensitivity": {"nr_samples": 1},  # re-explains
    "relevance_mass_accuracy": {},  # needs masks; the demo photos have none
    "sparseness": {},
    "average_drop": {},
}


def grid_spec(manifest: str, **overrides) -> dict:
    spec = {
        "name": "jobtest",
        "datasets": {"demo": {"manifest": manifest}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96}},
        "references": {"pool": 2, "held_out": 2},  # held out of the 12-image manifest: a rank-deficient M̂
        "samples": 6,
        "batch_size": 2,
        "methods": METHODS,
        "metrics": METRICS,
        "resources": {"retries": 1, "no_progress_timeout_s": 300},
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def state(tmp_path_factory):
    """Embedded Ray whose workers import this folder's instrumented evaluators and share a state folder."""
    import ray

    ray.shutdown()
    folder = tmp_path_factory.mktemp("state")
    os.environ["CAMGRID_TEST_STATE"] = str(folder)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])
    start_ray()
    yield folder
    ray.shutdown()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    location = tmp_path_factory.mktemp("manifests") / "demo"
    build("demo", None, location, shard_size=2)  # 12 images in 6 shards
    return str(location)


def run(spec: dict, out: Path, lines: list[str] | None = None, **kwargs):
    return run_grid(
        parse_spec(spec, "jobtest.yaml"), out, echo=(lines.append if lines is not None else print), **kwargs
    )


@pytest.fixture(scope="module")
def baseline(state, manifest, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "baseline"
    lines: list[str] = []
    summary = run(grid_spec(manifest), out, lines)
    return out, summary, lines


def scores(out: Path) -> pl.DataFrame:
    return RunStore(str(out)).scores().collect().sort("dataset", "architecture", "method", "image_id", "metric")


def assert_same_scores(left: pl.DataFrame, right: pl.DataFrame, rtol: float = 1e-4) -> None:
    key = ["dataset", "architecture", "method", "image_id", "metric"]
    joined = left.join(right, on=key, how="full", suffix="_b", coalesce=True)
    assert joined.height == left.height == right.height
    for row in joined.select(*key, "value", "value_b").iter_rows(named=True):
        a, b = row["value"], row["value_b"]
        assert (math.isnan(a) and math.isnan(b)) or math.isclose(a, b, rel_tol=rtol, abs_tol=1e-9), row


def test_grid_writes_exactly_one_row_per_image_method_metric(baseline, manifest):
    out, summary, lines = baseline
    plan = plan_cells(parse_spec(grid_spec(manifest), "jobtest.yaml"), summary.run)[0]
    images = {i for ids in plan.images.values() for i in ids}
    frame = scores(out)
    keys = set(zip(frame["image_id"], frame["method"], frame["metric"]))
    assert keys == {(i, m, k) for i in images for m in METHODS for k in METRICS}
    assert frame.height == len(keys) == 6 * 3 * 7
    assert set(frame["dataset"]) == {"demo"} and set(frame["architecture"]) == {"lite0"}
    assert (frame["seconds"] >= 0).all() and frame["run"].unique().to_list() == [summary.run]
    saliency = RunStore(str(out)).saliency().collect()
    assert saliency.height == 6 * 3 and set(zip(saliency["image_id"], saliency["method"])) == {
        (i, m) for i in images for m in METHODS
    }
    assert set(saliency["map_height"]) == {3}  # EfficientNet-Lite0 at 96 px: a 3×3 CAM
    # undefined values are NaN for the stated reasons, everything else is finite
    by = {(r["method"], r["metric"], r["image_id"]): r["value"] for r in frame.iter_rows(named=True)}
    assert all(math.isnan(by[("hirescam", "cam_infidelity", i)]) for i in images)  # no channel weights
    with_mask = {r["image_id"] for r in pq.read_table(manifest).to_pylist() if r["mask"] is not None}
    for i in images:
        assert math.isnan(by[("gradcam", "relevance_mass_accuracy", i)]) == (i not in with_mask)
        assert math.isfinite(by[("gradcam", "deletion", i)]) and math.isfinite(
            by[("expected_gradcam", "cam_infidelity", i)]
        )
    # Sufficiency's pool is the shard: with every other image of the shard a neighbour, each value is a
    # share of the other n − 1 images (NaN only for a shard of one)
    for shard, ids in plan.images.items():
        for i in ids:
            value = by[("gradcam", "sufficiency", i)]
            if len(ids) == 1:
                assert math.isnan(value)
            else:
                assert math.isclose(value * (len(ids) - 1), round(value * (len(ids) - 1)), abs_tol=1e-9)
    assert any(len(ids) > 1 for ids in plan.images.values())
    # the record, the cell marker, the progress lines, the rank tables
    record = RunStore(str(out)).read_record()
    assert json.loads((out / "run.json").read_text())["run"] == record.run
    assert record.metric_directions["deletion"] == "lower" and set(record.metric_directions) == set(METRICS)
    cell = record.cells[0]
    assert cell.images == 6 and cell.references.fit == cell.references.held_out == 2
    assert cell.model.name == "efficientnet_lite0" and cell.model.image_size == cell.model.input_size == 96
    # the M̂ diagnostics: 2 references span 3 directions of K = 1280, said before the run and recorded
    diagnostics = cell.diagnostics["expected_gradcam"]
    assert (diagnostics["rank"], diagnostics["channels"], diagnostics["references"]) == (3, 1280, 2)
    assert diagnostics["perturbations"] == 2560 and diagnostics["full_rank"] is False
    assert any(line.startswith("warning: demo/lite0: expected_gradcam draws M = 2560") for line in lines)
    assert any("[demo/lite0] expected_gradcam: M = 2560, K = 1280" in line and "RANK-DEFICIENT" in line
               for line in lines)
    stored = RunStore(str(out)).reference_features("demo", "lite0")
    assert stored.num_rows == 4 and sorted(stored.column("pool").to_pylist()) == ["fit", "fit", "held_out", "held_out"]
    assert set(stored.column("image_id").to_pylist()) == set(plan.references.ids)  # disjoint pools, none explained
    assert not set(plan.references.ids) & images
    marker = RunStore(str(out)).cell_done("demo", "lite0")
    assert marker.images == 6 and marker.attempts == 1 and marker.placement["actors_per_cell"] == 1
    assert any("[demo/lite0] 6/6 images" in line and "done" in line for line in lines)
    assert any("img/s" in line and "ETA" in line for line in lines)
    written = write_report(out)
    assert written["table12b_ranks"] and (out / "report" / "nan_report.csv").exists()


def test_cam_infidelity_is_scored_on_held_out_references(baseline):
    """Expected Grad-CAM is not scored on the draw it was fitted on: its cam_infidelity is not ~0."""
    frame = scores(baseline[0]).filter(pl.col("metric") == "cam_infidelity")
    egc = frame.filter(pl.col("method") == "expected_gradcam")["value"]
    assert (egc > 1e-6).all() and egc.is_finite().all()


def test_a_rerun_reuses_the_stored_reference_features(state, manifest, baseline, tmp_path):
    from job_faults import RefusingFeaturizer

    out = tmp_path / "again"
    shutil.copytree(baseline[0], out)
    for kind in ("saliency", "scores", "cells", "report"):
        shutil.rmtree(out / kind, ignore_errors=True)
    run(grid_spec(manifest), out, featurizer=RefusingFeaturizer)  # the stage would raise if it ran again
    assert_same_scores(scores(out), scores(baseline[0]))
    # features of another draw are recomputed, never used
    path = out / "references" / "dataset=demo" / "architecture=lite0" / "features.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(1), path)
    # with results fitted on the stored draw still there, a changed draw is an error, not a silent mix
    shutil.rmtree(out / "cells")
    sorted((out / "scores").rglob("*.parquet"))[0].unlink()
    with pytest.raises(GridFailedError, match="already holds results fitted on them"):
        run(grid_spec(manifest, resources={"retries": 0}), out, featurizer=RefusingFeaturizer)
    for kind in ("saliency", "scores"):
        shutil.rmtree(out / kind)
    with pytest.raises(GridFailedError, match="RuntimeError: reference features recomputed"):
        run(grid_spec(manifest, resources={"retries": 0}), out, featurizer=RefusingFeaturizer)


def test_every_actor_of_a_cell_reads_the_same_stored_features(baseline, manifest):
    import torch

    from attribution.channel_scaling import reference_features
    from jobs.evaluate import CellEvaluator
    from storage.manifest import decode_image

    out, summary, _ = baseline
    plan = plan_cells(parse_spec(grid_spec(manifest), "jobtest.yaml"), summary.run, str(out))[0]
    first, second = CellEvaluator(plan), CellEvaluator(plan)
    fit = first.methods["expected_gradcam"].reference_features
    assert torch.equal(fit, second.methods["expected_gradcam"].reference_features)
    held_out = first.metrics["cam_infidelity"].reference_features
    assert torch.equal(held_out, second.metrics["cam_infidelity"].reference_features)
    # and they are h(x') of the planned images through the cell's model
    rows = {r["image_id"]: r for r in pq.read_table(manifest).to_pylist()}
    images = torch.stack([first.preprocessing(decode_image(rows[i])) for i in plan.references.pools["fit"]])
    expected = reference_features(first.loaded.model, first.loaded.layer, images, layout=first.loaded.layout)
    torch.testing.assert_close(fit, expected, rtol=1e-4, atol=1e-5)


def test_rerun_resumes_and_redoes_only_half_written_shards(state, manifest, baseline, tmp_path):
    out, summary, _ = baseline
    parts = sorted((out / "scores").rglob("*.parquet"))
    before = {p: p.stat().st_mtime_ns for p in (out / "saliency").rglob("*.parquet")} | {
        p: p.stat().st_mtime_ns for p in parts
    }
    lines: list[str] = []
    again = run(grid_spec(manifest, batch_size=3), out, lines)  # batch size does not change the run
    assert again.run == summary.run and any("done (resumed)" in line for line in lines)
    assert {p: p.stat().st_mtime_ns for p in before} == before
    reference = scores(out)
    # a half-written shard: its saliency part is there, its scores part is not (and the cell is unfinished)
    (out / "cells" / "dataset=demo" / "architecture=lite0.json").unlink()
    parts[0].unlink()
    run(grid_spec(manifest), out, lines)
    rewritten = [p for p in before if p.stat().st_mtime_ns != before[p]]
    shard = parts[0].name
    assert sorted(p.name for p in rewritten) == [shard, shard]  # its saliency and scores parts, nothing else
    assert_same_scores(scores(out), reference)  # the redone shard's batches differ: float32 rounding only


def test_another_spec_cannot_reuse_a_run_directory(baseline, manifest):
    with pytest.raises(ValueError, match="holds run 'jobtest-.*' of a different grid spec"):
        run(grid_spec(manifest, seed=3), baseline[0])


def test_results_do_not_depend_on_batch_size_or_workers(state, manifest, baseline, tmp_path):
    spec = grid_spec(manifest, batch_size=3, resources={"actors_per_cell": 2, "retries": 0})
    run(spec, tmp_path / "other")
    assert_same_scores(scores(tmp_path / "other"), scores(baseline[0]))


def test_the_local_executor_writes_the_same_rows_as_rays_actors(baseline, manifest, tmp_path):
    run(grid_spec(manifest), tmp_path / "local", executor="local")
    assert RunStore(str(tmp_path / "local")).cell_done("demo", "lite0").placement["executor"] == "local"
    assert_same_scores(scores(tmp_path / "local"), scores(baseline[0]))


def test_a_model_failure_is_retried_and_every_row_lands_once(state, manifest, baseline, tmp_path):
    assert_a_model_failure_is_retried(run, manifest, state, tmp_path / "flaky", baseline[0])


def assert_a_model_failure_is_retried(run_fn, manifest: str, state: Path, out: Path, baseline: Path) -> None:
    """One model failure (the second batch, once): the attempt fails, the next resumes, and every score equals
    the baseline's."""
    from job_faults import RaisingOnceEvaluator

    RaisingOnceEvaluator.calls = 0  # in this process for the local executor
    lines: list[str] = []
    run_fn(grid_spec(manifest), out, lines, evaluator=RaisingOnceEvaluator)
    assert (state / "raised").exists()
    assert any("attempt 1 failed: RuntimeError: injected model failure; resuming" in line for line in lines)
    assert RunStore(str(out)).cell_done("demo", "lite0").attempts == 2
    assert_same_scores(scores(out), scores(baseline))


def test_a_killed_actor_is_replaced_and_every_row_lands_once(state, manifest, baseline, tmp_path):
    from job_faults import KilledOnceEvaluator

    run(grid_spec(manifest), tmp_path / "killed", evaluator=KilledOnceEvaluator)
    assert (state / "killed").exists()
    assert_same_scores(scores(tmp_path / "killed"), scores(baseline[0]))


def test_a_batch_that_kills_its_worker_every_time_fails_the_cell_naming_its_images(state, manifest, tmp_path):
    from job_faults import KillsOnImageEvaluator

    lines: list[str] = []
    spec = grid_spec(manifest, methods={"gradcam": {}}, metrics={"sparseness": {}},
                     resources={"retries": 1, "no_progress_timeout_s": 300})
    (plan,) = plan_cells(parse_spec(spec, "s.yaml"), "r")
    poisoned = min(plan.images[min(plan.images)])
    with pytest.raises(GridFailedError, match=f"a worker stopped on images .*{poisoned}"):
        run(spec, tmp_path / "poisoned", lines, evaluator=KillsOnImageEvaluator)
    assert (state / "poisoned").exists()
    failed = [line for line in lines if "failed" in line and "attempt" in line]
    assert len(failed) == 2 and all(poisoned in line for line in failed)  # each attempt fails at once, named
    store = RunStore(str(tmp_path / "poisoned"))
    assert store.cell_done("demo", "lite0") is None


def test_a_stuck_pipeline_fails_after_the_no_progress_timeout(state, manifest, tmp_path):
    from job_faults import HangingEvaluator

    spec = grid_spec(manifest, resources={"retries": 0, "no_progress_timeout_s": 5})
    with pytest.raises(GridFailedError, match="demo/lite0: .*(progress|Timeout)"):
        run(spec, tmp_path / "stuck", evaluator=HangingEvaluator)


def test_progress_moves_within_a_batch_and_names_the_method_being_computed(state, manifest, tmp_path):
    from job_faults import SlowMethodsEvaluator  # each method takes 3 s longer: a batch of 2 methods takes 6 s

    lines: list[str] = []
    spec = grid_spec(manifest, samples=2, methods={"gradcam": {}, "hirescam": {}}, metrics={"sparseness": {}})
    run(spec, tmp_path / "slow", lines, evaluator=SlowMethodsEvaluator)
    progress = [line for line in lines if line.startswith("[demo/lite0] 0/2 images")]
    assert any("computing gradcam" in line for line in progress), lines
    assert any("(2/4 maps, computing hirescam)" in line for line in progress), lines  # the first method's maps


def test_a_cell_that_keeps_failing_names_the_cause_and_keeps_the_others(state, manifest, tmp_path):
    (tmp_path / "damaged.pt").write_bytes(b"not a checkpoint")  # found at planning, unreadable on the actors
    spec = grid_spec(
        manifest,
        architectures={
            "lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96},
            "broken": {"model": "efficientnet_lite0", "weights": f"file:{tmp_path}/damaged.pt", "input_size": 96},
        },
        methods={"gradcam": {}},
        metrics={"sparseness": {}},
        resources={"retries": 0},
    )
    with pytest.raises(GridFailedError, match="1 of 2 cells did not finish: demo/broken: .*damaged.pt") as caught:
        run(spec, tmp_path / "partial")
    assert "rerun the same command to resume" in str(caught.value)
    store = RunStore(str(tmp_path / "partial"))
    assert store.cell_done("demo", "lite0") is not None and store.cell_done("demo", "broken") is None
    assert scores(tmp_path / "partial")["architecture"].unique().to_list() == ["lite0"]


def test_camgrid_run_runs_a_spec_file_and_prints_the_rank_table(state, manifest, tmp_path):
    from click.testing import CliRunner

    from jobs.cli import main

    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(grid_spec(manifest, metrics={"sparseness": {}})))
    result = CliRunner().invoke(
        main, ["run", str(path), "--out", str(tmp_path / "tiny"), "--set", "samples=2", "--set", "resources.retries=0"]
    )
    assert result.exit_code == 0, result.output
    assert "[demo/lite0] 2/2 images" in result.output and "Average rank across combinations" in result.output
    assert (tmp_path / "tiny" / "report" / "table12b_ranks.md").exists()
    picture = tmp_path / "tiny" / "report" / "overlays" / "demo_lite0.png"
    assert "maps over images" in result.output and picture.exists()
    from PIL import Image

    with Image.open(picture) as png:  # 2 images (rows) × (the image + 3 methods) (columns)
        assert png.width > png.height > 0
    assert RunStore(str(tmp_path / "tiny")).scores().collect().height == 2 * 3


def test_the_demo_preset_is_what_camgrid_run_runs_by_default():
    from click.testing import CliRunner

    from jobs.cli import main

    demo = load_spec("demo")
    assert demo.samples and demo.datasets[0].manifest == "bundled:demo"
    assert demo.datasets[0].references == "bundled:demo_references"  # offline crops of other photos
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0 and "demo" in result.output
    bad = CliRunner().invoke(main, ["run", "no-such-preset"])
    assert bad.exit_code != 0 and "no grid spec file 'no-such-preset' and no preset" in bad.output
    config = demo.to_dict()  # the run record's config is plain data
    assert yaml.safe_load(yaml.safe_dump(config)) == config and config["samples"] == demo.samples
