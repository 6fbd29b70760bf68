"""Grid specs: the YAML that names a run's datasets, architectures, methods, metrics and resources.

A spec is validated as a whole before anything runs; every error names the file and the field
(``demo.yaml: methods.scorecam: method 'scorecam' has no parameter 'batchsize' …``). Presets that
reproduce the paper ship inside the package (``jobs/presets/*.yaml``) and are loaded by name; the
JSON Schema of the YAML ships beside them (``jobs/spec.schema.json``, ``camgrid spec-schema``).

Strings in ``datasets.*.manifest`` and ``architectures.*.weights`` may use ``{data}`` and
``{checkpoints}`` (the spec's ``paths``, overridable from the command line) and, for weights,
``{dataset}`` and ``{architecture}`` (a fine-tuned checkpoint per cell).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
    model_validator,
)
from pydantic.json_schema import SkipJsonSchema
from pydantic_core import ErrorDetails, PydanticCustomError

from storage.results import NAME

__all__ = [
    "ArchitectureSpec",
    "ComponentSpec",
    "DatasetSpec",
    "GridSpec",
    "ReferenceSpec",
    "ResourceSpec",
    "SpecError",
    "apply_overrides",
    "load_spec",
    "parse_components",
    "parse_spec",
    "preset_names",
    "spec_json_schema",
]



class SpecError(ValueError):
    """A grid spec that cannot run; the message names the file and the field."""


# -- value types: each says in one line what it expects -------------------------------------------------


def _invalid(loc: tuple[str | int, ...], value: Any, message: str | None = None) -> ValidationError:
    """An error at ``loc`` below the value being validated: ``message``, or an unknown field without one."""
    kind = "extra_forbidden" if message is None else PydanticCustomError("spec", "{message}", {"message": message})
    return ValidationError.from_exception_data("spec", [{"type": kind, "loc": loc, "input": value}])


def _expecting(expected: str, auto: bool = False) -> WrapValidator:
    """Replace pydantic's errors for a value by ``expected, got <value>``.

    With ``auto`` (the field also takes the string ``auto``) a number is told only the range it missed.
    """

    def check(value: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            also = " or auto" if auto and not isinstance(value, (int, float)) else ""
            raise PydanticCustomError("spec", "{expected}, got {value}", {"expected": expected + also,
                                                                           "value": repr(value)}) from None

    return WrapValidator(check)


def _integer(minimum: int, auto: bool = False) -> Any:
    """An ``int`` (never a bool) ≥ ``minimum``, or with ``auto`` also the string ``auto``."""
    kind = Annotated[int, Field(strict=True, ge=minimum)]
    return Annotated[kind | Literal["auto"] if auto else kind, _expecting(f"expected an integer ≥ {minimum}", auto)]


def _number(minimum: float, auto: bool = False) -> Any:
    """A number (never a bool) ≥ ``minimum``, as a ``float``; with ``auto`` also the string ``auto``."""
    kind = Annotated[float, Field(strict=True, ge=minimum)]
    return Annotated[kind | Literal["auto"] if auto else kind, _expecting(f"expected a number ≥ {minimum}", auto)]


def _directory_name(name: str) -> str:
    if NAME.fullmatch(name) is None:
        raise PydanticCustomError("spec", "name {name} cannot be a result directory (letters, digits and _ . + - "
                                  "only, not first)", {"name": repr(name)})
    return name


_String = Annotated[str, Field(strict=True), _expecting("expected a string")]
_Text = Annotated[str, Field(strict=True, min_length=1), _expecting("expected a non-empty string")]
_Name = Annotated[_Text, AfterValidator(_directory_name)]  # a result directory: run, dataset, architecture


def _empty_if_null(value: Any) -> Any:
    return {} if value is None else value  # `key:` with nothing after it in YAML


def _mapping(kind: Any) -> Any:
    """``kind`` (a mapping type), written in YAML as a mapping or as nothing at all (empty)."""
    return Annotated[kind, BeforeValidator(_empty_if_null, json_schema_input_type=kind | None)]


_Params = _mapping(dict[_Text, Any])


def _named(key: Any, fields: Any) -> Any:
    """An entry's fields and its name, which is its key in the YAML, not one of its fields."""
    fields = _empty_if_null(fields)
    if not isinstance(fields, Mapping):
        return fields  # the model names what it expected
    if "name" in fields:
        raise _invalid((key, "name"), fields["name"])
    return {**fields, "name": key}


