"""Seed 003's (Opti-CAM) faithfulness metrics: AOPC against Quantus's RegionPerturbation and by hand, ADCC by
hand and its undefined cases, and AD/AI/AG with pixel-space masking."""

from __future__ import annotations

import itertools
import logging

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from attribution.methods import GradCAM
from attribution.needs import Need
from attribution.postprocess import scored_map
from evaluation import Batch, create_metric, metric_class
from evaluation.metrics.classification import masked_confidence

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET_BLACK = tuple(-m / s for m, s in zip(MEAN, STD))
CLASSIFICATION = ("average_drop", "average_increase", "average_gain")


class ConfidentNet(nn.Module):
    """conv → ReLU (``features``) → GAP → linear."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 6, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(6, 4)

    def forward(self, x):
        return self.fc(self.features(x).mean(dim=(2, 3)))


class MeanLogit(nn.Module):
    """Two classes: logit ``scale · (mean of channel 0 − offset)`` for class 0 and 0 for class 1."""

    def __init__(self, scale: float = 1.0, offset: float = 0.0):
        super().__init__()
        self.scale, self.offset = scale, offset

    def forward(self, x):
        score = self.scale * (x[:, 0].mean(dim=(1, 2)) - self.offset)
        return torch.stack([score, torch.zeros_like(score)], dim=1)


class SumLogit(nn.Module):
    """Two classes: logit ``Σ`` of channel 0 for class 0 and 0 for class 1."""

    def forward(self, x):
        score = x[:, 0].sum(dim=(1, 2))
        return torch.stack([score, torch.zeros_like(score)], dim=1)


@pytest.fixture
def net() -> ConfidentNet:
    torch.manual_seed(0)
    return ConfidentNet().eval()


def random_data(n: int, side: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 3, side, side, generator=g)
    maps = torch.rand(n, side, side, generator=g) ** 2  # continuous: no ties in the ranking
    targets = torch.arange(n) % 3
    return images, maps, targets


def gradcam_explainer(model):
    method = GradCAM()

    def explain(images, targets):
        return scored_map(method(model, "features", images, targets), tuple(images.shape[-2:]))

    return explain


# -- AOPC ------------------------------------------------------------------------------------------------------------
def quantus_region_curve(model, images, maps, targets, patch_size, regions, baseline):
    metric = quantus.RegionPerturbation(patch_size=patch_size, regions_evaluation=regions, perturb_baseline=baseline,
                                        disable_warnings=True)
    curves = metric(model=model, x_batch=images.numpy(), y_batch=targets.numpy(),
                    a_batch=maps[:, None].numpy().astype(np.float32), device="cpu", batch_size=len(images))
    return np.asarray(curves, dtype=np.float64)


@pytest.mark.parametrize(("side", "patch_size", "regions"), [(24, 4, 10), (24, 5, 10), (24, 7, 6), (28, 14, 4)])
def test_aopc_grid_equals_quantus_region_perturbation(net, side, patch_size, regions):
    """Quantus 0.6.0 tiles the (symmetrically padded) image; its "black" is each image's minimum ("min" here)."""
    images, maps, targets = random_data(4, side, seed=side + patch_size)
    kw = {"images": images, "model": net, "targets": targets}
    for ours, theirs in (("min", "black"), ("black", np.repeat(np.asarray(IMAGENET_BLACK), patch_size**2))):
        metric = create_metric("aopc", patch_size=patch_size, regions=regions, baseline=ours, windows="grid")
        if isinstance(theirs, np.ndarray):
            theirs = np.tile(theirs, (len(images), 1))  # the model's black, per channel of every patch index
        q_curve = quantus_region_curve(net, images, maps, targets, patch_size, regions, theirs)
        curve = metric.curve(Batch(maps, **kw, black=IMAGENET_BLACK)).numpy()
        assert q_curve.shape == (4, regions) and (curve[:, 0] == 0).all()
        np.testing.assert_allclose(curve[:, 1:], q_curve, rtol=1e-5, atol=1e-6)
        aopc = metric(maps, **kw, black=IMAGENET_BLACK).numpy()
        np.testing.assert_allclose(aopc, q_curve.sum(axis=1) / (regions + 1), rtol=1e-5, atol=1e-7)


