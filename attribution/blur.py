"""Gaussian blurs of images that methods and metrics share."""

from __future__ import annotations

from torch import Tensor
from torchvision.transforms.v2.functional import gaussian_blur

__all__ = ["rise_blur"]


def rise_blur(images: Tensor, kernel: int = 11, sigma: float = 5.0) -> Tensor:
    """RISE's blur (Petsiuk et al. 2018, ``gkern(11, 5)``): the start of Insertion and of SAMP's insertion path
    (kernel 31 on ImageNet in seed 002). Reflection padding; the kernel shrinks to ``2·side − 1`` on images whose
    side is at most ``kernel // 2``, where reflection needs it."""
    size = min(kernel, 2 * min(images.shape[-2:]) - 1)
    return gaussian_blur(images, kernel_size=[size, size], sigma=[sigma, sigma])
