"""Saliency methods: one registry, one capture mechanism (:mod:`attribution.split`)."""

from attribution.methods.base import CAMMethod, WeightedCAM
from attribution.methods.expected import ExpectedGradCAM, Regression, cam_infidelity
from attribution.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from attribution.methods.input_paths import IntegratedGradCAM, SmoothGradCAMPlusPlus
from attribution.methods.masking import AblationCAM, FakeCAM, OptiCAM, ScoreCAM
from attribution.methods.registry import UnknownMethodError, create_method, method_names, register

__all__ = [
    "CAMMethod",
    "WeightedCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "SmoothGradCAMPlusPlus",
    "IntegratedGradCAM",
    "HiResCAM",
    "XGradCAM",
    "LayerCAM",
    "ScoreCAM",
    "AblationCAM",
    "OptiCAM",
    "FakeCAM",
    "ExpectedGradCAM",
    "Regression",
    "cam_infidelity",
    "create_method",
    "method_names",
    "register",
    "UnknownMethodError",
]
