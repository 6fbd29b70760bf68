"""The job and the library give the same number for the same method, metric and parameters.

The job supplies what a method or metric declares it needs (the model's normalisation, masks, channel
weights, the re-explainer) by one rule; a notebook passes the same inputs by keyword. Every
default is the library's: the job adds no parameter of its own.
"""

from __future__ import annotations

import math

import pyarrow.parquet as pq
import pytest
import torch

from attribution.methods import create_method
from evaluation import create_metric
from jobs.evaluate import evaluate_in_process, row_scores
from jobs.plan import image_seed, plan_cells
from jobs.spec import parse_spec
from storage.builders import build
from storage.manifest import decode_image, ground_truth_mask

METHODS = {"gradcam": {}, "hirescam": {}}
SIC = {"thresholds": [0.05, 0.2, 0.5], "min_pred_value": 0.0}
METRICS = {"deletion": {"steps": 6}, "insertion": {"steps": 6}, "faithfulness_estimate": {"steps": 6},
           "infidelity": {"patch_sizes": [48]}, "average_drop": {}, "avg_sensitivity": {"nr_samples": 2},
           "completeness_gap": {}, "sparseness": {}, "relevance_mass_accuracy": {}}


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    location = tmp_path_factory.mktemp("manifests") / "demo"
    build("demo", None, location, shard_size=3)
    return str(location)


def test_job_scores_equal_library_calls_with_library_defaults(manifest):
    spec = parse_spec({
        "name": "defaults", "samples": 3, "batch_size": 3, "methods": METHODS, "metrics": METRICS,
        "datasets": {"demo": {"manifest": manifest}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96}},
    }, "defaults.yaml")
    (plan,) = plan_cells(spec, "r")
    job = row_scores(evaluate_in_process(plan))

    loaded = plan.model.load()
    rows = {r["image_id"]: r for r in pq.read_table(manifest).to_pylist()}
    ids = sorted(i for shard in plan.images.values() for i in shard)
    images = torch.stack([loaded.preprocessing(decode_image(rows[i])) for i in ids])
    targets = torch.tensor([plan.classes[rows[i]["label"]] for i in ids])
    seeds = [image_seed(plan.seed, plan.dataset, plan.architecture, i) for i in ids]
    masks = [ground_truth_mask(rows[i]) for i in ids]
    with_mask = [k for k, m in enumerate(masks) if m is not None]
    assert with_mask and len(with_mask) < len(ids)  # both kinds of image are scored
    for method_name in METHODS:
        bound = create_method(method_name).bind(loaded.model, loaded.layer, loaded.layout)
        result = bound(images, targets, seeds=seeds)
        maps = result.scored((96, 96))
        inputs = dict(images=images, model=loaded.model, targets=targets, seeds=seeds,
                      black=loaded.preprocessing.black, layer=loaded.layer, weights=result.weights,
                      explainer=bound.explainer())
        for metric_name, params in METRICS.items():
            metric = create_metric(metric_name, **params)
            if metric_name == "relevance_mass_accuracy":
                index = torch.tensor(with_mask)
                stacked = torch.stack([loaded.preprocessing.mask(masks[k]) for k in with_mask])
                values = [math.nan] * len(ids)
                for k, value in zip(with_mask, metric(maps[index], masks=stacked).tolist()):
                    values[k] = value
            else:
                values = metric(maps, **inputs).tolist()
            for image_id, value in zip(ids, values):
                got = job[(image_id, method_name, metric_name)]
                assert (math.isnan(value) and math.isnan(got)) or math.isclose(got, value, rel_tol=1e-5,
                                                                                abs_tol=1e-7), \
                    (method_name, metric_name, image_id, got, value)
    assert all(math.isnan(job[(i, "hirescam", "completeness_gap")]) for i in ids)  # no channel weights


def test_a_metric_with_its_own_target_scores_maps_of_that_target(manifest):
    spec = parse_spec({
        "name": "targets", "samples": 3, "batch_size": 3, "methods": {"gradcam": {}},
        "metrics": {"deletion": {"steps": 6},
                    "deletion_pred": {"metric": "deletion", "steps": 6, "target": "predicted"},
                    "sic_pred": {"metric": "sic", **SIC, "target": "predicted"}},
        "datasets": {"demo": {"manifest": manifest}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96}},
    }, "targets.yaml")
    (plan,) = plan_cells(spec, "r")
    output = evaluate_in_process(plan)
    job = row_scores(output)

    loaded = plan.model.load()
    rows = {r["image_id"]: r for r in pq.read_table(manifest).to_pylist()}
    ids = sorted(i for shard in plan.images.values() for i in shard)
    images = torch.stack([loaded.preprocessing(decode_image(rows[i])) for i in ids])
    labels = torch.tensor([plan.classes[rows[i]["label"]] for i in ids])
    predicted = loaded.model(images).argmax(1)
    assert (labels != predicted).any()  # the two targets differ on some image, so the test can tell them apart
    bound = create_method("gradcam").bind(loaded.model, loaded.layer, loaded.layout)
    metric = create_metric("deletion", steps=6)
    stored = {r["image_id"]: r["target"] for r in output.to_pylist()}
    assert [stored[i] for i in ids] == labels.tolist()  # the stored maps explain the dataset's target
    for name, targets in (("deletion", labels), ("deletion_pred", predicted)):
        maps = bound(images, targets).scored((96, 96))
        expected = metric(maps, images=images, model=loaded.model, targets=targets, black=loaded.preprocessing.black)
        for image_id, value in zip(ids, expected.tolist()):
            assert math.isclose(job[(image_id, "gradcam", name)], value, rel_tol=1e-5, abs_tol=1e-7), (name, image_id)
    sic = create_metric("sic", **SIC)(bound(images, predicted).scored((96, 96)), images=images, model=loaded.model,
                                      targets=predicted, normalisation=loaded.preprocessing.normalisation,
                                      seeds=[image_seed(plan.seed, plan.dataset, plan.architecture, i) for i in ids])
    assert torch.isfinite(sic).all()  # the job scores the pixels the model was given, by the model's normalisation
    for image_id, value in zip(ids, sic.tolist()):
        assert math.isclose(job[(image_id, "gradcam", "sic_pred")], value, rel_tol=1e-5, abs_tol=1e-7), image_id
