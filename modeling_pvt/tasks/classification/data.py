"""Image-classification data for fine-tuning and evaluation: the embedded digits default, local folders laid out as
<class>/<image> and Hub datasets with a class-label column, with lazy train/eval transforms built from the image
processor (PIL, NumPy and torch only; no torchvision)."""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from datasets import ClassLabel, Dataset, IterableDataset, load_dataset
from PIL import Image, ImageEnhance, ImageOps

from ...data.digits import DIGITS_SPLIT_SEED, HELD_OUT_FRACTION, load_digits_splits
from ...data.sources import (
    CORRUPT,
    CORRUPT_FIX,
    DataError,
    DatasetArguments,
    LabeledSplits,
    attach_transform,
    find_images,
    open_hub_dataset,
    processor_size,
    refuse_mostly_skipped,
    to_rgb,
    warn_skipped,
)

logger = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------- sources


def _class_of(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def _checked_folder_files(directory: Path, verify: bool, allow_skipped_files: bool = False) -> list[Path]:
    readable, corrupt = find_images(directory, verify)
    if not readable:
        raise DataError(f"All {len(corrupt)} image files under {directory} are corrupt or truncated.")
    total = len(corrupt) + len(readable)
    refuse_mostly_skipped({CORRUPT: corrupt}, total, str(directory), "image", allow_skipped_files)
    warn_skipped(corrupt, total, directory, f"{CORRUPT} image", CORRUPT_FIX)
    unlabeled = [p for p in readable if _class_of(p, directory) is None]
    if unlabeled:
        raise DataError(
            f"{len(unlabeled)} image(s) sit directly in {directory} (e.g. {unlabeled[0].name}), so they have no label. "
            f"The label of an image is the name of its subfolder: move them to {directory}/<class_name>/."
        )
    return readable


def load_image_folder_splits(
    train_dir: str | Path | None,
    validation_dir: str | Path | None = None,
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
    verify_images: bool = True,
    allow_skipped_files: bool = False,
) -> LabeledSplits:
    """Local folders laid out as `<dir>/<class_name>/<image>`, read with the `datasets` imagefolder builder. Without
    `validation_dir`, a stratified `held_out_fraction` of the train folder is held out; without `train_dir`
    (evaluation only), `validation_dir` is the eval split. A folder of which more than half of the images are corrupt
    is refused unless `allow_skipped_files` (`refuse_mostly_skipped`)."""
    if train_dir is None and validation_dir is None:
        raise DataError("Pass a train folder, a validation folder, or both.")
    data_files, classes_of = {}, {}
    for split, directory in (("train", train_dir), ("validation", validation_dir)):
        if directory is not None:
            files = _checked_folder_files(Path(directory), verify_images, allow_skipped_files)
            classes_of[split] = {_class_of(path, Path(directory)) for path in files}
            data_files[split] = [str(path) for path in files]
    class_names = set().union(*classes_of.values())
    source = str(train_dir or validation_dir)
    unseen = sorted(classes_of.get("validation", set()) - classes_of.get("train", classes_of.get("validation")))
    if unseen:  # usually a typo in a folder name; the model would be scored on a class it never saw
        raise DataError(
            f"The validation folder {validation_dir} has classes the training folder {train_dir} lacks: {unseen}. "
            f"Training classes: {sorted(classes_of['train'])}; validation classes: "
            f"{sorted(classes_of['validation'])}. Rename the folders so that both use the same class names."
        )
    if len(class_names) < 2:  # the imagefolder builder would silently drop the label column
        raise _single_class_error(source, sorted(class_names))
    dataset = load_dataset("imagefolder", data_files=data_files)
    label_names = dataset[next(iter(dataset))].features["label"].names
    if "validation" in dataset:
        splits = LabeledSplits(dataset.get("train"), dataset["validation"], label_names, source)
    else:
        splits = _hold_out(dataset["train"], held_out_fraction, seed, label_names, source)
    check_labels(splits)
    return splits


def load_hub_splits(
    dataset_name: str,
    dataset_config_name: str | None = None,
    image_column: str = "image",
    label_column: str = "label",
    train_split: str | None = "train",
    eval_split: str | None = None,
    streaming: bool = False,
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
) -> LabeledSplits:
    """A dataset by Hub name (or local dataset path such as a folder of parquet files). `eval_split` defaults to
    `validation`, then `test`; if neither exists, a stratified `held_out_fraction` of the train split is held out
    (not possible when streaming). `train_split=None` loads only the eval split (evaluation)."""
    dataset, eval_split, features = open_hub_dataset(
        dataset_name, dataset_config_name, image_column, label_column, train_split, eval_split, streaming
    )
    label_feature = features["label"]
    if not isinstance(label_feature, ClassLabel):
        if streaming:
            raise DataError(
                f"Column {label_column!r} of {dataset_name} is not a ClassLabel, so the class names cannot be known "
                "without reading the whole stream. Stream a dataset whose labels are a ClassLabel, or drop --streaming."
            )
        dataset = dataset.class_encode_column("label")
        label_feature = dataset[train_split or eval_split].features["label"]
    label_names = list(label_feature.names)
    if eval_split is None:
        if streaming or train_split is None:
            raise DataError(
                f"Dataset {dataset_name} has no validation or test split ({list(dataset)}); a held-out part cannot "
                "be cut from a stream. Pass --eval_split_name, or drop --streaming to hold out part of the train split."
            )
        splits = _hold_out(dataset[train_split], held_out_fraction, seed, label_names, dataset_name)
    else:
        train = dataset[train_split] if train_split is not None else None
        splits = LabeledSplits(train, dataset[eval_split], label_names, dataset_name)
    check_labels(splits)
    return splits


def _hold_out(dataset: Dataset, fraction: float, seed: int, label_names: list[str], source: str) -> LabeledSplits:
    if len(label_names) < 2:
        raise _single_class_error(source, label_names)
    try:
        parts = dataset.train_test_split(test_size=fraction, stratify_by_column="label", seed=seed)
    except ValueError as error:  # too few images per class for a stratified split
        counts = np.bincount(np.asarray(dataset["label"]), minlength=len(label_names))
        fewest = ", ".join(f"{label_names[i]}: {counts[i]}" for i in np.argsort(counts, kind="stable")[:3])
        raise DataError(
            f"Cannot hold out a stratified {fraction:.0%} of {source} for evaluation: {len(dataset)} images in "
            f"{len(label_names)} classes, the fewest in {fewest}. Each class needs at least 2 images and the held-out "
            "part at least one per class: add images, or give a separate evaluation set (--validation_dir, or "
            "--eval_split_name for a Hub dataset)."
        ) from error
    return LabeledSplits(parts["train"], parts["test"], label_names, source)


def _single_class_error(source: str, label_names: list[str]) -> DataError:
    return DataError(
        f"{source} has only {len(label_names)} class ({label_names}); classification needs at least 2. "
        "Add images of the other classes (one subfolder per class), or check the label column."
    )


def check_labels(splits: LabeledSplits) -> None:
    """At least two classes, and every label id in `[0, num_classes)` (datasets mark unlabeled rows with -1)."""
    if len(splits.label_names) < 2:
        raise _single_class_error(splits.source, splits.label_names)
    for name, split in (("train", splits.train), ("eval", splits.eval)):
        if split is None or isinstance(split, IterableDataset):
            continue  # streamed labels are checked batch by batch in the transform
        labels = np.asarray(split["label"])
        _check_label_range(labels, len(splits.label_names), f"the {name} split of {splits.source}")


def _check_label_range(labels: np.ndarray, num_classes: int, where: str) -> None:
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise DataError(
            f"{where} has {bad.size} label(s) outside 0..{num_classes - 1} (e.g. {int(bad[0])}); -1 usually marks an "
            "unlabeled split such as a competition test set. Evaluate on a labeled split, or fix the labels."
        )


# ------------------------------------------------------------------------------------------------------ transforms


def random_resized_crop(image: Image.Image, size: tuple[int, int], scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3)):
    """Inception-style crop: a random area fraction in `scale` and aspect ratio in `ratio`, resized to `size`."""
    width, height = image.size
    area = width * height
    for _ in range(10):
        target_area = area * random.uniform(*scale)
        aspect = math.exp(random.uniform(math.log(ratio[0]), math.log(ratio[1])))
        crop_w = round(math.sqrt(target_area * aspect))
        crop_h = round(math.sqrt(target_area / aspect))
        if 0 < crop_w <= width and 0 < crop_h <= height:
            left = random.randint(0, width - crop_w)
            top = random.randint(0, height - crop_h)
            break
    else:  # fall back to a central crop of the whole image
        crop_w, crop_h, left, top = width, height, 0, 0
    box = (left, top, left + crop_w, top + crop_h)
    return image.resize((size[1], size[0]), Image.BICUBIC, box=box)


