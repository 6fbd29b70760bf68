"""Metric implementations, registered on import."""

from evaluation.metrics import classification, completeness, complexity, faithfulness, localization, robustness  # noqa: F401
