"""The appendix figures: Fig. 6 (the ``M`` sweep), Fig. 7 (the ``N`` sweep) and Figs. 9–12 (saturation).

Curves are means over images (and repeats) with a band of one standard deviation (two for saturation,
as App. C.1 draws them); Fig. 6 shades the rank-deficient regime ``M < K`` red and ``M ≥ K`` blue.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import NullLocator

from jobs.analyze.convergence import MSweep, NSweep
from jobs.analyze.saturation import SaturationCurves

__all__ = ["plot_m_sweep", "plot_n_sweep", "plot_saturation"]


def _band(ax: Axes, x: np.ndarray, summary: pl.DataFrame, column: str, label: str | None = None,
          spread: float = 1.0, **style: object) -> None:
    """``mean ± spread·std`` of ``column`` over ``x``, skipping non-finite points."""
    mean = summary[f"{column}_mean"].to_numpy().astype(float)
    std = np.nan_to_num(summary[f"{column}_std"].to_numpy().astype(float))
    keep = np.isfinite(mean)
    (line,) = ax.plot(x[keep], mean[keep], marker="o", markersize=3, label=label, **style)
    ax.fill_between(x[keep], (mean - spread * std)[keep], (mean + spread * std)[keep], color=line.get_color(),
                    alpha=0.2, linewidth=0)


def _grid_axis(ax: Axes, values: np.ndarray, label: str) -> None:
    """A log x axis ticked at the grid's values."""
    ax.set_xscale("log")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(values, [f"{v:g}" for v in values], fontsize=7)
    ax.set_xlabel(label)


def _log_if_positive(ax: Axes, summary: pl.DataFrame, column: str) -> None:
    """A log y axis, unless ``column`` has no positive mean (an exact estimator's zero error)."""
    if (summary[f"{column}_mean"].to_numpy() > 0).any():
        ax.set_yscale("log")


def _regimes(ax: Axes, budgets: np.ndarray, channels: int) -> None:
    ax.axvspan(budgets.min() * 0.9, channels, color="tab:red", alpha=0.07, linewidth=0)
    ax.axvspan(channels, budgets.max() * 1.1, color="tab:blue", alpha=0.07, linewidth=0)
    ax.axvline(channels, color="grey", linestyle=":", linewidth=1)
    _grid_axis(ax, budgets, "perturbations M")


