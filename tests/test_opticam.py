"""Opti-CAM (seed 003 eqs. 8–11, 16–19, A1–A2) and Fake-CAM against hand computations on small nets."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import GapLinearNet
from torch import nn

from attribution.methods import FakeCAM, OptiCAM, create_method
from attribution.methods.opticam import normalize
from attribution.needs import Need
from attribution.postprocess import mask_images, scored_map
from attribution.split import split_at

LAYER = "features"
MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
BLACK = tuple(-m / s for m, s in zip(MEAN, STD))
TARGETS = torch.tensor([1, 0, 3])


def column(values):
    return torch.tensor(values)[None, :, None, None]


def activations(net, x):
    with torch.no_grad():
        return net.features(x)


class CallCounter:
    """Counts the forward passes through a module (one per batch)."""

    def __init__(self, module: nn.Module):
        self.calls = 0
        self.handle = module.register_forward_hook(self._count)

    def _count(self, *args):
        self.calls += 1


def objective_by_hand(net, x, u, targets, objective, normalization, selector, mask_space):
    """F(x; u) from the equations, with the pixel image masked by de-normalising and re-normalising."""
    with torch.no_grad():
        a = net.features(x)
        saliency = torch.einsum("bk,bkuv->buv", u.softmax(dim=1), a)
        up = F.interpolate(saliency[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo, hi = up.amin(dim=(1, 2), keepdim=True), up.amax(dim=(1, 2), keepdim=True)
        s = {"range": (up - lo) / (hi - lo), "max": up / hi, "sigmoid": 1 / (1 + torch.exp(-up))}[normalization]

        def g(inputs):
            y = net(inputs)
            y = y.softmax(dim=1) if selector == "probability" else y
            return y[torch.arange(len(targets)), targets]

        def masked(m):
            if mask_space == "normalized":
                return x * m[:, None]
            pixels = x * column(STD) + column(MEAN)
            return (pixels * m[:, None] - column(MEAN)) / column(STD)

        original, inside, outside = g(x), g(masked(s)), g(masked(1 - s))
    return {
        "mask": inside,
        "diff": -(original - inside).abs(),
        "iomask": inside - outside,
        "iodiff": -(original - inside).abs() + (original - outside).abs(),
    }[objective]


@pytest.mark.parametrize("objective", ["mask", "diff", "iomask", "iodiff"])
@pytest.mark.parametrize("normalization", ["range", "max", "sigmoid"])
@pytest.mark.parametrize("selector, mask_space", [("logit", "pixel"), ("probability", "pixel"),
                                                  ("logit", "normalized"), ("probability", "normalized")])
def test_objective_is_the_papers_formula(smooth_net, images, objective, normalization, selector, mask_space):
    method = OptiCAM(objective=objective, normalization=normalization, selector=selector, mask_space=mask_space,
                     black=BLACK)
    u = torch.randn(3, 6, generator=torch.Generator().manual_seed(7))
    got = method.objective_function(split_at(smooth_net, LAYER), images, TARGETS)(u).detach()
    expected = objective_by_hand(smooth_net, images, u, TARGETS, objective, normalization, selector, mask_space)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_zero_iterations_return_the_channel_mean_map(smooth_net, images):
    result = OptiCAM(iterations=0, black=BLACK).bind(smooth_net, LAYER)(images, TARGETS)
    assert torch.equal(result.weights, torch.full((3, 6), 1 / 6))
    torch.testing.assert_close(result.raw, activations(smooth_net, images).mean(dim=1))


@pytest.mark.parametrize("objective", ["mask", "diff", "iomask", "iodiff"])
def test_returned_weights_are_the_best_iterate(smooth_net, images, objective):
    # With a large step the last Adam iterate can be worse than an earlier one; the best one is kept, so
    # the objective at the returned u never falls below the start and never decreases with more iterations.
    objective_at = OptiCAM(objective=objective, black=BLACK).objective_function(split_at(smooth_net, LAYER), images,
                                                                                TARGETS)
    values = []
    for iterations in range(9):
        u = OptiCAM(iterations=iterations, lr=1.0, tolerance=0.0, objective=objective, black=BLACK).maximise(
            objective_at)
        values.append(objective_at(u).detach())
    values = torch.stack(values)
    assert torch.equal(values[0], objective_at(torch.zeros(3, 6)).detach())
    assert (values[1:] >= values[:-1]).all() and (values[-1] >= values[0]).all()
    assert (values[-1] > values[0]).any()


class Scale(nn.Module):
    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x):
        return x * self.factor


class ScaledFeatures(nn.Module):
    """``net`` with its target layer's activations multiplied by ``factor`` and divided back after it:
    the same function, with ``A`` scaled."""

    def __init__(self, net: GapLinearNet, factor: float):
        super().__init__()
        self.net = net
        self.factor = factor
        self.features = nn.Sequential(net.features, Scale(factor))

    def forward(self, x):
        return self.net.fc(torch.flatten(self.net.pool(self.features(x) / self.factor), 1))


@pytest.mark.parametrize("normalization", ["range", "max"])
def test_range_and_max_normalisation_ignore_a_positive_scale_of_the_maps(gap_net, images, normalization):
    method = OptiCAM(iterations=5, normalization=normalization, black=BLACK)
    base = method.bind(gap_net, LAYER)(images, TARGETS)
    exact = method.bind(ScaledFeatures(gap_net, 8.0).eval(), LAYER)(images, TARGETS)  # a power of two: no rounding
    assert torch.equal(exact.weights, base.weights) and torch.equal(exact.raw, 8 * base.raw)
    scaled = method.bind(ScaledFeatures(gap_net, 3.3).eval(), LAYER)(images, TARGETS)
    torch.testing.assert_close(scaled.weights, base.weights, rtol=1e-4, atol=1e-6)
    maps = activations(gap_net, images)
    assert torch.equal(normalize(8 * maps, normalization), normalize(maps, normalization))


def test_one_channel_returns_that_channel(images):
    torch.manual_seed(0)
    net = GapLinearNet(channels=1).eval()
    result = OptiCAM(iterations=4, black=BLACK).bind(net, LAYER)(images)
    assert torch.equal(result.weights, torch.ones(3, 1))
    assert torch.equal(result.raw, activations(net, images)[:, 0])


def test_constant_maps_normalise_to_zero_not_nan():
    constant = torch.full((2, 4, 5), 3.0)
    for normalization in ("range", "max"):
        assert torch.equal(normalize(constant - 3.0, normalization), torch.zeros(2, 4, 5))
    assert torch.equal(normalize(constant, "range"), torch.zeros(2, 4, 5))
    assert torch.equal(normalize(constant, "max"), torch.ones(2, 4, 5))


def test_a_huge_tolerance_stops_after_one_step_and_zero_runs_every_iteration(smooth_net, images):
    counter = CallCounter(smooth_net.fc)
    stopped = OptiCAM(iterations=20, tolerance=1e9, black=BLACK).channel_weights(smooth_net, LAYER, images, TARGETS)
    assert counter.calls == 1 + 2  # the targets' pass, then the objective at u₀ and at u₁
    one_step = OptiCAM(iterations=1, tolerance=0.0, black=BLACK).channel_weights(smooth_net, LAYER, images, TARGETS)
    assert torch.equal(stopped, one_step)
    counter.calls = 0
    OptiCAM(iterations=7, tolerance=0.0, black=BLACK).channel_weights(smooth_net, LAYER, images, TARGETS)
    assert counter.calls == 1 + 8  # u₀ … u₇
    counter.handle.remove()


def test_a_batch_equals_its_samples_one_by_one_and_calls_are_deterministic(smooth_net, images):
    method = OptiCAM(iterations=30, tolerance=5e-4, black=BLACK)  # the three samples stop at different steps
    counter = CallCounter(smooth_net.fc)
    singles, passes = [], []
    for b in range(3):
        counter.calls = 0
        singles.append(method.bind(smooth_net, LAYER)(images[b : b + 1], TARGETS[b : b + 1]))
        passes.append(counter.calls)
    counter.handle.remove()
    assert len(set(passes)) == 3 and max(passes) < 1 + 31
    batch = method.bind(smooth_net, LAYER)(images, TARGETS)
    torch.testing.assert_close(batch.weights, torch.cat([s.weights for s in singles]), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(batch.raw, torch.cat([s.raw for s in singles]), rtol=1e-5, atol=1e-7)
    again = method.bind(smooth_net, LAYER)(images, TARGETS)
    assert torch.equal(again.weights, batch.weights) and torch.equal(again.raw, batch.raw)


def test_pixel_masking_is_masking_the_denormalised_image(images):
    pixels = images * column(STD) + column(MEAN)
    s = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(5))
    expected = (pixels * s[:, None] - column(MEAN)) / column(STD)
    torch.testing.assert_close(mask_images(images, s, torch.tensor(BLACK)), expected, rtol=1e-5, atol=1e-6)
    assert torch.equal(mask_images(images, s, None), images * s[:, None])


class NormalizingModel(nn.Module):
    """A model that takes [0, 1] pixels and normalises inside, as the official Opti-CAM code."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", column(MEAN))
        self.register_buffer("std", column(STD))

    def forward(self, pixels):
        return self.net((pixels - self.mean) / self.std)


