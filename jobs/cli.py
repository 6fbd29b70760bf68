"""The ``camgrid`` command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import click
import yaml

from attribution.methods import method_names
from attribution.models import ARCHITECTURES, DEFAULT_ARCHITECTURE, load_model
from jobs.analyze.cli import analyze
from jobs.progress import is_terminal
from jobs.run_log import log_path, run_log


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
@click.option("--num-classes", default=1000, show_default=True, type=click.IntRange(min=1),
              help="the classifier's outputs (a checkpoint's class count, e.g. 10 for camgrid train's MNIST CNN)")
@click.option("--methods", default="all", show_default=True, help="comma-separated method names, or 'all'")
@click.option("--params", default="{}", help='JSON per-method parameters, e.g. \'{"opticam": {"iterations": 20}}\'')
@click.option("--out", default="camgrid-explain", show_default=True, type=click.Path(file_okay=False))
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when there is a GPU, else cpu)")
@click.option("--references", default=None, metavar="MANIFEST",
              help="reference manifest Expected Grad-CAM draws 2K images from (your data's train split; "
                   "default: the bundled offline pool of photo crops)")
def explain(images, model_name, weights, layer, num_classes, methods, params, out, device, references) -> None:
    """Explain IMAGES (default: scikit-image's bundled photos) with every method; write overlays."""
    from jobs.explain import explain_images, load_images, save_overlay_grid

    chosen = method_names() if methods == "all" else [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in chosen if m not in method_names()]
    if unknown:
        raise click.BadParameter(f"unknown method {', '.join(map(repr, unknown))}; known: {', '.join(method_names())}",
                                 param_hint="--methods")
    device = _device(device)
    try:
        method_params = json.loads(params)
    except json.JSONDecodeError as err:
        raise click.BadParameter(f"not valid JSON: {err}", param_hint="--params") from err
    try:
        photos = load_images(images)
        loaded = load_model(model_name, weights, layer=layer, num_classes=num_classes, device=device)
        click.echo(f"{model_name} ({loaded.weights}) at {loaded.layer}: {len(photos)} images, {len(chosen)} methods")
        explanation = explain_images(loaded, photos, chosen, method_params, progress=click.echo,
                                     references=references)
    except (FileNotFoundError, ValueError, TypeError) as err:
        raise click.ClickException(str(err)) from err
    for name, label in zip(explanation.names, explanation.labels):
        click.echo(f"  {name}: top-1 {label}")
    path = save_overlay_grid(explanation, loaded.preprocessing, Path(out) / "overlays.png")
    click.echo(f"wrote {path}")


def _device(name: str | None) -> str:
    """The torch device ``name`` (default: cuda when there is a GPU), or a usage error saying what this machine has."""
    from jobs.devices import compute_device

    try:
        return compute_device(name)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint="--device") from None


@main.command()
@click.argument("spec", default="demo")
@click.option("--out", default=None, help="run directory, local or s3:// / gs:// (default: the spec's, runs/<name>)")
@click.option("--address", default=None, help="a running Ray cluster (default: start Ray embedded in this process)")
@click.option("--path", "paths", multiple=True, metavar="KEY=VALUE",
              help="override a spec path used in {placeholders}, e.g. --path data=s3://bucket/manifests")
@click.option("--set", "settings", multiple=True, metavar="KEY=VALUE",
              help="change a spec field before validation (YAML value), e.g. --set samples=50 "
                   "--set methods.opticam.iterations=20")
@click.option("--report/--no-report", default=True, show_default=True, help="write the rank tables when done")
@click.option("--verbose", is_flag=True, help="show Ray's own warnings on the console too (they always go to the "
                                              "run's camgrid.log)")
@click.option("--executor", type=click.Choice(["auto", "ray", "local"]), default="auto", show_default=True,
              help="ray: Ray's actors (embedded, or the --address cluster); local: this process, one cell at a time "
                   "on its device; auto: local on one machine with at most one GPU and no --address, else ray")
