"""Object-detection data: the embedded "scattered digits" default, COCO-format folders and Hub datasets in the layout of
transformers' object-detection example (CPPE-5), each as `LabeledSplits` whose `image` column holds images and whose
`label` column holds the image's objects: `bbox` (COCO's absolute [x, y, width, height] pixels), `category` (a class
id 0..K-1), `area` and `iscrowd`, one entry per box.

Bad data fails early with one `DataError` that names the file and the fix: an annotations file that is not COCO,
category ids missing from `categories`, images referenced but absent, boxes outside their image or with a negative
size. Boxes that are merely degenerate (under 1 px wide or high, zero included, which mmdet's COCO loader also drops)
are dropped with a warning that counts them, and data whose boxes are mostly unusable is refused rather than trained
on.
Hub datasets are checked image by image as they are transformed (`check_objects`).
"""

from __future__ import annotations

import io
import itertools
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from datasets import ClassLabel, Dataset, Features, List, Value
from datasets import Image as ImageFeature
from PIL import Image

from ...data.digits import DIGITS_SPLIT_SEED, HELD_OUT_FRACTION, SCATTERED_DIGITS_NAME, upscaled_digits
from ...data.sources import (
    CORRUPT,
    CORRUPT_FIX,
    MOST_UNUSABLE_DENOMINATOR,
    DataError,
    DatasetArguments,
    LabeledSplits,
    held_out_split,
    hub_train_eval,
    open_hub_dataset,
    read_id2label,
    refuse_mostly_skipped,
    warn_skipped,
)

logger = logging.getLogger(__name__)

ANNOTATIONS_FILENAME = "annotations.json"
IMAGES_FOLDER = "images"
# Ground-truth boxes may poke out of their image by this many pixels (rounding in the tool that wrote them); they are
# clipped to it. The model accepts the same tolerance.
BOX_TOLERANCE = 1.0
# mmdet's COCO loader drops boxes narrower or lower than one pixel, zero included: nothing can be learnt from them.
MIN_BOX_SIDE = 1.0
_EXAMPLES_SHOWN = 5

SCATTERED_CANVAS = 128
SCATTERED_SIDES = (20, 44)
SCATTERED_MAX_DIGITS = 4
# Empty pixels kept between two digits' squares, so that no two boxes touch.
SCATTERED_GAP = 2
SCATTERED_TRAIN_CANVASES = 4000
SCATTERED_EVAL_CANVASES = 300
# Fixed like the digit split itself, so that every run trains and evaluates on the same canvases.
SCATTERED_SEED = 0
DIGIT_LABEL_NAMES = [str(digit) for digit in range(10)]
# The upscaled digits have a faint haze around the strokes; below this it is not painted (as in the grid digits).
_HAZE = 0.2
# A pixel is part of a stroke from this intensity on; the box is the strokes' extent.
_STROKE = 0.5
_PLACEMENT_TRIES = 50

OBJECT_FEATURES = {
    "bbox": List(List(Value("float32"), length=4)),
    "category": List(Value("int64")),
    "area": List(Value("float32")),
    "iscrowd": List(Value("int64")),
}


def objects(boxes=(), categories=(), areas=None, iscrowd=None) -> dict:
    """One image's objects in our layout; `areas` default to the boxes' areas, `iscrowd` to 0."""
    boxes = [[float(value) for value in box] for box in boxes]
    return {
        "bbox": boxes,
        "category": [int(category) for category in categories],
        "area": [float(w * h) for _, _, w, h in boxes] if areas is None else [float(area) for area in areas],
        "iscrowd": [0] * len(boxes) if iscrowd is None else [int(flag) for flag in iscrowd],
    }


