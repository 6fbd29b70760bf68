"""The MNIST builder on IDX files written here (plain and gzipped, in ROOT or torchvision's MNIST/raw)."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner
from dataset_layouts import mnist, write_idx

from jobs.cli import main
from storage.builders import build
from storage.manifest import ManifestError, decode_image, read_manifest


def test_images_are_the_idx_pixels_and_classes_the_digits(tmp_path):
    pixels = mnist(tmp_path)
    manifest = build("mnist", tmp_path, tmp_path / "m", n=None, shard_size=5)
    assert len(manifest) == 12 and manifest.shards == [0, 1, 2]
    assert manifest.class_names == tuple("0123456789")
    record = {r["image_id"]: r for r in manifest.records()}["test_00004"]
    assert record["label"] == 1 and record["label_name"] == "1" and record["split"] == "test"
    assert (record["width"], record["height"]) == (28, 28)
    np.testing.assert_array_equal(np.asarray(decode_image(record))[..., 0], pixels[4])
    train = build("mnist", tmp_path, tmp_path / "t", split="train", n=None)  # the .gz files
    assert sorted(r["label_name"] for r in train.records()) == ["7", "7", "8", "9"]


def test_the_cli_builds_files_in_root(tmp_path):
    rng = np.random.default_rng(2)
    write_idx(tmp_path / "t10k-images-idx3-ubyte.gz", 0x0803, rng.integers(0, 256, (3, 28, 28)), compress=True)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", 0x0801, np.array([0, 5, 9]))
    result = CliRunner().invoke(main, ["manifest", "build", "mnist", str(tmp_path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 0, result.output
    assert "3 images" in result.output and "10 classes" in result.output
    assert sorted(read_manifest(tmp_path / "m").table.column("label").to_pylist()) == [0, 5, 9]


def _bad(tmp_path, images, labels, image_magic=0x0803):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", image_magic, images)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", 0x0801, labels)


@pytest.mark.parametrize("case, message", [
    ("missing", r"missing MNIST file .*t10k-labels-idx1-ubyte \(expected layout"),
    ("magic", r"MNIST file .*t10k-images-idx3-ubyte has magic number 0x0801, expected 0x0803"),
    ("count", r"MNIST file .*t10k-images-idx3-ubyte has 3 images but .*t10k-labels-idx1-ubyte has 2 labels"),
    ("truncated", r"MNIST file .*t10k-images-idx3-ubyte holds 2351 data bytes, but its header says 3 × 28 × 28 = 2352"),
    ("label", r"MNIST file .*t10k-labels-idx1-ubyte: label 12 at row 1 is not a digit 0-9"),
])
def test_bad_files_are_a_one_line_error_naming_the_file(tmp_path, case, message):
    images = np.zeros((3, 28, 28), dtype=np.uint8)
    if case == "missing":
        write_idx(tmp_path / "t10k-images-idx3-ubyte", 0x0803, images)
    elif case == "magic":
        _bad(tmp_path, images, np.zeros(3), image_magic=0x0801)
    elif case == "count":
        _bad(tmp_path, images, np.zeros(2))
    elif case == "truncated":
        _bad(tmp_path, images, np.zeros(3))
        path = tmp_path / "t10k-images-idx3-ubyte"
        path.write_bytes(path.read_bytes()[:-1])
    else:
        _bad(tmp_path, images, np.array([0, 12, 3]))
    with pytest.raises((ManifestError, FileNotFoundError), match=message) as raised:
        build("mnist", tmp_path, tmp_path / "m")
    assert "\n" not in str(raised.value)
    result = CliRunner().invoke(main, ["manifest", "build", "mnist", str(tmp_path), "--out", str(tmp_path / "m")])
    assert result.exit_code == 1 and result.output.count("\n") == 1 and "t10k-" in result.output
