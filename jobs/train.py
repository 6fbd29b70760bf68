"""Train a registered architecture on a manifest's images (``camgrid train``): SAMP's MNIST and CIFAR-10 CNNs.

Seed 002 §4.1 trains its two five-layer CNNs (App. A.3) "to convergence using AdamW" and says nothing
more; here: AdamW (lr 1e-3, weight decay 1e-2, PyTorch's betas), cross-entropy, batches of 128 reshuffled
each epoch, 10 epochs, no augmentation, no schedule, images through the model's own preprocessing. The
run is seeded (initial weights, batch order; cuDNN's deterministic kernels on a GPU), so the same seed on
the same device gives the same checkpoint. The images are decoded once and held in memory, which suits
MNIST- and CIFAR-sized data.

The checkpoint is ``{"state_dict", "architecture", "class_names", "config", "train_accuracy",
"test_accuracy"}``, which :func:`attribution.models.load_model` reads as ``weights="file:<path>"``
(with ``num_classes`` the manifest's class count). It is written to a temporary file beside ``out`` and
renamed, so an interrupted run leaves the previous checkpoint or none, never part of one.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from attribution.models.config import ModelConfig
from attribution.models.preprocessing import Preprocessing
from attribution.params import integer, non_negative, positive
from storage.manifest import Manifest, decode_image, read_manifest

__all__ = ["TrainConfig", "TrainResult", "accuracy", "manifest_tensors", "save_checkpoint", "train"]


@dataclass(frozen=True)
class TrainConfig:
    """The optimiser and schedule: AdamW's ``lr`` and ``weight_decay``, ``epochs`` over the training images
    in shuffled batches of ``batch_size``, all seeded by ``seed``."""

    epochs: int = 10
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    seed: int = 0

    def __post_init__(self) -> None:
        integer("epochs", self.epochs, 1)
        integer("batch_size", self.batch_size, 1)
        positive("lr", self.lr)
        non_negative("weight_decay", self.weight_decay)
        integer("seed", self.seed)


@dataclass(frozen=True)
class TrainResult:
    """What a training run wrote and measured: the trained model (eval mode), accuracies after the last epoch."""

    checkpoint: Path
    model: nn.Module
    losses: tuple[float, ...]  # mean training loss per epoch
    train_accuracy: float
    test_accuracy: float | None


def manifest_tensors(manifest: Manifest, preprocessing: Preprocessing,
                     progress: bool = False) -> tuple[Tensor, Tensor]:
    """Every image of ``manifest`` through ``preprocessing`` ``(N, C, H, W)`` and its label ``(N,)``."""
    rows = list(manifest.records())
    images = [preprocessing(decode_image(row)) for row in tqdm(rows, desc=f"decode {manifest.location}",
                                                                unit="img", disable=not progress, leave=False)]
    return torch.stack(images), torch.tensor([row["label"] for row in rows], dtype=torch.long)


@torch.no_grad()
def accuracy(model: nn.Module, images: Tensor, labels: Tensor, batch_size: int = 256) -> float:
    """Top-1 accuracy of ``model`` in eval mode on ``images`` (on the CPU) batch by batch."""
    device = next(model.parameters()).device
    model.eval()
    correct = sum(int((model(images[i:i + batch_size].to(device)).argmax(1).cpu() == labels[i:i + batch_size]).sum())
                  for i in range(0, len(images), batch_size))
    return correct / len(images)


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's generators (the CPU's and ``device``'s) and choose deterministic cuDNN kernels for the block;
    the generators' and cuDNN's states are restored after it."""
    cuda = [device] if device.type == "cuda" else []
    saved = torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark
    with torch.random.fork_rng(devices=cuda, device_type="cuda"):
        torch.manual_seed(seed)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
        try:
            yield
        finally:
            torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved


def save_checkpoint(payload: dict, out: Path) -> Path:
    """``torch.save(payload)`` to ``out`` through a temporary file in its folder and a rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    temporary = out.parent / f".{out.name}.{uuid.uuid4().hex}.tmp"
    try:
        torch.save(payload, temporary)
        os.replace(temporary, out)
    finally:
        temporary.unlink(missing_ok=True)
    return out


def train(
    architecture: str,
    train_manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    test_manifest: str | os.PathLike | None = None,
    config: TrainConfig = TrainConfig(),
    device: str = "cpu",
    echo: Callable[[str], None] = print,
    live: bool = False,
) -> TrainResult:
    """Train ``architecture`` from its initial weights on ``train_manifest`` (as many classes as it names) and
    write the checkpoint ``out``; the test accuracy on ``test_manifest`` (same class names) when given.
    ``echo`` gets a line per epoch and the accuracies; ``live`` shows tqdm bars."""
    untrained = ModelConfig.resolve(architecture, "none")  # an unknown name fails before any image is read
    train_set = read_manifest(train_manifest)
    test_set = None if test_manifest is None else read_manifest(test_manifest)
    if test_set is not None and test_set.class_names != train_set.class_names:
        raise ValueError(f"test manifest {test_set.location} has classes {list(test_set.class_names)[:5]}…, not the "
                         f"training manifest's {list(train_set.class_names)[:5]}…; build both from the same dataset")
    model_config = replace(untrained, num_classes=len(train_set.class_names))
    images, labels = manifest_tensors(train_set, model_config.preprocessing, live)
    test = None if test_set is None else manifest_tensors(test_set, model_config.preprocessing, live)
    where = torch.device(device)
    losses = []
    with _seeded(config.seed, where):
        model = model_config.load(where).model
        optimiser = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        order = torch.Generator().manual_seed(config.seed)
        for epoch in range(1, config.epochs + 1):
            losses.append(_epoch(model, optimiser, images, labels, config.batch_size, order,
                                 f"epoch {epoch}/{config.epochs}", live))
            echo(f"epoch {epoch}/{config.epochs}: loss {losses[-1]:.4f}")
    train_accuracy = accuracy(model, images, labels, config.batch_size)
    test_accuracy = None if test is None else accuracy(model, *test, config.batch_size)
    echo(f"train accuracy {train_accuracy:.4f} ({len(labels)} images)" + (
        "" if test is None else f", test accuracy {test_accuracy:.4f} ({len(test[1])} images)"))
    payload = {"state_dict": {k: v.cpu() for k, v in model.state_dict().items()}, "architecture": architecture,
               "class_names": list(train_set.class_names), "config": asdict(config),
               "train_accuracy": train_accuracy, "test_accuracy": test_accuracy}
    return TrainResult(save_checkpoint(payload, Path(out)), model, tuple(losses), train_accuracy, test_accuracy)


def _epoch(model: nn.Module, optimiser: torch.optim.Optimizer, images: Tensor, labels: Tensor, batch_size: int,
           order: torch.Generator, label: str, live: bool) -> float:
    """One pass over the images in a shuffled order; the mean loss over them."""
    device = next(model.parameters()).device
    model.train()
    permutation = torch.randperm(len(images), generator=order)
    total = 0.0
    with tqdm(total=len(images), desc=label, unit="img", disable=not live, leave=False) as bar:
        for start in range(0, len(images), batch_size):
            batch = permutation[start:start + batch_size]
            loss = nn.functional.cross_entropy(model(images[batch].to(device)), labels[batch].to(device))
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            value = float(loss.detach())
            total += value * len(batch)
            bar.update(len(batch))
            bar.set_postfix(loss=f"{value:.4f}")
    return total / len(images)
