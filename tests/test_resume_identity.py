"""A run resumes only on the data it began with: a rebuilt manifest or a changed checkpoint is refused
before Ray starts, naming the cell, and a cell that wrote nothing yet takes the new plan."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from dataset_layouts import cifar10

import jobs.pipeline
from jobs.pipeline import run_grid
from jobs.plan import plan_cells
from jobs.spec import SpecError, parse_spec
from storage.builders import build
from storage.results import SCORES_SCHEMA, RunInUseError, RunStore, saliency_table


def spec_for(manifest: str, weights: str = "package") -> dict:
    return {"name": "resume", "samples": 6, "batch_size": 2, "methods": {"gradcam": {}}, "metrics": {"sparseness": {}},
            "datasets": {"c": {"manifest": manifest, "target": "predicted"}},
            "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": weights, "input_size": 32}}}


@pytest.fixture
def no_ray(monkeypatch):
    def refuse(*_, **__):
        raise AssertionError("Ray must not start for a run that cannot resume")

    monkeypatch.setattr(jobs.pipeline, "start_ray", refuse)


def begin(spec, out) -> RunStore:
    """A run interrupted after its first shard: the record and one written shard."""
    store = RunStore(str(out))
    plans = plan_cells(spec, "resume-run", store.location)
    jobs.pipeline._record(spec, store, "resume-run", plans)
    first = min(plans[0].images)
    saliency = saliency_table("resume-run", "gradcam", ["x"], [0], np.ones((1, 2, 2)), [0.0])
    store.write_shard("c", "lite0", first, saliency, pa.Table.from_pylist([], schema=SCORES_SCHEMA))
    return store


def test_a_rebuilt_manifest_is_refused_on_resume(tmp_path, no_ray):
    cifar10(tmp_path / "cifar", rows=30)
    manifest = str(tmp_path / "m")
    build("cifar10", tmp_path / "cifar", manifest, n=12, seed=0, shard_size=4)
    spec = parse_spec(spec_for(manifest), "resume.yaml")
    begin(spec, tmp_path / "run")
    build("cifar10", tmp_path / "cifar", manifest, n=12, seed=1, shard_size=4)  # only its seed changed
    with pytest.raises(ValueError, match="cell c/lite0 holds results of other data: its manifest"):
        run_grid(spec, tmp_path / "run", echo=lambda _: None)


def test_a_changed_checkpoint_is_refused_and_a_missing_one_named_at_planning(tmp_path, no_ray):
    cifar10(tmp_path / "cifar", rows=30)
    manifest = str(tmp_path / "m")
    build("cifar10", tmp_path / "cifar", manifest, n=12, seed=0, shard_size=4)
    checkpoint = tmp_path / "lite0.pt"
    torch.save({"w": torch.zeros(3)}, checkpoint)
    spec = parse_spec(spec_for(manifest, f"file:{checkpoint}"), "resume.yaml")
    begin(spec, tmp_path / "run")
    torch.save({"w": torch.ones(3)}, checkpoint)  # fine-tuned again, same path
    with pytest.raises(ValueError, match="cell c/lite0 holds results of other data"):
        run_grid(spec, tmp_path / "run", echo=lambda _: None)
    missing = parse_spec(spec_for(manifest, f"file:{tmp_path / 'absent.pt'}"), "resume.yaml")
    with pytest.raises(SpecError, match="resume.yaml: architectures.lite0.weights: checkpoint file not found"):
        plan_cells(missing, "r")


def test_a_cell_that_wrote_nothing_takes_the_new_plan(tmp_path):
    cifar10(tmp_path / "cifar", rows=30)
    manifest = str(tmp_path / "m")
    build("cifar10", tmp_path / "cifar", manifest, n=12, seed=0, shard_size=4)
    spec = parse_spec(spec_for(manifest), "resume.yaml")
    store = RunStore(str(tmp_path / "run"))
    jobs.pipeline._record(spec, store, "resume-run", plan_cells(spec, "resume-run", store.location))
    before = store.read_record().cells[0].digest
    build("cifar10", tmp_path / "cifar", manifest, n=12, seed=1, shard_size=4)
    plans = plan_cells(spec, "resume-run", store.location)
    jobs.pipeline._record(spec, store, "resume-run", plans)
    after = store.read_record().cells[0]
    assert after.digest == plans[0].digest != before and after.shards == sorted(plans[0].images)


def test_a_second_run_into_a_directory_in_use_fails_before_planning(tmp_path, no_ray):
    cifar10(tmp_path / "cifar", rows=30)
    manifest = str(tmp_path / "m")
    build("cifar10", tmp_path / "cifar", manifest, n=12, seed=0, shard_size=4)
    spec = parse_spec(spec_for(manifest), "resume.yaml")
    with RunStore(str(tmp_path / "run")).lock():
        with pytest.raises(RunInUseError, match="in use by another camgrid run"):
            run_grid(spec, tmp_path / "run", echo=lambda _: None)
    assert not (tmp_path / "run" / "run.json").exists()
