"""Semantic-segmentation data: the embedded "grid digits" default, local image/mask folders and Hub datasets
(optionally streamed), each as `SegmentationSplits` whose `image` column holds images and `label` column masks.

A mask is a single-channel image of class ids, 255 = ignored. Bad data fails early with one `DataError` that names
the files or values and the fix, as in the classification path (`data.py`): RGB masks, masks whose size differs from
their image, and class ids the label names do not cover. Images without a mask and corrupt files are skipped with a
warning that counts them. Local masks are decoded once up front for these checks (`verify_images=False` skips that
for huge folders you trust); Hub masks are checked batch by batch as they are transformed.
"""

from __future__ import annotations

import io
import itertools
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, Value
from datasets import Image as ImageFeature
from PIL import Image

from ...data.digits import (
    DIGITS_SPLIT_SEED,
    GRID_DIGITS_NAME,
    HELD_OUT_FRACTION,
    upscaled_digits,
)
from ...data.sources import (
    CORRUPT,
    CORRUPT_FIX,
    DataError,
    DatasetArguments,
    LabeledSplits,
    find_images,
    held_out_split,
    hub_train_eval,
    open_hub_dataset,
    read_id2label,
    refuse_mostly_skipped,
    warn_skipped,
)

logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
ID2LABEL_FILENAME = "id2label.json"
# Class names of datasets whose Hub repos do not ship them (ADE20K's 150 classes, ids after label reduction).
_SHIPPED_LABEL_FILES = {"scene_parse_150": "ade20k_labels.json"}
_LOSSY_EXTENSIONS = (".jpg", ".jpeg")
_MASK_MODES = ("L", "P", "I", "I;16")
_EXAMPLES_SHOWN = 5

GRID_CANVAS = 64
GRID_CELL = 32
GRID_JITTER = 4
_HAZE = 0.2
GRID_TRAIN_CANVASES = 5000
GRID_EVAL_CANVASES = 500
# Fixed like the digit split itself, so that every run trains and evaluates on the same canvases.
GRID_SEED = 0
GRID_LABEL_NAMES = ["background"] + [f"digit {digit}" for digit in range(10)]


@dataclass
class SegmentationSplits(LabeledSplits):
    """`LabeledSplits` whose labels are masks; `do_reduce_labels` tells the transforms to shift the stored ids."""

    do_reduce_labels: bool = False


# ---------------------------------------------------------------------------------------------------- grid digits


