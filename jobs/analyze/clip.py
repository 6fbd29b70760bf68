"""Prompt-conditioned CAMs of CLIP's ResNet image tower (App. F and Fig. 17 of Buono et al., "Not All CAMs Are
Complete", TMLR 2026; ``camgrid analyze clip``).

App. F explains CLIP ResNet-50 for free-text prompts, two per image, with Grad-CAM and Expected Grad-CAM. It does
not name the score or the layer; here the score of prompt ``p`` is the cosine similarity
``⟨normalize(visual(x)), normalize(text(p))⟩`` (no logit scale) and the target layer is ``visual.layer4``, the block
output before the attention pool (``K = 2048`` channels for RN50). :class:`PromptScorer` turns a CLIP model and its
prompts into a ``(B, P)`` "classifier", so every camgrid method runs unchanged with the prompt index as target.

Expected Grad-CAM's data-aware perturbations draw ``h(x')`` from a reference manifest (default: the bundled offline
``demo_references`` crops, as ``camgrid explain``). With ``R`` distinct references ``M̂`` has rank ``≤ R + 1``, so
the paper's full-rank regime at ``layer4`` needs ``R ≥ K − 1 = 2047``; a smaller pool runs and the method's
:class:`~attribution.channel_scaling.RankDeficientWarning` says so.
"""

from __future__ import annotations

import contextlib
import logging
import textwrap
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import click
import polars as pl
import torch
from PIL import Image
from torch import Tensor, nn
from torch.nn import functional as F

from attribution.layout import SpatialLayout
from attribution.methods import CAMMethod, create_method
from attribution.models import Architecture, LoadedModel, WeightsUnavailableError
from attribution.models.preprocessing import Preprocessing
from attribution.needs import Need
from attribution.postprocess import check_finite, minmax_normalize
from attribution.registry import UnknownNameError
from evaluation import create_metric
from jobs.explain import Explanation, load_images, manifest_reference_features, save_overlay_grid

__all__ = [
    "DEFAULT_PROMPTS",
    "LAYER",
    "ClipRun",
    "LoadedCLIP",
    "PromptExplanation",
    "PromptScorer",
    "clip_command",
    "explain_prompts",
    "load_clip",
    "run_clip",
    "save_prompt_outputs",
]

LAYER = "clip.visual.layer4"  # visual.layer4 of the CLIP model, as named inside PromptScorer

# two prompts per bundled photo (storage.builders.sample_images), the object and another region, as in Fig. 17
DEFAULT_PROMPTS: dict[str, tuple[str, str]] = {
    "chelsea": ("a cat", "green eyes"),
    "coffee": ("a cup of coffee", "a wooden table"),
    "rocket": ("a rocket", "the night sky"),
    "astronaut": ("an astronaut", "the American flag"),
}


def _keep_attention_pool_whole() -> None:
    """Make open_clip's attention pool a leaf of camgrid's torch.fx split.

    Traced through, its positional embedding and packed q/k/v biases would become values the split passes from
    the prefix to the suffix, which the split indexes by image row; timm's not-traceable registry, which
    :mod:`attribution.split` keeps as leaves, avoids that.
    """
    from open_clip.modified_resnet import AttentionPool2d
    from timm.layers import register_notrace_module

    register_notrace_module(AttentionPool2d)


class PromptScorer(nn.Module):
    """``forward(images)`` → ``(B, P)``: cosine similarity of each image embedding to each prompt's (App. F).

    The prompts' normalised text embeddings are computed once here, without gradients; the target layer of the
    CLIP model's ResNet tower is :data:`LAYER` (``clip.visual.layer4``).
    """

    def __init__(self, clip: nn.Module, prompts: Sequence[str], tokenizer: Callable[[list[str]], Tensor]) -> None:
        super().__init__()
        if not prompts:
            raise ValueError("PromptScorer needs at least one prompt")
        _keep_attention_pool_whole()
        self.clip = clip
        self.prompts = list(prompts)
        device = next(clip.parameters()).device
        with torch.no_grad():
            text = clip.encode_text(tokenizer(self.prompts).to(device), normalize=True)
        self.register_buffer("text_embeddings", text, persistent=False)

    def forward(self, images: Tensor) -> Tensor:
        return F.linear(self.clip.encode_image(images, normalize=True), self.text_embeddings)


