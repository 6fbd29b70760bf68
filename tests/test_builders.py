"""Each manifest builder end to end on a tiny dataset in its real on-disk layout."""

from __future__ import annotations

import numpy as np
import pytest

import dataset_layouts as layouts
from storage.builders import BUILDERS, UnknownBuilderError, build, demo_manifest
from storage.manifest import ManifestError, decode_image, decode_mask, ground_truth_mask, read_manifest


def by_id(manifest) -> dict:
    return {record["image_id"]: record for record in manifest.records()}


def test_imagenet_labels_follow_sorted_wnids_and_boxes_come_from_the_xmls(tmp_path):
    expected = layouts.imagenet_val(tmp_path / "in")
    manifest = build("imagenet", tmp_path / "in", tmp_path / "m", n=None)
    assert manifest.class_names == tuple(expected["names"])
    records = by_id(manifest)
    assert {k: r["label"] for k, r in records.items()} == expected["labels"]
    first = records["ILSVRC2012_val_00000001"]
    assert first["label_name"] == "zeta thing"
    assert [tuple(b.values()) for b in first["boxes"]] == [(2, 3, 20, 25), (5, 5, 9, 9)]
    mask = ground_truth_mask(first)
    assert mask.shape == (30, 40) and mask[3:25, 2:20].all() and mask.sum() == 18 * 22
    assert decode_image(first).size == (40, 30)


def test_imagenet_missing_devkit_names_the_file(tmp_path):
    layouts.imagenet_val(tmp_path)
    (tmp_path / "ILSVRC2012_devkit_t12" / "data" / "ILSVRC2012_validation_ground_truth.txt").unlink()
    with pytest.raises(FileNotFoundError, match="validation ground truth.*ILSVRC2012_validation_ground_truth.txt"):
        build("imagenet", tmp_path, tmp_path / "m", n=4)


def test_cifar10_images_are_the_pickled_pixels(tmp_path):
    data = layouts.cifar10(tmp_path)
    manifest = build("cifar10", tmp_path, tmp_path / "m", n=None, shard_size=5)
    assert len(manifest) == 12 and manifest.shards == [0, 1, 2]
    record = by_id(manifest)["test_batch_00004"]
    assert record["label"] == 1 and record["label_name"] == "automobile"
    np.testing.assert_array_equal(np.asarray(decode_image(record)), data[4].reshape(3, 32, 32).transpose(1, 2, 0))
    with pytest.raises(ManifestError, match="embed=True"):
        build("cifar10", tmp_path, tmp_path / "m2", n=3, embed=False)


def test_coco_union_mask_of_polygons_and_crowd_rle(tmp_path):
    expected = layouts.coco(tmp_path)
    manifest = build("coco", tmp_path, tmp_path / "m", n=None, categories=["zebra"])
    records = by_id(manifest)
    assert sorted(records) == ["000000000007", "000000000008"]
    assert manifest.class_names == ("stop sign", "zebra", "giraffe")
    assert {r["label_name"] for r in records.values()} == {"zebra"}
    mask = decode_mask(records["000000000007"]["mask"])
    assert (mask & expected["crowd"]).sum() == expected["crowd"].sum()  # crowd region included exactly
    polygon = mask & ~expected["crowd"]
    assert polygon[4:10, 3:11].all() and not polygon[15:, :25].any()  # the rectangle polygon, nothing else
    assert abs(int(polygon.sum()) - 80) <= 20
    assert len(records["000000000007"]["boxes"]) == 2


def test_coco_category_errors(tmp_path):
    layouts.coco(tmp_path)
    with pytest.raises(ManifestError, match="no annotated images"):
        build("coco", tmp_path, tmp_path / "m", categories=["giraffe"])
    with pytest.raises(ManifestError, match="did you mean.*'zebra'"):
        build("coco", tmp_path, tmp_path / "m", categories=["zebras"])
    two = build("coco", tmp_path, tmp_path / "m", categories=["zebra", "stop sign"])
    assert sorted(by_id(two)) == ["000000000007#zebra", "000000000008#zebra", "000000000009#stop sign"]


def test_cub_majority_masks_and_a_missing_segmentation_is_a_recorded_skip(tmp_path):
    root = layouts.cub(tmp_path, missing_segmentation="001.Black_footed_Albatross/Black_footed_Albatross_0000")
    manifest = build("cub200", root, tmp_path / "m", n=None)
    records = by_id(manifest)
    assert len(records) == 5 and "Black_footed_Albatross_0000" not in records  # 6 test images, one skipped
    assert [s["image_id"] for s in manifest.skipped] == ["Black_footed_Albatross_0000"]
    assert "missing mask file" in manifest.skipped[0]["reason"]
    assert manifest.class_names == ("Black footed Albatross", "Laysan Albatross")
    mask = decode_mask(records["Laysan_Albatross_0001"]["mask"])
    expected = np.zeros((30, 40), dtype=bool)
    expected[5:15, 10:30] = True
    np.testing.assert_array_equal(mask, expected)
    with pytest.raises(ManifestError, match="only 5 usable images for the 6 requested"):
        build("cub200", root, tmp_path / "m2", n=6)


def test_cub_without_segmentations_folder_is_an_error(tmp_path):
    root = layouts.cub(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "segmentations")
    with pytest.raises(FileNotFoundError, match="CUB segmentations folder"):
        build("cub200", root, tmp_path / "m", n=2)


