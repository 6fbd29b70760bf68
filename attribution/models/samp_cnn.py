"""The five-layer CNNs of SAMP (seed 002 §4.1, App. A.3, Table 5) for MNIST and CIFAR-10.

Table 5, without padding (the spatial sizes it implies, 28→24→12→9→4→2→1 and 32→28→14→11→5→3→1,
need none)::

    conv1  5×5, C1 + ReLU
    conv2  2×2, C2, stride 2
    conv3  4×4, C3 + ReLU
    conv4  2×2, C4, stride 2
    conv5  3×3, C5 + ReLU
    pool   adaptive max pool to 1×1

MNIST (1×28×28): ``C = 8, 24, 288, 864, 2592``; CIFAR-10 (3×32×32): ``C = ?, 64, 512, 1536, 4608``.

Where Table 5 is silent:

- CIFAR-10's conv1 width is missing: here 32. MNIST's conv1 → conv2 ratio (×3) would give 21⅓; 32, half
  of conv2's 64, keeps every layer wider than the one before it, as in each row of Table 5, and is the
  usual first width of a small CIFAR-10 network.
- The classifier is not listed: here one ``Linear(C5, 10)`` on the pooled vector, the least a
  classifier can be (the models are trained "to convergence using AdamW", §4.1, with nothing else said).

The CAM target layer is ``relu5`` (conv5 after its ReLU, the last convolutional feature map), with
``K = C5`` channels; the models take pixels scaled to [0, 1] with mean 0 and std 1 (the seed gives no
normalisation), so the "zero-filled" Deletion baseline (§4.1) is black both as pixels and as the
model's input.
"""

from __future__ import annotations

from torch import Tensor, nn

__all__ = ["CIFAR10_WIDTHS", "MNIST_WIDTHS", "SAMPCNN", "samp_cnn_cifar10", "samp_cnn_mnist"]

MNIST_WIDTHS = (8, 24, 288, 864, 2592)
CIFAR10_WIDTHS = (32, 64, 512, 1536, 4608)


class SAMPCNN(nn.Module):
    """Table 5's five convolutions (``widths`` = their output channels), an adaptive max pool and a linear head."""

    def __init__(self, in_channels: int, widths: tuple[int, int, int, int, int], num_classes: int = 10) -> None:
        super().__init__()
        c1, c2, c3, c4, c5 = widths
        self.conv1 = nn.Conv2d(in_channels, c1, 5)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(c1, c2, 2, stride=2)
        self.conv3 = nn.Conv2d(c2, c3, 4)
        self.relu3 = nn.ReLU()
        self.conv4 = nn.Conv2d(c3, c4, 2, stride=2)
        self.conv5 = nn.Conv2d(c4, c5, 3)
        self.relu5 = nn.ReLU()
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(c5, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv2(self.relu1(self.conv1(x)))
        x = self.conv4(self.relu3(self.conv3(x)))
        return self.fc(self.flatten(self.pool(self.relu5(self.conv5(x)))))


def samp_cnn_mnist(num_classes: int = 10) -> SAMPCNN:
    """Table 5's MNIST network: 1×28×28 inputs."""
    return SAMPCNN(1, MNIST_WIDTHS, num_classes)


def samp_cnn_cifar10(num_classes: int = 10) -> SAMPCNN:
    """Table 5's CIFAR-10 network: 3×32×32 inputs, conv1 of 32 channels (the module's choice)."""
    return SAMPCNN(3, CIFAR10_WIDTHS, num_classes)
