"""SIC and AIC (performance information curves, WebP and MS-SSIM information) against hand-made cases and
PAIR's ``saliency.metrics.pic``; IDGI's insertion scores (seed 004 Table 1) by hand."""

from __future__ import annotations

import io
import logging
import math
from itertools import pairwise

import numpy as np
import pytest
import skimage.data
import skimage.metrics
import skimage.transform
import torch
from PIL import Image
from saliency.metrics import pic as pair
from threadpoolctl import threadpool_limits
from torch import nn

from attribution.methods.base import sample_generators
from attribution.needs import Need
from attribution.normalisation import Normalisation
from evaluation import Batch, create_metric, metric_class
from evaluation.metrics.pic import (
    PAIR_THRESHOLDS,
    curve_area,
    information_curve,
    ms_ssim,
    random_mask,
    reveal,
    revealed_mask,
    webp_size,
)

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
IMAGENET = Normalisation(MEAN, STD)
HALF = {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)}  # black = (−1, −1, −1)
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket")


@pytest.fixture
def one_thread():
    """Torch on one thread: its small convolutions stall on contended intra-op threads of a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def photo(name: str, size: int) -> np.ndarray:
    """A bundled scikit-image photo resized to ``size × size``, uint8 ``(H, W, 3)``."""
    image = skimage.transform.resize(getattr(skimage.data, name)(), (size, size), anti_aliasing=True)
    return (image * 255).round().astype(np.uint8)


def normalised(pixels: np.ndarray, mean=MEAN, std=STD) -> torch.Tensor:
    """uint8 ``(B, H, W, C)`` → the model's ``(B, C, H, W)`` input."""
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
    return (x - torch.tensor(mean).reshape(1, -1, 1, 1)) / torch.tensor(std).reshape(1, -1, 1, 1)


class EdgeNet(nn.Module):
    """Class 0's logit grows with the mean |Laplacian| of the image: blurring lowers its probability."""

    def __init__(self, gain: float = 20.0, bias: float = 2.5):
        super().__init__()
        kernel = torch.tensor([[0.0, 1, 0], [1, -4, 1], [0, 1, 0]])
        self.register_buffer("kernel", kernel.expand(3, 1, 3, 3).clone())
        self.gain, self.bias = gain, bias

    def forward(self, x):
        energy = nn.functional.conv2d(x, self.kernel, groups=3).abs().mean(dim=(1, 2, 3))
        return torch.stack([self.gain * energy - self.bias, torch.zeros_like(energy), -energy], dim=1)


class PatchNet(nn.Module):
    """Logits ``(gain · mean of the input over rows/cols 6–7 − 4, 0)``: only the patch matters."""

    def __init__(self, gain: float = 8.0):
        super().__init__()
        self.gain = gain

    def forward(self, x):
        return torch.stack([self.gain * x[:, :, 6:8, 6:8].mean(dim=(1, 2, 3)) - 4, torch.zeros(len(x))], dim=1)


class ConstantNet(nn.Module):
    def forward(self, x):
        return torch.tensor([[3.0, 0.0]]).expand(len(x), 2)


def patch_image() -> np.ndarray:
    """16 × 16 grey (128) with a white 2 × 2 patch at rows/cols 6–7."""
    image = np.full((16, 16, 3), 128, dtype=np.uint8)
    image[6:8, 6:8] = 255
    return image


def patch_map() -> torch.Tensor:
    """The patch first (3.0, 2.9, 2.8, 2.7), then its 1-pixel ring (2.0), then the rest below 1."""
    saliency = torch.rand(16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.9
    saliency[5:9, 5:9] = 2.0
    saliency[6:8, 6:8] = torch.tensor([[3.0, 2.9], [2.8, 2.7]], dtype=torch.float64)
    return saliency


def webp_bytes(image: np.ndarray) -> int:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="webp", lossless=True, quality=100)
    return len(buffer.getvalue())