def reference_sliding_curve(model, images, maps, targets, patch_size, regions, fill):
    """Every top-left offset inside the image, ranked by the window's sum (zero beyond the edges), kept greedily
    when it overlaps no kept window; the kept windows set to ``fill`` one after another."""
    h, w = maps.shape[1:]
    curves = []
    for image, saliency, target in zip(images, maps.double(), targets):
        corners = sorted(itertools.product(range(h), range(w)),
                         key=lambda c: -float(saliency[c[0] : c[0] + patch_size, c[1] : c[1] + patch_size].sum()))
        kept = []
        for i, j in corners:
            if all(abs(i - a) >= patch_size or abs(j - b) >= patch_size for a, b in kept):
                kept.append((i, j))
            if len(kept) == regions:
                break
        x = image.clone()
        with torch.no_grad():
            start = model(x[None]).softmax(1)[0, target]
            points = [0.0]
            for i, j in kept:
                x[:, i : i + patch_size, j : j + patch_size] = fill
                points.append(float(start - model(x[None]).softmax(1)[0, target]))
        curves.append(points)
    return np.asarray(curves)


def test_aopc_sliding_equals_a_reference_region_perturbation(net):
    """Quantus ≤ 0.4.4's windows: every offset, greedy non-overlap (checked once against Quantus 0.4.4 itself)."""
    images, maps, targets = random_data(3, 20, seed=11)
    for patch_size, regions in ((4, 10), (6, 5)):
        metric = create_metric("aopc", patch_size=patch_size, regions=regions, baseline=-1.5)
        curve = metric.curve(Batch(maps, images=images, model=net, targets=targets)).numpy()
        expected = reference_sliding_curve(net, images, maps, targets, patch_size, regions, -1.5)
        np.testing.assert_allclose(curve, expected, rtol=1e-5, atol=1e-6)


def test_aopc_by_hand_on_a_linear_model():
    saliency = torch.tensor([[[0.1, 0.0, 0.0, 0.0],
                              [0.0, 1.0, 0.9, 0.0],
                              [0.0, 0.8, 0.7, 0.0],
                              [0.3, 0.2, 0.0, 0.0]]])
    kw = {"images": torch.zeros(1, 3, 4, 4), "model": SumLogit(), "targets": [0], "black": (-1.0, -1.0, -1.0)}
    sliding = create_metric("aopc", patch_size=2, regions=2, softmax=False)
    # sliding: the window at (1, 1) (sum 3.4, 4 pixels), then — every window overlapping it excluded — the one
    # at (3, 0) running past the bottom edge (0.3 + 0.2, 2 pixels); each black pixel lowers the logit by 1
    torch.testing.assert_close(sliding.curve(Batch(saliency, **kw))[0],
                               torch.tensor([0.0, 4.0, 6.0], dtype=torch.float64))
    assert sliding(saliency, **kw).item() == pytest.approx((0 + 4 + 6) / 3)
    grid = create_metric("aopc", patch_size=2, regions=2, softmax=False, windows="grid")
    # grid: tiles rows 2–3 × cols 0–1 (1.3), then rows 0–1 × cols 0–1 (1.1), 4 pixels each
    assert grid(saliency, **kw).item() == pytest.approx((0 + 4 + 8) / 3)
    probability = create_metric("aopc", patch_size=2, regions=2)(saliency, **kw).item()
    expected = np.mean([0.5 - 1 / (1 + np.exp(-logit)) for logit in (0.0, -4.0, -6.0)])
    assert probability == pytest.approx(expected, rel=1e-6)


