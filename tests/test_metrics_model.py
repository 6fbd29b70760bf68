"""Model-based metrics (faithfulness, robustness, classification): agreement with Quantus on the same
model, images and maps; hand-computable cases; batch invariance, seeds and the NaN policy."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import quantus
import torch
from torch import nn

from attribution.methods import ExpectedGradCAM, GradCAM, create_method
from attribution.methods.base import sample_generators
from attribution.postprocess import scored_map
from evaluation import Batch, create_metric
from evaluation.metrics.faithfulness import rise_blur

PER_SAMPLE = {"normalise_func": quantus.normalise_by_max, "normalise_func_kwargs": {"normalise_axes": (1, 2, 3)}}
BLACK = (-1.0, -1.0, -1.0)  # the model's black image in its input space (what −mean/std gives)


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
        return scored_map(method(model, "features", images, targets), tuple(images.shape[-2:]))

    return explain


def quantus_call(metric, model, images, maps, targets, **extra):
    return np.asarray(
        metric(
            model=model,
            x_batch=images.numpy(),
            y_batch=targets.numpy(),
            a_batch=maps[:, None].numpy().astype(np.float32),
            device="cpu",
            batch_size=len(images),
            **extra,
        ),
        dtype=np.float64,
    )


# -- deterministic faithfulness metrics: equal to Quantus ------------------------------------------------------------
def test_pixel_flipping_and_deletion_curve_equal_quantus(plain_net, data):
    net = plain_net
    images, maps, targets = data
    steps = 36  # 16 pixels a step: Quantus's features_in_step = 3 · 16 on RGB
    q = quantus.PixelFlipping(features_in_step=48, perturb_baseline="black", disable_warnings=True, **PER_SAMPLE)
    q_curve = quantus_call(q, net, images, maps, targets)  # (B, S): after each step
    metric = create_metric("deletion", steps=steps, baseline="min")  # Quantus's "black": each image's minimum
    curve = metric.deletion_curve(Batch(maps.double(), images=images, model=net, targets=targets)).numpy()
    np.testing.assert_allclose(curve[:, 1:], q_curve, rtol=1e-5, atol=1e-6)
    probabilities = net(images).softmax(1)[torch.arange(4), targets].detach().numpy()
    np.testing.assert_allclose(curve[:, 0], probabilities, rtol=1e-6)  # point 0: the image itself
    q_auc = quantus_call(
        quantus.PixelFlipping(features_in_step=48, return_auc_per_sample=True, disable_warnings=True, **PER_SAMPLE),
        net,
        images,
        maps,
        targets,
    )
    ours = create_metric("pixel_flipping", steps=steps, baseline="min")(maps, images=images, model=net,
                                                                       targets=targets).numpy()
    np.testing.assert_allclose(ours * (q_curve.shape[1] - 1), q_auc, rtol=1e-5)


def test_faithfulness_estimate_equals_quantus(plain_net, data):
    net = plain_net
    images, maps, targets = data
    q = quantus.FaithfulnessEstimate(features_in_step=3 * 8, disable_warnings=True, **PER_SAMPLE)
    ours = create_metric("faithfulness_estimate", steps=72, baseline="min")(maps, images=images, model=net,
                                                                            targets=targets)
    np.testing.assert_allclose(ours.numpy(), quantus_call(q, net, images, maps, targets), rtol=1e-4, atol=1e-6)


def test_infidelity_equals_quantus(plain_net, data):
    net = plain_net
    images, maps, targets = data
    for sizes in ((4,), (4, 8)):
        q = quantus.Infidelity(perturb_patch_sizes=list(sizes), n_perturb_samples=2, disable_warnings=True)
        ours = create_metric("infidelity", patch_sizes=sizes, baseline="min")(maps, images=images, model=net,
                                                                              targets=targets)
        np.testing.assert_allclose(ours.numpy(), quantus_call(q, net, images, maps, targets), rtol=1e-4)


def test_irof_curve_equals_quantus_with_a_mask_broadcasting_perturbation(plain_net, data, monkeypatch):
    net = plain_net
    images, maps, targets = data
    curves = []
    auc = quantus.metrics.faithfulness.irof.utils.calculate_auc
    monkeypatch.setattr(
        quantus.metrics.faithfulness.irof.utils,
        "calculate_auc",
        lambda values, **kw: curves.append(np.asarray(values)) or auc(values, **kw),
    )
    metric = create_metric("irof")
    ratios, counts = metric.curve(maps.double(), images, net, targets)
    ours = metric(maps, images=images, model=net, targets=targets).numpy()
    for i in range(len(images)):  # one image per Quantus call: it pads unequal segment counts with zeros
        channel_means = images[i : i + 1].mean(dim=(2, 3)).numpy()[:, :, None, None]

        # Quantus's default perturbation cannot broadcast (B, 1, H, W) masks onto RGB input
        def replace_by_channel_mean(arr, mask, channel_means=channel_means, **_):
            return np.where(mask, channel_means, arr)

        q = quantus.IROF(
            perturb_func=replace_by_channel_mean, return_aggregate=False, disable_warnings=True, **PER_SAMPLE
        )
        q_aoc = quantus_call(q, net, images[i : i + 1], maps[i : i + 1], targets[i : i + 1])[0]
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


# -- hand-computable cases -------------------------------------------------------------------------------------------
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
    curve = metric.deletion_curve(Batch(saliency.double(), images=image, model=model, targets=target))[0]
    order = saliency.reshape(-1).argsort(descending=True)
    contribution = (image * model.weight).sum(1).reshape(-1)  # per pixel
    expected = contribution.sum() - torch.cat([torch.zeros(1), contribution[order].cumsum(0)])
    torch.testing.assert_close(curve, expected.double(), rtol=1e-5, atol=1e-5)
    area = create_metric("deletion", steps=16, softmax=False, baseline=0.0)(
        saliency, images=image, model=model, targets=target
    )
    assert area.item() == pytest.approx(float((expected[1:] + expected[:-1]).sum() / 2 / 16), rel=1e-5)
    insertion = create_metric("insertion", steps=16, softmax=False).insertion_curve(
        Batch(saliency.double(), images=image, model=model, targets=target)
    )[0]
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
    for name, better in (
        ("deletion", "lower"),
        ("insertion", "higher"),
        ("insertion_minus_deletion", "higher"),
        ("faithfulness_estimate", "higher"),
        ("pixel_flipping", "lower"),
    ):
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
    batch = Batch(maps, images=images, model=net, targets=targets)
    drop, increase, gain = (
        create_metric(n, mask_space="normalized")(batch) for n in ("average_drop", "average_increase", "average_gain")
    )
    assert [key[:2] for key in batch.memo] == [("masked_confidence", "normalized")]  # one masked pass for the three
    x = images.numpy()
    s = maps.numpy()
    s = (s - s.min(axis=(1, 2), keepdims=True)) / np.where(np.ptp(s, axis=(1, 2)) > 0, np.ptp(s, axis=(1, 2)), 1)[
        :, None, None
    ]
    with torch.no_grad():
        p = net(images).softmax(1).numpy()[np.arange(4), targets.numpy()]
        o = net(torch.as_tensor(x * s[:, None])).softmax(1).numpy()[np.arange(4), targets.numpy()]
    ok = [0, 2, 3]
    np.testing.assert_allclose(drop.numpy()[ok], (100 * np.maximum(0, p - o) / p)[ok], rtol=1e-5)
    np.testing.assert_allclose(increase.numpy()[ok], (100.0 * (p < o))[ok])
    np.testing.assert_allclose(gain.numpy()[ok], (100 * np.maximum(0, o - p) / (1 - p))[ok], rtol=1e-5)
    assert torch.isnan(drop[1]) and torch.isnan(increase[1]) and torch.isnan(gain[1])
    ramp = torch.linspace(0, 1, 576).reshape(1, 24, 24)  # a black image is unchanged by any mask: no drop
    black = torch.tensor(BLACK)[None, :, None, None].expand(1, 3, 24, 24)
    assert create_metric("average_drop")(ramp, images=black, model=net, targets=targets[:1], black=BLACK).item() == 0.0
    assert create_metric("average_drop", mask_space="normalized")(ramp, images=images[:1] * 0, model=net,
                                                                  targets=targets[:1]).item() == 0.0


# -- robustness: Quantus fed the very noise our generators draw --------------------------------------------------------
def replayed_noise(metric, images, seeds):
    """The perturbations our metric draws, in Quantus's order (one batch per step)."""
    generators = sample_generators(metric.seed, seeds, len(images))
    return [torch.stack([metric.draw(g, images.shape[1:]) for g in generators]) for _ in range(metric.nr_samples)]