# -- the curve, the rebuilt images, the information -------------------------------------------------------------------
def test_information_curve_by_hand():
    information, scores = np.array([10.0, 20, 30, 50]), np.array([0.2, 0.5, 0.4, 1.0])
    x, y = information_curve(information, scores)  # points (0.25, 0.375), (0.5, 0.25 → 0.375 monotone)
    assert len(x) == 1001 and x[0] == 0 and x[-1] == 1 and y[-1] == 1
    assert y[250] == pytest.approx(0.375) and y[500] == pytest.approx(0.375) and y[750] == pytest.approx(0.6875)
    assert curve_area(x, y) == pytest.approx(0.25 * 0.375 / 2 + 0.25 * 0.375 + 0.5 * 1.375 / 2, abs=1e-12)
    x, y = information_curve(information, scores, keep_monotonous=False)
    assert curve_area(x, y) == pytest.approx(0.25 * 0.375 / 2 + 0.25 * 0.625 / 2 + 0.5 * 1.25 / 2, abs=1e-12)
    # x̂ clipped to 0 and 1: the added (0, 0) comes after the threshold at x̂ = 0 and is the one interpolated from
    x, y = information_curve(np.array([10.0, 5, 60, 50]), np.array([0.0, 0.5, 0.8, 1.0]), num_data_points=4)
    np.testing.assert_allclose(x, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(y, [0, 0.2, 0.4, 0.6, 1])


def test_reveal_by_hand():
    image = patch_image()
    corners = np.zeros((16, 16), dtype=bool)
    assert (reveal(image, corners) == 128).all()  # the corners are grey: the whole image is
    block = np.zeros((16, 16), dtype=bool)
    block[5:9, 5:9] = True  # the patch and its ring: every triangle outside the ring has grey corners
    np.testing.assert_array_equal(reveal(image, block), image)
    np.testing.assert_array_equal(reveal(image, np.ones((16, 16), dtype=bool)), image)
    patch = np.zeros((16, 16), dtype=bool)
    patch[6:8, 6:8] = True
    halo = reveal(image, patch)
    assert (halo[6:8, 6:8] == 255).all() and (halo[5, 5] > 128).all() and (halo[0, 0] == 128).all()
    np.testing.assert_array_equal(revealed_mask(patch_map().numpy(), 4 / 256), patch)
    np.testing.assert_array_equal(revealed_mask(patch_map().numpy(), 16 / 256), block)
    assert webp_size(image) == webp_bytes(image)
    mask = random_mask(10, 20, 0.1, torch.Generator().manual_seed(0))
    assert mask.shape == (10, 20) and mask.sum() == 20
    np.testing.assert_array_equal(mask, random_mask(10, 20, 0.1, torch.Generator().manual_seed(0)))


def test_webp_entropy_grows_with_the_revealed_pixels_of_photos():
    """Nested random masks, and the thresholds of a smooth map's ranking: more pixels, more WebP bytes, up to the
    photo's. (Between close thresholds the size can dip a little, and scattered pixels near 100 % can exceed the
    photo's: PAIR clips the normalised information to [0, 1].)"""
    _, _, maps = photo_batch(128, count=1)
    order = torch.randperm(128 * 128, generator=torch.Generator().manual_seed(0)).numpy()
    base = random_mask(128, 128, 0.01, torch.Generator().manual_seed(0))
    for name in ("astronaut", "chelsea"):
        image = photo(name, 128)
        scattered = []
        for fraction in (0.01, 0.05, 0.1, 0.3):
            mask = np.zeros(128 * 128, dtype=bool)
            mask[order[: int(fraction * 128 * 128)]] = True
            scattered.append(webp_size(reveal(image, mask.reshape(128, 128))))
        ranked = [webp_size(reveal(image, revealed_mask(maps[0].double().numpy(), t) | base))
                  for t in (0.1, 0.21, 0.34, 0.5, 0.75)]
        for sizes in (scattered, ranked):
            assert all(a < b for a, b in pairwise(sizes)) and sizes[-1] < webp_size(image), (name, sizes)


def test_ms_ssim_is_ssim_at_one_scale_and_one_on_the_image_itself(one_thread):
    image = photo("astronaut", 176)
    rng = np.random.default_rng(0)
    noisy = np.clip(image + rng.normal(0, 20, image.shape), 0, 255).astype(np.uint8)
    as_tensor = [torch.from_numpy(a).permute(2, 0, 1)[None] for a in (image, noisy)]
    expected = skimage.metrics.structural_similarity(image, noisy, channel_axis=-1, gaussian_weights=True, sigma=1.5,
                                                     use_sample_covariance=False, data_range=255)
    assert float(ms_ssim(as_tensor[1], as_tensor[0], weights=(1.0,))) == pytest.approx(expected, abs=1e-9)
    assert float(ms_ssim(as_tensor[0], as_tensor[0])) == pytest.approx(1.0, abs=1e-12)
    blurred = reveal(image, random_mask(176, 176, 0.01, torch.Generator().manual_seed(0)))
    levels = ms_ssim(torch.from_numpy(np.stack([blurred, noisy, image])).permute(0, 3, 1, 2), as_tensor[0])
    assert 0 <= levels[0] < levels[1] < levels[2] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sides exceed 160 pixels; got 64×64"):
        ms_ssim(torch.zeros(1, 3, 64, 64), torch.zeros(1, 3, 64, 64))


# -- SIC and AIC -------------------------------------------------------------------------------------------------
def test_sic_and_aic_on_a_hand_made_case():
    """PatchNet reads only a white patch pasted on a photo at rows/cols 6–7. With no random pixels the fully
    blurred image x₀ is rebuilt from the corners: its patch is dull, logit < 0. Revealing the patch (t = 4/1024,
    the map's top 4 pixels) restores the image's score exactly: ŷ = 1 at x̂_a = (I(x_a) − I(x₀)) / (I(x) − I(x₀)),
    the WebP bytes measured here; the later thresholds hold more and keep ŷ = 1 (monotonous). The curve
    (0, 0) → (x̂_a, 1) → (1, 1) has area 1 − x̂_a/2, for SIC and for AIC."""
    image = photo("coffee", 32)
    image[6:8, 6:8] = 255
    saliency = torch.rand(32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 0.9
    saliency[6:8, 6:8] = torch.tensor([[3.0, 2.9], [2.8, 2.7]], dtype=torch.float64)
    thresholds = (4 / 1024, 0.1, 0.5)
    blurred = reveal(image, np.zeros((32, 32), dtype=bool))
    sizes = [webp_bytes(reveal(image, revealed_mask(saliency.numpy(), t))) for t in thresholds]
    x_a = (sizes[0] - webp_bytes(blurred)) / (webp_bytes(image) - webp_bytes(blurred))
    assert 0 < x_a < 1 and sizes[0] < sizes[1] < sizes[2]
    inputs = {"images": normalised(image[None], **HALF), "model": PatchNet(), "targets": [0],
              "normalisation": Normalisation(**HALF)}
    assert (PatchNet()(normalised(blurred[None], **HALF))[0, 0] < 0).all()  # AIC: wrong when blurred
    for name in ("sic", "aic"):
        value = create_metric(name, thresholds=thresholds, random_fraction=0.0)(saliency[None], **inputs)
        assert value.dtype == torch.float64 and float(value) == pytest.approx(1 - x_a / 2, abs=1e-5), name


def pair_predictor(model: nn.Module, kind: str, target: int = 0):
    """PAIR's ``pred_func``: uint8 ``(B, H, W, C)`` → SIC's probability or AIC's 0/1 of ``target``."""

    def predict(batch: np.ndarray) -> list[float]:
        with torch.no_grad():
            probabilities = model(normalised(np.asarray(batch))).softmax(dim=1)
        return (probabilities[:, target] if kind == "sic" else (probabilities.argmax(1) == target).double()).tolist()

    return predict


def photo_batch(size: int, count: int = 4) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
    """Photos, their normalised images and smooth maps (a Gaussian bump off-centre plus noise)."""
    pixels = np.stack([photo(name, size) for name in PHOTOS[:count]])
    rows, cols = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    noise = torch.rand(count, size, size, generator=torch.Generator().manual_seed(1))
    bumps = [torch.exp(-((rows - size * (0.3 + 0.1 * i)) ** 2 + (cols - size / 2) ** 2) / (2 * (size / 5) ** 2))
             for i in range(count)]
    return pixels, normalised(pixels), torch.stack(bumps) + 0.1 * noise


def pair_results(pixels, maps, seeds, kind, model, thresholds=PAIR_THRESHOLDS):
    generators = sample_generators(0, seeds, len(pixels))
    results = []
    for i in range(len(pixels)):
        mask = random_mask(*pixels.shape[1:3], 0.01, generators[i])
        try:
            with threadpool_limits(limits=1, user_api="blas"):  # griddata's solves stall on contended BLAS threads
                results.append(pair.compute_pic_metric(pixels[i], maps[i].double().numpy(), mask,
                                                       pair_predictor(model, kind), list(thresholds)))
        except pair.ComputePicMetricError:
            results.append(None)
    return results


def test_agreement_with_pairs_pic(one_thread):
    pixels, images, maps = photo_batch(32)
    assert (IMAGENET.to_pixels(images) == pixels).all()
    model, seeds = EdgeNet(), torch.tensor([5, 6, 7, 8])
    targets = torch.zeros(4, dtype=torch.long)
    inputs = {"images": images, "model": model, "targets": targets, "normalisation": IMAGENET, "seeds": seeds}
    batch = Batch(maps, **inputs)
    for name in ("sic", "aic"):
        ours = create_metric(name)(batch).numpy()
        theirs = pair_results(pixels, maps, seeds, name, model)
        expected = np.array([np.nan if r is None else r.auc for r in theirs])
        np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-9, equal_nan=True)
        defined = [r for r in theirs if r is not None]
        assert len(defined) >= 3, name
        for aggregate in ("mean", "median"):
            reference = pair.aggregate_individual_pic_results(defined, method=aggregate).auc
            values = create_metric(name, aggregate=aggregate)(batch).numpy()
            assert np.nanmean(values) == pytest.approx(reference, abs=1e-9), (name, aggregate)
        median = create_metric(name, aggregate="median")(batch).numpy()
        assert np.allclose(median[~np.isnan(median)], median[~np.isnan(median)][0])


@pytest.mark.slow
def test_agreement_with_pair_on_ms_ssim_information(monkeypatch, one_thread):
    """PAIR's curve with its entropy estimate replaced by MS-SSIM to the original (the original's is 1)."""
    pixels, images, maps = photo_batch(168, count=1)
    original = torch.from_numpy(pixels[0]).permute(2, 0, 1)[None]
    monkeypatch.setattr(pair, "estimate_image_entropy",
                        lambda image: float(ms_ssim(torch.from_numpy(image).permute(2, 0, 1)[None], original)))
    thresholds = (0.02, 0.1, 0.34, 0.75)
    model, seeds = EdgeNet(), torch.tensor([3])
    inputs = {"images": images, "model": model, "targets": [0], "normalisation": IMAGENET, "seeds": seeds}
    for name in ("sic", "aic"):
        (theirs,) = pair_results(pixels, maps, seeds, name, model, thresholds)
        ours = create_metric(name, information="msssim", thresholds=thresholds)(maps, **inputs)
        assert theirs is not None and float(ours) == pytest.approx(theirs.auc, abs=1e-6), name


def test_batch_equals_singles_is_deterministic_and_shares_its_work(one_thread):
    _pixels, images, maps = photo_batch(32, count=3)
    calls = []

    class Counting(EdgeNet):
        def forward(self, x):
            calls.append(len(x))
            return super().forward(x)

    model, seeds = Counting(), torch.tensor([3, 1, 4])
    inputs = {"images": images, "model": model, "targets": torch.zeros(3, dtype=torch.long),
              "normalisation": IMAGENET}
    params = {"thresholds": (0.05, 0.2, 0.5)}
    for name in ("sic", "aic"):
        metric = create_metric(name, **params)
        whole = metric(maps, seeds=seeds, **inputs)
        singles = torch.cat([metric(maps[i : i + 1], **{**inputs, "images": images[i : i + 1],
                                                        "targets": inputs["targets"][i : i + 1]}, seeds=seeds[i : i + 1])
                             for i in range(3)])
        torch.testing.assert_close(whole, singles, rtol=0, atol=1e-7, equal_nan=True)
        again = create_metric(name, **params, batch_size=1)(maps, seeds=seeds, **inputs)
        torch.testing.assert_close(whole, again, rtol=0, atol=1e-7, equal_nan=True)
        torch.testing.assert_close(whole, metric(maps, seeds=seeds, **inputs), rtol=0, atol=0, equal_nan=True)
    other = create_metric("sic", **params, seed=1)(maps, seeds=seeds, **inputs)
    assert not torch.allclose(other, create_metric("sic", **params)(maps, seeds=seeds, **inputs), equal_nan=True)
    batch = Batch(maps, seeds=seeds, **inputs)
    create_metric("sic", **params)(batch)
    passes = len(calls)
    create_metric("aic", **params)(batch)
    assert len(calls) == passes  # the rebuilt images and their scores are computed once per batch


def test_undefined_images_are_nan_with_pairs_reasons(caplog):
    ramp = (np.add.outer(np.arange(16) * 8, np.arange(16) * 4)[..., None] + np.array([0, 20, 40])).astype(np.uint8)
    images = normalised(np.stack([ramp, patch_image()]), **HALF)
    maps = torch.stack([patch_map(), patch_map()])
    params = dict(thresholds=(4 / 256, 0.5))
    inputs = {"images": images, "targets": [0, 0], "normalisation": Normalisation(**HALF)}
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        constant = create_metric("sic", **params)(maps, model=ConstantNet(), **inputs)
        unsure = create_metric("sic", **params)(maps[1:], model=PatchNet(gain=2.0), **dict(inputs, images=images[1:],
                                                                                          targets=[0]))
        lenient = create_metric("sic", **params, min_pred_value=0.0)(maps[1:], model=PatchNet(gain=2.0),
                                                                   **dict(inputs, images=images[1:], targets=[0]))
    assert torch.isnan(constant).all() and torch.isnan(unsure).all() and torch.isfinite(lenient).all()
    assert "sic undefined for samples [0]: the fully blurred image holds no less information" in caplog.text  # affine
    assert "sic undefined for samples [1]: the model's score on the fully blurred image is not below" in caplog.text
    assert "sic undefined for samples [0]: the model's score on the image is below min_pred_value" in caplog.text


def test_needs_direction_and_registration():
    for name in ("sic", "aic"):
        assert metric_class(name).direction == "higher" and metric_class(name).category == "faithfulness"
        assert create_metric(name).needs == {Need.MODEL, Need.NORMALISATION}
        assert create_metric(name, aggregate="median").needs == {Need.MODEL, Need.NORMALISATION, Need.SHARD}
    with pytest.raises(ValueError, match="needs the model's input normalisation"):
        create_metric("sic")(torch.rand(1, 8, 8), images=torch.rand(1, 3, 8, 8), model=ConstantNet(), targets=[0])


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"information": "png"}, "information must be 'webp' or 'msssim'"),
        ({"thresholds": ()}, "thresholds must be a non-empty"),
        ({"thresholds": (0.5, 0.1)}, "strictly ascending"),
        ({"thresholds": (0.0, 0.5)}, "thresholds must be a finite number > 0"),
        ({"thresholds": (0.5, 1.5)}, "fractions in \\(0, 1\\]"),
        ({"random_fraction": 1.0}, "random_fraction must lie in \\[0, 1\\)"),
        ({"random_fraction": -0.1}, "random_fraction must be a finite number ≥ 0"),
        ({"min_pred_value": 2}, "min_pred_value must lie in \\[0, 1\\]"),
        ({"keep_monotonous": "yes"}, "keep_monotonous must be True or False"),
        ({"num_data_points": 0}, "num_data_points must be an integer ≥ 1"),
        ({"aggregate": "max"}, "aggregate must be 'mean' or 'median'"),
        ({"seed": 1.5}, "seed must be an integer"),
        ({"batch_size": 0}, "batch_size must be an integer ≥ 1"),
    ],
)
def test_bad_parameters_are_errors_naming_them(params, match):
    for name in ("sic", "aic"):
        with pytest.raises(ValueError, match=match):
            create_metric(name, **params)