def dilate(mask: np.ndarray) -> np.ndarray:
    """3x3 binary dilation of a boolean (..., H, W) mask."""
    padded = np.pad(mask, [(0, 0)] * (mask.ndim - 2) + [(1, 1), (1, 1)])
    height, width = mask.shape[-2:]
    shifted = [padded[..., dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.logical_or.reduce(shifted)


def draw_grid_digits(
    intensities: np.ndarray, classes: np.ndarray, pool: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
    """`count` canvases (uint8 (count, 64, 64, 3)), their masks (uint8 (count, 64, 64)) and the digit ids each holds.

    Each canvas is a 2x2 grid of 32-px cells on a dark noisy background; 1-3 random cells hold a digit from `pool`
    (intensities in 0..1, (N, 32, 32)) in a bright random colour, shifted by up to +-4 px. The mask is the digit's
    class + 1 on its strokes (intensity > 0.5) thickened by a 3x3 dilation: thin 1-px labels did not learn in minutes.
    Digits are drawn from `pool` in shuffled rounds, so every one of them is used about equally often."""
    rng = np.random.default_rng(seed)
    strokes = dilate(intensities > 0.5)
    # The upscaled digits have a faint haze around the strokes; without this floor it paints a visible box.
    alphas = ((intensities - _HAZE) / (1 - _HAZE)).clip(0, 1)
    order = itertools.chain.from_iterable(rng.permutation(pool) for _ in itertools.count())
    images = np.empty((count, GRID_CANVAS, GRID_CANVAS, 3), np.uint8)
    masks = np.zeros((count, GRID_CANVAS, GRID_CANVAS), np.uint8)
    used = []
    for index in range(count):
        canvas = rng.uniform(0.0, 0.4, 3) + rng.normal(0.0, 0.08, (GRID_CANVAS, GRID_CANVAS, 3))
        digits = []
        for cell in rng.choice(4, size=rng.integers(1, 4), replace=False):
            digit = int(next(order))
            top = (cell // 2) * GRID_CELL + int(rng.integers(-GRID_JITTER, GRID_JITTER + 1))
            left = (cell % 2) * GRID_CELL + int(rng.integers(-GRID_JITTER, GRID_JITTER + 1))
            # The part of the 32x32 digit that falls on the canvas.
            y0, x0 = max(top, 0), max(left, 0)
            y1, x1 = min(top + GRID_CELL, GRID_CANVAS), min(left + GRID_CELL, GRID_CANVAS)
            alpha = alphas[digit, y0 - top : y1 - top, x0 - left : x1 - left, None]
            colour = rng.uniform(0.6, 1.0, 3)
            canvas[y0:y1, x0:x1] = canvas[y0:y1, x0:x1] * (1 - alpha) + colour * alpha
            stroke = strokes[digit, y0 - top : y1 - top, x0 - left : x1 - left]
            masks[index, y0:y1, x0:x1][stroke] = classes[digit] + 1
            digits.append(digit)
        images[index] = (canvas.clip(0, 1) * 255).round().astype(np.uint8)
        used.append(digits)
    return images, masks, used


def _encoded(array: np.ndarray) -> dict:
    # BMP is uncompressed: encoding thousands of canvases takes a fraction of the time PNG does, and it is lossless.
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="BMP")
    return {"bytes": buffer.getvalue(), "path": None}


def _image_dataset(images: np.ndarray, masks: np.ndarray) -> Dataset:
    features = Features({"image": ImageFeature(), "label": ImageFeature()})
    data = {"image": [_encoded(image) for image in images], "label": [_encoded(mask) for mask in masks]}
    return Dataset.from_dict(data, features=features)


def load_grid_digits_splits(
    train_canvases: int = GRID_TRAIN_CANVASES, eval_canvases: int = GRID_EVAL_CANVASES
) -> SegmentationSplits:
    """The embedded default: 64x64 canvases of scikit-learn's digits with 11 classes (background, digit 0..9).
    Train and held-out canvases are drawn from the two sides of the fixed stratified digit split that the
    classification default uses, so held-out mIoU measures generalisation to unseen handwriting."""
    grayscale, classes, train_pool, eval_pool = upscaled_digits(GRID_CELL)
    intensities = np.stack([np.asarray(image, np.float32) / 255.0 for image in grayscale])
    splits = []
    for number, (pool, count) in enumerate(((train_pool, train_canvases), (eval_pool, eval_canvases))):
        images, masks, _ = draw_grid_digits(intensities, classes, pool, count, seed=GRID_SEED + number)
        splits.append(_image_dataset(images, masks))
    return SegmentationSplits(splits[0], splits[1], list(GRID_LABEL_NAMES), GRID_DIGITS_NAME)


# ----------------------------------------------------------------------------------------------------- mask checks


def mask_array(mask: Image.Image | np.ndarray, do_reduce_labels: bool = False, where: str = "a mask") -> np.ndarray:
    """Class ids of a single-channel mask as int64 (H, W). With `do_reduce_labels`, 0 (unlabeled in ADE20K-style
    data) becomes the ignore index and every other id shifts down by one, as transformers' processors do."""
    if isinstance(mask, Image.Image):
        if mask.mode not in _MASK_MODES:
            raise rgb_mask_error([where], mask.mode)
        mask = np.asarray(mask)
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise rgb_mask_error([where], f"{mask.ndim}-D array of shape {mask.shape}")
    labels = mask.astype(np.int64)
    if do_reduce_labels:
        labels = np.where(labels == 0, IGNORE_INDEX + 1, labels) - 1  # 0 -> 255, 255 stays 255, others -1
    return labels


def rgb_mask_error(paths: list, mode: str) -> DataError:
    shown = ", ".join(str(path) for path in paths[:_EXAMPLES_SHOWN])
    return DataError(
        f"{len(paths)} mask(s) are not single-channel (e.g. {shown}: {mode}). A mask must be a single-channel PNG "
        f"(mode L or P) whose pixel values are class ids, {IGNORE_INDEX} = ignore. Convert colour-coded masks to class "
        "ids (map each colour to its id) and save them as 8-bit grayscale PNGs."
    )


def check_mask_values(labels: np.ndarray, num_labels: int, where: str) -> None:
    """Every id in `[0, num_labels)` or the ignore index; anything else raises `DataError` naming the values."""
    bad = np.unique(labels[((labels < 0) | (labels >= num_labels)) & (labels != IGNORE_INDEX)])
    if bad.size:
        raise DataError(
            f"{where} has class ids {bad[:10].tolist()} outside 0..{num_labels - 1} that are not the ignore index "
            f"{IGNORE_INDEX}. Name every class in id2label.json (--id2label_file), or pass --do_reduce_labels true if "
            "0 marks unlabeled pixels and the classes start at 1 (as in ADE20K)."
        )


# ---------------------------------------------------------------------------------------------------- local folders


def _by_stem(files: list[Path], root: Path, kind: str) -> dict[Path, Path]:
    """Files keyed by their path below `root` without extension; two files with one key are ambiguous."""
    keyed = {}
    for path in files:
        key = path.relative_to(root).with_suffix("")
        if key in keyed:
            raise DataError(
                f"Two {kind} files share the name {key}: {keyed[key].name} and {path.name}. Keep one of them, so "
                "that each image pairs with exactly one mask."
            )
        keyed[key] = path
    return keyed


def _scanned_files(folder: Path, kind: str, layout: str, verify: bool) -> tuple[list[Path], list[Path]]:
    """(readable, corrupt) files of `folder`; a folder of only corrupt files raises `DataError`."""
    readable, corrupt = find_images(folder, verify, layout)
    if not readable:
        raise DataError(f"All {len(corrupt)} {kind} files under {folder} are corrupt or truncated.")
    return readable, corrupt


def find_image_mask_pairs(
    directory: str | Path, verify: bool = True, allow_skipped_files: bool = False
) -> list[tuple[Path, Path]]:
    """(image, mask) pairs from `<directory>/images/` and `<directory>/masks/`, matched by file name without
    extension (subfolders allowed). Images without a mask and corrupt files are skipped with a counted warning; when
    more than half of the images must be skipped, the folder is refused unless `allow_skipped_files`
    (`refuse_mostly_skipped`). JPEG masks, RGB masks and masks whose size differs from their image raise `DataError`."""
    directory = Path(directory)
    image_dir, mask_dir = directory / "images", directory / "masks"
    for folder in (image_dir, mask_dir):
        if not folder.is_dir():
            raise DataError(
                f"{folder} does not exist. A segmentation folder holds images/ and masks/ with the same file names "
                f"(e.g. {image_dir}/0001.jpg and {mask_dir}/0001.png) and an optional {ID2LABEL_FILENAME}."
            )
    layout = f"Put the images in {image_dir}/ and their masks, named alike, in {mask_dir}/."
    images, corrupt_images = _scanned_files(image_dir, "image", layout, verify)
    masks, corrupt_masks = _scanned_files(mask_dir, "mask", layout, verify)
    lossy = [path for path in masks if path.suffix.lower() in _LOSSY_EXTENSIONS]
    if lossy:
        raise DataError(
            f"{len(lossy)} mask(s) are JPEGs (e.g. {lossy[0]}); JPEG compression blurs class ids into wrong ones. "
            "Save masks as PNG."
        )
    masks_by_stem = _by_stem(masks, mask_dir, "mask")
    images_by_stem = _by_stem(images, image_dir, "image")
    pairs = [(path, masks_by_stem[key]) for key, path in images_by_stem.items() if key in masks_by_stem]
    if not pairs:
        raise DataError(
            f"No image in {image_dir} has a mask of the same name in {mask_dir} (e.g. {images[0].name} vs "
            f"{masks[0].name if masks else 'no masks'}). Name each mask like its image: 0001.jpg -> 0001.png."
        )
    unmasked = [path for key, path in images_by_stem.items() if key not in masks_by_stem]
    broken_masks = {path.relative_to(mask_dir).with_suffix("") for path in corrupt_masks}
    mask_is_broken = [path.relative_to(image_dir).with_suffix("") in broken_masks for path in unmasked]
    skipped = {
        CORRUPT: corrupt_images,
        f"have a {CORRUPT} mask": [path for path, broken in zip(unmasked, mask_is_broken) if broken],
        f"have no mask of the same name in {mask_dir}": [
            path for path, broken in zip(unmasked, mask_is_broken) if not broken
        ],
    }
    total = len(images) + len(corrupt_images)
    refuse_mostly_skipped(skipped, total, str(image_dir), "image", allow_skipped_files)
    warn_skipped(corrupt_images, total, image_dir, f"{CORRUPT} image", CORRUPT_FIX)
    warn_skipped(corrupt_masks, len(masks) + len(corrupt_masks), mask_dir, f"{CORRUPT} mask", CORRUPT_FIX)
    warn_skipped(unmasked, len(images), image_dir, "image", f"They have no mask of the same name in {mask_dir}.")
    _check_pairs(pairs)
    return pairs


def _check_pairs(pairs: list[tuple[Path, Path]]) -> None:
    """Single-channel masks of their image's size; reading the headers only, so this is cheap."""
    coloured, mismatched = [], []
    for image_path, mask_path in pairs:
        with Image.open(image_path) as image, Image.open(mask_path) as mask:
            if mask.mode not in _MASK_MODES:
                coloured.append((mask_path, mask.mode))
            elif mask.size != image.size:
                mismatched.append((image_path, image.size, mask_path, mask.size))
    if coloured:
        raise rgb_mask_error([path for path, _ in coloured], f"mode {coloured[0][1]}")
    if mismatched:
        image_path, image_size, mask_path, mask_size = mismatched[0]
        raise DataError(
            f"{len(mismatched)} mask(s) differ in size from their image (e.g. {mask_path} is "
            f"{mask_size[0]}x{mask_size[1]} but {image_path} is {image_size[0]}x{image_size[1]}). Re-export each mask "
            "at its image's size (resize with nearest-neighbour if you must, never bilinear)."
        )


def _scan_mask_values(pairs: list[tuple[Path, Path]], do_reduce_labels: bool) -> dict[int, Path]:
    """Each class id found in the masks, with the first mask holding it (ignore index excluded)."""
    first_seen = {}
    for _, mask_path in pairs:
        with Image.open(mask_path) as mask:
            for value in np.unique(mask_array(mask, do_reduce_labels, str(mask_path))).tolist():
                first_seen.setdefault(value, mask_path)
    first_seen.pop(IGNORE_INDEX, None)
    return first_seen


def load_mask_folder_splits(
    train_dir: str | Path | None,
    validation_dir: str | Path | None = None,
    do_reduce_labels: bool = False,
    id2label_file: str | Path | None = None,
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
    verify_images: bool = True,
    allow_skipped_files: bool = False,
) -> SegmentationSplits:
    """Local `<dir>/images/` + `<dir>/masks/` folders. Class names come from `id2label_file`, else an
    `id2label.json` in the train (or validation) folder, else `class 0..K-1` up to the largest id in the masks.
    Without `validation_dir`, a random `held_out_fraction` of the train folder is held out."""
    if train_dir is None and validation_dir is None:
        raise DataError("Pass a train folder, a validation folder, or both.")
    folders = {split: Path(folder) for split, folder in (("train", train_dir), ("eval", validation_dir)) if folder}
    pairs = {
        split: find_image_mask_pairs(folder, verify_images, allow_skipped_files) for split, folder in folders.items()
    }
    if id2label_file is None:
        id2label_file = next(
            (folder / ID2LABEL_FILENAME for folder in folders.values() if (folder / ID2LABEL_FILENAME).is_file()), None
        )
    label_names = read_id2label(id2label_file) if id2label_file else None
    if verify_images or label_names is None:
        found = _scan_mask_values([pair for split_pairs in pairs.values() for pair in split_pairs], do_reduce_labels)
        if label_names is None:
            label_names = [f"class {index}" for index in range(max(found, default=0) + 1)]
        outside = {value: path for value, path in found.items() if not 0 <= value < len(label_names)}
        if outside:
            where = f"{next(iter(outside.values()))} (or another mask)"
            check_mask_values(np.array(sorted(outside)), len(label_names), where)
    if len(label_names) < 2:
        raise DataError(
            f"{train_dir or validation_dir} has masks with a single class ({label_names}); segmentation needs at "
            f"least 2. Check the masks, or name all classes in {ID2LABEL_FILENAME}."
        )
    features = Features({"image": ImageFeature(), "label": ImageFeature()})
    datasets = {
        split: Dataset.from_dict(
            {"image": [str(image) for image, _ in split_pairs], "label": [str(mask) for _, mask in split_pairs]},
            features=features,
        )
        for split, split_pairs in pairs.items()
    }
    source = str(train_dir or validation_dir)
    datasets = held_out_split(datasets, held_out_fraction, seed)
    return SegmentationSplits(datasets.get("train"), datasets["eval"], label_names, source, do_reduce_labels)


# ------------------------------------------------------------------------------------------------------------- Hub


def hub_label_names(dataset_name: str, id2label_file: str | None = None) -> list[str]:
    """Class names for a Hub (or local) dataset: `id2label_file`, else a file shipped here for well-known datasets
    without one (scene_parse_150), else `id2label.json` in the dataset's folder or Hub repo."""
    if id2label_file:
        return read_id2label(id2label_file)
    shipped = _SHIPPED_LABEL_FILES.get(dataset_name.rstrip("/").split("/")[-1])
    if shipped:
        return read_id2label(Path(__file__).resolve().parents[2] / shipped)
    if Path(dataset_name).is_dir():
        return read_id2label(Path(dataset_name) / ID2LABEL_FILENAME)
    from huggingface_hub import hf_hub_download

    try:
        return read_id2label(hf_hub_download(dataset_name, ID2LABEL_FILENAME, repo_type="dataset"))
    except Exception as error:  # noqa: BLE001 - any download failure means the same fix
        raise DataError(
            f"Could not get class names for {dataset_name}: it ships no {ID2LABEL_FILENAME} ({type(error).__name__}). "
            "Pass --id2label_file path/to/id2label.json mapping class ids to names, e.g. {\"0\": \"wall\", ...}."
        ) from error


def load_hub_segmentation_splits(
    dataset_name: str,
    dataset_config_name: str | None = None,
    image_column: str = "image",
    label_column: str | None = None,
    train_split: str | None = "train",
    eval_split: str | None = None,
    streaming: bool = False,
    do_reduce_labels: bool = False,
    id2label_file: str | None = None,
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
) -> SegmentationSplits:
    """A Hub dataset (or local dataset path) with an image column and a mask column (`label_column`, default
    `annotation`, then `label`), as scene_parse_150 has. Without a validation/test split a random part of the train
    split is held out (not possible when streaming). Mask values are checked as batches are transformed."""
    candidates = (label_column,) if label_column else ("annotation", "label")
    dataset, eval_split, features = open_hub_dataset(
        dataset_name, dataset_config_name, image_column, candidates, train_split, eval_split, streaming
    )
    if isinstance(features["label"], (ClassLabel, Value)):
        raise DataError(
            f"The label column of {dataset_name} holds one class per image, not a mask per image: it is a "
            "classification dataset (train it with scripts/finetune.py), or pass --label_column_name <mask column>."
        )
    label_names = hub_label_names(dataset_name, id2label_file)
    train, evaluation = hub_train_eval(
        dataset, dataset_name, train_split, eval_split, streaming, held_out_fraction, seed
    )
    return SegmentationSplits(train, evaluation, label_names, dataset_name, do_reduce_labels)


# ------------------------------------------------------------------------------------------------------- arguments


@dataclass
class SegmentationDataArguments(DatasetArguments):
    """Where the images and masks come from and how they are augmented (HfArgumentParser dataclass). Defaults suit
    the embedded grid digits; the ADE20K recipe sets the paper's values."""

    train_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local folder with images/ and masks/ (same file names; masks are single-channel PNGs of class "
            f"ids, {IGNORE_INDEX} = ignore) and an optional {ID2LABEL_FILENAME}."
        },
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "Local eval folder laid out like --train_dir; default: 20%% of it."}
    )
    label_column_name: str | None = field(
        default=None, metadata={"help": "Mask column of --dataset_name; default: annotation, then label."}
    )
    id2label_file: str | None = field(
        default=None,
        metadata={"help": "JSON file of class names {\"0\": \"wall\", ...}; default: the dataset's id2label.json."},
    )
    do_reduce_labels: bool = field(
        default=False,
        metadata={
            "help": f"Mask value 0 means unlabeled: make it {IGNORE_INDEX} (ignored) and shift the other ids down by "
            "one (ADE20K / scene_parse_150)."
        },
    )
    train_scale: list[int] | None = field(
        default=None,
        metadata={
            "help": "Random resize: base (long side, short side), e.g. 2048 512; each image is rescaled, keeping its "
            "aspect ratio, to fit this scale times a ratio drawn from --train_ratio_range. Default: no resize."
        },
    )
    train_ratio_range: list[float] = field(
        default_factory=lambda: [0.5, 2.0], metadata={"help": "Ratio range of the random resize (with --train_scale)."}
    )
    crop_size: int | None = field(
        default=None,
        metadata={"help": "Random square crop (padded with ignored pixels when the image is smaller). Default: none."},
    )
    cat_max_ratio: float = field(
        default=1.0,
        metadata={"help": "Redraw a crop (up to 10 times) while one class covers more than this share of it."},
    )
    horizontal_flip_probability: float = field(
        default=0.0, metadata={"help": "Default 0: mirrored digits are not digits. The paper uses 0.5."}
    )
    photometric_distortion: bool = field(
        default=False,
        metadata={"help": "Random brightness, contrast, saturation and hue (mmsegmentation's PhotoMetricDistortion)."},
    )
    eval_scale: list[int] | None = field(
        default=None,
        metadata={
            "help": "Eval resize: (long side, short side) the image is rescaled to fit, keeping its aspect ratio, "
            "e.g. 2048 512 for a 512 short side. Default: the image's own size."
        },
    )
    size_divisor: int = field(
        default=32, metadata={"help": "Eval images are resized so that each side is a multiple of this."}
    )

    def load(self, grid_train_canvases: int = GRID_TRAIN_CANVASES) -> SegmentationSplits:
        """Dispatches to the right source: a Hub dataset, local folders, or (given neither) the grid digits
        (`grid_train_canvases=0` when only the held-out canvases are needed: they are the same whatever the count)."""
        if self.dataset_name and (self.train_dir or self.validation_dir):
            raise DataError("Pass either --dataset_name or --train_dir/--validation_dir, not both.")
        if self.dataset_name:
            return load_hub_segmentation_splits(
                self.dataset_name,
                self.dataset_config_name,
                self.image_column_name,
                self.label_column_name,
                self.train_split_name,
                self.eval_split_name,
                self.streaming,
                self.do_reduce_labels,
                self.id2label_file,
            )
        if self.streaming:
            raise DataError("--streaming needs --dataset_name; local folders and the grid digits are read directly.")
        if self.train_dir or self.validation_dir:
            return load_mask_folder_splits(
                self.train_dir,
                self.validation_dir,
                self.do_reduce_labels,
                self.id2label_file,
                verify_images=self.verify_images,
                allow_skipped_files=self.allow_skipped_files,
            )
        return load_grid_digits_splits(train_canvases=grid_train_canvases)


__all__ = [
    "GRID_DIGITS_NAME",
    "GRID_LABEL_NAMES",
    "IGNORE_INDEX",
    "SegmentationDataArguments",
    "SegmentationSplits",
    "check_mask_values",
    "dilate",
    "draw_grid_digits",
    "find_image_mask_pairs",
    "hub_label_names",
    "load_grid_digits_splits",
    "load_hub_segmentation_splits",
    "load_mask_folder_splits",
    "mask_array",
]