def run(spec, out, address, paths, settings, report, verbose, executor) -> None:
    """Run (or resume) the grid SPEC: a preset name or a YAML file.

    \b
    Presets: demo (offline, about two minutes on a laptop); the paper's tables fine_grained_40, imagenet_table1,
    imagenet_table5, imagenet_table8, coco_localization, cifar10_infidelity, timing, and the extended sets
    fine_grained_40_full, fine_grained_40_finetuned, imagenet; Opti-CAM's opticam_imagenet_cnn, opticam_imagenet_vit,
    opticam_imagenet_faithfulness, opticam_localization, opticam_ablation; voc_pointing_game; IDGI's idgi_imagenet,
    idgi_steps; SAMP's samp_imagenet, samp_ablation, samp_mnist, samp_cifar10 (checkpoints from camgrid train).
    Rerunning the same command resumes: finished cells and shards are skipped. Ray's own warnings and tracebacks go
    to camgrid.log in the run directory.
    """
    import logging

    from jobs.local import choose_executor
    from jobs.pipeline import GridFailedError, GridInterruptedError, run_grid
    from jobs.spec import SpecError, load_spec
    from storage.results import RunInUseError

    logging.getLogger("evaluation").setLevel(logging.ERROR)  # NaN reasons: the report's nan_report.csv
    try:
        changes = {key: _setting(value) for key, value in _pairs(settings, "--set").items()}
        grid = load_spec(spec, _pairs(paths, "--path"), changes)
    except (SpecError, FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    location = out or grid.output.format(name=grid.name)
    if executor == "auto":
        executor = choose_executor(grid, address)
    with run_log(log_path(location, grid.name), verbose) as log:
        try:
            summary = run_grid(grid, location, address=address, echo=click.echo, live=is_terminal(sys.stdout),
                               executor=executor)
        except GridInterruptedError as err:  # a thread still inside Ray would hold the interpreter's exit
            click.echo(f"Error: {err}", err=True)
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(130)
        except RunInUseError as err:
            raise click.ClickException(str(err)) from err
        except (SpecError, FileNotFoundError, ValueError, ConnectionError, GridFailedError, OSError) as err:
            logging.getLogger("camgrid").error("the run stopped", exc_info=err)
            raise click.ClickException(f"{err} (details: {log.baseFilename})") from err
    click.echo(f"run {summary.run} finished in {summary.seconds:.1f} s → {summary.location}")
    if report and "://" not in summary.location:
        from jobs.overlays import write_overlays
        from storage.report import write_report

        pictures = write_overlays(summary.location, Path(summary.location) / "report" / "overlays")
        written = write_report(summary.location)
        click.echo(f"rank tables: {written['table12b_ranks'][0].parent}")
        if pictures:
            click.echo(f"maps over images: {', '.join(str(p) for p in pictures)}")
        click.echo(f"report page: {written['html'][0]}")
        markdown = next((p for p in written["table12b_ranks"] if p.suffix == ".md"), None)
        if markdown is not None:
            click.echo(markdown.read_text())


def _setting(value: str) -> object:
    """A ``--set`` value as YAML reads it (numbers, lists, mappings), or the text itself where it is not YAML
    (``{data}/manifests`` is a path with a placeholder, not a flow mapping)."""
    try:
        return yaml.safe_load(value)
    except yaml.YAMLError:
        return value


def _pairs(items: tuple[str, ...], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint=option)
        pairs[key] = value
    return pairs


@main.command()
@click.argument("architecture")
@click.argument("train_manifest")
@click.option("--out", required=True, type=click.Path(dir_okay=False), help="the checkpoint file to write (.pt)")
@click.option("--test", "test_manifest", default=None, help="a held-out manifest to report the test accuracy on")
@click.option("--epochs", type=click.IntRange(min=1), default=10, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=128, show_default=True)
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-3, show_default=True, help="AdamW's")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-2, show_default=True, help="AdamW's")
@click.option("--seed", type=int, default=0, show_default=True, help="initial weights and batch order")
@click.option("--device", default=None, help="cpu, cuda or cuda:N (default: cuda when there is a GPU, else cpu)")
def train(architecture, train_manifest, out, test_manifest, epochs, batch_size, lr, weight_decay, seed,
          device) -> None:
    """Train ARCHITECTURE (e.g. samp_cnn_mnist, samp_cnn_cifar10) with AdamW on TRAIN_MANIFEST's images and write
    the checkpoint a spec loads as weights: file:<out>.

    \b
      camgrid manifest build mnist ~/data/mnist --split train --out manifests/mnist_train
      camgrid manifest build mnist ~/data/mnist --out manifests/mnist_test
      camgrid train samp_cnn_mnist manifests/mnist_train --test manifests/mnist_test --out checkpoints/samp_cnn_mnist.pt
    """
    from jobs.train import TrainConfig
    from jobs.train import train as train_model

    device = _device(device)
    try:
        config = TrainConfig(epochs, batch_size, lr, weight_decay, seed)
        result = train_model(architecture, train_manifest, out, test_manifest=test_manifest, config=config,
                             device=device, echo=click.echo, live=is_terminal(sys.stderr))
    except (FileNotFoundError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {result.checkpoint} (weights: file:{result.checkpoint})")


@main.group()
def manifest() -> None:
    """Build and inspect Parquet image manifests."""


@manifest.command("build")
@click.argument("dataset")
@click.argument("root", required=False, type=click.Path(file_okay=False))
@click.option("--out", required=True, help="manifest folder (local path or s3:// / gs:// URI)")
@click.option("-n", "--n", "n", type=click.IntRange(min=1), default=None,
              help="images to sample, stratified by class (default: all)")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--split", default=None,
              help="dataset split (default: the builder's evaluation split); reference sets for Expected "
                   "Grad-CAM are built from the train split, which needs no masks")