def test_a_normalisation_other_than_the_models_or_small_images_for_ms_ssim_are_errors():
    inputs = {"images": normalised(patch_image()[None]), "model": PatchNet(), "targets": [0]}
    with pytest.raises(ValueError, match="black \\(-1.0, -1.0, -1.0\\) is not the normalisation's black"):
        create_metric("sic")(patch_map()[None], black=(-1.0, -1.0, -1.0), normalisation=IMAGENET, **inputs)
    with pytest.raises(ValueError, match="the normalisation has 3 channels but the images \\(1, 1, 16, 16\\) have 1"):
        create_metric("sic")(patch_map()[None], images=torch.zeros(1, 1, 16, 16), model=PatchNet(), targets=[0],
                             normalisation=IMAGENET)
    with pytest.raises(TypeError, match="normalisation must be a Normalisation"):
        create_metric("sic")(patch_map()[None], normalisation=HALF, **inputs)
    with pytest.raises(ValueError, match="MS-SSIM with 5 scales needs images whose sides exceed 160 pixels"):
        create_metric("sic", information="msssim")(patch_map()[None], normalisation=IMAGENET, **inputs)


@pytest.mark.parametrize(
    ("mean", "std", "match"),
    [
        ((0.5, 0.5), (0.5, 0.5, 0.5), "mean and std must have one value per channel each; got 2 and 3"),
        ((0.5, 0.5, 0.5), (0.5, 0.0, 0.5), "std must be > 0 per channel"),
        ("imagenet", (0.5,), "mean must be one number per channel"),
        ((float("nan"),), (1.0,), "mean must be finite numbers"),
    ],
)
def test_a_bad_normalisation_is_an_error_naming_it(mean, std, match):
    with pytest.raises(ValueError, match=match):
        Normalisation(mean, std)


