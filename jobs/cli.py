"""The ``camgrid`` command line."""

from __future__ import annotations

import json
from pathlib import Path

import click

from attribution.methods import method_names
from attribution.models import ARCHITECTURES, DEFAULT_ARCHITECTURE, load_model


@click.group()
def main() -> None:
    """camgrid: evaluate CAM saliency methods over dataset × architecture grids."""


@main.command()
@click.argument("images", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--model", "model_name", default=DEFAULT_ARCHITECTURE, show_default=True,
              help=f"registry name ({', '.join(ARCHITECTURES)}) or torchvision:<name> / timm:<name>")
@click.option("--weights", default="pretrained", show_default=True,
              help="pretrained | none | torchvision:<ENUM> | timm | package | file:<checkpoint>")
@click.option("--layer", default=None, help="target layer (default: the registry's)")
@click.option("--methods", default="all", show_default=True, help="comma-separated method names, or 'all'")
@click.option("--params", default="{}", help='JSON per-method parameters, e.g. \'{"opticam": {"iterations": 20}}\'')
@click.option("--out", default="camgrid-explain", show_default=True, type=click.Path(file_okay=False))
@click.option("--device", default="cuda" if __import__("torch").cuda.is_available() else "cpu", show_default=True)
def explain(images, model_name, weights, layer, methods, params, out, device) -> None:
    """Explain IMAGES (default: scikit-image's bundled photos) with every method; write overlays."""
    from jobs.explain import explain_images, load_images, save_overlay_grid

    chosen = method_names() if methods == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in method_names()]
    if unknown:
        raise click.BadParameter(f"unknown method {', '.join(map(repr, unknown))}; known: {', '.join(method_names())}",
                                 param_hint="--methods")
    try:
        method_params = json.loads(params)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not valid JSON: {err}", param_hint="--params") from err
    try:
        photos = load_images(images)
        loaded = load_model(model_name, weights, layer=layer, device=device)
        click.echo(f"{model_name} ({loaded.weights}) at {loaded.layer}: {len(photos)} images, {len(chosen)} methods")
        explanation = explain_images(loaded, photos, chosen, method_params, progress=click.echo)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    for name, label in zip(explanation.names, explanation.labels):
        click.echo(f"  {name}: top-1 {label}")
    path = save_overlay_grid(explanation, loaded, Path(out) / "overlays.png")
    click.echo(f"wrote {path}")


if __name__ == "__main__":
    main()