def _entries(model: type[BaseModel]) -> Any:
    """A tuple of ``model``, written ``{name: fields}`` in YAML: the entries in that order, each named by its key."""
    written = Annotated[dict[_Name, model | None], Field(min_length=1)]  # None: `name:` alone, every default
    adapter = TypeAdapter(written)

    def to_tuple(entries: Any) -> Any:
        if not isinstance(entries, Mapping):
            return entries  # a tuple of models (strict: a list is no mapping of entries)
        return tuple(adapter.validate_python({key: _named(key, fields) for key, fields in entries.items()}).values())

    return Annotated[tuple[model, ...], Field(strict=True), BeforeValidator(to_tuple, json_schema_input_type=written)]


Target = Literal["label", "predicted"]
Explain = Literal["all", "correct"]  # which drawn images a cell explains
_SELECTORS = {"method": ("method",), "metric": ("metric", "target")}  # entry keys that are not parameters


class ComponentSpec(BaseModel):
    """One method or metric of a run, written ``name: {parameters}`` in YAML.

    ``name`` is what its results are stored under; ``registered`` the registry entry it configures:
    the name itself (canonicalised, ``Grad-CAM`` → ``gradcam``), or the entry's ``method:`` /
    ``metric:``, so that one method or metric runs in several configurations of one spec
    (``opticam_diff: {method: opticam, objective: diff}``). A metric's ``target`` scores maps that
    explain that class (``label``: the ground truth, ``predicted``: the model's top-1) whatever the
    dataset's ``target``: the Opti-CAM protocol scores Average Drop on the ground truth and
    insertion/deletion on the prediction.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: Literal["method", "metric"]
    name: str
    registered: str
    params: dict[str, Any] = Field(default_factory=dict)
    target: Target | None = None

    def create(self, **inputs: Any) -> Any:
        """The configured instance (a ``CAMMethod`` or ``Metric``); ``inputs`` are what the job supplies."""
        from attribution.methods import create_method
        from evaluation import create_metric

        factory = create_method if self.kind == "method" else create_metric
        return factory(self.registered, **self.params, **inputs)

    def written(self) -> dict[str, Any]:
        """The entry as a spec's author writes it (what ``parse_spec`` reads back to this)."""
        selector = {self.kind: self.registered} if self.name != self.registered else {}
        target = {"target": self.target} if self.target is not None else {}
        return {**selector, **target, **self.params}


def _components(kind: Literal["method", "metric"]) -> BeforeValidator:
    """``name → parameters`` entries as :class:`ComponentSpec`, each instantiated through the registry of
    ``kind``: its name, its ``method:``/``metric:``, its ``target`` and every parameter are checked."""

    def check(entries: Any) -> Any:
        from attribution.methods import UnknownMethodError
        from attribution.needs import REFERENCE_PARAMETERS
        from evaluation.registry import UnknownMetricError

        if not isinstance(entries, Mapping) or not all(isinstance(v, (Mapping, type(None))) for v in entries.values()):
            return entries  # pydantic names what it expected
        out: dict[str, ComponentSpec] = {}
        spelt: dict[str, str] = {}
        for key, given in entries.items():
            if not isinstance(key, str) or not key:
                raise _invalid((str(key),), given, "expected a non-empty name")
            fields = dict(given or {})
            chosen = {k: fields.pop(k) for k in _SELECTORS[kind] if k in fields}
            supplied = [p for p in REFERENCE_PARAMETERS if p in fields]
            if supplied:
                raise _invalid((key,), given, f"{supplied[0]!r} is drawn from each dataset's reference source by "
                               "the job (datasets.<name>.references and the spec field 'references')")
            target = chosen.get("target")
            if target is not None and target not in ("label", "predicted"):
                raise _invalid((key, "target"), target, f"{target!r} is not one of 'label', 'predicted'")
            registry_name = chosen.get(kind, key)
            if not isinstance(registry_name, str):
                raise _invalid((key, kind), registry_name, f"expected a {kind} name, got {registry_name!r}")
            try:
                instance = ComponentSpec(kind=kind, name=key, registered=registry_name, params=fields).create()
            except (UnknownMethodError, UnknownMetricError, TypeError, ValueError) as err:
                raise _invalid((key,), given, str(err)) from None
            name = key if kind in chosen else instance.name
            if kind in chosen and name != instance.name and _is_registered(kind, name):
                raise _invalid((key,), given, f"{name!r} is the name of another {kind}; name this configuration "
                               f"otherwise, e.g. {instance.name}_{name}")
            if kind in chosen and NAME.fullmatch(name) is None:
                raise _invalid((key,), given, f"name {name!r} cannot be a result name (letters, digits and _ . + - "
                               "only, not first)")
            if name in out:
                raise _invalid((key,), given, f"the {kind} {name!r} is given twice (as {spelt[name]!r} and {key!r}); "
                               f"name a second configuration, e.g. {name}_2: {{{kind}: {name}, …}}")
            out[name] = ComponentSpec(kind=kind, name=name, registered=instance.name, params=fields, target=target)
            spelt[name] = key
        return out

    return BeforeValidator(check, json_schema_input_type=Annotated[dict[_Text, _Params], Field(min_length=1)])


