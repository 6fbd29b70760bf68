"""The Ray job: stream every cell's manifest shards through an actor pool and write the results.

Per cell (dataset × architecture), first, when a method or metric draws reference images::

    ray.data.read_parquet(reference shard files, filter = the cell's reference images)
      .map_batches(ReferenceFeaturizer, the same actor resources)       # h(x') once per cell
      → the driver stores them (run directory, Parquet float32 (R, K)), prints and records the
        diagnostics of every M̂ fitted on them (M, K, R, rank, κ) in run.json

then::

    ray.data.read_parquet(pending shard files, filter = the cell's images)
      .repartition(target_num_rows_per_block = batch size)       # small files are read as one unit
      .map_batches(CellEvaluator, compute=ActorPoolStrategy(size=actors_per_cell),
                   num_gpus=1 when the cluster has GPUs, batch_size=B)
      → the driver's ShardAssembler writes each complete (cell, shard) part atomically

Cells run concurrently (``resources.concurrent_cells``, by default one per GPU) so a large grid
keeps every GPU busy. A rerun with the same spec and output resumes: finished cells (success
marker) and shards (both parts present) are skipped, a half-done shard is redone. A cell whose
pipeline fails (an actor's exception, a lost node) is rerun up to ``resources.retries`` times,
each rerun resuming from the shards already written; actors killed mid-run are restarted by Ray
and their tasks retried.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pyarrow as pa
import torch

from attribution.channel_scaling import Diagnostics
from jobs.assemble import ShardAssembler
from jobs.evaluate import CellEvaluator, ReferenceFeaturizer, check_reference_features, features_by_pool
from jobs.plan import IMAGE_COLUMNS, REFERENCE_COLUMNS, CellPlan, plan_cells, regime_warnings
from jobs.progress import CellProgress, GridProgress, format_duration
from jobs.spec import GridSpec
from storage.results import RunStore, run_record

__all__ = ["RunSummary", "GridFailedError", "run_grid", "start_ray", "Placement", "placement"]

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


class GridFailedError(RuntimeError):
    """Some cells did not finish; what was written stays, and a rerun resumes."""


@dataclass
class RunSummary:
    run: str
    location: str
    cells: dict[str, CellProgress]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # driver-side: planning, ray start, writing


@dataclass(frozen=True)
class Placement:
    """Resources of each actor and how many cells run at once."""

    actors_per_cell: int
    gpus_per_actor: float
    cpus_per_actor: float
    concurrent_cells: int
    torch_threads: int

    def actor_resources(self) -> dict[str, float]:
        """``map_batches`` resources: GPU actors ask for GPUs only (Ray Data calls CPUs + GPUs experimental)."""
        return {"num_gpus": self.gpus_per_actor} if self.gpus_per_actor else {"num_cpus": self.cpus_per_actor}


def placement(spec: GridSpec, cluster: dict[str, float]) -> Placement:
    """Resolve the spec's ``auto`` resources against the cluster's (``ray.cluster_resources()``).

    With GPUs: one GPU per actor, as many cells at once as the GPUs allow. Without:
    a fractional CPU per actor (a whole CPU each can starve Ray Data's read tasks on a 2-core
    machine), one cell at a time, and torch threads spread over the node's cores.
    """
    res = spec.resources
    gpus = cluster.get("GPU", 0.0)
    gpus_per_actor = (1.0 if gpus >= 1 else 0.0) if res.gpus_per_actor == "auto" else float(res.gpus_per_actor)
    if gpus_per_actor > gpus:
        raise ValueError(f"resources.gpus_per_actor = {gpus_per_actor} but the cluster has {gpus:g} GPUs")
    if res.concurrent_cells != "auto":
        concurrent = int(res.concurrent_cells)
    elif gpus_per_actor > 0:
        concurrent = max(1, int(gpus // (gpus_per_actor * res.actors_per_cell)))
    else:
        concurrent = 1
    if res.cpus_per_actor != "auto":
        cpus_per_actor = float(res.cpus_per_actor)
    else:
        cpus_per_actor = 0.0 if gpus_per_actor > 0 else 0.5
    actors = max(1, concurrent * res.actors_per_cell)
    threads = max(1, (os.cpu_count() or 1) // actors) if gpus_per_actor == 0 else 1
    return Placement(res.actors_per_cell, gpus_per_actor, cpus_per_actor, concurrent, threads)


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once for a ``host:port`` nobody listens on (Ray itself retries the GCS for minutes)."""
    match = re.fullmatch(r"([\w.-]+):(\d+)", address)
    if match is None:  # "auto", "ray://…", "http://…": left to Ray
        return
    try:
        socket.create_connection((match.group(1), int(match.group(2))), timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"no Ray cluster at {address}: {err}") from err


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join a running cluster (``address``, or ``RAY_ADDRESS`` as set inside ``ray job submit``), or start
    Ray embedded in this process with ``num_cpus`` logical CPUs.

    Embedded Ray's workers get this package's folder on ``PYTHONPATH`` (they do not see the driver's
    ``sys.path``); on a cluster the package is installed (``cluster.yaml``) or shipped with
    ``ray job submit --working-dir``, whose runtime environment is left as the job set it. Token
    authentication, on by default for clusters that Ray 2.60 starts, needs the cluster's token here
    (``RAY_AUTH_TOKEN`` or ``~/.ray/auth_token``).
    """
    import ray

    if ray.is_initialized():
        return
    target = address or os.environ.get("RAY_ADDRESS")
    if target:
        _check_reachable(target)
        try:
            ray.init(address=address, logging_level=logging.WARNING)
        except (ConnectionError, RuntimeError, ray.exceptions.AuthenticationError) as err:
            raise ConnectionError(
                f"cannot join the Ray cluster at {target}: {err}. If the cluster uses token authentication "
                "(Ray's default), set RAY_AUTH_TOKEN to its token (`ray get-auth-token` on the head node)"
            ) from err
        return
    python_path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(
        num_cpus=num_cpus,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
        include_dashboard=False,
        logging_level=logging.WARNING,
    )


def _configure_data(spec: GridSpec) -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = spec.resources.no_progress_timeout_s
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_operator_progress_bars = False
    context.issue_detectors_config.detectors = []  # per-operator memory hints every 30 s: not for this console
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # an INFO line per finished dataset


def _mapped(files: list[str], columns: list[str], wanted: list[str], batch_size: int, callable_class: type,
            plan: CellPlan, place: Placement):
    """``read_parquet(files) → select → filter(image_id ∈ wanted) → map_batches(callable_class)`` on the cell's actors."""
    import ray.data
    from ray.data import ActorPoolStrategy
    from ray.data.expressions import col

    from storage.files import resolve

    filesystem, _ = resolve(files[0])
    read = (
        ray.data.read_parquet([resolve(f)[1] for f in files], filesystem=filesystem)
        .select_columns(columns)  # pushed down into the read
        .filter(expr=col("image_id").is_in(wanted))
    )
    return read.repartition(target_num_rows_per_block=batch_size).map_batches(
        callable_class,
        fn_constructor_kwargs={"plan": plan.for_actors(), "torch_threads": place.torch_threads},
        batch_size=batch_size,
        batch_format="pyarrow",
        zero_copy_batch=True,
        compute=ActorPoolStrategy(size=place.actors_per_cell),
        **place.actor_resources(),
    )


