"""Critical-difference diagrams (Demšar 2006, §3.2.2 and Fig. 1): Nemenyi's test drawn over the mean ranks.

An axis of mean ranks runs from 1 (best, left) to k; each method is a tick at its mean rank with its name at the end
of an elbow line (the better half to the left, the rest to the right); a thick bar joins each maximal group of methods
whose mean ranks span less than CD (not separable at level α); a bar of length CD = q_α · √(k(k+1) / (6N)) is drawn
above the axis. Drawn on matplotlib's Agg canvas (no pyplot state), one PNG per metric.
"""

from __future__ import annotations

import io
import math
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from storage.files import atomic_write_bytes, resolve
from storage.statistics import FriedmanResult

__all__ = ["cliques", "draw", "write_cd_diagrams"]

_ROW = 0.3  # data units between two label rows
_BAR = 0.16  # data units between two group bars


def cliques(mean_ranks: Mapping[str, float], critical_difference: float) -> list[list[str]]:
    """The maximal groups (two or more methods, best first) whose mean ranks span less than ``critical_difference``.

    Each group starts at a method and takes every following one (in rank order) closer than CD to it; a group
    inside an earlier one is left out.
    """
    order = sorted(mean_ranks, key=lambda method: (mean_ranks[method], method))
    groups: list[list[str]] = []
    reach = 0
    for start, first in enumerate(order):
        end = start
        while end + 1 < len(order) and mean_ranks[order[end + 1]] - mean_ranks[first] < critical_difference:
            end += 1
        if end > start and end > reach:
            groups.append(order[start:end + 1])
            reach = end
    return groups


def _title(result: FriedmanResult) -> str:
    test = ("χ² needs 3 or more methods" if math.isnan(result.statistic)
            else f"Friedman χ² = {result.statistic:.2f}, p = {result.p_value:.2g}")
    return f"{result.metric}: {test}; N = {result.blocks} combinations, α = {result.alpha:g}"


def draw(result: FriedmanResult) -> Figure:
    """The critical-difference diagram of one metric's :class:`~storage.statistics.FriedmanResult` (a defined one)."""
    if not result.defined:
        raise ValueError(f"{result.metric}: no critical difference (fewer than 2 methods or 2 combinations)")
    ranks, cd = result.mean_ranks, result.critical_difference
    order = sorted(ranks, key=lambda method: (ranks[method], method))
    k = len(order)
    groups = cliques(ranks, cd)
    left, right = order[:(k + 1) // 2], order[(k + 1) // 2:][::-1]
    top = -(0.25 + _BAR * len(groups))
    bottom = top - _ROW * max(len(left), len(right))
    figure = Figure(figsize=(7.0, 1.4 + 0.9 * (-bottom)))
    FigureCanvasAgg(figure)
    axes = figure.add_axes((0.0, 0.0, 1.0, 1.0))
    axes.set_axis_off()
    axes.set_xlim(0.6, k + 0.4)
    axes.set_ylim(bottom - 0.1, 1.05)
    axes.hlines(0.0, 1, k, color="black", linewidth=1.2)
    for rank in range(1, k + 1):
        axes.vlines(rank, 0.0, 0.1, color="black", linewidth=1.0)
        axes.text(rank, 0.14, str(rank), ha="center", va="bottom", fontsize=9)
    axes.hlines(0.6, 1, 1 + cd, color="black", linewidth=1.5)
    axes.vlines([1, 1 + cd], 0.55, 0.65, color="black", linewidth=1.5)
    axes.text(1 + cd / 2, 0.68, f"CD = {cd:.2f}", ha="center", va="bottom", fontsize=9)
    for row, group in enumerate(groups):
        y = -(0.2 + _BAR * row)
        axes.hlines(y, ranks[group[0]] - 0.04, ranks[group[-1]] + 0.04, color="black", linewidth=4)
    for side, methods, end, align in (("left", left, 0.8, "right"), ("right", right, k + 0.2, "left")):
        for row, method in enumerate(methods):
            y, rank = top - _ROW * row, ranks[method]
            axes.plot([rank, rank, end], [0.0, y, y], color="black", linewidth=0.8)
            label = f"{method} ({rank:.2f})" if side == "left" else f"({rank:.2f}) {method}"
            axes.text(end + (-0.05 if side == "left" else 0.05), y, label, ha=align, va="center", fontsize=9)
    axes.set_title(_title(result), fontsize=9, y=1.0)
    return figure


def write_cd_diagrams(results: Iterable[FriedmanResult], directory: str | os.PathLike) -> list[Path]:
    """``cd_<metric>.png`` in ``directory`` for each defined result (each written atomically); their paths."""
    paths = []
    for result in results:
        if not result.defined:
            continue
        buffer = io.BytesIO()
        draw(result).savefig(buffer, format="png", dpi=150, bbox_inches="tight")
        path = Path(directory) / f"cd_{re.sub(r'[^A-Za-z0-9_.+-]', '_', result.metric)}.png"
        atomic_write_bytes(*resolve(path), buffer.getvalue())
        paths.append(path)
    return paths
