"""Saliency metrics (plain torch, no Ray): a registry of the paper's metric suite.

Built so far: complexity (Complexity, Sparseness, Effective Complexity) and localisation
(Attribution Localisation, Top-K Intersection, Relevance Rank/Mass Accuracy, AUC). Faithfulness,
robustness and classification metrics are still to come (issue 4).
"""

from evaluation import metrics  # noqa: F401  (registers the metrics)
from evaluation.base import Metric
from evaluation.registry import (UnknownMetricError, create_metric, metric_class, metric_directions,
                                 metric_names)

__all__ = ["Metric", "create_metric", "metric_class", "metric_names", "metric_directions", "UnknownMetricError"]
