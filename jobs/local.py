"""A run's cells in this process, without Ray: the executor for one machine with at most one device.

Embedded Ray on such a machine (a laptop's CPU, a workstation with one GPU) runs one cell at a time on one actor:
the same work as here, after starting its own processes, and an actor for each of a cell's two stages that imports
torch and loads the model again (on a 2-core laptop 16–33 s a stage, and Ray's start another 7–9 s:
``benchmarks/bench_job.py first-run``). Here both stages run the same callable classes
(:class:`jobs.evaluate.ReferenceFeaturizer`, :class:`jobs.evaluate.CellEvaluator`) on the same Parquet shards,
and :mod:`jobs.pipeline` writes their rows through the same :class:`jobs.assemble.ShardAssembler`: the rows,
resume, retries and skipped images are those of a Ray run. What differs: Ctrl-C stops the computation where it
is, and a crash of the process itself (the OOM killer, a segfault) ends the run where Ray would restart the
actor; the rerun resumes from the shards written.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from jobs.plan import CellPlan
from jobs.ray_setup import Executor, Placement
from jobs.spec import GridSpec
from storage.files import resolve

__all__ = ["choose_executor", "local_batches", "local_placement"]

def choose_executor(spec: GridSpec, address: str | None) -> Executor:
    """``ray`` for a cluster (``address`` or ``RAY_ADDRESS``), for more than one CUDA device, or where the spec asks
    for more than one actor per cell or cell at once; ``local`` otherwise: this process does what one actor would."""
    res = spec.resources
    several = res.actors_per_cell > 1 or (res.concurrent_cells != "auto" and int(res.concurrent_cells) > 1)
    if address or os.environ.get("RAY_ADDRESS") or torch.cuda.device_count() > 1 or several:
        return "ray"
    return "local"


def local_placement() -> Placement:
    """One cell at a time on this process's device: the GPU if there is one, else every core."""
    gpus = 1.0 if torch.cuda.is_available() else 0.0
    return Placement(actors_per_cell=1, gpus_per_actor=gpus, cpus_per_actor=0.0, concurrent_cells=1,
                     torch_threads=os.cpu_count() or 1, executor="local")


def local_batches(files: list[str], columns: list[str], wanted: list[str], batch_size: int, callable_class: type,
                  plan: CellPlan, place: Placement) -> Iterator[pa.Table]:
    """What :func:`jobs.ray_setup.mapped` computes, here: the ``wanted`` rows of ``files``, file after file, in
    batches of ``batch_size`` that span files as Ray's repartition does (the last may be smaller), through one
    instance of ``callable_class``."""
    instance = callable_class(plan=plan, torch_threads=place.torch_threads)
    value_set = pa.array(wanted, type=pa.string())
    pending: pa.Table | None = None
    for file in files:
        filesystem, path = resolve(file)
        table = pq.read_table(path, columns=columns, filesystem=filesystem)
        table = table.filter(pc.is_in(table.column("image_id"), value_set=value_set))
        pending = table if pending is None else pa.concat_tables([pending, table])
        while pending.num_rows >= batch_size:
            yield from _outputs(instance(pending.slice(0, batch_size)))
            pending = pending.slice(batch_size)
    if pending is not None and pending.num_rows:
        yield from _outputs(instance(pending))


def _outputs(output: pa.Table | Iterator[pa.Table]) -> Iterator[pa.Table]:
    """A callable's output batches: one table (the featurizer) or a table per method (the evaluator)."""
    if isinstance(output, pa.Table):
        yield output
    else:
        yield from output