def parse_components(kind: Literal["method", "metric"], entries: Mapping[str, Any]) -> dict[str, ComponentSpec]:
    """A spec's ``methods`` or ``metrics`` as written (e.g. a run record's config) → their :class:`ComponentSpec` entries."""
    try:
        return _components(kind).func(entries)
    except ValidationError as err:
        raise SpecError(f"{kind}s.{_explain(err.errors(include_url=False)[0])}") from None


def _is_registered(kind: Literal["method", "metric"], name: str) -> bool:
    from attribution.methods import UnknownMethodError, create_method
    from evaluation import create_metric
    from evaluation.registry import UnknownMetricError

    try:
        (create_method if kind == "method" else create_metric)(name)
    except (UnknownMethodError, UnknownMetricError):
        return False
    except (TypeError, ValueError):
        return True
    return True


def _written(entries: Mapping[str, ComponentSpec]) -> dict[str, dict[str, Any]]:
    return {name: entry.written() for name, entry in entries.items()}


def _component_entries(kind: Literal["method", "metric"]) -> Any:
    return Annotated[dict[str, ComponentSpec], Field(min_length=1), _components(kind), PlainSerializer(_written)]


# -- the spec --------------------------------------------------------------------------------------------


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DatasetSpec(_Part):
    """One dataset: its manifest, its reference source and how targets are chosen.

    ``references``: the manifest that Expected Grad-CAM's data-aware perturbations (and
    ``cam_infidelity``'s held-out ones) draw reference images from, normally the dataset's train
    split (``camgrid manifest build <dataset> <root> --split train``). Without it, the reference
    images are held out of ``manifest`` itself (for small data) and never explained.

    ``target``: ``label`` explains the ground-truth class (mapped through ``classes`` when the
    manifest's label space is not the model's), ``predicted`` the model's top-1 class.

    ``explain``: ``all`` drawn images, or only the ``correct`` ones, which the model classifies correctly (its
    top-1 class is the label's, as IDGI's evaluation, seed 004 §4.1); each other one is stored as excluded
    (:data:`storage.results.MISCLASSIFIED`) with its shard.
    """

    name: SkipJsonSchema[str]  # the entry's key in `datasets`
    manifest: _Text = Field(description="the images to explain: a manifest folder or URI (may use {data}), or "
                                        "bundled:demo")
    target: Literal["label", "predicted"] = Field("label", description="the class each map explains")
    explain: Explain = Field("all", description="all drawn images, or only those the model classifies correctly "
                                                "(correct: its top-1 class is the label's)")
    classes: _mapping(dict[_Text, _integer(0)]) | None = Field(
        None, description="label name → model class index, when the manifest's labels are not the model's classes")
    references: _Text | None = Field(
        None, description="the reference manifest, normally the dataset's train split (may use {data}); "
                          "default: reference images held out of the manifest")


