"""COCO mAP (pycocotools) against hand-computed cases: a perfect image, a miss, a duplicate, crowd regions, classes and
sizes without ground truth, and nothing detected at all."""

import pytest

from modeling_pvt.tasks.detection.metrics import class_metric_key, coco_metrics, per_class_keys

NAMES = ["cat", "dog"]


def _image(truth=(), detections=(), size=(100, 100), crowd=()):
    """One record: `truth` as ([x, y, w, h], class), `detections` as ([x0, y0, x1, y1], score, class)."""
    return {
        "orig_size": list(size),
        "bbox": [box for box, _ in truth],
        "category": [label for _, label in truth],
        "area": [box[2] * box[3] for box, _ in truth],
        "iscrowd": [1 if index in crowd else 0 for index in range(len(truth))],
        "pred_boxes": [box for box, _, _ in detections],
        "pred_scores": [score for _, score, _ in detections],
        "pred_labels": [label for _, _, label in detections],
    }


def test_one_perfect_image_scores_one():
    metrics = coco_metrics([_image([([10, 10, 20, 20], 0)], [([10, 10, 30, 30], 0.9, 0)])], NAMES)
    for name in ("map", "map_50", "map_75", "map_small", "mar_100", "map_cat"):
        assert metrics[name] == pytest.approx(1.0), name
    # No medium or large box, and no dog in the ground truth: COCO leaves those undefined.
    assert metrics["map_medium"] is None and metrics["map_large"] is None and metrics["map_dog"] is None
    assert metrics["num_images"] == 1


def test_a_miss_scores_zero_and_so_does_nothing_detected():
    miss = coco_metrics([_image([([10, 10, 20, 20], 0)], [([60, 60, 80, 80], 0.9, 0)])], NAMES)
    assert miss["map"] == miss["map_50"] == miss["mar_100"] == 0.0
    wrong_class = coco_metrics([_image([([10, 10, 20, 20], 0)], [([10, 10, 30, 30], 0.9, 1)])], NAMES)
    assert wrong_class["map_cat"] == 0.0 and wrong_class["map_dog"] is None
    nothing = coco_metrics([_image([([10, 10, 20, 20], 0)])], NAMES)
    assert nothing["map"] == 0.0 and nothing["mar_100"] == 0.0


def test_a_duplicate_costs_precision_by_cocos_101_point_interpolation():
    # Two cats; the first is found twice (0.9, then a duplicate at 0.8), the second at 0.7. Ranked: TP, FP, TP:
    # precision 1 up to recall 0.5, then 2/3 up to recall 1. COCO samples precision at recall 0, 0.01, ... 1:
    # 51 points at 1 and 50 at 2/3, at every IoU threshold (the boxes are exact).
    records = [
        _image(
            [([10, 10, 20, 20], 0), ([50, 50, 20, 20], 0)],
            [([10, 10, 30, 30], 0.9, 0), ([10, 10, 30, 30], 0.8, 0), ([50, 50, 70, 70], 0.7, 0)],
        )
    ]
    expected = (51 + 50 * 2 / 3) / 101
    metrics = coco_metrics(records, NAMES)
    assert metrics["map"] == pytest.approx(expected) and metrics["map_50"] == pytest.approx(expected)
    assert metrics["mar_100"] == pytest.approx(1.0)
    # A duplicate scored below the true detections costs nothing.
    later = records[0] | {"pred_scores": [0.9, 0.6, 0.7]}
    assert coco_metrics([later], NAMES)["map"] == pytest.approx(1.0)


def test_iou_thresholds_partial_overlap_and_sizes():
    # A 40x40 (medium) box found shifted by 4 px: IoU 36*40 / (2*1600 - 1440) = 0.818, a hit at thresholds 0.5-0.8
    # (7 of 10), a miss at 0.85-0.95.
    records = [_image([([10, 10, 40, 40], 1)], [([14, 10, 54, 50], 0.9, 1)])]
    metrics = coco_metrics(records, NAMES)
    assert metrics["map"] == pytest.approx(0.7) and metrics["map_75"] == pytest.approx(1.0)
    assert metrics["map_medium"] == pytest.approx(0.7) and metrics["map_small"] is None


def test_detections_on_a_crowd_region_are_not_false_positives():
    truth = [([10, 10, 20, 20], 0), ([50, 10, 40, 40], 0)]
    detections = [([50, 10, 90, 50], 0.95, 0), ([10, 10, 30, 30], 0.9, 0)]  # the crowd one scores highest
    assert coco_metrics([_image(truth, detections, crowd=(1,))], NAMES)["map"] == pytest.approx(1.0)
    assert coco_metrics([_image(truth, detections)], NAMES)["map"] == pytest.approx(1.0)
    assert coco_metrics([_image(truth, detections[:1] + [([60, 60, 70, 70], 0.9, 0)])], NAMES)["map"] < 1.0


def test_images_are_pooled_and_class_keys_are_unique(capsys):
    records = [_image([([10, 10, 20, 20], 0)], [([10, 10, 30, 30], 0.9, 0)]), _image([([5, 5, 30, 30], 1)])]
    metrics = coco_metrics(records, NAMES)
    assert metrics["map_cat"] == pytest.approx(1.0) and metrics["map_dog"] == 0.0
    assert metrics["map"] == pytest.approx(0.5) and metrics["num_images"] == 2
    assert capsys.readouterr().out == ""  # pycocotools' progress prints are silenced
    assert class_metric_key("Face Shield") == "face_shield"
    assert per_class_keys(["a b", "a-b", "c"]) == ["map_a_b", "map_a_b_1", "map_c"]
