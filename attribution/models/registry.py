"""Model registry: per architecture, its constructor, weights, preprocessing, CAM target layer,
channel count ``K`` and feature layout (the reshape of token models), as timm's model configs.

The paper's architectures (Table 11 and main text) are registered by name, and Opti-CAM's (seed 003
App. A): VGG16-BN at ``features.42`` (the ReLU of block 5 conv 3, the last before the final max pool),
ResNet-50 at ``layer4`` and timm's ViT-B/16 and DeiT-B/16 (``vit_base_patch16_224``,
``deit_base_patch16_224``, the weights the paper uses) at the layer norm before self-attention in block 12
(timm's ``blocks.11.norm1``, which torchvision's ``vit_b_16`` calls ``encoder.layers.encoder_layer_11.ln_1``).
Any other torchvision or timm classifier is reachable as ``"torchvision:<name>"`` or ``"timm:<name>"``
with a user-given target layer. SAMP's five-layer CNNs (seed 002 App. A.3, :mod:`attribution.models.samp_cnn`)
are ``samp_cnn_mnist`` and ``samp_cnn_cifar10``, camgrid's own, with no pretrained weights: ``camgrid train``
makes their checkpoints.
"""

from __future__ import annotations

import difflib
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch
import torchvision
from torch import nn

from attribution.layout import FeatureLayout, SpatialLayout, TokenLayout
from attribution.models.preprocessing import Preprocessing
from attribution.models.samp_cnn import samp_cnn_cifar10, samp_cnn_mnist
from attribution.models.weights import (
    WeightsUnavailableError,
    checkpoint_path,
    efficientnet_lite_state_dict,
    load_by_position,
    load_checkpoint,
)

__all__ = ["ARCHITECTURES", "CAMGRID_MODELS", "Architecture", "LoadedModel", "architecture", "check_weights",
           "imagenet_categories", "load_model", "predicts_imagenet"]


CAMGRID_MODELS: dict[str, tuple[Callable[[int], nn.Module], Preprocessing]] = {
    # seed 002 A.3: pixels in [0, 1], no normalisation given (mean 0, std 1); MNIST grayscale at 28, CIFAR-10 RGB at 32
    "samp_cnn_mnist": (samp_cnn_mnist, Preprocessing(28, 28, (0.0,), (1.0,), channels=1)),
    "samp_cnn_cifar10": (samp_cnn_cifar10, Preprocessing(32, 32, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))),
}


@dataclass(frozen=True)
class Architecture:
    """One registry entry.

    ``source`` is ``"torchvision"``, ``"timm"`` or ``"camgrid"`` (this package's models, :data:`CAMGRID_MODELS`);
    ``builder_name`` the constructor's name there; ``pretrained`` the default pretrained weights (a torchvision
    weights enum name, ``"timm"``, ``"package"`` for the offline EfficientNet-Lite weights, or ``""``: none, a
    checkpoint is required). ``channels_last``: the model's weights are
    stored channels-last (NHWC), where that is faster for both its forward and backward passes
    (``benchmarks/bench_memory_format.py``); the values computed are the same to float rounding.
    """

    name: str
    source: str
    builder_name: str
    target_layer: str
    channels: int | None
    pretrained: str
    layout: FeatureLayout | None = field(default_factory=SpatialLayout)  # None: inferred
    builder_kwargs: tuple[tuple[str, object], ...] = ()
    channels_last: bool = False

    def build(self, num_classes: int) -> nn.Module:
        kwargs = dict(self.builder_kwargs)
        if self.source == "camgrid":
            return CAMGRID_MODELS[self.builder_name][0](num_classes)
        if self.source == "torchvision":
            return torchvision.models.get_model(self.builder_name, weights=None, num_classes=num_classes, **kwargs)
        import timm

        return timm.create_model(self.builder_name, pretrained=False, num_classes=num_classes, **kwargs)

    def preprocessing(self) -> Preprocessing:
        if self.source == "camgrid":
            return CAMGRID_MODELS[self.builder_name][1]
        if self.source == "torchvision":
            enum = self.pretrained if self.pretrained.startswith("IMAGENET") else "DEFAULT"
            return Preprocessing.from_torchvision(torchvision.models.get_model_weights(self.builder_name)[enum])
        import timm

        return Preprocessing.from_timm(timm.models.get_pretrained_cfg(self.builder_name))


def _tv(name: str, layer: str, k: int, weights: str = "IMAGENET1K_V1", **kw: object) -> Architecture:
    return Architecture(name, "torchvision", name, layer, k, weights, builder_kwargs=tuple(kw.items()))


