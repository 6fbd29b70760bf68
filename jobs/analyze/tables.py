"""Per-image result tables reduced to mean and spread per grid point."""

from __future__ import annotations

from collections.abc import Sequence

import polars as pl

__all__ = ["summarise"]


def summarise(table: pl.DataFrame, by: Sequence[str], columns: Sequence[str]) -> pl.DataFrame:
    """``<column>_mean`` and ``<column>_std`` of ``columns`` over the rows of each ``by`` group (sorted by ``by``),
    and ``rows`` per group. Infinite values (a singular ``M̂``'s condition number) stay infinite in the mean."""
    stats = [pl.len().alias("rows")]
    for column in columns:
        stats += [pl.col(column).mean().alias(f"{column}_mean"), pl.col(column).std().alias(f"{column}_std")]
    return table.group_by(list(by), maintain_order=True).agg(stats).sort(list(by))
