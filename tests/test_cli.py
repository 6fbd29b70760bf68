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


def test_run_and_build_options_fail_in_one_line(tmp_path):
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("name: caf\xe9\n".encode("latin-1"))
    result = CliRunner().invoke(main, ["run", str(spec), "--out", str(tmp_path / "r")])
    assert result.exit_code == 1 and "latin1.yaml: not UTF-8 text" in result.output
    for option in (["--shard-size", "0"], ["--shard-size", "-1"], ["-n", "0"]):
        result = CliRunner().invoke(main, ["manifest", "build", "demo", "--out", str(tmp_path / "m"), *option])
        assert result.exit_code == 2 and "is not in the range x>=1" in result.output, option
    result = CliRunner().invoke(main, ["run", "demo", "--out", str(tmp_path / "r"),
                                       "--set", "datasets.demo.manifest={data}/demo"])
    assert result.exit_code == 1 and "unknown placeholder {data}" in result.output  # read as text, not YAML


def test_setting_values_read_as_yaml_where_they_are_yaml():
    from jobs.cli import _setting

    assert _setting("5") == 5 and _setting("[1, 2]") == [1, 2] and _setting("{a: 1}") == {"a": 1}
    assert _setting("{data}/x") == "{data}/x" and _setting("resnet50") == "resnet50"


def test_explain_on_a_device_this_machine_lacks_says_so(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    result = CliRunner().invoke(main, ["explain", "--device", "cuda", "--methods", "gradcam", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "this machine has 0 CUDA device(s); use --device cpu" in result.output
    result = CliRunner().invoke(main, ["explain", "--device", "tpu9", "--methods", "gradcam", "--out", str(tmp_path)])
    assert result.exit_code == 2 and "--device" in result.output and "Traceback" not in result.output


def test_a_run_directory_that_cannot_be_written_is_one_line_and_its_traceback_goes_to_the_log(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "run"
    result = CliRunner().invoke(main, ["run", "demo", "--out", str(out)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    (line,) = result.output.strip().splitlines()
    assert line.startswith(f"Error: {out}: cannot write the run directory (Not a directory); give another --out")
    log = line.rsplit("(details: ", 1)[1].rstrip(")")
    assert "Traceback" in open(log, encoding="utf-8").read()  # in the temporary folder: the run's cannot hold it


def test_signed_maps_are_drawn_by_magnitude_clipped_at_the_99th_percentile():
    import torch

    from attribution.postprocess import minmax_normalize
    from jobs.explain import display_scale

    signed = torch.linspace(-1.0, 1.0, 10_000).reshape(1, 100, 100)
    signed[0, 0, 0] = -1e4  # one extreme pixel, as IG's saturated gradients give
    shown = display_scale(signed, rectified=False)
    assert shown.shape == signed.shape and float(shown.max()) == 1.0 and float(shown.min()) >= 0.0
    assert float(shown[0, 0, 0]) == 1.0 and float(shown[0, 50, 0]) < 0.01  # |a| ≈ 0 stays dark
    assert 0.4 < float(shown[0, 75, 0]) < 0.6  # |a| ≈ 0.5 of the 99th percentile (≈ 0.98) is mid-scale
    assert float(minmax_normalize(signed)[0, 75, 0]) > 0.99  # min-max would draw it as the top colour
    cam = torch.rand(2, 7, 7)
    torch.testing.assert_close(display_scale(cam, rectified=True), minmax_normalize(cam))


def test_explain_takes_a_checkpoints_class_count(tmp_path):
    """A 10-class MNIST CNN checkpoint: refused at ImageNet's 1000 outputs with the hint, explained with
    ``--num-classes 10`` (grayscale, 28 px; the top-1 class named by its index)."""
    import torch

    from attribution.models import load_model

    checkpoint = tmp_path / "mnist.pt"
    torch.save(load_model("samp_cnn_mnist", "none", num_classes=10).model.state_dict(), checkpoint)
    (name, image), = sample_images(("camera",))
    image.save(tmp_path / f"{name}.png")
    args = ["explain", str(tmp_path / f"{name}.png"), "--model", "samp_cnn_mnist", "--weights", f"file:{checkpoint}",
            "--methods", "gradcam", "--out", str(tmp_path / "out")]
    refused = CliRunner().invoke(main, args)
    assert refused.exit_code == 1 and "is num_classes right?" in refused.output
    result = CliRunner().invoke(main, [*args, "--num-classes", "10"])
    assert result.exit_code == 0, result.output
    label = result.output.split(f"{name}: top-1 ")[1].split()[0]
    assert label.isdigit() and 0 <= int(label) < 10
    assert (tmp_path / "out" / "overlays.png").exists()
