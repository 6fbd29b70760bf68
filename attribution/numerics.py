"""Numerical helpers shared by the methods and the metrics."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["safe_divide"]


def safe_divide(numerator: Tensor, denominator: Tensor) -> Tensor:
    """``numerator / denominator`` where the denominator is non-zero and 0 where it is zero (broadcasting).

    For ratios that a definition leaves undefined or sets to 0 at a zero denominator: callers that
    leave it undefined mark those entries NaN with a reason.
    """
    nonzero = denominator != 0
    quotient = numerator / torch.where(nonzero, denominator, torch.ones_like(denominator))
    return torch.where(nonzero, quotient, torch.zeros_like(quotient))