@click.option("--category", "categories", multiple=True, help="COCO category name (repeatable), e.g. zebra")
@click.option("--reference/--embed", "reference", default=False,
              help="store image paths/URIs instead of the encoded bytes")
@click.option("--shard-size", type=click.IntRange(min=1), default=100, show_default=True, help="images per shard")
@click.option("--difficult/--no-difficult", default=None,
              help="voc2007: keep the (image, class) pairs whose objects are all flagged difficult")
@click.option("--subset", type=click.Choice(["all", "difficult"]), default=None,
              help="voc2007: the pointing game's All or Difficult set (Zhang et al. 2018)")
def manifest_build(dataset, root, out, n, seed, split, categories, reference, shard_size, difficult, subset) -> None:
    """Build a manifest of DATASET (see the list below) from its on-disk layout at ROOT.

    \b
    Datasets: imagenet, cifar10, mnist, coco, cub200, oxford_pets, flowers102, stanford_dogs, fgvc_aircraft,
    voc2007 (a row per image and class present), folder (ImageFolder), demo (bundled, needs no ROOT).

    The evaluation set is the builder's default split. The reference distribution that Expected
    Grad-CAM draws its perturbations from is the train split, built as a manifest of its own (an
    image without a mask is kept there), e.g.

    \b
      camgrid manifest build cub200 ~/data/CUB_200_2011 --split train --out manifests/cub200_train -n 4096
    """
    from storage.builders import BUILDERS, build

    options = {"categories": list(categories)} if categories else {}
    voc = {"difficult": difficult, "subset": subset}
    given = {k: v for k, v in voc.items() if v is not None}
    if given and dataset != "voc2007":
        raise click.BadParameter(f"only voc2007 takes --{next(iter(given))}", param_hint=f"--{next(iter(given))}")
    options.update(given)
    if dataset not in ("demo", "demo_references") and root is None and dataset in BUILDERS:
        raise click.BadParameter(f"{dataset} needs the ROOT folder of its files", param_hint="ROOT")
    last = [-1]

    def progress(done: int, total: int) -> None:
        step = done * 20 // max(total, 1)
        if step != last[0] or done == total:
            last[0] = step
            click.echo(f"\r  {done}/{total} images", nl=done == total)

    try:
        built = build(dataset, root, out, n=n, seed=seed, split=split, embed=not reference, shard_size=shard_size,
                      progress=progress, **options)
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    click.echo(f"wrote {out} (split {built.metadata['sample']['split']}): {len(built)} images, "
               f"{len(built.shards)} shards, {len(built.class_names)} classes, "
               f"{len(built.skipped)} skipped")
    for skip in built.skipped[:10]:
        click.echo(f"  skipped {skip['image_id'] or skip['source']}: {skip['reason']}")


