"""SAMP's Deletion/Insertion protocol (seed 002 App. A.4.1) as parameters of the curve metrics, and the
subset-correlation metrics Sensitivity-N and μFidelity: hand-computed values, the affine-model identity,
agreement with Quantus's FaithfulnessCorrelation on its own subsets, batch invariance, seeds, errors."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import quantus
import scipy.stats
import torch
import torch.nn.functional as F
from quantus.functions.perturb_func import batch_baseline_replacement_by_indices
from torch import nn

from attribution.needs import Need
from evaluation import Batch, create_metric, metric_directions
from evaluation.metrics.faithfulness import rise_blur

BLACK = (-1.0, -1.0, -1.0)
SAMP = {"softmax": False, "normalise_curve": "full_score", "auc": "mean"}


class TinyNet(nn.Module):
    def __init__(self, channels: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(channels, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class Affine(nn.Module):
    """Class 0 scores ``Σ w·x + 1``; class 1 is always 0."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x):
        score = (x * self.weight).sum(dim=(1, 2, 3)) + 1.0
        return torch.stack([score, torch.zeros_like(score)], dim=1)


@pytest.fixture
def net() -> TinyNet:
    torch.manual_seed(0)
    return TinyNet().eval()


@pytest.fixture
def data():
    g = torch.Generator().manual_seed(1)
    images = torch.rand(2, 3, 12, 12, generator=g)
    maps = torch.rand(2, 12, 12, generator=g)
    return images, maps, torch.tensor([0, 2])


def gaussian_blur_by_hand(images: torch.Tensor, kernel: int, sigma: float) -> torch.Tensor:
    """A separable Gaussian of ``kernel`` taps and ``sigma``, reflection-padded, per channel."""
    x = torch.arange(kernel, dtype=torch.float64) - kernel // 2
    taps = torch.exp(-(x**2) / (2 * sigma**2))
    taps = (taps / taps.sum()).to(images.dtype)
    c, pad = images.shape[1], kernel // 2
    out = F.pad(images, (pad, pad, pad, pad), mode="reflect")
    out = F.conv2d(out, taps.reshape(1, 1, 1, -1).expand(c, 1, 1, kernel), groups=c)
    return F.conv2d(out, taps.reshape(1, 1, -1, 1).expand(c, 1, kernel, 1), groups=c)


# -- SAMP's protocol for Deletion / Insertion ----------------------------------------------------------------------
def test_defaults_are_unchanged(net, data):
    images, maps, targets = data
    kw = {"images": images, "model": net, "targets": targets, "black": BLACK}
    expected = {"deletion": [0.2605716871718566, 0.4111718187729518],
                "insertion": [0.273661316682895, 0.3931678993006547],
                "insertion_minus_deletion": [0.013089629511038425, -0.01800391947229707]}
    for name, values in expected.items():
        default = create_metric(name, steps=12)(maps, **kw)
        np.testing.assert_allclose(default.numpy(), values, rtol=1e-6, err_msg=name)
        explicit = create_metric(name, steps=12, normalise_curve="none", auc="trapezoid", blur_kernel=11,
                                 blur_sigma=5.0)(maps, **kw)
        torch.testing.assert_close(explicit, default, rtol=0, atol=0)


