"""`camgrid explain` end to end on real photos with the offline default model."""

from __future__ import annotations

import pytest
from click.testing import CliRunner
from PIL import Image

from attribution.channel_scaling import RankDeficientWarning
from jobs.cli import main
from storage.builders import build, sample_images


def test_explain_writes_an_overlay_grid(tmp_path):
    paths = []
    for name, image in sample_images(("chelsea", "coffee")):
        path = tmp_path / f"{name}.png"
        image.save(path)
        paths.append(str(path))
    out = tmp_path / "out"
    references = tmp_path / "references"
    build("demo_references", None, references, n=24)  # a small pool: the run says M̂ is rank-deficient
    with pytest.warns(RankDeficientWarning):
        result = CliRunner().invoke(
            main,
            ["explain", *paths, "--methods", "gradcam,expected_gradcam,fakecam", "--out", str(out),
             "--references", str(references)],
        )
    assert result.exit_code == 0, result.output
    assert "coffee: top-1 espresso" in result.output
    assert "reference features of 24 images" in result.output
    assert "expected_gradcam: M = 2560, K = 1280, R = 24 distinct references: rank(M̂) = 25/1280" in result.output
    grid = Image.open(out / "overlays.png")
    assert grid.width > grid.height > 200  # 2 rows × 4 columns


def test_explain_names_a_bad_method_and_a_missing_image(tmp_path):
    result = CliRunner().invoke(main, ["explain", "--methods", "gradcamm", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown method 'gradcamm'" in result.output
    result = CliRunner().invoke(main, ["explain", str(tmp_path / "missing.jpg"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "image file not found" in result.output