def test_aopc_is_undefined_where_too_few_windows_fit(caplog):
    saliency = torch.rand(2, 4, 4, generator=torch.Generator().manual_seed(2))
    kw = {"images": torch.zeros(2, 3, 4, 4), "model": SumLogit(), "targets": [0, 0], "black": (-1.0, -1.0, -1.0)}
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        grid = create_metric("aopc", patch_size=2, regions=5, windows="grid")(saliency, **kw)
        sliding = create_metric("aopc", patch_size=2, regions=17)(saliency, **kw)
    assert torch.isnan(grid).all() and torch.isnan(sliding).all()
    assert "aopc undefined for samples [0, 1]: fewer than 5 non-overlapping 2×2 windows fit" in caplog.text
    assert not torch.isnan(create_metric("aopc", patch_size=2, regions=4, windows="grid")(saliency, **kw)).any()


# -- ADCC ------------------------------------------------------------------------------------------------------------
class FixedExplainer:
    """Returns the same maps for any input, and records the inputs it was given."""

    def __init__(self, maps: torch.Tensor):
        self.maps, self.inputs = maps, []

    def __call__(self, images, targets):
        self.inputs.append(images.clone())
        return self.maps


HAND_MAP = torch.tensor([[[0.0, 0.5], [1.0, 1.0]]])
HAND_AGAIN = torch.tensor([[[0.0, 1.0], [0.5, 1.0]]])


def test_adcc_by_hand():
    """Map s = [0, .5, 1, 1] (already in [0, 1]); image x = 1; black −1 → x ⊙ s in pixel space = 2s − 1."""
    explainer = FixedExplainer(HAND_AGAIN)
    kw = {"images": torch.ones(1, 3, 2, 2), "model": MeanLogit(), "targets": [0], "explainer": explainer,
          "black": (-1.0, -1.0, -1.0)}

    def sigmoid(t):
        return 1 / (1 + np.exp(-t))

    coherency = (7 / 11 + 1) / 2  # Pearson([0, .5, 1, 1], [0, 1, .5, 1]) = 0.4375 / 0.6875
    complexity = 2.5 / 4
    for space, masked_mean in (("pixel", 0.25), ("normalized", 0.625)):
        y, o = sigmoid(1.0), sigmoid(masked_mean)  # class 0: logit = mean of channel 0 (1 on x), class 1: 0
        drop = (y - o) / y
        expected = 3 / (1 / coherency + 1 / (1 - complexity) + 1 / (1 - drop))
        metric = create_metric("adcc", mask_space=space)
        terms = metric.terms(Batch(HAND_MAP, **kw))
        assert terms.coherency.item() == pytest.approx(coherency, rel=1e-12)
        assert terms.complexity.item() == pytest.approx(complexity, rel=1e-12)
        assert terms.average_drop.item() == pytest.approx(drop, rel=1e-6)
        assert metric(HAND_MAP, **kw).item() == pytest.approx(expected, rel=1e-6)
    pixel, normalised = explainer.inputs[0], explainer.inputs[-1]
    torch.testing.assert_close(pixel, (2 * HAND_MAP - 1)[:, None].expand(1, 3, 2, 2))  # re-explained x ⊙ s
    torch.testing.assert_close(normalised, HAND_MAP[:, None].expand(1, 3, 2, 2))


