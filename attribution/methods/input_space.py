"""The interface of methods that attribute to the input pixels rather than to a layer's channels.

An input-space method (the path methods of seeds 002 and 004) gives ``(B, C, H, W)`` attributions
``a`` to the model's input; its map is their sum over channels, ``(B, H, W)`` and signed (NOTES §8:
the reduction Deletion, Insertion and SIC read), and it is scored without the ReLU that ends a CAM.
It is bound like every method (``method.bind(model, layer)``) and ignores the layer: the whole
network is ``split.head(*split.features(x))``. ``f_c`` is the target's softmax probability by
default (``score="probability"``) or its logit; the baseline ``"black"`` is the model's black image
``−mean/std`` (``Need.BLACK``: the job passes ``black=``, a notebook passes the preprocessing's).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from attribution.methods.base import Attribution, CAMMethod, Seeds, Targets, forward_pass
from attribution.needs import Need
from attribution.params import check_black, choice, integer
from attribution.split import LayerSplit

__all__ = ["InputSpaceMethod", "Model", "Score"]

Score = Literal["probability", "logit"]
Model = Callable[[Tensor], Tensor]  # images (N, C, H, W) → logits (N, classes)
SCORES: tuple[Score, ...] = ("probability", "logit")


class InputSpaceMethod(CAMMethod):
    """A method whose attributions are ``(B, C, H, W)`` on the input; subclasses implement
    :meth:`input_attributions`. ``batch_size`` bounds the images per forward/backward pass (a path's
    points are batched across steps and samples); ``None`` runs each call's points at once."""

    rectified = False

    def __init__(self, score: Score = "probability", batch_size: int | None = None,
                 black: Sequence[float] | None = None) -> None:
        self.score = choice("score", score, SCORES)
        self.batch_size = None if batch_size is None else integer("batch_size", batch_size, 1)
        self.black = check_black(black)

    @property
    def uses_black(self) -> bool:
        """Whether this configuration's baseline is the model's black image."""
        return True

    @property
    def needs(self) -> frozenset[Need]:
        return frozenset({Need.BLACK}) if self.uses_black else frozenset()

    def black_image(self, images: Tensor) -> Tensor:
        """The model's black image ``(1, C, 1, 1)`` on the images' device, or a one-line error saying what to pass."""
        if self.black is None:
            raise ValueError(f"{self.name} starts from the model's black image: pass black= (−mean/std per channel; "
                             "zeros for a model that takes [0, 1] pixels)")
        if len(self.black) != images.shape[1]:
            raise ValueError(f"black has {len(self.black)} values but the images have {images.shape[1]} channels")
        return torch.tensor(self.black, device=images.device, dtype=images.dtype).reshape(1, -1, 1, 1)

    def target_scores(self, logits: Tensor, targets: Tensor) -> Tensor:
        """``f_c`` per row: the target's probability or logit."""
        scores = logits.softmax(dim=1) if self.score == "probability" else logits
        return scores.gather(1, targets[:, None]).squeeze(1)

    def scores_and_gradients(self, model: Model, points: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``(f_c(x) (N,), ∂f_c/∂x (N, C, H, W))`` for ``N`` points (one target each), ``batch_size`` at a time."""
        step = self.batch_size or len(points)
        scores, grads = [], []
        with torch.enable_grad():
            for start in range(0, len(points), step):
                x = points[start : start + step].detach().requires_grad_(True)
                value = self.target_scores(model(x), targets[start : start + step])
                (grad,) = torch.autograd.grad(value.sum(), x)
                scores.append(value.detach())
                grads.append(grad)
        return torch.cat(scores), torch.cat(grads)

    def _attribute(self, split: LayerSplit, images: Tensor, targets: Targets, seeds: Seeds) -> Attribution:
        resolved = forward_pass(split, images, targets).targets

        def model(x: Tensor) -> Tensor:
            return split.head(*split.features(x))

        inputs = self.input_attributions(model, images, resolved, seeds).detach()
        return Attribution(inputs.sum(dim=1), resolved, None, inputs=inputs, rectified=False)

    @abstractmethod
    def input_attributions(self, model: Model, images: Tensor, targets: Tensor, seeds: Seeds) -> Tensor:
        """``(B, C, H, W)`` attributions of ``targets`` (resolved class indices) for checked ``images``."""
