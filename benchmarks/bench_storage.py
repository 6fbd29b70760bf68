"""Result-store and rank-table throughput, with peers measured in the same run.

Writes ``--images`` × ``--methods`` saliency maps and their scores (``--metrics`` per map) through
:class:`storage.results.RunStore` in shards, reads them back (lazy scans, maps as tensors), and
reports rows/s and bytes per map. Peers: one ``.npy`` file per map (what ad-hoc scripts do), and
float32 maps in a Parquet list column. Then ranks ``--rank-rows`` score rows into every table and
compares with the same aggregation written in pandas.

    python benchmarks/bench_storage.py                      # 20,000 × 10 maps, 1,000,000 score rows
    python benchmarks/bench_storage.py --images 2000 --rank-rows 100000   # quick look
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import torch  # noqa: F401  (imported up front so that its import time is not counted as reading)

from storage.ranking import rank_tables
from storage.results import SCORES_SCHEMA, RunStore, saliency_table

METHODS = ["gradcam", "gradcampp", "smoothgradcampp", "integrated_gradcam", "hirescam", "xgradcam", "layercam",
           "scorecam", "ablationcam", "expected_gradcam"]


def directory_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def shard_payload(shard: int, images: int, methods: list[str], metrics: list[str], size: int):
    rng = np.random.default_rng(shard)
    ids = [f"{shard:04d}_{k:04d}" for k in range(images)]
    targets = rng.integers(0, 1000, images)
    maps = {m: rng.standard_normal((images, size, size)).astype(np.float32) for m in methods}
    saliency = pa.concat_tables([saliency_table("bench", m, ids, targets, maps[m], np.full(images, 0.05))
                                 for m in methods])
    n = images * len(methods) * len(metrics)
    scores = pa.table({"run": ["bench"] * n, "method": np.repeat(methods, images * len(metrics)),
                       "image_id": np.tile(np.repeat(ids, len(metrics)), len(methods)),
                       "target": np.tile(np.repeat(targets, len(metrics)), len(methods)),
                       "metric": np.tile(metrics, images * len(methods)), "value": rng.random(n),
                       "seconds": np.full(n, 0.01)}, schema=SCORES_SCHEMA)
    return maps, saliency, scores


def bench_store(root: Path, args) -> None:
    metrics = [f"metric_{k:02d}" for k in range(args.metrics)]
    methods = METHODS[:args.methods]
    shards = args.images // args.shard
    store = RunStore(root / "run")
    payloads = [shard_payload(s, args.shard, methods, metrics, args.size) for s in range(shards)]
    start = time.perf_counter()
    for shard, (_, saliency, scores) in enumerate(payloads):
        store.write_shard("bench", "resnet50", shard, saliency, scores)
    write_s = time.perf_counter() - start
    n_maps, n_scores = args.images * len(methods), args.images * len(methods) * len(metrics)
    saliency_bytes = directory_bytes(root / "run" / "saliency")
    scores_bytes = directory_bytes(root / "run" / "scores")

    start = time.perf_counter()
    maps = {m: store.maps(dataset="bench", architecture="resnet50", method=m)[1] for m in methods}
    read_maps_s = time.perf_counter() - start
    start = time.perf_counter()
    score_rows = store.scores().select(pl.len()).collect().item()
    mean = store.scores().group_by("method").agg(pl.col("value").mean()).collect()
    read_scores_s = time.perf_counter() - start
    assert score_rows == n_scores and mean.height == len(methods)
    assert sum(len(m) for m in maps.values()) == n_maps

    # peer 1: one .npy file per map, on a subset, extrapolated per map
    subset = min(args.peer_maps, n_maps)
    peer = root / "npy"
    peer.mkdir()
    flat = [(m, i, payloads[0][0][m][i % args.shard]) for m in methods for i in range(subset // len(methods))]
    start = time.perf_counter()
    for m, i, array in flat:
        np.save(peer / f"{m}_{i}.npy", array)
    npy_write = (time.perf_counter() - start) / len(flat)
    start = time.perf_counter()
    for m, i, _ in flat:
        np.load(peer / f"{m}_{i}.npy")
    npy_read = (time.perf_counter() - start) / len(flat)
    npy_bytes = directory_bytes(peer) / len(flat)
    # peer 2: float32 maps in a Parquet list column (same rows, no float16 coding)
    start = time.perf_counter()
    for shard, (shard_maps, _, _) in enumerate(payloads):
        table = pa.table({"method": np.repeat(methods, args.shard),
                          "map": [row.ravel() for m in methods for row in shard_maps[m]]})
        pq.write_table(table, root / f"f32-{shard}.parquet", compression="zstd")
    f32_write = (time.perf_counter() - start) / n_maps
    f32_bytes = sum((root / f"f32-{s}.parquet").stat().st_size for s in range(shards)) / n_maps

    ours_write, ours_read = write_s / n_maps, read_maps_s / n_maps
    print(f"result store: {args.images} images × {len(methods)} methods = {n_maps} maps ({args.size}×{args.size}), "
          f"{n_scores} score rows, {shards} shards")
    print(f"  write  {write_s:6.2f} s  → {n_maps / write_s:10,.0f} maps/s with their {n_scores / write_s:12,.0f} "
          f"score rows/s")
    print(f"  read   maps {read_maps_s:5.2f} s → {n_maps / read_maps_s:10,.0f} maps/s as tensors;  "
          f"scores {read_scores_s:5.2f} s → {n_scores / read_scores_s:12,.0f} rows/s (scan + group-by)")
    print(f"  size   {saliency_bytes / n_maps:7.1f} bytes/map (float16 + scale, zstd; raw float32 would be "
          f"{4 * args.size ** 2} B); {scores_bytes / n_scores:5.2f} bytes/score row")
    print(f"  peer .npy file per map ({len(flat)} maps), peer/ours: write time ×{npy_write / ours_write:.1f}, "
          f"read time ×{npy_read / ours_read:.1f}, bytes ×{npy_bytes / (saliency_bytes / n_maps):.1f} ({npy_bytes:.0f} B/map)")
    print(f"  peer float32 Parquet list column, peer/ours: write time ×{f32_write / ours_write:.2f}, "
          f"bytes ×{f32_bytes / (saliency_bytes / n_maps):.2f} ({f32_bytes:.0f} B/map)")


def pandas_average_ranks(frame: pd.DataFrame, directions: dict[str, str]) -> pd.DataFrame:
    """The Table 12b aggregation written in pandas (the peer)."""
    defined = frame[frame["value"].notna()]
    means = defined.groupby(["dataset", "architecture", "method", "metric"], as_index=False)["value"].mean()
    means["key"] = np.where(means["metric"].map(directions) == "higher", -means["value"], means["value"])
    means["rank"] = means.groupby(["dataset", "architecture", "metric"])["key"].rank(method="average")
    return means.groupby(["method", "metric"])["rank"].mean().unstack("metric")


def bench_ranks(args) -> None:
    rng = np.random.default_rng(0)
    datasets, architectures = 5, 8
    metrics = [f"metric_{k:02d}" for k in range(args.metrics)]
    per_cell = args.rank_rows // (datasets * architectures)
    images = max(1, per_cell // (len(METHODS) * len(metrics)))
    n = datasets * architectures * images * len(METHODS) * len(metrics)
    values = rng.random(n)
    values[rng.random(n) < 0.001] = np.nan
    frame = pl.DataFrame({
        "dataset": np.repeat([f"d{k}" for k in range(datasets)], n // datasets),
        "architecture": np.tile(np.repeat([f"a{k}" for k in range(architectures)], n // (datasets * architectures)),
                                datasets),
        "method": np.tile(np.repeat(METHODS, images * len(metrics)), datasets * architectures),
        "image_id": np.tile(np.repeat(np.arange(images).astype(str), len(metrics)), datasets * architectures
                            * len(METHODS)),
        "metric": np.tile(metrics, n // len(metrics)), "value": values})
    directions = {m: ("higher" if k % 2 else "lower") for k, m in enumerate(metrics)}
    start = time.perf_counter()
    tables = rank_tables(frame.lazy(), directions)
    ours = time.perf_counter() - start
    start = time.perf_counter()
    peer = pandas_average_ranks(frame.to_pandas(), directions)
    pandas_s = time.perf_counter() - start
    ranks = tables["table12b_ranks"].frame
    for metric in metrics[:3]:
        np.testing.assert_allclose(ranks[metric].to_numpy(), peer.loc[ranks["method"].to_list(), metric].to_numpy())
    print(f"rank tables: {n:,} score rows ({datasets}×{architectures} combinations, {len(METHODS)} methods, "
          f"{len(metrics)} metrics) → {len(tables)} tables in {ours:.2f} s; pandas Table 12b alone "
          f"(incl. conversion) {pandas_s:.2f} s (×{pandas_s / ours:.2f} ours); Table 12b equal")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--methods", type=int, default=10)
    parser.add_argument("--metrics", type=int, default=20, help="score rows per map")
    parser.add_argument("--size", type=int, default=7, help="coarse map side (7 for ResNet-50 at 224²)")
    parser.add_argument("--shard", type=int, default=500, help="images per shard part")
    parser.add_argument("--peer-maps", type=int, default=5000, help="maps written by the .npy peer")
    parser.add_argument("--rank-rows", type=int, default=1_000_000)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="camgrid-bench-"))
    try:
        bench_store(root, args)
        bench_ranks(args)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