def _lite(variant: int) -> Architecture:
    return Architecture(f"efficientnet_lite{variant}", "timm", f"tf_efficientnet_lite{variant}", "bn2", 1280, "package",
                        channels_last=True)


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in [
        _tv("vgg16", "features.29", 512),
        _tv("vgg16_bn", "features.42", 512),
        _tv("alexnet", "features.11", 256),
        replace(_tv("resnet18", "layer4", 512), channels_last=True),
        replace(_tv("resnet50", "layer4", 2048), channels_last=True),
        _tv("densenet121", "features.norm5", 1024),
        _tv("efficientnet_b0", "features.8", 1280),
        _tv("inception_v3", "Mixed_7c", 2048, init_weights=False, aux_logits=False),
        _tv("convnext_tiny", "features.7", 768),
        replace(
            _tv("vit_b_16", "encoder.layers.encoder_layer_11.ln_1", 768),
            layout=TokenLayout(prefix=1, grid=(14, 14)),
        ),
        Architecture("vit_base_patch16_224", "timm", "vit_base_patch16_224", "blocks.11.norm1", 768, "timm",
                     layout=TokenLayout(prefix=1, grid=(14, 14))),
        Architecture("deit_base_patch16_224", "timm", "deit_base_patch16_224", "blocks.11.norm1", 768, "timm",
                     layout=TokenLayout(prefix=1, grid=(14, 14))),
        _lite(0),
        _lite(1),
        _lite(2),
        Architecture("samp_cnn_mnist", "camgrid", "samp_cnn_mnist", "relu5", 2592, ""),
        Architecture("samp_cnn_cifar10", "camgrid", "samp_cnn_cifar10", "relu5", 4608, ""),
    ]
}
DEFAULT_ARCHITECTURE = "efficientnet_lite0"


def architecture(name: str, layer: str | None = None) -> Architecture:
    """The registry entry for ``name``, or an ad-hoc one for ``torchvision:``/``timm:`` names."""
    if name in ARCHITECTURES:
        entry = ARCHITECTURES[name]
        return entry if layer in (None, entry.target_layer) else replace(entry, target_layer=layer, channels=None)
    source, _, builder = name.partition(":")
    if source in ("torchvision", "timm") and builder:
        if layer is None:
            raise ValueError(f"model {name!r} is not in the registry: give its target layer (layer=...)")
        _check_exists(source, builder)
        pretrained = "DEFAULT" if source == "torchvision" else "timm"
        return Architecture(name, source, builder, layer, None, pretrained, layout=None)
    close = difflib.get_close_matches(name, ARCHITECTURES, n=3)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(
        f"unknown architecture {name!r}.{hint} Registered: {', '.join(ARCHITECTURES)}; "
        "or use 'torchvision:<name>' / 'timm:<name>' with a target layer"
    )


def _check_exists(source: str, builder: str) -> None:
    if source == "torchvision":
        known = torchvision.models.list_models()
    else:
        import timm

        known = timm.list_models()
    if builder not in known:
        close = difflib.get_close_matches(builder, known, n=3)
        raise ValueError(f"{source} has no model {builder!r}" + (f"; did you mean {close}?" if close else ""))


@dataclass
class LoadedModel:
    """A model ready to explain: eval mode, on its device, with its registry entry."""

    model: nn.Module
    spec: Architecture
    preprocessing: Preprocessing
    weights: str

    @property
    def layer(self) -> str:
        return self.spec.target_layer

    @property
    def layout(self) -> FeatureLayout | None:
        return self.spec.layout


def load_model(
    name: str,
    weights: str = "pretrained",
    *,
    layer: str | None = None,
    num_classes: int = 1000,
    device: str | torch.device = "cpu",
) -> LoadedModel:
    """Build ``name`` with ``weights`` and return it in eval mode on ``device``.

    ``weights``: ``"pretrained"`` (the entry's default: a torchvision/timm download, or the
    offline package weights for EfficientNet-Lite), ``"none"`` (random init),
    ``"torchvision:<ENUM>"`` (e.g. ``torchvision:IMAGENET1K_V2``), ``"timm"``, ``"package"``,
    or a local checkpoint (``"file:<path>"`` or a path).
    """
    spec = architecture(name, layer)
    source = spec.pretrained if weights == "pretrained" else weights
    kind = _weights_kind(spec, source, weights)
    if kind == "none":
        model = spec.build(num_classes)
    elif kind == "package":
        model = _package_weights(spec, num_classes)
    elif kind == "file":
        model = load_checkpoint(spec.build(num_classes), checkpoint_path(source))
    elif kind == "torchvision":
        model = _torchvision_weights(spec, source.removeprefix("torchvision:"), num_classes)
    else:
        model = _timm_weights(spec, source.removeprefix("timm").lstrip(":"), num_classes)
    model = model.eval().to(device)
    if spec.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return LoadedModel(model, spec, spec.preprocessing(), source)


