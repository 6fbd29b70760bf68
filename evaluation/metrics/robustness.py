"""Robustness metrics: how much does the explanation move when the input moves a little?

Each perturbs every image ``nr_samples`` times with random noise, re-explains the perturbed
copies with the same method (the batch's ``explainer``: ``explainer(images, targets) → maps``) and
keeps, per perturbation, a handful of distances. Metrics that draw from the same noise distribution
with the same seed and count share one set of re-explanations through the batch's memo: Max- and
Avg-Sensitivity share theirs (uniform noise in ``±0.2``), RIS and ROS theirs (``U(0.02, 0.2)``).
Noise comes from one generator per sample, seeded from (metric seed, sample seed), so a score does
not depend on the batch; Quantus draws from numpy's global generator.

Defaults follow Quantus 0.6.0 (200 perturbations; Quantus 0.4.4 had the same noise and counts).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from attribution.methods.base import sample_generators
from attribution.needs import Need
from attribution.numerics import safe_divide
from attribution.params import integer, number, positive
from evaluation.base import Batch, Metric, flat, mark_undefined, normalise_by_max
from evaluation.perturbation import class_scores, model_inputs, rows_per_pass
from evaluation.registry import register

__all__ = [
    "MaxSensitivity",
    "AvgSensitivity",
    "LocalLipschitzEstimate",
    "RelativeInputStability",
    "RelativeOutputStability",
    "PerturbationStats",
    "EPS_MIN",
]

EPS_MIN = 1e-6  # Quantus's ``eps_min`` for the relative stabilities: replaces exact zeros in denominators


@dataclass
class PerturbationStats:
    """Per image and perturbation ``(B, n)``: distances between the explanations and the inputs."""

    explanation: Tensor  # ‖a − a'‖₂ of the raw maps
    explanation_normalised: Tensor  # ‖â − â'‖₂ of maps divided by their max |·| (per sample)
    explanation_relative: Tensor  # ‖(a − a') / a‖₂ (zeros of a replaced by EPS_MIN)
    input: Tensor  # ‖x − x'‖₂
    input_relative: Tensor  # ‖(x − x') / x‖₂ (zeros of x replaced by EPS_MIN)
    logits: Tensor  # ‖h(x) − h(x')‖₂ of the logits
    prediction_changed: Tensor  # bool: argmax h(x') ≠ argmax h(x)
    # (``logits`` and ``prediction_changed`` are computed only for metrics that use them: 0 and False otherwise)


def _relative(a: Tensor, b: Tensor) -> Tensor:
    return (a - b) / (a + (a == 0) * EPS_MIN)


class _Robustness(Metric):
    """Draws the perturbations, re-explains them and records :class:`PerturbationStats`."""

    normalise = False  # Quantus's default for these metrics, except Local Lipschitz
    needs = frozenset({Need.MODEL, Need.EXPLAINER})
    uses_outputs = False  # whether the model's outputs on the perturbed inputs are needed (RIS, ROS)

    def __init__(self, nr_samples: int, noise: tuple[str, float, float], seed: int, batch_size: int | None) -> None:
        self.nr_samples = integer("nr_samples", nr_samples, 1)
        self.seed = integer("seed", seed, 0)
        self.batch_size = integer("batch_size", batch_size, 1, optional=True)
        self.noise = noise

    def draw(self, generator: torch.Generator, shape: torch.Size) -> Tensor:
        kind, p, q = self.noise
        if kind == "gaussian":
            return p + q * torch.randn(shape, generator=generator)
        return p + (q - p) * torch.rand(shape, generator=generator)

    def stats(self, batch: Batch) -> PerturbationStats:
        """The distances of every perturbation, shared through the batch's memo by metrics drawing the same noise."""
        images, model, targets = model_inputs(self.name, batch)
        if batch.explainer is None:
            raise ValueError(f"{self.name} needs an explainer (images, targets → maps) to re-explain perturbed inputs")
        key = ("perturbation_stats", self.noise, self.nr_samples, self.seed, self.uses_outputs)
        maps = batch.maps.to(images.dtype)
        return batch.memoised(key, lambda: self._measure(maps, images, model, targets, batch.explainer, batch.seeds))

    def _measure(self, maps: Tensor, images: Tensor, model: torch.nn.Module, targets: Tensor,
                 explainer: Callable[[Tensor, Tensor], Tensor], seeds: Tensor | None) -> PerturbationStats:
        b, n = len(images), self.nr_samples
        generators = sample_generators(self.seed, seeds, b)
        logits = class_scores(model, images, softmax=False)
        rows = [i for _ in range(n) for i in range(b)]  # perturbation-major: sample i's j-th draw is its j-th
        columns: dict[str, list[Tensor]] = {f: [] for f in PerturbationStats.__dataclass_fields__}
        per_chunk = rows_per_pass(self.batch_size, images.device)
        for first in range(0, len(rows), per_chunk):
            chunk = rows[first : first + per_chunk]
            index = torch.tensor(chunk, device=images.device)
            noise = torch.stack([self.draw(generators[i], images.shape[1:]) for i in chunk])
            x = images[index]
            x_new = (x + noise.to(images.device, images.dtype)).contiguous(memory_format=torch.channels_last)
            a, a_new = maps[index], explainer(x_new, targets[index]).to(images.dtype)
            if a_new.shape != a.shape:
                raise ValueError(
                    f"{self.name}: the explainer returned maps {tuple(a_new.shape[1:])}, expected {tuple(a.shape[1:])}"
                )
            h = logits[index]
            h_new = class_scores(model, x_new, softmax=False) if self.uses_outputs else h  # else skip a forward pass
            columns["explanation"].append(flat(a - a_new).norm(dim=1))
            columns["explanation_normalised"].append(flat(normalise_by_max(a) - normalise_by_max(a_new)).norm(dim=1))
            columns["explanation_relative"].append(flat(_relative(a, a_new)).norm(dim=1))
            columns["input"].append(flat(x - x_new).norm(dim=1))
            columns["input_relative"].append(flat(_relative(x, x_new)).norm(dim=1))
            columns["logits"].append((h - h_new).double().norm(dim=1))
            columns["prediction_changed"].append(h.argmax(dim=1) != h_new.argmax(dim=1))
        return PerturbationStats(**{f: torch.cat(v).reshape(n, b).T for f, v in columns.items()})


