"""What an analysis writes into the run directory: Parquet tables, the figures and ``setting.json``.

``<out>/convergence/``: ``m_sweep.parquet`` (one row per repeat, ``M`` and image), ``m_sweep_summary.parquet``
(mean and std per ``M``), ``n_sweep.parquet`` and ``n_sweep_summary.parquet`` (per ``N``), ``m_sweep.png``
(Fig. 6), ``n_sweep.png`` (Fig. 7) and ``setting.json`` (model, ``K``, ``R``, grids, fitted slopes, timings).
``<out>/saturation/``: ``saturation.parquet`` (one row per image and ``α``), ``saturation_summary.parquet``,
``saturation.png`` (Figs. 9–12) and ``setting.json``.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from pathlib import Path

import polars as pl

from jobs.analyze.figures import plot_m_sweep, plot_n_sweep, plot_saturation
from jobs.analyze.run import Convergence, Saturation

__all__ = ["write_convergence", "write_saturation"]

AFFINE_NOTE = ("g is affine in z at this layer (global average pool and a linear classifier): the Expected-Gradients "
               "route is exact for every N and T, so the N sweep is flat up to rounding")


def write_convergence(result: Convergence, out: str | os.PathLike) -> list[Path]:
    """Write the App. B tables and figures under ``<out>/convergence``; return the files written."""
    folder = Path(out) / "convergence"
    folder.mkdir(parents=True, exist_ok=True)
    m, n, setting = result.m, result.n, result.setting
    title = f"{setting.model.name} at {result.layer}"
    if m.pool is not None:
        title += f", R = {m.pool}"
    files = [
        _parquet(_named(m.table, result.names), folder / "m_sweep.parquet"),
        _parquet(m.summary(), folder / "m_sweep_summary.parquet"),
        _parquet(_named(n.table, result.names), folder / "n_sweep.parquet"),
        _parquet(n.summary(), folder / "n_sweep_summary.parquet"),
        plot_m_sweep(m, folder / "m_sweep.png", title),
        plot_n_sweep(n, folder / "n_sweep.png", title),
    ]
    facts = {
        "setting": asdict(setting),
        "layer": result.layer,
        "weights": result.weights,
        "device": result.device,
        "images": list(result.names),
        "channels": m.channels,
        "references": m.pool,
        "route": m.route,
        "m_grid": sorted(set(m.table["perturbations"].to_list())),
        "m_reference": m.reference_perturbations,
        "m_evaluation": m.evaluation_perturbations,
        "n_sweep_rank": n.rank,
        "fits": {"frobenius_error_slope": m.slope(), "attribution_error_slope": n.slope()},
        "seconds": result.seconds,
        "notes": [AFFINE_NOTE] if m.route == "affine" else [],
    }
    files.append(_json(facts, folder / "setting.json"))
    return files


def write_saturation(result: Saturation, out: str | os.PathLike) -> list[Path]:
    """Write the App. C.1 table and figure under ``<out>/saturation``; return the files written."""
    folder = Path(out) / "saturation"
    folder.mkdir(parents=True, exist_ok=True)
    curves, setting = result.curves, result.setting
    files = [
        _parquet(_named(curves.table, result.names), folder / "saturation.parquet"),
        _parquet(curves.summary(), folder / "saturation_summary.parquet"),
        plot_saturation(curves, folder / "saturation.png", f"{setting.model.name} at {result.layer}"),
    ]
    facts = {"setting": asdict(setting), "layer": result.layer, "weights": result.weights, "device": result.device,
             "images": list(result.names), "alphas": list(curves.alphas), "seconds": result.seconds}
    files.append(_json(facts, folder / "setting.json"))
    return files


def _named(table: pl.DataFrame, names: tuple[str, ...]) -> pl.DataFrame:
    """The table with each row's image name beside its index."""
    return table.with_columns(pl.Series("name", names).gather(table["image"]))


def _parquet(table: pl.DataFrame, path: Path) -> Path:
    table.write_parquet(path)
    return path


def _json(facts: dict, path: Path) -> Path:
    path.write_text(json.dumps(facts, indent=2, allow_nan=True) + "\n")
    return path
