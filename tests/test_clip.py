"""App. F (Fig. 17): CAMs of a CLIP ResNet-50 image tower for text prompts, on a randomly initialised model."""

from __future__ import annotations

import re

import numpy as np
import polars as pl
import pytest
import torch
from click.testing import CliRunner
from PIL import Image
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch.nn import functional as F

from attribution.channel_scaling import RankDeficientWarning
from attribution.methods import create_method
from attribution.postprocess import minmax_normalize, relu, upsample
from jobs.analyze.clip import LAYER, clip_command, explain_prompts, load_clip
from storage.builders.demo import demo_references_manifest

PROMPTS = ["a cat", "a photo of a tabby cat sitting"]
SIZE = 64  # layer4 is 2 × 2


@pytest.fixture(scope="module")
def clip():
    torch.manual_seed(0)
    return load_clip("RN50", None, image_size=SIZE)


@pytest.fixture(scope="module")
def scorer(clip):
    return clip.scorer(PROMPTS)


@pytest.fixture(scope="module")
def images():
    return torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))


def photo(seed: int) -> Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (120, 140, 3), dtype=np.uint8)
    return Image.fromarray(pixels)


def test_preprocessing_is_open_clips(clip):
    from open_clip import get_model_preprocess_cfg
    from open_clip.transform import PreprocessCfg, image_transform_v2

    theirs = image_transform_v2(PreprocessCfg(**get_model_preprocess_cfg(clip.model)), is_train=False)(photo(4))
    ours = clip.preprocessing(photo(4))
    assert ours.shape == theirs.shape == (3, SIZE, SIZE) and clip.channels == 2048
    assert (ours - theirs).abs().max() <= 1.01 / 255 / min(clip.preprocessing.std)  # PIL's vs torch's uint8 rounding


def test_scores_are_cosine_similarities(clip, scorer, images):
    with torch.no_grad():
        image = clip.model.encode_image(images)
        text = clip.model.encode_text(clip.tokenizer(PROMPTS))
        expected = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
        torch.testing.assert_close(scorer.model(images), expected, atol=1e-5, rtol=1e-5)


def test_gradcam_matches_pytorch_grad_cam(scorer, images):
    targets = [0, 1]
    with GradCAM(model=scorer.model, target_layers=[scorer.model.clip.visual.layer4]) as cam:
        theirs = torch.from_numpy(cam(input_tensor=images, targets=[ClassifierOutputTarget(t) for t in targets]))
    raw = create_method("gradcam")(scorer.model, LAYER, images, torch.tensor(targets), layout=scorer.layout)
    assert raw.shape == (2, 2, 2)
    torch.testing.assert_close(minmax_normalize(upsample(relu(raw), (SIZE, SIZE))), theirs, atol=2e-4, rtol=1e-4)


def test_expected_gradcam_is_complete_at_the_zero_baseline(clip):
    # I0 = 1 (Dirac, Prop. A.15): ⟨I0, α⟩ = Σ_k α_k = g(1) − g(0), completeness of the map's weights (eq. 68)
    result = explain_prompts(clip, [("noise", photo(2))], PROMPTS, ("expected_gradcam", "gradcam"),
                             method_params={"expected_gradcam": {"perturbation": "dirac"}}, progress=lambda _: None)
    table = result.table()
    assert table.shape == (4, 5) and table["prompt"].to_list() == PROMPTS * 2
    gaps = {m: table.filter(pl.col("method") == m)["completeness_gap"] for m in ("expected_gradcam", "gradcam")}
    assert gaps["expected_gradcam"].max() < 1e-4 and gaps["gradcam"].min() > 1e-3
    assert all(m.shape == (2, SIZE, SIZE) and torch.isfinite(m).all() for m in result.maps.values())


def test_command_writes_overlays_and_scores(tmp_path):
    image = tmp_path / "noise.png"
    photo(3).save(image)
    pool = demo_references_manifest(n=8, seed=0, location=tmp_path / "refs")
    args = [str(image), "--prompt", PROMPTS[0], "--prompt", PROMPTS[1], "--pretrained", "none", "--image-size", "64",
            "--references", "8", "--reference-manifest", str(pool.location), "--perturbations", "32",
            "--device", "cpu", "--out", str(tmp_path / "out")]
    with pytest.warns(RankDeficientWarning):
        result = CliRunner().invoke(clip_command, args)
    assert result.exit_code == 0, result.output
    rank = re.search(r"rank\(M̂\) = (\d+)/2048", result.output)
    assert rank is not None and 1 < int(rank.group(1)) <= 9  # R + 1 with R = 8 distinct references
    assert (tmp_path / "out" / "clip" / "overlays.png").stat().st_size > 0
    table = pl.read_parquet(tmp_path / "out" / "clip" / "scores.parquet")
    assert table.shape == (4, 5) and set(table["method"]) == {"expected_gradcam", "gradcam"}
    assert table["image"].unique().to_list() == ["noise"] and table["cosine"].abs().max() <= 1


def test_command_errors_are_one_line(tmp_path):
    result = CliRunner().invoke(clip_command, ["--model", "ViT-B-32", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.splitlines()[-1].startswith("Error: open_clip model 'ViT-B-32' has no ResNet image tower")
