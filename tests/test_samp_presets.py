"""SAMP's MNIST and CIFAR-10 presets (seed 002 Table 1, §4.1, App. A.3/A.4): the protocol, the paper's values, and
the MNIST grid run end to end on a few images with a checkpoint from ``camgrid train``."""

from __future__ import annotations

import math

import polars as pl
import pytest
from dataset_layouts import mnist

from attribution.models import Preprocessing
from attribution.models.registry import CAMGRID_MODELS
from attribution.models.samp_cnn import SAMPCNN
from jobs.paper import paper_values
from jobs.pipeline import run_grid
from jobs.spec import load_spec
from jobs.train import TrainConfig, train
from storage.builders import build
from storage.paper import paper_tables
from storage.results import RunStore

PRESETS = {"samp_mnist": ("mnist", "samp_cnn_mnist", 28), "samp_cifar10": ("cifar10", "samp_cnn_cifar10", 32)}


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_the_presets_follow_samps_protocol_at_10_pixels_per_step(preset):
    dataset, architecture, side = PRESETS[preset]
    spec, imagenet = load_spec(preset), load_spec("samp_imagenet")
    assert [(d.name, d.target) for d in spec.datasets] == [(dataset, "predicted")] and spec.samples == 100
    assert [(a.name, a.weights) for a in spec.architectures] == [
        (architecture, f"file:{{checkpoints}}/{architecture}.pt")]
    assert "checkpoints" in spec.paths and list(spec.methods) == list(imagenet.methods)
    steps = math.ceil(side * side / 10)  # s_m = 10 pixels a step: 79 on MNIST, 103 on CIFAR-10
    assert steps == {28: 79, 32: 103}[side]
    samp_metric = {"softmax": False, "normalise_curve": "full_score", "auc": "mean", "steps": steps}
    assert spec.metrics["deletion"].params == samp_metric
    assert spec.metrics["insertion"].params == samp_metric | {"blur_kernel": 11, "blur_sigma": 5}
    for name in ("samp", "samp_pp"):
        method = spec.methods[name].create()
        assert (method.s, method.unit, method.blur_kernel, method.blur_sigma) == (10, "pixel", 11, 5.0)
    samp_pp = spec.methods["samp_pp"].create()
    assert (samp_pp.eta_ratio, samp_pp.momentum) == (0.1, 0.5)
    assert spec.methods["samp"].create().eta_ratio is None
    assert spec.methods["blur_ig"].create().max_sigma == pytest.approx(50 * side / 224, abs=0.01)
    assert {spec.methods[m].create().score for m in ("integrated_gradients", "blur_ig", "guided_ig")} == {"logit"}


@pytest.mark.parametrize("preset, gradcam, samp_pp", [("samp_mnist", (0.221, 0.715), (-0.137, 1.050)),
                                                      ("samp_cifar10", (0.314, 0.863), (-0.899, 1.514))])
def test_the_papers_table_1_values(preset, gradcam, samp_pp):
    dataset, architecture, _ = PRESETS[preset]
    frame, source = paper_values(preset)
    assert source == f"jobs/presets/paper/{preset}.csv" and frame.height == 12
    assert set(frame["table"]) == {"1"} and set(frame["scale"]) == {1.0}
    assert set(frame["dataset"]) == {dataset} and set(frame["architecture"]) == {architecture}
    assert set(frame["method"]) == set(load_spec(preset).methods) and set(frame["metric"]) == {"deletion", "insertion"}

    def value(method, metric):
        return frame.filter((pl.col("method") == method) & (pl.col("metric") == metric))["value"].item()

    assert (value("gradcam", "deletion"), value("gradcam", "insertion")) == gradcam
    assert (value("samp_pp", "deletion"), value("samp_pp", "insertion")) == samp_pp
    assert value("samp_pp", "deletion") == frame.filter(pl.col("metric") == "deletion")["value"].min()


def test_the_mnist_grid_runs_with_a_trained_checkpoint(tmp_path, monkeypatch):
    # Table 5's layers at a few channels each stand in for samp_cnn_mnist: the same code paths, seconds on 2 cores
    monkeypatch.setitem(CAMGRID_MODELS, "samp_cnn_mnist", (lambda classes: SAMPCNN(1, (4, 8, 16, 16, 32), classes),
                                                           Preprocessing(28, 28, (0.0,), (1.0,), channels=1)))
    mnist(tmp_path / "raw")
    build("mnist", tmp_path / "raw", tmp_path / "data" / "mnist_test", n=None)
    train("samp_cnn_mnist", tmp_path / "data" / "mnist_test", tmp_path / "checkpoints" / "samp_cnn_mnist.pt",
          config=TrainConfig(epochs=1), echo=lambda _: None)
    spec = load_spec("samp_mnist", {"data": str(tmp_path / "data"), "checkpoints": str(tmp_path / "checkpoints")},
                     {"samples": 2, "batch_size": 2, "methods.integrated_gradients.steps": 8,
                      "methods.blur_ig.steps": 8, "methods.guided_ig.steps": 8})
    run_grid(spec, tmp_path / "run", echo=lambda _: None, executor="local")
    scores = RunStore(str(tmp_path / "run")).scores().collect()
    assert scores.height == 2 * 6 * 2 and scores["value"].is_finite().all()
    assert set(scores["method"]) == set(spec.methods) and set(scores["metric"]) == {"deletion", "insertion"}
    frame, source = paper_values("samp_mnist")
    comparison = paper_tables(scores, frame, source)["paper_comparison"].frame
    assert comparison.height == 12 and comparison["this_run"].is_not_null().all()
