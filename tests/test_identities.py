"""Exact identities of the CAM formulas on networks where they have closed forms."""

from __future__ import annotations

import pytest
import torch

from attribution.methods import UnknownMethodError, create_method
from attribution.methods.base import Attribution
from attribution.methods.gradient import gradcam_weights
from attribution.needs import Need
from attribution.postprocess import relu, upsample
from attribution.registry import Registry, UnknownNameError
from attribution.split import is_cached, split_at

LAYER = "features"


def activations(net, x):
    with torch.no_grad():
        return net.features(x)


def test_gradcam_is_cam_over_uv_on_gap_linear(gap_net, images):
    a = activations(gap_net, images)
    targets = torch.tensor([0, 3, 1])
    cam = torch.einsum("bk,bkuv->buv", gap_net.fc.weight[targets].detach(), a)  # CAM (Zhou et al. 2016)
    gradcam = create_method("gradcam")(gap_net, LAYER, images, targets)
    uv = a.shape[2] * a.shape[3]
    torch.testing.assert_close(gradcam * uv, cam, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["hirescam", "xgradcam"])
def test_hirescam_and_xgradcam_equal_gradcam_on_gap_linear(gap_net, images, name):
    # ∂y/∂A^k_uv = W_ck/UV is constant over (u, v): the element-wise product sums to Grad-CAM, and
    # XGrad-CAM's activation-weighted average of a constant is that constant.
    targets = torch.tensor([2, 2, 4])
    expected = create_method("gradcam")(gap_net, LAYER, images, targets)
    torch.testing.assert_close(create_method(name)(gap_net, LAYER, images, targets), expected, rtol=1e-5, atol=1e-6)


def test_layercam_keeps_positive_weights_on_gap_linear(gap_net, images):
    a = activations(gap_net, images)
    w = gap_net.fc.weight[1].detach() / (a.shape[2] * a.shape[3])
    expected = torch.einsum("k,bkuv->buv", w.clamp(min=0), a)
    torch.testing.assert_close(create_method("layercam")(gap_net, LAYER, images, 1), expected, rtol=1e-5, atol=1e-6)


def test_gradcampp_closed_form_on_gap_linear(gap_net, images):
    a = activations(gap_net, images)
    g = (gap_net.fc.weight[0].detach() / (a.shape[2] * a.shape[3]))[None, :]  # constant gradient
    alpha = g**2 / (2 * g**2 + a.sum(dim=(2, 3)) * g**3)
    weights = alpha * g.clamp(min=0) * a.shape[2] * a.shape[3]
    got = create_method("gradcampp").channel_weights(gap_net, LAYER, images, 0)
    torch.testing.assert_close(got, weights, rtol=1e-4, atol=1e-7)


def test_ablationcam_closed_form_on_gap_linear(gap_net, images):
    # Zeroing channel k lowers y^c by W_ck·GAP(A^k): w_k = W_ck·GAP(A^k) / y^c.
    a = activations(gap_net, images)
    logits = gap_net(images).detach()
    contribution = gap_net.fc.weight[3].detach() * a.mean(dim=(2, 3))
    expected = contribution / logits[:, 3:4]
    got = create_method("ablationcam").channel_weights(gap_net, LAYER, images, 3)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("perturbation", ["data", "gaussian"])
def test_expected_gradcam_weights_are_dg_dz_on_gap_linear(gap_net, images, reference, perturbation):
    # g(z) = Σ_k W_ck z_k GAP(A^k) + b is linear in z, so the infidelity-optimal weights are its
    # gradient ∂g/∂z = W_ck·GAP(A^k), up to the Tikhonov term: α* = (M̂ + λI)⁻¹ M̂ ∂g/∂z.
    a = activations(gap_net, images)
    targets = torch.tensor([4, 0, 2])
    dg_dz = (gap_net.fc.weight[targets].detach() * a.mean(dim=(2, 3))).double()
    method = create_method("expected_gradcam", reference=reference, perturbation=perturbation)
    fit = method.regression(gap_net, LAYER, images, targets)
    I = fit.perturbations.double()
    second_moment = I.T @ I / I.shape[0]
    ridge = torch.linalg.solve(second_moment + 1e-6 * torch.eye(6, dtype=torch.float64), second_moment @ dg_dz.T).T
    torch.testing.assert_close(fit.weights.double(), ridge, rtol=1e-4, atol=1e-6)
    # without the Tikhonov term the regression recovers ∂g/∂z itself
    exact = create_method("expected_gradcam", reference=reference, perturbation=perturbation, ridge=1e-12)
    got = exact.channel_weights(gap_net, LAYER, images, targets).double()
    torch.testing.assert_close(got, dg_dz, rtol=1e-3, atol=1e-5)