@dataclass
class LoadedCLIP:
    """An open_clip CLIP model in eval mode on its device, with its tokenizer and CLIP's preprocessing."""

    model: nn.Module
    tokenizer: Callable[[list[str]], Tensor]
    preprocessing: Preprocessing
    name: str
    pretrained: str | None

    @property
    def channels(self) -> int:
        """``K`` of :data:`LAYER`: the attention pool's input width."""
        return self.model.visual.attnpool.k_proj.in_features

    def scorer(self, prompts: Sequence[str]) -> LoadedModel:
        """A :class:`PromptScorer` of ``prompts`` as a camgrid :class:`LoadedModel` (target layer :data:`LAYER`)."""
        spec = Architecture(f"open_clip:{self.name}", "open_clip", self.name, LAYER, self.channels,
                            self.pretrained or "none", layout=SpatialLayout())
        return LoadedModel(PromptScorer(self.model, prompts, self.tokenizer).eval(), spec, self.preprocessing,
                           self.pretrained or "none")


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """open_clip reports on the root logger what this module raises or already knows (a random model)."""
    previous = logging.root.manager.disable
    logging.disable(logging.ERROR)
    try:
        yield
    finally:
        logging.disable(previous)


def load_clip(
    name: str = "RN50",
    pretrained: str | None = "openai",
    *,
    device: str | torch.device = "cpu",
    image_size: int | None = None,
) -> LoadedCLIP:
    """An open_clip ResNet CLIP (App. F: RN50 with OpenAI's weights) in eval mode on ``device``.

    ``pretrained``: an open_clip tag of ``name`` (downloaded from the hub), a local checkpoint file, or
    ``None``/``"none"`` for a randomly initialised model built from the config. A tag trained with QuickGELU
    (OpenAI's) gets it in the text tower, as open_clip's ``-quickgelu`` configs. ``image_size`` overrides the input
    size of a random model (the attention pool's positional embedding follows).
    """
    import open_clip

    config = open_clip.get_model_config(name)
    if config is None:
        raise ValueError(f"open_clip has no model {name!r}")
    if not isinstance(config["vision_cfg"].get("layers"), (list, tuple)):
        raise ValueError(f"open_clip model {name!r} has no ResNet image tower (visual.layer4); use RN50, RN101, …")
    pretrained = None if pretrained in (None, "none") else pretrained
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained is not None and pretrained not in tags and not Path(pretrained).is_file():
        raise ValueError(f"open_clip has no weights {pretrained!r} for {name} (tags: {', '.join(tags) or 'none'}) "
                         "and no such checkpoint file")
    native = config["vision_cfg"]["image_size"]
    if pretrained is not None and image_size not in (None, native):
        raise ValueError(f"pretrained {name} weights take {native}-pixel images; image_size suits random models only")
    quick_gelu = pretrained in tags and bool(open_clip.get_pretrained_cfg(name, pretrained).get("quick_gelu"))
    try:
        with _quiet_root_logger():
            model = open_clip.create_model(name, pretrained=pretrained, device=device, force_image_size=image_size,
                                           force_quick_gelu=quick_gelu, require_pretrained=pretrained is not None)
    except RuntimeError as err:
        raise WeightsUnavailableError(
            f"could not load the open_clip weights {name}/{pretrained} ({str(err).splitlines()[0]}); on an offline "
            "machine pass a local checkpoint file, or pretrained 'none' (--pretrained none) for a random model"
        ) from err
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg["size"] if isinstance(cfg["size"], int) else cfg["size"][-1]
    preprocessing = Preprocessing(size, size, tuple(cfg["mean"]), tuple(cfg["std"]), cfg["interpolation"])
    return LoadedCLIP(model.eval(), open_clip.get_tokenizer(name), preprocessing, name, pretrained)


@dataclass
class PromptExplanation:
    """Maps of every (image, prompt) row: ``images`` (N, 3, H, W) normalised, ``maps`` method → (N, H, W) in [0, 1],
    ``scores`` the cosine similarity of each row's prompt, ``completeness_gap`` method → (N,) (NaN without channel
    weights), ``seconds`` method → wall time for all rows."""

    names: list[str]
    prompts: list[str]
    images: Tensor
    scores: Tensor
    maps: dict[str, Tensor]
    completeness_gap: dict[str, Tensor]
    seconds: dict[str, float]
    preprocessing: Preprocessing

    def table(self) -> pl.DataFrame:
        """One row per (image, prompt, method): the cosine similarity and the map's completeness gap."""
        return pl.DataFrame(
            [
                {"image": name, "prompt": prompt, "method": method, "cosine": float(self.scores[r]),
                 "completeness_gap": float(self.completeness_gap[method][r])}
                for method in self.maps
                for r, (name, prompt) in enumerate(zip(self.names, self.prompts))
            ],
            schema={"image": pl.String, "prompt": pl.String, "method": pl.String, "cosine": pl.Float64,
                    "completeness_gap": pl.Float64},
        )