def test_adcc_is_higher_for_a_coherent_map_and_shares_the_masked_pass_with_average_drop():
    kw = {"images": torch.ones(1, 3, 2, 2), "model": MeanLogit(), "targets": [0], "black": (-1.0, -1.0, -1.0)}
    same = create_metric("adcc")(HAND_MAP, explainer=FixedExplainer(HAND_MAP), **kw)
    other = create_metric("adcc")(HAND_MAP, explainer=FixedExplainer(HAND_AGAIN), **kw)
    assert same.item() > other.item() and metric_class("adcc").direction == "higher"
    batch = Batch(HAND_MAP, explainer=FixedExplainer(HAND_AGAIN), **kw)
    drop = create_metric("average_drop")(batch)
    terms = create_metric("adcc").terms(batch)
    assert [key[:2] for key in batch.memo] == [("masked_confidence", "pixel")]
    assert terms.average_drop.item() == pytest.approx(drop.item() / 100, rel=1e-12)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("constant map", "constant map"),
        ("constant re-explanation", "the re-explained masked image has a constant or non-finite map"),
        ("non-finite re-explanation", "the re-explained masked image has a constant or non-finite map"),
        ("anti-correlated", "coherency 0 or average drop 1"),
        ("o = 0", "coherency 0 or average drop 1"),
        ("y = 0", "y = 0: the average drop divides by zero"),
    ],
)
def test_adcc_undefined_cases_are_nan_with_a_reason(case, reason, caplog):
    saliency, again, model = HAND_MAP, HAND_AGAIN, MeanLogit()
    if case == "constant map":
        saliency = torch.full((1, 2, 2), 0.3)
    elif case == "constant re-explanation":
        again = torch.full((1, 2, 2), 0.7)
    elif case == "non-finite re-explanation":
        again = torch.tensor([[[0.0, float("nan")], [1.0, 0.5]]])
    elif case == "anti-correlated":
        saliency = torch.tensor([[[0.0, 1.0], [1.0, 0.0]]])
        again = 1 - saliency  # Pearson exactly −1: coherency 0
    elif case == "o = 0":
        saliency = torch.tensor([[[0.0, 0.0], [0.0, 1.0]]])  # masked mean −0.5: logit −200, softmax underflows
        model = MeanLogit(scale=200.0, offset=0.5)
    else:
        model = MeanLogit(scale=-400.0, offset=0.5)  # logit −200 on the image
    kw = {"images": torch.ones(1, 3, 2, 2), "model": model, "targets": [0], "black": (-1.0, -1.0, -1.0)}
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        value = create_metric("adcc")(saliency, explainer=FixedExplainer(again), **kw)
    assert torch.isnan(value).all()
    assert f"adcc undefined for samples [0]: {reason}" in caplog.text


def test_adcc_refuses_an_explainer_of_the_wrong_shape():
    kw = {"images": torch.ones(1, 3, 2, 2), "model": MeanLogit(), "targets": [0], "black": (-1.0, -1.0, -1.0)}
    with pytest.raises(ValueError, match=r"adcc: the explainer returned maps \(1, 3, 3\), expected \(1, 2, 2\)"):
        create_metric("adcc")(HAND_MAP, explainer=FixedExplainer(torch.rand(1, 3, 3)), **kw)
    with pytest.raises(ValueError, match="adcc needs an explainer"):
        create_metric("adcc")(HAND_MAP, **kw)


