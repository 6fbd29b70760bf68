"""The typed batch a metric scores: inputs checked once, unknown inputs refused, a memo that belongs to its maps."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from attribution.needs import Need
from evaluation import Batch, create_metric, metric_names


class Linear(nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(3 * 8 * 8, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


@pytest.fixture
def inputs():
    g = torch.Generator().manual_seed(1)
    return dict(images=torch.rand(3, 3, 8, 8, generator=g), model=Linear().eval(), targets=torch.tensor([0, 1, 2]),
                black=(0.0, 0.0, 0.0))


def test_an_unknown_or_misspelt_input_is_an_error(inputs):
    maps = torch.rand(3, 8, 8)
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'"):
        create_metric("avg_sensitivity")(maps, seed=[1, 2, 3], **inputs)
    with pytest.raises(TypeError, match="unexpected keyword argument 'mask'"):
        Batch(maps, mask=torch.ones(3, 8, 8, dtype=torch.bool))
    with pytest.raises(TypeError, match="not both"):
        create_metric("deletion")(Batch(maps, **inputs), targets=inputs["targets"])


def test_inputs_are_checked_against_the_maps_once(inputs):
    maps = torch.rand(3, 8, 8)
    with pytest.raises(ValueError, match="2 targets for 3 maps"):
        Batch(maps, targets=[0, 1])
    with pytest.raises(TypeError, match="targets must be integers"):
        Batch(maps, targets=torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"channel weights \(2, 5\) are not \(B, K\) for 3 maps"):
        Batch(maps, weights=torch.ones(2, 5))
    with pytest.raises(ValueError, match="maps must be a"):
        Batch(maps[0])


def test_a_memo_is_shared_by_the_metrics_of_one_batch_and_never_across_maps(inputs):
    calls = []
    model = inputs["model"]
    counting = dict(inputs, model=lambda x: calls.append(len(x)) or model(x))
    first, second = torch.rand(3, 8, 8), torch.rand(3, 8, 8)
    batch = Batch(first, **counting)
    deletion = create_metric("deletion", steps=8)(batch)
    passes = len(calls)
    pixel_flipping = create_metric("pixel_flipping", steps=8)(batch)
    assert len(calls) == passes  # the deletion curve of these maps is computed once
    other = Batch(second, **counting)
    assert other.memo == {}
    torch.testing.assert_close(create_metric("deletion", steps=8)(other), create_metric("deletion", steps=8)(second,
                                                                                                               **inputs))
    assert not torch.allclose(create_metric("deletion", steps=8)(other), deletion)
    assert batch.subset([0, 2]).memo == {}
    torch.testing.assert_close(create_metric("pixel_flipping", steps=8)(batch.subset([0, 2])), pixel_flipping[[0, 2]])
    with pytest.raises(dataclasses.FrozenInstanceError):
        batch.maps = second  # a batch's maps are its memo's: they cannot change under it


def test_every_metric_declares_its_needs_and_a_missing_one_is_named(inputs):
    maps = torch.rand(3, 8, 8)
    for name in metric_names():
        metric = create_metric(name)
        assert metric.needs <= set(Need), name
    with pytest.raises(ValueError, match="auc needs ground-truth masks"):
        create_metric("auc")(maps)
    with pytest.raises(ValueError, match="max_sensitivity needs an explainer"):
        create_metric("max_sensitivity")(maps, **inputs)
    assert Need.BLACK in create_metric("deletion").needs and Need.BLACK not in create_metric("deletion",
                                                                                              baseline="min").needs
    assert create_metric("cam_infidelity").reference_pool == "held_out"
    assert create_metric("sufficiency").needs == {Need.SHARD}


def test_the_default_baseline_is_the_model_black(inputs):
    maps = torch.rand(3, 8, 8)
    black = (-2.1, -2.0, -1.8)
    default = create_metric("deletion", steps=8)(maps, **dict(inputs, black=black))
    explicit = create_metric("deletion", steps=8, baseline=black)(maps, **inputs)
    torch.testing.assert_close(default, explicit, rtol=0, atol=0)
    assert not torch.allclose(default, create_metric("deletion", steps=8, baseline="min")(maps, **inputs))
