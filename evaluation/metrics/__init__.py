"""Metric implementations, registered on import."""

from evaluation.metrics import (  # noqa: F401
    classification,
    completeness,
    complexity,
    faithfulness,
    localization,
    robustness,
)
