"""Small networks whose CAMs have closed forms, and seeded inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn


class GapLinearNet(nn.Module):
    """conv → ReLU (target ``features``) → global average pool → linear: the CAM architecture."""

    def __init__(self, channels: int = 6, classes: int = 5):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, channels, 3, stride=2, padding=1), nn.ReLU())
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, classes)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class SmoothNet(nn.Module):
    """A linear prefix (bias-free conv, target ``features``) and a smooth nonlinear suffix.

    ``A(t·x) = t·A(x)``, so the straight input path is a straight path in feature space and the
    integrated methods' completeness holds up to the Riemann error.
    """

    def __init__(self, channels: int = 6, classes: int = 4):
        super().__init__()
        self.features = nn.Conv2d(3, channels, 3, stride=2, padding=1, bias=False)
        self.mix = nn.Conv2d(channels, 8, 1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x):
        h = nn.functional.softplus(self.mix(self.features(x)))
        return self.fc(torch.tanh(h.mean(dim=(2, 3))))


@pytest.fixture
def gap_net() -> GapLinearNet:
    torch.manual_seed(0)
    return GapLinearNet().eval()


@pytest.fixture
def smooth_net() -> SmoothNet:
    torch.manual_seed(1)
    return SmoothNet().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def reference() -> torch.Tensor:
    return torch.randn(12, 3, 16, 16, generator=torch.Generator().manual_seed(3))
