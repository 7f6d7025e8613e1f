"""Scoring segmentation with Trainer in constant memory: each process turns its logits into per-image pixel counts
(`preprocess_logits_for_metrics`) before Trainer gathers them, and the counts are summed into mean IoU.

    metric = StreamingMeanIoU(label_names)
    trainer = Trainer(..., args=TrainingArguments(..., batch_eval_metrics=True),
                      preprocess_logits_for_metrics=metric.preprocess_logits, compute_metrics=metric)

Counts rather than prediction maps cross the processes, so images of any size gather as tensors of one shape, and
with `batch_eval_metrics` nothing is kept between batches (without it Trainer keeps 4 x num_labels counts per image).
"""

from __future__ import annotations

import math
import re
from pathlib import Path

import evaluate
import numpy as np
import torch
import torch.nn.functional as F

from .data import IGNORE_INDEX

MEAN_IOU_METRIC_PATH = Path(__file__).resolve().parents[2] / "metrics" / "mean_iou.py"


def upsampled_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (B, K, h, w) bilinearly upsampled to `size` = (H, W), as transformers' segmentation heads do."""
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)


def class_metric_key(name: str) -> str:
    """The metric name of a class: `iou_<this>` (e.g. "digit 0" -> digit_0)."""
    return re.sub(r"\W+", "_", name.strip()).strip("_").lower()


class StreamingMeanIoU:
    """`preprocess_logits_for_metrics` and `compute_metrics` for Trainer: `preprocess_logits` counts each image's
    pixels, `__call__` adds the counts and returns the scores when Trainer says the last batch has come:
    `mean_iou`, `mean_accuracy`, `overall_accuracy` and `iou_<class name>` per class (NaN for a class absent from
    both predictions and references)."""

    def __init__(self, label_names: list[str], ignore_index: int = IGNORE_INDEX):
        self.label_names = list(label_names)
        self.ignore_index = ignore_index
        self.metric = evaluate.load(str(MEAN_IOU_METRIC_PATH))
        self.total = np.zeros((4, len(self.label_names)), dtype=np.int64)

    def preprocess_logits(self, logits, labels: torch.Tensor) -> torch.Tensor:
        """int64 (B, 4, num_labels): per image, the metric's pixel counts of the prediction at the labels' full
        resolution."""
        if isinstance(logits, tuple):
            logits = logits[0]
        # Trainer pads labels at the bottom with -100 rows to the tallest batch of all processes; the logits were
        # computed without those rows, so they are upsampled to the unpadded height.
        labelled_rows = (labels != -100).any(dim=-1).any(dim=0).nonzero()
        height = int(labelled_rows.max()) + 1 if len(labelled_rows) else labels.shape[1]
        predictions = upsampled_logits(logits, (height, labels.shape[-1])).argmax(dim=1).cpu().numpy()
        references = labels[:, :height].cpu().numpy()
        references = np.where(references < 0, self.ignore_index, references)
        num_labels = len(self.label_names)
        counts = [self.metric.areas([p], [r], num_labels, self.ignore_index) for p, r in zip(predictions, references)]
        return torch.from_numpy(np.stack(counts)).to(logits.device)

    def result(self) -> dict:
        """The scores of everything added since the last result; starts a new count."""
        scores = self.metric.scores(self.total)
        self.total = np.zeros_like(self.total)
        results = {name: scores[name] for name in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        for name, value in zip(self.label_names, scores["per_category_iou"].tolist()):
            results[f"iou_{class_metric_key(name)}"] = value
        return results

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict | None:
        self.total += _numpy(eval_prediction.predictions).reshape(-1, *self.total.shape).sum(axis=0)
        return self.result() if compute_result else None


def nan_to_none(metrics: dict) -> dict:
    """A class absent from both predictions and references has no IoU: None (JSON null), not NaN (invalid JSON)."""
    return {name: None if isinstance(value, float) and math.isnan(value) else value for name, value in metrics.items()}


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


__all__ = ["MEAN_IOU_METRIC_PATH", "StreamingMeanIoU", "class_metric_key", "nan_to_none", "upsampled_logits"]
