"""The sweep grids of the analyses as the command line writes them.

* sample budgets ``M`` in multiples of the channel count ``K`` (App. B.2 states them as ``M = ρK``):
  ``"K/8,K/4,K/2,K,2K,4K"``, or plain counts ``"160,320"``, or a mix;
* baseline counts ``N`` of φ^EG (App. B.3): ``"1,2,5,10,15,20,50,100"``;
* scaling factors ``α`` of App. C.1: a count of evenly spaced values in ``[0, 1]`` (``"25"``), an explicit
  list (``"0,0.25,0.5,1"``) or the paper's draw ``α_i ~ U(0, 1)`` (``"random:25"``). ``α = 1``, the
  image itself and the reference of the cosine, is always on the grid.
"""

from __future__ import annotations

import re

import numpy as np

__all__ = ["check_budgets", "parse_alphas", "parse_budget", "parse_budgets", "parse_counts"]

_MULTIPLE = re.compile(r"^(?P<num>\d+(?:\.\d+)?)?\s*K\s*(?:/\s*(?P<den>\d+(?:\.\d+)?))?$", re.IGNORECASE)


def parse_budget(term: str, channels: int) -> int:
    """One budget: ``"2K"``, ``"K/8"``, ``"1.5K"``, ``"3K/2"`` (multiples of ``channels``) or an integer ≥ 1."""
    text = term.strip()
    match = _MULTIPLE.match(text)
    if match:
        value = float(match["num"] or 1) * channels / float(match["den"] or 1)
    elif text.isdigit():
        value = float(text)
    else:
        raise ValueError(f"budget {term!r}: write an integer or a multiple of K (2K, K/8, 1.5K)")
    if value < 1:
        raise ValueError(f"budget {term!r} is {value:g} < 1 for K = {channels}")
    return round(value)


def check_budgets(spec: str) -> None:
    """Raise ``ValueError`` unless every term of ``spec`` is an integer or a multiple of ``K`` (before ``K`` is known)."""
    terms = [t.strip() for t in spec.split(",") if t.strip()]
    bad = [t for t in terms if not (t.isdigit() or _MULTIPLE.match(t))]
    if not terms or bad:
        raise ValueError(f"{spec!r}: write integers or multiples of K (2K, K/8, 1.5K), comma-separated")


def parse_budgets(spec: str, channels: int) -> tuple[int, ...]:
    """A comma-separated list of budgets (:func:`parse_budget`), sorted, duplicates dropped."""
    terms = [t for t in spec.split(",") if t.strip()]
    if not terms:
        raise ValueError("empty budget list")
    return tuple(sorted({parse_budget(t, channels) for t in terms}))


def parse_counts(spec: str) -> tuple[int, ...]:
    """A comma-separated list of positive integers, sorted, duplicates dropped."""
    try:
        values = sorted({int(t) for t in spec.split(",") if t.strip()})
    except ValueError as err:
        raise ValueError(f"{spec!r}: write comma-separated integers") from err
    if not values or values[0] < 1:
        raise ValueError(f"{spec!r}: give at least one count, each ≥ 1")
    return tuple(values)


def parse_alphas(spec: str, seed: int = 0) -> np.ndarray:
    """The scaling factors ``α`` of App. C.1 (sorted, in ``[0, 1]``, ending at ``1``)."""
    text = spec.strip().lower()
    if text.startswith("random:"):
        count = parse_counts(text.removeprefix("random:"))[0]
        values = np.random.default_rng(seed).uniform(0.0, 1.0, count)
    elif text.isdigit():
        count = int(text)
        if count < 2:
            raise ValueError(f"--alphas {spec!r}: an evenly spaced grid needs at least 2 values")
        values = np.linspace(0.0, 1.0, count)
    else:
        try:
            values = np.array([float(t) for t in text.split(",") if t.strip()])
        except ValueError as err:
            raise ValueError(f"--alphas {spec!r}: a count, a comma-separated list or random:<count>") from err
        if values.size == 0 or (values < 0).any() or (values > 1).any():
            raise ValueError(f"--alphas {spec!r}: every α must lie in [0, 1]")
    return np.unique(np.append(values, 1.0))