def test_expected_gradcam_dirac_is_complete_at_its_point(smooth_net, images):
    # App. A.1.5: the minimum-norm solution under a Dirac perturbation satisfies ⟨I0, α⟩ = g(1) − g(1 − I0).
    point = torch.linspace(0.2, 1.0, 6)
    fit = create_method("expected_gradcam", perturbation="dirac", dirac_point=point).regression(smooth_net, LAYER, images)
    a = activations(smooth_net, images)
    with torch.no_grad():
        full = smooth_net(images)
        scaled = smooth_net.fc(torch.tanh(torch.nn.functional.softplus(smooth_net.mix(a * (1 - point)[None, :, None, None])).mean(dim=(2, 3))))
    targets = full.argmax(1)
    delta = (full - scaled).gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(fit.weights @ point, delta, rtol=1e-5, atol=1e-6)
    # the minimum-norm solution lies along I0: α = Δ·I0/‖I0‖²
    torch.testing.assert_close(fit.weights, delta[:, None] * point / point.dot(point), rtol=1e-5, atol=1e-7)


def test_integrated_gradcam_is_complete_on_smooth_net(smooth_net, images):
    targets = torch.tensor([0, 1, 3])
    weights = create_method("integrated_gradcam", steps=300).channel_weights(smooth_net, LAYER, images, targets)
    with torch.no_grad():
        gap = smooth_net(images) - smooth_net(torch.zeros_like(images))
    expected = gap.gather(1, targets[:, None]).squeeze(1)
    torch.testing.assert_close(weights.sum(dim=1), expected, rtol=1e-2, atol=1e-3)
    # a crude Riemann sum is measurably off: the test can tell the integral from one gradient
    crude = create_method("integrated_gradcam", steps=1).channel_weights(smooth_net, LAYER, images, targets)
    assert (crude.sum(dim=1) - expected).abs().max() > 10 * (weights.sum(dim=1) - expected).abs().max()


@pytest.mark.parametrize("perturbation", ["data", "gaussian"])
def test_expected_gradients_route_is_complete(smooth_net, images, reference, perturbation):
    # σ = 0: Expected Gradients from z0 − I to z0 is an integrated gradient, and completeness gives
    # ⟨I, φ^EG⟩ = g(z0) − g(z0 − I) up to the Riemann error — the identity behind the closed form.
    common = dict(reference=reference, n_perturbations=24, seed=5, perturbation=perturbation)
    exact = create_method("expected_gradcam", **common).regression(smooth_net, LAYER, images)
    mc = create_method(
        "expected_gradcam", estimator="expected_gradients", eg_baselines=4, eg_steps=32, eg_sigma=0.0, **common
    ).regression(smooth_net, LAYER, images)
    scale = exact.deltas.abs().max()
    assert (mc.deltas - exact.deltas).abs().max() < 0.01 * scale
    cosine = torch.nn.functional.cosine_similarity(mc.weights, exact.weights, dim=1)
    assert (cosine > 0.999).all(), cosine