def test_samp_deletion_and_insertion_by_hand(net, data):
    images, maps, targets = data
    steps, per_step = 48, 3  # 144 pixels, 3 a step: K = 48 steps, K + 1 = 49 points
    order = maps.reshape(2, -1).argsort(dim=1, descending=True, stable=True)
    blurred = rise_blur(images, 31, 5.0)
    fill = torch.tensor(BLACK).reshape(1, 3, 1, 1)
    deletion, insertion = [], []
    for b in range(2):
        rows_del, rows_ins = [], []
        for k in range(steps + 1):
            chosen = torch.zeros(144, dtype=torch.bool)
            chosen[order[b, : k * per_step]] = True
            chosen = chosen.reshape(1, 12, 12)
            rows_del.append(torch.where(chosen, fill[0], images[b]))
            rows_ins.append(torch.where(chosen, images[b], blurred[b]))
        with torch.no_grad():
            y_del = net(torch.stack(rows_del))[:, targets[b]].double()
            y_ins = net(torch.stack(rows_ins))[:, targets[b]].double()
        deletion.append((y_del / y_del[0]).sum() / (steps + 1))  # ŷ^k = y^k / y^T, (1/(K+1)) Σ ŷ^k
        insertion.append((y_ins / y_ins[-1]).sum() / (steps + 1))
    kw = {"images": images, "model": net, "targets": targets, "black": BLACK}
    ours_del = create_metric("deletion", steps=steps, **SAMP)(maps, **kw)
    ours_ins = create_metric("insertion", steps=steps, blur_kernel=31, **SAMP)(maps, **kw)
    torch.testing.assert_close(ours_del, torch.stack(deletion), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(ours_ins, torch.stack(insertion), rtol=1e-5, atol=1e-6)
    both = create_metric("insertion_minus_deletion", steps=steps, blur_kernel=31, **SAMP)(maps, **kw)
    torch.testing.assert_close(both, ours_ins - ours_del)


def test_the_rectangle_mean_and_full_score_normalisation_on_an_affine_model():
    g = torch.Generator().manual_seed(2)
    image = torch.rand(1, 3, 4, 4, generator=g)
    model = Affine(torch.rand(1, 3, 4, 4, generator=g))
    saliency = torch.rand(1, 4, 4, generator=g)
    contribution = (image * model.weight).sum(1).reshape(-1)[saliency.reshape(-1).argsort(descending=True)]
    y = 1.0 + contribution.sum() - torch.cat([torch.zeros(1), contribution.cumsum(0)])  # y^T … y^0
    kw = {"images": image, "model": model, "targets": torch.tensor([0])}
    for auc, area in (("mean", (y / y[0]).mean()), ("trapezoid", torch.trapezoid(y / y[0]) / 16)):
        ours = create_metric("deletion", steps=16, baseline=0.0, softmax=False, normalise_curve="full_score",
                             auc=auc)(saliency, **kw)
        assert ours.item() == pytest.approx(area.item(), rel=1e-5), auc
    raw = create_metric("deletion", steps=16, baseline=0.0, softmax=False, auc="mean")(saliency, **kw)
    assert raw.item() == pytest.approx(y.mean().item(), rel=1e-5)


def test_the_blur_kernel_sets_the_insertion_start_as_a_hand_built_blur(net):
    g = torch.Generator().manual_seed(3)
    images = torch.rand(2, 3, 20, 20, generator=g)  # side 20: a 31-tap kernel reflects without shrinking
    maps = torch.rand(2, 20, 20, generator=g)
    targets = torch.tensor([1, 0])
    for kernel in (11, 31):
        torch.testing.assert_close(rise_blur(images, kernel, 5.0), gaussian_blur_by_hand(images, kernel, 5.0),
                                   rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(rise_blur(images), rise_blur(images, 11, 5.0), rtol=0, atol=0)
    batch = Batch(maps, images=images, model=net, targets=targets)
    curve = create_metric("insertion", steps=10, blur_kernel=31, softmax=False).insertion_curve(batch)
    with torch.no_grad():
        start = net(gaussian_blur_by_hand(images, 31, 5.0))[torch.arange(2), targets].double()
        full = net(images)[torch.arange(2), targets].double()
    torch.testing.assert_close(curve[:, 0], start, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(curve[:, -1], full, rtol=1e-5, atol=1e-6)
    default = create_metric("insertion", steps=10, softmax=False).insertion_curve(batch)  # its own memo entry
    assert not torch.allclose(default[:, 0], curve[:, 0])
    sharper = create_metric("insertion", steps=10, blur_sigma=1.0, softmax=False).insertion_curve(batch)
    assert not torch.allclose(sharper[:, 0], default[:, 0])


def test_a_zero_full_score_is_undefined_under_full_score_normalisation(caplog):
    image = torch.rand(1, 3, 4, 4)
    model = Affine(torch.ones(1, 3, 4, 4))
    metric = create_metric("insertion", steps=4, softmax=False, normalise_curve="full_score")
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        value = metric(torch.rand(1, 4, 4), images=image, model=model, targets=torch.tensor([1]))
    assert torch.isnan(value).all() and "full image's score is 0" in caplog.text


@pytest.mark.parametrize("params, named", [
    ({"normalise_curve": "probability"}, "normalise_curve"),
    ({"auc": "simpson"}, "auc"),
    ({"blur_kernel": 10}, "blur_kernel"),
    ({"blur_kernel": 0}, "blur_kernel"),
    ({"blur_kernel": 3.0}, "blur_kernel"),
    ({"blur_sigma": 0.0}, "blur_sigma"),
    ({"blur_sigma": "5"}, "blur_sigma"),
])
def test_bad_samp_protocol_parameters_are_named(params, named):
    for name in ("deletion", "insertion", "insertion_minus_deletion"):
        with pytest.raises(ValueError, match=named):
            create_metric(name, **params)


# -- Sensitivity-N and μFidelity -----------------------------------------------------------------------------------
SUBSET_METRICS = {"sensitivity_n": {"n": 20, "nr_samples": 30}, "mu_fidelity": {"subset_size": 20, "nr_runs": 30}}


@pytest.fixture
def affine():
    g = torch.Generator().manual_seed(5)
    images = torch.rand(3, 3, 10, 10, generator=g)
    model = Affine(torch.randn(1, 3, 10, 10, generator=g))
    return images, model


@pytest.mark.parametrize("name", sorted(SUBSET_METRICS))
@pytest.mark.parametrize("extra", [{}, {"correlation": "spearman"}, {"baseline": 0.5}])
def test_affine_model_with_exact_attributions_correlates_exactly(name, extra, affine):
    images, model = affine
    baseline = torch.tensor(BLACK if "baseline" not in extra else [extra["baseline"]] * 3).reshape(1, 3, 1, 1)
    exact = ((images - baseline) * model.weight).sum(1)  # a = Σ_c w ⊙ (x − x̄)
    kw = {"images": images, "model": model, "targets": torch.zeros(3, dtype=torch.long), "black": BLACK}
    value = create_metric(name, **SUBSET_METRICS[name], **extra)(exact, **kw)
    torch.testing.assert_close(value, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)
    if name == "mu_fidelity":
        cells = create_metric(name, grid_size=5, subset_size=0.2, nr_runs=30, **extra)(exact, **kw)
        torch.testing.assert_close(cells, torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", sorted(SUBSET_METRICS))
def test_a_random_map_correlates_about_zero(name, affine):
    images, model = affine
    images = images.repeat(4, 1, 1, 1)
    maps = torch.rand(12, 10, 10, generator=torch.Generator().manual_seed(6))
    kw = {"images": images, "model": model, "targets": torch.zeros(12, dtype=torch.long), "black": BLACK,
          "seeds": torch.arange(12)}
    value = create_metric(name, **SUBSET_METRICS[name])(maps, **kw)
    assert abs(value.mean().item()) < 0.1 and value.std().item() > 0.05


def test_mu_fidelity_equals_quantus_faithfulness_correlation_on_its_subsets():
    torch.manual_seed(0)
    net = TinyNet(channels=1).eval()  # one channel: Quantus's features are pixels
    g = torch.Generator().manual_seed(7)
    images = torch.rand(3, 1, 12, 12, generator=g)
    maps = torch.rand(3, 12, 12, generator=g) - 0.3
    targets = torch.tensor([0, 1, 2])
    drawn = []

    def recording(arr, indices, **kwargs):
        drawn.append(indices.copy())
        return batch_baseline_replacement_by_indices(arr, indices, **kwargs)

    q = quantus.FaithfulnessCorrelation(nr_runs=25, subset_size=30, perturb_func=recording, disable_warnings=True,
                                        return_aggregate=False)
    np.random.seed(0)
    expected = np.asarray(q(model=net, x_batch=images.numpy(), y_batch=targets.numpy(),
                            a_batch=maps[:, None].numpy(), device="cpu", batch_size=3), dtype=np.float64)
    subsets = torch.zeros(3, 25, 144, dtype=torch.bool)
    for run, indices in enumerate(drawn):
        subsets[torch.arange(3)[:, None], run, torch.as_tensor(indices)] = True
    metric = create_metric("mu_fidelity", subset_size=30, nr_runs=25, baseline="min")  # Quantus's "black"
    ours = metric.correlations(Batch(maps, images=images, model=net, targets=targets), subsets)
    np.testing.assert_allclose(ours.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("correlation", ["pearson", "spearman"])
def test_the_correlation_formula_on_given_subsets_with_ties(correlation, net, data):
    images, maps, targets = data
    maps = (maps * 4).floor()  # four levels: attribution sums tie
    g = torch.Generator().manual_seed(8)
    subsets = torch.rand(2, 40, 144, generator=g).argsort(dim=2) < 25
    metric = create_metric("sensitivity_n", n=25, nr_samples=40, correlation=correlation)
    ours = metric.correlations(Batch(maps, images=images, model=net, targets=targets, black=BLACK), subsets)
    reference = scipy.stats.pearsonr if correlation == "pearson" else scipy.stats.spearmanr
    for b in range(2):
        copies = torch.where(subsets[b].reshape(40, 1, 12, 12), torch.tensor(BLACK).reshape(1, 3, 1, 1), images[b])
        with torch.no_grad():
            drops = (net(images[b : b + 1])[0, targets[b]] - net(copies)[:, targets[b]]).double().numpy()
        sums = (subsets[b].double() * maps[b].reshape(1, -1).double()).sum(1).numpy()
        assert ours[b].item() == pytest.approx(reference(sums, drops)[0], abs=1e-6)


def test_grid_cells_are_a_nearest_neighbour_upsampling():
    metric = create_metric("mu_fidelity", grid_size=9)
    for h, w in ((28, 28), (12, 20), (9, 9)):
        grid = torch.arange(81, dtype=torch.float64).reshape(1, 1, 9, 9)
        upsampled = F.interpolate(grid, size=(h, w), mode="nearest-exact").reshape(-1).long()
        assert torch.equal(metric.units(h, w), upsampled), (h, w)


@pytest.mark.parametrize("name", sorted(SUBSET_METRICS))
def test_batch_equals_singles_and_seeds_fix_the_draws(name, net, data):
    images, maps, targets = data
    kw = {"images": images, "model": net, "targets": targets, "black": BLACK, "seeds": torch.tensor([3, 4])}
    metric = create_metric(name, **SUBSET_METRICS[name])
    whole = metric(maps, **kw)
    singles = torch.cat([metric(maps[i : i + 1], images=images[i : i + 1], model=net, targets=targets[i : i + 1],
                                black=BLACK, seeds=kw["seeds"][i : i + 1]) for i in range(2)])
    torch.testing.assert_close(whole, singles, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(create_metric(name, **SUBSET_METRICS[name], batch_size=7)(maps, **kw), whole,
                               rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(create_metric(name, **SUBSET_METRICS[name])(maps, **kw), whole, rtol=0, atol=0)
    other_seed = create_metric(name, **SUBSET_METRICS[name], seed=1)(maps, **kw)
    other_samples = metric(maps, **dict(kw, seeds=torch.tensor([5, 6])))
    assert not torch.allclose(other_seed, whole) and not torch.allclose(other_samples, whole)
    swapped = metric(maps.flip(0), **dict(kw, images=images.flip(0), targets=targets.flip(0),
                                          seeds=kw["seeds"].flip(0)))
    torch.testing.assert_close(swapped.flip(0), whole, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(SUBSET_METRICS))
def test_constant_sums_are_undefined(name, net, data, caplog):
    images, _, targets = data
    maps = torch.zeros(2, 12, 12)
    maps[1] = torch.rand(12, 12)
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        value = create_metric(name, **SUBSET_METRICS[name])(maps, images=images, model=net, targets=targets,
                                                            black=BLACK)
    assert math.isnan(value[0].item()) and not math.isnan(value[1].item())
    assert "constant attribution sums" in caplog.text


@pytest.mark.parametrize("name, params, named", [
    ("sensitivity_n", {"n": 0}, "n"),
    ("sensitivity_n", {"n": 1.0}, "n"),
    ("sensitivity_n", {"n": True}, "n"),
    ("sensitivity_n", {"n": "10"}, "n"),
    ("sensitivity_n", {"nr_samples": 1}, "nr_samples"),
    ("sensitivity_n", {"correlation": "kendall"}, "correlation"),
    ("sensitivity_n", {"seed": -1}, "seed"),
    ("sensitivity_n", {"baseline": "white"}, "baseline"),
    ("mu_fidelity", {"subset_size": -3}, "subset_size"),
    ("mu_fidelity", {"nr_runs": 0}, "nr_runs"),
    ("mu_fidelity", {"grid_size": 1}, "grid_size"),
    ("mu_fidelity", {"batch_size": 0}, "batch_size"),
])
def test_bad_subset_parameters_are_named(name, params, named):
    with pytest.raises(ValueError, match=named):
        create_metric(name, **params)


def test_subsets_too_large_for_the_image_are_named(net, data):
    images, maps, targets = data
    kw = {"images": images, "model": net, "targets": targets, "black": BLACK}
    with pytest.raises(ValueError, match="n=144"):
        create_metric("sensitivity_n", n=144)(maps, **kw)
    with pytest.raises(ValueError, match="subset_size=224"):
        create_metric("mu_fidelity")(maps, **kw)  # Quantus's 224 pixels of a 12 × 12 image
    with pytest.raises(ValueError, match="grid_size=13"):
        create_metric("mu_fidelity", grid_size=13, subset_size=0.2)(maps, **kw)
    with pytest.raises(ValueError, match="black"):
        create_metric("sensitivity_n")(maps, images=images, model=net, targets=targets)


def test_directions_and_needs():
    assert metric_directions()["sensitivity_n"] == metric_directions()["mu_fidelity"] == "higher"
    assert create_metric("sensitivity_n").needs == {Need.MODEL, Need.BLACK}
    assert create_metric("mu_fidelity", baseline="min").needs == {Need.MODEL}
