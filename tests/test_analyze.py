"""``camgrid analyze``: App. B's M and N sweeps and App. C.1's saturation curves (Buono et al., TMLR 2026).

Tiny randomly initialised networks with random-image references; nothing is downloaded. The CLI runs on
torchvision's MobileNetV3-Small with random weights and a reference pool of the bundled offline photos.
"""

from __future__ import annotations

import json
import math

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner
from torch import nn

from attribution.channel_scaling import reference_features
from jobs.analyze import SmallReferencePoolWarning, Subject, eg_regression, m_sweep, n_sweep, saturation_curves
from jobs.analyze.cli import analyze
from jobs.analyze.grids import check_budgets, parse_alphas, parse_budget, parse_budgets, parse_counts
from storage.builders.demo import demo_references_manifest

MP_AT_RHO_2 = ((math.sqrt(2) + 1) / (math.sqrt(2) - 1)) ** 2  # eq. 94: 17 + 12√2 ≈ 33.97, the paper's "κ ≈ 34"


class AffineNet(nn.Module):
    """conv → ReLU (target ``features``) → global average pool → linear: ``g`` is affine in ``z``."""

    def __init__(self, channels: int, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU())
        self.fc = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


class SmoothHeadNet(nn.Module):
    """conv → ReLU (target ``features``), then a smooth nonlinear head: ``g`` is curved in ``z``."""

    def __init__(self, channels: int = 16, classes: int = 5) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU())
        self.mix = nn.Conv2d(channels, 8, 1)
        self.fc = nn.Linear(8, classes)

    def head(self, maps: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.tanh(nn.functional.softplus(self.mix(maps)).mean(dim=(2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class SaturatingNet(nn.Module):
    """A positive bias-free conv and tanh (target ``features``: ``tanh(αu)``, ``u ≥ 0`` for positive images), then
    a top logit ``10·sigmoid(8·(mean GAP − 0.3))`` against two zero logits: everything flattens well before α = 1."""

    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        conv = nn.Conv2d(3, channels, 3, padding=1, bias=False)
        nn.init.uniform_(conv.weight, 0.5, 1.5)
        self.features = nn.Sequential(conv, nn.Tanh())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = 10 * torch.sigmoid(8 * (self.features(x).mean(dim=(1, 2, 3))[:, None] - 0.3))
        return torch.cat([score, torch.zeros_like(score), torch.zeros_like(score)], dim=1)


def _net(cls: type[nn.Module], seed: int, *args: int) -> nn.Module:
    torch.manual_seed(seed)
    return cls(*args).eval()


def _images(n: int, seed: int) -> torch.Tensor:
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed))


def _subject(net: nn.Module, pool: int | None, images: int = 3) -> Subject:
    features = None if pool is None else reference_features(net, "features", _images(pool, 100))
    return Subject.of(net, "features", _images(images, 7), features, batch_size=4096)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """These networks are tiny: one intra-op thread is faster than several contending for shared cores."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def smooth_subject() -> Subject:
    return _subject(_net(SmoothHeadNet, 0), pool=400)


# -- grids ------------------------------------------------------------------------------------------------


def test_grids_parse_multiples_of_k_counts_and_alphas():
    assert parse_budgets("K/8,K/4,K/2,K,2K,4K", 1280) == (160, 320, 640, 1280, 2560, 5120)
    assert parse_budget("1.5K", 100) == 150 and parse_budget("3K/2", 100) == 150 and parse_budget("77", 5) == 77
    assert parse_counts("100,1,2,1") == (1, 2, 100)
    for bad in ("K/1000", "2Q"):
        with pytest.raises(ValueError):
            parse_budget(bad, 100)
    with pytest.raises(ValueError):
        check_budgets("K,two")
    check_budgets("K/8, 2K, 300")
    grid = parse_alphas("25")
    assert len(grid) == 25 and grid[0] == 0 and grid[-1] == 1
    drawn = parse_alphas("random:25", seed=3)
    assert len(drawn) == 26 and np.all(np.diff(drawn) > 0) and drawn[-1] == 1 and 0 <= drawn[0] < 1


# -- the M sweep (App. B.2, Fig. 6) --------------------------------------------------------------------------


@pytest.mark.parametrize("pool", [5, 200])
def test_rank_is_min_of_m_k_and_r_plus_one(pool):
    """Prop. B.1 (eq. 93) and the data-aware span: rank(M̂) = min(M, K, R + 1), below and above M = K."""
    subject = _subject(_net(AffineNet, 1, 16), pool=pool)
    budgets = (4, 8, 16, 32, 64)
    if pool + 1 < subject.channels:
        with pytest.warns(SmallReferencePoolWarning, match="R = 5"):
            sweep = m_sweep(subject, budgets, reference=256, evaluation=64)
    else:
        sweep = m_sweep(subject, budgets, reference=256, evaluation=64)
    ranks = sweep.table.group_by("perturbations").agg(pl.col("rank").first(), pl.col("rank_bound").first())
    expected = {m: min(m, 16, pool + 1) for m in budgets}
    assert dict(zip(ranks["perturbations"], ranks["rank"])) == expected
    assert dict(zip(ranks["perturbations"], ranks["rank_bound"])) == expected
    singular = sweep.table.filter(pl.col("rank") < 16)
    assert singular["condition_number"].is_infinite().all()


def test_condition_number_at_rho_2_follows_marchenko_pastur_for_isotropic_perturbations():
    """Remark B.2, eq. 94 (κ ≈ 34 at ρ = 2) holds for i.i.d. isotropic (Gaussian) perturbations."""
    subject = _subject(_net(AffineNet, 2, 64), pool=None, images=2)
    sweep = m_sweep(subject, (128,), reference=4096, evaluation=64, repeats=6)
    assert sweep.table["marchenko_pastur"][0] == pytest.approx(MP_AT_RHO_2) and MP_AT_RHO_2 == pytest.approx(34, 0.01)
    kappa = float(sweep.table.group_by("repeat").agg(pl.col("condition_number").first())["condition_number"].median())
    assert MP_AT_RHO_2 / 1.5 < kappa < 1.5 * MP_AT_RHO_2


def test_data_aware_perturbations_are_worse_conditioned_than_marchenko_pastur():
    """Whitened by the population moment, I = 1 − a·h(x') still exceeds eq. 94: a ~ U(0, 1) scales each draw."""
    subject = _subject(_net(AffineNet, 3, 32), pool=2000, images=1)
    sweep = m_sweep(subject, (64,), reference=6400, evaluation=32, repeats=5)
    whitened = sweep.table.group_by("repeat").agg(pl.col("whitened_condition_number").first())
    assert float(whitened["whitened_condition_number"].median()) > 1.5 * MP_AT_RHO_2


def test_errors_shrink_as_m_grows(smooth_subject):
    """Averaged over draws (one draw's Frobenius error is dominated by the mean direction's scalar noise)."""
    sweep = m_sweep(smooth_subject, (4, 8, 16, 32, 64, 128), reference=2048, evaluation=256, repeats=8)
    summary = sweep.summary()
    error = summary["frobenius_error_mean"].to_numpy()
    assert error[-1] < error[0] / 3 and -0.9 < sweep.slope() < -0.3  # eq. 95: O(1/√M)
    cosine, ssim = summary["weight_cosine_mean"].to_numpy(), summary["map_ssim_mean"].to_numpy()
    assert cosine[-1] > 0.98 and cosine[-1] > cosine[0] and ssim[-1] > 0.98 and ssim[-1] > ssim[0]
    infidelity = summary["infidelity_mean"].to_numpy()
    floor = summary["reference_infidelity_mean"][0]
    assert infidelity[0] > 10 * infidelity[-1] and infidelity[-1] < 2 * floor  # the drop across M = K (Fig. 6f)


# -- the N sweep (App. B.3, Fig. 7) --------------------------------------------------------------------------


def test_n_sweep_converges_in_n(smooth_subject):
    """On a curved head σ's centring error (Prop. B.5, O(σ√(K/N))) dominates the completeness gap and inflates the
    infidelity at small N, which then approaches that of the closed-form weights (exact differences)."""
    sweep = n_sweep(smooth_subject, (1, 4, 16), reference=64, perturbations=32, steps=4, evaluation=256)
    summary = sweep.summary()
    eg = summary.filter(pl.col("baseline") == "gaussian").sort("baselines")
    ig = summary.filter(pl.col("baseline") == "dirac")
    cosine = eg["weight_cosine_mean"].to_numpy()
    assert cosine[-1] > 0.99 and cosine[-1] > cosine[0]
    assert eg["attribution_error_mean"][-1] < eg["attribution_error_mean"][0]
    gap = eg["completeness_gap_mean"].to_numpy()
    assert gap[-1] < gap[0] and ig["completeness_gap_mean"][0] < gap.min()  # σ's centring error (Prop. B.5)
    infidelity = eg["infidelity_mean"].to_numpy()
    assert infidelity[0] > infidelity[-1] and infidelity[-1] < 2.5 * eg["closed_form_infidelity_mean"][0]


def test_n_sweep_is_exact_on_an_affine_head():
    subject = _subject(_net(AffineNet, 4, 16), pool=64, images=2)
    assert subject.route == "affine"
    sweep = n_sweep(subject, (1, 2), reference=4, perturbations=32, steps=2, evaluation=64)
    table = sweep.table
    assert table["attribution_error"].max() < 1e-5 and table["completeness_gap"].max() < 1e-5
    assert table["weight_cosine"].min() > 1 - 1e-9


def test_remark_b4_one_dirac_baseline_is_integrated_gradients(smooth_subject):
    """N = 1 with D = δ₀ (σ = 0): ⟨I, φ^EG⟩ is the T-step midpoint Integrated Gradients of g on z0 − I → z0."""
    steps = 6
    fit = eg_regression(smooth_subject, 1, perturbations=4, steps=steps, sigma=0.0)
    net = smooth_subject.model
    with torch.no_grad():
        maps = net.features(smooth_subject.images)
    t = (torch.arange(steps, dtype=torch.float32) + 0.5) / steps
    expected = torch.empty_like(fit.deltas)
    for b, target in enumerate(smooth_subject.targets.tolist()):
        for m, perturbation in enumerate(fit.perturbations.float()):
            z = (1 - perturbation + t[:, None] * perturbation).requires_grad_(True)  # (T, K) on the straight path
            score = net.head(z[:, :, None, None] * maps[b][None])[:, target].sum()
            (grad,) = torch.autograd.grad(score, z)
            expected[b, m] = grad.double().mean(dim=0) @ perturbation.double()
    torch.testing.assert_close(fit.deltas, expected, rtol=1e-4, atol=1e-7)


# -- saturation (App. C.1) -----------------------------------------------------------------------------------


def test_saturation_curves_are_monotone_and_flat_near_one():
    net = _net(SaturatingNet, 5)
    images = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(6))
    alphas = np.linspace(0, 1, 21)
    curves = saturation_curves(net, "features", images, alphas, black=(0.0, 0.0, 0.0))
    table = curves.table.sort(["image", "alpha"])
    assert table.filter(pl.col("alpha") == 1.0)["cosine"].to_numpy() == pytest.approx(1.0, abs=1e-12)
    for _, rows in table.group_by("image"):
        for column in ("cosine", "logit", "probability"):
            assert np.all(np.diff(rows[column].to_numpy()) >= -1e-9), column
        logit = rows["logit"].to_numpy()
        assert logit[-1] - logit[10] < 0.01 * (logit[-1] - logit[0])  # flat from α = 0.5 on
        assert rows["cosine"][10] > 0.999
    assert curves.summary().height == len(alphas)


def test_saturation_path_starts_at_the_models_black_image():
    net = _net(AffineNet, 8, 6)
    black = (-2.0, 0.5, 1.0)
    images = _images(2, 9)
    curves = saturation_curves(net, "features", images, [0.0, 0.5, 1.0], black=black)
    start = curves.table.filter(pl.col("alpha") == 0.0).sort("image")
    with torch.no_grad():
        logits = net(torch.tensor(black)[None, :, None, None].expand_as(images).contiguous())
    targets = torch.tensor(start["target"].to_list())
    assert start["logit"].to_numpy() == pytest.approx(logits[torch.arange(2), targets].double().numpy(), rel=1e-5)


# -- the commands ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reference_manifest(tmp_path_factory) -> str:
    return str(demo_references_manifest(n=40, seed=0, location=tmp_path_factory.mktemp("analyze") / "refs").location)


MOBILENET = ["--model", "torchvision:mobilenet_v3_small", "--weights", "none"]


def test_cli_writes_tables_and_figures(tmp_path, reference_manifest):
    runner = CliRunner()
    out = tmp_path / "run"
    result = runner.invoke(analyze, [
        "convergence", *MOBILENET, "--layer", "features.4", "--references", reference_manifest, "-r", "40", "-n", "1",
        "--m-grid", "K/2,K,2K", "--m-reference", "2K", "--m-evaluation", "K", "--n-grid", "1,2", "--n-reference", "4",
        "--eg-perturbations", "2", "--eg-steps", "2", "--out", str(out),
    ])
    assert result.exit_code == 0, result.output
    folder = out / "convergence"
    for name in ("m_sweep.parquet", "m_sweep_summary.parquet", "n_sweep.parquet", "n_sweep_summary.parquet",
                 "m_sweep.png", "n_sweep.png", "setting.json"):
        assert (folder / name).stat().st_size > 0, name
    m_table = pl.read_parquet(folder / "m_sweep.parquet")
    assert sorted(set(m_table["perturbations"])) == [20, 40, 80] and set(m_table["name"]) == {"chelsea"}
    assert (m_table["rank"] <= m_table["rank_bound"]).all()
    assert set(pl.read_parquet(folder / "n_sweep.parquet")["baseline"]) == {"gaussian", "dirac"}
    facts = json.loads((folder / "setting.json").read_text())
    assert facts["channels"] == 40 and facts["references"] == 40 and facts["setting"]["eg_steps"] == 2

    result = runner.invoke(analyze, ["saturation", *MOBILENET, "--layer", "features.12", "-n", "2", "--alphas", "5",
                                     "--out", str(out)])
    assert result.exit_code == 0, result.output
    table = pl.read_parquet(out / "saturation" / "saturation.parquet")
    assert table.height == 2 * 5 and set(table["name"]) == {"chelsea", "coffee"}
    assert (out / "saturation" / "saturation.png").stat().st_size > 0


def test_cli_refuses_a_pool_too_small_for_the_transition(tmp_path):
    result = CliRunner().invoke(analyze, ["convergence", *MOBILENET, "--layer", "features.4", "-r", "4", "-n", "1",
                                          "--out", str(tmp_path)])
    assert result.exit_code == 1
    errors = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert result.output.rstrip().endswith(errors[0]) and len(errors) == 1
    assert errors[0].startswith("Error: R = 4 reference images span at most 5 < K = 40")
    assert not (tmp_path / "convergence").exists()


def test_cli_rejects_a_malformed_grid(tmp_path):
    result = CliRunner().invoke(analyze, ["convergence", "--m-grid", "K,lots", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--m-grid" in result.output