def check_weights(name: str, weights: str, num_classes: int) -> None:
    """Raise the ``ValueError`` :func:`load_model` would raise about ``weights`` for ``name`` — weights that do not
    apply, an unknown torchvision enum or timm tag, a class count they do not have — without loading anything."""
    spec = architecture(name)
    source = spec.pretrained if weights == "pretrained" else weights
    kind = _weights_kind(spec, source, weights)
    if kind == "package":
        _check_package(spec, num_classes)
    elif kind == "torchvision":
        _torchvision_enum(spec, source.removeprefix("torchvision:"), num_classes)
    elif kind == "timm":
        import timm

        tag = source.removeprefix("timm").lstrip(":")
        if tag and f"{spec.builder_name}.{tag}" not in timm.list_pretrained(f"{spec.builder_name}.*"):
            known = ", ".join(t.split(".", 1)[1] for t in timm.list_pretrained(f"{spec.builder_name}.*")) or "none"
            raise ValueError(f"timm has no pretrained tag {tag!r} for {spec.builder_name} (tags: {known})")


def _weights_kind(spec: Architecture, source: str, weights: str) -> str:
    """Which loader ``source`` takes: none, package, file, torchvision or timm."""
    if source in ("none", "package"):
        return source
    if checkpoint_path(source) is not None:
        return "file"
    if spec.source == "torchvision" and (source.startswith(("torchvision:", "IMAGENET")) or source == "DEFAULT"):
        return "torchvision"
    if spec.source == "timm" and source.startswith("timm"):
        return "timm"
    if spec.source == "camgrid":
        raise ValueError(f"{spec.name} has no pretrained weights ({weights!r}): train a checkpoint with "
                         f"`camgrid train {spec.name} <train manifest> --out <file>.pt` and pass "
                         "weights='file:<file>.pt'")
    raise ValueError(f"weights {weights!r} do not apply to {spec.source} model {spec.name!r}")


def _torchvision_enum(spec: Architecture, enum: str, num_classes: int) -> Any:
    """The torchvision weights enum entry ``enum`` of ``spec``, checked against ``num_classes``."""
    try:
        tv_weights = torchvision.models.get_model_weights(spec.builder_name)[enum]
    except KeyError as err:
        raise ValueError(f"torchvision has no weights {enum!r} for {spec.builder_name}") from err
    classes = len(tv_weights.meta["categories"])
    if num_classes != classes:
        raise ValueError(
            f"{spec.name} weights {enum} have {classes} classes, not {num_classes}; "
            "load a fine-tuned checkpoint with weights='file:<path>'"
        )
    return tv_weights


def _torchvision_weights(spec: Architecture, enum: str, num_classes: int) -> nn.Module:
    tv_weights = _torchvision_enum(spec, enum, num_classes)
    kwargs = dict(spec.builder_kwargs)
    kwargs.pop("init_weights", None)
    try:
        return torchvision.models.get_model(spec.builder_name, weights=tv_weights, **kwargs)
    except (urllib.error.URLError, OSError) as err:
        raise WeightsUnavailableError(
            f"could not download torchvision weights {spec.builder_name}/{enum} ({err}); on an offline "
            f"machine put the file in $TORCH_HOME/hub/checkpoints or pass weights='file:<path>'"
        ) from err


def _timm_weights(spec: Architecture, tag: str, num_classes: int) -> nn.Module:
    import timm

    name = f"{spec.builder_name}.{tag}" if tag else spec.builder_name
    try:
        return timm.create_model(name, pretrained=True, num_classes=num_classes, **dict(spec.builder_kwargs))
    except (OSError, RuntimeError, ValueError) as err:
        raise WeightsUnavailableError(
            f"could not obtain timm weights for {name} ({type(err).__name__}: {err}); on an offline "
            "machine pass weights='file:<path>' with a local checkpoint"
        ) from err


def _check_package(spec: Architecture, num_classes: int) -> None:
    if not spec.builder_name.startswith("tf_efficientnet_lite") or spec.builder_name[-1] not in "012":
        raise ValueError(f"no packaged offline weights for {spec.name}; packaged: efficientnet_lite0/1/2")
    if num_classes != 1000:
        raise ValueError("the packaged EfficientNet-Lite weights are ImageNet (1000 classes)")


def _package_weights(spec: Architecture, num_classes: int) -> nn.Module:
    _check_package(spec, num_classes)
    variant = int(spec.builder_name[-1])
    return load_by_position(spec.build(num_classes), efficientnet_lite_state_dict(variant), f"efficientnet-lite{variant} package")


def predicts_imagenet(weights: str) -> bool:
    """Whether ``weights`` (as :func:`load_model` takes them) are pretrained ImageNet weights, whose model
    predicts ImageNet's 1000 classes; a checkpoint or ``"none"`` does not say."""
    return weights in ("pretrained", "package", "DEFAULT") or weights.startswith(("torchvision:", "timm", "IMAGENET"))


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names, in label order (from torchvision's weight metadata, offline)."""
    return list(torchvision.models.ResNet50_Weights.IMAGENET1K_V1.meta["categories"])
