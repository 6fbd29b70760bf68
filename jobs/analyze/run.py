"""The two analyses as jobs: a setting and photos in, a result out (picklable, so it can run as a Ray task).

:func:`run_convergence` loads the model, the explained photos and ``R`` reference images of a manifest
(default: the bundled offline ``demo_references`` pool of crops, none of them an explained photo), then runs
the ``M`` and ``N`` sweeps of App. B; :func:`run_saturation` runs App. C.1 on the photos. Writing the results
is :mod:`jobs.analyze.output`'s job.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from PIL import Image

from attribution.channel_scaling import reference_features
from attribution.models import DEFAULT_ARCHITECTURE, LoadedModel, load_model
from jobs.analyze.convergence import MSweep, NSweep, Subject, m_sweep, n_sweep
from jobs.analyze.grids import parse_alphas, parse_budget, parse_budgets
from jobs.analyze.saturation import SaturationCurves, saturation_curves
from jobs.devices import compute_device
from jobs.explain import manifest_reference_features

__all__ = [
    "Convergence",
    "ConvergenceSetting",
    "ModelSetting",
    "Saturation",
    "SaturationSetting",
    "run_convergence",
    "run_saturation",
]

Photos = Sequence[tuple[str, Image.Image]]
Progress = Callable[[str], None]


@dataclass(frozen=True)
class ModelSetting:
    """Which network and layer (:func:`attribution.models.load_model`); ``device=None``: cuda when there is one."""

    name: str = DEFAULT_ARCHITECTURE
    weights: str = "package"
    layer: str | None = None
    device: str | None = None

    def load(self) -> LoadedModel:
        return load_model(self.name, self.weights, layer=self.layer, device=compute_device(self.device))


@dataclass(frozen=True)
class ConvergenceSetting:
    """The grids and budgets of App. B (Table 2's values are ``M = 2K``, ``N = 100``, ``T = 50``, ``σ = 0.1``, ``λ = 1e-6``).

    ``reference_count`` is ``R`` (default ``K``, the fewest for which ``M̂`` can reach full rank);
    ``eg_perturbations`` is ``M`` of the ``N`` sweep, whose cost is ``M·T·ΣN`` gradients per image.
    """

    model: ModelSetting = field(default_factory=ModelSetting)
    references: str | None = None
    reference_count: int | None = None
    m_grid: str = "K/8,K/4,K/2,K,2K,4K"
    m_reference: str = "8K"
    m_evaluation: str = "4K"
    repeats: int = 1
    n_grid: tuple[int, ...] = (1, 2, 5, 10, 15, 20, 50, 100)
    n_reference: int = 200
    eg_perturbations: int = 16
    eg_steps: int = 50
    eg_sigma: float = 0.1
    ridge: float = 1e-6
    perturbation: Literal["data", "gaussian"] = "data"
    seed: int = 0
    batch_size: int = 256
    allow_rank_deficient: bool = False


@dataclass(frozen=True)
class SaturationSetting:
    """The ``α`` grid of App. C.1 (:func:`jobs.analyze.grids.parse_alphas`)."""

    model: ModelSetting = field(default_factory=ModelSetting)
    alphas: str = "25"
    seed: int = 0


@dataclass(frozen=True)
class Convergence:
    """Both sweeps of App. B and what they ran on."""

    setting: ConvergenceSetting
    layer: str
    weights: str
    device: str
    names: tuple[str, ...]
    m: MSweep
    n: NSweep
    seconds: dict[str, float]


@dataclass(frozen=True)
class Saturation:
    """The curves of App. C.1 and what they ran on."""

    setting: SaturationSetting
    layer: str
    weights: str
    device: str
    names: tuple[str, ...]
    curves: SaturationCurves
    seconds: float


def run_convergence(setting: ConvergenceSetting, photos: Photos, progress: Progress = print) -> Convergence:
    """App. B's two sweeps on ``photos`` (see :mod:`jobs.analyze.convergence`).

    Raises ``ValueError`` when ``R + 1 < K`` (no ``M`` gives a full-rank ``M̂``) unless ``allow_rank_deficient``,
    which runs the sweep anyway with a :class:`~jobs.analyze.convergence.SmallReferencePoolWarning`.
    """
    start = time.perf_counter()
    loaded = setting.model.load()
    device = next(loaded.model.parameters()).device
    images = _images(loaded, photos, device)
    channels = reference_features(loaded.model, loaded.layer, images[:1], layout=loaded.layout).shape[1]
    m_values = parse_budgets(setting.m_grid, channels)
    m_reference, m_evaluation = (parse_budget(b, channels) for b in (setting.m_reference, setting.m_evaluation))
    features = None
    if setting.perturbation == "data":
        count = setting.reference_count or channels
        _check_pool(count, channels, setting.allow_rank_deficient)
        features = manifest_reference_features(loaded, setting.references, count, progress)
        _check_pool(features.shape[0], channels, setting.allow_rank_deficient)
    setup = time.perf_counter()
    subject = Subject.of(loaded.model, loaded.layer, images, features, layout=loaded.layout, ridge=setting.ridge,
                         batch_size=setting.batch_size)
    pool = "Gaussian perturbations" if subject.pool is None else f"R = {subject.pool} reference images"
    progress(f"  K = {channels}, {pool}, route {subject.route}: M sweep {list(m_values)}, M_ref = {m_reference}")
    m = m_sweep(subject, m_values, reference=m_reference, evaluation=m_evaluation, seed=setting.seed,
                repeats=setting.repeats)
    swept_m = time.perf_counter()
    progress(f"  N sweep {list(setting.n_grid)} at M = {setting.eg_perturbations}, T = {setting.eg_steps}, "
             f"N_ref = {setting.n_reference}")
    n = n_sweep(subject, setting.n_grid, reference=setting.n_reference, perturbations=setting.eg_perturbations,
                steps=setting.eg_steps, evaluation=m_evaluation, sigma=setting.eg_sigma, seed=setting.seed)
    end = time.perf_counter()
    seconds = {"setup": setup - start, "m_sweep": swept_m - setup, "n_sweep": end - swept_m, "total": end - start}
    return Convergence(setting, loaded.layer, loaded.weights, str(device), tuple(name for name, _ in photos), m, n,
                       seconds)


def run_saturation(setting: SaturationSetting, photos: Photos, progress: Progress = print) -> Saturation:
    """App. C.1's curves on ``photos`` (see :mod:`jobs.analyze.saturation`)."""
    start = time.perf_counter()
    alphas = parse_alphas(setting.alphas, setting.seed)
    loaded = setting.model.load()
    device = next(loaded.model.parameters()).device
    images = _images(loaded, photos, device)
    progress(f"  {len(photos)} images × {len(alphas)} values of α at {loaded.layer}")
    curves = saturation_curves(loaded.model, loaded.layer, images, alphas, black=loaded.preprocessing.black,
                               layout=loaded.layout)
    return Saturation(setting, loaded.layer, loaded.weights, str(device), tuple(name for name, _ in photos), curves,
                      time.perf_counter() - start)


def _images(loaded: LoadedModel, photos: Photos, device: torch.device) -> torch.Tensor:
    if not photos:
        raise ValueError("no images to analyse")
    return torch.stack([loaded.preprocessing(image) for _, image in photos]).to(device)


def _check_pool(count: int, channels: int, allow: bool) -> None:
    if count + 1 < channels and not allow:
        raise ValueError(f"R = {count} reference images span at most {count + 1} < K = {channels} directions, so "
                         f"rank(M̂) < K at every M and the M = K transition cannot show; use ≥ {channels - 1} "
                         "references (-r, --references) or pass --allow-rank-deficient")
