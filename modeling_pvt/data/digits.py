"""scikit-learn's bundled 8x8 handwritten digits (no network): the classification default, and the digits every
embedded dense-prediction set (grid digits, scattered digits) is drawn from, with one fixed train/held-out split."""

from __future__ import annotations

import numpy as np
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from PIL import Image

from .sources import LabeledSplits

DIGITS_NAME = "sklearn-digits"
GRID_DIGITS_NAME = "grid-digits"  # the segmentation default (tasks/segmentation/data.py)
SCATTERED_DIGITS_NAME = "scattered-digits"  # the detection default (tasks/detection/data.py)
# The package's own data sets: model cards do not list them as Hub datasets.
EMBEDDED_DATASETS = (DIGITS_NAME, GRID_DIGITS_NAME, SCATTERED_DIGITS_NAME)


# The held-out split of the embedded digits is fixed (not tied to the training seed) so that every run and every
# evaluation compares on exactly the same 360 images.
DIGITS_SPLIT_SEED = 0


HELD_OUT_FRACTION = 0.2


def upscaled_digits(image_size: int) -> tuple[list[Image.Image], np.ndarray, np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits (1797, shipped with scikit-learn, no network) as grayscale
    `image_size` images, their classes, and the fixed stratified 80/20 (train, held-out) index split that every task
    built on them shares."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    # Pixel values are 0..16; scale to 0..255 and upscale bicubically so strokes stay smooth.
    pixels = (digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = [Image.fromarray(array, mode="L").resize((image_size, image_size), Image.BICUBIC) for array in pixels]
    train_indices, eval_indices = train_test_split(
        np.arange(len(images)), test_size=HELD_OUT_FRACTION, stratify=digits.target, random_state=DIGITS_SPLIT_SEED
    )
    return images, digits.target, train_indices, eval_indices


def load_digits_splits(image_size: int = 32) -> LabeledSplits:
    """The digits as `image_size` RGB images with their class labels, split as `upscaled_digits` splits them."""
    grayscale, classes, train_indices, eval_indices = upscaled_digits(image_size)
    images = [image.convert("RGB") for image in grayscale]
    labels = classes.tolist()
    label_names = [str(digit) for digit in range(10)]
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=label_names)})

    def subset(indices):
        return Dataset.from_dict(
            {"image": [images[i] for i in indices], "label": [labels[i] for i in indices]}, features=features
        )

    return LabeledSplits(subset(train_indices), subset(eval_indices), label_names, DIGITS_NAME)