def _affine(image, matrix):
    return image.transform(image.size, Image.AFFINE, matrix, resample=Image.BILINEAR, fillcolor=(128, 128, 128))


# RandAugment (Cubuk et al., 2020): each op maps a magnitude in [0, 1] to its strength; signed ops flip at random.
_RANDAUGMENT_OPS = {
    "identity": lambda img, m: img,
    "autocontrast": lambda img, m: ImageOps.autocontrast(img),
    "equalize": lambda img, m: ImageOps.equalize(img),
    "rotate": lambda img, m: img.rotate(30 * m * random.choice((-1, 1)), Image.BILINEAR, fillcolor=(128, 128, 128)),
    "solarize": lambda img, m: ImageOps.solarize(img, int(256 - 256 * m)),
    "posterize": lambda img, m: ImageOps.posterize(img, max(1, 8 - int(4 * m))),
    "color": lambda img, m: ImageEnhance.Color(img).enhance(1 + 0.9 * m * random.choice((-1, 1))),
    "contrast": lambda img, m: ImageEnhance.Contrast(img).enhance(1 + 0.9 * m * random.choice((-1, 1))),
    "brightness": lambda img, m: ImageEnhance.Brightness(img).enhance(1 + 0.9 * m * random.choice((-1, 1))),
    "sharpness": lambda img, m: ImageEnhance.Sharpness(img).enhance(1 + 0.9 * m * random.choice((-1, 1))),
    "shear_x": lambda img, m: _affine(img, (1, 0.3 * m * random.choice((-1, 1)), 0, 0, 1, 0)),
    "shear_y": lambda img, m: _affine(img, (1, 0, 0, 0.3 * m * random.choice((-1, 1)), 1, 0)),
    "translate_x": lambda img, m: _affine(img, (1, 0, 0.45 * m * img.width * random.choice((-1, 1)), 0, 1, 0)),
    "translate_y": lambda img, m: _affine(img, (1, 0, 0, 0, 1, 0.45 * m * img.height * random.choice((-1, 1)))),
}


