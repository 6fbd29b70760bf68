"""Progress of a run: the lines and bars a user watches, and the workers' records they come from (no Ray)."""

from __future__ import annotations

import io

import pytest

from jobs.evaluate import CellEvaluator, _plan_rows
from jobs.pipeline import _poll_workers
from jobs.plan import plan_cells
from jobs.progress import GridProgress
from jobs.spec import parse_spec
from storage.builders import build
from storage.results import InFlight, RunStore


def test_a_running_cells_line_says_the_maps_done_and_the_methods_being_computed():
    lines: list[str] = []
    progress = GridProgress(lines.append, min_interval_s=0.0)
    cell = progress.cell("demo/lite0", total=4, methods=3)
    cell.status, cell.maps_done, cell.computing = "running", 5, ("scorecam",)
    progress.update(cell)
    assert lines[-1].startswith("[demo/lite0] 0/4 images (5/12 maps, computing scorecam)  ")
    assert "img/s  ETA " in lines[-1]
    cell.status = "done"
    progress.update(cell)
    assert lines[-1].endswith("img/s  done") and "computing" not in lines[-1]


def test_plain_lines_print_changes_and_a_heartbeat_while_nothing_changes(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("jobs.progress.time.perf_counter", lambda: now[0])
    lines: list[str] = []
    progress = GridProgress(lines.append, min_interval_s=2.0, heartbeat_s=30.0)
    cell = progress.cell("c", total=2, methods=2)
    cell.status = "running"
    progress.update(cell)
    cell.computing = ("gradcam",)
    now[0] += 1
    progress.update(cell)  # changed, but within the minimum interval
    assert len(lines) == 1
    now[0] += 1
    progress.update(cell)
    assert len(lines) == 2 and "computing gradcam" in lines[-1]
    now[0] += 20
    progress.update(cell)  # nothing changed, heartbeat not due
    assert len(lines) == 2
    now[0] += 11
    progress.update(cell)  # unchanged for longer than the heartbeat: the line again, with the time moved on
    assert len(lines) == 3


def test_live_bars_show_each_cell_and_messages_print_above_them():
    stream = io.StringIO()
    echoed: list[str] = []
    progress = GridProgress(echoed.append, live=True, stream=stream)
    cell = progress.cell("demo/lite0", total=4, methods=2)
    cell.status, cell.maps_done, cell.computing = "running", 3, ("hirescam",)
    progress.update(cell)
    progress.echo("[demo/lite0] expected_gradcam: rank(M̂) = 16/16")
    progress.close()
    text = stream.getvalue()
    assert "demo/lite0" in text and "1.5/4 images" in text and "computing hirescam" in text
    assert "rank(M̂) = 16/16" in text and not echoed  # through tqdm.write, above the bar


@pytest.fixture(scope="module")
def demo_plan(tmp_path_factory):
    folder = tmp_path_factory.mktemp("progress")
    build("demo", None, folder / "demo", shard_size=2)
    spec = parse_spec({
        "name": "progress", "batch_size": 2, "samples": 2, "methods": {"gradcam": {}, "hirescam": {}, "fakecam": {}},
        "metrics": {"sparseness": {}}, "datasets": {"demo": {"manifest": str(folder / "demo")}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 64}},
    }, "progress.yaml")
    (plan,) = plan_cells(spec, "r", str(folder / "run"))
    return plan


def test_a_worker_records_each_method_of_its_batch_and_the_driver_reads_them(demo_plan):
    store = RunStore(demo_plan.location)
    evaluator = CellEvaluator(demo_plan)
    rows = _plan_rows(demo_plan)
    ids = tuple(rows.column("image_id").to_pylist())
    batches = evaluator(rows)
    seen = []
    progress = GridProgress(lambda line: None, min_interval_s=0.0)
    cell = progress.cell(demo_plan.name, demo_plan.total, methods=3)
    cell.status = "running"
    for table in batches:  # between two of a batch's methods, its record says how far it is
        (record,) = store.in_flight(demo_plan.dataset, demo_plan.architecture).values()
        seen.append((record.method, record.methods_done))
        assert record.images == ids and table.column("method")[0].as_py() == record.method
        _poll_workers(store, [demo_plan], progress)
        assert cell.computing == (record.method,) and cell.maps_done == record.methods_done * len(ids)
    assert seen == [("gradcam", 0), ("hirescam", 1), ("fakecam", 2)]
    assert store.in_flight(demo_plan.dataset, demo_plan.architecture) == {}  # the batch returned: no record left


def test_an_in_flight_record_round_trips_and_a_garbled_one_is_skipped(tmp_path):
    store = RunStore(str(tmp_path / "run"))
    store.mark_in_flight("d", "a", "host-1", InFlight(("x", "y"), "scorecam", 4))
    assert store.in_flight("d", "a") == {"host-1": InFlight(("x", "y"), "scorecam", 4)}
    (tmp_path / "run" / "inflight" / "dataset=d" / "architecture=a" / "host-2.json").write_text('["old"]')
    assert list(store.in_flight("d", "a")) == ["host-1"]
