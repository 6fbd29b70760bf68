"""Checks of constructor parameters; each error names the parameter and the value it got.

``bool`` is not accepted where a number is expected (``True`` is an ``int`` to Python).
"""

from __future__ import annotations

import math
from numbers import Integral, Real

__all__ = ["integer", "non_negative", "number", "positive"]


def integer(name: str, value: object, low: int | None = None, *, optional: bool = False) -> int | None:
    """``value`` as an ``int`` (``≥ low`` when given); ``None`` passes when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, Integral) or (low is not None and value < low):
        bound = f" ≥ {low}" if low is not None else ""
        raise ValueError(f"{name} must be an integer{bound}; got {value!r}")
    return int(value)


def number(name: str, value: object, low: float | None = None, *, strict: bool = False) -> float:
    """``value`` as a finite ``float``, ``> low`` (``strict``) or ``≥ low`` when ``low`` is given."""
    ok = isinstance(value, Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if not ok:
        bound = "" if low is None else f" {'>' if strict else '≥'} {low:g}"
        raise ValueError(f"{name} must be a finite number{bound}; got {value!r}")
    return float(value)


def positive(name: str, value: object) -> float:
    """``value`` as a finite ``float > 0``."""
    return number(name, value, 0, strict=True)


def non_negative(name: str, value: object) -> float:
    """``value`` as a finite ``float ≥ 0``."""
    return number(name, value, 0)
