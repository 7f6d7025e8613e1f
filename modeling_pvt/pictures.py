"""Pictures a person looks at after a run: training curves from Trainer's log history (any task, by metric key),
and for segmentation a grid of held-out images with ground-truth and prediction overlays."""

from __future__ import annotations

import colorsys
import itertools
from pathlib import Path

import numpy as np
import torch

from .segmentation_data import IGNORE_INDEX
from .segmentation_metrics import upsampled_logits

# (log-history key, legend label) per line, and (title, lines) per figure file.
LOSS_FIGURE = ("Loss", (("loss", "train loss"), ("eval_loss", "eval loss")))
CLASSIFICATION_FIGURES = {
    "loss_curve.png": LOSS_FIGURE,
    "accuracy_curve.png": ("Eval accuracy", (("eval_accuracy", "top-1"), ("eval_top5_accuracy", "top-5"))),
}
SEGMENTATION_FIGURES = {
    "loss_curve.png": LOSS_FIGURE,
    "miou_curve.png": (
        "Eval mean IoU and pixel accuracy",
        (("eval_mean_iou", "mean IoU"), ("eval_overall_accuracy", "pixel accuracy")),
    ),
}
# Colours of the first classes, far apart from each other: matplotlib's tab20 (strong half first), its greys
# swapped for yellows because overlays are drawn on a grey image.
_FIRST_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    (255, 230, 0), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (255, 250, 160), (219, 219, 141),
    (158, 218, 229),
]  # fmt: skip
_OVERLAY_ALPHA = 0.75
PREDICTION_GRID_IMAGES = 8
_GREY_LEVEL = 0.7


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(log_history: list[dict], output_dir: str | Path, figures: dict) -> list[Path]:
    """One PNG per `figures` entry (`{filename: (title, ((key, label), ...))}`), each line the values of `key` per
    optimizer step in `log_history` (Trainer's `state.log_history`). A figure none of whose keys were logged (no eval
    data, say) is not written, rather than written empty. Returns the files written."""
    plt = _pyplot()
    written = []
    for filename, (title, lines) in figures.items():
        series = []
        for key, label in lines:
            points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
            if points:
                series.append((key, label, *zip(*points)))
        if not series:
            continue
        figure, axes = plt.subplots(figsize=(6, 4))
        for key, label, steps, values in series:
            # Evaluations are sparse: markers show where each one is.
            axes.plot(steps, values, marker="o" if key.startswith("eval") else None, markersize=3, label=label)
        axes.set_xlabel("optimizer step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        path = Path(output_dir) / filename
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=100)
        plt.close(figure)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------- segmentation grid


def palette(num_labels: int) -> np.ndarray:
    """A fixed uint8 (num_labels, 3) colour per class: the same class has the same colour in every picture."""
    colours = list(_FIRST_COLOURS[:num_labels])
    for index in range(len(colours), num_labels):
        # Golden-ratio steps round the hue circle keep later colours apart; saturation and value vary a little.
        hue = (index * 0.618033988749895) % 1.0
        colours.append(tuple(round(255 * c) for c in colorsys.hsv_to_rgb(hue, 0.65 + 0.3 * (index % 2), 0.95)))
    return np.asarray(colours, dtype=np.uint8).reshape(-1, 3)


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

    plt = _pyplot()
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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def denormalized(pixel_values, image_mean, image_std) -> np.ndarray:
    """A normalised (3, H, W) image back to uint8 (H, W, 3) for display."""
    pixels = np.asarray(pixel_values, dtype=np.float32).transpose(1, 2, 0)
    return ((pixels * np.asarray(image_std) + np.asarray(image_mean)) * 255).clip(0, 255).round().astype(np.uint8)


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


__all__ = [
    "CLASSIFICATION_FIGURES",
    "PREDICTION_GRID_IMAGES",
    "SEGMENTATION_FIGURES",
    "background_ids",
    "denormalized",
    "overlay",
    "palette",
    "plot_predictions",
    "plot_segmentation_grid",
    "plot_training_curves",
]
