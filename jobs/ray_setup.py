"""Ray for the job: join or start a cluster, place the actors, and build a cell's ``map_batches`` pipeline.

Everything that touches Ray's API is here; :mod:`jobs.pipeline` runs the cells on top of it.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from jobs.plan import CellPlan
from jobs.spec import GridSpec

__all__ = ["Executor", "Placement", "placement", "start_ray", "configure_data", "mapped"]

Executor = Literal["ray", "local"]

PACKAGE_ROOT = str(Path(__file__).resolve().parents[1])


@dataclass(frozen=True)
class Placement:
    """Resources of each actor and how many cells run at once; ``executor``: Ray's actors, or this process
    (:mod:`jobs.local`) standing for a cell's one actor."""

    actors_per_cell: int
    gpus_per_actor: float
    cpus_per_actor: float
    concurrent_cells: int
    torch_threads: int
    executor: Executor = "ray"

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


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of ``host:port``, ``[IPv6]:port`` or ``IPv6:port``; ``None`` for "auto" and URLs."""
    if "://" in address:
        return None
    bracketed = re.fullmatch(r"\[([^\]]+)\]:(\d+)", address)
    if bracketed is not None:
        return bracketed.group(1), int(bracketed.group(2))
    host, _, port = address.rpartition(":")
    return (host, int(port)) if host and port.isdigit() else None


def _check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail at once for a ``host:port`` nobody listens on (Ray itself retries the GCS for minutes)."""
    target = _host_port(address)
    if target is None:  # "auto", "ray://…", "http://…": left to Ray
        return
    try:
        socket.create_connection(target, timeout=timeout_s).close()
    except OSError as err:
        raise ConnectionError(f"no Ray cluster at {address}: {err}") from err


def start_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Join a running cluster (``address``, or ``RAY_ADDRESS`` as set inside ``ray job submit``), or start
    Ray embedded in this process with ``num_cpus`` logical CPUs.

    Embedded Ray's workers get this package's folder on ``PYTHONPATH`` (they do not see the driver's
    ``sys.path``); on a cluster the package is installed (``cluster.yaml``) or shipped with
    ``ray job submit --working-dir``, whose runtime environment is left as the job set it. A cluster
    with token authentication (``RAY_AUTH_MODE=token``, as ``cluster.yaml`` starts it) needs the same
    mode and its token here (``~/.ray/auth_token`` or ``RAY_AUTH_TOKEN``).
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
                f"cannot join the Ray cluster at {target}: {err}. If the cluster uses token authentication, "
                "run with RAY_AUTH_MODE=token and its token in ~/.ray/auth_token (or RAY_AUTH_TOKEN)"
            ) from err
        return
    python_path = os.pathsep.join(p for p in (PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)
    # an embedded Ray turns token authentication on by itself and says so on the console: not this console's news
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    ray.init(
        num_cpus=num_cpus,
        runtime_env={"env_vars": {"PYTHONPATH": python_path}},
        include_dashboard=False,
        logging_level=logging.WARNING,
    )


def configure_data(spec: GridSpec) -> None:
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_no_progress_timeout_s = spec.resources.no_progress_timeout_s
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    context.enable_operator_progress_bars = False
    context.issue_detectors_config.detectors = []  # per-operator memory hints every 30 s: not for this console
    # Parquet through Ray Data's first reader: the V2 default provisions 32 footer-reader actors per read, a process
    # each, which on a 2-core machine delays every stage's first batch by about 6 s for a handful of shard files
    context.use_datasource_v2 = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)  # an INFO line per finished dataset
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "Progress bars disabled": we did


def mapped(files: list[str], columns: list[str], wanted: list[str], batch_size: int, callable_class: type,
            plan: CellPlan, place: Placement):
    """``read_parquet(files) → select → filter(image_id ∈ wanted) → map_batches(callable_class)`` on the cell's
    actors."""
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
    with warnings.catch_warnings():  # Ray 2.60 deprecates max_restarts as a keyword and names no parameter for it
        warnings.simplefilter("ignore", DeprecationWarning)
        return read.repartition(target_num_rows_per_block=batch_size).map_batches(
            callable_class,
            fn_constructor_kwargs={"plan": plan.for_actors(), "torch_threads": place.torch_threads},
            batch_size=batch_size,
            batch_format="pyarrow",
            zero_copy_batch=True,
            compute=ActorPoolStrategy(size=place.actors_per_cell),
            max_restarts=0,  # a dead actor fails the attempt: the cell's retries resume it, a batch that kills its
            **place.actor_resources(),  # worker every time fails the cell in `retries` attempts, naming the images
        )
