"""Metric implementations, registered on import."""

from evaluation.metrics import complexity, localization  # noqa: F401
