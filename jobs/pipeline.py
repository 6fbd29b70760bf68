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

With ``executor="local"`` (:mod:`jobs.local`) both stages run the same callable classes in this process instead,
one cell after another, and write through the same assembler.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Callable

import polars as pl
import pyarrow as pa
import torch

from attribution.channel_scaling import Diagnostics
from jobs.assemble import ShardAssembler
from jobs.evaluate import CellEvaluator, ReferenceFeaturizer, check_reference_features, features_by_pool, supplied
from jobs.local import local_batches, local_placement
from jobs.plan import IMAGE_COLUMNS, REFERENCE_COLUMNS, CellPlan, plan_cells, regime_warnings
from jobs.progress import CellProgress, GridProgress, format_duration
from jobs.ray_setup import Executor, Placement, configure_data, mapped, placement, start_ray
from jobs.spec import GridSpec
from storage.record import CellMarker, CellRecord, ModelRecord, ReferenceRecord, RunRecord, run_record
from storage.results import MISCLASSIFIED, RunStore

__all__ = ["RunSummary", "GridFailedError", "run_grid"]

LOG = logging.getLogger("camgrid.job")


class GridFailedError(RuntimeError):
    """Some cells did not finish; what was written stays, and a rerun resumes."""


class GridInterruptedError(GridFailedError):
    """The run was interrupted (Ctrl-C); every shard written so far stays, and a rerun resumes."""


class _Stopped(Exception):
    """Raised in a cell's thread when the run is being interrupted."""


@dataclass
class RunSummary:
    run: str
    location: str
    cells: dict[str, CellProgress]
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)  # driver-side: planning, ray start, writing


def _batches(files: list[str], columns: list[str], wanted: list[str], batch_size: int, callable_class: type,
             plan: CellPlan, place: Placement) -> Iterator[pa.Table]:
    """The output batches of ``callable_class`` over the ``wanted`` rows of ``files``: from the cell's Ray actors,
    or from this process where the run executes locally."""
    if place.executor == "local":
        return local_batches(files, columns, wanted, batch_size, callable_class, plan, place)
    # prefetch_batches=0: by default the iterator holds each batch back until the next one is ready, so with
    # minutes per batch the progress (and the shard writes) would lag a batch behind
    return mapped(files, columns, wanted, batch_size, callable_class, plan, place).iter_batches(
        batch_size=None, batch_format="pyarrow", prefetch_batches=0)


def _cell_batches(plan: CellPlan, shards: list[int], place: Placement,
                  evaluator: type[CellEvaluator]) -> Iterator[pa.Table]:
    wanted = sorted(i for s in shards for i in plan.images[s])
    return _batches([plan.files[s] for s in shards], IMAGE_COLUMNS, wanted, plan.batch_size, evaluator, plan, place)


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
    batches = _batches(list(references.files.values()), REFERENCE_COLUMNS, list(references.ids), batch_size,
                       featurizer, plan, place)
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
    """Per method fitted on a reference pool: the diagnostics of its ``M̂`` (the actors build the same one)."""
    out = {}
    for name, entry in plan.methods.items():
        method = supplied(entry, features, plan.model.preprocessing.black)
        pool = method.reference_pool
        diagnostics = None if pool is None else method.fit_diagnostics(features[pool].shape[1])
        if diagnostics is not None:
            out[name] = diagnostics
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


def _stranded(store: RunStore, plan: CellPlan) -> str:
    """The images a crashed worker of the cell was on (its batch never returned), as a clause for the error."""
    batches = store.in_flight(plan.dataset, plan.architecture).values()
    stranded = sorted({i for batch in batches for i in batch.images})
    if not stranded:
        return ""
    listed = ", ".join(stranded[:8]) + (f", … ({len(stranded)} in all)" if len(stranded) > 8 else "")
    return f" (a worker stopped on images {listed})"


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
        values = {name: diag.to_dict() for name, diag in diagnostics.items()}
        store.write_record(store.read_record().with_diagnostics(plan.dataset, plan.architecture, values))