def as_object_columns(value) -> dict:
    """An image's objects as a dict of equal-length lists, whether a dataset stores them that way (CPPE-5 through
    `datasets`' Sequence of a dict) or as a list of dicts; `area` and `iscrowd` filled in where absent."""
    if isinstance(value, (list, tuple)):
        value = {key: [entry.get(key) for entry in value] for key in ("bbox", "category", "area", "iscrowd")}
    if not isinstance(value, dict) or "bbox" not in value or "category" not in value:
        raise DataError(
            "An image's objects must hold 'bbox' ([x, y, width, height] per box) and 'category' (a class id per box), "
            f"as in transformers' object-detection example (CPPE-5); got {type(value).__name__} "
            f"{list(value) if isinstance(value, dict) else ''}. Pass --label_column_name <the objects column>."
        )
    boxes, categories = list(value["bbox"]), list(value["category"])
    areas = value.get("area")
    crowd = value.get("iscrowd")
    return objects(
        boxes,
        categories,
        None if areas is None or any(area is None for area in areas) else areas,
        None if crowd is None or any(flag is None for flag in crowd) else crowd,
    )


# ------------------------------------------------------------------------------------------------- scattered digits


def _digit_layers(pixels: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """(alpha (side, side) in 0..1, stroke mask) of an 8x8 digit (0..255) upscaled bicubically to `side`."""
    intensity = np.asarray(Image.fromarray(pixels).resize((side, side), Image.BICUBIC), np.float32) / 255.0
    return ((intensity - _HAZE) / (1 - _HAZE)).clip(0, 1), intensity > _STROKE


def _free_square(rng, squares: list[tuple[int, int, int]], side: int) -> tuple[int, int] | None:
    """(top, left) of a `side` square on the canvas at least `SCATTERED_GAP` px from every square placed, or None."""
    for _ in range(_PLACEMENT_TRIES):
        top, left = (int(value) for value in rng.integers(0, SCATTERED_CANVAS - side + 1, 2))
        if all(
            top + side + SCATTERED_GAP <= other_top
            or other_top + other_side + SCATTERED_GAP <= top
            or left + side + SCATTERED_GAP <= other_left
            or other_left + other_side + SCATTERED_GAP <= left
            for other_top, other_left, other_side in squares
        ):
            return top, left
    return None


def draw_scattered_digits(
    pixels: np.ndarray, classes: np.ndarray, pool: np.ndarray, count: int, seed: int
) -> tuple[np.ndarray, list[dict], list[list[int]]]:
    """`count` canvases (uint8 (count, 128, 128, 3)), their objects and the digit ids each holds.

    Each canvas has a dark noisy background and 1-4 digits from `pool` (indices into `pixels`, scikit-learn's 8x8
    digits as 0..255), each upscaled bicubically to a random side of 20-44 px, painted in a bright random colour at a
    random place where its square keeps 2 px from every other digit's square (so boxes never overlap). A digit's box
    is the extent of its strokes (upscaled intensity > 0.5), its class the digit. Digits are drawn from `pool` in
    shuffled rounds, so every one of them is used about equally often."""
    rng = np.random.default_rng(seed)
    order = itertools.chain.from_iterable(rng.permutation(pool) for _ in itertools.count())
    images = np.empty((count, SCATTERED_CANVAS, SCATTERED_CANVAS, 3), np.uint8)
    annotations, used = [], []
    for index in range(count):
        shape = (SCATTERED_CANVAS, SCATTERED_CANVAS, 3)
        # float32 noise: drawing it is most of a canvas's cost.
        canvas = rng.uniform(0.0, 0.4, 3).astype(np.float32) + 0.08 * rng.standard_normal(shape, dtype=np.float32)
        squares, boxes, categories, digits = [], [], [], []
        for _ in range(int(rng.integers(1, SCATTERED_MAX_DIGITS + 1))):
            side = int(rng.integers(SCATTERED_SIDES[0], SCATTERED_SIDES[1] + 1))
            place = _free_square(rng, squares, side)
            if place is None:  # the canvas is full: fewer digits on this one
                continue
            top, left = place
            digit = int(next(order))
            alpha, stroke = _digit_layers(pixels[digit], side)
            colour = rng.uniform(0.6, 1.0, 3).astype(np.float32)
            patch = canvas[top : top + side, left : left + side]
            canvas[top : top + side, left : left + side] = patch * (1 - alpha[..., None]) + colour * alpha[..., None]
            rows, columns = np.nonzero(stroke)
            x0, y0 = left + int(columns.min()), top + int(rows.min())
            boxes.append([x0, y0, left + int(columns.max()) + 1 - x0, top + int(rows.max()) + 1 - y0])
            categories.append(int(classes[digit]))
            squares.append((top, left, side))
            digits.append(digit)
        images[index] = (canvas.clip(0, 1) * 255).round().astype(np.uint8)
        annotations.append(objects(boxes, categories))
        used.append(digits)
    return images, annotations, used


def _encoded(array: np.ndarray) -> dict:
    # BMP is uncompressed: encoding thousands of canvases takes a fraction of the time PNG does, and it is lossless.
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="BMP")
    return {"bytes": buffer.getvalue(), "path": None}