def replaying_perturb_func(noise):
    steps = iter(noise)

    def perturb(arr, indices, **_):
        return arr + next(steps).reshape(arr.shape).numpy()

    return perturb


ROBUST = {
    "max_sensitivity": (quantus.MaxSensitivity, {}),
    "avg_sensitivity": (quantus.AvgSensitivity, {}),
    "local_lipschitz_estimate": (quantus.LocalLipschitzEstimate, PER_SAMPLE),
    "relative_input_stability": (quantus.RelativeInputStability, {}),
    "relative_output_stability": (quantus.RelativeOutputStability, {}),
}


def quantus_explain_func(explainer):
    """Our explainer in Quantus's ``explain_func`` form: numpy in, (B, 1, H, W) numpy out."""
    return lambda model, inputs, targets, **_: explainer(torch.as_tensor(inputs), torch.as_tensor(targets)).numpy()[
        :, None
    ]


@pytest.mark.parametrize("name", sorted(ROBUST))
def test_robustness_equals_quantus_on_the_same_perturbations(name, net, data):
    images, _, targets = data
    targets = torch.zeros(4, dtype=torch.long)  # the confident class: no perturbation changes the prediction
    explainer = gradcam_explainer(net)
    maps = explainer(images, targets)
    seeds = torch.tensor([11, 12, 13, 14])
    metric = create_metric(name, nr_samples=6)
    ours = metric(maps, images=images, model=net, targets=targets, explainer=explainer, seeds=seeds)
    cls, extra = ROBUST[name]
    q = cls(
        nr_samples=6,
        perturb_func=replaying_perturb_func(replayed_noise(metric, images, seeds)),
        disable_warnings=True,
        **extra,
    )
    theirs = quantus_call(
        q,
        net,
        images,
        maps,
        targets,
        explain_func=quantus_explain_func(explainer),
    )
    assert np.isfinite(theirs).all()
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=2e-4)