def _run_cell(
    store: RunStore,
    plan: CellPlan,
    place: Placement,
    retries: int,
    progress: GridProgress,
    evaluator: type[CellEvaluator],
    featurizer: type[ReferenceFeaturizer] = ReferenceFeaturizer,
    stop: threading.Event | None = None,
) -> CellProgress:
    stop = stop or threading.Event()
    cell = progress.cell(plan.name, plan.total, len(plan.methods))
    if store.cell_done(plan.dataset, plan.architecture) is not None:
        cell.skipped, cell.status = plan.total, "done (resumed)"
        progress.update(cell, force=True)
        return cell
    stats = {"bytes": 0, "write_seconds": 0.0}
    written: set[int] = set()
    diagnostics: dict[str, Diagnostics] | None = None
    for attempt in range(retries + 1):
        if stop.is_set():
            break
        done = store.done_shards(plan.dataset, plan.architecture) & set(plan.images)
        pending = sorted(set(plan.images) - done)
        if attempt == 0:
            cell.skipped = sum(len(plan.images[s]) for s in done)
        if not pending:
            break
        cell.attempts, cell.status = attempt + 1, "running"
        if diagnostics is not None or plan.references is None:
            progress.update(cell, force=True)
        assembler = ShardAssembler(store, plan, set(pending))
        written_before = sum(len(plan.images[s]) for s in written)
        store.clear_in_flight(plan.dataset, plan.architecture)
        try:
            if diagnostics is None:
                cell.status = "reference features"
                diagnostics = _reference_stage(store, plan, place, featurizer, progress)
                _record_diagnostics(store, plan, diagnostics, progress)
                cell.status = "running"
            for batch in _cell_batches(plan, pending, place, evaluator):
                if stop.is_set():
                    raise _Stopped
                wrote = assembler.add(batch)
                for image_id, reason in assembler.new_skips():
                    if reason != MISCLASSIFIED:  # excluded by the spec, counted when the cell is done
                        progress.echo(f"[{plan.name}] skipped image {image_id!r}: {reason}")
                cell.done = written_before + assembler.images_done
                cell.maps_delivered = written_before * cell.methods + assembler.maps_done
                cell.maps_done = max(cell.maps_done, cell.maps_delivered)
                progress.update(cell, force=bool(wrote))
        except _Stopped:
            cell.error = "interrupted"
        except Exception as err:  # noqa: BLE001 - any pipeline failure: resume from the written shards
            if stop.is_set():  # the pipeline was torn down under it
                cell.error = "interrupted"
                continue
            cell.error = _root_cause(err) + _stranded(store, plan)
            LOG.error("cell %s, attempt %d of %d failed", plan.name, attempt + 1, retries + 1, exc_info=err)
            progress.echo(
                f"[{plan.name}] attempt {attempt + 1} failed: {cell.error}"
                + ("; resuming" if attempt < retries else "")
            )
        finally:
            written.update(assembler.written)
            cell.done = sum(len(plan.images[s]) for s in written)
            cell.maps_done = cell.maps_delivered = cell.done * cell.methods
            cell.computing = ()
            stats["bytes"] += assembler.bytes_written
            stats["write_seconds"] += assembler.write_seconds
    missing = sorted(set(plan.images) - store.done_shards(plan.dataset, plan.architecture))
    cell.finished = time.perf_counter()
    if missing:
        cell.status = f"failed ({len(missing)} shards missing)"
        progress.update(cell, force=True)
        return cell
    reasons = store.skipped_images().filter((pl.col("dataset") == plan.dataset)
                                            & (pl.col("architecture") == plan.architecture))["reason"]
    skipped, excluded = int((reasons != MISCLASSIFIED).sum()), int((reasons == MISCLASSIFIED).sum())
    cell.status, cell.error = _done_status(skipped, excluded), None
    store.mark_cell_done(plan.dataset, plan.architecture, CellMarker(
        images=plan.total, shards=sorted(plan.images), skipped=skipped + excluded, seconds=cell.elapsed,
        attempts=cell.attempts,
        bytes_written=stats["bytes"], write_seconds=stats["write_seconds"], placement=asdict(place),
        diagnostics={name: diag.to_dict() for name, diag in (diagnostics or {}).items()}))
    progress.update(cell, force=True)
    return cell


def _done_status(skipped: int, excluded: int) -> str:
    """``done``, with the images not evaluated: unreadable (skipped) or misclassified (excluded by the spec)."""
    notes = [f"{excluded} misclassified image{'s' * (excluded != 1)} excluded"] if excluded else []
    notes += [f"{skipped} image{'s' * (skipped != 1)} skipped"] if skipped else []
    return f"done ({'; '.join(notes)})" if notes else "done"


def _cell_record(plan: CellPlan) -> CellRecord:
    model = plan.model
    references = None if plan.references is None else ReferenceRecord(  # the ids: references/…/features.parquet
        manifest=plan.references.manifest, **{pool: len(ids) for pool, ids in plan.references.pools.items()})
    return CellRecord(dataset=plan.dataset, architecture=plan.architecture, images=plan.total,
                      shards=sorted(plan.images), manifest=plan.manifest, references=references, digest=plan.digest,
                      model=ModelRecord(name=model.name, weights=model.weights, layer=model.layer,
                                        num_classes=model.num_classes, image_size=model.image_size[0],
                                        input_size=model.input_size))


