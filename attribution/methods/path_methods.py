"""Integrated Gradients, Blur IG and Guided IG on the input pixels (seed 004 §2), with IDGI over each (§3).

Each follows the reference implementation seed 004 ran with its defaults, PAIR ``saliency`` 0.2.1
(``saliency/core``), step for step; only the batching differs (points of several steps and samples
go through the model together). ``f_c`` is the target's softmax probability unless ``score="logit"``
(NOTES §8 row 5). ``idgi=True`` replaces each method's Riemann sum by IDGI (Algorithm 1) over the same
path points (:mod:`attribution.methods.paths`).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from attribution.methods.input_space import Model, Score
from attribution.methods.paths import PathMethod, Segment, Use
from attribution.methods.registry import register
from attribution.params import integer, number, positive

__all__ = ["BlurIG", "GuidedIG", "IntegratedGradients", "blur_derivatives", "blurred", "gaussian_matrix"]


@register
class IntegratedGradients(PathMethod):
    """Integrated Gradients (Sundararajan et al. 2017; seed 004 eq. 2) on the straight path
    ``γ(α) = x′ + α(x − x′)`` from the model's black image ``x′``.

    PAIR ``IntegratedGradients.GetMask``: ``α`` runs over ``linspace(0, 1, steps)``, both ends included,
    and ``I = (x − x′) ⊙ mean_j ∂f_c/∂x (γ(α_j))``; the path's points are those ``steps`` points
    (``m = steps − 1`` intervals), which IDGI uses.

    Args:
        steps: points on the path, ≥ 2. The default 25 is PAIR's, as Blur IG's and Guided IG's defaults
            here are (seed 004 ran PAIR's defaults); seed 004's tables use 128 and its step study 8–128,
            which a spec sets with ``steps=``.
        idgi: IDGI over the points instead of the mean gradient.
        score, batch_size, black: as :class:`~attribution.methods.input_space.InputSpaceMethod`.
    """

    name = "integrated_gradients"

    def __init__(self, steps: int = 25, idgi: bool = False, score: Score = "probability",
                 batch_size: int | None = None, black: Sequence[float] | None = None) -> None:
        super().__init__(idgi=idgi, score=score, batch_size=batch_size, black=black)
        self.steps = integer("steps", steps, 2)

    def segments(self, model: Model, images: Tensor, targets: Tensor, use: Use) -> Iterator[Segment]:
        baseline = self.black_image(images).expand_as(images)
        alphas = torch.linspace(0, 1, self.steps, dtype=torch.float64).tolist()
        step = ((images - baseline) / self.steps)[None] if use == "riemann" else None
        for block in self.blocks(range(self.steps - 1 if use == "idgi" else self.steps), len(images)):
            weights = torch.tensor([alphas[j] for j in block], dtype=images.dtype, device=images.device)
            x = torch.lerp(baseline[None], images[None], weights.reshape(-1, 1, 1, 1, 1))
            scores, gradients = self.evaluate(model, x, targets)
            yield Segment(x if use == "path" else None, scores, gradients, step)
        if use == "idgi":
            yield self.last(model, images, targets)


def gaussian_matrix(sigma: float, size: int, truncate: float = 4.0) -> Tensor:
    """The ``(size, size)`` float64 matrix of a 1-D Gaussian filter with zero padding: ``M @ v`` is
    ``scipy.ndimage.gaussian_filter1d(v, sigma, mode="constant", truncate=truncate)`` (radius
    ``int(truncate·σ + 0.5)``, weights normalised over the whole kernel); the identity for ``σ = 0``."""
    if sigma == 0:
        return torch.eye(size, dtype=torch.float64)
    radius = int(truncate * sigma + 0.5)
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float64)
    kernel = torch.exp(-0.5 / (sigma * sigma) * offsets**2)
    kernel /= kernel.sum()
    index = torch.arange(size)
    distance = index[None, :] - index[:, None]
    inside = distance.abs() <= radius
    return torch.where(inside, kernel[(distance + radius).clamp(0, 2 * radius)], 0.0)


def _matrices(sigmas: Sequence[float], images: Tensor) -> tuple[Tensor, Tensor]:
    """The float64 filters of each ``σ`` over the images' rows and columns, ``(S, H, H)`` and ``(S, W, W)``."""
    height, width = images.shape[-2:]
    rows = torch.stack([gaussian_matrix(s, height) for s in sigmas]).to(images.device)
    return rows, rows if width == height else torch.stack([gaussian_matrix(s, width) for s in sigmas]).to(images.device)


def _separable(images: Tensor, rows: Tensor, columns: Tensor) -> Tensor:
    """``rows[s] @ image @ columns[s]ᵀ`` for every level ``s`` and image: ``(S, B, C, H, W)``."""
    rows, columns = rows.to(images.dtype), columns.to(images.dtype)
    return rows[:, None, None] @ images[None] @ columns.transpose(1, 2)[:, None, None]


def blurred(images: Tensor, sigmas: Sequence[float]) -> Tensor:
    """``G_σ(images)`` for each ``σ``, ``(S, B, C, H, W)``: a Gaussian over H and W only with zero padding,
    PAIR ``blur_ig.gaussian_blur`` (``scipy.ndimage.gaussian_filter(sigma=[σ, σ, 0], mode="constant")``),
    computed in the images' dtype on their device."""
    return _separable(images, *_matrices(sigmas, images))


def blur_derivatives(images: Tensor, sigmas: Sequence[float], grad_step: float) -> Tensor:
    """``(G_{σ+h}(x) − G_σ(x)) / h`` for each ``σ`` (``h = grad_step``), ``(S, B, C, H, W)``.

    With ``G_σ x = R X Cᵀ`` the difference is ``(R′ − R) X C′ᵀ + R X (C′ − C)ᵀ``, the matrix differences
    taken in float64, so the finite difference does not cancel in the images' dtype."""
    rows, columns = _matrices(sigmas, images)
    rows_h, columns_h = _matrices([s + grad_step for s in sigmas], images)
    difference = _separable(images, rows_h - rows, columns_h) + _separable(images, rows, columns_h - columns)
    return difference / grad_step


@register
class BlurIG(PathMethod):
    """Blur IG (Xu et al. 2020; seed 004 §2.2): integrated gradients along the path that blurs the image,
    from ``G_{max_sigma}(x)`` (its baseline; no black image) to ``x``.

    PAIR ``BlurIG.GetMask`` (``sqrt=False``): ``σ_i = i · max_sigma / steps`` for ``i = 0 … steps``,
    ``x_i = G_{σ_i}(x)`` (:func:`blurred`), ``∂γ/∂σ ≈ (G_{σ_i + grad_step}(x) − x_i) / grad_step`` and
    ``I = −Σ_{i<steps} (σ_{i+1} − σ_i) · ∂γ/∂σ ⊙ ∂f_c/∂x (x_i)``. The path runs from the most blurred
    level to the image, ``x_0 = G_{σ_steps}(x), …, x_steps = x`` (``steps + 1`` points; the most
    blurred one is evaluated only for IDGI's score and the path's completeness).

    Args:
        max_sigma: the baseline's σ in pixels.
        steps: σ intervals, ≥ 1.
        grad_step: the finite-difference step in σ.
        idgi: IDGI over the blur levels instead of the Riemann sum.
        score, batch_size: as :class:`~attribution.methods.input_space.InputSpaceMethod`.
    """

    name = "blur_ig"

    def __init__(self, max_sigma: float = 50.0, steps: int = 100, grad_step: float = 0.01, idgi: bool = False,
                 score: Score = "probability", batch_size: int | None = None) -> None:
        super().__init__(idgi=idgi, score=score, batch_size=batch_size)
        self.max_sigma = positive("max_sigma", max_sigma)
        self.steps = integer("steps", steps, 1)
        self.grad_step = positive("grad_step", grad_step)

    @property
    def uses_black(self) -> bool:
        return False

    def segments(self, model: Model, images: Tensor, targets: Tensor, use: Use) -> Iterator[Segment]:
        sigmas = [float(i) * self.max_sigma / float(self.steps) for i in range(self.steps + 1)]
        first = 1 if use == "riemann" else 0  # the Riemann sum never charges the baseline
        for block in self.blocks(range(first, self.steps if use == "idgi" else self.steps + 1), len(images)):
            levels = [self.steps - j for j in block]
            x = blurred(images, [sigmas[i] for i in levels])
            scores, gradients = self.evaluate(model, x, targets)
            step = self._deltas(images, sigmas, levels) if use == "riemann" else None
            yield Segment(x if use == "path" else None, scores, gradients, step)
        if use == "idgi":
            yield self.last(model, images, targets)

    def _deltas(self, images: Tensor, sigmas: list[float], levels: list[int]) -> Tensor:
        """``−(σ_{i+1} − σ_i) · ∂γ/∂σ (σ_i)`` at each level, ``(S, B, C, H, W)``; zero at the baseline ``i = steps``."""
        moving = [i for i in levels if i < self.steps]
        widths = torch.tensor([sigmas[i + 1] - sigmas[i] for i in moving], dtype=images.dtype, device=images.device)
        deltas = -widths.reshape(-1, 1, 1, 1, 1) * blur_derivatives(images, [sigmas[i] for i in moving], self.grad_step)
        return torch.cat([deltas.new_zeros(len(levels) - len(moving), *images.shape), deltas])


@register
class GuidedIG(PathMethod):
    """Guided IG (Kapishnikov et al. 2021; seed 004 eq. 3–4) from the model's black image: at each of
    ``steps`` steps the features with the smallest ``|∂f_c/∂x|`` move first, within ``±max_dist`` (in
    ``α``) of the straight path.

    PAIR ``guided_ig_impl``, per step ``t = 1 … T`` with one gradient at the current point: the band
    ``[t/T − max_dist, t/T + max_dist] ∩ [0, 1]`` in ``α`` gives ``x_min``, ``x_max`` on the straight line;
    the L1 target is ``‖x − x′‖₁ (1 − t/T)``; repeatedly, features below ``x_min`` snap to it, the step
    ends when the L1 distance to the input is within a relative (and absolute) tolerance 1e-9 of the
    target, and otherwise the ``fraction`` quantile (interpolation ``"lower"``) of ``|grad|`` over the
    features not yet at ``x_max`` selects the ones that move — all the way to ``x_max`` while that is not
    enough (``γ > 1``), else by the fraction ``γ`` of their remaining distance that closes the gap.
    ``I = Σ_t (x_t − x_{t−1}) ⊙ ∂f_c/∂x (x_{t−1})``, a left Riemann sum over the ``T + 1`` points.

    The path is computed in float64, as PAIR does: its selections compare L1 distances and gradient
    magnitudes, which float32 rounding changes (seed 004 §4.5.2 reports CPU/GPU differences). The model
    sees each point in the images' dtype; the points :meth:`path` returns are float64. The last step
    goes to the input exactly (PAIR's stops within its L1 tolerance of it, to rounding), so the path
    ends there; ``max_dist = 0`` is Integrated Gradients with a left Riemann sum of ``T`` steps.

    Args:
        steps: Riemann steps ``T`` (PAIR's ``x_steps``), ≥ 1.
        fraction: the fraction of the features selected per move, in ``[0, 1]``.
        max_dist: how far in ``α`` a feature may stray from the straight path, in ``[0, 1]``.
        idgi: IDGI over the path points instead of the Riemann sum.
        score, batch_size, black: as :class:`~attribution.methods.input_space.InputSpaceMethod`.
    """

    name = "guided_ig"

    def __init__(self, steps: int = 200, fraction: float = 0.25, max_dist: float = 0.02, idgi: bool = False,
                 score: Score = "probability", batch_size: int | None = None,
                 black: Sequence[float] | None = None) -> None:
        super().__init__(idgi=idgi, score=score, batch_size=batch_size, black=black)
        self.steps = integer("steps", steps, 1)
        self.fraction = _unit("fraction", fraction)
        self.max_dist = _unit("max_dist", max_dist)

    def segments(self, model: Model, images: Tensor, targets: Tensor, use: Use) -> Iterator[Segment]:
        end = images.double().flatten(1)
        start = self.black_image(images).expand_as(images).double().flatten(1)
        x = start.clone()
        for t in range(self.steps):
            scores, gradients = self.evaluate(model, x.reshape(images.shape).to(images.dtype)[None], targets)
            following = end if t + 1 == self.steps else self._step(x, gradients[0].flatten(1), start, end, t + 1)
            yield Segment(x.reshape(images.shape)[None] if use == "path" else None, scores, gradients,
                          (following - x).reshape(images.shape)[None] if use == "riemann" else None)
            x = following
        if use == "path":
            yield Segment(x.reshape(images.shape)[None], *self.evaluate(model, images[None], targets), None)
        elif use == "idgi":
            yield self.last(model, images, targets)

    def _step(self, x: Tensor, grad: Tensor, start: Tensor, end: Tensor, t: int) -> Tensor:
        """The point after step ``t`` from ``x`` ``(B, D)`` given its gradient, all samples at once.

        Features are snapped up to ``x_min`` once: PAIR repeats the snap before every move, but a move
        only brings features closer to the input, so the repeats change nothing. The gradient's
        magnitudes are ranked in the gradient's own dtype, whose order float64 would not change."""
        alpha = t / self.steps
        alpha_min, alpha_max = max(alpha - self.max_dist, 0.0), min(alpha + self.max_dist, 1.0)
        span = end - start
        x_min, x_max = _on_line(alpha_min, start, end), _on_line(alpha_max, start, end)
        target = span.abs().sum(dim=1) * (1 - t / self.steps)
        rank = math.floor((x.shape[1] - 1) * self.fraction) + 1
        x_alpha = torch.where(span != 0, (x - start) / span, alpha_max)
        x = torch.where(x_alpha < alpha_min, x_min, x)
        size = grad.abs()
        active = torch.ones(len(x), dtype=torch.bool, device=x.device)
        while True:
            current = (x - end).abs().sum(dim=1)
            active &= ~_isclose(current, target)
            if not active.any():
                return x
            magnitude = torch.where(x == x_max, math.inf, size)
            threshold = magnitude.kthvalue(rank, dim=1).values
            selected = (magnitude <= threshold[:, None]) & (magnitude != math.inf) & active[:, None]
            reducible = ((x - x_max).abs() * selected).sum(dim=1)
            gamma = torch.where(reducible > 0, (current - target) / reducible, math.inf)
            full = gamma > 1
            moved = torch.where(full[:, None], x_max, x + (x_max - x) * gamma[:, None])
            x = torch.where(selected, moved, x)
            active &= full


def _unit(name: str, value: object) -> float:
    checked = number(name, value, 0)
    if checked > 1:
        raise ValueError(f"{name} must be in [0, 1]; got {value!r}")
    return checked


def _on_line(alpha: float, start: Tensor, end: Tensor) -> Tensor:
    """The straight path's point at ``alpha``: ``x′ + α(x − x′)``, and the input exactly at ``α = 1``."""
    return end.clone() if alpha == 1 else start + (end - start) * alpha


def _isclose(a: Tensor, b: Tensor, tolerance: float = 1e-9) -> Tensor:
    """``math.isclose(a, b, rel_tol=tolerance, abs_tol=tolerance)`` element-wise."""
    return (a - b).abs() <= torch.maximum(a.abs(), b.abs()).mul(tolerance).clamp(min=tolerance)
