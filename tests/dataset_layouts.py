"""Tiny datasets written in each real on-disk layout (real annotation file formats, generated images)."""

from __future__ import annotations

import gzip
import json
import pickle
from pathlib import Path

import numpy as np
from PIL import Image
from scipy.io import savemat


def write_image(path: Path, size: tuple[int, int] = (40, 30), seed: int = 0, fmt: str | None = None) -> Path:
    """A random RGB image of ``size`` (width, height)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt or ("JPEG" if path.suffix.lower() in (".jpg", ".jpeg") else None))
    return path


def write_corrupt(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\xff\xd8\xff\xe0 this is not really a JPEG")
    return path


def voc_xml(boxes: list[tuple[str, tuple[int, int, int, int]]], size: tuple[int, int]) -> str:
    objects = "".join(f"<object><name>{name}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin>"
                      f"<xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>" for name, b in boxes)
    return (f"<annotation><size><width>{size[0]}</width><height>{size[1]}</height><depth>3</depth></size>"
            f"{objects}</annotation>")


def imagenet_val(root: Path) -> dict:
    """Four leaf synsets whose ILSVRC2012_IDs are *not* in sorted-WNID order, one parent synset, 8 images."""
    leaves = [(1, "n03000000", "zeta thing, zed"), (2, "n01000000", "alpha thing"),
              (3, "n04000000", "omega thing"), (4, "n02000000", "beta thing, b")]
    dtype = [("ILSVRC2012_ID", "O"), ("WNID", "O"), ("words", "O"), ("gloss", "O"), ("num_children", "O"),
             ("wordnet_height", "O"), ("num_train_images", "O")]
    rows = [(i, w, words, "gloss", 0, 0, 1300) for i, w, words in leaves] + [(5, "n09999999", "parent", "g", 4, 1, 0)]
    devkit = root / "ILSVRC2012_devkit_t12" / "data"
    devkit.mkdir(parents=True)
    savemat(devkit / "meta.mat", {"synsets": np.array(rows, dtype=dtype)})
    truth = [1, 2, 3, 4, 1, 2, 3, 4]
    (devkit / "ILSVRC2012_validation_ground_truth.txt").write_text("\n".join(map(str, truth)) + "\n")
    boxes = root / "ILSVRC2012_bbox_val_v3" / "val"
    boxes.mkdir(parents=True)
    for number, synset in enumerate(truth, 1):
        stem = f"ILSVRC2012_val_{number:08d}"
        write_image(root / "ILSVRC2012_img_val" / f"{stem}.JPEG", seed=number, fmt="JPEG")
        wnid = leaves[synset - 1][1]
        (boxes / f"{stem}.xml").write_text(voc_xml([(wnid, (2, 3, 20, 25)), (wnid, (5, 5, 9, 9))], (40, 30)))
    # sorted WNIDs: n01 (alpha) → 0, n02 (beta) → 1, n03 (zeta) → 2, n04 (omega) → 3
    return {"labels": {f"ILSVRC2012_val_{n:08d}": [2, 0, 3, 1][s - 1] for n, s in enumerate(truth, 1)},
            "names": ["alpha thing", "beta thing", "zeta thing", "omega thing"],
            "wnids": {f"ILSVRC2012_val_{n:08d}": leaves[s - 1][1] for n, s in enumerate(truth, 1)}}


def imagenet_train(root: Path) -> dict:
    """The extracted ILSVRC2012_img_train.tar next to :func:`imagenet_val`'s devkit: three of its four
    synsets (n04000000 has no folder), boxes for one image in ILSVRC2012_bbox_train_v2/<wnid>/."""
    images = {"n03000000": [1, 7], "n01000000": [2, 3], "n02000000": [5]}
    for seed, (wnid, numbers) in enumerate(sorted(images.items())):
        for number in numbers:
            write_image(root / "train" / wnid / f"{wnid}_{number}.JPEG", seed=100 + seed + number, fmt="JPEG")
    boxes = root / "ILSVRC2012_bbox_train_v2" / "n03000000"
    boxes.mkdir(parents=True)
    (boxes / "n03000000_7.xml").write_text(voc_xml([("n03000000", (4, 6, 30, 28))], (40, 30)))
    return {"wnids": {f"{wnid}_{n}": wnid for wnid, numbers in images.items() for n in numbers}}


def cifar10(root: Path, rows: int = 12) -> np.ndarray:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": names, b"num_vis": 3072}, handle)
    data = np.random.default_rng(0).integers(0, 256, (rows, 3072), dtype=np.uint8)
    labels = [i % 3 for i in range(rows)]
    with open(folder / "test_batch", "wb") as handle:
        pickle.dump({b"data": data, b"labels": labels, b"filenames": [b"x.png"] * rows, b"batch_label": b"t"}, handle)
    for batch in range(1, 6):  # two training images per batch, classes 0 and 1
        train = np.random.default_rng(batch).integers(0, 256, (2, 3072), dtype=np.uint8)
        with open(folder / f"data_batch_{batch}", "wb") as handle:
            pickle.dump({b"data": train, b"labels": [0, 1], b"filenames": [b"y.png"] * 2,
                         b"batch_label": f"training batch {batch} of 5".encode()}, handle)
    return data


def write_idx(path: Path, magic: int, data: np.ndarray, compress: bool = False) -> Path:
    """An IDX file (MNIST's format): big-endian magic number and dimensions, then the uint8 bytes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = np.array([magic, *data.shape], dtype=">u4").tobytes() + data.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(payload) if compress else payload)
    return path


def mnist(root: Path, rows: int = 12) -> np.ndarray:
    """torchvision's download layout (MNIST/raw): the test files plain, the training files gzipped (4 images)."""
    folder = root / "MNIST" / "raw"
    test = np.random.default_rng(0).integers(0, 256, (rows, 28, 28), dtype=np.uint8)
    write_idx(folder / "t10k-images-idx3-ubyte", 0x0803, test)
    write_idx(folder / "t10k-labels-idx1-ubyte", 0x0801, np.arange(rows) % 3)
    train = np.random.default_rng(1).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    write_idx(folder / "train-images-idx3-ubyte.gz", 0x0803, train, compress=True)
    write_idx(folder / "train-labels-idx1-ubyte.gz", 0x0801, np.array([7, 8, 9, 7]), compress=True)
    return test


def coco(root: Path) -> dict:
    """Two zebra images (polygons; one also a crowd RLE), one stop sign, and an empty category."""
    categories = [{"id": 13, "name": "stop sign", "supercategory": "outdoor"},
                  {"id": 24, "name": "zebra", "supercategory": "animal"},
                  {"id": 25, "name": "giraffe", "supercategory": "animal"}]
    images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 40, "height": 30} for i in (7, 8, 9)]
    for image in images:
        write_image(root / "val2017" / image["file_name"], seed=image["id"])
    crowd = np.zeros((30, 40), dtype=np.uint8)
    crowd[20:25, 30:38] = 1  # uncompressed RLE is column-major run lengths starting with zeros
    flat = crowd.flatten(order="F")
    runs, current, count = [], 0, 0
    for value in flat:
        if value == current:
            count += 1
        else:
            runs.append(count)
            current, count = value, 1
    runs.append(count)
    annotations = [
        {"id": 1, "image_id": 7, "category_id": 24, "iscrowd": 0, "bbox": [2, 3, 10, 8],
         "segmentation": [[2, 3, 12, 3, 12, 11, 2, 11]], "area": 80},
        {"id": 2, "image_id": 7, "category_id": 24, "iscrowd": 1, "bbox": [30, 20, 8, 5],
         "segmentation": {"counts": runs, "size": [30, 40]}, "area": 40},
        {"id": 3, "image_id": 8, "category_id": 24, "iscrowd": 0, "bbox": [0, 0, 20, 10],
         "segmentation": [[0, 0, 20, 0, 20, 10, 0, 10]], "area": 200},
        {"id": 4, "image_id": 9, "category_id": 13, "iscrowd": 0, "bbox": [5, 5, 10, 10],
         "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]], "area": 100},
    ]
    (root / "annotations").mkdir(parents=True)
    (root / "annotations" / "instances_val2017.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories}))
    # train2017: two zebra images and one stop sign, ids unlike val's (as in COCO)
    train_images = [{"id": i, "file_name": f"{i:012d}.jpg", "width": 40, "height": 30} for i in (31, 32, 33)]
    for image in train_images:
        write_image(root / "train2017" / image["file_name"], seed=image["id"])
    train_annotations = [
        {"id": 11, "image_id": 31, "category_id": 24, "iscrowd": 0, "bbox": [1, 1, 10, 10],
         "segmentation": [[1, 1, 11, 1, 11, 11, 1, 11]], "area": 100},
        {"id": 12, "image_id": 32, "category_id": 24, "iscrowd": 0, "bbox": [5, 5, 20, 10],
         "segmentation": [[5, 5, 25, 5, 25, 15, 5, 15]], "area": 200},
        {"id": 13, "image_id": 33, "category_id": 13, "iscrowd": 0, "bbox": [5, 5, 10, 10],
         "segmentation": [[5, 5, 15, 5, 15, 15, 5, 15]], "area": 100},
    ]
    (root / "annotations" / "instances_train2017.json").write_text(
        json.dumps({"images": train_images, "annotations": train_annotations, "categories": categories}))
    return {"crowd": crowd.astype(bool)}


def cub(root: Path, *, missing_segmentation: str | None = None) -> Path:
    """Two classes × three test images (+ three train images) with majority-vote segmentations."""
    base = root / "CUB_200_2011"
    classes = ["001.Black_footed_Albatross", "002.Laysan_Albatross"]
    images, labels, split, boxes = [], [], [], []
    for index in range(9):
        cls = classes[index % 2]
        relative = f"{cls}/{cls.split('.')[1]}_{index:04d}.jpg"
        write_image(base / "images" / relative, seed=index)
        images.append(f"{index + 1} {relative}")
        labels.append(f"{index + 1} {index % 2 + 1}")
        split.append(f"{index + 1} {1 if index >= 6 else 0}")
        boxes.append(f"{index + 1} 1.0 2.0 10.0 12.0")
        segmentation = np.zeros((30, 40), dtype=np.uint8)
        segmentation[5:15, 10:30] = 255
        segmentation[15:20, 10:30] = 102  # two of five annotators: not in the majority mask
        stem = relative.rsplit(".", 1)[0]
        if stem != missing_segmentation:
            path = root / "segmentations" / f"{stem}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(segmentation).save(path)
    for name, lines in (("images.txt", images), ("image_class_labels.txt", labels), ("train_test_split.txt", split),
                        ("bounding_boxes.txt", boxes),
                        ("classes.txt", [f"{i + 1} {c}" for i, c in enumerate(classes)])):
        (base / name).write_text("\n".join(lines) + "\n")
    return base


def pets(root: Path, *, missing_trimap: str | None = None) -> None:
    """Four test and three trainval images of two breeds, with trimaps."""
    names = ["Abyssinian_1", "Abyssinian_2", "american_bulldog_1", "american_bulldog_2"]
    trainval = ["Abyssinian_3", "american_bulldog_3", "american_bulldog_4"]
    (root / "annotations" / "trimaps").mkdir(parents=True)
    header = "#Image CLASS-ID SPECIES BREED ID\n#ID: 1:37 Class ids\n"

    def row(n: str) -> str:
        return f"{n} {1 if n.startswith('Aby') else 2} {1 if n.startswith('Aby') else 2} 1"

    (root / "annotations" / "list.txt").write_text(header + "\n".join(map(row, names + trainval)) + "\n")
    (root / "annotations" / "test.txt").write_text("\n".join(map(row, names)) + "\n")
    (root / "annotations" / "trainval.txt").write_text("\n".join(map(row, trainval)) + "\n")
    for seed, name in enumerate(names + trainval):
        write_image(root / "images" / f"{name}.jpg", seed=seed)
        if name == missing_trimap:
            continue
        trimap = np.full((30, 40), 2, dtype=np.uint8)
        trimap[10:20, 10:20] = 3
        trimap[12:18, 12:18] = 1
        Image.fromarray(trimap).save(root / "annotations" / "trimaps" / f"{name}.png")


def flowers(root: Path, *, missing_segmentation: int | None = None) -> None:
    """Images 1, 6 train, 2, 7 val, 3–5 test (setid.mat), with blue-background segmentations."""
    root.mkdir(parents=True, exist_ok=True)
    labels = np.array([1, 2, 1, 3, 2, 3, 1], dtype=np.uint8)
    savemat(root / "imagelabels.mat", {"labels": labels[None, :]})
    savemat(root / "setid.mat", {"trnid": np.array([[6, 1]]), "valid": np.array([[2, 7]]),
                                 "tstid": np.array([[3, 4, 5]])})
    for image_id in range(1, 8):
        write_image(root / "jpg" / f"image_{image_id:05d}.jpg", seed=image_id)
        if image_id == missing_segmentation:
            continue
        segmentation = np.zeros((30, 40, 3), dtype=np.uint8)
        segmentation[..., 2] = 254  # blue background
        segmentation[8:22, 10:30] = (200, 40, 90)  # a flower-coloured object
        (root / "segmim").mkdir(exist_ok=True)
        Image.fromarray(segmentation).save(root / "segmim" / f"segmim_{image_id:05d}.jpg", quality=90)


def dogs(root: Path) -> None:
    """Images 0–3 in test_list.mat, 4–6 in train_list.mat (image 6 has no annotation file)."""
    folders = ["n02085620-Chihuahua", "n02085782-Japanese_spaniel"]
    lists: dict[str, tuple[list, list]] = {"test": ([], []), "train": ([], [])}
    for index in range(7):
        folder = folders[index % 2]
        stem = f"{folder.split('-')[0]}_{index}"
        write_image(root / "Images" / folder / f"{stem}.jpg", seed=index)
        if index != 6:
            annotation = root / "Annotation" / folder / stem
            annotation.parent.mkdir(parents=True, exist_ok=True)
            annotation.write_text(voc_xml([(folder.split("-")[1], (3, 4, 20 + index, 25))], (40, 30)))
        files, labels = lists["test" if index < 4 else "train"]
        files.append(f"{folder}/{stem}.jpg")
        labels.append(index % 2 + 1)
    for split, (files, labels) in lists.items():
        savemat(root / f"{split}_list.mat", {"file_list": np.array(files, dtype=object)[:, None],
                                             "annotation_list": np.array([f[:-4] for f in files], dtype=object)[:, None],
                                             "labels": np.array(labels)[:, None]})


def aircraft(root: Path) -> None:
    data = root / "fgvc-aircraft-2013b" / "data"
    data.mkdir(parents=True)
    variants = ["707-320", "A300B4", "F-16A/B"]
    (data / "variants.txt").write_text("\n".join(variants) + "\n")
    rows: dict[str, list[str]] = {"test": [], "train": [], "val": []}
    boxes = []
    for index in range(11):  # 0–5 test, 6–8 train, 9–10 val
        image_id = f"{1000000 + index}"
        write_image(data / "images" / f"{image_id}.jpg", seed=index)
        rows["test" if index < 6 else "train" if index < 9 else "val"].append(f"{image_id} {variants[index % 3]}")
        boxes.append(f"{image_id} 3 4 30 20")
    rows["trainval"] = rows["train"] + rows["val"]
    for split, lines in rows.items():
        (data / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    (data / "images_box.txt").write_text("\n".join(boxes) + "\n")


def image_folder_splits(root: Path) -> None:
    """An ImageFolder per split: train/{cats,dogs,zebras}, test/{cats,dogs} (test has no zebras)."""
    for index in range(2):
        write_image(root / "train" / "cats" / f"c{index}.jpg", seed=index)
        write_image(root / "train" / "dogs" / f"d{index}.png", seed=10 + index)
        write_image(root / "test" / "cats" / f"c{index}.jpg", seed=20 + index)
        write_image(root / "test" / "dogs" / f"d{index}.png", seed=30 + index)
    write_image(root / "train" / "zebras" / "z0.jpg", seed=40)


# image_ids of each builder's train split in the layouts above (the others are test / val images)
TRAIN_IDS = {
    "imagenet": {"n01000000_2", "n01000000_3", "n02000000_5", "n03000000_1", "n03000000_7"},
    "cifar10": {f"data_batch_{b}_{r:05d}" for b in range(1, 6) for r in range(2)},
    "mnist": {f"train_{r:05d}" for r in range(4)},
    "coco": {"000000000031", "000000000032"},  # the zebra images (the category built)
    "cub200": {"Black_footed_Albatross_0006", "Laysan_Albatross_0007", "Black_footed_Albatross_0008"},
    "oxford_pets": {"Abyssinian_3", "american_bulldog_3", "american_bulldog_4"},
    "flowers102": {"image_00001", "image_00006"},
    "stanford_dogs": {"n02085620_4", "n02085782_5", "n02085620_6"},
    "fgvc_aircraft": {"1000006", "1000007", "1000008"},
    "folder": {"train/cats/c0", "train/cats/c1", "train/dogs/d0", "train/dogs/d1", "train/zebras/z0"},
}
