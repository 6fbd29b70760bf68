"""Saliency metrics (plain torch, no Ray): a registry of the paper's metric suite.

Faithfulness (Faithfulness Estimate, Pixel Flipping, Insertion, Deletion, Insertion−Deletion, IROF,
Sufficiency, Infidelity, and the paper's CAM-level infidelity and completeness gap), robustness
(Local Lipschitz, Max-/Avg-Sensitivity, RIS, ROS), complexity, localisation and classification
(Opti-CAM's AD/AI/AG). ``create_metric(name)(maps, **inputs)`` — or ``(Batch(maps, **inputs))``,
shared by the metrics of the same maps — gives one float64 per sample.
"""

from evaluation import metrics  # noqa: F401  (registers the metrics)
from evaluation.base import Batch, Metric
from evaluation.registry import UnknownMetricError, create_metric, metric_class, metric_directions, metric_names

__all__ = ["Batch", "Metric", "create_metric", "metric_class", "metric_names", "metric_directions",
           "UnknownMetricError"]
