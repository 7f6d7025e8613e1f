"""Where images come from, for every task: local folders scanned once for corrupt files, Hub datasets (optionally
streamed), the `DataError` every loader raises, and the argument fields all tasks' data flags share.

Corrupt or truncated files in a local folder are *skipped with a warning* that counts them and names the first
few: one bad file out of a million should not stop a run, but the count tells you to look. A folder of which more
than half of the files are unusable is refused instead (`refuse_mostly_skipped`; `--allow_skipped_files true` uses
what is left). Every local image is
decoded once up front for this (turn it off with `verify_images=False` for huge folders you trust). Hub datasets are
not pre-scanned; a broken image there fails when it is read, with the error naming the dataset.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from datasets import (
    Dataset,
    DatasetDict,
    Features,
    IterableDataset,
    IterableDatasetDict,
    load_dataset,
)
from PIL import Image

from ..image_processing_pvt import to_8_bit

logger = logging.getLogger(__name__)


IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


_SKIPPED_NAMES_SHOWN = 5


CORRUPT_FIX = "Delete or re-export them to use them."
CORRUPT = "corrupt or truncated"
# A folder of which more than 1/2 of the files must be skipped is refused (`refuse_mostly_skipped`) unless this flag.
MOST_UNUSABLE_DENOMINATOR = 2
ALLOW_SKIPPED_FLAG = "--allow_skipped_files"


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


def refuse_mostly_skipped(
    skipped: dict[str, list[Path]], total: int, where: str, kind: str, allow: bool = False
) -> None:
    """The rule every task's folder loader applies to the files it had to leave out: when more than half of the
    `total` `kind` files of `where` are unusable, the data is refused with a `DataError` that counts them by reason
    (`skipped` maps a reason, e.g. "corrupt or truncated", to its files) and names the first few, unless `allow`
    (`--allow_skipped_files true`). A few bad files are only warned about (`warn_skipped`): a model trained on what
    is left of mostly broken data measures the breakage, not the model."""
    count = sum(len(paths) for paths in skipped.values())
    if allow or count * MOST_UNUSABLE_DENOMINATOR <= total:
        return
    reasons = "; ".join(
        f"{len(paths)} {reason} (e.g. {', '.join(path.name for path in paths[:_SKIPPED_NAMES_SHOWN])})"
        for reason, paths in skipped.items()
        if paths
    )
    raise DataError(
        f"{count} of {total} {kind} files in {where} are unusable, more than half: {reasons}. Only {total - count} "
        f"would be used. Fix the files, or pass {ALLOW_SKIPPED_FLAG} true to use the {total - count} usable ones."
    )


def warn_skipped(skipped: list[Path], total: int, directory: Path, kind: str, fix: str) -> None:
    """One warning that counts the files left out of `directory` and names the first few."""
    if not skipped:
        return
    shown = ", ".join(str(p) for p in skipped[:_SKIPPED_NAMES_SHOWN])
    more = f" and {len(skipped) - _SKIPPED_NAMES_SHOWN} more" if len(skipped) > _SKIPPED_NAMES_SHOWN else ""
    logger.warning(
        "Skipping %d %s file(s) of %d in %s: %s%s. %s", len(skipped), kind, total, directory, shown, more, fix
    )


def read_id2label(path: str | Path) -> list[str]:
    """Class names in id order from a JSON mapping `{"0": "wall", "1": "building", ...}` with ids 0..K-1."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"Label file {path} not found. Pass the path of a JSON file like {{\"0\": \"wall\", ...}}.")
    try:
        mapping = {int(key): str(value) for key, value in json.loads(path.read_text()).items()}
    except (ValueError, AttributeError) as error:
        raise DataError(
            f"{path} is not a JSON mapping of class ids to names like {{\"0\": \"wall\", \"1\": \"building\"}} "
            f"({error})."
        ) from error
    if sorted(mapping) != list(range(len(mapping))):
        missing = sorted(set(range(max(mapping, default=-1) + 1)) - set(mapping))
        raise DataError(f"{path} must name every class id from 0 up; ids {missing[:10]} have no name.")
    return [mapping[index] for index in range(len(mapping))]


def held_out_split(datasets: dict, held_out_fraction: float, seed: int) -> dict:
    """`{"train": …, "eval": …}`: as given when there is an eval split, else a random `held_out_fraction` of the
    train split held out."""
    if "eval" in datasets:
        return datasets
    parts = datasets["train"].train_test_split(test_size=held_out_fraction, seed=seed)
    return {"train": parts["train"], "eval": parts["test"]}


def hub_train_eval(
    dataset, dataset_name: str, train_split: str | None, eval_split: str | None, streaming: bool,
    held_out_fraction: float, seed: int,
):  # fmt: skip
    """(train, eval) of a Hub dataset opened by `open_hub_dataset`; without an eval split a random part of the train
    split is held out, which a stream cannot do."""
    if eval_split is not None:
        return (dataset[train_split] if train_split is not None else None), dataset[eval_split]
    if streaming or train_split is None:
        raise DataError(
            f"Dataset {dataset_name} has no validation or test split ({list(dataset)}); a held-out part cannot "
            "be cut from a stream. Pass --eval_split_name, or drop --streaming to hold out part of the train split."
        )
    splits = held_out_split({"train": dataset[train_split]}, held_out_fraction, seed)
    return splits["train"], splits["eval"]


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


def attach_transform(dataset: Dataset | IterableDataset, transform) -> Dataset | IterableDataset:
    """`transform` applied lazily: on access for a dataset, while iterating for a stream."""
    if isinstance(dataset, IterableDataset):
        # Streams have no set_transform; a batched map is applied lazily while iterating.
        return dataset.map(transform, batched=True, batch_size=64, remove_columns=["image", "label"])
    return dataset.with_transform(transform)


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
    allow_skipped_files: bool = field(
        default=False,
        metadata={
            "help": "Use a local folder even when more than half of its files must be skipped (corrupt or truncated "
            "images, images without a mask); by default such a folder is refused with the count and the reasons."
        },
    )

    @property
    def is_digits(self) -> bool:
        return not (self.dataset_name or self.train_dir or self.validation_dir)
