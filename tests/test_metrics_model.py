"""Model-based metrics (faithfulness, robustness, classification): agreement with Quantus on the same
model, images and maps; hand-computable cases; batch invariance, seeds and the NaN policy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from attribution.methods import GradCAM
from attribution.postprocess import relu, upsample
from evaluation import create_metric
from evaluation.metrics.faithfulness import rise_blur
from evaluation.perturbation import pixel_steps

PER_SAMPLE = {"normalise_func": quantus.normalise_by_max, "normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}}


class ConfidentNet(nn.Module):
    """conv → ReLU (``features``) → GAP → linear, with a wide margin for class 0 (predictions stay put)."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


@pytest.fixture
def plain_net() -> ConfidentNet:
    torch.manual_seed(0)
    return ConfidentNet().eval()


@pytest.fixture
def net(plain_net) -> ConfidentNet:
    with torch.no_grad():
        plain_net.fc.bias[0] += 6.0
    return plain_net


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(4)
    images = torch.rand(4, 3, 24, 24, generator=g)  # 576 pixels: Quantus needs features_in_step to divide H·W
    maps = torch.rand(4, 24, 24, generator=g) ** 2  # continuous: no ties in the ranking
    targets = torch.tensor([0, 1, 0, 2])
    return images, maps, targets


def gradcam_explainer(model):
    method = GradCAM()

    def explain(images, targets):
        return upsample(relu(method(model, "features", images, targets)), tuple(images.shape[-2:]))

    return explain


def quantus_call(metric, model, images, maps, targets, **extra):
    return np.asarray(metric(model=model, x_batch=images.numpy(), y_batch=targets.numpy(),
                             a_batch=maps[:, None].numpy().astype(np.float32), device="cpu",
                             batch_size=len(images), **extra), dtype=np.float64)


# -- deterministic faithfulness metrics: equal to Quantus --------------------------------------------------------------
def test_pixel_flipping_and_deletion_curve_equal_quantus(plain_net, data):
    net = plain_net
    images, maps, targets = data
    steps = 36  # 16 pixels a step: Quantus's features_in_step = 3 · 16 on RGB
    q = quantus.PixelFlipping(features_in_step=48, perturb_baseline="black", disable_warnings=True, **PER_SAMPLE)
    q_curve = quantus_call(q, net, images, maps, targets)  # (B, S): after each step
    metric = create_metric("deletion", steps=steps)
    curve = metric.deletion_curve(maps.double(), images, net, targets, None).numpy()
    np.testing.assert_allclose(curve[:, 1:], q_curve, rtol=1e-5, atol=1e-6)
    probabilities = net(images).softmax(1)[torch.arange(4), targets].detach().numpy()
    np.testing.assert_allclose(curve[:, 0], probabilities, rtol=1e-6)  # point 0: the image itself
    q_auc = quantus_call(quantus.PixelFlipping(features_in_step=48, return_auc_per_sample=True, disable_warnings=True,
                                               **PER_SAMPLE), net, images, maps, targets)
    ours = create_metric("pixel_flipping", steps=steps)(maps, images=images, model=net, targets=targets).numpy()
    np.testing.assert_allclose(ours * (q_curve.shape[1] - 1), q_auc, rtol=1e-5)


def test_faithfulness_estimate_equals_quantus(plain_net, data):
    net = plain_net
    images, maps, targets = data
    q = quantus.FaithfulnessEstimate(features_in_step=3 * 8, disable_warnings=True, **PER_SAMPLE)
    ours = create_metric("faithfulness_estimate", steps=72)(maps, images=images, model=net, targets=targets)
    np.testing.assert_allclose(ours.numpy(), quantus_call(q, net, images, maps, targets), rtol=1e-4, atol=1e-6)


def test_infidelity_equals_quantus(plain_net, data):
    net = plain_net
    images, maps, targets = data
    for sizes in ((4,), (4, 8)):
        q = quantus.Infidelity(perturb_patch_sizes=list(sizes), n_perturb_samples=2, disable_warnings=True)
        ours = create_metric("infidelity", patch_sizes=sizes)(maps, images=images, model=net, targets=targets)
        np.testing.assert_allclose(ours.numpy(), quantus_call(q, net, images, maps, targets), rtol=1e-4)


