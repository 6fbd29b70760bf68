"""SAMP's five-layer CNNs (seed 002 App. A.3, Table 5) and the grayscale preprocessing MNIST's needs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from attribution.methods import create_method
from attribution.models import Preprocessing, load_model
from attribution.models.config import ModelConfig
from attribution.models.registry import check_weights
from attribution.models.samp_cnn import samp_cnn_cifar10, samp_cnn_mnist
from evaluation.registry import create_metric
from jobs.explain import Explanation, save_overlay_grid

CONVS = ("conv1", "conv2", "conv3", "conv4", "conv5")


@pytest.mark.parametrize("build, channels, side, sides, widths", [
    (samp_cnn_mnist, 1, 28, (24, 12, 9, 4, 2), (8, 24, 288, 864, 2592)),
    (samp_cnn_cifar10, 3, 32, (28, 14, 11, 5, 3), (32, 64, 512, 1536, 4608)),
])
def test_table_5_layers_and_spatial_sizes(build, channels, side, sides, widths):
    model = build().eval()
    shapes = {}

    def record(name):
        def hook(module, inputs, output):
            shapes[name] = tuple(output.shape[1:])
        return hook

    for name in (*CONVS, "pool"):
        getattr(model, name).register_forward_hook(record(name))
    with torch.no_grad():
        logits = model(torch.zeros(2, channels, side, side))
    assert logits.shape == (2, 10)
    assert [shapes[n] for n in CONVS] == [(w, s, s) for w, s in zip(widths, sides)]
    assert shapes["pool"] == (widths[-1], 1, 1)
    assert [getattr(model, n).padding for n in CONVS] == [(0, 0)] * 5
    assert [getattr(model, n).stride for n in CONVS] == [(1, 1), (2, 2), (1, 1), (2, 2), (1, 1)]
    assert isinstance(model.pool, torch.nn.AdaptiveMaxPool2d) and model.fc.in_features == widths[-1]


@pytest.mark.parametrize("name, channels, side, k", [("samp_cnn_mnist", 1, 28, 2592),
                                                     ("samp_cnn_cifar10", 3, 32, 4608)])
def test_registry_entries(name, channels, side, k):
    loaded = load_model(name, "none", num_classes=10)
    assert loaded.layer == "relu5" and loaded.spec.channels == k
    assert isinstance(dict(loaded.model.named_modules())["relu5"], torch.nn.ReLU)
    pre = loaded.preprocessing
    assert (pre.channels, pre.crop, pre.mean, pre.std, pre.black) == (channels, side, (0.0,) * channels,
                                                                      (1.0,) * channels, (0.0,) * channels)
    ModelConfig.resolve(name, "file:x.pt", num_classes=10).check_layer()
    for weights in ("pretrained", "torchvision:IMAGENET1K_V1", "timm"):
        with pytest.raises(ValueError, match=rf"^{name} has no pretrained weights .*camgrid train {name} .*file:"):
            load_model(name, weights, num_classes=10)
        with pytest.raises(ValueError, match="camgrid train"):
            check_weights(name, weights, 10)


def test_grayscale_preprocessing_gives_one_channel_of_the_pixels():
    pre = load_model("samp_cnn_mnist", "none", num_classes=10).preprocessing
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    gray = pre(Image.fromarray(pixels, mode="L"))
    assert gray.shape == (1, 28, 28)
    torch.testing.assert_close(gray[0], torch.from_numpy(pixels).float() / 255)
    rgb = pre(Image.fromarray(np.repeat(pixels[..., None], 3, axis=2)))  # what decode_image gives
    torch.testing.assert_close(rgb, gray)
    resized = ModelConfig.resolve("samp_cnn_mnist", num_classes=10, input_size=56).preprocessing
    assert resized.channels == 1 and resized.crop == 56
    with pytest.raises(ValueError, match=r"mean \(0.0,\) and std \(1.0,\) need one value per channel \(3\)"):
        Preprocessing(28, 28, (0.0,), (1.0,))
    with pytest.raises(ValueError, match="channels must be 1 .* or 3 .*; got 2"):
        Preprocessing(28, 28, (0.0, 0.0), (1.0, 1.0), channels=2)


def test_methods_and_metrics_run_on_one_channel_and_its_overlay_renders(tmp_path):
    torch.manual_seed(0)
    loaded = load_model("samp_cnn_mnist", "none", num_classes=10)
    images = torch.rand(2, 1, 28, 28)
    targets = torch.tensor([1, 7])
    black = loaded.preprocessing.black
    maps = {}
    for name, params in {"gradcam": {}, "samp": {"s": 200, "black": black},
                         "integrated_gradients": {"steps": 4, "black": black}}.items():
        with create_method(name, **params).bind(loaded.model, loaded.layer) as bound:
            result = bound(images, targets)
        maps[name] = result.scored((28, 28))
        assert maps[name].shape == (2, 28, 28) and torch.isfinite(maps[name]).all()
    deletion = create_metric("deletion", steps=79, softmax=False, normalise_curve="full_score", auc="mean")
    scores = deletion(maps["samp"], images=images, targets=targets, model=loaded.model, black=black)
    assert scores.shape == (2,) and torch.isfinite(scores).all()
    shown = {name: (m - m.amin()) / (m.amax() - m.amin()) for name, m in maps.items()}
    explanation = Explanation(["a", "b"], images, targets, ["1", "7"], shown, {})
    path = save_overlay_grid(explanation, loaded.preprocessing, tmp_path / "overlays.png")
    with Image.open(path) as picture:
        drawn = np.asarray(picture.convert("RGB")).astype(int)
    images_column = drawn[:, : drawn.shape[1] // 4]  # the images themselves, in grey, not a colour map's
    assert (images_column.max(axis=2) - images_column.min(axis=2) <= 2).all()
    assert (drawn.max(axis=2) - drawn.min(axis=2) > 50).mean() > 0.1  # the maps' 'jet' over them
