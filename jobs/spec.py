"""Grid specs: the YAML that names a run's datasets, architectures, methods, metrics and resources.

A spec is validated as a whole before anything runs; every error names the file and the field
(``demo.yaml: methods.scorecam: method 'scorecam' has no parameter 'batchsize' …``). Presets that
reproduce the paper ship inside the package (``jobs/presets/*.yaml``) and are loaded by name.

Strings in ``datasets.*.manifest`` and ``architectures.*.weights`` may use ``{data}`` and
``{checkpoints}`` (the spec's ``paths``, overridable from the command line) and, for weights,
``{dataset}`` and ``{architecture}`` (a fine-tuned checkpoint per cell).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

__all__ = [
    "SpecError",
    "GridSpec",
    "DatasetSpec",
    "ArchitectureSpec",
    "ReferenceSpec",
    "ResourceSpec",
    "load_spec",
    "parse_spec",
    "preset_names",
]

PACKAGED_WEIGHTS = ("pretrained", "package", "timm")  # ImageNet label space unless num_classes says otherwise


class SpecError(ValueError):
    """A grid spec that cannot run; the message names the file and the field."""


@dataclass(frozen=True)
class DatasetSpec:
    """One dataset: its manifest, its reference source and how targets are chosen.

    ``references``: the manifest that Expected Grad-CAM's data-aware perturbations (and
    ``cam_infidelity``'s held-out ones) draw reference images from, normally the dataset's train
    split (``camgrid manifest build <dataset> <root> --split train``). Without it, the reference
    images are held out of ``manifest`` itself (for small data) and never explained.

    ``target``: ``label`` explains the ground-truth class (mapped through ``classes`` when the
    manifest's label space is not the model's), ``predicted`` the model's top-1 class.
    """

    name: str
    manifest: str
    target: Literal["label", "predicted"] = "label"
    classes: Mapping[str, int] | None = None  # label name → model class index
    references: str | None = None  # a reference manifest (its train split); None: held out of `manifest`


@dataclass(frozen=True)
class ArchitectureSpec:
    """One architecture: a registry name (or ``torchvision:``/``timm:``), weights, target layer, input size."""

    name: str
    model: str
    weights: str = "pretrained"
    layer: str | None = None
    input_size: int | None = None  # resize + crop to this side instead of the registry's preprocessing
    num_classes: int | None = None  # default: 1000 for packaged/hub weights, the manifest's classes otherwise


@dataclass(frozen=True)
class ReferenceSpec:
    """How many reference images each dataset's reference source gives (a seeded, disjoint split).

    ``pool``: the images Expected Grad-CAM's ``M`` perturbations draw from, one per perturbation;
    ``auto`` is ``2·K`` for the grid's largest ``K``, what ``M = 2K`` needs without repeating an image
    (App. B.1–B.2: ``rank(M̂) = K`` needs at least ``K − 1`` distinct references).
    ``held_out``: disjoint images ``cam_infidelity`` draws its perturbations from; ``auto`` is ``K``.
    """

    pool: int | Literal["auto"] = "auto"
    held_out: int | Literal["auto"] = "auto"


@dataclass(frozen=True)
class ResourceSpec:
    """How the cells are placed: actors per cell, their CPUs/GPUs, cells at once, failure handling."""

    actors_per_cell: int = 1
    gpus_per_actor: float | Literal["auto"] = "auto"  # auto: 1 when the cluster has GPUs, else 0
    cpus_per_actor: float | Literal["auto"] = "auto"  # auto: 1 with a GPU, else a share of the node's CPUs
    concurrent_cells: int | Literal["auto"] = "auto"  # auto: the cluster's GPUs / (actors × GPUs), else 1
    retries: int = 2  # reruns of a failed cell (each resumes from its written shards)
    no_progress_timeout_s: float = 1800.0  # a pipeline that makes no progress this long fails


@dataclass(frozen=True)
class GridSpec:
    name: str
    datasets: tuple[DatasetSpec, ...]
    architectures: tuple[ArchitectureSpec, ...]
    methods: Mapping[str, Mapping[str, Any]]
    metrics: Mapping[str, Mapping[str, Any]]
    samples: int | None = None  # images per cell; None: every image of the manifest (after references)
    references: ReferenceSpec = field(default_factory=ReferenceSpec)
    batch_size: int = 8
    seed: int = 0
    output: str = "runs/{name}"
    description: str = ""
    paths: Mapping[str, str] = field(default_factory=dict)
    resources: ResourceSpec = field(default_factory=ResourceSpec)
    source: str = "<spec>"

    @property
    def cells(self) -> list[tuple[DatasetSpec, ArchitectureSpec]]:
        """Every (dataset, architecture) combination, datasets outermost."""
        return [(d, a) for d in self.datasets for a in self.architectures]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (the run record's ``config``)."""
        data = asdict(self)
        data.pop("source")
        return json.loads(json.dumps(data, default=str))

    def fingerprint(self) -> str:
        """A hash of everything that changes results: not resources, output, description or batch size."""
        data = self.to_dict()
        for key in ("resources", "output", "description", "batch_size"):
            data.pop(key)
        return hashlib.blake2b(json.dumps(data, sort_keys=True).encode(), digest_size=6).hexdigest()

    def manifest_location(self, dataset: DatasetSpec) -> str:
        return _format(dataset.manifest, self.paths, f"{self.source}: datasets.{dataset.name}.manifest")

    def reference_location(self, dataset: DatasetSpec) -> str | None:
        """The dataset's reference manifest, or ``None`` when its references are held out of its manifest."""
        if dataset.references is None:
            return None
        return _format(dataset.references, self.paths, f"{self.source}: datasets.{dataset.name}.references")

    def weights_for(self, dataset: DatasetSpec, arch: ArchitectureSpec) -> str:
        values = {**self.paths, "dataset": dataset.name, "architecture": arch.name}
        return _format(arch.weights, values, f"{self.source}: architectures.{arch.name}.weights")