def rand_augment(image: Image.Image, num_ops: int, magnitude: int) -> Image.Image:
    """`num_ops` random ops at `magnitude` (0..10, as in the paper and timm's `rand-m9-n2`)."""
    for name in random.choices(list(_RANDAUGMENT_OPS), k=num_ops):
        image = _RANDAUGMENT_OPS[name](image, magnitude / 10)
    return image


@dataclass
class TrainAugmentation:
    """Per-image train augmentation; mixup/cutmix act on whole batches and live in the trainer."""

    crop_scale_min: float = 0.08
    horizontal_flip_probability: float = 0.5
    rand_augment_ops: int = 0
    rand_augment_magnitude: int = 9


def _normalized(images: list[Image.Image], image_processor, **overrides) -> torch.Tensor:
    return image_processor(images, return_tensors="pt", **overrides)["pixel_values"]


def make_transform(image_processor, num_classes: int, augmentation: TrainAugmentation | None = None):
    """A batch transform for `set_transform`/`with_transform`: `image`, `label` -> `pixel_values`, `labels`.

    With `augmentation`: random-resized crop to the processor's size, horizontal flip, optional RandAugment, then the
    processor's rescale and mean/std. Without: the processor as is (its resize, crop, rescale, normalize)."""
    size = processor_size(image_processor)

    def transform(batch: dict) -> dict:
        labels = np.asarray(batch["label"])
        _check_label_range(labels, num_classes, "a batch of the dataset")
        images = [to_rgb(image) for image in batch["image"]]
        if augmentation is None:
            pixel_values = _normalized(images, image_processor)
        else:
            augmented = []
            for image in images:
                image = random_resized_crop(image, size, scale=(augmentation.crop_scale_min, 1.0))
                if random.random() < augmentation.horizontal_flip_probability:
                    image = image.transpose(Image.FLIP_LEFT_RIGHT)
                if augmentation.rand_augment_ops:
                    image = rand_augment(image, augmentation.rand_augment_ops, augmentation.rand_augment_magnitude)
                augmented.append(image)
            pixel_values = _normalized(augmented, image_processor, do_resize=False, do_center_crop=False)
        return {"pixel_values": list(pixel_values), "labels": labels.tolist()}

    return transform