def _check_resumable(store: RunStore, record: RunRecord, plans: list[CellPlan]) -> None:
    """Refuse to resume a cell whose images, references, weights or targets changed since its results were
    written (a rebuilt manifest, a new checkpoint); a cell that wrote nothing yet takes the new plan."""
    updated = record
    for plan in plans:
        cell = record.cell(plan.dataset, plan.architecture)
        if cell is None or cell.digest in (None, plan.digest):
            continue
        if store.done_shards(plan.dataset, plan.architecture) or store.cell_done(plan.dataset, plan.architecture):
            raise ValueError(
                f"{store.location}: cell {plan.name} holds results of other data: its manifest, reference images or "
                "weights changed since the run began; give another --out, or restore them to resume")
        updated = updated.with_cell(_cell_record(plan))
    if updated is not record:
        store.write_record(updated)


def _record(spec: GridSpec, store: RunStore, run: str, plans: list[CellPlan]) -> None:
    """Write ``run.json``, or check that an existing one describes the same grid (a resume)."""
    from evaluation import metric_directions

    try:
        existing = store.read_record()
    except FileNotFoundError:
        existing = None
    if existing is not None:
        if existing.fingerprint != spec.fingerprint():
            raise ValueError(
                f"{store.location} holds run {existing.run!r} of a different grid spec; "
                "give another --out (or the same spec to resume it)"
            )
        _check_resumable(store, existing, plans)
        return
    directions = metric_directions()
    store.write_record(run_record(run, spec.to_dict(), spec.seed, fingerprint=spec.fingerprint(),
                                  metric_directions={m: directions[e.registered] for m, e in spec.metrics.items()},
                                  cells=[_cell_record(p) for p in plans]))


def run_grid(
    spec: GridSpec,
    out: str | os.PathLike,
    *,
    address: str | None = None,
    echo: Callable[[str], None] = print,
    live: bool = False,
    num_cpus: int | None = None,
    evaluator: type[CellEvaluator] = CellEvaluator,
    featurizer: type[ReferenceFeaturizer] = ReferenceFeaturizer,
    executor: Executor = "ray",
) -> RunSummary:
    """Run (or resume) every cell of ``spec`` into the run directory ``out``.

    ``address``: a running Ray cluster (default: Ray embedded here, with ``num_cpus`` logical CPUs).
    ``executor``: ``"ray"``, or ``"local"``: no Ray, the cells one after another in this process on its device
    (:mod:`jobs.local`; :func:`jobs.local.choose_executor` says when that loses nothing).
    ``echo`` receives the console's lines; ``live``: a progress bar per cell on the terminal instead of
    progress lines (:class:`jobs.progress.GridProgress`).
    ``evaluator``: the callable class the actors run per batch (a subclass of :class:`CellEvaluator`
    to customise or instrument it; it must be importable by the workers); ``featurizer`` likewise
    for the reference-feature stage.

    The run holds ``out`` for itself while it runs (:meth:`RunStore.lock`: a second run into it fails at
    once). Raises :class:`GridFailedError` naming the cells that did not finish after their retries, and
    :class:`GridInterruptedError` on Ctrl-C; everything written stays in ``out`` and a rerun resumes it.
    """
    if executor not in ("ray", "local"):
        raise ValueError(f"executor {executor!r} unknown; choose ray or local")
    if executor == "local" and address:
        raise ValueError(f"executor 'local' runs in this process: it cannot use the Ray cluster at {address}")
    store = RunStore(os.fspath(out))
    with store.lock():
        return _run_locked(spec, store, address, echo, live, num_cpus, evaluator, featurizer, executor)


def _run_locked(spec: GridSpec, store: RunStore, address: str | None, echo: Callable[[str], None], live: bool,
                num_cpus: int | None, evaluator: type[CellEvaluator],
                featurizer: type[ReferenceFeaturizer], executor: Executor) -> RunSummary:
    started = time.perf_counter()
    run = f"{spec.name}-{spec.fingerprint()}"
    plans = plan_cells(spec, run, store.location)
    for line in regime_warnings(plans):
        echo(f"warning: {line}")
    _record(spec, store, run, plans)
    timings = {"plan": time.perf_counter() - started}
    if executor == "local":
        place = local_placement()
    else:
        import ray

        start_ray(address, num_cpus)
        timings["ray_start"] = time.perf_counter() - started - timings["plan"]
        configure_data(spec)
        place = placement(spec, ray.cluster_resources())
    echo(
        f"run {run}: {len(plans)} cells, {sum(p.total for p in plans)} images, {len(spec.methods)} methods, "
        f"{len(spec.metrics)} metrics → {store.location}"
    )
    echo(_placement_line(place))
    progress = GridProgress(echo, live=live)
    try:
        if place.executor == "local":
            cells = _run_cells_here(store, plans, place, spec.resources.retries, progress, evaluator, featurizer)
        else:
            cells = _run_cells(store, plans, place, spec.resources.retries, progress, evaluator, featurizer)
    finally:
        progress.close()
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


