"""COCO box mAP with pycocotools, the reference implementation every detection paper (this one included) reports:
mAP@[.5:.95], AP50, AP75, AP for small / medium / large objects, AR@100 and AP per class, under the names
transformers' object-detection example logs (`map`, `map_50`, … `map_<class>`).

Input: one record per image with its original size, its ground truth in COCO's [x, y, w, h] (with `area` and
`iscrowd`: crowd regions are ignored, as in COCO) and its detections as (x0, y0, x1, y1) with scores and labels, all
in the original image's pixels. pycocotools' progress prints are silenced. A metric COCO leaves undefined (no
ground truth in that area range or class) is None.
"""

from __future__ import annotations

import contextlib
import io
import re

import numpy as np

# COCOeval.stats: AP@[.5:.95], AP50, AP75, AP small, medium, large, AR@1, AR@10, AR@100, AR small, medium, large.
STAT_NAMES = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")
REPORTED = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")


def class_metric_key(name: str) -> str:
    """A class name as part of a metric key: `map_<key>` (lower case, runs of other characters as `_`)."""
    return re.sub(r"[^0-9a-z]+", "_", name.lower()).strip("_") or "class"


def per_class_keys(label_names: list[str]) -> list[str]:
    """`map_<class>` per class, made unique where two names give the same key."""
    keys, seen = [], set()
    for index, name in enumerate(label_names):
        key = f"map_{class_metric_key(name)}"
        keys.append(key if key not in seen else f"{key}_{index}")
        seen.add(keys[-1])
    return keys


def _coco_dicts(records: list[dict], label_names: list[str]) -> tuple[dict, list[dict]]:
    """(the ground truth as a COCO dataset, the detections as COCO results). Ids start at 1: pycocotools treats a
    matched ground-truth id of 0 as no match."""
    images, annotations, detections = [], [], []
    for image_id, record in enumerate(records, start=1):
        height, width = record["orig_size"]
        images.append({"id": image_id, "height": int(height), "width": int(width)})
        for box, category, area, crowd in zip(record["bbox"], record["category"], record["area"], record["iscrowd"]):
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": image_id,
                    "category_id": int(category) + 1,
                    "bbox": [float(value) for value in box],
                    "area": float(area),
                    "iscrowd": int(crowd),
                }
            )
        boxes = np.asarray(record["pred_boxes"], dtype=np.float64).reshape(-1, 4)
        for (x0, y0, x1, y1), score, label in zip(boxes, record["pred_scores"], record["pred_labels"]):
            detections.append(
                {
                    "image_id": image_id,
                    "category_id": int(label) + 1,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "score": float(score),
                }
            )
    categories = [{"id": index + 1, "name": name} for index, name in enumerate(label_names)]
    return {"images": images, "annotations": annotations, "categories": categories}, detections


def _none_if_undefined(value: float) -> float | None:
    # pycocotools marks a metric without ground truth as -1.
    return None if value < 0 else float(value)


def coco_metrics(records: list[dict], label_names: list[str]) -> dict:
    """COCO box metrics of `records` (see the module docstring) over `label_names` (class i = category i + 1)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    dataset, detections = _coco_dicts(records, label_names)
    with contextlib.redirect_stdout(io.StringIO()):
        ground_truth = COCO()
        ground_truth.dataset = dataset
        ground_truth.createIndex()
        if detections:
            results = ground_truth.loadRes(detections)
        else:  # loadRes cannot take an empty list: nothing detected, an empty result set
            results = COCO()
            results.dataset = {**dataset, "annotations": []}
            results.createIndex()
        evaluation = COCOeval(ground_truth, results, iouType="bbox")
        evaluation.evaluate()
        evaluation.accumulate()
        evaluation.summarize()
    stats = dict(zip(STAT_NAMES, evaluation.stats))
    metrics = {name: _none_if_undefined(stats[name]) for name in REPORTED}
    # precision: (IoU thresholds, recall thresholds, classes, area ranges, max detections); area "all", 100 per image.
    precision = evaluation.eval["precision"][:, :, :, 0, -1]
    for index, key in enumerate(per_class_keys(label_names)):
        defined = precision[:, :, index][precision[:, :, index] > -1]
        metrics[key] = float(defined.mean()) if defined.size else None
    metrics["num_images"] = len(records)
    return metrics


__all__ = ["REPORTED", "class_metric_key", "coco_metrics", "per_class_keys"]