def test_robustness_agrees_with_quantus_own_noise_statistically(net, data):
    images, _, _ = data
    targets = torch.zeros(4, dtype=torch.long)
    explainer = gradcam_explainer(net)
    maps = explainer(images, targets)
    ours = create_metric("avg_sensitivity", nr_samples=100)(
        maps, images=images, model=net, targets=targets, explainer=explainer, seeds=torch.arange(4)
    )
    np.random.seed(0)  # Quantus draws from numpy's global generator
    q = quantus.AvgSensitivity(nr_samples=100, disable_warnings=True)
    theirs = quantus_call(
        q,
        net,
        images,
        maps,
        targets,
        explain_func=quantus_explain_func(explainer),
    )
    np.testing.assert_allclose(ours.numpy(), theirs, rtol=0.05)  # means of 100 draws from the same distribution


def test_sensitivities_share_one_set_of_reexplanations(net, data):
    images, _, _ = data
    targets = torch.zeros(4, dtype=torch.long)
    explainer = gradcam_explainer(net)
    calls = []

    def counting(x, t):
        calls.append(len(x))
        return explainer(x, t)

    maps = explainer(images, targets)
    kw = dict(images=images, model=net, targets=targets, explainer=counting, seeds=torch.arange(4))
    batch = Batch(maps, **kw)
    worst = create_metric("max_sensitivity", nr_samples=5)(batch)
    mean = create_metric("avg_sensitivity", nr_samples=5)(batch)
    assert sum(calls) == 4 * 5  # the second metric re-explained nothing
    assert (worst >= mean).all()
    torch.testing.assert_close(create_metric("avg_sensitivity", nr_samples=5)(maps, **kw), mean)
    assert sum(calls) == 2 * 4 * 5  # a new batch of the same maps starts with its own memo


