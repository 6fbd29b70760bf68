"""Checks of constructor parameters; each error names the parameter and the value it got.

``bool`` is not accepted where a number is expected (``True`` is an ``int`` to Python).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Integral, Real

__all__ = ["check_black", "choice", "integer", "non_negative", "number", "positive"]


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


def choice(name: str, value: object, allowed: Sequence[str]) -> str:
    """``value`` if it is one of ``allowed``, else a ``ValueError`` naming the parameter and the choices."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}; got {value!r}")
    return str(value)


def check_black(black: Sequence[float] | None) -> tuple[float, ...] | None:
    """The model's black image, one finite number per channel, or ``None``."""
    if black is None:
        return None
    ok = isinstance(black, Sequence) and not isinstance(black, str) and len(black) > 0
    if not ok or not all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in black):
        raise ValueError(f"black must be one finite number per image channel (−mean/std); got {black!r}")
    return tuple(float(v) for v in black)