# -- AD / AI / AG ----------------------------------------------------------------------------------------------------
def test_pixel_space_masking_is_the_masked_pixel_image_renormalised(net):
    g = torch.Generator().manual_seed(8)
    pixels = torch.rand(6, 3, 16, 16, generator=g)
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    images = (pixels - mean) / std
    maps = torch.rand(6, 16, 16, generator=g)
    targets = torch.tensor([0, 1, 2, 3, 0, 1])
    s = (maps - maps.amin(dim=(1, 2), keepdim=True)) / (maps.amax(dim=(1, 2)) - maps.amin(dim=(1, 2)))[:, None, None]
    for space, masked in (("pixel", (pixels * s[:, None] - mean) / std), ("normalized", images * s[:, None])):
        with torch.no_grad():
            p = net(images).softmax(1)[torch.arange(6), targets].double()
            o = net(masked).softmax(1)[torch.arange(6), targets].double()
        kw = {"images": images, "model": net, "targets": targets, "black": IMAGENET_BLACK}
        batch = Batch(maps, **kw)
        drop, increase, gain = (create_metric(n, mask_space=space)(batch) for n in CLASSIFICATION)
        confidence = masked_confidence(create_metric("average_drop"), batch, space)
        torch.testing.assert_close(confidence.o, o, rtol=1e-5, atol=1e-7)  # float32 rounding of the two forms
        torch.testing.assert_close(drop, 100 * (p - o).clamp(min=0) / p, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(increase, 100 * (p < o).double())
        torch.testing.assert_close(gain, 100 * (o - p).clamp(min=0) / (1 - p), rtol=1e-4, atol=1e-4)
    pixel = create_metric("average_drop")(maps, **kw)
    assert not torch.allclose(pixel, create_metric("average_drop", mask_space="normalized")(maps, **kw))


def test_average_drop_increase_gain_identities(net):
    images, maps, targets = random_data(32, 12, seed=9)
    batch = Batch(maps, images=images, model=net, targets=targets, black=IMAGENET_BLACK)
    drop, increase, gain = (create_metric(n)(batch) for n in CLASSIFICATION)
    assert ((drop == 0) | (gain == 0)).all()  # at most one of AD_i and AG_i is non-zero
    assert ((increase == 100) == (gain > 0)).all()  # AI_i = 1 ⇔ AG_i > 0 (p < 1 here)
    assert (drop > 0).any() and (gain > 0).any()
    assert list(batch.memo) == [("masked_confidence", "pixel", False, False)]  # one masked forward pass for the three


# -- every metric here: batching, determinism, parameters, needs -----------------------------------------------------
SCORED = {
    "aopc": {"patch_size": 4, "regions": 5},
    "aopc_grid": {"patch_size": 5, "regions": 4, "windows": "grid"},
    "adcc": {},
    "adcc_normalized": {"mask_space": "normalized"},
    "average_drop": {},
    "average_increase": {},
    "average_gain": {},
}


@pytest.mark.parametrize("case", sorted(SCORED))
def test_batch_equals_singles_and_is_deterministic(case, net):
    images, maps, targets = random_data(4, 16, seed=10)
    kw = {"model": net, "explainer": gradcam_explainer(net), "black": IMAGENET_BLACK}
    name = case.split("_grid")[0].split("_normalized")[0]

    def score(i=slice(None)):
        metric = create_metric(name, **SCORED[case])
        return metric(maps[i], images=images[i], targets=targets[i], **kw)

    whole = score()
    assert not torch.isnan(whole).any()
    singles = torch.cat([score(slice(i, i + 1)) for i in range(4)])
    torch.testing.assert_close(whole, singles, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(whole, score(), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("name", "params", "named"),
    [
        ("aopc", {"patch_size": 0}, "patch_size"),
        ("aopc", {"patch_size": 2.5}, "patch_size"),
        ("aopc", {"regions": 0}, "regions"),
        ("aopc", {"baseline": "white"}, "baseline"),
        ("aopc", {"softmax": 1}, "softmax"),
        ("aopc", {"windows": "random"}, "windows"),
        ("aopc", {"batch_size": 0}, "batch_size"),
        ("adcc", {"mask_space": "rgb"}, "mask_space"),
        ("average_drop", {"mask_space": "pixels"}, "mask_space"),
        ("average_increase", {"mask_space": None}, "mask_space"),
        ("average_gain", {"mask_space": "normalised"}, "mask_space"),
    ],
)
def test_bad_parameters_are_value_errors_naming_them(name, params, named):
    with pytest.raises(ValueError, match=named):
        create_metric(name, **params)


def test_mask_space_errors_name_the_allowed_values():
    with pytest.raises(ValueError, match="mask_space must be one of 'pixel', 'normalized'; got 'rgb'"):
        create_metric("adcc", mask_space="rgb")


def test_needs_directions_and_categories():
    assert create_metric("aopc").needs == {Need.MODEL, Need.BLACK}
    assert create_metric("aopc", baseline="min").needs == {Need.MODEL}
    assert create_metric("adcc").needs == {Need.MODEL, Need.EXPLAINER, Need.BLACK}
    assert create_metric("adcc", mask_space="normalized").needs == {Need.MODEL, Need.EXPLAINER}
    for name in CLASSIFICATION:
        assert create_metric(name).needs == {Need.MODEL, Need.BLACK}
        assert create_metric(name, mask_space="normalized").needs == {Need.MODEL}
    assert (metric_class("aopc").direction, metric_class("aopc").category) == ("higher", "faithfulness")
    assert (metric_class("adcc").direction, metric_class("adcc").category) == ("higher", "classification")
    with pytest.raises(ValueError, match="average_drop needs the model's black image"):
        create_metric("average_drop")(torch.rand(1, 4, 4), images=torch.rand(1, 3, 4, 4), model=SumLogit(),
                                      targets=[0])
