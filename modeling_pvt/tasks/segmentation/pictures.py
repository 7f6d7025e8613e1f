"""Segmentation pictures: a grid of held-out images with ground-truth and prediction overlays."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import torch

from ...pictures import (
    LOSS_FIGURE,
    PREDICTION_GRID_IMAGES,
    denormalized,
    palette,
    pyplot,
    save_figure,
)
from .data import IGNORE_INDEX
from .metrics import upsampled_logits

SEGMENTATION_FIGURES = {
    "loss_curve.png": LOSS_FIGURE,
    "miou_curve.png": (
        "Eval mean IoU and pixel accuracy",
        (("eval_mean_iou", "mean IoU"), ("eval_overall_accuracy", "pixel accuracy")),
    ),
}


_OVERLAY_ALPHA = 0.75


_GREY_LEVEL = 0.7


def background_ids(label_names: list[str]) -> list[int]:
    """Classes drawn transparent: those named background (the grid digits' class 0)."""
    return [index for index, name in enumerate(label_names) if name.strip().lower() == "background"]


def overlay(image: np.ndarray, mask: np.ndarray, colours: np.ndarray, transparent: list[int] = ()) -> np.ndarray:
    """`image` (H, W, 3) uint8, dimmed to grey so that the tints read true whatever the image's own colours, with each
    class of `mask` (H, W) tinted in its colour; the ignore index and the `transparent` classes stay grey."""
    visible = (mask != IGNORE_INDEX) & (mask >= 0) & (mask < len(colours)) & ~np.isin(mask, list(transparent))
    grey = image.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    blended = np.repeat(_GREY_LEVEL * grey[..., None], 3, axis=-1)
    tint = colours[np.where(visible, mask, 0)].astype(np.float32)
    blended[visible] = (1 - _OVERLAY_ALPHA) * blended[visible] + _OVERLAY_ALPHA * tint[visible]
    return blended.round().astype(np.uint8)


def plot_segmentation_grid(
    images: list[np.ndarray],
    references: list[np.ndarray],
    predictions: list[np.ndarray],
    label_names: list[str],
    path: str | Path,
    transparent: list[int] | None = None,
) -> Path:
    """A PNG with one row per image: the image | ground truth overlay | prediction overlay (with the image's pixel
    accuracy), and a legend of the classes that appear. Background classes (`background_ids` unless `transparent`
    says otherwise) and ignored pixels stay uncoloured."""
    from matplotlib.patches import Patch

    plt = pyplot()
    colours = palette(len(label_names))
    transparent = background_ids(label_names) if transparent is None else list(transparent)
    rows = len(images)
    figure, axes = plt.subplots(rows, 3, figsize=(7.5, 2.5 * rows + 0.9), squeeze=False)
    for row, (image, reference, prediction) in enumerate(zip(images, references, predictions, strict=True)):
        labelled = reference != IGNORE_INDEX
        accuracy = (prediction[labelled] == reference[labelled]).mean() if labelled.any() else float("nan")
        panels = (
            (image, "image"),
            (overlay(image, reference, colours, transparent), "ground truth"),
            (overlay(image, prediction, colours, transparent), f"prediction ({accuracy:.0%} of pixels right)"),
        )
        for column, (picture, title) in enumerate(panels):
            axes[row, column].imshow(picture, interpolation="nearest")
            axes[row, column].set_axis_off()
            axes[row, column].set_title(title, fontsize=9)
    shown = sorted(set(itertools.chain.from_iterable(np.unique(m).tolist() for m in [*references, *predictions])))
    shown = [index for index in shown if 0 <= index < len(label_names) and index not in transparent]
    handles = [Patch(color=colours[index] / 255.0, label=label_names[index]) for index in shown]
    legend_rows = 0
    if handles:
        columns = min(len(handles), 5)
        legend_rows = -(-len(handles) // columns)
        figure.legend(handles=handles, loc="lower center", ncol=columns, fontsize=8, frameon=False)
    # Room at the bottom for the legend (about 0.22 inch per legend row).
    figure.tight_layout(rect=(0, min(0.5, 0.22 * legend_rows / figure.get_figheight()), 1, 1))
    return save_figure(figure, path)


@torch.inference_mode()
def plot_predictions(
    model, eval_dataset, image_processor, label_names: list[str], path, count: int = PREDICTION_GRID_IMAGES
) -> Path:
    """The first `count` examples of a transformed eval dataset (`pixel_values`, `labels`), predicted one at a time
    at full resolution, as `plot_segmentation_grid`."""
    model.eval()
    images, references, predictions = [], [], []
    for example in itertools.islice(iter(eval_dataset), count):
        pixel_values = torch.as_tensor(np.asarray(example["pixel_values"], dtype=np.float32))
        reference = np.asarray(example["labels"], dtype=np.int64)
        logits = model(pixel_values=pixel_values[None].to(model.device)).logits
        predictions.append(upsampled_logits(logits, reference.shape).argmax(dim=1)[0].cpu().numpy())
        references.append(reference)
        images.append(denormalized(pixel_values, image_processor.image_mean, image_processor.image_std))
    return plot_segmentation_grid(images, references, predictions, label_names, path)