def _prompts_for(name: str, prompts: Sequence[str] | Mapping[str, Sequence[str]]) -> list[str]:
    chosen = prompts.get(name, ()) if isinstance(prompts, Mapping) else prompts
    if not chosen:
        raise ValueError(f"no prompt for image {name!r}: give prompts (--prompt)")
    return list(chosen)


def _declare(methods: Sequence[str], method_params: Mapping[str, Mapping[str, object]] | None
             ) -> tuple[dict[str, dict[str, object]], dict[str, CAMMethod]]:
    """Each method's constructor parameters and the method built from them: unknown names and parameters fail here."""
    settings = {name: dict((method_params or {}).get(name, {})) for name in methods}
    return settings, {name: create_method(name, **params) for name, params in settings.items()}


def explain_prompts(
    clip: LoadedCLIP,
    images: Sequence[tuple[str, Image.Image]],
    prompts: Sequence[str] | Mapping[str, Sequence[str]],
    methods: Sequence[str] = ("expected_gradcam", "gradcam"),
    references: int | None = None,
    *,
    reference_manifest: str | None = None,
    method_params: Mapping[str, Mapping[str, object]] | None = None,
    progress: Callable[[str], None] = print,
) -> PromptExplanation:
    """Maps of every method for every (image, prompt) at :data:`LAYER`, the target being the prompt (App. F, Fig. 17).

    ``prompts``: the same prompts for every image, or per image name. A method that draws data-aware perturbations
    gets the features of ``references`` images (default ``2K``) of ``reference_manifest`` (default: the bundled
    ``demo_references`` pool), computed once and shared; ``method_params`` are passed to the methods' constructors.
    """
    settings, declared = _declare(methods, method_params)
    rows = [(name, image, prompt) for name, image in images for prompt in _prompts_for(name, prompts)]
    distinct = list(dict.fromkeys(prompt for _, _, prompt in rows))
    loaded = clip.scorer(distinct)
    device = next(loaded.model.parameters()).device
    pixels = {name: loaded.preprocessing(image) for name, image in images}
    batch = torch.stack([pixels[name] for name, _, _ in rows]).to(device)
    targets = torch.tensor([distinct.index(prompt) for _, _, prompt in rows], device=device)
    with torch.no_grad():
        scores = loaded.model(batch).gather(1, targets[:, None])[:, 0]
    gap = create_metric("completeness_gap")
    pool: Tensor | None = None
    maps: dict[str, Tensor] = {}
    gaps: dict[str, Tensor] = {}
    seconds: dict[str, float] = {}
    for name, params in settings.items():
        start, method = time.perf_counter(), declared[name]
        if Need.BLACK in method.needs:
            params["black"] = loaded.preprocessing.black
        if method.reference_pool is not None and "reference" not in params and "reference_features" not in params:
            if pool is None:
                pool = manifest_reference_features(loaded, reference_manifest, references or 2 * clip.channels,
                                                   progress)
            params["reference_features"] = pool
        with create_method(name, **params).bind(loaded.model, loaded.layer, loaded.layout) as bound:
            attribution = bound(batch, targets)
        if attribution.diagnostics is not None:
            progress(f"  {name}: {attribution.diagnostics.describe()}")
        scored = check_finite(attribution.scored(tuple(batch.shape[-2:])))
        gaps[name] = gap(scored, images=batch, model=loaded.model, targets=targets, layer=loaded.layer,
                         layout=loaded.layout, weights=attribution.weights).cpu()
        maps[name] = minmax_normalize(scored).cpu()
        seconds[name] = time.perf_counter() - start
        progress(f"  {name:<20} {seconds[name]:7.2f} s for {len(rows)} (image, prompt) pairs")
    return PromptExplanation([n for n, _, _ in rows], [p for _, _, p in rows], batch.cpu(), scores.cpu(), maps, gaps,
                             seconds, loaded.preprocessing)


def save_prompt_outputs(explanation: PromptExplanation, out: str | Path) -> list[Path]:
    """``<out>/clip/overlays.png`` (rows: image × prompt, columns: methods, as Fig. 17) and
    ``<out>/clip/scores.parquet`` (:meth:`PromptExplanation.table`)."""
    folder = Path(out) / "clip"
    pairs = zip(explanation.names, explanation.prompts)
    titles = [f"{name}\n" + textwrap.fill(f"“{prompt}”", 26) for name, prompt in pairs]
    scores = [f"cos {float(s):+.3f}" for s in explanation.scores]
    grid = Explanation(titles, explanation.images, torch.zeros(len(titles), dtype=torch.long), scores,
                       explanation.maps, explanation.seconds)
    png = save_overlay_grid(grid, explanation.preprocessing, folder / "overlays.png")
    parquet = folder / "scores.parquet"
    explanation.table().write_parquet(parquet)
    return [png, parquet]