def test_pets_trimap_mask_keeps_the_boundary(tmp_path):
    layouts.pets(tmp_path)
    manifest = build("oxford_pets", tmp_path, tmp_path / "m", n=None)
    assert manifest.class_names == ("Abyssinian", "american bulldog")
    mask = decode_mask(by_id(manifest)["american_bulldog_2"]["mask"])
    assert mask.sum() == 100 and mask[10:20, 10:20].all()
    assert by_id(manifest)["american_bulldog_2"]["label"] == 1


def test_flowers_mask_is_the_non_blue_region(tmp_path):
    layouts.flowers(tmp_path)
    manifest = build("flowers102", tmp_path, tmp_path / "m", n=None)
    records = by_id(manifest)
    assert sorted(records) == ["image_00003", "image_00004", "image_00005"]
    assert records["image_00004"]["label"] == 2 and len(manifest.class_names) == 102
    mask = decode_mask(records["image_00003"]["mask"])
    expected = np.zeros((30, 40), dtype=bool)
    expected[8:22, 10:30] = True
    assert (mask != expected).sum() <= 8  # JPEG ringing at the edge only


def test_stanford_dogs_boxes_and_names(tmp_path):
    layouts.dogs(tmp_path)
    manifest = build("stanford_dogs", tmp_path, tmp_path / "m", n=None)
    assert manifest.class_names == ("Chihuahua", "Japanese spaniel")
    record = by_id(manifest)["n02085782_3"]
    assert record["label"] == 1 and [tuple(b.values()) for b in record["boxes"]] == [(3, 4, 23, 25)]


def test_aircraft_variants_with_slashes(tmp_path):
    layouts.aircraft(tmp_path)
    manifest = build("fgvc_aircraft", tmp_path / "fgvc-aircraft-2013b", tmp_path / "m", n=3)
    assert len(manifest) == 3 and sorted(r["label_name"] for r in manifest.records()) == ["707-320", "A300B4",
                                                                                          "F-16A/B"]


def test_folder_records_corrupt_images_and_empty_classes(tmp_path):
    root = tmp_path / "mine"
    for index in range(3):
        layouts.write_image(root / "cats" / f"c{index}.jpg", seed=index)
        layouts.write_image(root / "dogs" / "nested" / f"d{index}.png", seed=10 + index)
    layouts.write_corrupt(root / "dogs" / "broken.jpg")
    (root / "zebras").mkdir()
    manifest = build("folder", root, tmp_path / "m", n=None)
    assert manifest.class_names == ("cats", "dogs", "zebras")
    assert len(manifest) == 6
    reasons = {s["image_id"] or s["source"]: s["reason"] for s in manifest.skipped}
    assert reasons["dogs/broken"].startswith("corrupt image")
    assert any("'zebras' has no images" in r for r in reasons.values())
    assert by_id(manifest)["dogs/nested/d1"]["label"] == 1


def test_referenced_images_are_read_through_their_uri(tmp_path):
    layouts.aircraft(tmp_path)
    manifest = build("fgvc_aircraft", tmp_path / "fgvc-aircraft-2013b", tmp_path / "m", n=None, embed=False)
    record = next(manifest.records())
    assert record["image"] is None and record["image_uri"].endswith(".jpg")
    assert decode_image(record).size == (40, 30)
    uri_record = dict(record, image_uri="file://" + record["image_uri"])
    assert decode_image(uri_record).size == (40, 30)


def test_unknown_builder_suggests_a_name(tmp_path):
    with pytest.raises(UnknownBuilderError, match="did you mean 'cifar10'"):
        build("cifar-10", tmp_path, tmp_path / "m")


def test_sampling_is_stratified_and_deterministic(tmp_path):
    layouts.cifar10(tmp_path, rows=30)  # 10 images in each of 3 classes
    first = build("cifar10", tmp_path, tmp_path / "a", n=7, seed=3)
    again = build("cifar10", tmp_path, tmp_path / "b", n=7, seed=3)
    other = build("cifar10", tmp_path, tmp_path / "c", n=7, seed=4)
    ids = [r["image_id"] for r in first.records()]
    assert ids == [r["image_id"] for r in again.records()]
    assert ids != [r["image_id"] for r in other.records()]
    counts = np.bincount(first.table.column("label").to_numpy(), minlength=3)
    assert sorted(counts) == [2, 2, 3]


def test_demo_manifest_has_exact_masks_and_imagenet_labels(tmp_path):
    manifest = demo_manifest(tmp_path / "demo")
    assert len(manifest.class_names) == 1000
    synthetic = [r for r in manifest.records() if r["split"] == "synthetic"]
    photos = [r for r in manifest.records() if r["split"] == "photos"]
    assert len(synthetic) == 9 and {r["image_id"] for r in photos} == {"chelsea", "coffee", "rocket"}
    for record in synthetic:
        mask, image = decode_mask(record["mask"]), np.asarray(decode_image(record)).astype(int)
        rows, cols = np.nonzero(mask)
        assert mask.sum() == (np.ptp(rows) + 1) * (np.ptp(cols) + 1)  # one solid rectangle
        texture = image[~mask]
        assert (texture[:, 0] == texture[:, 1]).all() and (texture[:, 1] == texture[:, 2]).all()  # grey outside
        assert (image[mask].std(axis=1) > 0).mean() > 0.5  # the colour photo inside
    assert read_manifest(tmp_path / "demo").metadata["builder"] == "demo"
    assert sorted(BUILDERS) == sorted(["imagenet", "cifar10", "coco", "cub200", "oxford_pets", "flowers102",
                                       "stanford_dogs", "fgvc_aircraft", "folder", "demo"])