def test_irof_curve_equals_quantus_with_a_mask_broadcasting_perturbation(plain_net, data, monkeypatch):
    net = plain_net
    images, maps, targets = data
    curves = []
    auc = quantus.metrics.faithfulness.irof.utils.calculate_auc
    monkeypatch.setattr(quantus.metrics.faithfulness.irof.utils, "calculate_auc",
                        lambda values, **kw: curves.append(np.asarray(values)) or auc(values, **kw))
    metric = create_metric("irof")
    ratios, counts = metric.curve(maps.double(), images, net, targets)
    ours = metric(maps, images=images, model=net, targets=targets).numpy()
    for i in range(len(images)):  # one image per Quantus call: it pads unequal segment counts with zeros
        channel_means = images[i:i + 1].mean(dim=(2, 3)).numpy()[:, :, None, None]

        def replace_by_channel_mean(arr, mask, **_):  # Quantus's default cannot broadcast (B,1,H,W) masks onto RGB
            return np.where(mask, channel_means, arr)

        q = quantus.IROF(perturb_func=replace_by_channel_mean, return_aggregate=False, disable_warnings=True,
                         **PER_SAMPLE)
        q_aoc = quantus_call(q, net, images[i:i + 1], maps[i:i + 1], targets[i:i + 1])[0]
        s = int(counts[i])
        r = ratios[i, : s + 1].numpy()
        np.testing.assert_allclose(r[1:], curves[-1][0], rtol=1e-5, atol=1e-6)  # points 1 … S
        assert q_aoc == pytest.approx(s - np.trapezoid(r[1:]), rel=1e-5)  # Quantus: S − trapz(r_1 … r_S)
        assert ours[i] == pytest.approx(1 - np.trapezoid(r) / s, rel=1e-9)  # here: 1 − trapz(r_0 … r_S) / S


def test_sufficiency_equals_quantus_on_the_same_pool(net):
    g = torch.Generator().manual_seed(5)
    images = torch.rand(8, 3, 16, 16, generator=g)
    maps = torch.rand(8, 16, 16, generator=g)
    maps[4:] = maps[:4] + 0.05 * torch.rand(4, 16, 16, generator=g)  # close pairs
    maps = maps / maps.reshape(8, -1).amax(1)[:, None, None]  # per-sample max 1: Quantus's batch-wide max is harmless
    targets = torch.zeros(8, dtype=torch.long)
    q = quantus.Sufficiency(threshold=0.6, disable_warnings=True)
    theirs = quantus_call(q, net, images, maps, targets)
    ours = create_metric("sufficiency")(maps, images=images, model=net).numpy()
    defined = ~np.isnan(ours)
    assert defined.any() and (theirs[~defined] == 0).all()  # Quantus's silent 0 is NaN here
    np.testing.assert_allclose(ours[defined], theirs[defined], rtol=1e-6)
    permutation = torch.randperm(8, generator=g)  # the pool, not its order, decides
    permuted = create_metric("sufficiency")(maps[permutation], images=images[permutation], model=net).numpy()
    np.testing.assert_allclose(permuted, ours[permutation.numpy()], equal_nan=True)


