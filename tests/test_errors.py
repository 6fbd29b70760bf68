"""Bad input gets a clear error that names the problem."""

from __future__ import annotations

import pytest
import torch

from attribution.methods import UnknownMethodError, create_method
from attribution.models import load_model, open_image
from attribution.postprocess import check_finite
from attribution.split import LayerNotFoundError


def test_unknown_method_suggests_close_names():
    with pytest.raises(UnknownMethodError, match=r"unknown method 'gradcan'.*'gradcam'"):
        create_method("gradcan")


def test_unknown_method_parameter_is_named():
    with pytest.raises(TypeError, match=r"'stepz'"):
        create_method("integrated_gradcam", stepz=3)


def test_unknown_layer_suggests_close_names(gap_net, images):
    with pytest.raises(LayerNotFoundError, match=r"no layer 'featurez'.*'features'"):
        create_method("gradcam")(gap_net, "featurez", images)


def test_layer_off_the_forward_path(images):
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.features = torch.nn.Conv2d(3, 4, 3)
            self.unused = torch.nn.Conv2d(3, 4, 3)
            self.fc = torch.nn.Linear(4, 2)

        def forward(self, x):
            return self.fc(self.features(x).mean(dim=(2, 3)))

    with pytest.raises(LayerNotFoundError, match=r"'unused' is called 0 times"):
        create_method("gradcam")(Net().eval(), "unused", images)


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.randn(3, 16, 16), r"shape \(B, C, H, W\); got shape \(3, 16, 16\)"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), "floating-point"),
        (torch.full((1, 3, 16, 16), float("nan")), "NaN"),
        (torch.zeros(0, 3, 16, 16), "empty batch"),
    ],
)
def test_wrong_images(gap_net, bad, message):
    with pytest.raises(ValueError, match=message):
        create_method("gradcam")(gap_net, "features", bad)


def test_target_out_of_range(gap_net, images):
    with pytest.raises(ValueError, match=r"target out of range \[0, 5\).*\[7\]"):
        create_method("gradcam")(gap_net, "features", images, torch.tensor([0, 7, 1]))


def test_target_count_must_match_batch(gap_net, images):
    with pytest.raises(ValueError, match=r"expected shape \(3,\), got \(2,\)"):
        create_method("gradcam")(gap_net, "features", images, [0, 1])


def test_training_mode_is_refused(gap_net, images):
    gap_net.train()
    with pytest.raises(ValueError, match="training mode"):
        create_method("gradcam")(gap_net, "features", images)


def test_expected_gradcam_needs_references_and_rejects_the_explained_image(gap_net, images, reference):
    with pytest.raises(ValueError, match="needs a reference distribution"):
        create_method("expected_gradcam")(gap_net, "features", images)
    mixed = torch.cat([reference, images[1:2]])
    with pytest.raises(ValueError, match=r"images \[1\] of the batch are in Expected Grad-CAM's reference set"):
        create_method("expected_gradcam", reference=mixed)(gap_net, "features", images)


def test_expected_gradcam_bad_options():
    with pytest.raises(ValueError, match="unknown perturbation distribution 'uniform'"):
        create_method("expected_gradcam", perturbation="uniform")
    with pytest.raises(ValueError, match="unknown estimator"):
        create_method("expected_gradcam", perturbation="gaussian", estimator="mc")


def test_nan_map_is_named():
    maps = torch.zeros(3, 4, 4)
    maps[2, 1, 1] = float("nan")
    with pytest.raises(ValueError, match=r"samples \[2\] contain NaN"):
        check_finite(maps)


def test_missing_and_corrupt_images(tmp_path):
    with pytest.raises(FileNotFoundError, match="image file not found"):
        open_image(tmp_path / "nope.png")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"\xff\xd8 not a jpeg")
    with pytest.raises(ValueError, match=r"corrupt or unreadable image .*bad.jpg"):
        open_image(bad)


def test_unknown_architecture_and_weights():
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet5'.*'resnet50'"):
        load_model("resnet5")
    with pytest.raises(ValueError, match="give its target layer"):
        load_model("torchvision:resnet34", weights="none")
    with pytest.raises(ValueError, match="torchvision has no model 'resnet33'"):
        load_model("torchvision:resnet33", layer="layer4", weights="none")
    with pytest.raises(ValueError, match="1000 classes, not 200"):
        load_model("resnet18", num_classes=200)