def detection_features(image_feature=None) -> Features:
    return Features({"image": image_feature or ImageFeature(), "label": OBJECT_FEATURES})


def load_scattered_digits_splits(
    train_canvases: int = SCATTERED_TRAIN_CANVASES, eval_canvases: int = SCATTERED_EVAL_CANVASES
) -> LabeledSplits:
    """The embedded default: 128x128 canvases of scikit-learn's digits, 10 classes. Train and held-out canvases are
    drawn from the two sides of the fixed stratified digit split every embedded set uses, so held-out mAP measures
    detection of unseen handwriting."""
    grayscale, classes, train_pool, eval_pool = upscaled_digits(8)  # the 8x8 originals, 0..255
    pixels = np.stack([np.asarray(image, np.uint8) for image in grayscale])
    splits = []
    for number, (pool, count) in enumerate(((train_pool, train_canvases), (eval_pool, eval_canvases))):
        images, annotations, _ = draw_scattered_digits(pixels, classes, pool, count, seed=SCATTERED_SEED + number)
        data = {"image": [_encoded(image) for image in images], "label": annotations}
        splits.append(Dataset.from_dict(data, features=detection_features()))
    return LabeledSplits(splits[0], splits[1], list(DIGIT_LABEL_NAMES), SCATTERED_DIGITS_NAME)


# ------------------------------------------------------------------------------------------------------ box checks


def _shown(items: list) -> str:
    more = f" and {len(items) - _EXAMPLES_SHOWN} more" if len(items) > _EXAMPLES_SHOWN else ""
    return "; ".join(str(item) for item in items[:_EXAMPLES_SHOWN]) + more


def box_problem(box, width: int, height: int) -> str | None:
    """Why an [x, y, w, h] box cannot be used in a `width` x `height` image, or None if it can (tiny boxes can)."""
    if len(box) != 4 or not all(np.isfinite(value) for value in box):
        return "is not 4 finite numbers [x, y, width, height]"
    x, y, w, h = box
    # A zero side is only degenerate (COCO's own train2017 has two boxes of height 0): `is_tiny` drops it.
    if w < 0 or h < 0:
        return "has a negative width or height"
    if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE:
        return f"reaches outside the {width}x{height} image"
    return None


def is_tiny(box) -> bool:
    return box[2] < MIN_BOX_SIDE or box[3] < MIN_BOX_SIDE


def clipped(box, width: int, height: int) -> list[float]:
    """An [x, y, w, h] box within the tolerance, clipped to the image."""
    x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
    x1, y1 = min(box[0] + box[2], float(width)), min(box[1] + box[3], float(height))
    return [x0, y0, x1 - x0, y1 - y0]


