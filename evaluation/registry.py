"""The metric registry: name → class, with direction, category and needs.

A metric class declares ``name``, ``direction`` and ``category`` and is added with ``@register``
(the one registry convention of :class:`attribution.registry.Registry`, shared with the methods).
``create_metric("sparseness")`` builds a metric; ``metric_directions()`` gives what the rank
tables need (metric → ``higher``/``lower``). Names follow the paper's Tables 4 and 12.
"""

from __future__ import annotations

from typing import Any, Literal, TypeVar

from attribution.registry import Registry, UnknownNameError
from evaluation.base import Metric

__all__ = ["CATEGORIES", "METRICS", "UnknownMetricError", "create_metric", "metric_class", "metric_directions",
           "metric_names", "register"]

CATEGORIES = ("faithfulness", "robustness", "complexity", "localization", "classification")
M = TypeVar("M", bound=type[Metric])


class UnknownMetricError(UnknownNameError):
    """No metric is registered under this name."""


def _check(cls: type[Metric]) -> None:
    if cls.category not in CATEGORIES:
        raise ValueError(f"metric {cls.name!r}: category {cls.category!r} is not one of {CATEGORIES}")
    if cls.direction not in ("higher", "lower"):
        raise ValueError(f"metric {cls.name!r}: direction must be 'higher' or 'lower'")


METRICS: Registry[Metric] = Registry("metric", error=UnknownMetricError, validate=_check)


def register(cls: M) -> M:
    """Class decorator: add a :class:`Metric` subclass under its class attribute ``name``."""
    return METRICS.register(cls)


def metric_class(name: str) -> type[Metric]:
    return METRICS.get(name)


def create_metric(name: str, **params: Any) -> Metric:
    """An instance of metric ``name``; a parameter it does not take is an error naming it."""
    return METRICS.create(name, **params)


def metric_names(category: str | None = None) -> list[str]:
    return sorted(n for n in METRICS.names() if category is None or METRICS.get(n).category == category)


def metric_directions() -> dict[str, Literal["higher", "lower"]]:
    return {name: METRICS.get(name).direction for name in metric_names()}
