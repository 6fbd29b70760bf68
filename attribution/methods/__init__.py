"""Saliency methods: one registry, one capture mechanism (:mod:`attribution.split`)."""

from attribution.methods.base import Attribution, BoundMethod, CAMMethod, WeightedCAM
from attribution.methods.expected import ExpectedGradCAM, Regression, cam_infidelity
from attribution.methods.gradient import GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, XGradCAM
from attribution.methods.input_paths import IntegratedGradCAM, SmoothGradCAMPlusPlus
from attribution.methods.masking import AblationCAM, ScoreCAM
from attribution.methods.opticam import FakeCAM, OptiCAM
from attribution.methods.path_methods import IntegratedGradients as IntegratedGradients
from attribution.methods.registry import UnknownMethodError, create_method, method_names, register
from attribution.methods.samp import SAMP as SAMP

__all__ = [
    "AblationCAM",
    "Attribution",
    "BoundMethod",
    "CAMMethod",
    "ExpectedGradCAM",
    "FakeCAM",
    "GradCAM",
    "GradCAMPlusPlus",
    "HiResCAM",
    "IntegratedGradCAM",
    "LayerCAM",
    "OptiCAM",
    "Regression",
    "ScoreCAM",
    "SmoothGradCAMPlusPlus",
    "UnknownMethodError",
    "WeightedCAM",
    "XGradCAM",
    "cam_infidelity",
    "create_method",
    "method_names",
    "register",
]
