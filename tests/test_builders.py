"""Each manifest builder end to end on a tiny dataset in its real on-disk layout."""

from __future__ import annotations

import dataset_layouts as layouts
import numpy as np
import pytest

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


class _Payload:
    """Unpickling this runs ``os.system``: what a crafted batch file would do."""

    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


def test_cifar10_batches_are_read_as_data_never_as_code(tmp_path, monkeypatch):
    import pickle

    layouts.cifar10(tmp_path)
    monkeypatch.chdir(tmp_path)
    with open(tmp_path / "cifar-10-batches-py" / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [b"a"], b"num_vis": _Payload()}, handle)
    with pytest.raises(ManifestError, match=r"batches.meta is not a readable data pickle: .*posix.system|os.system"):
        build("cifar10", tmp_path, tmp_path / "m", n=None)
    assert not (tmp_path / "pwned").exists()


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


def test_folder_images_that_differ_only_in_extension_keep_it_in_their_ids(tmp_path):
    root = tmp_path / "mine"
    layouts.write_image(root / "cats" / "x.jpg", seed=1)
    layouts.write_image(root / "cats" / "x.png", seed=2)
    layouts.write_image(root / "cats" / "y.png", seed=3)
    manifest = build("folder", root, tmp_path / "m", n=None)
    assert sorted(by_id(manifest)) == ["cats/x.jpg", "cats/x.png", "cats/y"]


def test_referenced_images_are_read_through_their_uri(tmp_path):
    layouts.aircraft(tmp_path)
    manifest = build("fgvc_aircraft", tmp_path / "fgvc-aircraft-2013b", tmp_path / "m", n=None, embed=False)
    record = next(manifest.records())
    assert record["image"] is None and record["image_uri"].endswith(".jpg")
    assert decode_image(record).size == (40, 30)
    uri_record = dict(record, image_uri="file://" + record["image_uri"])
    assert decode_image(uri_record).size == (40, 30)


def _layout(name: str, root):
    """Write builder ``name``'s fixture at ``root``: (dataset root, its evaluation split, build options)."""
    if name == "imagenet":
        layouts.imagenet_val(root)
        layouts.imagenet_train(root)
        return root, "val", {}
    if name == "cub200":
        return layouts.cub(root), "test", {}
    if name == "fgvc_aircraft":
        layouts.aircraft(root)
        return root / "fgvc-aircraft-2013b", "test", {}
    write = {"cifar10": layouts.cifar10, "mnist": layouts.mnist, "coco": layouts.coco, "oxford_pets": layouts.pets,
             "flowers102": layouts.flowers, "stanford_dogs": layouts.dogs, "folder": layouts.image_folder_splits}
    write[name](root)
    return root, "val" if name == "coco" else "test", {"categories": ["zebra"]} if name == "coco" else {}


@pytest.mark.parametrize("name", sorted(layouts.TRAIN_IDS))
def test_every_builder_builds_its_train_split_apart_from_its_evaluation_split(tmp_path, name):
    root, evaluation_split, options = _layout(name, tmp_path / "data")
    train = build(name, root, tmp_path / "train", split="train", n=None, **options)
    evaluation = build(name, root, tmp_path / "eval", split=evaluation_split, n=None, **options)
    recorded = "trainval" if name == "oxford_pets" else "train"  # Pets' training split is trainval
    train_ids = set(by_id(train))
    assert train_ids == layouts.TRAIN_IDS[name]
    assert set(train.table.column("split").to_pylist()) == {recorded}
    assert set(evaluation.table.column("split").to_pylist()) == {evaluation_split} and len(evaluation) > 0
    assert not train_ids & set(by_id(evaluation))
    assert train.class_names == evaluation.class_names
    stored = read_manifest(tmp_path / "train").metadata["sample"]
    assert stored["split"] == recorded and stored["require_masks"] is False
    assert read_manifest(tmp_path / "eval").metadata["sample"] | {"candidates": 0} == {
        "split": evaluation_split, "n": None, "seed": 0, "candidates": 0, "require_masks": True}
    sampled = build(name, root, tmp_path / "two", split="train", n=2, **options)
    assert len(sampled) == 2 and set(by_id(sampled)) <= train_ids


@pytest.mark.parametrize("name, missing", [("cub200", "Black_footed_Albatross_0006"),
                                           ("oxford_pets", "american_bulldog_3"), ("flowers102", "image_00006")])
def test_train_images_without_a_mask_are_kept_without_one(tmp_path, name, missing):
    if name == "cub200":
        root = layouts.cub(tmp_path, missing_segmentation=f"001.Black_footed_Albatross/{missing}")
    elif name == "oxford_pets":
        root = tmp_path
        layouts.pets(root, missing_trimap=missing)
    else:
        root = tmp_path
        layouts.flowers(root, missing_segmentation=6)
    records = by_id(build(name, root, tmp_path / "train", split="train", n=None))
    assert records[missing]["mask"] is None and records[missing]["width"] == 40
    assert all(r["mask"] is not None for image_id, r in records.items() if image_id != missing)
    assert read_manifest(tmp_path / "train").skipped == []
    strict = build(name, root, tmp_path / "strict", split="train", n=None, require_masks=True)
    assert missing not in by_id(strict) and [s["image_id"] for s in strict.skipped] == [missing]
    assert "missing mask file" in strict.skipped[0]["reason"]