def test_normalisation_round_trips_pixels_and_gives_the_black():
    pixels = photo("chelsea", 16)[None]
    images = normalised(pixels)
    assert IMAGENET.black == pytest.approx(tuple(-m / s for m, s in zip(MEAN, STD)))
    assert (IMAGENET.to_pixels(images) == pixels).all()
    torch.testing.assert_close(IMAGENET.from_pixels(pixels, images), images)
    batch = Batch(torch.rand(1, 16, 16), images=images, normalisation=IMAGENET)
    assert batch.black == IMAGENET.black


# -- IDGI's insertion scores: RISE's insertion with the probability, and its ratio to p(x) ---------------------------
class CentreNet(nn.Module):
    """Logits ``(a · x[channel 0, 5, 5], 0)``: the target-0 probability reads one pixel."""

    def __init__(self, a: float = 2.0):
        super().__init__()
        self.a = a

    def forward(self, x):
        return torch.stack([self.a * x[:, 0, 5, 5], torch.zeros(len(x))], dim=1)


def test_idgi_insertion_scores_by_hand():
    """11 × 11 image, c = 0.2 except d = 1.5 at the centre. RISE's blur (kernel 11, σ = 5) at the centre reaches
    every pixel without padding: b = c + (d − c)·w₀ with w₀ = (1/Σₖ exp(−k²/50))². With 11 steps (11 pixels
    each) and the centre ranked 51st (step 4), points 0–4 score q_b = σ(2b) and 5–11 q_d = σ(2d): the area is
    (4.5 q_b + 6.5 q_d)/11, and the ratio's that over q_d = p(x)."""
    c, d = 0.2, 1.5
    images = torch.full((1, 3, 11, 11), c)
    images[0, :, 5, 5] = d
    order = torch.randperm(121, generator=torch.Generator().manual_seed(0))
    maps = torch.empty(121)
    maps[order] = torch.linspace(1.0, 0.01, 121)
    centre = int(order[50])
    maps[[centre, 60]] = maps[[60, centre]]  # the centre (flat index 60) takes rank 50
    maps = maps.reshape(1, 11, 11)
    w0 = 1 / sum(math.exp(-k * k / 50) for k in range(-5, 6)) ** 2
    q_b, q_d = (1 / (1 + math.exp(-2 * v)) for v in (c + (d - c) * w0, d))
    inputs = {"images": images, "model": CentreNet(), "targets": [0]}
    probability = create_metric("insertion", steps=11)(maps, **inputs)
    ratio = create_metric("insertion", steps=11, normalise_curve="full_score")(maps, **inputs)
    assert float(probability) == pytest.approx((4.5 * q_b + 6.5 * q_d) / 11, abs=1e-6)
    assert float(ratio) == pytest.approx((4.5 * q_b / q_d + 6.5) / 11, abs=1e-6)
    assert float(ratio) >= float(probability)  # seed 004 Table 1: ratio ≥ probability in every row
