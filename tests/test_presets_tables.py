"""The presets of Buono et al. (TMLR 2026, seed 000) are its tables: each runs the methods, metrics, architectures
and image counts of the tables it reproduces, and ships the numbers the paper prints for them."""

from __future__ import annotations

import math

import polars as pl
import pytest

from attribution.models.registry import predicts_imagenet
from jobs.paper import paper_values
from jobs.plan import model_config
from jobs.spec import load_spec

PAPER_METHODS = {"expected_gradcam", "gradcam", "gradcampp", "smoothgradcampp", "integrated_gradcam", "hirescam",
                 "xgradcam", "layercam", "scorecam", "ablationcam"}
FINE_GRAINED_METRICS = {"attribution_localisation", "relevance_rank_accuracy", "relevance_mass_accuracy", "auc",
                        "sparseness", "complexity", "effective_complexity"}
FINE_GRAINED_DATASETS = {"cub200", "stanford_dogs", "oxford_pets", "flowers102", "fgvc_aircraft"}
FINE_GRAINED_ARCHITECTURES = {"vgg16", "resnet18", "resnet50", "densenet121", "efficientnet_b0", "inception_v3",
                              "convnext_tiny", "vit_b_16"}
ALL = "*"

# table → (metrics, datasets, architectures) as the paper prints them
TABLES = {
    "1": ({"irof", "sufficiency", "infidelity", "local_lipschitz_estimate", "max_sensitivity", "avg_sensitivity",
           "complexity", "sparseness"}, {"imagenet"}, {"vgg16"}),
    "5": ({"insertion", "deletion", "insertion_minus_deletion"}, {"imagenet"}, {"vgg16", "resnet50", "alexnet"}),
    "6": ({"attribution_localisation", "top_k_intersection", "relevance_rank_accuracy"}, {"coco"},
          {"vgg16", "resnet50", "alexnet"}),
    "7": ({"relevance_mass_accuracy"}, {"coco"}, {"vgg16", "resnet50", "alexnet"}),
    "8": ({"relative_input_stability", "relative_output_stability"}, {"imagenet"}, {"vgg16", "resnet50"}),
    "9": ({"infidelity"}, {"cifar10"}, {"vgg16", "resnet50", "alexnet"}),
    "10": ({"seconds"}, {"cifar10"}, {"vgg16"}),
    "12a": (FINE_GRAINED_METRICS, {ALL}, {ALL}),
    **{str(13 + i): (FINE_GRAINED_METRICS, {ALL}, {arch}) for i, arch in enumerate(
        ["vgg16", "resnet18", "resnet50", "densenet121", "efficientnet_b0", "inception_v3", "convnext_tiny",
         "vit_b_16"])},
    **{str(21 + i): (FINE_GRAINED_METRICS, {dataset}, {ALL}) for i, dataset in enumerate(
        ["cub200", "stanford_dogs", "oxford_pets", "flowers102", "fgvc_aircraft"])},
}
# preset → (its tables, images per cell)
PRESETS = {
    "fine_grained_40": ({"12a", *map(str, range(13, 26))}, 500),
    "imagenet_table1": ({"1"}, 500),
    "imagenet_table5": ({"5"}, 5000),
    "imagenet_table8": ({"8"}, 500),
    "coco_localization": ({"6", "7"}, 500),
    "cifar10_infidelity": ({"9"}, 500),
    "timing": ({"10"}, 100),
}
EXCLUDED_IN_TABLE_8 = {"integrated_gradcam", "hirescam", "ablationcam"}  # printed "-"


def _paper(preset: str) -> pl.DataFrame:
    found = paper_values(preset)
    assert found is not None, f"{preset} ships no paper values"
    return found[0]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_each_table_preset_runs_exactly_its_tables_methods_metrics_and_cells(preset):
    spec, paper = load_spec(preset), _paper(preset)
    tables, samples = PRESETS[preset]
    assert set(paper["table"]) == tables
    assert spec.samples == samples
    # the methods: the paper's 10, in the preset and in every table, but those Table 8 excludes ("-")
    methods = PAPER_METHODS - (EXCLUDED_IN_TABLE_8 if tables == {"8"} else set())
    assert set(spec.methods) == methods == set(paper["method"])
    # the metrics: the tables' and nothing else (the timing preset's one metric is a placeholder: Table 10 has none)
    metrics = set().union(*(TABLES[t][0] for t in tables))
    assert set(paper["metric"]) == metrics
    if preset == "timing":
        assert len(spec.metrics) == 1 and not set(spec.metrics) & metrics
    else:
        assert set(spec.metrics) == metrics
    # the cells: every dataset and architecture of the tables (aggregated tables name "*")
    datasets = set().union(*(TABLES[t][1] for t in tables)) - {ALL}
    architectures = set().union(*(TABLES[t][2] for t in tables)) - {ALL}
    assert {d.name for d in spec.datasets} == datasets
    assert {a.name for a in spec.architectures} == architectures
    for table in tables:
        rows = paper.filter(pl.col("table") == table)
        expected = TABLES[table]
        assert set(rows["metric"]) == expected[0], table
        assert set(rows["dataset"]) == expected[1] and set(rows["architecture"]) == expected[2], table
        methods = PAPER_METHODS - (EXCLUDED_IN_TABLE_8 if table == "8" else set())
        cells = len(expected[1]) * len(expected[2])
        assert rows.height == len(methods) * len(expected[0]) * cells, table  # every printed number, once
        assert set(rows["method"]) == methods, table