def with_transforms(splits: LabeledSplits, image_processor, augmentation: TrainAugmentation | None) -> LabeledSplits:
    """The splits with lazy transforms attached (train augmented, eval deterministic)."""
    num_classes = len(splits.label_names)
    train = splits.train
    if train is not None:
        train = attach_transform(train, make_transform(image_processor, num_classes, augmentation))
    evaluation = attach_transform(splits.eval, make_transform(image_processor, num_classes))
    return LabeledSplits(train, evaluation, splits.label_names, splits.source)


def load_splits(
    *,
    dataset_name: str | None = None,
    dataset_config_name: str | None = None,
    train_dir: str | None = None,
    validation_dir: str | None = None,
    image_column_name: str = "image",
    label_column_name: str = "label",
    train_split_name: str | None = "train",
    eval_split_name: str | None = None,
    streaming: bool = False,
    digits_image_size: int = 32,
    verify_images: bool = True,
    allow_skipped_files: bool = False,
) -> LabeledSplits:
    """Dispatches to the right source: a Hub dataset, local folders, or (given neither) the embedded digits."""
    if dataset_name and (train_dir or validation_dir):
        raise DataError("Pass either --dataset_name or --train_dir/--validation_dir, not both.")
    if dataset_name:
        return load_hub_splits(
            dataset_name,
            dataset_config_name,
            image_column_name,
            label_column_name,
            train_split_name,
            eval_split_name,
            streaming,
        )
    if streaming:
        raise DataError("--streaming needs --dataset_name; local folders and the embedded digits are read directly.")
    if train_dir or validation_dir:
        return load_image_folder_splits(
            train_dir, validation_dir, verify_images=verify_images, allow_skipped_files=allow_skipped_files
        )
    return load_digits_splits(digits_image_size)


@dataclass
class ClassificationDatasetArguments(DatasetArguments):
    """The shared data flags, loaded as image-classification splits."""

    def load(self, digits_image_size: int = 32) -> LabeledSplits:
        return load_splits(
            dataset_name=self.dataset_name,
            dataset_config_name=self.dataset_config_name,
            train_dir=self.train_dir,
            validation_dir=self.validation_dir,
            image_column_name=self.image_column_name,
            label_column_name=self.label_column_name,
            train_split_name=self.train_split_name,
            eval_split_name=self.eval_split_name,
            streaming=self.streaming,
            digits_image_size=digits_image_size,
            verify_images=self.verify_images,
            allow_skipped_files=self.allow_skipped_files,
        )
