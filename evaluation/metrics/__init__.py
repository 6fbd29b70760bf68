"""Metric implementations, registered on import."""

from evaluation.metrics import (  # noqa: F401
    adcc,
    aopc,
    boxes,
    classification,
    completeness,
    complexity,
    faithfulness,
    localization,
    pic,
    robustness,
    subset_correlation,
)