def test_expected_gradients_route_with_noisy_baselines_converges(smooth_net, images, reference):
    # The paper's σ = 0.1 baselines estimate g(z0) − E g(z0 − I + σε): close to the exact
    # differences (data-aware perturbations are large next to σ) and closer as N grows.
    common = dict(reference=reference, n_perturbations=24, seed=5)
    exact = create_method("expected_gradcam", **common).regression(smooth_net, LAYER, images)
    errors = []
    for n in (4, 64):
        mc = create_method("expected_gradcam", estimator="expected_gradients", eg_baselines=n, eg_steps=16, **common)
        errors.append(float((mc.regression(smooth_net, LAYER, images).deltas - exact.deltas).abs().max()))
    scale = float(exact.deltas.abs().max())
    assert errors[1] < 0.05 * scale
    assert errors[1] < errors[0]


def test_expected_gradcam_minimises_infidelity(smooth_net, images, reference):
    targets = torch.tensor([0, 2, 1])
    fit = create_method("expected_gradcam", reference=reference).regression(smooth_net, LAYER, images, targets)
    own = fit.infidelity()
    gradcam = create_method("gradcam").channel_weights(smooth_net, LAYER, images, targets)
    integrated = create_method("integrated_gradcam").channel_weights(smooth_net, LAYER, images, targets)
    uv = fit.maps.shape[2] * fit.maps.shape[3]
    # Grad-CAM's weights as channel attributions ∂g/∂z_k ≈ α_k·UV·GAP(A^k) and as they are
    candidates = {
        "gradcam": gradcam,
        "gradcam_dz": gradcam * uv * fit.maps.mean(dim=(2, 3)),
        "integrated_gradcam": integrated,
    }
    for name, weights in candidates.items():
        assert (own <= fit.infidelity(weights) + 1e-7).all(), name
    # and α* is a minimum: every small move away from it costs infidelity
    noise = torch.randn(8, *fit.weights.shape, generator=torch.Generator().manual_seed(0)) * 1e-2
    for step in noise:
        assert (own < fit.infidelity(fit.weights + step)).all()


