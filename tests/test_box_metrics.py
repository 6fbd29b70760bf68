"""Opti-CAM's box-based localisation metrics (App. B.1, eqs. A1–A7) and the pointing game on hand-made maps."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
import torch
from torch import nn

from attribution.needs import Need
from evaluation import Batch, create_metric, metric_class
from evaluation.metrics.boxes import largest_component_box, mean_threshold_box, pixel_boxes
from storage.manifest import boxes_to_mask

PER_IMAGE = ("localization_error", "official_metric", "localization_f1", "pointing_game", "saliency_metric")
MODEL_FREE = ("localization_error", "localization_f1", "box_accuracy", "pointing_game")


class Linear(nn.Module):
    def __init__(self, seed: int, size: int = 16):
        super().__init__()
        torch.manual_seed(seed)
        self.fc = nn.Linear(3 * size * size, 5)

    def forward(self, x):
        return self.fc(x.flatten(1))


class ChannelMean(nn.Module):
    """Logits ``(mean of channel 0, 0)``: the target-0 probability of a constant crop of value a is σ(a)."""

    def forward(self, x):
        return torch.stack([x[:, 0].mean(dim=(1, 2)), torch.zeros(len(x))], dim=1)


def boxes(*rows: tuple[float, float, float, float]) -> torch.Tensor:
    return torch.tensor(rows, dtype=torch.float64).reshape(-1, 4)


def fake_cam(b: int, h: int, w: int) -> torch.Tensor:
    """Fake-CAM (Poppi et al., CVPRW 2021): ones with a 0 at the top-left pixel."""
    maps = torch.ones(b, h, w)
    maps[:, 0, 0] = 0
    return maps


def block_map(h: int, w: int, *blocks: tuple[int, int, int, int, float]) -> torch.Tensor:
    """Zeros with value ``s`` on pixels ``x0 ≤ u < x1``, ``y0 ≤ v < y1`` for each ``(x0, y0, x1, y1, s)``."""
    m = torch.zeros(h, w)
    for x0, y0, x1, y1, s in blocks:
        m[y0:y1, x0:x1] = s
    return m


def test_pixel_boxes_follow_the_centre_rule_of_the_manifest():
    given = [(1.0, 2.0, 4.0, 3.0), (-5, 5.6, 1.4, 99), (2.6, 0.0, 3.4, 8.0), (2.2, 6.5, 5.51, 7.49)]
    rects = pixel_boxes(boxes(*given), height=8, width=6)
    raster = np.zeros((8, 6), dtype=bool)
    for x0, y0, x1, y1 in rects.tolist():
        raster[y0:y1, x0:x1] = True
    keys = ("xmin", "ymin", "xmax", "ymax")
    assert (raster == boxes_to_mask([dict(zip(keys, b)) for b in given], width=6, height=8)).all()
    assert rects.tolist() == [[1, 2, 4, 3], [0, 6, 1, 8], [2, 6, 6, 7]]  # [2.6, 3.4) holds no centre: dropped


def test_largest_component_is_kept_and_components_are_8_connected():
    two_blobs = block_map(10, 10, (1, 1, 4, 4, 1.0), (7, 6, 9, 7, 1.0))  # 3×3 = 9 pixels and 2×1 = 2 pixels
    assert mean_threshold_box(two_blobs).tolist() == [1, 1, 4, 4]
    diagonal = torch.zeros(5, 5, dtype=torch.bool)
    diagonal[1, 1] = diagonal[2, 2] = True
    diagonal[4, 0] = True
    assert largest_component_box(diagonal).tolist() == [1, 1, 3, 3]  # the diagonal pair is one component
    assert largest_component_box(torch.zeros(3, 3, dtype=torch.bool)) is None


def test_iou_computed_by_hand_gives_le_and_om():
    # B_p = pixels x 1..4, y 2..4 (12 px); box [3, 3, 7, 6) = pixels x 3..6, y 3..5 (12 px); overlap 2×2 = 4 px
    maps = block_map(10, 10, (1, 2, 5, 5, 1.0))[None].repeat(2, 1, 1)
    gt = [boxes((3, 3, 7, 6)), boxes((3, 3, 7, 6), (1, 2, 5, 5))]
    le = create_metric("localization_error")(maps, boxes=gt)
    torch.testing.assert_close(le, torch.tensor([1 - 4 / 20, 0.0], dtype=torch.float64))
    inputs = {"images": torch.rand(2, 3, 10, 10), "model": Linear(0, 10), "targets": [1, 2], "boxes": gt}
    om = create_metric("official_metric")(maps, predicted=[1, 0], **inputs)
    torch.testing.assert_close(om, torch.tensor([1 - 4 / 20, 1.0], dtype=torch.float64))  # a wrong class scores 1
    from_model = create_metric("official_metric")(maps, **inputs)
    predicted = inputs["model"](inputs["images"]).argmax(dim=1)
    torch.testing.assert_close(from_model, create_metric("official_metric")(maps, predicted=predicted, **inputs))


def test_f1_by_hand():
    # S = 1 on a 2×2 block, 0.5 on a 2×2 block; U = the first block plus two pixels of zeros
    maps = block_map(6, 6, (0, 0, 2, 2, 1.0), (4, 4, 6, 6, 0.5))[None]
    inside, total, union = 4.0, 4.0 + 2.0, 6.0
    p, r = inside / total, inside / union
    f1 = create_metric("localization_f1")(maps, boxes=[boxes((0, 0, 2, 3))])
    torch.testing.assert_close(f1, torch.tensor([2 * p * r / (p + r)], dtype=torch.float64))
    outside = create_metric("localization_f1")(maps, boxes=[boxes((2, 0, 4, 3))])
    assert outside.tolist() == [0.0]  # no mass in U


def test_fake_cam_constants_depend_only_on_the_boxes_and_not_on_the_model():
    h = w = 16
    maps = fake_cam(3, h, w)
    gt = [boxes((2, 3, 10, 12)), boxes((0, 0, 4, 4), (5, 5, 16, 13)), boxes((1, 1, 16, 16))]
    union = [72, 16 + 88, 225]
    top_left = [0, 1, 0]  # the pixel (0, 0) in U
    largest = [72, 88, 225]
    expected_le = [1 - a / (h * w) for a in largest]
    p = [(u - t) / (h * w - 1) for u, t in zip(union, top_left)]
    r = [(u - t) / u for u, t in zip(union, top_left)]
    expected_f1 = [2 * pi * ri / (pi + ri) for pi, ri in zip(p, r)]
    assert math.isclose(expected_f1[0], 2 * p[0] / (p[0] + 1))  # R = 1 where U misses the top-left pixel
    deltas = (0.3, 0.5, 0.7)
    expected_ba = [np.mean([a / (h * w) >= d for d in deltas]) for a in largest]
    expected_pg = [(u - t) / (h * w - 1) for u, t in zip(union, top_left)]  # the share of maximal pixels in U
    results = []
    for seed in (0, 1):
        batch = Batch(maps, images=torch.rand(3, 3, h, w), model=Linear(seed), targets=[0, 1, 2], boxes=gt)
        results.append({name: create_metric(name)(batch) for name in MODEL_FREE})
        results[-1]["pointing_game_any"] = create_metric("pointing_game", tolerance=0, ties="any")(batch)
        results[-1]["pointing_game_sp"] = create_metric("pointing_game", tolerance=0)(batch)
    for name in results[0]:
        torch.testing.assert_close(results[0][name], results[1][name], rtol=0, atol=0)
    got = results[0]
    torch.testing.assert_close(got["localization_error"], torch.tensor(expected_le, dtype=torch.float64))
    torch.testing.assert_close(got["localization_f1"], torch.tensor(expected_f1, dtype=torch.float64))
    torch.testing.assert_close(got["box_accuracy"], torch.tensor(expected_ba, dtype=torch.float64))
    torch.testing.assert_close(got["pointing_game_sp"], torch.tensor(expected_pg, dtype=torch.float64))
    assert got["pointing_game_any"].tolist() == [1.0, 1.0, 1.0]  # ties "any": Fake-CAM's SP ≈ 1 (Table A7: 99.8)


def test_pointing_game_tolerance():
    maps = torch.zeros(1, 40, 40)
    maps[0, 5, 29] = 1.0  # 14 px right of the box's last column (u = 15)
    gt = [boxes((2, 0, 16, 11))]
    for tolerance, hit in ((15, 1.0), (14, 1.0), (13, 0.0), (10, 0.0)):
        assert create_metric("pointing_game", tolerance=tolerance)(maps, boxes=gt).tolist() == [hit], tolerance
    diagonal = torch.zeros(1, 40, 40)
    diagonal[0, 10 + 12, 15 + 9] = 1.0  # 9 px right and 12 px below the box's corner pixel (15, 10): 15 px away
    assert create_metric("pointing_game")(diagonal, boxes=gt).tolist() == [1.0]
    assert create_metric("pointing_game", tolerance=14.9)(diagonal, boxes=gt).tolist() == [0.0]
    inside = torch.zeros(1, 40, 40)
    inside[0, 10, 15] = 1.0
    assert create_metric("pointing_game", tolerance=0)(inside, boxes=gt).tolist() == [1.0]


def test_pointing_game_ties_on_a_flat_map():
    flat = torch.full((1, 10, 10), 0.3)
    gt = [boxes((0, 0, 5, 4))]
    assert create_metric("pointing_game", tolerance=0, ties="any")(flat, boxes=gt).tolist() == [1.0]
    assert create_metric("pointing_game", tolerance=0)(flat, boxes=gt).tolist() == [pytest.approx(20 / 100)]
    within_one = create_metric("pointing_game", tolerance=1)(flat, boxes=gt)
    assert within_one.tolist() == [pytest.approx(29 / 100)]  # U and the 9 pixels next to its sides


def test_saliency_metric_on_a_tiny_model_by_hand():
    images = torch.zeros(2, 3, 8, 8)
    images[:, 0, 2:5, 1:5] = 2.0  # B_p of the first map: x 1..4, y 2..4, 12 of 64 pixels
    images[1, 0, 6, 6] = -1.0  # B_p of the second map: the single pixel (6, 6), 1/64 < 0.05
    maps = torch.stack([block_map(8, 8, (1, 2, 5, 5, 1.0)), block_map(8, 8, (6, 6, 7, 7, 1.0))])
    sm = create_metric("saliency_metric")(maps, images=images, model=ChannelMean(), targets=[0, 0])
    log_sigmoid = torch.nn.functional.logsigmoid
    expected = [math.log(12 / 64) - float(log_sigmoid(torch.tensor(2.0))),
                math.log(0.05) - float(log_sigmoid(torch.tensor(-1.0)))]
    torch.testing.assert_close(sm, torch.tensor(expected, dtype=torch.float64))
    whole = create_metric("saliency_metric")(fake_cam(1, 8, 8), images=images[:1], model=ChannelMean(), targets=[0])
    p = torch.softmax(ChannelMean()(images[:1]).double(), dim=1)[0, 0]
    torch.testing.assert_close(whole, -p.log()[None])  # Fake-CAM: B_p is the whole image, SM = −log p^c


def test_box_accuracy_takes_the_best_threshold_across_images():
    outer, inner = (2, 2, 6, 6, 0.5), (3, 3, 5, 5, 1.0)  # 16 px at 0.5 around 4 px at 1: IoU 4/16 between them
    maps = torch.stack([block_map(8, 8, outer, inner)] * 3)
    gt = [boxes((2, 2, 6, 6)), boxes((3, 3, 5, 5)), boxes((3, 3, 5, 5))]
    # η < 0.5: B_p^η = the outer block (hits image 0 only); η ≥ 0.5: the inner block (hits images 1 and 2)
    at_half = create_metric("box_accuracy", thresholds_iou=(0.5,))(maps, boxes=gt)
    assert at_half.tolist() == [0.0, 1.0, 1.0] and at_half.mean().item() == pytest.approx(2 / 3)
    both = create_metric("box_accuracy", thresholds_iou=(0.2, 0.5))(maps, boxes=gt)
    assert both.tolist() == [0.5, 1.0, 1.0] and both.mean().item() == pytest.approx((1 + 2 / 3) / 2)
    only_zero = create_metric("box_accuracy", thresholds_iou=(0.5,), threshold_step=1.0)(maps, boxes=gt)
    assert only_zero.tolist() == [1.0, 0.0, 0.0]
    singles = [create_metric("box_accuracy", thresholds_iou=(0.5,))(maps[i:i + 1], boxes=gt[i:i + 1]) for i in
               range(3)]
    assert [s.item() for s in singles] == [1.0, 1.0, 1.0]  # each image alone picks its own η: a shard metric
    with_empty = create_metric("box_accuracy", thresholds_iou=(0.5,))(maps, boxes=[gt[0], gt[1], boxes()])
    assert with_empty.tolist()[:2] == [1.0, 0.0] and math.isnan(with_empty[2])  # η chosen over images with boxes
    assert metric_class("box_accuracy").needs == {Need.BOXES, Need.SHARD}


def test_images_without_boxes_and_constant_maps_are_undefined(caplog):
    maps = torch.stack([block_map(8, 8, (1, 1, 4, 4, 1.0))] * 3)
    gt = [boxes((0, 0, 4, 4)), boxes(), boxes((2.6, 2.6, 3.4, 3.4))]
    inputs = {"images": torch.rand(3, 3, 8, 8), "model": Linear(0, 8), "targets": [0, 1, 2], "boxes": gt}
    with caplog.at_level(logging.WARNING, logger="evaluation"):
        for name in ("localization_error", "official_metric", "localization_f1", "pointing_game", "box_accuracy"):
            values = create_metric(name)(maps, **inputs)
            assert not math.isnan(values[0]) and values[1:].isnan().all(), name
    assert "no ground-truth box" in caplog.text and "contains a pixel centre" in caplog.text
    constant = torch.full((1, 8, 8), 0.7)
    single = {"images": inputs["images"][:1], "model": inputs["model"], "targets": [0], "boxes": gt[:1]}
    for name in ("localization_error", "official_metric", "localization_f1", "saliency_metric"):
        assert create_metric(name)(constant, **single).isnan().all(), name
    assert "constant map" in caplog.text


def test_a_batch_scores_as_its_samples_one_by_one():
    g = torch.Generator().manual_seed(3)
    maps = torch.rand(4, 12, 12, generator=g) ** 4
    gt = [boxes((1, 1, 6, 7)), boxes((0, 2, 12, 5), (7, 7, 11, 12)), boxes((3.3, 4.5, 9.9, 10.1)), boxes((0, 0, 2, 2))]
    inputs = {"images": torch.rand(4, 3, 12, 12, generator=g), "model": Linear(0, 12), "targets": [0, 1, 2, 3],
              "boxes": gt}
    batch = Batch(maps, **inputs)
    assert batch.subset([2, 0]).boxes == (batch.boxes[2], batch.boxes[0])
    for name in PER_IMAGE:
        metric = create_metric(name, **({"batch_size": 3} if name == "saliency_metric" else {}))
        whole = metric(batch)
        singles = torch.cat([metric(batch.subset([i])) for i in range(4)])
        atol = 1e-6 if Need.MODEL in metric.needs else 1e-12  # float32 forward passes of 3 rows against 1
        torch.testing.assert_close(whole, singles, rtol=0, atol=atol, equal_nan=True)
        assert torch.isfinite(whole).all(), name


def test_the_batch_checks_its_boxes_and_a_metric_names_them_when_missing():
    maps = torch.rand(2, 6, 6)
    with pytest.raises(ValueError, match="1 box sets for 2 maps"):
        Batch(maps, boxes=[boxes((0, 0, 1, 1))])
    with pytest.raises(ValueError, match=r"boxes of sample 1 are \(1, 3\), not \(n, 4\)"):
        Batch(maps, boxes=[boxes(), torch.zeros(1, 3)])
    with pytest.raises(ValueError, match="boxes of sample 0 are not finite"):
        Batch(maps, boxes=[boxes((3, 0, 1, 2)), boxes()])
    with pytest.raises(ValueError, match="localization_error needs ground-truth boxes"):
        create_metric("localization_error")(maps)
    assert Batch(maps, boxes=[[[0, 0, 1, 1]], boxes()]).boxes[0].dtype == torch.float64


def test_registry_entries_and_bad_parameters():
    expected = {"official_metric": ("lower", {Need.BOXES, Need.MODEL}), "localization_error": ("lower", {Need.BOXES}),
                "localization_f1": ("higher", {Need.BOXES}), "box_accuracy": ("higher", {Need.BOXES, Need.SHARD}),
                "pointing_game": ("higher", {Need.BOXES}), "saliency_metric": ("lower", {Need.MODEL})}
    for name, (direction, needs) in expected.items():
        cls = metric_class(name)
        assert (cls.direction, cls.category, set(cls.needs)) == (direction, "localization", needs), name
    for params, match in [({"tolerance": -1}, "tolerance"), ({"ties": "first"}, "ties")]:
        with pytest.raises(ValueError, match=match):
            create_metric("pointing_game", **params)
    for params in ({"thresholds_iou": ()}, {"thresholds_iou": (0.5, 1.5)}, {"thresholds_iou": 0.5},
                   {"thresholds_iou": (0,)}):
        with pytest.raises(ValueError, match="thresholds_iou"):
            create_metric("box_accuracy", **params)
    for step in (0, 1.5, True):
        with pytest.raises(ValueError, match="threshold_step"):
            create_metric("box_accuracy", threshold_step=step)
    with pytest.raises(ValueError, match="batch_size"):
        create_metric("saliency_metric", batch_size=0)