def test_pixel_space_is_the_official_code_on_a_model_that_normalises_inside(smooth_net, images):
    ours = OptiCAM(iterations=6, black=BLACK).bind(smooth_net, LAYER)(images, TARGETS)
    inside = NormalizingModel(smooth_net).eval()
    pixels = images * column(STD) + column(MEAN)
    for official in (OptiCAM(iterations=6, mask_space="normalized"), OptiCAM(iterations=6, black=(0.0, 0.0, 0.0))):
        theirs = official.bind(inside, "net.features")(pixels, TARGETS)
        torch.testing.assert_close(theirs.weights, ours.weights, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(theirs.raw, ours.raw, rtol=1e-4, atol=1e-5)
    normalized = OptiCAM(iterations=6, mask_space="normalized").bind(smooth_net, LAYER)(images, TARGETS)
    assert not torch.allclose(normalized.weights, ours.weights)


def test_needs_follow_the_mask_space():
    assert OptiCAM().needs == frozenset({Need.BLACK})
    assert OptiCAM(mask_space="normalized").needs == frozenset()
    assert create_method("fakecam").needs == frozenset()


def test_pixel_space_without_black_is_a_one_line_error(smooth_net, images):
    with pytest.raises(ValueError) as caught:
        OptiCAM()(smooth_net, LAYER, images)
    message = str(caught.value)
    assert "\n" not in message
    assert message == ("opticam masks the pixel image, so pass black= (the model's black image −mean/std per "
                       "channel; zeros for a model that takes [0, 1] pixels) or mask_space=\"normalized\"")
    with pytest.raises(ValueError, match=r"^black has 2 values but the images have 3 channels$"):
        OptiCAM(black=(0.0, 0.0))(smooth_net, LAYER, images)


@pytest.mark.parametrize(
    "params, parameter",
    [
        ({"iterations": -5}, "iterations"),
        ({"iterations": 1.5}, "iterations"),
        ({"lr": 0}, "lr"),
        ({"tolerance": -1e-3}, "tolerance"),
        ({"objective": "foo"}, "objective"),
        ({"normalization": "x"}, "normalization"),
        ({"selector": "y"}, "selector"),
        ({"mask_space": "z"}, "mask_space"),
        ({"black": "abc"}, "black"),
        ({"black": (0.0, float("nan"), 0.0)}, "black"),
        ({"black": ()}, "black"),
    ],
)
def test_bad_parameters_are_refused_by_name(params, parameter):
    with pytest.raises(ValueError, match=rf"^{parameter} must be") as caught:
        create_method("opticam", **params)
    assert "\n" not in str(caught.value)


def test_a_bad_choice_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"^objective must be one of 'mask', 'diff', 'iomask', 'iodiff'; got 'foo'$"):
        OptiCAM(objective="foo")
    with pytest.raises(ValueError, match=r"^mask_space must be one of 'pixel', 'normalized'; got 'z'$"):
        OptiCAM(mask_space="z")


def test_fakecam_is_one_but_the_top_left_pixel_on_any_model(gap_net, smooth_net):
    x = torch.randn(2, 3, 12, 20, generator=torch.Generator().manual_seed(4))
    expected = torch.ones(2, 12, 20)
    expected[:, 0, 0] = 0
    for net in (gap_net, smooth_net):
        result = FakeCAM().bind(net, LAYER)(x)
        assert result.weights is None
        assert torch.equal(result.targets, net(x).argmax(dim=1))
        assert torch.equal(result.raw, expected)
        assert torch.equal(result.scored((12, 20)), expected) and torch.equal(scored_map(result.raw, (12, 20)), expected)
        assert torch.equal(FakeCAM().bind(net, LAYER)(x, torch.tensor([2, 1])).targets, torch.tensor([2, 1]))