def _placement_line(place: Placement) -> str:
    if place.executor == "local":
        device = "its GPU" if place.gpus_per_actor else f"{place.torch_threads} CPU threads"
        return f"placement: in this process without Ray (one machine, one device), one cell at a time on {device}"
    per_actor = f"{place.gpus_per_actor:g} GPU" if place.gpus_per_actor else f"{place.cpus_per_actor:g} CPU"
    return (f"placement: {place.concurrent_cells} cell(s) at once, {place.actors_per_cell} actor(s) per cell, "
            f"{per_actor} per actor")


def _poll_workers(store: RunStore, plans: list[CellPlan], progress: GridProgress,
                  delivered_whole: bool = True) -> None:
    """Progress within the batches of running cells, from their workers' in-flight records: the methods being
    computed and, where a batch's rows reach the driver only when the whole batch is done (``delivered_whole``:
    Ray Data), the maps its records say are finished (the local executor delivers each method's rows at once)."""
    for plan in plans:
        cell = progress.cells.get(plan.name)
        if cell is None or cell.status != "running":
            continue
        delivered = cell.maps_delivered  # read first: a batch delivered after this has already left the records
        batches = store.in_flight(plan.dataset, plan.architecture).values()
        cell.computing = tuple(sorted({batch.method for batch in batches if batch.method is not None}))
        in_flight = sum(b.methods_done * len(b.images) for b in batches) if delivered_whole else 0
        cell.maps_done = max(cell.maps_done, delivered + in_flight)
        progress.update(cell)


INTERRUPT_GRACE_S = 30.0  # how long an interrupted run waits for its cells to stop


def _quiet_teardown() -> None:
    """Before Ray is shut down under running pipelines: Ray Data's threads must fail rather than start a new
    local Ray (its auto-connect), and the errors they report are expected noise on an interrupt."""
    hook = sys.modules.get("ray._private.auto_init_hook")
    if hook is not None:
        hook.enable_auto_connect = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    threading.excepthook = lambda args: None


def _run_cells_here(store: RunStore, plans: list[CellPlan], place: Placement, retries: int, progress: GridProgress,
                    evaluator: type[CellEvaluator], featurizer: type[ReferenceFeaturizer]) -> list[CellProgress]:
    """Every cell, one after another, in this thread; a second thread reports progress within the batches.
    Ctrl-C stops the computation where it is: :class:`GridInterruptedError` says what stays."""
    finished = threading.Event()

    def poll() -> None:
        while not finished.wait(progress.min_interval_s):
            _poll_workers(store, plans, progress, delivered_whole=False)

    poller = threading.Thread(target=poll, name="camgrid-progress", daemon=True)
    poller.start()
    try:
        return [_run_cell(store, plan, place, retries, progress, evaluator, featurizer) for plan in plans]
    except KeyboardInterrupt:
        progress.echo("interrupted: every shard written so far stays")
        raise GridInterruptedError(f"interrupted; results so far are in {store.location}: rerun the same command "
                                   "to resume") from None
    finally:
        finished.set()
        poller.join()


def _run_cells(store: RunStore, plans: list[CellPlan], place: Placement, retries: int, progress: GridProgress,
               evaluator: type[CellEvaluator], featurizer: type[ReferenceFeaturizer]) -> list[CellProgress]:
    """Every cell in a pool of ``concurrent_cells`` threads. Ctrl-C stops them: the cells stop taking
    batches, Ray is shut down under the ones that wait, and :class:`GridInterruptedError` says what stays."""
    import ray

    stop = threading.Event()
    pool = ThreadPoolExecutor(max_workers=place.concurrent_cells, thread_name_prefix="camgrid-cell")
    futures = [pool.submit(_run_cell, store, p, place, retries, progress, evaluator, featurizer, stop) for p in plans]
    try:
        pending, polled = set(futures), time.perf_counter()
        while pending:  # in short waits: a signal is handled only when the main thread runs Python code
            _, pending = wait(pending, timeout=0.5)
            if time.perf_counter() - polled >= progress.min_interval_s:
                _poll_workers(store, plans, progress)
                polled = time.perf_counter()
    except KeyboardInterrupt:
        stop.set()
        progress.echo("interrupted: stopping the cells (Ctrl-C again to abort at once); "
                      "every shard written so far stays")
        for future in futures:
            future.cancel()
        _quiet_teardown()
        ray.shutdown()  # the cells waiting on their actors' batches fail now, and stop
        wait(futures, timeout=INTERRUPT_GRACE_S)
        pool.shutdown(wait=False, cancel_futures=True)  # a thread still inside Ray Data is left to the exit
        raise GridInterruptedError(f"interrupted; results so far are in {store.location}: rerun the same command "
                                   "to resume") from None
    pool.shutdown(wait=True)
    return [future.result() for future in futures]