class ArchitectureSpec(_Part):
    """One architecture: a registry name (or ``torchvision:``/``timm:``), weights, target layer, input size."""

    name: SkipJsonSchema[str]  # the entry's key in `architectures`
    model: _Text = Field(default_factory=lambda fields: fields.get("name"),
                         description="a registry name, torchvision:<name> or timm:<name>; default: the entry's name")
    weights: _Text = Field("pretrained", description="pretrained | none | package | timm | torchvision:<ENUM> | "
                                                     "file:<checkpoint> (may use {checkpoints}, {dataset}, "
                                                     "{architecture})")
    layer: _Text | None = Field(None, description="the target layer; default: the registry's")
    input_size: _integer(8) | None = Field(
        None, description="resize and crop to this side instead of the registry's preprocessing")
    num_classes: _integer(1) | None = Field(
        None, description="the classifier's outputs; default: 1000 for packaged or hub weights, the manifest's "
                          "classes otherwise")

    @model_validator(mode="after")
    def _known(self) -> ArchitectureSpec:
        from attribution.models import architecture

        try:
            architecture(self.model, self.layer)
        except ValueError as err:
            raise _invalid(("model",), self.model, str(err)) from None
        return self


class ReferenceSpec(_Part):
    """How many reference images each dataset's reference source gives (a seeded, disjoint split).

    ``pool``: the images Expected Grad-CAM's ``M`` perturbations draw from, one per perturbation;
    ``auto`` is ``2·K`` for the grid's largest ``K``, what ``M = 2K`` needs without repeating an image
    (App. B.1–B.2: ``rank(M̂) = K`` needs at least ``K − 1`` distinct references).
    ``held_out``: disjoint images ``cam_infidelity`` draws its perturbations from; ``auto`` is ``K``.
    """

    pool: _integer(1, auto=True) = Field("auto", description="reference images methods fit on; auto: 2·K")
    held_out: _integer(1, auto=True) = Field("auto", description="disjoint images metrics score on; auto: K")


def _pool_size(value: Any) -> Any:
    return {"pool": value} if isinstance(value, int) and not isinstance(value, bool) else _empty_if_null(value)


_References = Annotated[ReferenceSpec, BeforeValidator(_pool_size,
                                                       json_schema_input_type=ReferenceSpec | _integer(1) | None)]


class ResourceSpec(_Part):
    """How the cells are placed: actors per cell, their CPUs/GPUs, cells at once, failure handling."""

    actors_per_cell: _integer(1) = Field(1, description="actors that explain and score one cell's images")
    gpus_per_actor: _number(0.0, auto=True) = Field("auto", description="auto: 1 when the cluster has GPUs, else 0")
    cpus_per_actor: _number(0.0, auto=True) = Field(
        "auto", description="auto: 1 with a GPU, else a share of the node's CPUs")
    concurrent_cells: _integer(1, auto=True) = Field(
        "auto", description="cells run at once; auto: the cluster's GPUs / (actors × GPUs), else 1")
    retries: _integer(0) = Field(2, description="reruns of a failed cell (each resumes from its written shards)")
    no_progress_timeout_s: _number(1.0) = Field(
        1800.0, description="a pipeline that makes no progress this long (seconds) fails")


def _name_optional(schema: dict[str, Any]) -> None:
    schema["required"].remove("name")  # a file's data without one takes the file's name (parse_spec)


