"""``camgrid train``: AdamW on a manifest's images, seeded, a checkpoint that load_model reads, written atomically."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import jobs.train
from attribution.models import ARCHITECTURES, Preprocessing, load_model
from attribution.models.registry import CAMGRID_MODELS, Architecture
from attribution.models.samp_cnn import SAMPCNN
from jobs.cli import main
from jobs.train import TrainConfig, train
from storage.builders import build


def _quadrants(root: Path, n: int, seed: int = 0) -> Path:
    """``n`` grayscale 28×28 images of 4 classes: class k has its k-th quadrant bright, the rest dark noise."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        k = i % 4
        pixels = rng.integers(0, 60, (28, 28), dtype=np.uint8)
        row, col = divmod(k, 2)
        pixels[row * 14:(row + 1) * 14, col * 14:(col + 1) * 14] = rng.integers(190, 256, (14, 14))
        (root / "images" / f"q{k}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels, mode="L").save(root / "images" / f"q{k}" / f"{i:03d}.png")
    build("folder", root / "images", root / "manifest", n=None)
    return root / "manifest"


@pytest.fixture(scope="module")
def quadrants(tmp_path_factory):
    root = tmp_path_factory.mktemp("quadrants")
    return _quadrants(root / "train", 64), _quadrants(root / "test", 32, seed=1)


@pytest.fixture
def tiny(monkeypatch):
    """Table 5's layers at a few channels each, registered as ``tiny_cnn`` (seconds to train on 2 cores)."""
    monkeypatch.setitem(CAMGRID_MODELS, "tiny_cnn", (lambda classes: SAMPCNN(1, (4, 8, 16, 16, 32), classes),
                                                    Preprocessing(28, 28, (0.0,), (1.0,), channels=1)))
    monkeypatch.setitem(ARCHITECTURES, "tiny_cnn", Architecture("tiny_cnn", "camgrid", "tiny_cnn", "relu5", 32, ""))
    return "tiny_cnn"


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_training_learns_the_quadrants_and_is_deterministic(tmp_path, quadrants, tiny):
    config = TrainConfig(epochs=15, batch_size=16, lr=3e-3, seed=0)
    lines = []
    first = train(tiny, quadrants[0], tmp_path / "a.pt", test_manifest=quadrants[1], config=config, echo=lines.append)
    assert first.train_accuracy >= 0.95 and first.test_accuracy >= 0.9
    assert first.losses[-1] < first.losses[0] / 5
    assert lines[0].startswith("epoch 1/15: loss ") and "test accuracy" in lines[-1]
    again = train(tiny, quadrants[0], tmp_path / "b.pt", config=config, echo=lambda _: None)
    assert again.losses == first.losses
    assert all(torch.equal(v, _state(tmp_path / "b.pt")[k]) for k, v in _state(tmp_path / "a.pt").items())
    other = train(tiny, quadrants[0], tmp_path / "c.pt", config=TrainConfig(epochs=1, seed=1), echo=lambda _: None)
    assert other.losses[0] != first.losses[0]
    stored = torch.load(tmp_path / "a.pt", weights_only=True)
    assert stored["class_names"] == ["q0", "q1", "q2", "q3"] and stored["config"]["lr"] == 3e-3
    assert stored["test_accuracy"] == first.test_accuracy


def test_the_checkpoint_loads_as_file_weights_with_the_same_logits(tmp_path, quadrants):
    result = train("samp_cnn_mnist", quadrants[1], tmp_path / "samp_cnn_mnist.pt",
                   config=TrainConfig(epochs=1, batch_size=32), echo=lambda _: None)
    loaded = load_model("samp_cnn_mnist", f"file:{result.checkpoint}", num_classes=4)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded.model(x), result.model.eval()(x))
    with pytest.raises(ValueError, match="shape mismatches"):
        load_model("samp_cnn_mnist", f"file:{result.checkpoint}", num_classes=10)


def test_an_interrupted_save_leaves_the_previous_checkpoint_whole(tmp_path, quadrants, tiny, monkeypatch):
    out = tmp_path / "ck.pt"
    train(tiny, quadrants[1], out, config=TrainConfig(epochs=1), echo=lambda _: None)
    before = out.read_bytes()
    saved = torch.save

    def interrupted(payload, path):
        saved(payload, path)
        Path(path).write_bytes(Path(path).read_bytes()[:100])
        raise KeyboardInterrupt

    monkeypatch.setattr(jobs.train.torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(tiny, quadrants[1], out, config=TrainConfig(epochs=1, seed=5), echo=lambda _: None)
    assert out.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["ck.pt"]


def test_the_cli_trains_and_names_bad_input(tmp_path, quadrants, tiny):
    runner = CliRunner()
    out = tmp_path / "ck.pt"
    result = runner.invoke(main, ["train", tiny, str(quadrants[0]), "--test", str(quadrants[1]), "--out", str(out),
                                  "--epochs", "2", "--batch-size", "32", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "epoch 2/2" in result.output and "test accuracy" in result.output and f"file:{out}" in result.output
    assert load_model(tiny, f"file:{out}", num_classes=4).model.fc.out_features == 4
    missing = runner.invoke(main, ["train", tiny, str(tmp_path / "nope"), "--out", str(out)])
    assert missing.exit_code == 1 and "nope" in missing.output and missing.output.count("\n") == 1
    unknown = runner.invoke(main, ["train", "samp_cnn_mnst", str(tmp_path / "nope"), "--out", str(out)])
    assert unknown.exit_code == 1 and "Did you mean 'samp_cnn_mnist'" in unknown.output
