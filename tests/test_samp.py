"""SAMP and SAMP++ (seed 002 eq. 8, Algorithm 1): path validity, the identities of NOTES §1.2, and the method contract."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from attribution.methods import create_method
from attribution.methods.samp import SAMP, SAMPPlusPlus
from attribution.needs import Need
from evaluation.metrics.faithfulness import rise_blur

BLACK = (-1.0, 0.5, 0.0)


class LinearNet(nn.Module):
    """``f(x) = W x + b`` on the flattened image."""

    def __init__(self, shape: tuple[int, int, int], classes: int = 2) -> None:
        super().__init__()
        self.fc = nn.Linear(math.prod(shape), classes)

    def forward(self, x):
        return self.fc(x.flatten(1))


def rand(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


@pytest.fixture
def net(smooth_net):
    return smooth_net.double()


@pytest.fixture
def x() -> torch.Tensor:
    return rand(3, 3, 8, 8, seed=5)


def score(method, model, points, targets):
    return method.target_scores(model(points), targets)


@pytest.mark.parametrize("unit", ["pixel", "element"])
@pytest.mark.parametrize("direction", ["insertion", "deletion"])
@pytest.mark.parametrize("eta_ratio, momentum", [(None, 0.0), (0.1, 0.5), (0.03, 0.9)])
def test_path_moves_each_coordinate_monotonically_to_the_end_within_the_step_bound(net, x, unit, direction, eta_ratio,
                                                                                  momentum):
    s = 7
    method = SAMPPlusPlus(s=s, eta_ratio=eta_ratio, momentum=momentum, unit=unit)
    start, end = x, rand(3, 3, 8, 8, seed=6)
    path = method.path(net, start, end, torch.tensor([0, 1, 2]), direction=direction, record=True)
    units = 64 if unit == "pixel" else 192
    bound = math.ceil(units / s) + (0 if eta_ratio is None else math.ceil(1 / eta_ratio))
    for i, points in enumerate(path.points):
        assert torch.equal(points[0], start[i]) and torch.equal(points[-1], end[i])
        assert len(points) - 1 == path.steps[i] <= bound
        toward = torch.sign(end[i] - start[i])
        assert ((points[1:] - points[:-1]) * toward >= 0).all()
        low, high = torch.minimum(start[i], end[i]), torch.maximum(start[i], end[i])
        assert ((points >= low) & (points <= high)).all()


@pytest.mark.parametrize("unit", ["pixel", "element"])
def test_without_the_constraint_each_coordinate_moves_once_and_takes_the_gradient_of_its_step(net, x, unit):
    method = SAMP(s=5, unit=unit)
    start, end, targets = x, rise_blur(x), torch.tensor([1, 0, 3])
    path = method.path(net, start, end, targets, record=True)
    for i, points in enumerate(path.points):
        changed = points[1:] != points[:-1]
        assert (changed.sum(0) == 1).all()
        if unit == "pixel":
            assert (changed.any(1) == changed.all(1)).all()
        assert torch.equal((points[1:] - points[:-1])[changed], (end[i] - start[i]).expand_as(changed)[changed])
        _, grads = method.scores_and_gradients(net, points[:-1], targets[i].expand(len(points) - 1))
        expected = (grads * changed).sum(0) * (end[i] - start[i])
        torch.testing.assert_close(path.attributions[i], expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "params",
    [
        {"s": 1, "eta_ratio": None, "momentum": 0.0, "unit": "element"},
        {"s": 5, "eta_ratio": 0.05, "momentum": 0.5, "unit": "pixel"},
        {"s": 3, "eta_ratio": 0.2, "momentum": 0.9, "unit": "element", "attribute_with": "gradient"},
    ],
)
@pytest.mark.parametrize("direction", ["insertion", "deletion"])
def test_a_linear_model_gets_w_times_delta_x_exactly(params, direction):
    model = LinearNet((3, 6, 6)).double().eval()
    start, end = rand(2, 3, 6, 6, seed=7), rand(2, 3, 6, 6, seed=8)
    path = SAMPPlusPlus(**params).path(model, start, end, torch.tensor([0, 1]), direction=direction)
    w = model.fc.weight.detach()[[0, 1]].reshape(2, 3, 6, 6)
    torch.testing.assert_close(path.attributions, w * (end - start), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("direction", ["insertion", "deletion"])
def test_the_linear_insertion_order_is_the_oracle_order(direction):
    model = LinearNet((1, 5, 5)).double().eval()
    start, end = rand(1, 1, 5, 5, seed=9), rand(1, 1, 5, 5, seed=10)
    path = SAMP(s=1, unit="element").path(model, start, end, torch.tensor([1]), direction=direction, record=True)
    moved_at = (path.points[0][1:] != path.points[0][:-1]).flatten(1).float().argmax(0)
    gain = (model.fc.weight.detach()[1] * (end - start).flatten()).tolist()
    oracle = sorted(range(25), key=lambda j: -gain[j] if direction == "insertion" else gain[j])
    assert moved_at.argsort().tolist() == oracle


def test_completeness_error_shrinks_with_eta(net, x):
    targets = torch.tensor([0, 1, 2])
    start = rise_blur(x)
    method = SAMPPlusPlus(s=8, momentum=0.0)
    delta = score(method, net, x, targets) - score(method, net, start, targets)
    errors = []
    for ratio in (0.2, 0.05, 0.0125):
        method = SAMPPlusPlus(s=8, eta_ratio=ratio, momentum=0.0)
        total = method.path(net, start, x, targets).attributions.sum((1, 2, 3))
        errors.append((total - delta).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 8


@pytest.mark.parametrize("eta_ratio", [None, 1.0])
def test_zero_momentum_and_no_active_constraint_is_samp(net, x, eta_ratio):
    targets = torch.tensor([0, 1, 2])
    pp = SAMPPlusPlus(s=6, eta_ratio=eta_ratio, momentum=0.0, black=BLACK)
    torch.testing.assert_close(pp.input_attributions(net, x, targets, None),
                               SAMP(s=6, black=BLACK).input_attributions(net, x, targets, None), rtol=0, atol=0)


def test_both_directions_are_insertion_minus_deletion(net, x):
    targets = torch.tensor([2, 0, 1])
    params = {"s": 6, "eta_ratio": 0.05, "momentum": 0.5, "black": BLACK}
    method = SAMPPlusPlus(**params)
    both = method.input_attributions(net, x, targets, None)
    insertion = method.path(net, rise_blur(x), x, targets).attributions
    deletion = method.path(net, x, method.black_image(x).expand_as(x), targets, direction="deletion").attributions
    torch.testing.assert_close(both, insertion - deletion, rtol=1e-12, atol=1e-12)
    single = [SAMPPlusPlus(**params, directions=d).input_attributions(net, x, targets, None) for d in ("insertion", "deletion")]
    torch.testing.assert_close(both, single[0] + single[1], rtol=1e-12, atol=1e-12)


def test_both_directions_sum_to_both_score_gaps_as_eta_shrinks(net, x):
    targets = torch.tensor([2, 0, 1])
    method = SAMPPlusPlus(black=BLACK)
    f = score(method, net, x, targets)
    gaps = (f - score(method, net, rise_blur(x), targets)) + (f - score(method, net, method.black_image(x).expand_as(x), targets))
    errors = []
    for ratio in (0.04, 0.01, 0.0025):
        method = SAMPPlusPlus(s=6, eta_ratio=ratio, momentum=0.5, attribute_with="gradient", black=BLACK)
        total = method.input_attributions(net, x, targets, None).sum((1, 2, 3))
        errors.append((total - gaps).abs().max().item())
    assert errors[0] > errors[1] > errors[2]
    assert errors[2] < errors[0] / 4 and errors[2] < 5e-3 * gaps.abs().max().item()


@pytest.mark.parametrize("name, params", [("samp", {}), ("samp_pp", {"eta_ratio": 0.05}),
                                          ("samp_pp", {"insertion_baseline": "gaussian_noise", "unit": "element"})])
def test_a_batch_equals_its_samples_run_alone(net, x, name, params):
    method = create_method(name, s=5, black=BLACK, **params)
    targets, seeds = torch.tensor([1, 0, 3]), torch.tensor([11, 12, 13])
    batched = method.input_attributions(net, x, targets, seeds)
    singles = torch.cat([method.input_attributions(net, x[i : i + 1], targets[i : i + 1], seeds[i : i + 1])
                         for i in range(3)])
    torch.testing.assert_close(batched, singles, rtol=1e-10, atol=1e-12)


def test_runs_are_deterministic_and_ties_go_to_the_lower_index(net, x):
    method = SAMPPlusPlus(s=4, eta_ratio=0.1, black=BLACK)
    first = method.input_attributions(net, x, torch.tensor([0, 1, 2]), None)
    torch.testing.assert_close(first, method.input_attributions(net, x, torch.tensor([0, 1, 2]), None), rtol=0, atol=0)
    model = LinearNet((1, 3, 3), classes=1).double().eval()
    nn.init.ones_(model.fc.weight)
    start = torch.zeros(1, 1, 3, 3, dtype=torch.float64)
    path = SAMP(s=1, unit="element").path(model, start, torch.ones_like(start), torch.tensor([0]), record=True)
    moved_at = (path.points[0][1:] != path.points[0][:-1]).flatten(1).float().argmax(0)
    assert moved_at.tolist() == list(range(9))


@pytest.mark.parametrize(
    "name, value",
    [("s", 0), ("s", 2.5), ("eta_ratio", 0), ("eta_ratio", math.inf), ("momentum", 1.0), ("momentum", -0.1),
     ("attribute_with", "both"), ("unit", "channel"), ("directions", "up"), ("insertion_baseline", "white"),
     ("blur_kernel", 4), ("blur_kernel", 0), ("blur_sigma", 0.0), ("score", "softmax"), ("batch_size", 0),
     ("seed", 1.5), ("black", "zero")],
)
def test_bad_parameters_are_errors_naming_them(name, value):
    with pytest.raises(ValueError, match=f"^{name} "):
        SAMPPlusPlus(**{name: value})


def test_samp_takes_no_samp_pp_parameters_and_path_checks_its_inputs(net, x):
    with pytest.raises(TypeError, match="'eta_ratio'"):
        create_method("samp", eta_ratio=0.1)
    with pytest.raises(ValueError, match="^direction "):
        SAMP().path(net, x, x, torch.tensor([0, 1, 2]), direction="sideways")
    with pytest.raises(ValueError, match="start and end"):
        SAMP().path(net, x, x[:, :, :4], torch.tensor([0, 1, 2]))


def test_the_attribution_is_the_signed_channel_sum_of_input_attributions(smooth_net, images):
    result = create_method("samp_pp", s=32, black=BLACK).bind(smooth_net, "features")(images, [1, 0, 3])
    assert result.inputs.shape == images.shape
    torch.testing.assert_close(result.raw, result.inputs.sum(1))
    assert result.rectified is False and result.targets.tolist() == [1, 0, 3]
    assert (result.raw < 0).any() and (result.raw > 0).any()


def test_black_is_needed_only_by_the_deletion_direction(smooth_net, images):
    assert SAMPPlusPlus().needs == frozenset({Need.BLACK})
    assert SAMPPlusPlus(directions="deletion").uses_black
    insertion = SAMPPlusPlus(s=64, directions="insertion")
    assert insertion.needs == frozenset()
    assert insertion.bind(smooth_net, "features")(images).inputs.shape == images.shape
    with pytest.raises(ValueError, match="pass black="):
        SAMP().bind(smooth_net, "features")(images)


def test_the_insertion_start_is_rises_blur_and_the_noise_is_seeded_per_sample(images):
    torch.testing.assert_close(SAMPPlusPlus().insertion_start(images), rise_blur(images), rtol=0, atol=0)
    wide = SAMPPlusPlus(blur_kernel=31).insertion_start(images)
    torch.testing.assert_close(wide, rise_blur(images, 31, 5.0), rtol=0, atol=0)
    method = SAMPPlusPlus(insertion_baseline="gaussian_noise", seed=3)
    noise = method.insertion_start(images, [1, 2, 3])
    torch.testing.assert_close(noise[1:2], method.insertion_start(images[1:2], [2]), rtol=0, atol=0)
    assert not torch.equal(noise, method.insertion_start(images, [4, 5, 6]))
    assert abs(noise.std().item() - 1) < 0.1