class GridSpec(_Part):
    """A grid of (dataset, architecture) cells, each explained by every method and scored by every metric."""

    model_config = ConfigDict(json_schema_extra=_name_optional)

    name: _Name = Field(description="the run's name (a result directory); default: the spec file's name")
    datasets: _entries(DatasetSpec) = Field(description="dataset name → its manifest, references and targets")
    architectures: _entries(ArchitectureSpec) = Field(
        description="architecture name → its model, weights and target layer")
    methods: _component_entries("method") = Field(
        description="method name → its parameters (and method: <registry name> for a named configuration)")
    metrics: _component_entries("metric") = Field(
        description="metric name → its parameters (metric: <registry name> for a named configuration; "
                    "target: label | predicted for the class its maps explain)")
    samples: _integer(1) | None = Field(
        None, description="images per cell; default: every image of the manifest (after references)")
    references: _References = Field(
        default_factory=ReferenceSpec, description="reference images per dataset; a number: the pool's size")
    batch_size: _integer(1) = Field(8, description="images per batch")
    seed: _integer(0) = Field(0, description="the run's seed: of the image and reference draws, each image's too")
    output: _Text = Field("runs/{name}", description="the run directory, local or s3:// / gs://")
    description: _String = Field("", description="what the grid is for, in a line")
    paths: _mapping(dict[_Text, _Text]) = Field(
        default_factory=dict, description="values of {placeholders}, e.g. data, checkpoints")
    resources: _mapping(ResourceSpec) = Field(default_factory=ResourceSpec,
                                              description="how the cells are placed on the cluster")
    source: SkipJsonSchema[str] = Field("<spec>", exclude=True)  # the file or preset, named in errors

    @property
    def cells(self) -> list[tuple[DatasetSpec, ArchitectureSpec]]:
        """Every (dataset, architecture) combination, datasets outermost."""
        return [(d, a) for d in self.datasets for a in self.architectures]

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data (the run record's ``config``)."""
        return self.model_dump(mode="json")

    def fingerprint(self) -> str:
        """A hash of everything that changes results: not resources, output, description or batch size."""
        data = self.model_dump(mode="json", exclude={"resources", "output", "description", "batch_size"})
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


def spec_json_schema() -> dict[str, Any]:
    """The JSON Schema of the YAML a spec's author writes (``jobs/spec.schema.json``)."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **GridSpec.model_json_schema()}


# -- parsing ---------------------------------------------------------------------------------------------


def _properties(path: list[str]) -> dict[str, Any]:
    """The fields the JSON Schema allows in the mapping at ``path`` (an entry's key steps into its entries)."""
    schema = spec_json_schema()

    def resolved(node: dict[str, Any]) -> dict[str, Any]:  # its $ref followed, its first alternative but null
        while "$ref" in node or "anyOf" in node:
            node = (schema["$defs"][node["$ref"].rsplit("/", 1)[1]] if "$ref" in node
                    else next((n for n in node["anyOf"] if n.get("type") != "null"), {}))
        return node

    node = schema
    for part in path:
        node = resolved(node)
        inner = node.get("properties", {}).get(part, node.get("additionalProperties"))
        node = inner if isinstance(inner, dict) else {}
    return resolved(node).get("properties", {})


_MAPPING_ERRORS = {"dict_type", "model_type", "model_attributes_type", "tuple_type"}


def _explain(error: ErrorDetails) -> str:
    """pydantic's error as one line: the field the way the YAML names it, then what is wrong."""
    path = [str(part) for part in error["loc"] if part != "[key]"]
    kind, value = error["type"], error["input"]
    if kind in ("missing", "extra_forbidden"):
        *path, field = path
        allowed = _properties(path)
        if kind == "missing":
            described = allowed.get(field, {}).get("description")
            message = f"missing field {field!r}" + (f" ({described})" if described else "")
        else:
            message = f"unknown field {field!r}; allowed: {', '.join(sorted(allowed))}"
    elif kind == "too_short":
        message = "at least one entry is needed"
    elif kind == "literal_error":
        message = f"{value!r} is not one of {error['ctx']['expected']}"
    elif kind in _MAPPING_ERRORS:
        message = f"expected a mapping, got {type(value).__name__} {value!r}"
    else:
        message = error["msg"]
    return f"{'.'.join(path)}: {message}" if path else message


def parse_spec(data: Any, source: str = "<spec>", paths: Mapping[str, str] | None = None) -> GridSpec:
    """Validate spec ``data`` (the parsed YAML); ``paths`` override the spec's ``paths`` entries."""
    try:
        if isinstance(data, Mapping):
            if "source" in data:  # set from the file, never written
                raise _invalid(("source",), data["source"])
            data = {"name": Path(source).stem, **data, "source": source}
        spec = GridSpec.model_validate(data)
    except ValidationError as err:
        errors = err.errors(include_url=False)  # a misspelt field is also a missing one: name the misspelling
        first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
        raise SpecError(f"{source}: {_explain(first)}") from None
    return spec.model_copy(update={"paths": {**spec.paths, **paths}}) if paths else spec


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
        source = path.name
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as err:
            raise SpecError(f"{source}: not UTF-8 text (byte {err.start}): save the spec as UTF-8") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SpecError(f"{source}: not valid YAML: {err}") from None
    data = apply_overrides(copy.deepcopy(data), overrides or {}, source)
    return parse_spec(data, source, paths)
