"""What a method or metric needs beyond its maps, declared so that a caller can supply it by one rule.

Methods and metrics state their needs (``needs``, a frozenset of :class:`Need`, per instance since
some depend on parameters: Expected Grad-CAM with Gaussian perturbations draws no reference images).
The grid job supplies each need the same way for every method and metric that declares it; a
notebook passes the same inputs by keyword. Reference images are constructor inputs
(``reference=`` images or ``reference_features=`` their pooled target-layer features), because a
method fits on them once per (model, layer); the job fills those parameters itself, so a spec may not.
"""

from __future__ import annotations

from enum import Enum
from typing import Literal

__all__ = ["POOLS", "REFERENCE_PARAMETERS", "Need", "ReferencePool", "reference_pool_of"]


class Need(str, Enum):
    """One input a method or metric needs besides its maps."""

    MODEL = "model"  # the model, the images it takes and the targets
    MASKS = "masks"  # ground-truth object masks at the images' resolution
    BOXES = "boxes"  # ground-truth boxes of the explained class, per image, in the maps' pixel coordinates
    EXPLAINER = "explainer"  # the same method re-run on new inputs (images, targets → scored maps)
    CHANNEL_WEIGHTS = "channel_weights"  # a CAM's channel weights w (B, K) and its target layer
    BLACK = "black"  # the model's black image, −mean/std per channel
    NORMALISATION = "normalisation"  # the model's input normalisation (mean, std), to score images as pixels
    FIT_REFERENCES = "fit_references"  # features h(x') of the reference pool a method fits on
    HELD_OUT_REFERENCES = "held_out_references"  # features h(x') of the disjoint pool a metric scores on
    SHARD = "shard"  # the scores compare the samples of a call: call it on a whole shard

    def __str__(self) -> str:
        return self.value

    def __hash__(self) -> int:  # equal to its value's, so a need and its name are one set member
        return str.__hash__(self)


REFERENCE_PARAMETERS = ("reference", "reference_features")  # constructor inputs the job fills from a pool

ReferencePool = Literal["fit", "held_out"]  # a method fits on "fit"; a metric scores on the disjoint "held_out"
POOLS: tuple[ReferencePool, ...] = ("fit", "held_out")
_POOLS: dict[Need, ReferencePool] = {Need.FIT_REFERENCES: "fit", Need.HELD_OUT_REFERENCES: "held_out"}


def reference_pool_of(needs: frozenset[Need]) -> ReferencePool | None:
    """The reference pool (``"fit"`` or ``"held_out"``) that these needs draw from, if any."""
    pools = [pool for need, pool in _POOLS.items() if need in needs]
    if len(pools) > 1:
        raise ValueError(f"one method or metric draws from one reference pool, not {pools}")
    return pools[0] if pools else None