def check_objects(value, width: int, height: int, num_labels: int, where: str) -> tuple[dict, int]:
    """(an image's objects with tiny boxes dropped and the rest clipped to the image, how many were dropped). Boxes
    outside the image or with a negative size, and categories outside 0..num_labels-1, raise `DataError`."""
    columns = as_object_columns(value)
    kept = {key: [] for key in columns}
    for index, (box, category) in enumerate(zip(columns["bbox"], columns["category"], strict=True)):
        problem = box_problem(box, width, height)
        if problem:
            raise DataError(
                f"{where}: box {index} [{', '.join(f'{v:g}' for v in box)}] {problem}. Boxes must be COCO's absolute "
                "[x, y, width, height] pixels of the image, not normalised or [x0, y0, x1, y1]; fix the dataset."
            )
        if not 0 <= category < num_labels:
            raise DataError(
                f"{where}: category {category} is outside the dataset's {num_labels} classes 0..{num_labels - 1}. "
                "Fix the annotation, or name every class (--id2label_file)."
            )
        if is_tiny(box):
            continue
        for key in columns:
            kept[key].append(columns[key][index])
        kept["bbox"][-1] = clipped(box, width, height)
    return kept, len(columns["bbox"]) - len(kept["bbox"])


# ---------------------------------------------------------------------------------------------------- COCO folders


def _coco_error(path: Path, problem: str) -> DataError:
    return DataError(
        f"{path} is not a COCO instances file: {problem}. It must be a JSON object with 'images' ([{{'id', "
        "'file_name', 'width', 'height'}}]), 'annotations' ([{'id', 'image_id', 'category_id', 'bbox': [x, y, w, h], "
        "'iscrowd'}]) and 'categories' ([{'id', 'name'}]); export your labels as COCO JSON."
    )


def read_coco_annotations(path: Path) -> dict:
    """The parsed instances JSON, checked to be COCO in form (keys, types, unique ids)."""
    try:
        coco = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise _coco_error(path, f"it is not valid JSON ({error})") from error
    if not isinstance(coco, dict):
        raise _coco_error(path, f"the top level is a {type(coco).__name__}")
    for key in ("images", "annotations", "categories"):
        if not isinstance(coco.get(key), list):
            raise _coco_error(path, f"'{key}' is {'missing' if key not in coco else 'not a list'}")
    needed = {"images": ("id", "file_name", "width", "height"), "annotations": ("image_id", "category_id", "bbox")}
    needed["categories"] = ("id", "name")
    for key, fields in needed.items():
        for index, entry in enumerate(coco[key]):
            if not isinstance(entry, dict) or any(name not in entry for name in fields):
                raise _coco_error(path, f"{key}[{index}] lacks one of {list(fields)}")
    for key in ("images", "categories"):
        ids = [entry["id"] for entry in coco[key]]
        if len(set(ids)) != len(ids):
            duplicate = next(value for value in ids if ids.count(value) > 1)
            raise _coco_error(path, f"two {key} share the id {duplicate}")
    if not coco["categories"]:
        raise _coco_error(path, "'categories' is empty")
    return coco


