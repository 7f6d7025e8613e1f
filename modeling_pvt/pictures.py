"""Pictures every task shares: training curves from Trainer's log history (by metric key), class colours and
de-normalised inputs; each task's own pictures live in its folder."""

from __future__ import annotations

import colorsys
from pathlib import Path

import numpy as np

# (log-history key, legend label) per line, and (title, lines) per figure file.
LOSS_FIGURE = ("Loss", (("loss", "train loss"), ("eval_loss", "eval loss")))
# Colours of the first classes, far apart from each other: matplotlib's tab20 (strong half first), its greys
# swapped for yellows because overlays are drawn on a grey image.
_FIRST_COLOURS = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75), (227, 119, 194),
    (255, 230, 0), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120), (152, 223, 138),
    (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (255, 250, 160), (219, 219, 141),
    (158, 218, 229),
]  # fmt: skip
PREDICTION_GRID_IMAGES = 8


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(figure, path: str | Path) -> Path:
    """Writes a matplotlib figure as a PNG (creating its folder) and frees it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    pyplot().close(figure)
    return path


def plot_training_curves(log_history: list[dict], output_dir: str | Path, figures: dict) -> list[Path]:
    """One PNG per `figures` entry (`{filename: (title, ((key, label), ...))}`), each line the values of `key` per
    optimizer step in `log_history` (Trainer's `state.log_history`). A figure none of whose keys were logged (no eval
    data, say) is not written, rather than written empty. Returns the files written."""
    plt = pyplot()
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
        written.append(save_figure(figure, Path(output_dir) / filename))
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


def denormalized(pixel_values, image_mean, image_std) -> np.ndarray:
    """A normalised (3, H, W) image back to uint8 (H, W, 3) for display."""
    pixels = np.asarray(pixel_values, dtype=np.float32).transpose(1, 2, 0)
    return ((pixels * np.asarray(image_std) + np.asarray(image_mean)) * 255).clip(0, 255).round().astype(np.uint8)


