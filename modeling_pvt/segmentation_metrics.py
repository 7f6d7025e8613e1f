"""Scoring segmentation with Trainer: full-resolution predictions from the logits, and mean IoU accumulated batch by
batch (`TrainingArguments(batch_eval_metrics=True)`), so evaluation memory does not grow with the dataset.

    trainer = Trainer(..., args=TrainingArguments(..., batch_eval_metrics=True),
                      preprocess_logits_for_metrics=predicted_labels,
                      compute_metrics=StreamingMeanIoU(label_names))

Use `trainer.evaluate`, not `trainer.predict`: predict keeps every prediction map in memory whatever the flag says.
"""

from __future__ import annotations

import re
from pathlib import Path

import evaluate
import numpy as np
import torch
import torch.nn.functional as F

from .segmentation_data import IGNORE_INDEX

MEAN_IOU_METRIC_PATH = Path(__file__).parent / "metrics" / "mean_iou.py"


def upsampled_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Logits (B, K, h, w) bilinearly upsampled to `size` = (H, W), as transformers' segmentation heads do."""
    return F.interpolate(logits.float(), size=size, mode="bilinear", align_corners=False)


def predicted_labels(logits, labels: torch.Tensor) -> torch.Tensor:
    """`preprocess_logits_for_metrics`: the class id per pixel at the labels' full resolution (int64 (B, H, W)),
    which is all the metric needs, instead of K float maps per image."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return upsampled_logits(logits, labels.shape[-2:]).argmax(dim=1)


def _metric_key(name: str) -> str:
    return re.sub(r"\W+", "_", name.strip()).strip("_").lower()


class StreamingMeanIoU:
    """`compute_metrics` for Trainer with `batch_eval_metrics=True`: adds each batch's pixel counts and returns the
    scores when Trainer says the last batch has come. Returns `mean_iou`, `mean_accuracy`, `overall_accuracy` and
    `iou_<class name>` per class (NaN for a class absent from both predictions and references)."""

    def __init__(self, label_names: list[str], ignore_index: int = IGNORE_INDEX):
        self.label_names = list(label_names)
        self.ignore_index = ignore_index
        self.metric = evaluate.load(str(MEAN_IOU_METRIC_PATH))
        self.total = np.zeros((4, len(self.label_names)), dtype=np.int64)

    def add(self, predictions, references) -> None:
        predictions, references = _numpy(predictions), _numpy(references)
        # Trainer pads labels across processes with -100; those pixels are as unlabeled as the ignore index.
        references = np.where(references < 0, self.ignore_index, references)
        self.total += self.metric.areas(predictions, references, len(self.label_names), self.ignore_index)

    def result(self) -> dict:
        """The scores of everything added since the last result; starts a new count."""
        scores = self.metric.scores(self.total)
        self.total = np.zeros_like(self.total)
        results = {name: scores[name] for name in ("mean_iou", "mean_accuracy", "overall_accuracy")}
        for name, value in zip(self.label_names, scores["per_category_iou"].tolist()):
            results[f"iou_{_metric_key(name)}"] = value
        return results

    def __call__(self, eval_prediction, compute_result: bool = True) -> dict | None:
        self.add(eval_prediction.predictions, eval_prediction.label_ids)
        return self.result() if compute_result else None


def _numpy(values) -> np.ndarray:
    return values.detach().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values)


__all__ = ["MEAN_IOU_METRIC_PATH", "StreamingMeanIoU", "predicted_labels", "upsampled_logits"]