def load_coco_folder(
    directory: str | Path, verify_images: bool = True, allow_skipped_files: bool = False
) -> tuple[Dataset, list[str]]:
    """(a dataset of the folder's images and objects, class names) from `<directory>/images/` and
    `<directory>/annotations.json`. Categories become classes 0..K-1 in the order of their COCO ids (the names
    are the categories' names); crowd annotations are kept with `iscrowd` (ignored by training and the metric, as in
    COCO); images without annotations are kept. With `verify_images`, each image's header is read to check that it
    exists, opens and has the size the JSON gives it; a folder where most images do not open is refused unless
    `allow_skipped_files` (`refuse_mostly_skipped`)."""
    directory = Path(directory)
    path, image_dir = directory / ANNOTATIONS_FILENAME, directory / IMAGES_FOLDER
    if not path.is_file() or not image_dir.is_dir():
        missing = path if not path.is_file() else image_dir
        raise DataError(
            f"{missing} does not exist. A COCO-format detection folder holds {IMAGES_FOLDER}/ and "
            f"{ANNOTATIONS_FILENAME} (a COCO instances file whose file_names are relative to {IMAGES_FOLDER}/)."
        )
    coco = read_coco_annotations(path)
    categories = sorted(coco["categories"], key=lambda category: category["id"])
    class_of = {category["id"]: index for index, category in enumerate(categories)}
    images = {entry["id"]: entry for entry in coco["images"]}
    missing, unreadable = [], []
    for entry in coco["images"]:
        file = image_dir / str(entry["file_name"])
        if not file.is_file():
            missing.append(entry["file_name"])
        elif verify_images:
            _check_image_file(file, entry, path, unreadable)
    if missing:
        raise DataError(
            f"{path} references {len(missing)} image(s) that are not in {image_dir}: {_shown(missing)}. Put them there "
            f"(file_name is relative to {IMAGES_FOLDER}/), or remove them from the annotations file."
        )
    by_image = {image_id: [] for image_id in images}
    tiny = []
    for index, annotation in enumerate(coco["annotations"]):
        where = f"{path}: annotation {annotation.get('id', f'#{index}')}"
        if annotation["category_id"] not in class_of:
            raise DataError(
                f"{where} has category_id {annotation['category_id']}, which 'categories' does not list (ids "
                f"{_shown(sorted(class_of))}). Add the category, or fix the annotation's category_id."
            )
        if annotation["image_id"] not in images:
            raise DataError(f"{where} belongs to image_id {annotation['image_id']}, which 'images' does not list.")
        image = images[annotation["image_id"]]
        box = annotation["bbox"]
        problem = box_problem(box, image["width"], image["height"]) if isinstance(box, list) else "is not a list"
        if problem:
            raise DataError(
                f"{where} (image {image['file_name']}): bbox {box} {problem}. COCO boxes are absolute [x, y, width, "
                "height] pixels; fix or remove the annotation."
            )
        if is_tiny(box):
            tiny.append(f"{annotation.get('id', f'#{index}')} ({image['file_name']}, {box[2]:g}x{box[3]:g})")
            continue
        by_image[annotation["image_id"]].append(annotation)
    _refuse_mostly_tiny(path, len(tiny), len(coco["annotations"]))
    refuse_mostly_skipped({CORRUPT: unreadable}, len(coco["images"]), str(image_dir), "image", allow_skipped_files)
    if tiny:
        logger.warning(
            "Dropping %d of %d boxes in %s under %g px wide or high (annotations %s): nothing can be learnt from them.",
            len(tiny), len(coco["annotations"]), path, MIN_BOX_SIDE, _shown(tiny),
        )  # fmt: skip
    warn_skipped(unreadable, len(coco["images"]), image_dir, f"{CORRUPT} image", CORRUPT_FIX)
    unreadable = set(unreadable)
    data = {"image": [], "label": []}
    for image_id, entry in images.items():
        file = image_dir / str(entry["file_name"])
        if file in unreadable:
            continue
        annotations = by_image[image_id]
        data["image"].append(str(file))
        data["label"].append(
            objects(
                [clipped(a["bbox"], entry["width"], entry["height"]) for a in annotations],
                [class_of[a["category_id"]] for a in annotations],
                [a.get("area") or a["bbox"][2] * a["bbox"][3] for a in annotations],
                [a.get("iscrowd", 0) for a in annotations],
            )
        )
    return Dataset.from_dict(data, features=detection_features()), [str(c["name"]) for c in categories]


def _check_image_file(file: Path, entry: dict, annotations_path: Path, unreadable: list) -> None:
    try:
        with Image.open(file) as image:
            size = image.size
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):
        unreadable.append(file)
        return
    if size != (entry["width"], entry["height"]):
        raise DataError(
            f"{file} is {size[0]}x{size[1]} but {annotations_path} says {entry['width']}x{entry['height']} (image id "
            f"{entry['id']}); its boxes would be off. Fix width/height in the annotations file, or the image."
        )


