"""Scale-out on a simulated cluster: several nodes with logical GPUs, cells placed one per GPU.

The result must not depend on where it ran: every score equals the one the same evaluator gives
in this process, without Ray, on the whole cell in one batch.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest

from jobs.evaluate import evaluate_in_process, row_scores
from jobs.pipeline import run_grid
from jobs.plan import plan_cells
from jobs.spec import parse_spec
from storage.builders import build
from storage.results import RunStore

pytestmark = pytest.mark.slow
TESTS = Path(__file__).parent


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A head node without GPUs and two worker nodes with one logical GPU each."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    state = tmp_path_factory.mktemp("state")
    os.environ["CAMGRID_TEST_STATE"] = str(state)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")])
    simulated = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
    workers = [simulated.add_node(num_cpus=2, num_gpus=1) for _ in range(2)]
    simulated.wait_for_nodes()
    ray.init(address=simulated.address, logging_level="WARNING")
    yield state, [w.node_id for w in workers]
    ray.shutdown()
    simulated.shutdown()


def spec(manifest: str) -> dict:
    return {
        "name": "scaleout",
        "datasets": {"first": {"manifest": manifest}, "second": {"manifest": manifest}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96}},
        "references": {"pool": 2, "held_out": 2},
        "samples": 4,
        "batch_size": 2,
        "methods": {"gradcam": {}, "expected_gradcam": {}},
        "metrics": {"deletion": {"steps": 4}, "cam_infidelity": {"n_perturbations": 64}, "sparseness": {}},
        "resources": {"retries": 0, "no_progress_timeout_s": 300},
    }


def test_each_cell_actor_holds_one_gpu_and_results_match_in_process(cluster, tmp_path):
    import ray
    from job_faults import GpuRecordingEvaluator

    state, gpu_nodes = cluster
    assert ray.cluster_resources()["GPU"] == 2
    manifest = tmp_path / "demo"
    build("demo", None, manifest, shard_size=2)
    grid = parse_spec(spec(str(manifest)), "scaleout.yaml")
    lines: list[str] = []
    summary = run_grid(grid, tmp_path / "run", echo=lines.append, evaluator=GpuRecordingEvaluator)
    assert any("2 cell(s) at once" in line and "1 GPU" in line for line in lines)  # one cell per GPU
    actors = [json.loads(p.read_text()) for p in state.glob("actor-*.json")]
    assert {a["cell"] for a in actors} == {"first/lite0", "second/lite0"}
    for actor in actors:
        assert len(actor["gpus"]) == 1 and actor["cuda_visible_devices"] == actor["gpus"][0]
        assert actor["node"] in gpu_nodes  # never on the GPU-less head
    assert len({(a["node"], a["gpus"][0]) for a in actors}) == 2  # the two cells ran on different GPUs

    frame = RunStore(str(tmp_path / "run")).scores().collect()
    assert frame.height == 2 * 4 * 2 * 3
    for plan in plan_cells(grid, summary.run, str(tmp_path / "run")):
        expected = in_process_scores(plan)
        cell = frame.filter((frame["dataset"] == plan.dataset) & (frame["architecture"] == plan.architecture))
        got = {(r["image_id"], r["method"], r["metric"]): r["value"] for r in cell.iter_rows(named=True)}
        assert set(got) == set(expected)
        for key, value in expected.items():
            assert (math.isnan(value) and math.isnan(got[key])) or math.isclose(
                got[key], value, rel_tol=1e-4, abs_tol=1e-9
            ), key


def in_process_scores(plan) -> dict[tuple[str, str, str], float]:
    """The cell's scores from one call of the evaluator on all its images, no Ray."""
    return row_scores(evaluate_in_process(plan, batch_size=plan.total))
