"""The Ray job's throughput on one machine and its scaling on a simulated cluster.

``throughput``: runs a grid (default: the ``demo`` preset) through the Ray job and reports images ×
methods per second and where the time went — attribution and metrics (measured inside the actors),
writing (the driver's atomic parts), and the rest (Ray start, actor start and model load, decoding,
scheduling). Peer, measured in the same run: the same cells evaluated in this process by the same
evaluator without Ray, so ``job / in-process`` is the price of the pipeline.

``first-run``: ``camgrid run`` in a child process as a newcomer runs it (a fresh manifest cache, the executor
``auto`` picks — on one machine with at most one GPU, this process without Ray; ``--executor ray`` for embedded
Ray — the report and overlays), each console line with its time, the wall time against the demo's goal
(150 s on a 2-core laptop) and the same cells in process without Ray as the peer.

``scaling``: a ``ray.cluster_utils.Cluster`` with 1, 2, 4 … worker nodes of one logical GPU each runs
a grid of as many cells as the largest cluster has GPUs. On a machine without GPUs
the evaluator stands for GPU work by sleeping ``--gpu-seconds`` per image (it holds no CPU, as a
kernel on a GPU would not); the efficiency ``T1 / (N × TN)`` then measures how well the job keeps N
GPUs busy (placement, concurrency of cells, streaming, writes), not the model's arithmetic.

    python benchmarks/bench_job.py throughput                 # the demo preset, a few minutes
    python benchmarks/bench_job.py first-run                  # the demo as a newcomer's first command
    python benchmarks/bench_job.py scaling --nodes 1,2,4      # about two minutes
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from jobs.evaluate import CellEvaluator, evaluate_in_process  # noqa: E402
from jobs.pipeline import run_grid  # noqa: E402
from jobs.plan import plan_cells  # noqa: E402
from jobs.spec import load_spec, parse_spec  # noqa: E402
from storage.results import RunStore  # noqa: E402


class SimulatedGpuEvaluator(CellEvaluator):
    """Adds ``CAMGRID_BENCH_GPU_SECONDS`` of idle time per image: a stand-in for work done on a GPU."""

    def __call__(self, batch: pa.Table) -> pa.Table:
        time.sleep(float(os.environ["CAMGRID_BENCH_GPU_SECONDS"]) * batch.num_rows)
        return super().__call__(batch)


def in_process_seconds(spec, run: str, location: str) -> float:
    """The peer: every cell through one in-process evaluator, in the spec's batch size, no Ray (reading the
    reference features the job stored in ``location``)."""
    start = time.perf_counter()
    for plan in plan_cells(spec, run, location):
        evaluate_in_process(plan)
    return time.perf_counter() - start


def throughput(args: argparse.Namespace) -> None:
    import ray

    spec = load_spec(args.spec, overrides={"samples": args.samples} if args.samples else None)
    out = Path(tempfile.mkdtemp(prefix="camgrid-bench-")) / "run"
    try:
        summary = run_grid(spec, out, echo=lambda line: print("  " + line, flush=True))
        ray.shutdown()
        store = RunStore(str(out))
        saliency = store.saliency().collect()
        scores = store.scores().collect()
        markers = [store.cell_done(p.dataset, p.architecture) for p in plan_cells(spec, summary.run)]
        attribution = float(saliency["seconds"].sum())
        metrics = float(scores["seconds"].sum())
        writing = sum(m.write_seconds for m in markers)
        wall = summary.seconds
        images = saliency.select("dataset", "architecture", "image_id").unique().height
        maps = saliency.height
        peer = in_process_seconds(spec, summary.run, str(out))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    other = wall - attribution - metrics - writing
    print(
        f"\n{spec.name}: {images} images × {len(spec.methods)} methods = {maps} maps, {scores.height} scores "
        f"({os.cpu_count()} CPUs, no GPU)"
    )
    print(f"  job wall time           {wall:8.1f} s   {maps / wall:6.3f} images×methods/s")
    print(
        f"  in-process peer         {peer:8.1f} s   {maps / peer:6.3f} images×methods/s   job / peer = "
        f"{wall / peer:.2f}×"
    )
    print("  where the job's time went:")
    for name, seconds in [
        ("attribution (actors)", attribution),
        ("metrics (actors)", metrics),
        ("writing parts (driver)", writing),
        ("Ray + I/O rest: start, actor/model load, decode, scheduling", other),
    ]:
        print(f"    {name:<60} {seconds:8.1f} s  {100 * seconds / wall:5.1f} %")
    print(f"    (of which Ray start {summary.timings['ray_start']:.1f} s, planning {summary.timings['plan']:.1f} s)")


DEMO_GOAL_S = 150.0  # a newcomer's first `camgrid run` on a 2-core laptop, after the install


def first_run(args: argparse.Namespace) -> None:
    """``camgrid run`` as a newcomer runs it: a fresh cache (the demo manifests are built), Ray embedded, the report
    and the overlays; wall time against the goal, each console line with its time, and the peer: the same cells
    in this process without Ray (from the references the run stored)."""
    import subprocess

    root = Path(tempfile.mkdtemp(prefix="camgrid-first-run-"))
    env = {**os.environ, "CAMGRID_CACHE": str(root / "cache")} if args.cold else dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    out = root / "run"
    try:
        start = time.perf_counter()
        process = subprocess.Popen([sys.executable, "-m", "jobs.cli", "run", args.spec, "--out", str(out),
                                    "--executor", args.executor],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                   cwd=HERE.parent)
        for line in process.stdout:
            print(f"  {time.perf_counter() - start:6.1f} s  {line.rstrip()}", flush=True)
        wall = time.perf_counter() - start
        if process.wait() != 0:
            raise SystemExit(f"camgrid run failed (exit {process.returncode})")
        spec = load_spec(args.spec)
        run = json.loads((out / "run.json").read_text())["run"]
        peer = in_process_seconds(spec, run, str(out))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\n{args.spec}: first run {wall:.1f} s ({args.executor} executor, {'cold' if args.cold else 'warm'} cache; "
          f"goal ≤ {DEMO_GOAL_S:.0f} s: "
          f"{wall / DEMO_GOAL_S:.2f}× the goal); the same cells in process without Ray {peer:.1f} s "
          f"(run / in-process = {wall / peer:.2f}×)")


def scaling(args: argparse.Namespace) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from storage.builders import build

    nodes = [int(n) for n in args.nodes.split(",")]
    cells = max(nodes)
    root = Path(tempfile.mkdtemp(prefix="camgrid-scaling-"))
    os.environ["CAMGRID_BENCH_GPU_SECONDS"] = str(args.gpu_seconds)
    os.environ["PYTHONPATH"] = os.pathsep.join([str(HERE), str(HERE.parent), os.environ.get("PYTHONPATH", "")])
    build("demo", None, root / "demo", shard_size=2)
    spec = parse_spec(
        {
            "name": "scaling",
            "datasets": {f"d{i}": {"manifest": str(root / "demo")} for i in range(cells)},
            "architectures": {"lite0": {"model": "efficientnet_lite0", "weights": "package", "input_size": 64}},
            "samples": args.images,
            "batch_size": 2,
            "methods": {"gradcam": {}},
            "metrics": {"sparseness": {}},
            "resources": {"retries": 0, "no_progress_timeout_s": 600},
        },
        "scaling.yaml",
    )
    results: dict[int, float] = {}
    first: dict[int, list[float]] = {}
    try:
        for count in nodes:
            ray.shutdown()
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "num_gpus": 0})
            for _ in range(count):
                cluster.add_node(num_cpus=1, num_gpus=1)
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, logging_level="ERROR")
            lines: list[tuple[float, str]] = []
            start = time.perf_counter()
            run_grid(
                spec,
                root / f"run-{count}",
                evaluator=SimulatedGpuEvaluator,
                echo=lambda line: lines.append((time.perf_counter() - start, line)),
            )
            results[count] = time.perf_counter() - start
            first[count] = first_results(lines)
            ray.shutdown()
            cluster.shutdown()
            print(
                f"  {count} GPU node(s): {results[count]:6.1f} s; first result of a cell after "
                f"{min(first[count]):.1f}–{max(first[count]):.1f} s of its start (actor, model load, first batch)",
                flush=True,
            )
    finally:
        shutil.rmtree(root, ignore_errors=True)
    base = results[nodes[0]] * nodes[0]
    print(
        f"\n{cells} cells × {args.images} images, {args.gpu_seconds} s of simulated GPU work per image "
        f"(ideal time on one GPU: {cells * args.images * args.gpu_seconds:.0f} s)"
    )
    print("  GPUs   seconds   speed-up   efficiency")
    for count, seconds in results.items():
        print(f"  {count:>4}   {seconds:7.1f}   {base / seconds:8.2f}   {base / (count * seconds):9.2f}")
    print(json.dumps({"seconds": results, "first_result_seconds": first}))


def first_results(lines: list[tuple[float, str]]) -> list[float]:
    """Per cell, seconds from its start (its first progress line) to its first images done: the actor's
    start, model load and first batch."""
    started: dict[str, float] = {}
    first: dict[str, float] = {}
    for seconds, line in lines:
        match = re.match(r"\[(\S+)\] ([0-9]+)/", line)
        if match:
            started.setdefault(match.group(1), seconds)
            if int(match.group(2)) > 0:
                first.setdefault(match.group(1), seconds - started[match.group(1)])
    return list(first.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("throughput")
    one.add_argument("--spec", default="demo", help="preset or YAML (default: demo)")
    one.add_argument("--samples", type=int, default=None, help="override the spec's images per cell")
    first = sub.add_parser("first-run", help="camgrid run as a newcomer runs it, against the demo's time goal")
    first.add_argument("--spec", default="demo", help="preset or YAML (default: demo)")
    first.add_argument("--executor", choices=["auto", "ray", "local"], default="auto",
                       help="camgrid run --executor (default: auto, what a newcomer gets)")
    first.add_argument("--cold", action=argparse.BooleanOptionalAction, default=True,
                       help="a fresh manifest cache, as on a new machine (default: on)")
    two = sub.add_parser("scaling")
    two.add_argument("--nodes", default="1,2,4", help="GPU node counts to compare")
    two.add_argument("--images", type=int, default=8, help="images per cell")
    two.add_argument("--gpu-seconds", type=float, default=1.0, help="simulated GPU seconds per image")
    args = parser.parse_args()
    {"throughput": throughput, "first-run": first_run, "scaling": scaling}[args.command](args)


if __name__ == "__main__":
    main()