def _refuse_mostly_tiny(path: Path, tiny: int, total: int) -> None:
    """Refuses the file when more than half of its boxes are too small to use: such boxes are most likely normalised
    coordinates, or the file belongs to other images."""
    if total and tiny * MOST_UNUSABLE_DENOMINATOR > total:
        raise DataError(
            f"{tiny} of the {total} boxes are under {MIN_BOX_SIDE:g} px wide or high in {path}: most of the data is "
            "unusable, so it is refused rather than trained on. Check that the file belongs to these images and that "
            "its boxes are [x, y, width, height] pixels, not normalised."
        )


def load_coco_folder_splits(
    train_dir: str | Path | None,
    validation_dir: str | Path | None = None,
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
    verify_images: bool = True,
    allow_skipped_files: bool = False,
) -> LabeledSplits:
    """COCO-format folders; without `validation_dir`, a random `held_out_fraction` of the train folder is held out.
    The two folders must name the same categories."""
    if train_dir is None and validation_dir is None:
        raise DataError("Pass a train folder, a validation folder, or both.")
    loaded = {
        split: load_coco_folder(folder, verify_images, allow_skipped_files)
        for split, folder in (("train", train_dir), ("eval", validation_dir))
        if folder
    }
    names = [label_names for _, label_names in loaded.values()]
    if len(names) == 2 and names[0] != names[1]:
        raise DataError(
            f"{train_dir} and {validation_dir} name different categories ({_shown(names[0])} vs {_shown(names[1])}). "
            "Use one category list, with the same ids, for both annotation files."
        )
    datasets = held_out_split({split: dataset for split, (dataset, _) in loaded.items()}, held_out_fraction, seed)
    return LabeledSplits(datasets.get("train"), datasets["eval"], names[0], str(train_dir or validation_dir))


# ------------------------------------------------------------------------------------------------------------- Hub


def _category_names(feature) -> list[str] | None:
    """The names of the ClassLabel under an objects feature's `category`, wherever `datasets` nests it."""
    if isinstance(feature, ClassLabel):
        return list(feature.names)
    if isinstance(feature, dict):
        return _category_names(feature.get("category"))
    inner = getattr(feature, "feature", None)
    return _category_names(inner) if inner is not None else None


def load_hub_detection_splits(
    dataset_name: str,
    dataset_config_name: str | None = None,
    image_column: str = "image",
    label_column: str = "objects",
    train_split: str | None = "train",
    eval_split: str | None = None,
    streaming: bool = False,
    id2label_file: str | None = None,
    held_out_fraction: float = HELD_OUT_FRACTION,
    seed: int = DIGITS_SPLIT_SEED,
) -> LabeledSplits:
    """A Hub dataset (or local dataset path) in the layout of transformers' object-detection example: an image column
    and an objects column with `bbox` ([x, y, w, h] pixels) and `category` (a ClassLabel, or ids named by
    `id2label_file`). Without a validation/test split a random part of the train split is held out (not possible
    when streaming). Boxes are checked as batches are transformed."""
    dataset, eval_split, features = open_hub_dataset(
        dataset_name, dataset_config_name, image_column, label_column, train_split, eval_split, streaming
    )
    names = read_id2label(id2label_file) if id2label_file else _category_names(features["label"])
    if names is None:
        raise DataError(
            f"The objects column of {dataset_name} holds no class names (its 'category' is not a ClassLabel). Pass "
            '--id2label_file path/to/id2label.json mapping category ids to names, e.g. {"0": "person", ...}.'
        )
    train, evaluation = hub_train_eval(
        dataset, dataset_name, train_split, eval_split, streaming, held_out_fraction, seed
    )
    return LabeledSplits(train, evaluation, names, dataset_name)


# ------------------------------------------------------------------------------------------------------- arguments


