"""The paper's g(z), its perturbations and M̂: rank, diagnostics, the fast routes, held-out infidelity."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from conftest import GapLinearNet
from torch import nn

from attribution.channel_scaling import (
    ChannelScaling,
    RankDeficientWarning,
    SecondMoment,
    data_aware_perturbations,
    gaussian_perturbations,
    marchenko_pastur_condition,
    reference_features,
)
from attribution.methods import create_method
from attribution.methods.base import forward_pass
from attribution.models import load_model
from attribution.postprocess import scored_map
from attribution.split import split_at
from evaluation import create_metric

LAYER = "features"


class NonlinearHeadNet(GapLinearNet):
    """The same prefix with a spatial nonlinearity after the layer: only the general route applies."""

    def __init__(self, channels: int = 16, classes: int = 5):
        super().__init__(channels, classes)
        self.mix = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        h = torch.tanh(self.mix(self.features(x)))
        return self.fc(torch.flatten(self.pool(h), 1))


def _images(n: int, seed: int, side: int = 16) -> torch.Tensor:
    return torch.randn(n, 3, side, side, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def wide_net() -> GapLinearNet:
    torch.manual_seed(4)
    return GapLinearNet(channels=16).eval()  # conv → ReLU → global average pool → linear: g is affine in z


@pytest.fixture
def nonlinear_net() -> NonlinearHeadNet:
    torch.manual_seed(5)
    return NonlinearHeadNet().eval()


@pytest.mark.parametrize("pool", [1, 3, 8, 15, 40])
def test_rank_of_data_aware_second_moment_is_min_r_plus_one_k(wide_net, pool):
    # I = 1 − a·h(x'): the perturbations span 1 and the R reference features, so rank(M̂) = min(R + 1, K)
    features = reference_features(wide_net, LAYER, _images(pool, 7))
    pset = data_aware_perturbations(features, 64, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)
        moment = SecondMoment.of(pset, ridge=1e-6)
    k = features.shape[1]
    assert moment.diagnostics.rank == min(pool + 1, k)
    assert moment.diagnostics.references == min(pool, 64) and moment.diagnostics.pool == pool
    assert moment.diagnostics.full_rank == (pool + 1 >= k)
    assert (moment.diagnostics.condition_number < math.inf) == moment.diagnostics.full_rank


def test_rank_deficiency_warns_and_full_rank_does_not(wide_net):
    k = 16
    small = data_aware_perturbations(reference_features(wide_net, LAYER, _images(4, 8)), 2 * k, seed=0)
    with pytest.warns(RankDeficientWarning, match=r"rank\(M̂\) = 5/16"):
        SecondMoment.of(small, ridge=1e-6)
    large = data_aware_perturbations(reference_features(wide_net, LAYER, _images(2 * k, 9)), 2 * k, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankDeficientWarning)
        moment = SecondMoment.of(large, ridge=1e-6)
    assert moment.diagnostics.full_rank and moment.diagnostics.references == 2 * k
    assert moment.diagnostics.marchenko_pastur == pytest.approx(((math.sqrt(2) + 1) / (math.sqrt(2) - 1)) ** 2)


def test_each_perturbation_draws_its_own_reference():
    features = torch.rand(10, 4)
    without = data_aware_perturbations(features, 8, seed=3)  # pool ≥ M: no reference twice
    assert without.distinct_references == 8
    cycled = data_aware_perturbations(features, 25, seed=3)  # pool < M: every reference, ⌊25/10⌋ or ⌈25/10⌉ times
    counts = torch.bincount(cycled.sources, minlength=10)
    assert cycled.distinct_references == 10 and counts.min() >= 2 and counts.max() <= 3
    # each row is 1 − a·h(x'_source) with a ∈ [0, 1)
    a = (1 - cycled.perturbations) / features.double()[cycled.sources]
    assert torch.allclose(a, a[:, :1].expand_as(a)) and ((a >= 0) & (a < 1)).all()
    assert torch.equal(data_aware_perturbations(features, 25, seed=3).perturbations, cycled.perturbations)


def test_marchenko_pastur_prediction():
    assert marchenko_pastur_condition(2048, 2048) is None
    assert marchenko_pastur_condition(4096, 2048) == pytest.approx(33.97, abs=0.01)
    # white perturbations at ρ = 2: the covariance's measured κ is the law's (finite K widens it a little)
    diagnostics = SecondMoment.of(gaussian_perturbations(300, 600, 0.0, 1.0, seed=0), ridge=1e-6).diagnostics
    assert 25 < diagnostics.covariance_condition_number < 45 and diagnostics.marchenko_pastur == pytest.approx(33.97, abs=0.01)
    # data-aware ones are far from white: the measured κ is what the report shows, not the law's
    assert "κ(Cov I) = " in diagnostics.describe()


def test_full_rank_weights_equal_dg_dz_on_gap_linear(wide_net):
    # g(z) = w^c·(z ⊙ GAP(A)) + b^c: at full rank the infidelity optimum is ∂g/∂z itself; with the
    # Tikhonov term it is (M̂ + λI)⁻¹ M̂ ∂g/∂z, which tends to ∂g/∂z as λ → 0. κ(M̂) ≈ 1e6 here, so the
    # general route's differences g(1) − g(1 − I) are taken in float64 to resolve 1e-6.
    wide_net = wide_net.double()
    images, targets = _images(3, 10).double(), torch.tensor([0, 2, 4])
    reference = _images(64, 11).double()
    with torch.no_grad():
        dg_dz = (wide_net.fc.weight[targets] * wide_net.features(images).mean(dim=(2, 3))).double()
    for fast in (True, False):
        exact = create_method("expected_gradcam", reference=reference, fast_path=fast, ridge=1e-14)
        weights = exact.channel_weights(wide_net, LAYER, images, targets).double()
        assert exact.diagnostics(wide_net, LAYER).full_rank
        assert (weights - dg_dz).norm() <= 1e-6 * dg_dz.norm()
        paper = create_method("expected_gradcam", reference=reference, fast_path=fast)  # λ = 1e-6
        fit = paper.regression(wide_net, LAYER, images, targets)
        second_moment = fit.perturbations.T @ fit.perturbations / fit.perturbations.shape[0]
        tikhonov = torch.linalg.solve(second_moment + 1e-6 * torch.eye(16, dtype=torch.float64), second_moment @ dg_dz.T)
        assert (fit.weights.double() - tikhonov.T).norm() <= 1e-5 * dg_dz.norm()
        assert (fit.weights.double() - dg_dz).norm() > 1e-4 * dg_dz.norm()  # the test can tell λ = 1e-6 from 0


def test_affine_route_is_detected_and_skips_the_suffix(wide_net, nonlinear_net):
    for net, route in ((wide_net, "affine"), (nonlinear_net, "general")):
        split = split_at(net, LAYER)
        base = forward_pass(split, _images(2, 12), None)
        assert ChannelScaling(split, base.feats, base.live, base.layout, base.targets).route == route

    rows = []  # activations through the network after the layer: only the 2 images' own forward pass
    split = split_at(wide_net, LAYER)
    handle = split.suffix.register_forward_hook(lambda _, args, __: rows.append(args[0].shape[0]))
    try:
        create_method("expected_gradcam", reference=_images(40, 13)).channel_weights(wide_net, LAYER, _images(2, 14))
    finally:
        handle.remove()
    assert rows == [2]


# registry architectures whose head starts with a global average pool (random weights, small inputs)
FAST_PATH_ARCHITECTURES = {
    "resnet18": ("affine", 64),
    "resnet50": ("affine", 64),
    "efficientnet_b0": ("affine", 64),
    "inception_v3": ("affine", 96),
    "efficientnet_lite0": ("affine", 64),
    "convnext_tiny": ("pooled", 64),
    "vgg16": ("stem", 64),
    "alexnet": ("stem", 128),
    "densenet121": ("stem", 64),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(FAST_PATH_ARCHITECTURES))
def test_fast_path_equals_general_path_on_registry_architectures(name):
    route, side = FAST_PATH_ARCHITECTURES[name]
    torch.manual_seed(0)
    loaded = load_model(name, "none")
    split = split_at(loaded.model, loaded.layer, loaded.layout)
    base = forward_pass(split, _images(2, 15, side), None)
    # the network after the layer in float64: random-init logits move by as little as 1e-8
    loaded.model.double()
    feats = base.feats.double()
    routes = {
        fast: ChannelScaling(split, feats, base.live, base.layout, base.targets, chunk=8, fast_path=fast)
        for fast in (True, False)
    }
    assert routes[True].route == route and routes[False].route == "general"
    features = torch.rand(24, feats.shape[1], generator=torch.Generator().manual_seed(1))
    pset = data_aware_perturbations(features, 24, seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankDeficientWarning)
        moment = SecondMoment.of(pset, ridge=1e-2)
    I = pset.perturbations
    deltas = {fast: g.differences(I) for fast, g in routes.items()}
    assert (deltas[True] - deltas[False]).norm() <= 1e-5 * deltas[False].norm()
    signed = torch.randn(5, feats.shape[1], generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    scores = {fast: g.scores(1 + signed) for fast, g in routes.items()}  # z < 0 somewhere: no stem route
    assert (scores[True] - scores[False]).norm() <= 1e-5 * scores[False].norm()
    general_weights = moment.solve(deltas[False] @ I / I.shape[0])
    gradient = routes[True].linear_gradient()
    fast_weights = gradient @ moment.projection.T if route == "affine" else moment.solve(deltas[True] @ I / I.shape[0])
    assert (fast_weights - general_weights).norm() <= 1e-5 * general_weights.norm()
    z = 1 - I[:3]
    index = torch.tensor([0, 1, 1])
    grads = {fast: g.gradient(z, index).double() for fast, g in routes.items()}
    assert (grads[True] - grads[False]).norm() <= 1e-5 * grads[False].norm()


def test_ablationcam_is_the_same_on_both_routes(wide_net):
    images = _images(2, 16)
    fast = create_method("ablationcam").channel_weights(wide_net, LAYER, images, 1)
    split = split_at(wide_net, LAYER)
    base = forward_pass(split, images, 1)
    general = ChannelScaling(split, base.feats, base.live, base.layout, base.targets, fast_path=False)
    ones = torch.ones(1, 16)
    ablated = general.scores(1 - torch.eye(16))
    expected = (general.scores(ones) - ablated) / general.scores(ones)
    torch.testing.assert_close(fast, expected, rtol=1e-4, atol=1e-6)


def test_expected_gradients_route_is_exact_on_a_linear_g(wide_net):
    # ⟨I, φ^EG⟩ with ∇g constant is I·∂g/∂z = g(z0) − g(z0 − I) for any N, T and σ
    images = _images(2, 17)
    common = dict(reference=_images(40, 18), n_perturbations=32, seed=2)
    exact = create_method("expected_gradcam", **common).regression(wide_net, LAYER, images)
    for baselines, steps in ((1, 1), (3, 2), (5, 7)):
        mc = create_method(
            "expected_gradcam", estimator="expected_gradients", eg_baselines=baselines, eg_steps=steps, **common
        ).regression(wide_net, LAYER, images, seeds=[1, 2])
        torch.testing.assert_close(mc.deltas, exact.deltas, rtol=1e-5, atol=1e-6)


def _stacked_rank(*perturbations: torch.Tensor) -> int:
    return int(torch.linalg.matrix_rank(torch.cat(perturbations)))


def test_held_out_infidelity_leaves_the_fitting_span(wide_net):
    # fitting on 5 references spans 6 directions; cam_infidelity's held-out references add new ones
    fit_pool = reference_features(wide_net, LAYER, _images(5, 19))
    held_out = reference_features(wide_net, LAYER, _images(8, 20))
    fit_set = data_aware_perturbations(fit_pool, 32, seed=0).perturbations
    eval_set = data_aware_perturbations(held_out, 32, seed=1).perturbations
    assert _stacked_rank(fit_set) == 6 and _stacked_rank(fit_set, eval_set) > 6

    images, targets = _images(4, 21), torch.tensor([0, 1, 2, 3])
    with pytest.warns(RankDeficientWarning):
        method = create_method("expected_gradcam", reference_features=fit_pool)
        raw, weights = method.maps_and_weights(wide_net, LAYER, images, targets)
    maps = scored_map(raw, images.shape[-2:])
    metric = create_metric("cam_infidelity", reference_features=held_out)
    held_out_score = metric(maps, images=images, model=wide_net, targets=targets, layer=LAYER, weights=weights)
    fitted_score = method.regression(wide_net, LAYER, images, targets).infidelity()
    assert (held_out_score > 1e3 * fitted_score.clamp(min=1e-12)).all()  # not zero by construction
    assert (held_out_score > 0).all()


def test_held_out_infidelity_favours_expected_gradcam_on_a_nonlinear_head(nonlinear_net):
    k = 16
    fit_pool = reference_features(nonlinear_net, LAYER, _images(3 * k, 22))
    held_out = reference_features(nonlinear_net, LAYER, _images(3 * k, 23))
    images = _images(12, 24)
    targets = torch.arange(12) % 5
    metric = create_metric("cam_infidelity", reference_features=held_out)
    scores = {}
    for name, params in (("expected_gradcam", {"reference_features": fit_pool}), ("gradcam", {})):
        method = create_method(name, **params)
        raw, weights = method.maps_and_weights(nonlinear_net, LAYER, images, targets)
        maps = scored_map(raw, images.shape[-2:])
        scores[name] = metric(maps, images=images, model=nonlinear_net, targets=targets, layer=LAYER, weights=weights)
    assert (scores["expected_gradcam"] > 0).all()
    assert scores["expected_gradcam"].mean() <= scores["gradcam"].mean()


def test_precomputed_features_equal_images(wide_net):
    images, reference = _images(2, 25), _images(30, 26)
    from_images = create_method("expected_gradcam", reference=reference).channel_weights(wide_net, LAYER, images)
    features = reference_features(wide_net, LAYER, reference)
    from_features = create_method("expected_gradcam", reference_features=features).channel_weights(
        wide_net, LAYER, images
    )
    torch.testing.assert_close(from_features, from_images)
    with pytest.raises(ValueError, match="not both"):
        create_method("expected_gradcam", reference=reference, reference_features=features)


@pytest.mark.parametrize("name", ["vgg16", "densenet121", "alexnet"])
def test_pools_and_relus_before_a_linear_layer_are_a_stem_not_a_pooled_head(name):
    # VGG/AlexNet: max-pool, average pool, flatten, MLP; DenseNet: a ReLU before its pool
    loaded = load_model(name, "none")
    split = split_at(loaded.model, loaded.layer)
    assert split.pooled_head is None and split.linear_stem is not None


def test_a_spatial_nonlinearity_after_the_layer_takes_the_general_route(nonlinear_net):
    split = split_at(nonlinear_net, LAYER)
    assert split.pooled_head is None and split.linear_stem is None  # tanh(conv(A)) before the pool
