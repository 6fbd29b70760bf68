"""Saliency methods over one target layer, and the model + target-layer registry.

A plain torch library (no Ray): ``create_method(name)(model, layer, images, targets)`` gives raw
coarse maps ``(B, U, V)`` on the images' device; :mod:`attribution.postprocess` turns them into
display maps.
"""

from attribution.methods import CAMMethod, create_method, method_names
from attribution.models import load_model
from attribution.split import split_at

__all__ = ["CAMMethod", "create_method", "load_model", "method_names", "split_at"]
