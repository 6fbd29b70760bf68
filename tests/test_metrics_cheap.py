"""Complexity and localisation metrics: hand-computable cases, agreement with Quantus, batch invariance, NaN policy."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import quantus
import torch

from evaluation import UnknownMetricError, create_metric, metric_class, metric_directions, metric_names

CHEAP = ["complexity", "sparseness", "effective_complexity", "attribution_localisation", "top_k_intersection",
         "relevance_rank_accuracy", "relevance_mass_accuracy", "auc"]
QUANTUS = {"complexity": quantus.Complexity, "sparseness": quantus.Sparseness,
           "effective_complexity": quantus.EffectiveComplexity,
           "attribution_localisation": quantus.AttributionLocalisation, "top_k_intersection": quantus.TopKIntersection,
           "relevance_rank_accuracy": quantus.RelevanceRankAccuracy,
           "relevance_mass_accuracy": quantus.RelevanceMassAccuracy, "auc": quantus.AUC}
PARAMS = {"top_k_intersection": {"k": 50}}


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    maps = torch.rand((5, 16, 16), generator=g) ** 3  # continuous: no ties
    maps[1] *= 1e-4  # scale must not matter (per-sample normalisation)
    masks = torch.zeros((5, 16, 16), dtype=torch.bool)
    for i in range(5):
        masks[i, 2 + i:9 + i, 3:3 + 2 * i + 4] = True
    return maps, masks


def quantus_scores(name, maps, masks):
    metric = QUANTUS[name](**PARAMS.get(name, {}), disable_warnings=True, normalise_func=quantus.normalise_by_max,
                           normalise_func_kwargs={"normalise_axes": (1, 2, 3)})
    x = np.random.default_rng(0).random((len(maps), 3, 16, 16)).astype(np.float32)
    return np.asarray(metric(model=None, x_batch=x, y_batch=np.zeros(len(maps), dtype=int),
                             a_batch=maps[:, None].numpy().astype(np.float64), s_batch=masks[:, None].numpy(),
                             device="cpu", batch_size=len(maps)), dtype=np.float64)


@pytest.mark.parametrize("name", CHEAP)
def test_agrees_with_quantus(name, batch):
    maps, masks = batch
    ours = create_metric(name, **PARAMS.get(name, {}))(maps, masks=masks).numpy()
    np.testing.assert_allclose(ours, quantus_scores(name, maps, masks), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", CHEAP)
def test_batch_invariance(name, batch):
    maps, masks = batch
    metric = create_metric(name, **PARAMS.get(name, {}))
    whole = metric(maps, masks=masks)
    single = torch.cat([metric(maps[i:i + 1], masks=masks[i:i + 1]) for i in range(len(maps))])
    torch.testing.assert_close(whole, single, rtol=0, atol=1e-12)


def test_hand_computable_cases():
    constant = torch.ones(1, 4, 4)
    point = torch.zeros(1, 4, 4)
    point[0, 1, 2] = 3.0
    complexity, sparseness = create_metric("complexity"), create_metric("sparseness")
    assert complexity(constant).item() == pytest.approx(math.log(16))  # maximal entropy
    assert complexity(point).item() == pytest.approx(0.0)
    assert sparseness(constant).item() == pytest.approx(0.0)
    assert sparseness(point).item() == pytest.approx(15 / 16)  # (N − 1) / N for one non-zero pixel
    assert create_metric("effective_complexity")(point).item() == 1
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2, 1:3] = True
    on_mask = mask.to(torch.float32) * 0.7  # a map equal to the mask localises perfectly
    for name in ("attribution_localisation", "relevance_rank_accuracy", "relevance_mass_accuracy", "auc"):
        assert create_metric(name)(on_mask, masks=mask).item() == pytest.approx(1.0), name
    assert create_metric("top_k_intersection", k=4)(on_mask + 0.01 * torch.rand(1, 4, 4), masks=mask).item() == 1.0
    assert create_metric("auc")(1 - on_mask, masks=mask).item() == pytest.approx(0.0)
    assert create_metric("auc")(constant, masks=mask).item() == pytest.approx(0.5)  # all ties
    weighted = create_metric("attribution_localisation", weighted=True)(on_mask, masks=mask).item()
    assert weighted == pytest.approx(4 / 16)


def test_nan_policy_logs_the_reason(caplog, batch):
    maps, masks = batch
    maps, masks = maps.clone(), masks.clone()
    maps[2] = 0
    masks[3] = False
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        complexity = create_metric("complexity")(maps)
        mass = create_metric("relevance_mass_accuracy")(maps, masks=masks)
    assert torch.isnan(complexity).tolist() == [False, False, True, False, False]
    assert torch.isnan(mass).tolist() == [False, False, True, True, False]
    assert "complexity undefined for samples [2]: all-zero map" in caplog.text
    assert "relevance_mass_accuracy undefined for samples [3]: empty ground-truth mask" in caplog.text
    full = torch.ones_like(masks)
    assert torch.isnan(create_metric("auc")(maps, masks=full)).all()


def test_bad_input_is_named(batch):
    maps, masks = batch
    with pytest.raises(ValueError, match="needs ground-truth masks"):
        create_metric("auc")(maps)
    with pytest.raises(ValueError, match="masks \\(5, 8, 8\\) do not match maps \\(5, 16, 16\\)"):
        create_metric("auc")(maps, masks=masks[:, :8, :8])
    bad = maps.clone()
    bad[4, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="maps of samples \\[4\\] contain NaN"):
        create_metric("sparseness")(bad)
    with pytest.raises(UnknownMetricError, match="Did you mean 'sparseness'"):
        create_metric("sparsenes")
    with pytest.raises(TypeError, match="metric 'complexity'"):
        create_metric("complexity", k=3)
    with pytest.raises(ValueError, match="k = 1000 exceeds the 256 pixels"):
        create_metric("top_k_intersection")(maps, masks=masks)


def test_registry_declares_direction_category_and_needs():
    assert set(CHEAP) <= set(metric_names())
    assert metric_directions()["complexity"] == "lower" and metric_directions()["auc"] == "higher"
    assert metric_names("complexity") == ["complexity", "effective_complexity", "sparseness"]
    assert metric_class("auc").needs == frozenset({"masks"}) and metric_class("sparseness").needs == frozenset()
