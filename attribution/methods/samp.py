"""SAMP and SAMP++ (seed 002 §3.2–3.4): attributions along a greedy *manipulation path*.

A manipulation path (eq. 4) moves, at step ``k``, the coordinates of one index set ``M_k`` from the
current point ``x^k`` all the way to the end point ``x^E``: ``(dx^k)_i = x^E_i − x^k_i`` on ``M_k`` and
``0`` elsewhere. SAMP (eq. 8) picks ``M_k = top_s{α_j}`` with the first-order gain
``α_j = ∇f(x^k)_j (x^E_j − x^k_j)`` (``−∞`` where ``x^k_j = x^E_j``). SAMP++ (Algorithm 1) adds the
infinitesimal constraint (eq. 9, ``dx ← η dx / ‖dx‖₁`` when ``‖dx‖₁ > η``) and the momentum (eq. 10,
``g^k = λ g^{k−1} + (1 − λ) ∇f(x^k)``, ``g`` initialised to ``∇f(x^S)``), and accumulates
``a ← a + g^k ⊙ dx^k``. SAMP is SAMP++ with ``λ = 0`` and no constraint.

Decisions where the seed is open (NOTES §1.1, §1.2, §8 rows 1–4):

- The gradient is taken at the current point, before the step (Algorithm 1; eq. 3's ``x^k`` includes
  the step): the attribution is a left Riemann sum, ``Σ_i a_i → f(x^E) − f(x^S)`` as ``η → 0``.
- The attribution uses the momentum ``g`` (Algorithm 1 as written), so when ``λ > 0`` its sum misses
  ``f(x^E) − f(x^S)`` by the momentum's lag behind ``∇f`` as well as by the Riemann error;
  ``attribute_with="gradient"`` accumulates ``∇f(x^k) ⊙ dx^k`` instead (the selection still uses ``g``):
  a left Riemann sum of the same path for any ``λ``.
- Both directions are run and summed (§4.4.3): insertion ``x⁰_ins → x`` and deletion ``x → x⁰_del``,
  ``a = a_ins − a_del`` (the deletion path's attributions sum to ``f(x⁰_del) − f(x)``, so they are
  negated before the sum). ``directions="deletion"`` returns ``−a_del``.
- The insertion path greedily takes the largest gain first (eq. 8); the deletion path takes the most
  score-decreasing move first: ``top_s{−α_j}``.
- The deletion baseline "B" is the model's black image (zero in pixel space, ``−mean/std`` in the
  model's input space). The insertion baseline "G" is the RISE Gaussian blur of the image
  (A.5.3; kernel 11, σ 5; 31 on ImageNet) or, as ``"gaussian_noise"`` (§4.4.2), a standard normal
  draw in the model's input space, seeded per sample.
- ``s`` counts pixels (``unit="pixel"``: a pixel's gain is the sum of its channels' ``α_j``, its
  channels move together, and it is finished when all are at ``x^E``) or elements (``unit="element"``).
- ``η = eta_ratio · ‖x^E − x^S‖₁`` per path (§4.1); ``eta_ratio=None`` is no constraint.
- Ties in ``top_s`` go to the lower index (a stable sort), so the path is deterministic.
- Coordinates a step moves in full are set to ``x^E`` exactly; a constrained step is clamped to the
  segment ``[x^k, x^E]``, so no coordinate overshoots under rounding and the loop ends at ``x^E``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal, NamedTuple

import torch
from torch import Tensor

from attribution.blur import rise_blur
from attribution.methods.base import Seeds, sample_generators
from attribution.methods.input_space import InputSpaceMethod, Model, Score
from attribution.methods.registry import register
from attribution.params import choice, integer, number, positive

__all__ = ["SAMP", "Path", "SAMPPlusPlus"]

Unit = Literal["pixel", "element"]
Directions = Literal["both", "insertion", "deletion"]
Direction = Literal["insertion", "deletion"]
InsertionBaseline = Literal["blur", "gaussian_noise"]
AttributeWith = Literal["momentum", "gradient"]


class Path(NamedTuple):
    """Manipulation paths walked from ``start`` to ``end``, one per row."""

    attributions: Tensor  # (N, C, H, W): Σ_k g^k ⊙ dx^k (or ∇f(x^k) ⊙ dx^k)
    steps: Tensor  # (N,): the steps each path took
    points: tuple[Tensor, ...]  # per path (steps + 1, C, H, W): x^S, x^1, …, x^E; () unless recorded


@register
class SAMPPlusPlus(InputSpaceMethod):
    """SAMP++ (seed 002 Algorithm 1): eq. 8's greedy path with the infinitesimal constraint (eq. 9)
    and the momentum (eq. 10), both directions summed; the decisions are the module's.

    Args:
        s: pixels (or elements, per ``unit``) moved per step; 224×16 is the paper's ImageNet value.
        eta_ratio: ``η / ‖x^E − x^S‖₁`` (eq. 9); ``None``: no constraint.
        momentum: ``λ`` of eq. 10, in ``[0, 1)``.
        attribute_with: ``"momentum"`` (``a += g ⊙ dx``, Algorithm 1) or ``"gradient"`` (``a += ∇f ⊙ dx``).
        unit: what ``s`` counts, ``"pixel"`` (all channels together) or ``"element"``.
        directions: ``"both"`` (``a_ins − a_del``), ``"insertion"`` or ``"deletion"``.
        insertion_baseline: ``"blur"`` (RISE's) or ``"gaussian_noise"``.
        blur_kernel, blur_sigma: the blur's odd kernel size and σ (31 and 5 on ImageNet).
        score: ``f``, the target's ``"logit"`` (A.4.1) or ``"probability"``.
        batch_size: points per forward/backward pass; ``None``: all active paths at once.
        black: the model's black image ``−mean/std`` (the deletion baseline).
        seed: seeds the ``"gaussian_noise"`` baseline, with the per-sample ``seeds``.
    """

    name = "samp_pp"

    def __init__(
        self,
        s: int = 224 * 16,
        eta_ratio: float | None = 0.1,
        momentum: float = 0.5,
        attribute_with: AttributeWith = "momentum",
        unit: Unit = "pixel",
        directions: Directions = "both",
        insertion_baseline: InsertionBaseline = "blur",
        blur_kernel: int = 11,
        blur_sigma: float = 5.0,
        score: Score = "logit",
        batch_size: int | None = None,
        black: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(score=score, batch_size=batch_size, black=black)
        self.s = integer("s", s, 1)
        self.eta_ratio = None if eta_ratio is None else positive("eta_ratio", eta_ratio)
        self.momentum = number("momentum", momentum, 0)
        if self.momentum >= 1:
            raise ValueError(f"momentum must be in [0, 1); got {momentum!r}")
        self.attribute_with = choice("attribute_with", attribute_with, ("momentum", "gradient"))
        self.unit = choice("unit", unit, ("pixel", "element"))
        self.directions = choice("directions", directions, ("both", "insertion", "deletion"))
        self.insertion_baseline = choice("insertion_baseline", insertion_baseline, ("blur", "gaussian_noise"))
        self.blur_kernel = integer("blur_kernel", blur_kernel, 1)
        if self.blur_kernel % 2 == 0:
            raise ValueError(f"blur_kernel must be odd; got {blur_kernel!r}")
        self.blur_sigma = positive("blur_sigma", blur_sigma)
        self.seed = integer("seed", seed)

    @property
    def uses_black(self) -> bool:
        return self.directions != "insertion"

    def insertion_start(self, images: Tensor, seeds: Seeds = None) -> Tensor:
        """``x⁰_ins`` ``(B, C, H, W)``: the blurred images or per-sample Gaussian noise."""
        if self.insertion_baseline == "blur":
            return rise_blur(images, self.blur_kernel, self.blur_sigma)
        generators = sample_generators(self.seed, seeds, len(images))
        noise = torch.stack([torch.randn(images.shape[1:], generator=g, dtype=images.dtype) for g in generators])
        return noise.to(images.device)

    def path(
        self,
        model: Model,
        start: Tensor,
        end: Tensor,
        targets: Tensor,
        *,
        direction: Direction = "insertion",
        record: bool = False,
    ) -> Path:
        """The paths ``start → end`` ``(N, C, H, W)`` for ``targets`` ``(N,)``: the largest gain first
        (``"insertion"``) or the most score-decreasing move first (``"deletion"``); ``record`` keeps the points."""
        if start.shape != end.shape or start.ndim != 4:
            raise ValueError(f"start and end must share one (N, C, H, W) shape; got {tuple(start.shape)}, {tuple(end.shape)}")
        decrease = torch.full((len(start),), choice("direction", direction, ("insertion", "deletion")) == "deletion")
        return self._walk(model, start, end, targets, decrease.to(start.device), record)

    def input_attributions(self, model: Model, images: Tensor, targets: Tensor, seeds: Seeds) -> Tensor:
        starts, ends, decrease = [], [], []
        if self.directions != "deletion":
            starts.append(self.insertion_start(images, seeds))
            ends.append(images)
            decrease.append(False)
        if self.directions != "insertion":
            starts.append(images)
            ends.append(self.black_image(images).expand_as(images))
            decrease.append(True)
        flags = torch.tensor(decrease, device=images.device).repeat_interleave(len(images))
        walked = self._walk(model, torch.cat(starts), torch.cat(ends), targets.repeat(len(starts)), flags, False)
        parts = walked.attributions.split(len(images))
        if self.directions == "both":
            return parts[0] - parts[1]
        return parts[0] if self.directions == "insertion" else -parts[0]

    def _walk(self, model: Model, start: Tensor, end: Tensor, targets: Tensor, decrease: Tensor, record: bool) -> Path:
        """Algorithm 1 on ``N`` paths at once; a finished path leaves the batch, so each row is its own run."""
        n, c, h, w = start.shape
        x, a, g = start.clone(), torch.zeros_like(start), torch.zeros_like(start)
        steps = torch.zeros(n, dtype=torch.long, device=start.device)
        budget = (end - start).abs().flatten(1).sum(1)
        eta = budget * self.eta_ratio if self.eta_ratio is not None else torch.full_like(budget, math.inf)
        sign = 1.0 - 2.0 * decrease.to(start.dtype)
        points = [[x[i].clone()] for i in range(n)] if record else []
        active = (x != end).flatten(1).any(1)
        first = True
        while active.any():
            idx = active.nonzero().squeeze(1)
            here, there = x[idx], end[idx]
            _, grad = self.scores_and_gradients(model, here, targets[idx])
            g_k = grad if first else self.momentum * g[idx] + (1 - self.momentum) * grad
            remaining = there - here
            gain, pending = g_k * remaining, remaining != 0
            if self.unit == "pixel":
                gain, pending = gain.sum(1), pending.any(1)
            key = torch.where(pending.flatten(1), sign[idx, None] * gain.flatten(1), -math.inf)
            top = key.argsort(dim=1, descending=True, stable=True)[:, : self.s]
            chosen = torch.zeros_like(key, dtype=torch.bool).scatter_(1, top, True) & pending.flatten(1)
            chosen = chosen.reshape(len(idx), -1, h, w).expand(-1, c, -1, -1)
            dx = torch.where(chosen, remaining, 0)
            norm = dx.abs().flatten(1).sum(1)
            clipped = (norm > eta[idx])[:, None, None, None]
            scale = torch.where(clipped, eta[idx, None, None, None] / norm[:, None, None, None], 1)
            moved = torch.minimum(torch.maximum(here + scale * dx, torch.minimum(here, there)), torch.maximum(here, there))
            new = torch.where(chosen & ~clipped, there, moved)
            a[idx] += (g_k if self.attribute_with == "momentum" else grad) * (new - here)
            x[idx], g[idx] = new, g_k
            steps[idx] += 1
            active[idx] = (new != there).flatten(1).any(1)
            if record:
                for row, i in enumerate(idx.tolist()):
                    points[i].append(new[row].clone())
            first = False
        return Path(a, steps, tuple(torch.stack(p) for p in points))


@register
class SAMP(SAMPPlusPlus):
    """SAMP (seed 002 eq. 8): the greedy manipulation path with the raw gradient and unconstrained
    steps, i.e. SAMP++ with ``λ = 0`` and no infinitesimal constraint; both directions summed."""

    name = "samp"

    def __init__(
        self,
        s: int = 224 * 16,
        unit: Unit = "pixel",
        directions: Directions = "both",
        insertion_baseline: InsertionBaseline = "blur",
        blur_kernel: int = 11,
        blur_sigma: float = 5.0,
        score: Score = "logit",
        batch_size: int | None = None,
        black: Sequence[float] | None = None,
        seed: int = 0,
    ) -> None:
        super().__init__(
            s=s, eta_ratio=None, momentum=0.0, attribute_with="momentum", unit=unit, directions=directions,
            insertion_baseline=insertion_baseline, blur_kernel=blur_kernel, blur_sigma=blur_sigma, score=score,
            batch_size=batch_size, black=black, seed=seed,
        )