@dataclass(frozen=True)
class ClipRun:
    """What ``camgrid analyze clip`` computes (sent whole to a Ray task with ``--address``)."""

    model: str = "RN50"
    pretrained: str | None = "openai"
    image_size: int | None = None
    device: str | None = None
    prompts: tuple[str, ...] | Mapping[str, tuple[str, ...]] = ()
    methods: tuple[str, ...] = ("expected_gradcam", "gradcam")
    references: int | None = None
    reference_manifest: str | None = None
    perturbations: int | None = None


def run_clip(run: ClipRun, photos: list[tuple[str, Image.Image]],
             progress: Callable[[str], None] = print) -> PromptExplanation:
    """Load the model of ``run`` and explain ``photos`` for its prompts (:func:`explain_prompts`)."""
    params = {"expected_gradcam": {"n_perturbations": run.perturbations}} if run.perturbations else None
    _declare(run.methods, params)
    for name, _ in photos:
        _prompts_for(name, run.prompts or DEFAULT_PROMPTS)
    device = run.device or ("cuda" if torch.cuda.is_available() else "cpu")
    clip = load_clip(run.model, run.pretrained, device=device, image_size=run.image_size)
    return explain_prompts(clip, photos, run.prompts or DEFAULT_PROMPTS, run.methods, run.references,
                           reference_manifest=run.reference_manifest, method_params=params, progress=progress)


_ERRORS = (FileNotFoundError, ValueError, TypeError, UnknownNameError, ConnectionError, WeightsUnavailableError)


@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--prompt", "prompts", multiple=True,
              help="a text prompt, explained on every image (repeatable; default: two per bundled photo)")
@click.option("--model", "model_name", default="RN50", show_default=True, help="an open_clip ResNet model")
@click.option("--pretrained", default="openai", show_default=True,
              help="open_clip weights tag, a local checkpoint file, or 'none' for a randomly initialised model")
@click.option("--image-size", type=click.IntRange(min=32), default=None, help="input size [default: the model's]")
@click.option("--references", type=click.IntRange(min=1), default=None,
              help="R, reference images of Expected Grad-CAM's perturbations [default: 2K; full rank needs K − 1]")
@click.option("--reference-manifest", default=None, metavar="MANIFEST",
              help="reference manifest to draw them from (default: the bundled demo_references)")
@click.option("--perturbations", type=click.IntRange(min=1), default=None, help="M of Expected Grad-CAM [default: 2K]")
@click.option("--methods", default="expected_gradcam,gradcam", show_default=True, help="comma-separated method names")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when there is a GPU)")
@click.option("--out", default="camgrid-analyze", show_default=True, type=click.Path(file_okay=False),
              help="writes <out>/clip/overlays.png and <out>/clip/scores.parquet")
@click.option("--address", default=None, help="a running Ray cluster: compute there as one task (one GPU if any)")
def clip_prompts(images, prompts, model_name, pretrained, image_size, references, reference_manifest, perturbations,
                 methods, device, out, address) -> None:
    """Grad-CAM and Expected Grad-CAM of CLIP's image tower at visual.layer4 for text prompts: App. F, Fig. 17."""
    start = time.perf_counter()
    run = ClipRun(model_name, pretrained, image_size, device, tuple(prompts),
                  tuple(m.strip() for m in methods.split(",") if m.strip()), references, reference_manifest,
                  perturbations)
    try:
        photos = load_images(images)
        click.echo(f"clip: {model_name} ({pretrained}), {len(photos)} images"
                   + (f", on the Ray cluster at {address}" if address else ""))
        if address is None:
            explanation = run_clip(run, photos, click.echo)
        else:
            from jobs.analyze.remote import run_on_cluster

            explanation = run_on_cluster(run_clip, run, photos, address=address)
    except _ERRORS as err:
        raise click.ClickException(str(err).splitlines()[0] if str(err) else type(err).__name__) from None
    try:
        written = save_prompt_outputs(explanation, out)
    except OSError as err:
        raise click.ClickException(f"cannot write the results: {err}") from None
    for path in written:
        click.echo(f"wrote {path}")
    click.echo(f"clip: {time.perf_counter() - start:.1f} s")


clip_command = click.command("clip")(clip_prompts)
