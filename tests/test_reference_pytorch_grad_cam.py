"""Agreement with pytorch-grad-cam (the ``grad-cam`` package), an independent implementation.

Post-processing: pytorch-grad-cam returns ``minmax(resize(minmax(relu(cam))))`` (cv2 bilinear,
half-pixel centres). Bilinear resizing commutes with positive affine maps, so that equals our
``minmax_normalize(upsample(relu(raw)))`` up to its 1e-7 epsilon.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from pytorch_grad_cam import AblationCAM, GradCAM, GradCAMPlusPlus, HiResCAM, LayerCAM, ScoreCAM, XGradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from attribution.methods import create_method
from attribution.postprocess import minmax_normalize, relu, upsample

REFERENCE = {
    "gradcam": GradCAM,
    "gradcampp": GradCAMPlusPlus,
    "xgradcam": XGradCAM,
    "hirescam": HiResCAM,
    "layercam": LayerCAM,
    "ablationcam": AblationCAM,
}


@pytest.fixture(scope="module")
def resnet():
    torch.manual_seed(0)
    return torchvision.models.resnet18(num_classes=10).eval()


@pytest.fixture(scope="module")
def batch():
    return torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(4))


def ours_displayed(name, model, layer, images, targets):
    raw = create_method(name)(model, layer, images, targets)
    return minmax_normalize(upsample(relu(raw), images.shape[-2:]))


class ScaledLogits(nn.Module):
    def __init__(self, net: nn.Module, scale: float):
        super().__init__()
        self.net, self.scale = net, scale

    def forward(self, x):
        return self.net(x) * self.scale


@pytest.mark.parametrize("name", list(REFERENCE))
def test_matches_pytorch_grad_cam(resnet, batch, name):
    # Grad-CAM++: pytorch-grad-cam adds eps = 1e-6 to the denominator of a_uv; with this net's
    # gradients (g² ≈ 4e-7) that epsilon changes the weights, so both run on logits scaled by 1e3,
    # where it is negligible. Our formula has no epsilon (the 0/0 case is set to 0 explicitly).
    model = ScaledLogits(resnet, 1e3).eval() if name == "gradcampp" else resnet
    layer = "net.layer4" if name == "gradcampp" else "layer4"
    targets = [3, 7]
    with REFERENCE[name](model=model, target_layers=[resnet.layer4[-1]]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=batch, targets=[ClassifierOutputTarget(t) for t in targets]))
    ours = ours_displayed(name, model, layer, batch, torch.tensor(targets))
    torch.testing.assert_close(ours, theirs, atol=2e-4, rtol=1e-4)


class StrideOneNet(nn.Module):
    """Target layer at input resolution: upsampling is the identity under every corner convention."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Sequential(nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))

    def forward(self, x):
        return self.head(self.features(x))


def test_scorecam_channel_scores_match_pytorch_grad_cam():
    # Definitions differ in two places, documented here:
    # * weights: pytorch-grad-cam takes a softmax over *channels* of the masked target logits; Score-CAM's
    #   paper and the authors' code use the softmax *class probability* of each masked input (ours).
    # * masks: pytorch-grad-cam upsamples with align_corners=True; we use half-pixel centres like every
    #   other step. On a layer at input resolution the two conventions coincide.
    # So we check that both compute the same per-channel masked logits: their weights must equal the
    # channel-softmax of ours, and our weights the class probabilities of the same logits.
    torch.manual_seed(0)
    net = StrideOneNet().eval()
    images = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    targets = torch.tensor([1, 4])
    method = create_method("scorecam", batch_size=5)
    from attribution.split import split_at

    logits, maps, resolved = method.channel_logits(split_at(net, "features"), images, targets)
    target_logits = logits.gather(2, resolved[:, None, None].expand(-1, logits.shape[1], 1)).squeeze(2)
    with ScoreCAM(model=net, target_layers=[net.features]) as cam:
        theirs = cam.get_cam_weights(images, net.features, [ClassifierOutputTarget(int(t)) for t in targets], maps.numpy(), None)
    torch.testing.assert_close(torch.from_numpy(theirs), target_logits.softmax(dim=1), atol=1e-5, rtol=1e-4)
    ours = method.channel_weights(net, "features", images, targets)
    torch.testing.assert_close(ours, logits.softmax(dim=2).gather(2, resolved[:, None, None].expand(-1, 8, 1)).squeeze(2))
