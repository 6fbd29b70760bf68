"""The torch device a command runs on."""

from __future__ import annotations

__all__ = ["torch_device"]


def torch_device(name: str | None) -> str:
    """``name`` as a torch device (default: cuda when this machine has a GPU); a one-line ``ValueError`` for a
    device it lacks or a name torch does not know."""
    import torch

    if name is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(str(err).splitlines()[0]) from None
    if device.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0 or (device.index or 0) >= count:
            raise ValueError(f"{name}: this machine has {count} CUDA device(s); use --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"{name}: use cpu or cuda[:N]")
    return str(device)
