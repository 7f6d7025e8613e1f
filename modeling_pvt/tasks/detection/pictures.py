"""Detection pictures: held-out images with their ground-truth boxes and the model's predicted boxes (label + score),
and the figures of the training curves."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from ...pictures import LOSS_FIGURE, PREDICTION_GRID_IMAGES, denormalized, palette, pyplot, save_figure
from .transforms import DetectionCollator

DETECTION_FIGURES = {
    "loss_curve.png": LOSS_FIGURE,
    "map_curve.png": (
        "Held-out COCO mAP",
        (("eval_map", "mAP@[.5:.95]"), ("eval_map_50", "AP50"), ("eval_map_75", "AP75")),
    ),
}
# Predictions drawn from this score on (the metric counts every one above the processor's 0.05; drawn, the many
# low-scoring alternatives would hide the boxes). On the default run's held-out canvases 0.5 gave the best F1 at IoU
# 0.5 (precision 0.90, recall 0.82; at 0.3: 0.47 and 0.96).
SHOWN_SCORE = 0.5
_COLUMNS = 4


def plot_detection_grid(
    images: list[np.ndarray],
    references: list[dict],
    predictions: list[dict],
    label_names: list[str],
    path: str | Path,
    shown_score: float = SHOWN_SCORE,
) -> Path:
    """A PNG grid of `images` (H, W, 3) uint8: each with its ground-truth boxes (dashed white) and its predictions
    scoring at least `shown_score` (solid, in the class's colour, labelled `class score`). `references` hold
    `boxes` (n, 4) and `class_labels`, `predictions` `boxes`, `labels` and `scores`; boxes are (x0, y0, x1, y1)
    pixels of the image."""
    from matplotlib.patches import Rectangle

    plt = pyplot()
    colours = palette(len(label_names)) / 255.0
    rows = -(-len(images) // _COLUMNS)
    columns = min(len(images), _COLUMNS)
    figure, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3.6 * rows + 0.3), squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for axis, image, reference, prediction in zip(axes.flat, images, references, predictions, strict=False):
        axis.imshow(image, interpolation="nearest")
        # Boxes are in pixel-edge coordinates; imshow puts pixel centres at integers, edges at -0.5.
        for x0, y0, x1, y1 in np.asarray(reference["boxes"], dtype=np.float64).reshape(-1, 4) - 0.5:
            axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="white", linestyle="--", lw=1))
        shown = 0
        for box, label, score in zip(prediction["boxes"], prediction["labels"], prediction["scores"]):
            if score < shown_score:
                continue
            shown += 1
            x0, y0, x1, y1 = (float(value) - 0.5 for value in box)
            colour = colours[int(label) % len(colours)]
            axis.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor=colour, lw=1.5))
            axis.text(
                x0, y0, f"{label_names[int(label)]} {score:.2f}", color="black", fontsize=7, va="bottom",
                bbox={"facecolor": colour, "edgecolor": "none", "pad": 0.5, "alpha": 0.85},
            )  # fmt: skip
        title = f"{len(reference['class_labels'])} true, {shown} predicted (score ≥ {shown_score})"
        axis.set_title(title, fontsize=8)
    figure.suptitle("Held-out images: ground truth dashed white, predictions coloured with class and score", fontsize=9)
    figure.tight_layout(rect=(0, 0, 1, 1 - 0.3 / figure.get_figheight()))
    return save_figure(figure, path)


@torch.inference_mode()
def plot_detections(
    model, eval_dataset, image_processor, label_names: list[str], path, count: int = PREDICTION_GRID_IMAGES
) -> Path:
    """The first `count` examples of a transformed eval dataset, predicted one at a time at the eval scale, as
    `plot_detection_grid` draws them (in the model input's frame)."""
    model.eval()
    images, references, predictions = [], [], []
    collate = DetectionCollator()
    for example in itertools.islice(iter(eval_dataset), count):
        batch = collate([example])
        outputs = model(
            pixel_values=batch["pixel_values"].to(model.device), pixel_mask=batch["pixel_mask"].to(model.device)
        )
        found = image_processor.post_process_object_detection(outputs)[0]
        predictions.append({name: value.float().cpu().numpy() for name, value in found.items()})
        references.append({name: value.numpy() for name, value in batch["labels"][0].items()})
        pixels = batch["pixel_values"][0]
        height, width = (int(side) for side in outputs.image_sizes[0])
        images.append(denormalized(pixels[:, :height, :width], image_processor.image_mean, image_processor.image_std))
    return plot_detection_grid(images, references, predictions, label_names, path)


__all__ = ["DETECTION_FIGURES", "SHOWN_SCORE", "plot_detection_grid", "plot_detections"]
