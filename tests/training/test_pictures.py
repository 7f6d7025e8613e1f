"""Pictures: training curves by metric key, segmentation overlays and the prediction grid."""

from types import SimpleNamespace

import numpy as np
import torch
from PIL import Image

from modeling_pvt import PvtImageProcessor
from modeling_pvt.pictures import palette, plot_training_curves
from modeling_pvt.tasks.classification.task import CLASSIFICATION_FIGURES
from modeling_pvt.tasks.segmentation.data import (
    GRID_LABEL_NAMES,
    load_grid_digits_splits,
)
from modeling_pvt.tasks.segmentation.pictures import (
    SEGMENTATION_FIGURES,
    overlay,
    plot_predictions,
    plot_segmentation_grid,
)
from modeling_pvt.tasks.segmentation.transforms import with_segmentation_transforms

LOG_HISTORY = [
    {"step": 10, "loss": 2.0},
    {"step": 20, "loss": 1.5},
    {"step": 20, "eval_loss": 1.6, "eval_mean_iou": 0.3, "eval_overall_accuracy": 0.8},
    {"step": 30, "loss": 1.0},
    {"step": 30, "eval_loss": 1.1, "eval_mean_iou": 0.5, "eval_overall_accuracy": 0.9},
]


def test_curves_are_written_per_figure_and_skipped_without_data(tmp_path):
    written = plot_training_curves(LOG_HISTORY, tmp_path, SEGMENTATION_FIGURES)
    assert [path.name for path in written] == ["loss_curve.png", "miou_curve.png"]
    assert all(Image.open(path).size == (600, 400) for path in written)
    train_only = [entry for entry in LOG_HISTORY if "loss" in entry]
    assert [p.name for p in plot_training_curves(train_only, tmp_path / "no-eval", SEGMENTATION_FIGURES)] == [
        "loss_curve.png"
    ]
    assert not (tmp_path / "no-eval" / "miou_curve.png").exists()
    assert [p.name for p in plot_training_curves(train_only, tmp_path / "cls", CLASSIFICATION_FIGURES)] == [
        "loss_curve.png"
    ]


def test_palette_is_fixed_and_distinct_and_overlay_leaves_background_and_ignored_pixels():
    colours = palette(150)
    assert colours.shape == (150, 3) and np.array_equal(colours, palette(150))
    assert len({tuple(c) for c in colours}) == 150
    image = np.full((2, 3, 3), 100, np.uint8)
    mask = np.array([[0, 1, 255], [2, 2, 1]])
    tinted = overlay(image, mask, palette(3), transparent=[0])
    grey = tinted[0, 0]
    assert (tinted[0, 2] == grey).all()  # ignored pixel stays like the background one
    assert not (tinted[0, 1] == grey).all() and (tinted[0, 1] == tinted[1, 2]).all()  # same class, same tint
    assert not (tinted[1, 0] == tinted[0, 1]).all()


def test_segmentation_grid_png_is_written(tmp_path):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (64, 64, 3), dtype=np.uint8) for _ in range(3)]
    references = [rng.integers(0, 11, (64, 64)) for _ in range(3)]
    predictions = [np.where(rng.random((64, 64)) < 0.8, r, 0) for r in references]
    path = plot_segmentation_grid(images, references, predictions, GRID_LABEL_NAMES, tmp_path / "grid.png")
    width, height = Image.open(path).size
    assert width == 750 and height > 3 * 200  # three columns, one row per image, plus the legend


class _ConstantSegmenter(torch.nn.Module):
    """Stands in for PvtForSemanticSegmentation's interface: logits at a quarter of the input resolution."""

    def __init__(self, num_labels: int):
        super().__init__()
        self.num_labels = num_labels
        self.weight = torch.nn.Parameter(torch.zeros(()))

    @property
    def device(self):
        return self.weight.device

    def forward(self, pixel_values):
        batch, _, height, width = pixel_values.shape
        logits = torch.zeros(batch, self.num_labels, -(-height // 4), -(-width // 4))
        logits[:, 1] = 1.0
        return SimpleNamespace(logits=logits)


def test_plot_predictions_from_a_transformed_eval_split(tmp_path):
    processor = PvtImageProcessor()
    splits = with_segmentation_transforms(load_grid_digits_splits(4, 4), processor, None)
    path = plot_predictions(_ConstantSegmenter(11), splits.eval, processor, splits.label_names, tmp_path / "p.png", 2)
    assert Image.open(path).size[0] == 750
