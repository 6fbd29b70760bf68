"""``camgrid analyze``: the appendix analyses of Buono et al., "Not All CAMs Are Complete".

``convergence`` is App. B (Figs. 6 and 7: the sample budgets ``M`` and ``N`` of Expected Grad-CAM);
``saturation`` is App. C.1 (Figs. 9–12: internal saturation along ``α·x``). Both write Parquet tables,
PNG figures and ``setting.json`` into ``<out>/convergence`` or ``<out>/saturation``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import click

from attribution.models import ARCHITECTURES, DEFAULT_ARCHITECTURE
from attribution.models.weights import WeightsUnavailableError
from jobs.analyze.clip import clip_command
from jobs.analyze.grids import check_budgets, parse_alphas, parse_counts
from jobs.analyze.remote import run_on_cluster

__all__ = ["analyze"]

ERRORS = (FileNotFoundError, ValueError, TypeError, ConnectionError, WeightsUnavailableError)
CONVERGENCE_LAYER = "blocks.6"  # the default model's layer for the convergence sweeps (see ``convergence``)


def _common(command: Callable) -> Callable:
    """The options both analyses share."""
    options = [
        click.option("--model", "model_name", default=DEFAULT_ARCHITECTURE, show_default=True,
                     help=f"registry name ({', '.join(ARCHITECTURES)}) or torchvision:<name> / timm:<name>"),
        click.option("--weights", default="package", show_default=True,
                     help="pretrained | none | package | torchvision:<ENUM> | timm | file:<checkpoint>"),
        click.option("--layer", default=None, help="target layer (default: the registry's)"),
        click.option("--images", "image_paths", multiple=True, type=click.Path(dir_okay=False),
                     help="an image to analyse (repeatable; default: scikit-image's bundled photos)"),
        click.option("-n", "--images-count", type=click.IntRange(min=1), default=None,
                     help="analyse the first N images only"),
        click.option("--seed", type=int, default=0, show_default=True),
        click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when there is a GPU)"),
        click.option("--out", default="camgrid-analyze", show_default=True, type=click.Path(file_okay=False),
                     help="run directory"),
        click.option("--address", default=None,
                     help="a running Ray cluster: run the analysis there as one task (one GPU when it has any)"),
    ]
    return functools.reduce(lambda cmd, option: option(cmd), reversed(options), command)


@click.group()
def analyze() -> None:
    """The appendix analyses of Expected Grad-CAM: convergence in M and N (App. B), saturation (App. C.1), CLIP
    prompts (App. F; pip install "camgrid[clip]")."""


@analyze.command()
@_common
@click.option("--references", default=None, metavar="MANIFEST",
              help="reference manifest the data-aware perturbations draw from (default: the bundled demo_references)")
@click.option("-r", "--reference-count", type=click.IntRange(min=1), default=None,
              help="R, reference images drawn from the manifest [default: K]")
@click.option("--m-grid", default="K/8,K/4,K/2,K,2K,4K", show_default=True,
              help="perturbation counts M: integers or multiples of K")
@click.option("--m-reference", default="8K", show_default=True, help="M of the reference solution M_ref, α_∞")
@click.option("--m-evaluation", default="4K", show_default=True,
              help="held-out perturbations of the surrogate infidelity")
@click.option("--repeats", type=click.IntRange(min=1), default=1, show_default=True,
              help="independent perturbation draws per M")
@click.option("--n-grid", default="1,2,5,10,20,50", show_default=True,
              help="baseline counts N of φ^EG (Fig. 7 goes to 100)")
@click.option("--n-reference", type=click.IntRange(min=1), default=100, show_default=True,
              help="N of the reference solution")
@click.option("--eg-perturbations", type=click.IntRange(min=1), default=8, show_default=True,
              help="M of the N sweep (Table 2: 2K; the cost is M·T·ΣN gradients per image)")
@click.option("--eg-steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="T, Riemann steps (Table 2: 50)")
@click.option("--eg-sigma", type=click.FloatRange(min=0), default=0.1, show_default=True, help="σ of 𝒟 = N(0, σ²I)")
@click.option("--ridge", type=click.FloatRange(min=0, min_open=True), default=1e-6, show_default=True,
              help="Tikhonov λ")
@click.option("--perturbation", type=click.Choice(["data", "gaussian"]), default="data", show_default=True,
              help="data-aware I = 1 − a·h(x') (Def. 3.8), or I ~ N(0, 0.1²·Id), whose κ follows eq. 94")
@click.option("--batch-size", type=click.IntRange(min=1), default=256, show_default=True,
              help="rows after the target layer evaluated at once")
@click.option("--allow-rank-deficient", is_flag=True, help="run even when R + 1 < K (M̂ singular at every M)")
def convergence(model_name, weights, layer, image_paths, images_count, seed, device, out, address, references,
                reference_count, m_grid, m_reference, m_evaluation, repeats, n_grid, n_reference, eg_perturbations,
                eg_steps, eg_sigma, ridge, perturbation, batch_size, allow_rank_deficient) -> None:
    """Sweep M across M = K and N of the Expected-Gradients route: App. B, Figs. 6 and 7.

    With the default model and no --layer, the sweep is at EfficientNet-Lite0's blocks.6 (K = 320): the network
    after it is nonlinear, so the N sweep measures something (after the registry's bn2 only pooling and a linear
    layer follow, and φ^EG is exact at every N), and R ≥ K references cost a quarter of bn2's.
    """
    from jobs.analyze.output import write_convergence
    from jobs.analyze.run import ConvergenceSetting, ModelSetting, run_convergence

    if layer is None and model_name == DEFAULT_ARCHITECTURE:
        layer = CONVERGENCE_LAYER

    for name, spec in (("--m-grid", m_grid), ("--m-reference", m_reference), ("--m-evaluation", m_evaluation)):
        _check(lambda spec=spec: check_budgets(spec), name)
    setting = ConvergenceSetting(
        model=ModelSetting(model_name, weights, layer, device), references=references, reference_count=reference_count,
        m_grid=m_grid, m_reference=m_reference, m_evaluation=m_evaluation, repeats=repeats,
        n_grid=_check(lambda: parse_counts(n_grid), "--n-grid"), n_reference=n_reference,
        eg_perturbations=eg_perturbations, eg_steps=eg_steps, eg_sigma=eg_sigma, ridge=ridge, perturbation=perturbation,
        seed=seed, batch_size=batch_size, allow_rank_deficient=allow_rank_deficient,
    )
    result = _run(run_convergence, setting, image_paths, images_count, address, "convergence")
    for path in _write(lambda: write_convergence(result, out)):
        click.echo(f"wrote {path}")
    click.echo(f"convergence: {result.seconds['total']:.1f} s")


@analyze.command()
@_common
@click.option("--alphas", default="25", show_default=True,
              help="α grid: a count of evenly spaced values, a comma list, or random:<count> (App. C.1's U(0, 1))")
def saturation(model_name, weights, layer, image_paths, images_count, seed, device, out, address, alphas) -> None:
    """Target-layer cosine and top-label scores along α·x from the black image (App. C.1, Figs. 9–12)."""
    from jobs.analyze.output import write_saturation
    from jobs.analyze.run import ModelSetting, SaturationSetting, run_saturation

    _check(lambda: parse_alphas(alphas, seed), "--alphas")
    setting = SaturationSetting(model=ModelSetting(model_name, weights, layer, device), alphas=alphas, seed=seed)
    result = _run(run_saturation, setting, image_paths, images_count, address, "saturation")
    for path in _write(lambda: write_saturation(result, out)):
        click.echo(f"wrote {path}")
    click.echo(f"saturation: {result.seconds:.1f} s")


def _check(parse: Callable, option: str):
    """``parse()``, or a usage error naming ``option``."""
    try:
        return parse()
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint=option) from None


def _run(job: Callable, setting: object, image_paths: tuple[str, ...], count: int | None, address: str | None,
         name: str):
    """Load the photos, run ``job`` here or as a Ray task, and turn the expected failures into one-line errors."""
    from jobs.explain import load_images

    try:
        photos = load_images(image_paths)[:count]
        click.echo(f"{name}: {setting.model.name} ({setting.model.weights}), {len(photos)} images"
                   + (f", on the Ray cluster at {address}" if address else ""))
        if address is None:
            return job(setting, photos, click.echo)
        return run_on_cluster(job, setting, photos, address=address)
    except ERRORS as err:
        raise click.ClickException(str(err).splitlines()[0] if str(err) else type(err).__name__) from None


def _write(write: Callable):
    """``write()``; a full disk or a read-only folder is a one-line error."""
    try:
        return write()
    except OSError as err:
        raise click.ClickException(f"cannot write the results: {err}") from None


analyze.add_command(clip_command)
