"""The torch device a command runs on, and the process setting that CPU work needs."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["compute_device", "retain_freed_memory", "torch_device"]

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@functools.cache
def retain_freed_memory() -> bool:
    """Let glibc keep the memory torch frees on the CPU for the next tensor instead of returning it to the kernel.

    By default glibc serves every allocation above a dynamic threshold (at most 32 MiB) with its own ``mmap`` and
    unmaps it when freed, so each batch of masked images or path points (tens of MB) is page-faulted in afresh:
    on a 2-core laptop Score-CAM spent more time in the kernel than in torch (23.3 s wall, 24.2 s system time for
    two images at EfficientNet-Lite0's ``blocks.5``; 10.8 s and 1.1 s with both thresholds raised, as here:
    ``benchmarks/bench_allocator.py``). The
    process then holds its peak memory until it exits. Both thresholds are needed: either alone changes nothing.
    True where applied (Linux with glibc), False elsewhere (a no-op)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return False
    if mallopt is None:
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))


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


def compute_device(name: str | None) -> str:
    """:func:`torch_device` for a process that computes on it: on the CPU, with :func:`retain_freed_memory`."""
    device = torch_device(name)
    if device == "cpu":
        retain_freed_memory()
    return device