def _cell_dataset(plan: CellPlan, shards: list[int], place: Placement, evaluator: type[CellEvaluator]):
    wanted = sorted(i for s in shards for i in plan.images[s])
    return _mapped([plan.files[s] for s in shards], IMAGE_COLUMNS, wanted, plan.batch_size, evaluator, plan, place)


REFERENCE_BATCH = 32


def _reference_stage(
    store: RunStore, plan: CellPlan, place: Placement, featurizer: type[ReferenceFeaturizer], progress: GridProgress
) -> dict[str, Diagnostics]:
    """Compute and store the cell's reference features unless the run already holds them; return the
    diagnostics of every method's ``M̂`` on them (method name → :class:`Diagnostics`)."""
    references = plan.references
    if references is None:
        return {}
    where = f"cell {plan.name}"
    stored = store.reference_features(plan.dataset, plan.architecture)
    if stored is not None:
        try:
            check_reference_features(stored, references, where)
        except ValueError as err:
            if store.done_shards(plan.dataset, plan.architecture):  # results fitted on the stored draw exist
                raise ValueError(f"{err}, and {store.location} already holds results fitted on them; "
                                 "give another --out (the reference manifest changed since the run began)") from err
            stored = None  # a draw nothing was fitted on yet (or a damaged file): recompute
    if stored is None:
        stored = _compute_reference_features(plan, place, featurizer, progress)
        check_reference_features(stored, references, where)
        store.write_reference_features(plan.dataset, plan.architecture, stored)
    return _diagnostics(plan, features_by_pool(stored))


