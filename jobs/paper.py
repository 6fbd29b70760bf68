"""The values each paper-reproducing preset's tables report, shipped beside the preset (``presets/paper/<name>.csv``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import polars as pl

from storage.paper import read_paper_values

__all__ = ["paper_values", "presets_with_paper_values"]


def presets_with_paper_values() -> list[str]:
    """The presets that ship the values their paper reports."""
    folder = resources.files("jobs.presets").joinpath("paper")
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".csv"))


def paper_values(preset: str) -> tuple[pl.DataFrame, str] | None:
    """The reported values of ``preset``'s tables and the file they come from, or ``None`` if it ships none."""
    if preset not in presets_with_paper_values():
        return None
    path = Path(str(resources.files("jobs.presets").joinpath("paper", f"{preset}.csv")))
    return read_paper_values(path), f"jobs/presets/paper/{path.name}"
