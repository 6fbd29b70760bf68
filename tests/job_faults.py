"""Instrumented evaluators for the Ray job tests (imported by Ray workers through PYTHONPATH).

Each writes into ``$CAMGRID_TEST_STATE`` (set before Ray starts, so workers inherit it): a marker
file makes a fault happen exactly once per test, whatever actor or retry runs the batch.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pyarrow as pa

from jobs.evaluate import CellEvaluator, ReferenceFeaturizer


def _claim(name: str) -> bool:
    """True for exactly one caller across processes: the first to create the marker ``name``."""
    try:
        fd = os.open(Path(os.environ["CAMGRID_TEST_STATE"]) / name, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.close(fd)
    return True


class RaisingOnceEvaluator(CellEvaluator):
    """The model raises on the second batch the first time (a transient failure)."""

    calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        type(self).calls += 1
        if type(self).calls == 2 and _claim("raised"):
            raise RuntimeError("injected model failure")
        return super().__call__(batch)


class KilledOnceEvaluator(CellEvaluator):
    """The actor process is SIGKILLed in the middle of its second batch, once."""

    calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        type(self).calls += 1
        if type(self).calls == 2 and _claim("killed"):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().__call__(batch)


class GpuRecordingEvaluator(CellEvaluator):
    """Records, per actor, the GPUs Ray assigned it and the node it runs on."""

    def __init__(self, plan, torch_threads=None):
        import ray

        context = ray.get_runtime_context()
        record = {
            "cell": plan.name,
            "gpus": [str(g) for g in ray.get_gpu_ids()],
            "node": context.get_node_id(),
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "pid": os.getpid(),
        }
        path = Path(os.environ["CAMGRID_TEST_STATE"]) / f"actor-{os.getpid()}-{plan.dataset}.json"
        path.write_text(json.dumps(record))
        super().__init__(plan, torch_threads)


class HangingEvaluator(CellEvaluator):
    """Never returns: the pipeline makes no progress (``hanging`` in the state folder says a batch started)."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        import time

        _claim("hanging")
        time.sleep(3600)
        return super().__call__(batch)


class RefusingFeaturizer(ReferenceFeaturizer):
    """Fails if the reference-feature stage runs: a rerun must reuse the stored features."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        raise RuntimeError("reference features recomputed")


class KillsOnImageEvaluator(CellEvaluator):
    """The actor process is SIGKILLed by every batch holding the manifest's first image (a poisoned input)."""

    def _evaluate(self, rows: list[dict], ids: list[str], mark) -> pa.Table:
        if min(self.plan.images[min(self.plan.images)]) in ids:
            _claim("poisoned")
            os.kill(os.getpid(), signal.SIGKILL)
        return super()._evaluate(rows, ids, mark)


class SlowMethodsEvaluator(CellEvaluator):
    """Every method takes ``CAMGRID_TEST_METHOD_SECONDS`` longer: a batch long enough for progress within it."""

    def _attribute(self, name, bound, images, targets, seeds, ids):
        import time

        time.sleep(float(os.environ.get("CAMGRID_TEST_METHOD_SECONDS", "3")))
        return super()._attribute(name, bound, images, targets, seeds, ids)


class InterruptingEvaluator(CellEvaluator):
    """Ctrl-C arrives during the second batch, once (the local executor computes in the driver's main thread)."""

    calls = 0

    def __call__(self, batch: pa.Table) -> pa.Table:
        type(self).calls += 1
        if type(self).calls == 2 and _claim("interrupted"):
            raise KeyboardInterrupt
        return super().__call__(batch)