class _Sensitivity(_Robustness):
    """``‖a − a'‖₂ / ‖a‖₂`` per perturbation, uniform noise in ``±lower_bound`` (or ``U(lower, upper)``)."""

    def __init__(
        self,
        nr_samples: int = 200,
        lower_bound: float = 0.2,
        upper_bound: float | None = None,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        number("lower_bound", lower_bound)
        if upper_bound is None:
            noise = ("uniform", -lower_bound, lower_bound)
        else:
            noise = ("uniform", lower_bound, number("upper_bound", upper_bound, lower_bound))
        super().__init__(nr_samples, noise, seed, batch_size)

    def ratios(self, batch: Batch) -> Tensor:
        """``‖a − a'‖₂ / ‖a‖₂`` per (sample, perturbation), on the raw maps (Quantus's ``normalise=False``)."""
        maps = self.prepare(batch.maps)
        stats = self.stats(batch)
        norm = flat(maps).norm(dim=1, keepdim=True)
        ratio = safe_divide(stats.explanation, norm)
        return mark_undefined(ratio, (norm == 0).expand_as(ratio), self.name, "all-zero map")


@register
class MaxSensitivity(_Sensitivity):
    """Max-Sensitivity (Yeh et al., NeurIPS 2019, eq. 4): ``max_x' ‖Φ(x) − Φ(x')‖ / ‖Φ(x)‖`` over
    ``nr_samples`` draws of uniform noise ``x' = x + U(−0.2, 0.2)`` (Quantus's relative form). Lower is better."""

    name, direction, category = "max_sensitivity", "lower", "robustness"

    def score(self, batch: Batch) -> Tensor:
        return self.ratios(batch).amax(dim=1)


@register
class AvgSensitivity(_Sensitivity):
    """Avg-Sensitivity (Yeh et al., 2019, sec. 4): the mean of Max-Sensitivity's ratios. Lower is better."""

    name, direction, category = "avg_sensitivity", "lower", "robustness"

    def score(self, batch: Batch) -> Tensor:
        return self.ratios(batch).mean(dim=1)


@register
class LocalLipschitzEstimate(_Robustness):
    """Local Lipschitz Estimate (Alvarez-Melis & Jaakkola, 2018, eq. 3): ``max_x' ‖Φ(x) − Φ(x')‖₂ /
    (‖x − x'‖₂ + 1e-10)`` with Gaussian noise ``N(0, 0.1²)``, maps max-normalised per sample
    (Quantus's default ``normalise=True``). Lower is better."""

    name, direction, category, normalise = "local_lipschitz_estimate", "lower", "robustness", True

    def __init__(
        self,
        nr_samples: int = 200,
        perturb_mean: float = 0.0,
        perturb_std: float = 0.1,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        number("perturb_mean", perturb_mean)
        noise = ("gaussian", perturb_mean, positive("perturb_std", perturb_std))
        super().__init__(nr_samples, noise, seed, batch_size)

    def score(self, batch: Batch) -> Tensor:
        self.prepare(batch.maps)  # validates; the shared statistics hold both raw and normalised distances
        stats = self.stats(batch)
        return (stats.explanation_normalised / (stats.input + 1e-10)).amax(dim=1)


class _RelativeStability(_Robustness):
    """Shared draws of RIS and ROS: ``U(0.02, 0.2)`` noise (Quantus's defaults). Agarwal et al. take the
    maximum over perturbations that keep the prediction; a sample whose every perturbation changes
    it is undefined. Quantus 0.6.0 instead returns NaN as soon as *one* perturbation changes it."""

    uses_outputs = True

    def __init__(
        self,
        nr_samples: int = 200,
        lower_bound: float = 0.02,
        upper_bound: float = 0.2,
        seed: int = 0,
        batch_size: int | None = None,
    ) -> None:
        number("lower_bound", lower_bound)
        noise = ("uniform", lower_bound, number("upper_bound", upper_bound, lower_bound))
        super().__init__(nr_samples, noise, seed, batch_size)

    def kept_max(self, ratio: Tensor, stats: PerturbationStats) -> Tensor:
        kept = ratio.masked_fill(stats.prediction_changed, -torch.inf).amax(dim=1)
        return mark_undefined(
            kept, stats.prediction_changed.all(dim=1), self.name, "every perturbation changed the predicted class"
        )


@register
class RelativeInputStability(_RelativeStability):
    """Relative Input Stability (Agarwal et al., 2022, eq. 2): ``max_x' ‖(e_x − e_x')/e_x‖₂ /
    max(‖(x − x')/x‖₂, ε)``. Lower is better."""

    name, direction, category = "relative_input_stability", "lower", "robustness"

    def score(self, batch: Batch) -> Tensor:
        self.prepare(batch.maps)  # validates; the relative distances need no normalisation (Quantus's default)
        stats = self.stats(batch)
        denominator = stats.input_relative + (stats.input_relative == 0) * EPS_MIN
        return self.kept_max(stats.explanation_relative / denominator, stats)


@register
class RelativeOutputStability(_RelativeStability):
    """Relative Output Stability (Agarwal et al., 2022, eq. 5): ``max_x' ‖(e_x − e_x')/e_x‖₂ /
    max(‖h(x) − h(x')‖₂, ε)`` with ``h`` the logits. Lower is better."""

    name, direction, category = "relative_output_stability", "lower", "robustness"

    def score(self, batch: Batch) -> Tensor:
        self.prepare(batch.maps)  # validates; the relative distances need no normalisation (Quantus's default)
        stats = self.stats(batch)
        denominator = stats.logits + (stats.logits == 0) * EPS_MIN
        return self.kept_max(stats.explanation_relative / denominator, stats)
