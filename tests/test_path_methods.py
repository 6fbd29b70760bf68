"""Integrated Gradients, Blur IG and Guided IG against PAIR saliency 0.2.1, their identities, and IDGI over each."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from scipy import ndimage
from torch import nn

from attribution.methods import create_method, method_names
from attribution.methods.path_methods import BlurIG, GuidedIG, IntegratedGradients, blur_derivatives, blurred
from attribution.methods.paths import IDGI, ZeroGradientWarning, idgi

saliency = pytest.importorskip("saliency.core")
from saliency.core.base import INPUT_OUTPUT_GRADIENTS

BLACK = (-1.0, -0.5, 0.25)
FAST = {  # small configurations of each method, IDGI off
    "integrated_gradients": {"steps": 16, "black": BLACK},
    "blur_ig": {"steps": 20, "max_sigma": 10.0},
    "guided_ig": {"steps": 30, "black": BLACK},
}


class SmoothNet(nn.Module):
    """A smooth nonlinear classifier of 3×16×16 images (``features`` is a layer to bind at)."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Conv2d(3, 6, 3, stride=2, padding=1, bias=False)
        self.mix = nn.Conv2d(6, 8, 1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        h = nn.functional.softplus(self.mix(self.features(x)))
        return self.fc(torch.tanh(h.mean(dim=(2, 3))))


class AffineNet(nn.Module):
    """Logits ``W vec(x) + b``."""

    def __init__(self, classes: int = 4):
        super().__init__()
        self.features = nn.Flatten()
        self.fc = nn.Linear(3 * 16 * 16, classes)

    def forward(self, x):
        return self.fc(self.features(x))


def make(net: type[nn.Module], dtype: torch.dtype = torch.float32) -> nn.Module:
    torch.manual_seed(1)
    return net().eval().to(dtype)


def inputs(batch: int = 2, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    images = torch.randn(batch, 3, 16, 16, generator=torch.Generator().manual_seed(2), dtype=dtype)
    return images, torch.arange(batch) % 4


def method(name: str, **overrides) -> IntegratedGradients | BlurIG | GuidedIG:
    return create_method(name, **{**FAST[name], **overrides})


def score(net: nn.Module, x: torch.Tensor, targets: torch.Tensor, kind: str = "probability") -> torch.Tensor:
    with torch.no_grad():
        logits = net(x)
    values = logits.softmax(1) if kind == "probability" else logits
    return values.gather(1, targets[:, None]).squeeze(1)


def baseline(name: str, images: torch.Tensor, max_sigma: float = 10.0) -> torch.Tensor:
    if name == "blur_ig":
        return blurred(images, [max_sigma])[0]
    return torch.tensor(BLACK, dtype=images.dtype).reshape(1, 3, 1, 1).expand_as(images)


def pair_call(net: nn.Module, target: int, kind: str, dtype: torch.dtype):
    """PAIR's ``call_model_function``: the torch model on a channels-last numpy batch."""

    def call(batch, call_model_args=None, expected_keys=None):
        x = torch.tensor(np.asarray(batch).transpose(0, 3, 1, 2), dtype=dtype).contiguous().requires_grad_(True)
        logits = net(x)
        values = logits.softmax(1) if kind == "probability" else logits
        (grad,) = torch.autograd.grad(values[:, target].sum(), x)
        return {INPUT_OUTPUT_GRADIENTS: grad.permute(0, 2, 3, 1).numpy()}

    return call


def pair_mask(name: str, net: nn.Module, image: torch.Tensor, target: int, kind: str) -> np.ndarray:
    """PAIR's attribution of one ``(C, H, W)`` image, back in ``(C, H, W)``."""
    x = image.permute(1, 2, 0).numpy()
    call = pair_call(net, target, kind, image.dtype)
    black = np.broadcast_to(np.asarray(BLACK, dtype=x.dtype), x.shape).copy()
    if name == "integrated_gradients":
        mask = saliency.IntegratedGradients().GetMask(x, call, x_baseline=black, x_steps=16, batch_size=5)
    elif name == "blur_ig":
        mask = saliency.BlurIG().GetMask(x, call, steps=20, max_sigma=10.0, batch_size=5)
    else:
        with pytest.warns(DeprecationWarning):  # numpy's interpolation= keyword, inside PAIR
            mask = saliency.GuidedIG().GetMask(x, call, x_baseline=black, x_steps=30)
    return np.asarray(mask).transpose(2, 0, 1)


@pytest.mark.parametrize("dtype, tolerance", [(torch.float64, 1e-6), (torch.float32, 1e-4)])
@pytest.mark.parametrize("kind", ["probability", "logit"])
@pytest.mark.parametrize("name", list(FAST))
def test_equals_pair_saliency(name, kind, dtype, tolerance):
    """A batch of two equals PAIR on each image, to PAIR's own float32 accumulation (relative to the
    largest attribution; Blur IG's float32 finite difference cancels in PAIR, not here)."""
    net = make(SmoothNet, dtype)
    images, targets = inputs(2, dtype)
    ours = method(name, score=kind, batch_size=7).input_attributions(net, images, targets, None)
    for b in range(2):
        theirs = pair_mask(name, net, images[b], int(targets[b]), kind)
        error = np.abs(ours[b].numpy() - theirs).max()
        assert error <= tolerance * np.abs(theirs).max(), (name, error)


def test_ig_completeness_converges_with_steps():
    net = make(SmoothNet, torch.float64)
    images, targets = inputs(2, torch.float64)
    change = score(net, images, targets) - score(net, baseline("integrated_gradients", images), targets)
    errors = []
    for steps in (4, 16, 64, 256):
        a = method("integrated_gradients", steps=steps).input_attributions(net, images, targets, None)
        errors.append(((a.sum(dim=(1, 2, 3)) - change).abs() / change.abs()).max().item())
    assert all(later < earlier for earlier, later in itertools.pairwise(errors)), errors
    assert errors[-1] < 1e-4, errors


@pytest.mark.parametrize("steps", [2, 7])
def test_ig_exact_on_affine(steps):
    net = make(AffineNet)
    images, targets = inputs(2)
    a = method("integrated_gradients", steps=steps, score="logit").input_attributions(net, images, targets, None)
    w = net.fc.weight[targets].reshape(images.shape).detach()
    assert torch.allclose(a, (images - baseline("integrated_gradients", images)) * w, atol=1e-6)


def test_guided_ig_without_deviation_is_left_riemann_ig():
    net = make(SmoothNet, torch.float64)
    images, targets = inputs(2, torch.float64)
    steps, start = 12, baseline("guided_ig", images)
    gig = method("guided_ig", steps=steps, max_dist=0.0).input_attributions(net, images, targets, None)
    ig = IntegratedGradients(black=BLACK)
    points = torch.stack([start + t / steps * (images - start) for t in range(steps)])
    _, gradients = ig.evaluate(net, points, targets)
    assert torch.allclose(gig, (images - start) * gradients.sum(0) / steps, rtol=1e-9, atol=1e-15)


def test_guided_ig_path_stays_in_band_and_ends_at_the_input():
    net = make(SmoothNet)
    images, targets = inputs(2)
    steps, max_dist = 25, 0.1
    gig = method("guided_ig", steps=steps, max_dist=max_dist)
    path = gig.path(net, images, targets)
    start, end = baseline("guided_ig", images).double(), images.double()
    assert path.points.dtype == torch.float64 and path.steps == steps
    assert torch.equal(path.points[0], start) and torch.equal(path.points[-1], end)
    alpha = (path.points - start) / (end - start)
    band = torch.arange(steps + 1, dtype=torch.float64).reshape(-1, 1, 1, 1, 1) / steps
    assert ((alpha - band).abs() <= max_dist + 1e-12).all()
    assert (alpha.diff(dim=0) >= -1e-12).all()  # every feature moves towards the input
    riemann = ((path.points[1:] - path.points[:-1]) * path.gradients[:-1]).sum(0)
    assert torch.allclose(riemann.float(), gig.input_attributions(net, images, targets, None), rtol=1e-6, atol=1e-12)


def test_paths_run_from_the_baseline_to_the_input():
    net = make(SmoothNet)
    images, targets = inputs(2)
    for name, count in (("integrated_gradients", 16), ("blur_ig", 21)):
        path = method(name).path(net, images, targets)
        assert path.points.shape == (count, *images.shape) and path.scores.shape == (count, 2)
        assert torch.allclose(path.points[0], baseline(name, images), atol=1e-6)
        assert torch.equal(path.points[-1], images)
        assert torch.allclose(path.scores, torch.stack([score(net, p, targets) for p in path.points]), atol=1e-6)


@pytest.mark.parametrize("steps", [2, 8, 32])
@pytest.mark.parametrize("name", list(FAST))
def test_idgi_is_complete_at_any_step_count(name, steps):
    net = make(SmoothNet)
    images, targets = inputs(2)
    a = method(name, steps=steps, idgi=True).input_attributions(net, images, targets, None)
    change = score(net, images, targets).double() - score(net, baseline(name, images), targets).double()
    assert torch.allclose(a.double().sum(dim=(1, 2, 3)), change, rtol=1e-6, atol=0)
    assert (change.abs() > 1e-4).all()


@pytest.mark.parametrize("name", list(FAST))
def test_idgi_on_affine_spreads_the_change_by_squared_weights(name):
    net = make(AffineNet)
    images, targets = inputs(2)
    a = method(name, steps=8, idgi=True, score="logit").input_attributions(net, images, targets, None)
    w = net.fc.weight[targets].detach().double()
    change = score(net, images, targets, "logit").double() - score(net, baseline(name, images), targets, "logit")
    expected = (change[:, None] * w**2 / (w**2).sum(1, keepdim=True)).reshape(images.shape)
    assert torch.allclose(a.double(), expected, rtol=1e-4, atol=1e-9)


def test_idgi_of_a_path_equals_the_method_and_streams():
    net = make(SmoothNet)
    images, targets = inputs(2)
    for name in FAST:
        path = method(name).path(net, images, targets)
        streamed = method(name, idgi=True, batch_size=3).input_attributions(net, images, targets, None)
        assert torch.allclose(idgi(path).float(), streamed, rtol=1e-5, atol=1e-9), name


class Counting(nn.Module):
    """Counts the images ``net`` sees with and without autograd."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net, self.with_grad, self.without_grad = net, 0, 0

    def forward(self, x):
        if torch.is_grad_enabled():
            self.with_grad += len(x)
        else:
            self.without_grad += len(x)
        return self.net(x)


@pytest.mark.parametrize("name, riemann, idgi_gradients", [
    ("integrated_gradients", 16, 15), ("blur_ig", 20, 20), ("guided_ig", 30, 30),
])
def test_evaluations_per_sample(name, riemann, idgi_gradients):
    """The Riemann sum evaluates PAIR's points; IDGI adds the last point's score, a forward pass."""
    images, targets = inputs(2)
    counting = Counting(make(SmoothNet))
    method(name).input_attributions(counting, images, targets, None)
    assert (counting.with_grad, counting.without_grad) == (2 * riemann, 0)
    counting.with_grad = 0
    method(name, idgi=True).input_attributions(counting, images, targets, None)
    assert (counting.with_grad, counting.without_grad) == (2 * idgi_gradients, 2)


def test_idgi_skips_and_reports_zero_gradient_steps():
    """``f = relu(v·x − 1)`` is flat near the baseline: the step across the kink loses its ``d_j``."""
    gradients = torch.tensor([0.0, 0.0, 1.0, 1.0]).reshape(4, 1, 1, 1, 1) * torch.tensor([1.0, 2.0]).reshape(2, 1, 1)
    scores = torch.tensor([[0.0], [0.0], [0.5], [2.0]])
    accumulator = IDGI()
    accumulator.add(scores[:2], gradients[:2])
    accumulator.add(scores[2:], gradients[2:])
    with pytest.warns(ZeroGradientWarning, match="zero gradient"):
        result = accumulator.result()
    assert accumulator.skipped.tolist() == [2] and accumulator.lost.tolist() == [0.5]
    assert torch.allclose(result.sum(), torch.tensor(1.5, dtype=torch.float64))
    assert torch.allclose(result.flatten(), torch.tensor([0.3, 1.2], dtype=torch.float64))


def test_torch_blur_equals_scipy_gaussian_filter():
    image = torch.randn(1, 3, 12, 20, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    hwc = image[0].permute(1, 2, 0).numpy()
    sigmas = [0.0, 0.01, 0.4, 1.7, 6.0, 50.0]
    ours = blurred(image, sigmas)[:, 0].permute(0, 2, 3, 1).numpy()
    for s, level in zip(sigmas, ours):
        expected = hwc if s == 0 else ndimage.gaussian_filter(hwc, sigma=[s, s, 0], mode="constant")
        np.testing.assert_allclose(level, expected, rtol=0, atol=1e-12)
    derivative = blur_derivatives(image, [0.0, 3.0], 0.01)[:, 0].permute(0, 2, 3, 1).numpy()
    assert np.all(derivative[0] == 0)  # G_{0.01} has radius int(4·0.01 + 0.5) = 0: the identity
    step = (ndimage.gaussian_filter(hwc, [3.01, 3.01, 0], mode="constant")
            - ndimage.gaussian_filter(hwc, [3.0, 3.0, 0], mode="constant")) / 0.01
    np.testing.assert_allclose(derivative[1], step, rtol=0, atol=1e-10)


@pytest.mark.parametrize("use_idgi", [False, True])
@pytest.mark.parametrize("name", list(FAST))
def test_batch_equals_singles_and_calls_repeat(name, use_idgi):
    """Guided IG runs a float64 model: its selections amplify the float32 rounding differences that the
    batch's composition makes in the gradients (seed 004 §4.5.2)."""
    dtype = torch.float64 if name == "guided_ig" else torch.float32
    net = make(SmoothNet, dtype)
    images, targets = inputs(3, dtype)
    m = method(name, idgi=use_idgi, batch_size=4)
    together = m.input_attributions(net, images, targets, None)
    assert torch.equal(together, m.input_attributions(net, images, targets, None))
    singles = torch.cat([m.input_attributions(net, images[b : b + 1], targets[b : b + 1], None) for b in range(3)])
    assert torch.allclose(together, singles, rtol=1e-5, atol=1e-9)
    unbatched = method(name, idgi=use_idgi).input_attributions(net, images, targets, None)
    assert torch.allclose(together, unbatched, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("name, params, parameter", [
    ("integrated_gradients", {"steps": 1}, "steps"),
    ("integrated_gradients", {"steps": 2.5}, "steps"),
    ("integrated_gradients", {"score": "softmax"}, "score"),
    ("integrated_gradients", {"batch_size": 0}, "batch_size"),
    ("integrated_gradients", {"black": (0.0, "x")}, "black"),
    ("blur_ig", {"steps": 0}, "steps"),
    ("blur_ig", {"max_sigma": 0}, "max_sigma"),
    ("blur_ig", {"grad_step": -0.01}, "grad_step"),
    ("guided_ig", {"steps": 0}, "steps"),
    ("guided_ig", {"fraction": 1.5}, "fraction"),
    ("guided_ig", {"max_dist": -0.1}, "max_dist"),
    ("guided_ig", {"max_dist": True}, "max_dist"),
])
def test_bad_parameters_name_the_parameter(name, params, parameter):
    with pytest.raises(ValueError, match=parameter):
        create_method(name, **params)


@pytest.mark.parametrize("name", list(FAST))
def test_idgi_must_be_a_bool(name):
    with pytest.raises(TypeError, match="idgi"):
        create_method(name, idgi="yes")


@pytest.mark.parametrize("name", list(FAST))
def test_attribution_is_signed_and_channel_summed(name):
    assert name in method_names()
    net = make(SmoothNet)
    images, targets = inputs(2)
    m = method(name)
    result = m.bind(net, "features")(images, targets)
    assert result.inputs.shape == images.shape and not result.rectified
    assert torch.equal(result.raw, result.inputs.sum(1)) and torch.equal(result.targets, targets)
    assert torch.allclose(result.inputs, m.input_attributions(net, images, targets, None))
    assert m.score == "probability" and not m.idgi


@pytest.mark.parametrize("name", ["integrated_gradients", "guided_ig"])
def test_black_baseline_is_needed(name):
    net = make(SmoothNet)
    images, targets = inputs(1)
    m = create_method(name)
    assert "black" in m.needs
    with pytest.raises(ValueError, match="black="):
        m.bind(net, "features")(images, targets)


def test_blur_ig_needs_no_black():
    m = create_method("blur_ig")
    assert not m.uses_black and m.needs == frozenset()
    assert (m.max_sigma, m.steps, m.grad_step) == (50.0, 100, 0.01)
    assert (GuidedIG().steps, GuidedIG().fraction, GuidedIG().max_dist) == (200, 0.25, 0.02)
    assert IntegratedGradients().steps == 25
