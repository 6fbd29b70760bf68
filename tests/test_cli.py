"""`camgrid explain` end to end on real photos with the offline default model."""

from __future__ import annotations

from click.testing import CliRunner
from PIL import Image

from storage.builders import sample_images
from jobs.cli import main


def test_explain_writes_an_overlay_grid(tmp_path):
    paths = []
    for name, image in sample_images(("chelsea", "coffee")):
        path = tmp_path / f"{name}.png"
        image.save(path)
        paths.append(str(path))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        main, ["explain", *paths, "--methods", "gradcam,expected_gradcam,fakecam", "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert "coffee: top-1 espresso" in result.output
    grid = Image.open(out / "overlays.png")
    assert grid.width > grid.height > 200  # 2 rows × 4 columns


def test_explain_names_a_bad_method_and_a_missing_image(tmp_path):
    result = CliRunner().invoke(main, ["explain", "--methods", "gradcamm", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "unknown method 'gradcamm'" in result.output
    result = CliRunner().invoke(main, ["explain", str(tmp_path / "missing.jpg"), "--out", str(tmp_path)])
    assert result.exit_code == 1 and "image file not found" in result.output
