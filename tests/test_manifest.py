"""Manifest format: round trip, schema validation naming the column, atomic writes, sampling."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

from storage.manifest import (
    MANIFEST_SCHEMA,
    ManifestError,
    ManifestSchemaError,
    boxes_to_mask,
    decode_mask,
    encode_mask,
    read_manifest,
    write_manifest,
)
from storage.sampling import SampleTooSmallError, allocate, select_stratified


def rows(n: int = 4, **overrides) -> pa.Table:
    base = {"dataset": ["d"] * n, "split": ["val"] * n, "image_id": [f"i{k}" for k in range(n)],
            "label": [k % 2 for k in range(n)], "label_name": [["a", "b"][k % 2] for k in range(n)],
            "image": [b"bytes"] * n, "image_uri": [None] * n, "mask": [None] * n, "boxes": [None] * n,
            "width": [4] * n, "height": [3] * n, "shard": [k // 2 for k in range(n)]}
    base.update(overrides)
    return pa.Table.from_pydict(base, schema=MANIFEST_SCHEMA)


def test_round_trip_with_metadata_and_one_file_per_shard(tmp_path):
    written = write_manifest(rows(), tmp_path / "m", class_names=["a", "b"], builder="t", builder_version="7",
                             sample={"n": 4})
    assert sorted(os.listdir(tmp_path / "m")) == ["part-00000.parquet", "part-00001.parquet"]
    assert sorted(os.listdir(tmp_path)) == ["m"]  # no staging directory left behind
    manifest = read_manifest(tmp_path / "m")
    assert manifest.table.equals(written.table.replace_schema_metadata(None))
    assert manifest.class_names == ("a", "b") and manifest.metadata["builder_version"] == "7"
    assert manifest.metadata["sample"] == {"n": 4} and manifest.shards == [0, 1]
    assert manifest.shard(1).column("image_id").to_pylist() == ["i2", "i3"]
    assert read_manifest("file://" + str(tmp_path / "m")).table.num_rows == 4


@pytest.mark.parametrize("change, message", [
    (lambda t: t.drop(["label"]), "missing column 'label'"),
    (lambda t: t.set_column(t.schema.get_field_index("label"), "label", pa.array(["x"] * 4)),
     "column 'label' has type string, expected int64"),
    (lambda t: t.set_column(t.schema.get_field_index("width"), "width", pa.array([4, None, 4, 4], pa.int32())),
     "column 'width' has null values"),
    (lambda t: t.set_column(t.schema.get_field_index("image"), "image", pa.array([b"x", None, b"x", b"x"])),
     "row 1 .*neither 'image' bytes nor an 'image_uri'"),
    (lambda t: t.set_column(t.schema.get_field_index("image_id"), "image_id", pa.array(["a", "b", "a", "c"])),
     "duplicate image_id 'a'"),
    (lambda t: t.slice(0, 0), "is empty"),
])
def test_reading_names_the_bad_column(tmp_path, change, message):
    import pyarrow.parquet as pq

    good = write_manifest(rows(), tmp_path / "m", class_names=["a", "b"], builder="t", builder_version="1")
    bad = change(good.table)
    os.remove(tmp_path / "m" / "part-00001.parquet")
    pq.write_table(bad, tmp_path / "m" / "part-00000.parquet")
    with pytest.raises(ManifestError, match=message):
        read_manifest(tmp_path / "m")


def test_a_failed_write_keeps_the_previous_manifest(tmp_path):
    write_manifest(rows(), tmp_path / "m", class_names=["a", "b"], builder="t", builder_version="1")
    with pytest.raises(ManifestError, match="labels span 0..1 but there are 1 class names"):
        write_manifest(rows(6), tmp_path / "m", class_names=["a"], builder="t", builder_version="2")
    with pytest.raises(ManifestSchemaError):
        write_manifest(rows(label=[0, 1, None, 0]), tmp_path / "m", class_names=["a", "b"], builder="t",
                       builder_version="2")
    assert len(read_manifest(tmp_path / "m")) == 4 and sorted(os.listdir(tmp_path)) == ["m"]
    write_manifest(rows(6), tmp_path / "m", class_names=["a", "b"], builder="t", builder_version="2")
    assert len(read_manifest(tmp_path / "m")) == 6 and len(os.listdir(tmp_path / "m")) == 3


def test_missing_and_empty_manifests(tmp_path):
    with pytest.raises(FileNotFoundError, match="no manifest at"):
        read_manifest(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ManifestError, match="empty"):
        read_manifest(tmp_path / "empty")


def test_mask_png_round_trip_and_box_rasterisation():
    mask = np.random.default_rng(0).random((7, 9)) > 0.5
    np.testing.assert_array_equal(decode_mask(encode_mask(mask)), mask)
    boxes = [{"xmin": 1.0, "ymin": 2.0, "xmax": 4.0, "ymax": 3.0}, {"xmin": -5, "ymin": 5.6, "xmax": 1.4, "ymax": 99}]
    raster = boxes_to_mask(boxes, width=6, height=8)
    expected = np.zeros((8, 6), dtype=bool)
    expected[2:3, 1:4] = True  # pixel centres 1.5, 2.5, 3.5 in x; 2.5 in y
    expected[6:8, 0:1] = True  # centre 0.5 in x; 6.5, 7.5 in y (clipped to the image)
    np.testing.assert_array_equal(raster, expected)


def test_allocate_water_fills_by_hand():
    assert allocate(10, {"a": 5, "b": 5}, seed=0) == {"a": 5, "b": 5}
    assert allocate(9, {"a": 1, "b": 10, "c": 10}, seed=0) == {"a": 1, "b": 4, "c": 4}
    quotas = allocate(7, {"a": 1, "b": 10, "c": 10}, seed=0)
    assert quotas["a"] == 1 and sorted([quotas["b"], quotas["c"]]) == [3, 3]
    assert sum(allocate(5, {"a": 3, "b": 3, "c": 3}, seed=1).values()) == 5
    with pytest.raises(SampleTooSmallError, match="12 images requested but only 9"):
        allocate(12, {"a": 3, "b": 3, "c": 3}, seed=0)


def test_selection_ignores_input_order_and_replaces_rejects_from_the_same_class():
    items = [(f"x{k}", k % 3) for k in range(30)]
    pick = dict(label=lambda item: item[1], key=lambda item: item[0], accept=lambda item: item)
    chosen = select_stratified(items, 9, seed=5, **pick)
    assert chosen == select_stratified(list(reversed(items)), 9, seed=5, **pick)
    assert np.bincount([c[1] for c in chosen]).tolist() == [3, 3, 3]
    rejected = {chosen[0][0]}
    replaced = select_stratified(items, 9, seed=5, label=pick["label"], key=pick["key"],
                                 accept=lambda item: None if item[0] in rejected else item)
    assert chosen[0] not in replaced and np.bincount([c[1] for c in replaced]).tolist() == [3, 3, 3]
    # a class that runs out passes its deficit to the others
    only_one = select_stratified(items, 9, seed=5, label=pick["label"], key=pick["key"],
                                 accept=lambda item: None if item[1] == 0 and item[0] != "x0" else item)
    assert len(only_one) == 9 and [c[1] for c in only_one].count(0) == 1
    with pytest.raises(SampleTooSmallError, match="only 20 usable images for the 25 requested"):
        select_stratified(items, 25, seed=5, label=pick["label"], key=pick["key"],
                          accept=lambda item: None if item[1] == 0 else item)


def _png(image) -> bytes:
    import io

    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def test_decoding_scales_16_bit_grayscale_and_follows_exif_orientation():
    from PIL import Image

    from storage.manifest import open_rgb

    ramp = (np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000).astype(np.uint16)
    sixteen = Image.fromarray(ramp)
    assert sixteen.mode == "I;16"
    decoded = np.asarray(open_rgb(_png(sixteen)))
    assert decoded.shape == (8, 8, 3) and decoded[..., 0].max() == round(63000 / 257)  # not clipped to white
    assert np.array_equal(decoded[..., 0], np.round(ramp / 257).astype(np.uint8))
    wide = Image.new("RGB", (6, 4), "red")
    exif = wide.getexif()
    exif[0x0112] = 6  # rotate 90° clockwise to show
    import io

    buffer = io.BytesIO()
    wide.save(buffer, format="JPEG", exif=exif)
    assert open_rgb(buffer.getvalue()).size == (4, 6)


def test_an_image_over_pillows_pixel_limit_is_a_recorded_skip(tmp_path, monkeypatch):
    from PIL import Image

    from storage.builders.common import Candidate, DatasetIndex, build_manifest

    small = _png(Image.new("RGB", (8, 8), "blue"))
    big = _png(Image.new("RGB", (64, 64), "blue"))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # 64² > 2 × 1000: Pillow refuses to decode it
    candidates = [Candidate("small", 0, "test", None, load=lambda: small),
                  Candidate("big", 0, "test", None, load=lambda: big)]
    manifest = build_manifest(DatasetIndex("d", ["c"], candidates, "src"), tmp_path / "m", n=None, builder="t",
                              builder_version="1")
    assert [r["image_id"] for r in manifest.records()] == ["small"]
    (skip,) = manifest.skipped
    assert skip["image_id"] == "big" and "over Pillow's pixel limit" in skip["reason"]