def _save(fig: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_m_sweep(sweep: MSweep, path: str | Path, title: str) -> Path:
    """Fig. 6, panels (a)–(f): Frobenius error, weight cosine, heatmap SSIM, condition numbers with eq. 94,
    rank against ``min(M, K)`` and ``min(M, K, R + 1)``, surrogate infidelity."""
    summary = sweep.summary()
    m = summary["perturbations"].to_numpy().astype(float)
    k = sweep.channels
    fig = Figure(figsize=(13, 7.5))
    axes = fig.subplots(2, 3)
    (a, b, c), (d, e, f) = axes
    for ax in axes.flat:
        _regimes(ax, m, k)
    slope = sweep.slope()
    _band(a, m, summary, "frobenius_error", label=None if slope is None else f"fitted slope {slope:.2f}")
    a.plot(m, summary["frobenius_error_mean"][0] * np.sqrt(m[0] / m), "k--", linewidth=1, label="O(1/√M)")
    a.set(yscale="log", title="(a) ‖M̂ − M_ref‖_F / ‖M_ref‖_F")
    _band(b, m, summary, "weight_cosine")
    b.axhline(0.95, color="grey", linestyle="--", linewidth=1)
    b.set(title="(b) cos(α_M, α_∞)")
    _band(c, m, summary, "map_ssim")
    c.axhline(0.95, color="grey", linestyle="--", linewidth=1)
    c.set(title="(c) heatmap SSIM to the M_ref map")
    _band(d, m, summary, "condition_number", label="κ(M̂)")
    _band(d, m, summary, "covariance_condition_number", label="κ(Cov I)")
    _band(d, m, summary, "whitened_condition_number", label="κ(M_ref^-½ M̂ M_ref^-½)")
    rho = np.geomspace(max(m.min(), 1.05 * k), m.max(), 64) / k
    if rho.size and rho.max() > 1.05:
        d.plot(rho * k, ((np.sqrt(rho) + 1) / (np.sqrt(rho) - 1)) ** 2, "k--", linewidth=1, label="Marchenko–Pastur")
    d.set(yscale="log", title="(d) condition number")
    e.plot(m, summary["rank_mean"], "o-", markersize=3, label="numerical rank")
    e.plot(m, np.minimum(m, k), "k--", linewidth=1, label="min(M, K)")
    if sweep.pool is not None:
        e.plot(m, summary["rank_bound_mean"], "r:", linewidth=1.5, label=f"min(M, K, R + 1), R = {sweep.pool}")
    e.set(yscale="log", title="(e) rank(M̂)")
    _band(f, m, summary, "infidelity", label="α_M")
    f.plot(m, summary["reference_infidelity_mean"], "k--", linewidth=1, label="α_∞")
    f.set(yscale="log", title=f"(f) surrogate infidelity, M_eval = {sweep.evaluation_perturbations}")
    for ax in (a, d, e, f):
        ax.legend(fontsize=7)
    fig.suptitle(f"{title} — K = {k}, M_ref = {sweep.reference_perturbations}, route {sweep.route}", fontsize=10)
    return _save(fig, Path(path))


def plot_n_sweep(sweep: NSweep, path: str | Path, title: str) -> Path:
    """Fig. 7, panels (a)–(f): attribution error, weight cosine, heatmap SSIM, completeness gap, infidelity and
    ``‖α‖₂`` in ``N``; the Integrated-Gradients point (``N = 1``, ``D = δ₀``, Remark B.4) is the square."""
    summary = sweep.summary()
    eg = summary.filter(pl.col("baseline") == "gaussian")
    ig = summary.filter(pl.col("baseline") == "dirac")
    n = eg["baselines"].to_numpy().astype(float)
    fig = Figure(figsize=(13, 7.5))
    axes = fig.subplots(2, 3)
    slope = sweep.slope()
    panels = [
        ("attribution_error", "(a) ‖⟨I, φ^EG_N⟩ − ⟨I, φ^EG_ref⟩‖ / ‖⟨I, φ^EG_ref⟩‖", True),
        ("weight_cosine", "(b) cos(α_N, α_ref)", False),
        ("map_ssim", "(c) heatmap SSIM to the N_ref map", False),
        ("completeness_gap", "(d) completeness gap of φ^EG", True),
        ("infidelity", "(e) infidelity (eq. 14)", False),
        ("weight_norm", "(f) ‖α‖₂", False),
    ]
    for ax, (column, label, log) in zip(axes.flat, panels):
        _band(ax, n, eg, column, label=f"φ^EG, σ = {sweep.sigma:g}")
        if ig.height:
            ax.plot([1.0], ig[f"{column}_mean"].to_numpy(), "s", color="tab:red", label="φ^IG (N = 1, D = δ₀)")
        ax.set_title(label)
        _grid_axis(ax, n, "baselines N")
        if log:
            _log_if_positive(ax, summary, column)
    axes[1, 1].plot(n, eg["closed_form_infidelity_mean"], "k--", linewidth=1, label="closed form (exact Δ)")
    axes[1, 1].legend(fontsize=7)
    if slope is not None:
        axes[0, 0].plot(n, eg["attribution_error_mean"][0] * np.sqrt(n[0] / n), "k--", linewidth=1,
                        label=f"O(1/√N); fitted slope {slope:.2f}")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle(f"{title} — K = {sweep.channels}, M = {sweep.perturbations} (rank {sweep.rank}), T = {sweep.steps}, "
                 f"N_ref = {sweep.reference_baselines}, route {sweep.route}", fontsize=10)
    return _save(fig, Path(path))


def plot_saturation(curves: SaturationCurves, path: str | Path, title: str) -> Path:
    """Figs. 9–12 of App. C.1: target-layer cosine, pre-softmax and post-softmax top-label score along ``α·x``,
    mean ± 2 std over images."""
    summary = curves.summary()
    alpha = summary["alpha"].to_numpy()
    fig = Figure(figsize=(13, 3.8))
    axes = fig.subplots(1, 3)
    panels = [("cosine", f"cos(A(α·x), A(x)) at {curves.layer}"), ("logit", "pre-softmax top-label score"),
              ("probability", "post-softmax top-label score")]
    for ax, (column, label) in zip(axes, panels):
        _band(ax, alpha, summary, column, spread=2.0)
        ax.set(xlabel="scaling factor α", title=label, xlim=(0, 1))
    fig.suptitle(f"{title} — {summary['rows'][0]} images, mean ± 2 std", fontsize=10)
    return _save(fig, Path(path))
