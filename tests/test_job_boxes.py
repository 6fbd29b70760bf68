"""The job gives box metrics each image's ground-truth boxes through the model's preprocessing."""

from __future__ import annotations

import math

import polars as pl
import pyarrow as pa
import pytest

from jobs.assemble import ShardAssembler
from jobs.evaluate import evaluate_in_process
from jobs.plan import plan_cells
from jobs.spec import parse_spec
from storage.builders import build
from storage.manifest import read_manifest, write_manifest
from storage.results import RunStore


@pytest.fixture(scope="module")
def boxed(tmp_path_factory):
    """The demo photos with a box each: one in the top-left quarter of the image, one large, on two shards."""
    folder = tmp_path_factory.mktemp("boxed")
    demo = read_manifest(build("demo", None, folder / "demo", shard_size=100).location)
    table = demo.table.slice(0, 4)
    boxes = []
    for i, (w, h) in enumerate(zip(table.column("width").to_pylist(), table.column("height").to_pylist())):
        box = (0.0, 0.0, w / 2, h / 2) if i % 2 else (w * 0.1, h * 0.1, w * 0.9, h * 0.9)
        boxes.append([dict(zip(("xmin", "ymin", "xmax", "ymax"), box))])
    table = table.set_column(table.schema.get_field_index("boxes"), "boxes", pa.array(boxes, table.schema.field("boxes").type))
    table = table.set_column(table.schema.get_field_index("shard"), "shard", pa.array([0, 0, 1, 1], pa.int32()))
    write_manifest(table, folder / "boxed", class_names=demo.class_names, builder="test", builder_version="1")
    return str(folder / "boxed")


def test_box_metrics_in_the_job_see_the_boxes_in_model_coordinates(boxed, tmp_path):
    spec = parse_spec({
        "name": "boxes", "batch_size": 2, "methods": {"fakecam": {}, "gradcam": {}},
        "metrics": {"localization_error": {}, "box_accuracy": {}, "pointing_game": {"tolerance": 0, "ties": "any"}},
        "datasets": {"boxed": {"manifest": boxed}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96}},
    }, "boxes.yaml")
    (plan,) = plan_cells(spec, "r", str(tmp_path / "run"))
    rows = evaluate_in_process(plan)
    store = RunStore(str(tmp_path / "run"))
    assembler = ShardAssembler(store, plan, pending=set(plan.images))
    assert sorted(assembler.add(rows)) == [0, 1]
    scores = store.scores().collect()

    manifest = {r["image_id"]: r for r in read_manifest(boxed).records()}
    preprocessing = plan.model.preprocessing
    for image_id, record in manifest.items():
        (box,) = preprocessing.boxes([[b[k] for k in ("xmin", "ymin", "xmax", "ymax")] for b in record["boxes"]],
                                     record["width"], record["height"]).tolist()
        area = (math.ceil(box[2] - 0.5) - math.ceil(box[0] - 0.5)) * (math.ceil(box[3] - 0.5) - math.ceil(box[1] - 0.5))
        fake = scores.filter((pl.col("method") == "fakecam") & (pl.col("image_id") == image_id))
        value = dict(zip(fake["metric"], fake["value"]))
        assert math.isclose(value["localization_error"], 1 - area / 96**2, rel_tol=1e-9), image_id  # Fake-CAM: B_p = image
        assert value["pointing_game"] == 1.0
    accuracy = scores.filter(pl.col("metric") == "box_accuracy")
    assert accuracy.height == 8 and accuracy["value"].is_not_nan().all()  # the driver scored it with the boxes


def test_an_image_that_cannot_be_read_is_skipped_with_its_reason_and_the_cell_completes(boxed, tmp_path):
    import numpy as np

    from storage.manifest import encode_mask

    manifest = read_manifest(boxed)
    table = manifest.table
    masks = [encode_mask(np.ones((5, 7), dtype=bool))] + [None] * (table.num_rows - 1)  # not resized: skipped
    images = table.column("image").to_pylist()
    images[2] = b"\xff\xd8 not a jpeg"  # damaged after the manifest was built
    table = table.set_column(table.schema.get_field_index("mask"), "mask", pa.array(masks, pa.binary()))
    table = table.set_column(table.schema.get_field_index("image"), "image", pa.array(images, pa.binary()))
    write_manifest(table, tmp_path / "bad", class_names=manifest.class_names, builder="test", builder_version="1")
    spec = parse_spec({
        "name": "masks", "batch_size": 4, "methods": {"gradcam": {}, "fakecam": {}},
        "metrics": {"relevance_mass_accuracy": {}, "sparseness": {}},
        "datasets": {"bad": {"manifest": str(tmp_path / "bad")}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96}},
    }, "masks.yaml")
    (plan,) = plan_cells(spec, "r", str(tmp_path / "run"))
    ids = table.column("image_id").to_pylist()
    rows = evaluate_in_process(plan)
    reasons = {r["image_id"]: r["skipped"] for r in rows.to_pylist() if r["skipped"] is not None}
    assert reasons.keys() == {ids[0], ids[2]}
    assert reasons[ids[0]].startswith(f"the mask of image '{ids[0]}' is 7×5 but the image is")
    assert reasons[ids[2]].startswith(f"image '{ids[2]}' (embedded) cannot be decoded")
    evaluated = [r for r in rows.to_pylist() if r["skipped"] is None]
    assert sorted({(r["image_id"], r["method"]) for r in evaluated}) == sorted(
        (i, m) for i in (ids[1], ids[3]) for m in ("gradcam", "fakecam"))

    store = RunStore(str(tmp_path / "run"))
    assembler = ShardAssembler(store, plan, pending=set(plan.images))
    assert sorted(assembler.add(rows)) == [0, 1]  # both shards complete without the skipped images' rows
    assert sorted(assembler.new_skips()) == sorted(reasons.items()) and assembler.new_skips() == []
    skipped = store.skipped_images()
    assert dict(zip(skipped["image_id"], skipped["reason"])) == reasons and set(skipped["shard"]) == {0, 1}
    scores = store.scores().collect()
    assert sorted(set(scores["image_id"])) == sorted([ids[1], ids[3]]) and scores.height == 2 * 2 * 2
    from storage.report import write_report

    written = write_report(tmp_path / "run", directions={"relevance_mass_accuracy": "higher", "sparseness": "higher"})
    (listed,) = written["skipped_images"]
    assert sorted(pl.read_csv(listed)["image_id"]) == sorted(reasons)
    markdown = next(p for p in written["table12b_ranks"] if p.suffix == ".md").read_text()
    assert "2 image(s) could not be read and were not evaluated" in markdown