def _format(template: str, values: Mapping[str, str], where: str) -> str:
    try:
        return os.path.expandvars(template.format(**values))
    except KeyError as err:
        raise SpecError(f"{where}: unknown placeholder {{{err.args[0]}}}; known: {', '.join(sorted(values))}") from None


# -- parsing ---------------------------------------------------------------------------------------------

_TOP = {
    "name",
    "description",
    "datasets",
    "architectures",
    "methods",
    "metrics",
    "samples",
    "references",
    "batch_size",
    "seed",
    "output",
    "paths",
    "resources",
}


class _Reader:
    """Typed field access with errors that name ``source: path.to.field``."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, message: str) -> SpecError:
        return SpecError(f"{self.source}: {where}: {message}" if where else f"{self.source}: {message}")

    def mapping(self, value: Any, where: str, allowed: set[str] | None = None) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            raise self.fail(where, f"expected a mapping, got {type(value).__name__} {value!r}")
        if allowed is not None:
            unknown = sorted(set(value) - allowed)
            if unknown:
                raise self.fail(where, f"unknown field {unknown[0]!r}; allowed: {', '.join(sorted(allowed))}")
        return dict(value)

    def integer(self, value: Any, where: str, minimum: int = 0, optional: bool = False) -> int | None:
        if value is None and optional:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"expected an integer ≥ {minimum}, got {value!r}")
        return value

    def number(self, value: Any, where: str, minimum: float = 0.0, auto: bool = False) -> float | str:
        if auto and value == "auto":
            return "auto"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value < minimum:
            raise self.fail(where, f"expected a number ≥ {minimum}{' or auto' if auto else ''}, got {value!r}")
        return float(value)

    def string(self, value: Any, where: str, optional: bool = False, choices: tuple[str, ...] = ()) -> str | None:
        if value is None and optional:
            return None
        if not isinstance(value, str) or not value:
            raise self.fail(where, f"expected a non-empty string, got {value!r}")
        if choices and value not in choices:
            raise self.fail(where, f"{value!r} is not one of {', '.join(choices)}")
        return value


def _name(reader: _Reader, value: str, where: str) -> str:
    if "/" in value or "=" in value or value.startswith((".", "_")):
        raise reader.fail(where, f"name {value!r} cannot be a result directory (no '/', '=', leading '.' or '_')")
    return value


def _entries(reader: _Reader, raw: Any, kind: str) -> dict[str, Any]:
    """The named entries of ``datasets``, ``architectures``, ``methods`` or ``metrics``: at least one."""
    entries = reader.mapping(raw, kind)
    if not entries:
        raise reader.fail(kind, f"at least one {kind[:-1]} is needed")
    return entries


def _datasets(reader: _Reader, raw: Any) -> tuple[DatasetSpec, ...]:
    entries = _entries(reader, raw, "datasets")
    out = []
    for name, body in entries.items():
        where = f"datasets.{name}"
        body = reader.mapping(body, where, {"manifest", "target", "classes", "references"})
        if "manifest" not in body:
            raise reader.fail(where, "missing field 'manifest' (a manifest folder, URI, or 'bundled:demo')")
        classes = body.get("classes")
        if classes is not None:
            classes = reader.mapping(classes, f"{where}.classes")
            for label, index in classes.items():
                reader.integer(index, f"{where}.classes.{label}")
        out.append(
            DatasetSpec(
                _name(reader, str(name), where),
                reader.string(body["manifest"], f"{where}.manifest"),
                reader.string(body.get("target", "label"), f"{where}.target", choices=("label", "predicted")),
                classes,
                reader.string(body.get("references"), f"{where}.references", optional=True),
            )
        )
    return tuple(out)


def _architectures(reader: _Reader, raw: Any) -> tuple[ArchitectureSpec, ...]:
    from attribution.models import architecture

    entries = _entries(reader, raw, "architectures")
    out = []
    for name, body in entries.items():
        where = f"architectures.{name}"
        body = reader.mapping(body, where, {"model", "weights", "layer", "input_size", "num_classes"})
        spec = ArchitectureSpec(
            _name(reader, str(name), where),
            reader.string(body.get("model", name), f"{where}.model"),
            reader.string(body.get("weights", "pretrained"), f"{where}.weights"),
            reader.string(body.get("layer"), f"{where}.layer", optional=True),
            reader.integer(body.get("input_size"), f"{where}.input_size", 8, optional=True),
            reader.integer(body.get("num_classes"), f"{where}.num_classes", 1, optional=True),
        )
        try:
            architecture(spec.model, spec.layer)
        except ValueError as err:
            raise reader.fail(f"{where}.model", str(err)) from None
        out.append(spec)
    return tuple(out)


def _parameters(reader: _Reader, raw: Any, kind: str) -> dict[str, dict[str, Any]]:
    from attribution.methods import UnknownMethodError, create_method
    from evaluation import create_metric
    from evaluation.registry import UnknownMetricError

    entries = _entries(reader, raw, kind)
    out = {}
    for name, params in entries.items():
        where = f"{kind}.{name}"
        params = reader.mapping(params, where)
        try:
            supplied = sorted({"reference", "reference_features"} & set(params))
            if supplied:
                raise TypeError(f"{supplied[0]!r} is drawn from each dataset's reference source by the job "
                                "(datasets.<name>.references and the spec field 'references')")
            if kind == "methods":
                create_method(name, **params)  # checks the name and every parameter
            else:
                create_metric(name, **params)
        except (UnknownMethodError, UnknownMetricError) as err:
            raise reader.fail(where, str(err)) from None
        except (TypeError, ValueError) as err:
            raise reader.fail(where, str(err)) from None
        out[str(name)] = params
    return out


def _references(reader: _Reader, raw: Any) -> ReferenceSpec:
    if isinstance(raw, int) and not isinstance(raw, bool):
        raw = {"pool": raw}
    body = reader.mapping(raw, "references", {"pool", "held_out"})
    sizes = {}
    for key in ("pool", "held_out"):
        value = body.get(key, "auto")
        sizes[key] = value if value == "auto" else reader.integer(value, f"references.{key}", 1)
    return ReferenceSpec(**sizes)


def _resources(reader: _Reader, raw: Any) -> ResourceSpec:
    body = reader.mapping(raw, "resources", set(ResourceSpec.__dataclass_fields__))
    defaults = ResourceSpec()
    concurrent = body.get("concurrent_cells", defaults.concurrent_cells)
    return ResourceSpec(
        reader.integer(body.get("actors_per_cell", defaults.actors_per_cell), "resources.actors_per_cell", 1),
        reader.number(body.get("gpus_per_actor", defaults.gpus_per_actor), "resources.gpus_per_actor", auto=True),
        reader.number(body.get("cpus_per_actor", defaults.cpus_per_actor), "resources.cpus_per_actor", auto=True),
        concurrent if concurrent == "auto" else reader.integer(concurrent, "resources.concurrent_cells", 1),
        reader.integer(body.get("retries", defaults.retries), "resources.retries", 0),
        float(
            reader.number(
                body.get("no_progress_timeout_s", defaults.no_progress_timeout_s),
                "resources.no_progress_timeout_s",
                1.0,
            )
        ),
    )


def parse_spec(data: Any, source: str = "<spec>", paths: Mapping[str, str] | None = None) -> GridSpec:
    """Validate spec ``data`` (the parsed YAML); ``paths`` override the spec's ``paths`` entries."""
    reader = _Reader(source)
    data = reader.mapping(data, "", _TOP)
    for required in ("datasets", "architectures", "methods", "metrics"):
        if required not in data:
            raise reader.fail("", f"missing field {required!r}")
    spec_paths = {str(k): str(v) for k, v in reader.mapping(data.get("paths"), "paths").items()}
    spec_paths.update(paths or {})
    name = reader.string(data.get("name", Path(source).stem), "name")
    methods = _parameters(reader, data["methods"], "methods")
    metrics = _parameters(reader, data["metrics"], "metrics")
    references = _references(reader, data.get("references"))
    return GridSpec(
        name=_name(reader, name, "name"),
        datasets=_datasets(reader, data["datasets"]),
        architectures=_architectures(reader, data["architectures"]),
        methods=methods,
        metrics=metrics,
        samples=reader.integer(data.get("samples"), "samples", 1, optional=True),
        references=references,
        batch_size=reader.integer(data.get("batch_size", 8), "batch_size", 1),
        seed=reader.integer(data.get("seed", 0), "seed", 0),
        output=reader.string(data.get("output", "runs/{name}"), "output"),
        description=str(data.get("description", "")),
        paths=spec_paths,
        resources=_resources(reader, data.get("resources")),
        source=source,
    )


