"""Image-classification data for fine-tuning and evaluation: the embedded digits default, local image folders and
Hub datasets (optionally streamed), with lazy train/eval transforms built from the image processor.

Everything here uses PIL, NumPy and torch only (no torchvision).

Corrupt or truncated files in a local folder are *skipped with a warning* that counts them and names the first
few: one bad file out of a million should not stop a run, but the count tells you to look. Every local image is
decoded once up front for this (turn it off with `verify_images=False` for huge folders you trust). Hub datasets are
not pre-scanned; a broken image there fails when it is read, with the error naming the dataset.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from datasets import (
    ClassLabel,
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    load_dataset,
)
from datasets import Image as ImageFeature
from PIL import Image, ImageEnhance, ImageOps

from .image_processing_pvt import to_8_bit

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
DIGITS_NAME = "sklearn-digits"
# The held-out split of the embedded digits is fixed (not tied to the training seed) so that every run and every
# evaluation compares on exactly the same 360 images.
DIGITS_SPLIT_SEED = 0
HELD_OUT_FRACTION = 0.2
_SKIPPED_NAMES_SHOWN = 5
CORRUPT_FIX = "Delete or re-export them to use them."


class DataError(ValueError):
    """Bad input data; the message names the problem and how to fix it."""


@dataclass
class LabeledSplits:
    """Train/eval splits with `image` and `label` columns (a class id, or for segmentation a mask image), plus the
    class names in label-id order."""

    train: Dataset | IterableDataset | None
    eval: Dataset | IterableDataset
    label_names: list[str]
    source: str

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int]:
        return {name: index for index, name in enumerate(self.label_names)}


# --------------------------------------------------------------------------------------------------------- sources


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


def find_images(directory: str | Path, verify: bool = True, layout: str | None = None) -> tuple[list[Path], list[Path]]:
    """(readable image files, corrupt/truncated files) under `directory`, sorted. Raises `DataError` when the
    directory is missing or holds no image files; `layout` says where the files belong (default: class folders)."""
    directory = Path(directory)
    if not directory.is_dir():
        raise DataError(f"Image folder {directory} does not exist or is not a directory. Check the path.")
    files = sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        layout = layout or (
            f"Put the images in one subfolder per class, e.g. {directory}/cat/0001.jpg and {directory}/dog/0001.jpg."
        )
        raise DataError(f"No image files found under {directory} (looked for {', '.join(IMAGE_EXTENSIONS)}). {layout}")
    if not verify:
        return files, []
    readable, corrupt = [], []
    for path in files:
        try:
            with Image.open(path) as image:
                image.load()  # a full decode: `verify()` alone misses truncated JPEGs
            readable.append(path)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
            corrupt.append(path)
    return readable, corrupt


def warn_skipped(skipped: list[Path], total: int, directory: Path, kind: str, fix: str) -> None:
    """One warning that counts the files left out of `directory` and names the first few."""
    if not skipped:
        return
    shown = ", ".join(str(p) for p in skipped[:_SKIPPED_NAMES_SHOWN])
    more = f" and {len(skipped) - _SKIPPED_NAMES_SHOWN} more" if len(skipped) > _SKIPPED_NAMES_SHOWN else ""
    logger.warning(
        "Skipping %d %s file(s) of %d in %s: %s%s. %s", len(skipped), kind, total, directory, shown, more, fix
    )


def _class_of(path: Path, root: Path) -> str | None:
    parts = path.relative_to(root).parts
    return parts[0] if len(parts) > 1 else None


def _checked_folder_files(directory: Path, verify: bool) -> list[Path]:
    readable, corrupt = find_images(directory, verify)
    warn_skipped(corrupt, len(corrupt) + len(readable), directory, "corrupt or truncated image", CORRUPT_FIX)
    if not readable:
        raise DataError(f"All {len(corrupt)} image files under {directory} are corrupt or truncated.")
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
) -> LabeledSplits:
    """Local folders laid out as `<dir>/<class_name>/<image>`, read with the `datasets` imagefolder builder. Without
    `validation_dir`, a stratified `held_out_fraction` of the train folder is held out; without `train_dir`
    (evaluation only), `validation_dir` is the eval split."""
    if train_dir is None and validation_dir is None:
        raise DataError("Pass a train folder, a validation folder, or both.")
    data_files, classes_of = {}, {}
    for split, directory in (("train", train_dir), ("validation", validation_dir)):
        if directory is not None:
            files = _checked_folder_files(Path(directory), verify_images)
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


def open_hub_dataset(
    dataset_name: str,
    dataset_config_name: str | None,
    image_column: str,
    label_column: str | tuple[str, ...],
    train_split: str | None,
    eval_split: str | None,
    streaming: bool,
) -> tuple[DatasetDict | IterableDatasetDict, str | None, Features]:
    """(the dataset with only its image and label columns, renamed `image` and `label`; the eval split, defaulting
    to `validation`, then `test`, None when it has neither; the features of the reference split after the rename).
    `label_column` may be several candidate names, the first present is used. Missing splits and columns raise
    `DataError` naming the flag that fixes them."""
    dataset = load_dataset(dataset_name, dataset_config_name, streaming=streaming)
    available = list(dataset)
    if eval_split is None:
        eval_split = next((name for name in ("validation", "test") if name in dataset), None)
    for split in (train_split, eval_split):
        if split is not None and split not in dataset:
            raise DataError(
                f"Dataset {dataset_name} has no split {split!r}; it has {available}. Pass --train_split_name / "
                "--eval_split_name."
            )
    reference = train_split or eval_split
    features = dataset[reference].features
    if features is None:  # some streamed datasets only reveal their columns in the first example
        features = Features({name: None for name in next(iter(dataset[reference]))})
    if not isinstance(label_column, str):
        label_column = next((name for name in label_column if name in features), " or ".join(label_column))
    _require_columns(features, dataset_name, image_column, label_column)
    rename = {image_column: "image", label_column: "label"}
    dataset = dataset.rename_columns({old: new for old, new in rename.items() if old != new})
    dataset = dataset.select_columns(["image", "label"])
    features = Features({"image": features[image_column], "label": features[label_column]})
    return dataset, eval_split, features


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


def _require_columns(features, dataset_name: str, image_column: str, label_column: str) -> None:
    columns = list(features)
    for kind, column, flag in (
        ("image", image_column, "--image_column_name"),
        ("label", label_column, "--label_column_name"),
    ):
        if column not in columns:
            raise DataError(
                f"Dataset {dataset_name} has no {kind} column {column!r}; its columns are {columns}. "
                f"Pass {flag} <column>."
            )


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


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB from any PIL mode: grayscale and palette are expanded, alpha is composited on white, and 16/32-bit
    images are scaled to 8 bit by their value range instead of being clipped to white."""
    image = to_8_bit(image)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB") if image.mode != "RGB" else image


