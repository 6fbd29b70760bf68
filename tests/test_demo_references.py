"""The offline reference pool ``demo_references``: sources, rows, determinism, cache, and diversity."""

from __future__ import annotations

import hashlib
import io
import re
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from storage.builders import BUILDERS, build, demo
from storage.builders.demo import (
    REFERENCE_PHOTOS,
    SAMPLE_PHOTOS,
    TEXTURES,
    demo_references_manifest,
    random_resized_box,
    reference_photo_path,
    reference_photos,
    sample_images,
)
from storage.manifest import decode_image, read_manifest


@pytest.fixture(scope="module")
def pool200(tmp_path_factory):
    return demo_references_manifest(n=200, seed=0, location=tmp_path_factory.mktemp("refs") / "pool")


def _digests(manifest) -> list[tuple[str, str]]:
    return [(r["image_id"], hashlib.sha256(r["image"]).hexdigest()) for r in manifest.records()]


def test_sources_are_offline_photos_other_than_the_demos(monkeypatch):
    demo_names = set(SAMPLE_PHOTOS) | set(TEXTURES)
    assert len(REFERENCE_PHOTOS) >= 10
    assert not set(REFERENCE_PHOTOS) & demo_names
    import matplotlib
    import skimage
    import sklearn

    packages = {"scikit-learn": sklearn, "matplotlib": matplotlib, "scikit-image": skimage}
    for name, (distribution, _) in REFERENCE_PHOTOS.items():
        path = reference_photo_path(name)
        assert path.is_file() and Path(packages[distribution].__file__).parent in path.parents  # shipped in the wheel
        assert path.stem not in demo_names  # not a demo photo under another name

    def no_network(*args, **kwargs):
        raise AssertionError("the reference photos must load without network access")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    photos = reference_photos()
    assert [name for name, _ in photos] == list(REFERENCE_PHOTOS)
    from skimage import data

    demo_pixels = [np.asarray(image) for _, image in sample_images()]
    demo_pixels += [np.asarray(Image.fromarray(getattr(data, t)()).convert("RGB")) for t in TEXTURES]
    seen = []
    for name, photo in photos:
        pixels = np.asarray(photo)
        assert photo.mode == "RGB" and min(photo.size) >= 128, name
        assert pixels.std() > 10, f"{name} is nearly flat"
        for other in demo_pixels + seen:  # no source is a demo photo/texture or a duplicate of another source
            assert pixels.shape != other.shape or not np.array_equal(pixels, other), name
        seen.append(pixels)


def test_rows_are_256px_rgb_jpegs_with_unique_ids(pool200, tmp_path):
    again = read_manifest(pool200.location)
    assert _digests(again) == _digests(pool200)
    assert again.metadata["builder"] == "demo_references"
    assert again.metadata["builder_version"] == demo.REFERENCES_VERSION
    assert list(again.class_names) == list(REFERENCE_PHOTOS)
    assert len(again) == 200 and again.shards == [0]  # 512 rows per shard
    records = list(again.records())
    ids = [r["image_id"] for r in records]
    assert len(set(ids)) == len(ids)
    assert len({hashlib.sha256(r["image"]).digest() for r in records}) == len(records)  # distinct images
    for record in records:
        assert record["split"] == "reference" and record["dataset"] == "demo_references"
        assert record["mask"] is None and record["boxes"] is None and record["image_uri"] is None
        assert record["label_name"] == again.class_names[record["label"]]
        assert re.fullmatch(re.escape(record["label_name"]) + r"-\d{5}", record["image_id"])
        with Image.open(io.BytesIO(record["image"])) as raw:
            assert raw.format == "JPEG" and raw.mode == "RGB" and raw.size == (256, 256)
        assert (record["width"], record["height"]) == (256, 256)
        assert decode_image(record).size == (256, 256)
    counts = np.bincount(again.table.column("label").to_numpy(), minlength=len(REFERENCE_PHOTOS))
    assert counts.max() - counts.min() <= 1  # stratified over the source photos


def test_deterministic_in_n_and_seed(pool200, tmp_path):
    first = demo_references_manifest(n=24, seed=0, location=tmp_path / "a")
    second = demo_references_manifest(n=24, seed=0, location=tmp_path / "b")
    other = demo_references_manifest(n=24, seed=1, location=tmp_path / "c")
    assert _digests(first) == _digests(second)
    assert not set(h for _, h in _digests(first)) & set(h for _, h in _digests(other))
    # a crop is a function of its id: the same id in a larger pool is the same image
    bigger = dict(_digests(pool200))
    shared = [(i, h) for i, h in _digests(first) if i in bigger]
    assert all(bigger[i] == h for i, h in shared)
    # the CLI's path (BUILDERS["demo_references"]) writes the same rows
    assert BUILDERS["demo_references"].default_split == "reference"
    via_build = build("demo_references", None, tmp_path / "cli", n=24, seed=1)
    assert _digests(via_build) == _digests(other)