# -- hand-computable cases ---------------------------------------------------------------------------------------------
class LinearScore(nn.Module):
    """``f(x) = Σ w·x`` for class 0 and 0 for class 1: every curve has a closed form."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        score = (x * self.weight).sum(dim=(1, 2, 3))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


def test_linear_model_gives_exact_deletion_and_insertion_curves():
    g = torch.Generator().manual_seed(6)
    image = torch.rand(1, 3, 4, 4, generator=g)
    model = LinearScore(torch.rand(1, 3, 4, 4, generator=g))
    saliency = torch.rand(1, 4, 4, generator=g)
    target = torch.tensor([0])
    metric = create_metric("deletion", steps=16, softmax=False, baseline=0.0)
    curve = metric.deletion_curve(saliency.double(), image, model, target, None)[0]
    order = saliency.reshape(-1).argsort(descending=True)
    contribution = (image * model.weight).sum(1).reshape(-1)  # per pixel
    expected = contribution.sum() - torch.cat([torch.zeros(1), contribution[order].cumsum(0)])
    torch.testing.assert_close(curve, expected.double(), rtol=1e-5, atol=1e-5)
    area = create_metric("deletion", steps=16, softmax=False, baseline=0.0)(saliency, images=image, model=model,
                                                                                targets=target)
    assert area.item() == pytest.approx(float((expected[1:] + expected[:-1]).sum() / 2 / 16), rel=1e-5)
    insertion = create_metric("insertion", steps=16, softmax=False).insertion_curve(saliency.double(), image, model,
                                                                                    target, None)[0]
    assert insertion[-1].item() == pytest.approx(contribution.sum().item(), rel=1e-5)  # all pixels back
    steps = torch.diff(insertion)
    blurred = rise_blur(image)
    gained = ((image - blurred) * model.weight).sum(1).reshape(-1)[order]
    torch.testing.assert_close(steps, gained.double(), rtol=1e-4, atol=1e-5)


def test_a_map_ordered_like_the_contributions_beats_its_reverse():
    g = torch.Generator().manual_seed(7)
    image = torch.rand(2, 3, 8, 8, generator=g)
    model = LinearScore(torch.randn(1, 3, 8, 8, generator=g))
    contribution = (image * model.weight).sum(1)
    target = torch.zeros(2, dtype=torch.long)
    kw = dict(images=image, model=model, targets=target)
    for name, better in (("deletion", "lower"), ("insertion", "higher"), ("insertion_minus_deletion", "higher"),
                         ("faithfulness_estimate", "higher"), ("pixel_flipping", "lower")):
        metric = create_metric(name, steps=64, softmax=False, baseline=0.0)
        good, bad = metric(contribution, **kw), metric(-contribution, **kw)
        assert ((good > bad) if better == "higher" else (good < bad)).all(), name
    estimate = create_metric("faithfulness_estimate", steps=64, baseline=0.0)(contribution, **kw)
    torch.testing.assert_close(estimate, torch.ones(2, dtype=torch.float64))  # drop = attribution exactly
    infidelity = create_metric("infidelity", patch_sizes=(2,), baseline=0.0)(contribution / image.sum(1), **kw)
    assert infidelity.max().item() < 1e-8  # a_p = Σ_c w·x / Σ_c x predicts every drop of a linear model exactly
    assert (create_metric("infidelity", patch_sizes=(2,), baseline=0.0)(contribution, **kw) > 1e-3).all()


def test_classification_metrics_match_a_numpy_reference(plain_net, data):
    net = plain_net
    images, maps, targets = data
    maps = maps.clone()
    maps[1] = 1.0  # constant: undefined
    cache = {}
    kw = dict(images=images, model=net, targets=targets, cache=cache)
    drop, increase, gain = (create_metric(n)(maps, **kw) for n in ("average_drop", "average_increase", "average_gain"))
    x = images.numpy()
    s = maps.numpy()
    s = (s - s.min(axis=(1, 2), keepdims=True)) / np.where(np.ptp(s, axis=(1, 2)) > 0, np.ptp(s, axis=(1, 2)), 1)[:, None, None]
    with torch.no_grad():
        p = net(images).softmax(1).numpy()[np.arange(4), targets.numpy()]
        o = net(torch.as_tensor(x * s[:, None])).softmax(1).numpy()[np.arange(4), targets.numpy()]
    ok = [0, 2, 3]
    np.testing.assert_allclose(drop.numpy()[ok], (100 * np.maximum(0, p - o) / p)[ok], rtol=1e-5)
    np.testing.assert_allclose(increase.numpy()[ok], (100.0 * (p < o))[ok])
    np.testing.assert_allclose(gain.numpy()[ok], (100 * np.maximum(0, o - p) / (1 - p))[ok], rtol=1e-5)
    assert torch.isnan(drop[1]) and torch.isnan(increase[1]) and torch.isnan(gain[1])
    ramp = torch.linspace(0, 1, 576).reshape(1, 24, 24)  # a black image is unchanged by any mask: no drop
    assert create_metric("average_drop")(ramp, images=images[:1] * 0, model=net, targets=targets[:1]).item() == 0.0