def _compute_reference_features(
    plan: CellPlan, place: Placement, featurizer: type[ReferenceFeaturizer], progress: GridProgress
) -> pa.Table:
    """``h(x')`` of the cell's reference images on its actors: ``image_id``, ``pool``, ``features``."""
    references = plan.references
    total, done, started = len(references.ids), 0, time.perf_counter()
    progress.echo(f"[{plan.name}] reference features: {total} images from {references.manifest}")
    batch_size = max(1, min(REFERENCE_BATCH, -(-total // place.actors_per_cell)))  # every actor gets work
    batches = _mapped(list(references.files.values()), REFERENCE_COLUMNS, list(references.ids), batch_size,
                      featurizer, plan, place).iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0)
    step = max(batch_size, total // 10)  # about ten progress lines
    parts = []
    for batch in batches:
        parts.append(batch)
        if (done + batch.num_rows) // step > done // step:
            rate = (done + batch.num_rows) / (time.perf_counter() - started)
            progress.echo(f"[{plan.name}] reference features: {done + batch.num_rows}/{total} images  {rate:.1f} img/s"
                          f"  ETA {format_duration((total - done - batch.num_rows) / rate)}")
        done += batch.num_rows
    table = pa.concat_tables(parts)
    one_per_image = {image_id: row for row, image_id in enumerate(table.column("image_id").to_pylist())}
    table = table.take(sorted(one_per_image.values()))  # a retried batch delivers its rows twice
    pool_of = {i: pool for pool, ids in references.pools.items() for i in ids}
    table = table.append_column("pool", pa.array([pool_of[i] for i in table.column("image_id").to_pylist()]))
    progress.echo(f"[{plan.name}] reference features: {table.num_rows} images in "
                  f"{time.perf_counter() - started:.1f} s (stored with the run)")
    return table.sort_by([("pool", "ascending"), ("image_id", "ascending")])


def _diagnostics(plan: CellPlan, features: dict[str, torch.Tensor]) -> dict[str, Diagnostics]:
    """Per method fitted on the ``fit`` pool: the diagnostics of its ``M̂`` (the actors build the same one)."""
    from attribution.methods import create_method

    out = {}
    for name, params in plan.methods.items():
        method = create_method(name, **params)
        if method.reference_pool is None:
            continue
        pool = features[method.reference_pool]
        fitted = create_method(name, **params, reference_features=pool)
        out[name] = fitted.second_moment(pool.shape[1], warn=False).diagnostics
    return out


def _root_cause(err: BaseException) -> str:
    """The user's exception behind a failed pipeline, as ``Type: message``.

    Ray Data re-raises a task's exception as ``RayTaskError(UserCodeException)`` whose text holds the
    worker's traceback; the original exception is its first section's last ``Type: message`` line.
    """
    text = str(err).split("The above exception was the direct cause")[0]
    found = re.findall(r"^([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)[\w.]*: .*)$", text, flags=re.M)
    if found:
        kind, _, message = found[-1].partition(": ")
        return f"{kind.rsplit('.', 1)[-1]}: {message}"[:500]
    return f"{type(err).__name__}: {err}".splitlines()[0][:500]


_RECORD_LOCK = threading.Lock()


def _record_diagnostics(store: RunStore, plan: CellPlan, diagnostics: dict[str, Diagnostics],
                        progress: GridProgress) -> None:
    """Print each method's ``M̂`` diagnostics for the cell and keep them in ``run.json`` (cells run in threads)."""
    for name, diag in diagnostics.items():
        flag = "" if diag.full_rank else "  RANK-DEFICIENT: the weights are not the infidelity optimum (App. B.2)"
        progress.echo(f"[{plan.name}] {name}: {diag.describe()}{flag}")
    if not diagnostics:
        return
    with _RECORD_LOCK:
        record = store.read_record()
        for cell in record["cells"]:
            if (cell["dataset"], cell["architecture"]) == (plan.dataset, plan.architecture):
                cell["diagnostics"] = {name: diag.to_dict() for name, diag in diagnostics.items()}
        store.write_record(record)


def _run_cell(
    store: RunStore,
    plan: CellPlan,
    place: Placement,
    retries: int,
    progress: GridProgress,
    evaluator: type[CellEvaluator],
    featurizer: type[ReferenceFeaturizer] = ReferenceFeaturizer,
) -> CellProgress:
    cell = progress.cell(plan.name, plan.total)
    if store.cell_done(plan.dataset, plan.architecture) is not None:
        cell.skipped, cell.status = plan.total, "done (resumed)"
        progress.update(cell, force=True)
        return cell
    stats = {"bytes": 0, "write_seconds": 0.0}
    written: set[int] = set()
    diagnostics: dict[str, Diagnostics] | None = None
    for attempt in range(retries + 1):
        done = store.done_shards(plan.dataset, plan.architecture) & set(plan.images)
        pending = sorted(set(plan.images) - done)
        if attempt == 0:
            cell.skipped = sum(len(plan.images[s]) for s in done)
        if not pending:
            break
        cell.attempts, cell.status = attempt + 1, "running"
        progress.update(cell, force=True)
        assembler = ShardAssembler(store, plan, set(pending))
        written_before = sum(len(plan.images[s]) for s in written)
        try:
            if diagnostics is None:
                diagnostics = _reference_stage(store, plan, place, featurizer, progress)
                _record_diagnostics(store, plan, diagnostics, progress)
            # prefetch_batches=0: by default the iterator holds each batch back until the next one is
            # ready, so with minutes per batch the progress (and the shard writes) would lag a batch behind
            batches = _cell_dataset(plan, pending, place, evaluator).iter_batches(
                batch_size=None, batch_format="pyarrow", prefetch_batches=0
            )
            for batch in batches:
                wrote = assembler.add(batch)
                cell.done = written_before + assembler.images_done
                progress.update(cell, force=bool(wrote))
        except Exception as err:  # noqa: BLE001 - any pipeline failure: resume from the written shards
            cell.error = _root_cause(err)
            progress.echo(
                f"[{plan.name}] attempt {attempt + 1} failed: {cell.error}"
                + ("; resuming" if attempt < retries else "")
            )
        finally:
            written.update(assembler.written)
            cell.done = sum(len(plan.images[s]) for s in written)
            stats["bytes"] += assembler.bytes_written
            stats["write_seconds"] += assembler.write_seconds
    missing = sorted(set(plan.images) - store.done_shards(plan.dataset, plan.architecture))
    cell.finished = time.perf_counter()
    if missing:
        cell.status = f"failed ({len(missing)} shards missing)"
        progress.update(cell, force=True)
        return cell
    cell.status, cell.error = "done", None
    store.mark_cell_done(
        plan.dataset,
        plan.architecture,
        {
            "images": plan.total,
            "shards": sorted(plan.images),
            "seconds": cell.elapsed,
            "attempts": cell.attempts,
            "bytes_written": stats["bytes"],
            "write_seconds": stats["write_seconds"],
            "placement": place.__dict__,
            "diagnostics": {name: diag.to_dict() for name, diag in (diagnostics or {}).items()},
        },
    )
    progress.update(cell, force=True)
    return cell


def _record(spec: GridSpec, store: RunStore, run: str, plans: list[CellPlan]) -> None:
    """Write ``run.json``, or check that an existing one describes the same grid (a resume)."""
    from evaluation import metric_directions

    try:
        existing = store.read_record()
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if existing.get("fingerprint") != spec.fingerprint():
            raise ValueError(
                f"{store.location} holds run {existing.get('run')!r} of a different grid spec; "
                "give another --out (or the same spec to resume it)"
            )
        return
    directions = metric_directions()
    record = run_record(run, spec.to_dict(), spec.seed)
    record.update(
        fingerprint=spec.fingerprint(),
        metric_directions={m: directions[m] for m in spec.metrics},
        cells=[
            {
                "dataset": p.dataset,
                "architecture": p.architecture,
                "images": p.total,
                "shards": sorted(p.images),
                "references": None if p.references is None else {  # the ids: references/…/features.parquet
                    "manifest": p.references.manifest, **{pool: len(ids) for pool, ids in p.references.pools.items()}
                },
                "manifest": p.manifest,
                "model": p.model,
                "layer": p.layer,
                "input_size": p.input_size,
                "weights": p.weights,
            }
            for p in plans
        ],
    )
    store.write_record(record)


def run_grid(
    spec: GridSpec,
    out: str | os.PathLike,
    *,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    num_cpus: int | None = None,
    evaluator: type[CellEvaluator] = CellEvaluator,
    featurizer: type[ReferenceFeaturizer] = ReferenceFeaturizer,
) -> RunSummary:
    """Run (or resume) every cell of ``spec`` into the run directory ``out``.

    ``address``: a running Ray cluster (default: Ray embedded here, with ``num_cpus`` logical CPUs).
    ``evaluator``: the callable class the actors run per batch (a subclass of :class:`CellEvaluator`
    to customise or instrument it; it must be importable by the workers); ``featurizer`` likewise
    for the reference-feature stage.

    Raises :class:`GridFailedError` naming the cells that did not finish after their retries;
    everything written stays in ``out`` and a rerun resumes it.
    """
    import ray

    started = time.perf_counter()
    store = RunStore(os.fspath(out))
    run = f"{spec.name}-{spec.fingerprint()}"
    plans = plan_cells(spec, run, store.location)
    for line in regime_warnings(plans):
        echo(f"warning: {line}")
    _record(spec, store, run, plans)
    timings = {"plan": time.perf_counter() - started}
    start_ray(address, num_cpus)
    timings["ray_start"] = time.perf_counter() - started - timings["plan"]
    _configure_data(spec)
    place = placement(spec, ray.cluster_resources())
    echo(
        f"run {run}: {len(plans)} cells, {sum(p.total for p in plans)} images, {len(spec.methods)} methods, "
        f"{len(spec.metrics)} metrics → {store.location}"
    )
    per_actor = f"{place.gpus_per_actor:g} GPU" if place.gpus_per_actor else f"{place.cpus_per_actor:g} CPU"
    echo(
        f"placement: {place.concurrent_cells} cell(s) at once, {place.actors_per_cell} actor(s) per cell, "
        f"{per_actor} per actor"
    )
    progress = GridProgress(echo)
    with ThreadPoolExecutor(max_workers=place.concurrent_cells, thread_name_prefix="camgrid-cell") as pool:
        cells = list(pool.map(
            lambda p: _run_cell(store, p, place, spec.resources.retries, progress, evaluator, featurizer), plans
        ))
    summary = RunSummary(run, store.location, {c.name: c for c in cells}, time.perf_counter() - started, timings)
    echo(progress.summary())
    failed = [c for c in cells if not c.status.startswith("done")]
    if failed:
        raise GridFailedError(
            f"{len(failed)} of {len(cells)} cells did not finish: "
            + "; ".join(f"{c.name}: {c.error}" for c in failed)
            + f". Results so far are in {store.location}; rerun the same command to resume."
        )
    return summary