def test_scorecam_weights_are_masked_probabilities(gap_net, images):
    # a naive loop over channels: x ⊙ normalised upsampled A^k, softmax probability of the target
    a = activations(gap_net, images)
    up = torch.nn.functional.interpolate(a, size=images.shape[-2:], mode="bilinear", align_corners=False)
    lo, hi = up.amin(dim=(2, 3), keepdim=True), up.amax(dim=(2, 3), keepdim=True)
    masks = torch.where(hi > lo, (up - lo) / (hi - lo).clamp(min=1e-12), torch.zeros_like(up))
    targets = gap_net(images).argmax(1)
    expected = torch.stack(
        [
            torch.stack([gap_net((images[b] * masks[b, k])[None]).softmax(1)[0, targets[b]] for k in range(a.shape[1])])
            for b in range(len(images))
        ]
    ).detach()
    got = create_method("scorecam", batch_size=4).channel_weights(gap_net, LAYER, images)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_opticam_increases_the_masked_score_and_starts_uniform(gap_net, images):
    zero = create_method("opticam", iterations=0, mask_space="normalized").channel_weights(gap_net, LAYER, images)
    torch.testing.assert_close(zero, torch.full_like(zero, 1 / zero.shape[1]))
    trained = create_method("opticam", iterations=30, mask_space="normalized").channel_weights(gap_net, LAYER, images)
    torch.testing.assert_close(trained.sum(dim=1), torch.ones(3))  # softmax weights

    def masked_score(weights):
        a = activations(gap_net, images)
        s = torch.einsum("bk,bkuv->buv", weights, a)[:, None]
        s = torch.nn.functional.interpolate(s, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        lo, hi = s.amin(dim=(1, 2), keepdim=True), s.amax(dim=(1, 2), keepdim=True)
        target = gap_net(images).argmax(1)
        return gap_net(images * ((s - lo) / (hi - lo))[:, None]).gather(1, target[:, None]).squeeze(1).detach()

    assert (masked_score(trained) > masked_score(zero)).all()


def test_fakecam_is_one_but_the_top_left_pixel(gap_net, images):
    fake = create_method("fakecam")(gap_net, LAYER, images)
    assert fake.shape == (3, 16, 16)
    assert fake[:, 0, 0].eq(0).all() and fake.sum() == 3 * (256 - 1)


def test_gradcam_weights_are_mean_gradients():
    grads = torch.arange(24.0).reshape(1, 2, 3, 4)
    torch.testing.assert_close(gradcam_weights(torch.ones_like(grads), grads), torch.tensor([[5.5, 17.5]]))


# -- methods bound to (model, layer) -------------------------------------------------------------

BOUND = {
    "gradcam": {},
    "gradcampp": {},
    "xgradcam": {},
    "scorecam": {"batch_size": 4},
    "ablationcam": {},
    "opticam": {"iterations": 3, "black": (-2.0, 0.0, 1.5)},
    "smoothgradcampp": {"n_samples": 3},
    "integrated_gradcam": {"steps": 4},
    "expected_gradcam": {"perturbation": "gaussian"},
    "hirescam": {},
    "layercam": {},
    "fakecam": {},
}
UNWEIGHTED = {"hirescam", "layercam", "fakecam"}


@pytest.mark.parametrize("name", list(BOUND))
def test_bound_attribution_is_the_unbound_call(smooth_net, images, name):
    method = create_method(name, **BOUND[name])
    targets = torch.tensor([3, 0, 2])
    result = method.bind(smooth_net, LAYER)(images, targets, seeds=[4, 5, 6])
    assert isinstance(result, Attribution)
    assert torch.equal(result.raw, method(smooth_net, LAYER, images, targets, seeds=[4, 5, 6]))
    assert torch.equal(result.targets, targets) and not result.raw.requires_grad
    if name in UNWEIGHTED:
        assert result.weights is None
        return
    # Σ_k w_k A^k reproduces the raw map, and the unbound wrappers return the same two tensors
    torch.testing.assert_close(result.raw, torch.einsum("bk,bkuv->buv", result.weights, activations(smooth_net, images)))
    raw, weights = method.maps_and_weights(smooth_net, LAYER, images, targets, seeds=[4, 5, 6])
    assert torch.equal(raw, result.raw) and torch.equal(weights, result.weights)
    assert torch.equal(method.channel_weights(smooth_net, LAYER, images, targets, seeds=[4, 5, 6]), weights)
    # one image at a time gives the batch's rows
    bound = method.bind(smooth_net, LAYER)
    for b in range(len(images)):
        single = bound(images[b : b + 1], targets[b : b + 1], seeds=[4 + b])
        torch.testing.assert_close(single.raw[0], result.raw[b], rtol=1e-5, atol=1e-6)


def test_bound_attribution_resolves_top1_and_scores_upsampled_relu(gap_net, images):
    bound = create_method("gradcam").bind(gap_net, LAYER)
    assert bound.name == "gradcam"
    result = bound(images)
    assert torch.equal(result.targets, gap_net(images).argmax(1))
    scored = result.scored((16, 16))
    assert scored.shape == (3, 16, 16)
    torch.testing.assert_close(scored, upsample(relu(result.raw), (16, 16)))
    explain = bound.explainer()
    again = explain(images, result.targets)
    assert torch.equal(again, scored) and not again.requires_grad


def test_expected_gradcam_attribution_carries_its_diagnostics(gap_net, images, reference):
    method = create_method("expected_gradcam", reference=reference)
    result = method.bind(gap_net, LAYER)(images)
    assert result.diagnostics == method.diagnostics(gap_net, LAYER)
    assert result.diagnostics.channels == 6
    assert create_method("gradcam").bind(gap_net, LAYER)(images).diagnostics is None


def test_leaving_the_binding_releases_the_split_and_the_fitted_set(gap_net, images, reference):
    method = create_method("expected_gradcam", reference=reference)
    with method.bind(gap_net, LAYER) as bound:
        first = bound(images)
        split = bound.split
        assert is_cached(gap_net, LAYER) and split_at(gap_net, LAYER) is split
        assert split in method._sets
    assert not is_cached(gap_net, LAYER)
    assert len(method._sets) == 0
    # a later call builds both again, to the same result
    assert torch.equal(method(gap_net, LAYER, images), first.raw)
    assert is_cached(gap_net, LAYER)


def test_needs_of_expected_gradcam_follow_its_perturbation():
    data = create_method("expected_gradcam")
    assert data.needs == frozenset({Need.FIT_REFERENCES}) and data.reference_pool == "fit"
    for perturbation in ("gaussian", "dirac"):
        other = create_method("expected_gradcam", perturbation=perturbation)
        assert other.needs == frozenset() and other.reference_pool is None
    assert create_method("gradcam").needs == frozenset() and create_method("gradcam").reference_pool is None


@pytest.mark.parametrize(
    "name, message",
    [
        ("gradcam", r"method 'gradcam' has no parameter 'steps'; it takes no parameters$"),
        ("opticam", (r"method 'opticam' has no parameter 'steps'; it takes 'iterations', 'lr', 'tolerance', "
                     r"'normalization', 'objective', 'selector', 'mask_space', 'black'$")),
        ("scorecam", r"method 'scorecam' has no parameter 'steps'; it takes 'batch_size'$"),
    ],
)
def test_unknown_parameter_lists_the_real_ones(name, message):
    with pytest.raises(TypeError, match=message):
        create_method(name, steps=3)


@pytest.mark.parametrize(
    "name, params, parameter",
    [
        ("opticam", {"iterations": -1}, "iterations"),
        ("opticam", {"iterations": 2.5}, "iterations"),
        ("opticam", {"iterations": True}, "iterations"),
        ("opticam", {"lr": 0.0}, "lr"),
        ("opticam", {"lr": float("nan")}, "lr"),
        ("scorecam", {"batch_size": 0}, "batch_size"),
        ("ablationcam", {"batch_size": -3}, "batch_size"),
        ("integrated_gradcam", {"steps": 0}, "steps"),
        ("integrated_gradcam", {"batch_size": False}, "batch_size"),
        ("smoothgradcampp", {"n_samples": 0}, "n_samples"),
        ("smoothgradcampp", {"noise": -0.1}, "noise"),
        ("expected_gradcam", {"n_perturbations": 0}, "n_perturbations"),
        ("expected_gradcam", {"ridge": 0}, "ridge"),
        ("expected_gradcam", {"gaussian_std": -1.0}, "gaussian_std"),
        ("expected_gradcam", {"eg_steps": True}, "eg_steps"),
    ],
)
def test_nonsensical_parameters_are_refused_by_name(name, params, parameter):
    with pytest.raises(ValueError, match=rf"^{parameter} must be"):
        create_method(name, **params)


def test_method_lookup_ignores_case_and_hyphens():
    assert type(create_method("Integrated-GradCAM")).name == "integrated_gradcam"
    with pytest.raises(UnknownMethodError, match=r"^unknown method 'gradcan'\. Did you mean 'gradcam'"):
        create_method("gradcan")


def test_the_generic_registry_serves_any_kind():
    class UnknownThing(UnknownNameError):
        pass

    checked = []
    things: Registry[object] = Registry("metric", error=UnknownThing, validate=checked.append)

    @things.register
    class Sparse:
        name = "Sparse_Ness"

        def __init__(self, k: int = 1, *, eps: float = 0.0):
            self.k, self.eps = k, eps

    assert checked == [Sparse] and things.names() == ["Sparse_Ness"] and "sparse-ness" in things
    assert things.get("SPARSE-NESS") is Sparse and things.create("sparse_ness", eps=1.0).eps == 1.0
    with pytest.raises(UnknownThing, match=r"^unknown metric 'sparse'\. Did you mean 'Sparse_Ness'\?"):
        things.get("sparse")
    with pytest.raises(TypeError, match=r"metric 'Sparse_Ness' has no parameter 'q'; it takes 'k', 'eps'"):
        things.create("sparse_ness", q=2)
    with pytest.raises(ValueError, match="registered twice"):
        things.register(type("Again", (), {"name": "sparse-ness"}))
    with pytest.raises(TypeError, match="class attribute name"):
        things.register(type("Nameless", (), {}))
