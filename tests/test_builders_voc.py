"""The PASCAL VOC2007 builder on a tiny VOCdevkit written in the real layout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from dataset_layouts import write_image
from PIL import Image

from storage.builders import build
from storage.builders.voc import CLASSES
from storage.manifest import ManifestError, decode_image, decode_mask, ground_truth_mask, read_manifest

W, H = 40, 30

# image id → objects (name, (xmin, ymin, xmax, ymax) 1-based inclusive, difficult)
TEST_IMAGES = {
    "000001": [("dog", (3, 4, 12, 10), 0), ("person", (26, 1, 40, 30), 0)],
    "000002": [("cat", (2, 2, 30, 25), 0), ("cat", (5, 5, 8, 8), 1)],
    "000003": [("bird", (10, 10, 15, 15), 1), ("person", (1, 1, 20, 30), 0)],
    "000004": [("car", (1, 1, 10, 10), 0)],
    "000005": [("car", (2, 2, 20, 20), 0)],  # its JPEG is missing
    "000007": [("dog", (1, 1, 20, 10), 0), ("dog", (1, 11, 20, 20), 0), ("person", (30, 1, 40, 30), 0)],
}
TRAIN_IMAGES = {"000006": [("horse", (5, 5, 30, 25), 0)]}
VAL_IMAGES = {"000008": [("sheep", (1, 1, 10, 10), 0)]}


def annotation_xml(image_id: str, objects: list) -> str:
    body = "".join(
        f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated><difficult>{hard}</difficult>"
        f"<bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"
        for name, b, hard in objects)
    return (f"<annotation><folder>VOC2007</folder><filename>{image_id}.jpg</filename>"
            f"<source><database>The VOC2007 Database</database></source>"
            f"<size><width>{W}</width><height>{H}</height><depth>3</depth></size><segmented>0</segmented>"
            f"{body}</annotation>")


def voc_palette() -> list[int]:
    """The VOC colour map (bit-interleaved class index), as SegmentationClass PNGs carry it."""
    palette = []
    for index in range(256):
        r = g = b = 0
        c = index
        for bit in range(8):
            r |= ((c >> 0) & 1) << (7 - bit)
            g |= ((c >> 1) & 1) << (7 - bit)
            b |= ((c >> 2) & 1) << (7 - bit)
            c >>= 3
        palette += [r, g, b]
    return palette


def segmentation_000001() -> np.ndarray:
    """Class indices of 000001: a dog (12) ringed by the void border (255), a person (15)."""
    seg = np.zeros((H, W), dtype=np.uint8)
    seg[2:11, 1:13] = 255
    seg[3:10, 2:12] = CLASSES.index("dog") + 1
    seg[:, 25:] = CLASSES.index("person") + 1
    return seg


def write_voc2007(base: Path) -> Path:
    """A VOCdevkit under ``base``; returns ``base`` (the folder holding ``VOCdevkit``)."""
    voc = base / "VOCdevkit" / "VOC2007"
    for folder in ("Annotations", "ImageSets/Main", "ImageSets/Segmentation", "SegmentationClass"):
        (voc / folder).mkdir(parents=True, exist_ok=True)
    everything = {**TEST_IMAGES, **TRAIN_IMAGES, **VAL_IMAGES}
    for seed, (image_id, objects) in enumerate(sorted(everything.items())):
        (voc / "Annotations" / f"{image_id}.xml").write_text(annotation_xml(image_id, objects))
        if image_id != "000005":
            write_image(voc / "JPEGImages" / f"{image_id}.jpg", (W, H), seed=seed)
    lists = {"test": TEST_IMAGES, "train": TRAIN_IMAGES, "val": VAL_IMAGES, "trainval": {**TRAIN_IMAGES, **VAL_IMAGES}}
    for split, images in lists.items():
        (voc / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in sorted(images)))
    for name in ("dog", "person"):
        rows = [f"{i} {1 if any(o[0] == name for o in TEST_IMAGES[i]) else -1}" for i in sorted(TEST_IMAGES)]
        (voc / "ImageSets" / "Main" / f"{name}_test.txt").write_text("\n".join(rows) + "\n")
    (voc / "ImageSets" / "Segmentation" / "test.txt").write_text("000001\n")
    (voc / "ImageSets" / "Segmentation" / "train.txt").write_text("000006\n")  # its PNG is not there
    image = Image.fromarray(segmentation_000001())
    image.putpalette(voc_palette())
    image.save(voc / "SegmentationClass" / "000001.png")
    return base


@pytest.fixture
def voc_root(tmp_path) -> Path:
    return write_voc2007(tmp_path / "data")


def by_id(manifest) -> dict:
    return {record["image_id"]: record for record in manifest.records()}


def boxes(record) -> list[tuple]:
    return [tuple(box.values()) for box in record["boxes"]]


DEFAULT_ROWS = {"000001.dog", "000001.person", "000002.cat", "000003.person", "000004.car", "000007.dog",
                "000007.person"}


def test_a_row_per_image_and_class_with_boxes_in_manifest_coordinates(voc_root, tmp_path):
    manifest = build("voc2007", voc_root, tmp_path / "m", n=None)
    records = by_id(manifest)
    assert set(records) == DEFAULT_ROWS
    assert manifest.class_names == CLASSES and len(CLASSES) == 20
    assert {r["dataset"] for r in records.values()} == {"voc2007"}
    assert {r["split"] for r in records.values()} == {"test"}
    assert {i: (r["label"], r["label_name"]) for i, r in records.items()} == {
        i: (CLASSES.index(i.split(".")[1]), i.split(".")[1]) for i in DEFAULT_ROWS}
    assert boxes(records["000001.dog"]) == [(2, 3, 12, 10)]
    assert boxes(records["000001.person"]) == [(25, 0, 40, 30)]
    assert boxes(records["000007.dog"]) == [(0, 0, 20, 10), (0, 10, 20, 20)]
    assert boxes(records["000002.cat"]) == [(1, 1, 30, 25), (4, 4, 8, 8)]  # the difficult cat's box too
    cat = ground_truth_mask(records["000002.cat"])  # no segmentation: the boxes, rasterised
    expected = np.zeros((H, W), dtype=bool)
    expected[1:25, 1:30] = True  # VOC's rows 2..25 and columns 2..30, 0-based
    np.testing.assert_array_equal(cat, expected)
    assert decode_image(records["000003.person"]).size == (W, H)
    assert [(s["image_id"], s["reason"].split(":")[0]) for s in manifest.skipped] == [
        ("000005.car", "missing image file")]
    assert read_manifest(tmp_path / "m").metadata["source"] == str(voc_root / "VOCdevkit" / "VOC2007")


def test_masks_are_the_class_pixels_without_the_void_border(voc_root, tmp_path):
    records = by_id(build("voc2007", voc_root, tmp_path / "m", n=None))
    seg = segmentation_000001()
    dog = decode_mask(records["000001.dog"]["mask"])
    np.testing.assert_array_equal(dog, seg == 12)
    assert dog.sum() == 7 * 10 and not dog[seg == 255].any()
    np.testing.assert_array_equal(decode_mask(records["000001.person"]["mask"]), seg == 15)
    assert all(records[i]["mask"] is None for i in DEFAULT_ROWS - {"000001.dog", "000001.person"})


def test_classes_with_only_difficult_objects_are_rows_only_on_request(voc_root, tmp_path):
    with_difficult = by_id(build("voc2007", voc_root, tmp_path / "m", n=None, difficult=True))
    assert set(with_difficult) == DEFAULT_ROWS | {"000003.bird"}
    assert with_difficult["000003.bird"]["label"] == CLASSES.index("bird")
    assert boxes(with_difficult["000003.bird"]) == [(9, 9, 15, 15)]
    assert boxes(with_difficult["000002.cat"]) == [(1, 1, 30, 25), (4, 4, 8, 8)]


def test_the_difficult_subset_is_small_objects_next_to_a_distractor(voc_root, tmp_path):
    difficult = build("voc2007", voc_root, tmp_path / "m", n=None, subset="difficult")
    # 000001.dog: 70 px of 1200 next to a person; 000007.dog: two boxes of 200 px, 400 in total, is not
    # small; 000004.car is small but alone; 000001.person, 000002.cat and 000003.person are large
    assert set(by_id(difficult)) == {"000001.dog"}
    assert decode_mask(by_id(difficult)["000001.dog"]["mask"]).sum() == 70
    with_difficult = build("voc2007", voc_root, tmp_path / "m2", n=None, subset="difficult", difficult=True)
    assert set(by_id(with_difficult)) == {"000001.dog", "000003.bird"}


@pytest.mark.parametrize("relative", ["", "VOCdevkit", "VOCdevkit/VOC2007"])
def test_the_root_may_hold_vocdevkit_be_it_or_be_voc2007(voc_root, tmp_path, relative):
    manifest = build("voc2007", voc_root / relative, tmp_path / "m", n=None)
    assert set(by_id(manifest)) == DEFAULT_ROWS


def test_a_root_without_voc2007_names_the_three_places_looked_at(tmp_path):
    (tmp_path / "elsewhere").mkdir()
    with pytest.raises(FileNotFoundError) as raised:
        build("voc2007", tmp_path / "elsewhere", tmp_path / "m")
    message = str(raised.value)
    assert "\n" not in message and "no VOC2007 folder" in message
    for place in ("elsewhere,", "elsewhere/VOC2007", "elsewhere/VOCdevkit/VOC2007"):
        assert place in message


@pytest.mark.parametrize("text, field", [
    ("<annotation><object><name>dog</name>", "is not valid XML"),
    (annotation_xml("000002", [("cat", (2, 2, 30, 25), 0)]).replace("<xmin>2</xmin>", "<xmin>two</xmin>"),
     "object 1 <bndbox> <xmin> is 'two', not a number"),
    (annotation_xml("000002", [("cat", (2, 2, 30, 25), 0)]).replace("<ymax>25</ymax>", ""),
     "object 1 <bndbox> <ymax> is missing"),
    (annotation_xml("000002", [("cat", (2, 2, 30, 25), 0)]).replace("<difficult>0", "<difficult>2"),
     "object 1 <difficult> is 2, not 0 or 1"),
    (annotation_xml("000002", [("doge", (2, 2, 30, 25), 0)]), "object 1 <name> 'doge' is not one of the 20 VOC"),
    (annotation_xml("000002", [("cat", (2, 2, 30, 25), 0)]).replace("<height>30</height>", ""),
     "<size> <height> is missing"),
])
def test_a_malformed_annotation_is_a_one_line_error_naming_file_and_field(voc_root, tmp_path, text, field):
    (voc_root / "VOCdevkit" / "VOC2007" / "Annotations" / "000002.xml").write_text(text)
    with pytest.raises(ManifestError) as raised:
        build("voc2007", voc_root, tmp_path / "m")
    message = str(raised.value)
    assert "\n" not in message and "Annotations/000002.xml" in message and field in message


def test_a_missing_annotation_file_is_named(voc_root, tmp_path):
    (voc_root / "VOCdevkit" / "VOC2007" / "Annotations" / "000003.xml").unlink()
    with pytest.raises(FileNotFoundError, match="missing VOC2007 annotation: .*Annotations/000003.xml"):
        build("voc2007", voc_root, tmp_path / "m")


def test_a_listed_segmentation_that_is_missing_skips_a_test_row_but_not_a_train_row(voc_root, tmp_path):
    (voc_root / "VOCdevkit" / "VOC2007" / "ImageSets" / "Segmentation" / "test.txt").write_text("000001\n000004\n")
    test = build("voc2007", voc_root, tmp_path / "test", n=None)
    assert "000004.car" not in by_id(test)
    reasons = {s["image_id"]: s["reason"] for s in test.skipped}
    assert set(reasons) == {"000004.car", "000005.car"} and "missing mask file" in reasons["000004.car"]
    train = build("voc2007", voc_root, tmp_path / "train", split="train", n=None)
    assert {i: (r["split"], r["mask"]) for i, r in by_id(train).items()} == {"000006.horse": ("train", None)}
    assert read_manifest(tmp_path / "train").metadata["sample"]["require_masks"] is False


def test_splits_subsets_and_stratified_sampling(voc_root, tmp_path):
    trainval = build("voc2007", voc_root, tmp_path / "tv", split="trainval", n=None)
    assert set(by_id(trainval)) == {"000006.horse", "000008.sheep"}
    assert set(by_id(build("voc2007", voc_root, tmp_path / "v", split="val", n=None))) == {"000008.sheep"}
    with pytest.raises(ManifestError, match=r"^PASCAL VOC2007 split 'tset' unknown; choose from train, val, "
                                            r"trainval, test$"):
        build("voc2007", voc_root, tmp_path / "m", split="tset")
    with pytest.raises(ManifestError, match="subset 'hard' unknown; choose from all, difficult"):
        build("voc2007", voc_root, tmp_path / "m", subset="hard")
    first = build("voc2007", voc_root, tmp_path / "a", n=3, seed=1)
    again = build("voc2007", voc_root, tmp_path / "b", n=3, seed=1)
    assert [r["image_id"] for r in first.records()] == [r["image_id"] for r in again.records()]
    assert len({r["label"] for r in first.records()}) == 3  # one row from each of three classes
    referenced = by_id(build("voc2007", voc_root, tmp_path / "r", n=None, embed=False))
    record = referenced["000001.dog"]
    assert record["image"] is None and record["image_uri"].endswith("VOC2007/JPEGImages/000001.jpg")


def test_the_cli_builds_the_difficult_subset_and_refuses_voc_options_elsewhere(voc_root, tmp_path):
    from click.testing import CliRunner

    from jobs.cli import main
    from storage.manifest import read_manifest

    out = tmp_path / "difficult"
    result = CliRunner().invoke(main, ["manifest", "build", "voc2007", str(voc_root), "--out", str(out),
                                       "--subset", "difficult"])
    assert result.exit_code == 0, result.output
    assert sorted(read_manifest(out).table.column("image_id").to_pylist()) == ["000001.dog"]
    refused = CliRunner().invoke(main, ["manifest", "build", "demo", "--out", str(tmp_path / "d"), "--subset", "all"])
    assert refused.exit_code != 0 and "only voc2007 takes --subset" in refused.output
