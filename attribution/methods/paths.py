"""What the path methods share: a path's points, gradients and scores, its Riemann sum, and IDGI over it.

A path method attributes along a path ``γ`` from a baseline ``x′ = γ(0)`` to the input ``x = γ(1)``
(seed 004 eq. 1): ``I_i = ∫₀¹ ∂f_c(γ(α))/∂γ_i · ∂γ_i/∂α dα``. Each method discretises it into
points ``x_0 = x′, …, x_m = x`` and a Riemann sum ``I ≈ Σ_j Δ_j ⊙ g_j`` over the gradients
``g_j = ∂f_c/∂x (x_j)``, where ``Δ_j`` is the path's displacement that method charges to point ``j``
(Integrated Gradients: ``(x − x′)/steps`` at every point; Blur IG: the blur's finite-difference
derivative times its σ step; Guided IG: ``x_{j+1} − x_j``).

IDGI (seed 004 §3, Algorithm 1; Yang et al. 2023) keeps the points and replaces the sum by
``I_i = Σ_{j=0}^{m−1} g_{j,i}² · d_j / (g_j · g_j)`` with ``d_j = f_c(x_{j+1}) − f_c(x_j)``: each step's
score change is spread over the features in proportion to ``g_{j,i}²``, so ``Σ_i I_i = Σ_j d_j =
f_c(x) − f_c(x′)`` exactly (telescoping) for any number of steps. It is accumulated in float64.
A step whose gradient is zero has no direction to spread ``d_j`` along: it contributes nothing, its
``d_j`` is missing from the total (completeness then fails by the sum of those ``d_j``), and the
step is counted and reported by a :class:`ZeroGradientWarning`.

The attribution streams the path in blocks of ``batch_size`` points (steps × samples through one
forward/backward; ``None``: the whole path at once), holding one block's points, gradients and ``Δ_j``
(or IDGI's float64 weights) at a time. :meth:`PathMethod.path` keeps every point and gradient:
``2 × (m + 1) × B × C × H × W`` numbers (Guided IG's points in float64).
"""

from __future__ import annotations

import warnings
from abc import abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor

from attribution.methods.base import Seeds, check_images
from attribution.methods.input_space import InputSpaceMethod, Model, Score

__all__ = ["IDGI", "Path", "PathMethod", "Segment", "Use", "ZeroGradientWarning", "idgi"]


class ZeroGradientWarning(UserWarning):
    """IDGI met path steps with a zero gradient: their score change is not attributed."""


@dataclass(frozen=True)
class Path:
    """A batch of discretised paths, baseline first: ``points[0] = x′`` and ``points[-1] = x``."""

    points: Tensor  # (m + 1, B, C, H, W): x_0 = x′, …, x_m = x
    gradients: Tensor  # (m + 1, B, C, H, W): ∂f_c/∂x at each point
    scores: Tensor  # (m + 1, B): f_c at each point

    def __post_init__(self) -> None:
        if self.points.shape != self.gradients.shape or self.scores.shape != self.points.shape[:2]:
            raise ValueError(f"a path needs points and gradients (m+1, B, C, H, W) and scores (m+1, B); got "
                             f"{tuple(self.points.shape)}, {tuple(self.gradients.shape)}, {tuple(self.scores.shape)}")

    @property
    def steps(self) -> int:
        """``m``, the number of intervals between the points."""
        return self.points.shape[0] - 1


Use = Literal["path", "riemann", "idgi"]  # what the caller of PathMethod.segments needs


@dataclass(frozen=True)
class Segment:
    """Consecutive points ``j … j+k−1`` of a path (``k`` of them per sample), in path order."""

    points: Tensor | None  # (k, B, C, H, W), for the use "path"
    scores: Tensor  # (k, B)
    gradients: Tensor | None  # (k, B, C, H, W); None only for the last point, for the use "idgi"
    deltas: Tensor | None  # broadcastable to gradients: the Δ_j of the method's sum, for the use "riemann"


