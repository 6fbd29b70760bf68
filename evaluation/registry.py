"""The metric registry: name → class, with direction, category and needs.

``create_metric("sparseness")`` builds a metric; ``metric_directions()`` gives what the rank
tables need (metric → ``higher``/``lower``). Names follow the paper's Tables 4 and 12.
"""

from __future__ import annotations

import difflib
from typing import Any, Literal, TypeVar

from evaluation.base import Metric

__all__ = ["register", "create_metric", "metric_names", "metric_class", "metric_directions", "UnknownMetricError",
           "CATEGORIES"]

CATEGORIES = ("faithfulness", "robustness", "complexity", "localization", "classification")
_REGISTRY: dict[str, type[Metric]] = {}
M = TypeVar("M", bound=type[Metric])


class UnknownMetricError(KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def register(cls: M) -> M:
    """Class decorator: add a :class:`Metric` subclass under its ``name``."""
    if cls.category not in CATEGORIES:
        raise ValueError(f"metric {cls.name!r}: category {cls.category!r} is not one of {CATEGORIES}")
    if cls.direction not in ("higher", "lower"):
        raise ValueError(f"metric {cls.name!r}: direction must be 'higher' or 'lower'")
    if cls.name in _REGISTRY:
        raise ValueError(f"metric {cls.name!r} is registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def metric_class(name: str) -> type[Metric]:
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        raise UnknownMetricError(f"unknown metric {name!r}; known: {', '.join(sorted(_REGISTRY))}"
                                 + (f" (did you mean {close[0]!r}?)" if close else ""))
    return _REGISTRY[name]


def create_metric(name: str, **params: Any) -> Metric:
    """An instance of metric ``name``; a parameter it does not take is an error naming it."""
    cls = metric_class(name)
    try:
        return cls(**params)
    except TypeError as err:
        raise TypeError(f"metric {name!r}: {err}") from err


def metric_names(category: str | None = None) -> list[str]:
    return sorted(n for n, c in _REGISTRY.items() if category is None or c.category == category)


def metric_directions() -> dict[str, Literal["higher", "lower"]]:
    return {name: cls.direction for name, cls in sorted(_REGISTRY.items())}