@manifest.command("show")
@click.argument("location")
def manifest_show(location) -> None:
    """Summarise the manifest at LOCATION: rows per dataset/split, classes, ground truth, skips."""
    import polars as pl

    from storage.manifest import ManifestError, read_manifest

    try:
        loaded = read_manifest(location)
    except (FileNotFoundError, ManifestError) as err:
        raise click.ClickException(str(err)) from err
    frame = loaded.to_polars()
    summary = frame.group_by("dataset", "split").agg(
        images=pl.len(), classes=pl.col("label").n_unique(), masks=pl.col("mask").is_not_null().sum(),
        boxes=pl.col("boxes").is_not_null().sum(), embedded=pl.col("image").is_not_null().sum()).sort("dataset", "split")
    click.echo(f"{location}: builder {loaded.metadata['builder']} v{loaded.metadata['builder_version']}, "
               f"{len(loaded.class_names)} classes in the label space, shards {loaded.shards}")
    click.echo(str(summary))
    for skip in loaded.skipped:
        click.echo(f"  skipped {skip['image_id'] or skip['source']}: {skip['reason']}")


@main.command()
@click.argument("run_dir")
@click.option("--out", default=None, help="folder for the tables (default: RUN_DIR/report)")
@click.option("--directions", default=None,
              help='JSON metric → "higher"|"lower" (default: the run record\'s)')
@click.option("--overlays/--no-overlays", default=True, show_default=True,
              help="also draw each cell's maps over its first images (PNG per cell)")
@click.option("--paper", default=None, type=click.Path(exists=True, dir_okay=False),
              help="a CSV of a paper's reported values to set beside the run's (default: the values its preset ships)")
def report(run_dir, out, directions, overlays, paper) -> None:
    """Rank tables (Markdown, CSV, LaTeX) of the run in RUN_DIR: the paper's Table 12 and per-cell tables."""
    from jobs.overlays import write_overlays
    from storage.report import unfinished_cells, write_report
    from storage.results import RunStore

    try:
        store = RunStore(run_dir)
        try:
            unfinished = unfinished_cells(store, store.read_record())
        except FileNotFoundError:
            unfinished = []
        if unfinished:
            click.echo(f"warning: the run is incomplete: {len(unfinished)} cell(s) have not finished "
                       f"({', '.join(unfinished[:3])}{', …' if len(unfinished) > 3 else ''}); the tables cover what "
                       "was written. Rerun the job to complete it.", err=True)
        pictures = write_overlays(run_dir, Path(out or Path(run_dir) / "report") / "overlays") if overlays else []
        written = write_report(run_dir, out, json.loads(directions) if directions else None,
                               _reported_values(store, paper))
        if pictures:
            written["overlays"] = pictures
    except (FileNotFoundError, KeyError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    except OSError as err:  # a full disk, a read-only folder: the tables written before stay whole
        raise click.ClickException(f"could not write the report into {out or Path(run_dir) / 'report'}: "
                                   f"{err.strerror or err}") from err
    for name, paths in written.items():
        click.echo(f"{name}: {', '.join(str(p) for p in paths)}")
    markdown = next((p for p in written["table12b_ranks"] if p.suffix == ".md"), None)
    if markdown is not None:
        click.echo(markdown.read_text())
    click.echo(f"report page: {written['html'][0]}")


def _reported_values(store, path: str | None):
    """The paper values for the report: the ``--paper`` file, else those the run's preset ships, else ``None``."""
    from jobs.paper import paper_values
    from storage.paper import read_paper_values

    if path is not None:
        return read_paper_values(path), path
    try:
        name = store.read_record().config.get("name")
    except FileNotFoundError:
        return None
    return paper_values(name) if isinstance(name, str) else None


@main.command("spec-schema")
def spec_schema() -> None:
    """Print the JSON Schema of a grid spec's YAML (what jobs/spec.schema.json ships)."""
    from jobs.spec import spec_json_schema

    click.echo(json.dumps(spec_json_schema(), indent=2, sort_keys=True, ensure_ascii=False))


main.add_command(analyze)

if __name__ == "__main__":
    main()