class IDGI:
    """Algorithm 1 of seed 004 fed a path in order, one :class:`Segment`'s scores and gradients at a time.

    ``lost`` (``(B,)``) sums the ``d_j`` of the steps skipped for a zero gradient, ``skipped`` counts them.
    """

    def __init__(self) -> None:
        self.total: Tensor | None = None
        self.lost: Tensor | None = None
        self.skipped: Tensor | None = None
        self._last: tuple[Tensor, Tensor, Tensor] | None = None  # the latest point's weights, score, zero flag
        self._shape: tuple[int, ...] = ()

    def add(self, scores: Tensor, gradients: Tensor | None = None) -> None:
        """The next ``k`` points: scores ``(k, B)`` and gradients ``(k, B, C, H, W)``; the path's last point
        may come alone without its gradient, which IDGI does not use."""
        scores = scores.double()
        if self._last is not None:
            weights, score, zero = self._last
            self._accumulate(weights[None], (scores[0] - score)[None], zero[None])
        if gradients is None:
            if self._last is None or len(scores) != 1:
                raise ValueError("only the last point of a path may come without its gradient")
            self._last = None
            return
        squares = gradients.double().flatten(2).square()
        norms = squares.sum(dim=2)
        zero = norms == 0
        weights = torch.where(zero[..., None], 0.0, squares / norms[..., None])
        if self.total is None:
            batch, features = squares.shape[1:]
            self.total = squares.new_zeros(batch, features)
            self.lost = scores.new_zeros(batch)
            self.skipped = torch.zeros(batch, dtype=torch.long, device=scores.device)
            self._shape = tuple(gradients.shape[1:])
        self._accumulate(weights[:-1], scores[1:] - scores[:-1], zero[:-1])
        self._last = (weights[-1], scores[-1], zero[-1])

    def _accumulate(self, weights: Tensor, d: Tensor, zero: Tensor) -> None:
        """Steps ``j`` with weights ``g_j²/‖g_j‖²`` ``(n, B, D)``, score changes ``d_j`` ``(n, B)`` and zero flags."""
        self.total += (weights * d[..., None]).sum(dim=0)
        self.lost += (d * zero).sum(dim=0)
        self.skipped += zero.sum(dim=0)

    def result(self) -> Tensor:
        """``I^IDGI`` ``(B, C, H, W)`` in float64; warns when steps were skipped for a zero gradient."""
        if self.total is None:
            raise ValueError("IDGI needs at least one path point with its gradient")
        if self.skipped.any():
            warnings.warn(f"IDGI skipped {self.skipped.tolist()} path steps per sample with a zero gradient; their "
                          f"score changes {self.lost.tolist()} are not attributed", ZeroGradientWarning, stacklevel=3)
        return self.total.reshape(self._shape)


def idgi(path: Path) -> Tensor:
    """IDGI (seed 004 Algorithm 1) over ``path``: ``(B, C, H, W)`` in float64, summing to ``f_c(x) − f_c(x′)``."""
    accumulator = IDGI()
    accumulator.add(path.scores, path.gradients)
    return accumulator.result()


class PathMethod(InputSpaceMethod):
    """An input-space method that integrates gradients along a path; subclasses walk it (:meth:`segments`).

    With ``idgi=True`` the attribution is IDGI over the method's own points instead of its Riemann sum.
    """

    def __init__(self, idgi: bool = False, score: Score = "probability", batch_size: int | None = None,
                 black: Sequence[float] | None = None) -> None:
        super().__init__(score=score, batch_size=batch_size, black=black)
        if not isinstance(idgi, bool):
            raise TypeError(f"idgi must be True or False; got {idgi!r}")
        self.idgi = idgi

    @abstractmethod
    def segments(self, model: Model, images: Tensor, targets: Tensor, use: Use) -> Iterator[Segment]:
        """The path from the baseline to ``images``, in order, in segments of at most ``batch_size`` points.

        ``use`` says what the caller needs: ``"path"``, every point with its score and gradient;
        ``"riemann"``, the gradients and ``Δ_j`` of the points whose ``Δ_j`` can be nonzero; ``"idgi"``,
        every point's score and the gradients of all points but the last.
        """

    def path(self, model: Model, images: Tensor, targets: Tensor) -> Path:
        """Every point of the path of ``images`` ``(B, C, H, W)`` for ``targets`` (``(B,)`` class indices)."""
        check_images(images)
        targets = torch.as_tensor(targets, device=images.device).long().expand(images.shape[0])
        parts = list(self.segments(model, images, targets, "path"))
        return Path(*(torch.cat([getattr(s, name) for s in parts]) for name in ("points", "gradients", "scores")))

    def input_attributions(self, model: Model, images: Tensor, targets: Tensor, seeds: Seeds) -> Tensor:
        """The method's Riemann sum ``Σ_j Δ_j ⊙ g_j``, or IDGI over its points; deterministic (``seeds`` unused)."""
        if self.idgi:
            accumulator = IDGI()
            for segment in self.segments(model, images, targets, "idgi"):
                accumulator.add(segment.scores, segment.gradients)
            return accumulator.result().to(images.dtype)
        total: Tensor | None = None
        for segment in self.segments(model, images, targets, "riemann"):
            part = (segment.deltas * segment.gradients).sum(dim=0)  # in the deltas' precision (Guided IG: float64)
            total = part if total is None else total + part
        return total.to(images.dtype)

    def evaluate(self, model: Model, points: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """``f_c`` ``(k, B)`` and ``∂f_c/∂x`` ``(k, B, C, H, W)`` at ``k`` points per sample, ``batch_size``
        points per forward/backward."""
        k, batch = points.shape[:2]
        scores, gradients = self.scores_and_gradients(model, points.reshape(k * batch, *points.shape[2:]),
                                                      targets.repeat(k))
        return scores.reshape(k, batch), gradients.reshape(points.shape)

    def last(self, model: Model, point: Tensor, targets: Tensor) -> Segment:
        """The path's last point ``(B, C, H, W)`` with its score alone (a forward pass, ``batch_size`` at a time)."""
        step = self.batch_size or len(point)
        with torch.no_grad():
            scores = [self.target_scores(model(point[i : i + step]), targets[i : i + step])
                      for i in range(0, len(point), step)]
        return Segment(None, torch.cat(scores)[None], None, None)

    def blocks(self, indices: range, batch: int) -> Iterator[range]:
        """``indices`` (path positions) in consecutive blocks, as many per block as ``batch_size`` points allow."""
        per = len(indices) if self.batch_size is None else max(1, self.batch_size // batch)
        for start in range(0, len(indices), per):
            yield indices[start : start + per]