def test_cache_is_keyed_by_n_seed_and_version(tmp_path, monkeypatch):
    monkeypatch.setenv("CAMGRID_CACHE", str(tmp_path / "cache"))
    cached = demo_references_manifest(n=12, seed=3)
    location = Path(cached.location)
    assert location.parent == demo.default_demo_location().parent
    assert "n12" in location.name and "seed3" in location.name
    part = location / "part-00000.parquet"
    stamp = part.stat().st_mtime_ns
    assert _digests(demo_references_manifest(n=12, seed=3)) == _digests(cached)
    assert part.stat().st_mtime_ns == stamp  # read from the cache, not rebuilt
    assert len(demo_references_manifest(n=14, seed=3, location=location)) == 14  # another n rebuilds in place
    monkeypatch.setattr(demo, "REFERENCES_VERSION", "test-bump")
    rebuilt = demo_references_manifest(n=14, seed=3, location=location)
    assert rebuilt.metadata["builder_version"] == "test-bump"
    assert read_manifest(location).metadata["builder_version"] == "test-bump"


def test_random_resized_box_follows_random_resized_crop():
    rng = np.random.default_rng(0)
    for width, height in [(640, 427), (300, 400), (1411, 1411)]:
        for _ in range(200):
            left, top, right, bottom = random_resized_box(rng, width, height)
            w, h = right - left, bottom - top
            assert 0 <= left < right <= width and 0 <= top < bottom <= height
            assert 0.08 - 0.01 <= w * h / (width * height) <= 1.0
            assert 3 / 4 - 0.02 <= w / h <= 4 / 3 + 0.02
    left, top, right, bottom = random_resized_box(rng, 1000, 20)  # no crop fits: central crop at the widest ratio
    assert (bottom - top, right - left) == (20, 27) and left == (1000 - 27) // 2


RANK_RTOL = 1e-5  # singular values below this fraction of the largest count as zero (far above round-off)


def test_pool_is_not_degenerate_for_a_random_conv_net(pool200):
    """Pooled features of 200 crops span all 64 channels of a random conv net (M̂ needs distinct references)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 64, 5, stride=4), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def features(images) -> torch.Tensor:
        batch = torch.stack([torch.from_numpy(np.array(image)).permute(2, 0, 1) for image in images])
        with torch.no_grad():
            return net(batch.float() / 255 - 0.5).double()  # float32 round-off ≪ RANK_RTOL

    def rank(matrix: torch.Tensor) -> int:
        return torch.linalg.matrix_rank(matrix, rtol=RANK_RTOL).item()

    pooled = features(decode_image(r) for r in pool200.records())
    assert pooled.shape == (200, 64)
    assert rank(pooled) == 64
    assert rank(pooled - pooled.mean(dim=0)) == 64  # full rank beyond the mean direction too
    # the check has teeth: two distinct images repeated give rank 2, and 200 crops of one blurred
    # grayscale photo fall short of 64 at this tolerance
    assert rank(pooled[[0, 1] * 100]) == 2
    clock = dict(reference_photos(("clock",)))["clock"]
    label = list(REFERENCE_PHOTOS).index("clock")
    one_photo = features(Image.open(io.BytesIO(demo.reference_crop(clock, 0, label, k))).convert("RGB")
                         for k in range(200))
    assert rank(one_photo) < 64


def test_the_demo_fits_expected_gradcam_at_full_rank(tmp_path):
    """The offline demo's reference pool gives rank(M̂) = K = 192, and Expected Grad-CAM's map is nonzero on
    every demo image (the regime of App. B, not a rank-4 fit to three photos): the job's stages in this process."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from jobs.evaluate import ReferenceFeaturizer, evaluate_in_process, features_by_pool, row_scores, supplied
    from jobs.plan import REFERENCE_COLUMNS, plan_cells, regime_warnings
    from jobs.spec import load_spec
    from storage.files import resolve
    from storage.results import RunStore

    spec = load_spec("demo", overrides={"methods": {"expected_gradcam": {}, "gradcam": {}},
                                        "metrics": {"cam_infidelity": {}, "sparseness": {}}})
    (plan,) = plan_cells(spec, "demo", str(tmp_path / "run"))
    assert not regime_warnings([plan])
    references = plan.references
    wanted = pa.array(references.ids)
    parts = [pq.read_table(resolve(f)[1], columns=REFERENCE_COLUMNS) for f in references.files.values()]
    rows = pa.concat_tables([t.filter(pc.is_in(t.column("image_id"), value_set=wanted)) for t in parts])
    featurizer = ReferenceFeaturizer(plan)
    table = pa.concat_tables([featurizer(rows.slice(start, 64)) for start in range(0, rows.num_rows, 64)])
    pool_of = {i: pool for pool, ids in references.pools.items() for i in ids}
    table = table.append_column("pool", pa.array([pool_of[i] for i in table.column("image_id").to_pylist()]))
    RunStore(plan.location).write_reference_features(plan.dataset, plan.architecture, table)
    features = features_by_pool(table)
    method = supplied(plan.methods["expected_gradcam"], features, plan.model.preprocessing.black)
    diagnostics = method.fit_diagnostics(features["fit"].shape[1])
    assert diagnostics.rank == diagnostics.channels == 192 and diagnostics.full_rank
    assert diagnostics.references == 240 and diagnostics.perturbations == 384
    output = evaluate_in_process(plan)
    maps = {r["image_id"]: np.frombuffer(r["map"], dtype="<f4") for r in output.to_pylist()
            if r["method"] == "expected_gradcam"}
    assert len(maps) == 2 and all(np.maximum(m, 0).max() > 0 for m in maps.values())
    # the full-rank weights, the infidelity optimum on the fit pool, fit held-out perturbations better too
    values = row_scores(output)
    for image in maps:
        assert values[(image, "expected_gradcam", "cam_infidelity")] < values[(image, "gradcam", "cam_infidelity")]