def test_a_train_split_needs_no_segmentation_folder_but_a_test_split_does(tmp_path):
    import shutil

    cub = layouts.cub(tmp_path / "cub")
    shutil.rmtree(tmp_path / "cub" / "segmentations")
    train = build("cub200", cub, tmp_path / "m1", split="train", n=None)
    assert len(train) == 3 and all(r["mask"] is None for r in train.records())
    assert all(r["boxes"] for r in train.records())  # the boxes are still there
    with pytest.raises(FileNotFoundError, match="CUB segmentations folder"):
        build("cub200", cub, tmp_path / "m2", split="test")
    layouts.flowers(tmp_path / "flowers")
    shutil.rmtree(tmp_path / "flowers" / "segmim")
    trainval = build("flowers102", tmp_path / "flowers", tmp_path / "m3", split="trainval", n=None)
    assert sorted(by_id(trainval)) == ["image_00001", "image_00002", "image_00006", "image_00007"]
    assert all(r["mask"] is None for r in trainval.records())
    with pytest.raises(FileNotFoundError, match="segmim"):
        build("flowers102", tmp_path / "flowers", tmp_path / "m4", split="test")


def test_imagenet_train_shares_the_val_label_space(tmp_path):
    expected = layouts.imagenet_val(tmp_path)
    wnids = layouts.imagenet_train(tmp_path)["wnids"]
    val = build("imagenet", tmp_path, tmp_path / "val", n=None)
    train = build("imagenet", tmp_path, tmp_path / "train", split="train", n=None)
    assert train.class_names == val.class_names == tuple(expected["names"])
    val_label = {expected["wnids"][image_id]: r["label"] for image_id, r in by_id(val).items()}
    assert len(val_label) == 4 and val_label["n03000000"] == 2  # zeta thing: ILSVRC2012_ID 1, third in WNID order
    records = by_id(train)
    assert {image_id: r["label"] for image_id, r in records.items()} == {i: val_label[w] for i, w in wnids.items()}
    assert {r["label_name"] for r in records.values()} == {"alpha thing", "beta thing", "zeta thing"}
    assert [tuple(b.values()) for b in records["n03000000_7"]["boxes"]] == [(4, 6, 30, 28)]
    assert records["n03000000_1"]["boxes"] is None and decode_image(records["n01000000_2"]).size == (40, 30)
    assert [s["reason"] for s in train.skipped] == ["class n04000000 (omega thing) has no training images"]


def test_imagenet_train_layout_errors(tmp_path):
    layouts.imagenet_val(tmp_path)
    with pytest.raises(FileNotFoundError, match="no train/ folder"):
        build("imagenet", tmp_path, tmp_path / "m", split="train")
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "n01000000.tar").write_bytes(b"")  # the per-class archives, still packed
    with pytest.raises(ManifestError, match="unpack each into its <wnid>/ folder"):
        build("imagenet", tmp_path, tmp_path / "m", split="train")
    layouts.write_image(tmp_path / "train" / "n05555555" / "n05555555_1.JPEG")
    with pytest.raises(ManifestError, match="'n05555555' is not one of the devkit's 1000 leaf synsets"):
        build("imagenet", tmp_path, tmp_path / "m", split="train")


def test_folder_split_folders_share_one_label_space(tmp_path):
    layouts.image_folder_splits(tmp_path / "data")
    test = build("folder", tmp_path / "data", tmp_path / "m", split="test", n=None)
    assert test.class_names == ("cats", "dogs", "zebras") and by_id(test)["test/dogs/d1"]["label"] == 1
    assert [s["reason"] for s in test.skipped] == ["class 'zebras' has no images"]
    with pytest.raises(ManifestError, match="holds split folders \\(test, train\\).*split 'test'"):
        build("folder", tmp_path / "data", tmp_path / "m2")


@pytest.mark.parametrize("name, dataset, allowed", [
    ("imagenet", "ILSVRC2012", "val, train"), ("cifar10", "CIFAR-10", "test, train"), ("mnist", "MNIST", "test, train"),
    ("coco", "COCO 2017", "val, train"),
    ("cub200", "CUB-200-2011", "train, test, all"), ("oxford_pets", "Oxford-IIIT Pet", "train (= trainval), trainval, test, all"),
    ("flowers102", "Flowers-102", "train, val, trainval, test, all"), ("stanford_dogs", "Stanford Dogs", "train, test"),
    ("fgvc_aircraft", "FGVC-Aircraft", "train, val, trainval, test"), ("folder", "ImageFolder", "all, test, train")])
def test_an_unknown_split_names_the_dataset_and_its_splits(tmp_path, name, dataset, allowed):
    if name == "folder":
        layouts.image_folder_splits(tmp_path)
    with pytest.raises(ManifestError) as raised:
        build(name, tmp_path, tmp_path / "m", split="tset")
    message = str(raised.value)
    assert "\n" not in message and message.startswith(dataset) and "'tset' unknown" in message
    assert message.endswith(f"choose from {allowed}")


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
    assert set(layouts.TRAIN_IDS) | {"demo"} <= set(BUILDERS)


@pytest.mark.parametrize("name", ["oxford_pets", "flowers102"])
def test_every_split_at_once_is_a_reference_source(tmp_path, name):
    # Pets and Flowers have fewer training images than 3K = 6144: their reference source is the whole
    # dataset, from which the job never draws an explained image
    root, evaluation_split, options = _layout(name, tmp_path / "data")
    everything = build(name, root, tmp_path / "all", split="all", n=None, **options)
    train = build(name, root, tmp_path / "train", split="train", n=None, **options)
    evaluation = build(name, root, tmp_path / "eval", split=evaluation_split, n=None, **options)
    assert set(by_id(everything)) >= set(by_id(train)) | set(by_id(evaluation))
    assert read_manifest(tmp_path / "all").metadata["sample"]["require_masks"] is False