def preset_names() -> list[str]:
    """The presets that ship with the package."""
    return sorted(p.name[:-5] for p in resources.files("jobs.presets").iterdir() if p.name.endswith(".yaml"))


def apply_overrides(data: Any, overrides: Mapping[str, Any], source: str) -> Any:
    """Set dotted keys (``samples``, ``methods.opticam.iterations``, ``resources.retries``) in raw spec data."""
    for dotted, value in overrides.items():
        keys = dotted.split(".")
        node = data
        for depth, key in enumerate(keys):
            if not isinstance(node, dict):
                raise SpecError(f"{source}: --set {dotted}: {'.'.join(keys[:depth]) or 'the spec'} is not a mapping")
            if depth == len(keys) - 1:
                node[key] = value
            else:
                if node.get(key) is None:
                    node[key] = {}
                node = node[key]
    return data


def load_spec(
    name_or_path: str | os.PathLike, paths: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> GridSpec:
    """A preset by name (``demo``, ``fine_grained_40`` …) or a YAML file, validated.

    ``overrides`` (dotted key → value) change the spec before validation, e.g. ``{"samples": 50}``.
    """
    text_name = os.fspath(name_or_path)
    if text_name in preset_names():
        source = f"preset {text_name}"
        text = resources.files("jobs.presets").joinpath(f"{text_name}.yaml").read_text()
    else:
        path = Path(text_name)
        if not path.is_file():
            raise SpecError(
                f"no grid spec file {text_name!r} and no preset of that name; presets: {', '.join(preset_names())}"
            )
        source, text = path.name, path.read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML: {err}") from None
    data = apply_overrides(copy.deepcopy(data), overrides or {}, source)
    return parse_spec(data, source, paths)