# -- the paper's channel-level metrics ---------------------------------------------------------------------------------
WEIGHTED = ["gradcam", "gradcampp", "xgradcam", "scorecam", "ablationcam", "integrated_gradcam"]


def test_expected_gradcam_minimises_cam_infidelity(gap_net, images, reference):
    targets = torch.tensor([0, 1, 2])
    kw = dict(images=images, model=gap_net, targets=targets, layer="features")
    maps = torch.rand(3, 16, 16)  # the channel metrics read the weights, not the maps
    same_sample = create_metric("cam_infidelity", reference=reference, seed=0)  # Expected Grad-CAM's own draw
    held_out = create_metric("cam_infidelity", reference=reference, seed=1)
    optimal = ExpectedGradCAM(reference=reference, seed=0).bind(gap_net, "features")(images, targets)
    best = same_sample(maps, weights=optimal.weights, **kw)
    best_held_out = held_out(maps, weights=optimal.weights, **kw)
    for name in WEIGHTED:
        other = create_method(name).channel_weights(gap_net, "features", images, targets)
        assert (best <= same_sample(maps, weights=other, **kw) + 1e-9).all(), name  # Theorem 3.10, exactly
        assert best_held_out.mean() < held_out(maps, weights=other, **kw).mean(), name


def test_completeness_gap(gap_net, images, caplog):
    targets = torch.tensor([0, 1, 2])
    kw = dict(images=images, model=gap_net, targets=targets, layer="features")
    maps = torch.rand(3, 16, 16)
    gap = create_metric("completeness_gap")
    dirac = ExpectedGradCAM(perturbation="dirac", dirac_point=1.0).channel_weights(gap_net, "features", images, targets)
    complete = gap(maps, weights=dirac, **kw)
    assert complete.abs().max().item() < 1e-5  # α = I0·Δ/‖I0‖² at I0 = 1 sums to g(1) − g(0)
    with torch.no_grad():  # GAP + linear head: g(1) − g(0) = Σ_k w_k h_k, Grad-CAM's weights are w_k / (U·V)
        feats = gap_net.features(images)
        w = gap_net.fc.weight[targets]
        change = (w * feats.mean(dim=(2, 3))).sum(1)
        expected = ((w / feats[0, 0].numel()).sum(1) - change).abs() / change.abs()
    gradcam = GradCAM().channel_weights(gap_net, "features", images, targets)
    torch.testing.assert_close(gap(maps, weights=gradcam, **kw), expected.double(), rtol=1e-4, atol=1e-6)
    hirescam = create_method("hirescam").bind(gap_net, "features")(images, targets)
    assert hirescam.weights is None
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        undefined = gap(maps, weights=hirescam.weights, **kw)
    assert torch.isnan(undefined).all() and "the method has no channel weights" in caplog.text
    with pytest.raises(ValueError, match="needs the method's target layer"):
        gap(maps, images=images, model=gap_net, targets=targets, weights=gradcam)


# -- batch invariance, seeds, NaN policy, bad input --------------------------------------------------------------------
MODEL_METRICS = {
    "deletion": {"steps": 24},
    "insertion": {"steps": 24},
    "insertion_minus_deletion": {"steps": 24},
    "pixel_flipping": {"steps": 24},
    "faithfulness_estimate": {"steps": 24},
    "irof": {},
    "infidelity": {"patch_sizes": (6,)},
    "average_drop": {},
    "average_increase": {},
    "average_gain": {},
    "max_sensitivity": {"nr_samples": 3},
    "avg_sensitivity": {"nr_samples": 3},
    "local_lipschitz_estimate": {"nr_samples": 3},
    "relative_input_stability": {"nr_samples": 3},
    "relative_output_stability": {"nr_samples": 3},
}


