"""App. C.1 of Buono et al., "Not All CAMs Are Complete": internal saturation along the scaling path.

Following Sundararajan et al. (2017), each image ``x`` is scaled towards the black image, ``α·x`` for
``α ∈ [0, 1]``: in the model's normalised space ``black + α·(x − black)`` with ``black = −mean/std``, which is
the pixel image ``α·p`` normalised (the points of the Integrated-Gradients path from a black baseline). Along
the path (Figs. 9–12): the cosine similarity of the target layer's activations ``A(α·x)`` (flattened) to
``A(x)``, and the pre-softmax and post-softmax score of the image's top label at ``α = 1``. A curve that
flattens early saturates: gradients along its flat part under-represent the features (Fig. 2).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import torch
from torch import Tensor, nn

from attribution.layout import FeatureLayout
from attribution.methods.base import forward_pass
from attribution.split import split_at
from jobs.analyze.tables import summarise

__all__ = ["SaturationCurves", "saturation_curves"]

COLUMNS = ("cosine", "logit", "probability")


@dataclass(frozen=True)
class SaturationCurves:
    """``table`` has one row per (image, ``α``): ``cosine``, ``logit`` (pre-softmax) and ``probability``."""

    layer: str
    alphas: tuple[float, ...]
    table: pl.DataFrame

    def summary(self) -> pl.DataFrame:
        """Mean and standard deviation per ``α`` over images (the figures draw mean ± 2 std)."""
        return summarise(self.table, ["alpha"], COLUMNS)


def saturation_curves(
    model: nn.Module,
    layer: str,
    images: Tensor,
    alphas: Sequence[float] | np.ndarray,
    *,
    black: Sequence[float],
    layout: FeatureLayout | None = None,
) -> SaturationCurves:
    """The curves of App. C.1 for normalised ``images`` ``(B, C, H, W)`` at each ``α`` (see the module docstring).

    ``black`` is the model's black image per channel (:attr:`attribution.models.Preprocessing.black`).
    """
    split = split_at(model, layer, layout)
    base = forward_pass(split, images, None)
    reference, targets = base.feats.flatten(1).double(), base.targets
    floor = torch.as_tensor(black, dtype=images.dtype, device=images.device)[None, :, None, None]
    rows = []
    for alpha in (float(a) for a in alphas):
        scaled = forward_pass(split, floor + alpha * (images - floor), targets)
        cosine = torch.nn.functional.cosine_similarity(scaled.feats.flatten(1).double(), reference, dim=1)
        logits = scaled.logits.double()
        logit = logits.gather(1, targets[:, None])[:, 0]
        probability = logits.softmax(dim=1).gather(1, targets[:, None])[:, 0]
        rows += [
            {"image": i, "target": int(t), "alpha": alpha, "cosine": float(c), "logit": float(s),
             "probability": float(p)}
            for i, (t, c, s, p) in enumerate(zip(targets.tolist(), cosine.tolist(), logit.tolist(),
                                                 probability.tolist()))
        ]
    return SaturationCurves(layer, tuple(float(a) for a in alphas), pl.DataFrame(rows))