def processor_size(image_processor) -> tuple[int, int]:
    """(height, width) that the processor's output has."""
    size = image_processor.crop_size if image_processor.do_center_crop else image_processor.size
    if "height" in size:
        return size["height"], size["width"]
    edge = size["shortest_edge"]
    return edge, edge


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


def attach_transform(dataset: Dataset | IterableDataset, transform) -> Dataset | IterableDataset:
    """`transform` applied lazily: on access for a dataset, while iterating for a stream."""
    if isinstance(dataset, IterableDataset):
        # Streams have no set_transform; a batched map is applied lazily while iterating.
        return dataset.map(transform, batched=True, batch_size=64, remove_columns=["image", "label"])
    return dataset.with_transform(transform)


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
        return load_image_folder_splits(train_dir, validation_dir, verify_images=verify_images)
    return load_digits_splits(digits_image_size)


@dataclass
class DatasetArguments:
    """Where the images come from; shared by fine-tuning and evaluation (HfArgumentParser dataclass)."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset (or local dataset path). Default: the embedded digits."}
    )
    dataset_config_name: str | None = field(default=None, metadata={"help": "Configuration of --dataset_name."})
    train_dir: str | None = field(default=None, metadata={"help": "Local folder laid out as <class_name>/<image>."})
    validation_dir: str | None = field(
        default=None, metadata={"help": "Local eval folder; default: a stratified 20%% of --train_dir."}
    )
    image_column_name: str = field(default="image", metadata={"help": "Image column of --dataset_name."})
    label_column_name: str = field(default="label", metadata={"help": "Label column of --dataset_name."})
    train_split_name: str = field(default="train", metadata={"help": "Train split of --dataset_name."})
    eval_split_name: str | None = field(
        default=None, metadata={"help": "Eval split of --dataset_name; default: validation, then test."}
    )
    streaming: bool = field(
        default=False, metadata={"help": "Stream --dataset_name instead of downloading it (fine-tuning only)."}
    )
    verify_images: bool = field(
        default=True,
        metadata={"help": "Decode every local image once up front and skip corrupt/truncated ones (with a count)."},
    )

    @property
    def is_digits(self) -> bool:
        return not (self.dataset_name or self.train_dir or self.validation_dir)

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
        )


__all__ = [
    "DataError",
    "DatasetArguments",
    "LabeledSplits",
    "TrainAugmentation",
    "attach_transform",
    "check_labels",
    "find_images",
    "load_digits_splits",
    "load_hub_splits",
    "load_image_folder_splits",
    "load_splits",
    "make_transform",
    "open_hub_dataset",
    "rand_augment",
    "random_resized_crop",
    "to_rgb",
    "upscaled_digits",
    "warn_skipped",
    "with_transforms",
]
