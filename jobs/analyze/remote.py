"""An analysis as one Ray task on a running cluster (``camgrid analyze … --address``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

__all__ = ["run_on_cluster"]

Result = TypeVar("Result")


def run_on_cluster(function: Callable[..., Result], *args: object, address: str) -> Result:
    """``function(*args)`` as one Ray task on the cluster at ``address``, with one GPU when the cluster has one.

    The task's own exception is raised here (not Ray's wrapper), so a bad setting still fails in one line.
    """
    import ray

    from jobs.ray_setup import start_ray

    start_ray(address)
    resources = {"num_gpus": 1} if ray.cluster_resources().get("GPU", 0) >= 1 else {}
    task = ray.remote(function).options(**resources)
    try:
        return ray.get(task.remote(*args))
    except ray.exceptions.RayTaskError as err:
        if isinstance(err.cause, Exception):
            raise err.cause from None
        raise
