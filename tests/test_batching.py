"""Batch of B == B single calls, same seed → same map, and the ResNet and ViT paths."""

from __future__ import annotations

import pytest
import torch

from attribution.channel_scaling import RankDeficientWarning
from attribution.methods import create_method, method_names
from attribution.models import load_model

# small but real settings per method, so that every method's batch path is exercised
PARAMS = {
    "smoothgradcampp": dict(n_samples=5, batch_size=7),
    "integrated_gradcam": dict(steps=6, batch_size=7),
    "scorecam": dict(batch_size=5),
    "ablationcam": dict(batch_size=5),
    "opticam": dict(iterations=5, black=(-2.0, 0.0, 1.5)),
    "expected_gradcam": dict(batch_size=7),
    "integrated_gradients": dict(steps=6, batch_size=7, black=(-2.0, 0.0, 1.5)),
    "blur_ig": dict(steps=6, batch_size=7),
    "guided_ig": dict(steps=6, black=(-2.0, 0.0, 1.5)),
    "samp": dict(s=32, black=(-2.0, 0.0, 1.5)),
    "samp_pp": dict(s=32, eta_ratio=0.2, black=(-2.0, 0.0, 1.5)),
}


def make(name, reference):
    params = dict(PARAMS.get(name, {}))
    if name == "expected_gradcam":
        params["reference"] = reference
    return create_method(name, **params)


@pytest.mark.parametrize("name", method_names())
def test_batch_equals_single_calls(smooth_net, images, reference, name):
    targets = torch.tensor([1, 0, 3])
    seeds = torch.tensor([11, 12, 13])
    batched = make(name, reference)(smooth_net, "features", images, targets, seeds=seeds)
    singles = torch.cat(
        [make(name, reference)(smooth_net, "features", images[i : i + 1], targets[i : i + 1], seeds=seeds[i : i + 1]) for i in range(3)]
    )
    torch.testing.assert_close(batched, singles, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("name", ["smoothgradcampp", "expected_gradcam"])
def test_same_seed_same_map_and_other_seed_differs(smooth_net, images, reference, name):
    first = make(name, reference)(smooth_net, "features", images, seeds=[1, 2, 3])
    again = make(name, reference)(smooth_net, "features", images, seeds=[1, 2, 3])
    torch.testing.assert_close(first, again, rtol=0, atol=0)
    if name == "smoothgradcampp":
        other = make(name, reference)(smooth_net, "features", images, seeds=[4, 5, 6])
    else:  # the perturbation set is drawn from the method's seed
        other = create_method(name, reference=reference, seed=99)(smooth_net, "features", images)
    assert not torch.allclose(first, other)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    loaded = load_model("vit_b_16", weights="none")
    torch.nn.init.normal_(loaded.model.heads.head.weight, std=0.02)  # torchvision zero-initialises the head
    return loaded


@pytest.fixture(scope="module")
def resnet50():
    torch.manual_seed(0)
    return load_model("resnet50", weights="none")


@pytest.mark.parametrize("name", ["gradcam", "hirescam", "ablationcam", "expected_gradcam"])
def test_vit_token_path(vit, name):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    params = {"reference": torch.randn(3, 3, 224, 224, generator=torch.Generator().manual_seed(1)), "n_perturbations": 96} if name == "expected_gradcam" else {}
    if name == "expected_gradcam":
        params["ridge"] = 1e-3  # 96 perturbations from 3 references: rank ≤ 4 of 768, the ridge decides the rest
    if name == "ablationcam":
        x = x[:1]  # 768 suffix passes per image
    method = create_method(name, **params)
    if name == "expected_gradcam":
        with pytest.warns(RankDeficientWarning, match=r"rank\(M̂\) = 4/768"):
            maps = method(vit.model, vit.layer, x, layout=vit.layout)
    else:
        maps = method(vit.model, vit.layer, x, layout=vit.layout)
    assert maps.shape == (len(x), 14, 14)
    assert torch.isfinite(maps).all() and maps.abs().sum() > 0


def test_vit_gradcam_reads_patch_tokens_not_the_class_token(vit):
    # The map must come from the 196 patch tokens laid out row-major on the 14×14 grid: moving one
    # image patch must move the largest change of the map to that patch's cell.
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    base = create_method("hirescam")(vit.model, vit.layer, x, 0, layout=vit.layout)
    y = x.clone()
    y[:, :, 16 * 3 : 16 * 4, 16 * 9 : 16 * 10] += 5.0  # patch at row 3, column 9
    changed = create_method("hirescam")(vit.model, vit.layer, y, 0, layout=vit.layout)
    assert (changed - base).abs()[0].argmax() == 3 * 14 + 9


def test_resnet50_path(resnet50):
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for name in ["gradcam", "layercam", "ablationcam"]:
        maps = create_method(name)(resnet50.model, resnet50.layer, x)
        assert maps.shape == (2, 7, 7) and torch.isfinite(maps).all()