@pytest.mark.parametrize("name", sorted(MODEL_METRICS))
def test_batch_invariance_and_seeds(name, net, data):
    images, maps, targets = data
    kw = dict(model=net, explainer=gradcam_explainer(net), black=BLACK)
    metric = create_metric(name, **MODEL_METRICS[name])
    seeds = torch.tensor([3, 1, 4, 1])
    whole = metric(maps, images=images, targets=targets, seeds=seeds, **kw)
    single = torch.cat(
        [
            metric(maps[i : i + 1], images=images[i : i + 1], targets=targets[i : i + 1], seeds=seeds[i : i + 1], **kw)
            for i in range(4)
        ]
    )
    torch.testing.assert_close(whole, single, rtol=1e-5, atol=1e-7, equal_nan=True)
    again = create_metric(name, **MODEL_METRICS[name])(maps, images=images, targets=targets, seeds=seeds, **kw)
    torch.testing.assert_close(whole, again, rtol=0, atol=0, equal_nan=True)
    if "nr_samples" in MODEL_METRICS[name]:  # a new seed draws new noise
        other = create_metric(name, **MODEL_METRICS[name], seed=9)(
            maps, images=images, targets=targets, seeds=seeds, **kw
        )
        assert not torch.allclose(whole, other)


def test_nan_policy_for_model_metrics(net, data, caplog):
    images, maps, targets = data
    explainer = gradcam_explainer(net)
    zero = maps.clone()
    zero[2] = 0
    kw = dict(images=images, model=net, targets=targets, explainer=explainer, seeds=torch.arange(4), black=BLACK)
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        sensitivity = create_metric("max_sensitivity", nr_samples=2)(zero, **kw)
        estimate = create_metric("faithfulness_estimate", steps=24)(zero, **kw)
    assert torch.isnan(sensitivity).tolist() == [False, False, True, False]
    assert torch.isnan(estimate).tolist() == [False, False, True, False]
    assert "max_sensitivity undefined for samples [2]: all-zero map" in caplog.text
    assert "constant attribution" in caplog.text
    sign = LinearScore(torch.ones(1, 3, 24, 24))  # class 0 while the mean pixel is positive
    flips = create_metric("relative_input_stability", nr_samples=3, lower_bound=-3.0, upper_bound=-2.0)
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        values = flips(
            maps, images=images, model=sign, targets=targets, explainer=lambda x, t: x.mean(1), seeds=torch.arange(4)
        )
    assert torch.isnan(values).all() and "every perturbation changed the predicted class" in caplog.text


def test_bad_input_to_model_metrics_is_named(net, data):
    images, maps, targets = data
    with pytest.raises(ValueError, match="deletion needs model, targets"):
        create_metric("deletion")(maps, images=images)
    with pytest.raises(ValueError, match=r"images \(4, 3, 24, 24\) do not match maps \(4, 12, 12\)"):
        create_metric("insertion")(maps[:, :12, :12], images=images, model=net, targets=targets)
    with pytest.raises(ValueError, match="needs an explainer"):
        create_metric("max_sensitivity")(maps, images=images, model=net, targets=targets)
    with pytest.raises(ValueError, match="unknown baseline 'white'"):
        create_metric("deletion", baseline="white")
    with pytest.raises(ValueError, match="baseline has 2 values for 3 channels"):
        create_metric("pixel_flipping", baseline=(0.0, 1.0))(maps, images=images, model=net, targets=targets)
    with pytest.raises(ValueError, match="deletion needs the model's black image"):
        create_metric("deletion")(maps, images=images, model=net, targets=targets)
    with pytest.raises(ValueError, match="steps must be an integer ≥ 1; got 2.5"):
        create_metric("deletion", steps=2.5)
    with pytest.raises(TypeError, match="unexpected keyword argument 'seed'"):
        create_metric("max_sensitivity")(maps, images=images, model=net, targets=targets, seed=3)