def test_the_fine_grained_grid_is_table_11s_with_imagenet_weights_explaining_the_prediction():
    spec = load_spec("fine_grained_40")
    assert len(spec.cells) == 40
    assert {d.name for d in spec.datasets} == FINE_GRAINED_DATASETS
    assert {a.name for a in spec.architectures} == FINE_GRAINED_ARCHITECTURES
    assert spec.references.pool == "auto"  # M = 2K
    assert all(d.target == "predicted" and d.references for d in spec.datasets)
    for arch in spec.architectures:
        assert arch.weights == "torchvision:IMAGENET1K_V1" and predicts_imagenet(arch.weights)
        config = model_config(spec, spec.datasets[0], arch, classes=200)  # the plan's check: offline, no download
        assert config.num_classes == 1000 and config.weights == "torchvision:IMAGENET1K_V1"


def test_the_fine_tuned_and_full_variants_keep_the_grid():
    table12 = load_spec("fine_grained_40")
    finetuned = load_spec("fine_grained_40_finetuned", {"checkpoints": "/ckpt"})
    assert set(finetuned.methods) == set(table12.methods) and set(finetuned.metrics) == set(table12.metrics)
    assert all(d.target == "label" for d in finetuned.datasets)
    dataset, arch = finetuned.cells[9]
    assert finetuned.weights_for(dataset, arch) == "file:/ckpt/stanford_dogs/resnet18.pt"
    full = load_spec("fine_grained_40_full")
    assert {(d.name, a.name) for d, a in full.cells} == {(d.name, a.name) for d, a in table12.cells}
    assert set(full.methods) == PAPER_METHODS | {"opticam"}
    assert set(full.metrics) > FINE_GRAINED_METRICS and len(full.metrics) == 21
    assert all(d.target == "predicted" for d in full.datasets)


def test_the_imagenet_extended_set_covers_tables_1_5_and_8():
    extended = load_spec("imagenet")
    assert {a.name for a in extended.architectures} == {"vgg16", "resnet50", "alexnet"}
    assert set(extended.methods) >= PAPER_METHODS
    assert set(extended.metrics) >= TABLES["1"][0] | TABLES["5"][0] | TABLES["8"][0]


def test_the_timing_preset_explains_one_image_at_a_time_one_cell_at_a_time():
    spec = load_spec("timing")
    assert spec.batch_size == 1 and spec.samples == 100
    assert spec.resources.actors_per_cell == 1 and spec.resources.concurrent_cells == 1
    assert [(d.name, a.name) for d, a in spec.cells] == [("cifar10", "vgg16")]


def test_the_printed_numbers_and_their_scales():
    def value(preset, table, method, metric, dataset=None, architecture=None):
        rows = _paper(preset).filter((pl.col("table") == table) & (pl.col("method") == method)
                                     & (pl.col("metric") == metric))
        if dataset is not None:
            rows = rows.filter(pl.col("dataset") == dataset)
        if architecture is not None:
            rows = rows.filter(pl.col("architecture") == architecture)
        (row,) = rows.iter_rows(named=True)
        return row["value"], row["scale"]

    assert value("imagenet_table1", "1", "expected_gradcam", "irof") == (62.39, 100.0)
    assert value("imagenet_table1", "1", "gradcampp", "max_sensitivity") == (0.192, 1.0)
    assert value("imagenet_table5", "5", "scorecam", "deletion", architecture="alexnet") == (0.1522, 1.0)
    assert value("imagenet_table8", "8", "gradcam", "relative_output_stability", architecture="resnet50") == (
        15500.0, 1.0)
    assert value("coco_localization", "7", "expected_gradcam", "relevance_mass_accuracy", architecture="vgg16") == (
        0.18, 1.0)
    assert value("timing", "10", "ablationcam", "seconds") == (0.302, 1.0)
    assert value("fine_grained_40", "12a", "expected_gradcam", "effective_complexity") == (30400.0, 1.0)
    assert value("fine_grained_40", "19", "ablationcam", "attribution_localisation", architecture="convnext_tiny") == (
        0.349, 1.0)
    assert value("fine_grained_40", "24", "expected_gradcam", "complexity", dataset="flowers102") == (9.96, 1.0)
    # Table 9's values are "scaled by 10^7, 10^8, 10^9 respectively": printed = run's mean × 1e-7 / 1e-8 / 1e-9
    scales = dict(_paper("cifar10_infidelity").select("architecture", "scale").unique().iter_rows())
    assert set(scales) == {"vgg16", "resnet50", "alexnet"}
    assert all(math.isclose(scales[a], s) for a, s in [("vgg16", 1e-7), ("resnet50", 1e-8), ("alexnet", 1e-9)])