@dataclass
class DetectionDataArguments(DatasetArguments):
    """Where the images and boxes come from and how they are augmented (HfArgumentParser dataclass). Defaults suit
    the embedded scattered digits; the COCO recipe sets the paper's values."""

    train_dir: str | None = field(
        default=None,
        metadata={
            "help": f"Local COCO-format folder: {IMAGES_FOLDER}/ and {ANNOTATIONS_FILENAME} (a COCO instances file)."
        },
    )
    validation_dir: str | None = field(
        default=None, metadata={"help": "Local eval folder laid out like --train_dir; default: 20%% of it."}
    )
    label_column_name: str = field(
        default="objects",
        metadata={"help": "Objects column of --dataset_name (bbox as [x, y, w, h] pixels, category per box)."},
    )
    id2label_file: str | None = field(
        default=None,
        metadata={"help": "JSON file of class names {\"0\": \"person\", ...} for a --dataset_name whose category "
                  "column is not a ClassLabel."},
    )  # fmt: skip
    train_scale: list[int] | None = field(
        default=None,
        metadata={
            "help": "Train resize: (long side, short side) each image is rescaled to fit, keeping its aspect ratio "
            "(the paper: 1333 800). Default: as --eval_scale."
        },
    )
    train_ratio_range: list[float] | None = field(
        default=None,
        metadata={
            "help": "Scale jitter: --train_scale times a ratio drawn from this range per image, e.g. 0.8 1.25. "
            "Default: none (the paper's COCO recipe)."
        },
    )
    horizontal_flip_probability: float | None = field(
        default=None,
        metadata={"help": "Default: 0 on the scattered digits (mirrored digits are not digits), else 0.5 (the paper)."},
    )
    eval_scale: list[int] | None = field(
        default=None,
        metadata={
            "help": "Eval resize: (long side, short side) each image is rescaled to fit, keeping its aspect ratio. "
            f"Default: 1333 800 (the paper's COCO test scale); {SCATTERED_CANVAS} {SCATTERED_CANVAS} for the "
            "scattered digits."
        },
    )

    def load(
        self, scattered_train_canvases: int = SCATTERED_TRAIN_CANVASES, scattered_eval_canvases: int | None = None
    ) -> LabeledSplits:
        """Dispatches to the right source: a Hub dataset, local folders, or (given neither) the scattered digits.
        Their canvases are drawn in sequence from fixed seeds, so the first N are the same whatever the count: a run
        that uses only some of them (`--max_train_samples`, or 0 train canvases when only the held-out ones are
        needed) draws only those."""
        if self.dataset_name and (self.train_dir or self.validation_dir):
            raise DataError("Pass either --dataset_name or --train_dir/--validation_dir, not both.")
        if self.dataset_name:
            return load_hub_detection_splits(
                self.dataset_name,
                self.dataset_config_name,
                self.image_column_name,
                self.label_column_name,
                self.train_split_name,
                self.eval_split_name,
                self.streaming,
                self.id2label_file,
            )
        if self.streaming:
            raise DataError(
                "--streaming needs --dataset_name; local folders and the scattered digits are read directly."
            )
        if self.train_dir or self.validation_dir:
            return load_coco_folder_splits(
                self.train_dir,
                self.validation_dir,
                verify_images=self.verify_images,
                allow_skipped_files=self.allow_skipped_files,
            )
        return load_scattered_digits_splits(
            scattered_train_canvases, scattered_eval_canvases or SCATTERED_EVAL_CANVASES
        )


__all__ = [
    "ANNOTATIONS_FILENAME",
    "DIGIT_LABEL_NAMES",
    "SCATTERED_CANVAS",
    "SCATTERED_DIGITS_NAME",
    "DetectionDataArguments",
    "as_object_columns",
    "box_problem",
    "check_objects",
    "draw_scattered_digits",
    "load_coco_folder",
    "load_coco_folder_splits",
    "load_hub_detection_splits",
    "load_scattered_digits_splits",
    "objects",
    "read_coco_annotations",
]
