"""Joint image + box transforms for object detection (mmdet's RetinaNet pipeline, in PIL and NumPy), and the collator.

Train: keep-ratio resize to fit a scale (times a random ratio: scale jitter), horizontal flip, normalisation by the
image processor. Eval: the keep-ratio resize to the eval scale. Every geometric step moves the boxes with the pixels.
The model sees boxes as absolute (x0, y0, x1, y1) pixels of its input (the resized image); evaluation keeps each
image's ground truth in its original frame, where COCO mAP is measured.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ...data.sources import LabeledSplits, attach_transform, to_rgb
from ...image_processing_pvt import keep_ratio_resize_shape
from .data import check_objects

# The padding's value after normalisation: 0, the mean colour.
_PAD_VALUE = 0.0


@dataclass
class DetectionAugmentation:
    """Per-image train geometry; `None`/0.0 turn each step off. `scale` is (long side, short side)."""

    scale: tuple[int, int] | None = None
    ratio_range: tuple[float, float] | None = None
    horizontal_flip_probability: float = 0.0


# -------------------------------------------------------------------------------------------------------- geometry


def xywh_to_xyxy(boxes) -> np.ndarray:
    boxes = np.asarray(boxes, dtype=np.float32).reshape(-1, 4)
    return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1)


def fit_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(width, height) keeping the ratio, as large as fits `scale` = (long side, short side), as mmcv rounds it."""
    new_height, new_width = keep_ratio_resize_shape(height, width, min(scale), max(scale))
    return new_width, new_height


def resize_with_boxes(image: Image.Image, boxes: np.ndarray, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """Image (bilinear, as mmdet) and (x0, y0, x1, y1) boxes to `size` = (width, height): boxes scale per axis."""
    if image.size == size:
        return image, boxes
    factors = np.array([size[0] / image.width, size[1] / image.height] * 2, dtype=np.float32)
    return image.resize(size, Image.BILINEAR), boxes * factors


def flip_with_boxes(image: Image.Image, boxes: np.ndarray) -> tuple[Image.Image, np.ndarray]:
    """Mirror left-right: a box [x0, x1) becomes [W - x1, W - x0), as mmdet's `bbox_flip`."""
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = image.width - boxes[:, 2], image.width - boxes[:, 0]
    return image.transpose(Image.FLIP_LEFT_RIGHT), flipped


def augment(image: Image.Image, boxes: np.ndarray, augmentation: DetectionAugmentation):
    """The train geometry in mmdet's order (resize with jitter, then flip); returns (image, boxes)."""
    if augmentation.scale:
        ratio = random.uniform(*augmentation.ratio_range) if augmentation.ratio_range else 1.0
        scale = (int(augmentation.scale[0] * ratio + 0.5), int(augmentation.scale[1] * ratio + 0.5))
        image, boxes = resize_with_boxes(image, boxes, fit_size(image.width, image.height, scale))
    if random.random() < augmentation.horizontal_flip_probability:
        image, boxes = flip_with_boxes(image, boxes)
    return image, boxes


# -------------------------------------------------------------------------------------------------------- pipeline


def make_detection_transform(
    image_processor,
    num_labels: int,
    augmentation: DetectionAugmentation | None = None,
    eval_scale: tuple[int, int] | None = None,
    source: str = "the dataset",
):
    """A batch transform for `with_transform`/`map`: `image`, `label` (objects) -> `pixel_values` float32 (3, H, W)
    normalised by `image_processor`, `labels` {`class_labels`, `boxes` (x0, y0, x1, y1) in the input's pixels}.
    Crowd boxes are left out of `labels`: like mmdet, training neither rewards nor punishes anchors on them.

    With `augmentation`: the train pipeline. Without: the eval resize to `eval_scale` (None: as stored), and a
    `targets` entry per image with its original (height, width) and ground truth in the original frame (COCO
    [x, y, w, h], classes, areas, iscrowd) for the metric."""

    def transform(batch: dict) -> dict:
        outputs = {"pixel_values": [], "labels": []}
        if augmentation is None:
            outputs["targets"] = []
        for image, value in zip(batch["image"], batch["label"]):
            image = to_rgb(image)
            width, height = image.size
            found, _ = check_objects(value, width, height, num_labels, f"An image of {source}")
            crowd = np.asarray(found["iscrowd"], dtype=bool)
            boxes = xywh_to_xyxy(found["bbox"])[~crowd]
            classes = np.asarray(found["category"], dtype=np.int64)[~crowd]
            if augmentation is None:
                size = fit_size(width, height, eval_scale) if eval_scale else (width, height)
                image, boxes = resize_with_boxes(image, boxes, size)
                outputs["targets"].append({"orig_size": [height, width], **found})
            else:
                image, boxes = augment(image, boxes, augmentation)
            pixels = image_processor(image, do_resize=False, do_pad=False, return_tensors="np")["pixel_values"][0]
            boxes = boxes.clip(0, [image.width, image.height] * 2)  # rounding of a resize; keeps boxes valid
            outputs["pixel_values"].append(pixels.astype(np.float32))
            outputs["labels"].append({"class_labels": classes.tolist(), "boxes": boxes.tolist()})
        return outputs

    return transform


def with_detection_transforms(
    splits, image_processor, augmentation: DetectionAugmentation | None, eval_scale: tuple[int, int] | None
):
    """The splits with lazy transforms attached (train augmented, eval deterministic)."""
    num_labels = len(splits.label_names)
    train = splits.train
    if train is not None:
        transform = make_detection_transform(
            image_processor, num_labels, augmentation or DetectionAugmentation(), source=splits.source
        )
        train = attach_transform(train, transform)
    transform = make_detection_transform(image_processor, num_labels, None, eval_scale, source=splits.source)
    evaluation = attach_transform(splits.eval, transform)
    return LabeledSplits(train, evaluation, splits.label_names, splits.source)


@dataclass
class DetectionCollator:
    """Stacks examples into `pixel_values` float32 (B, 3, H, W), padded at the bottom/right to the largest image
    rounded up to `pad_to_multiple_of` with the mean colour, a `pixel_mask` (1 on image pixels; the model ignores
    anchors beyond each image's own padded-to-32 shape and clips boxes to the image), and `labels`, one dict of
    `class_labels` (n,) and `boxes` (n, 4) tensors per image. Eval examples' `targets` (the ground truth in the
    original frame) pass through as a list."""

    pad_to_multiple_of: int = 32

    def __call__(self, examples: list[dict]) -> dict:
        pixels = [np.asarray(example["pixel_values"], dtype=np.float32) for example in examples]
        multiple = self.pad_to_multiple_of
        height = math.ceil(max(p.shape[1] for p in pixels) / multiple) * multiple
        width = math.ceil(max(p.shape[2] for p in pixels) / multiple) * multiple
        batch = np.full((len(pixels), pixels[0].shape[0], height, width), _PAD_VALUE, dtype=np.float32)
        mask = np.zeros((len(pixels), height, width), dtype=np.int64)
        for index, image in enumerate(pixels):
            batch[index, :, : image.shape[1], : image.shape[2]] = image
            mask[index, : image.shape[1], : image.shape[2]] = 1
        labels = [
            {
                "class_labels": torch.as_tensor(example["labels"]["class_labels"], dtype=torch.long).reshape(-1),
                "boxes": torch.as_tensor(example["labels"]["boxes"], dtype=torch.float32).reshape(-1, 4),
            }
            for example in examples
        ]
        collated = {"pixel_values": torch.from_numpy(batch), "pixel_mask": torch.from_numpy(mask), "labels": labels}
        if "targets" in examples[0]:
            collated["targets"] = [example["targets"] for example in examples]
        return collated


__all__ = [
    "DetectionAugmentation",
    "DetectionCollator",
    "augment",
    "fit_size",
    "flip_with_boxes",
    "make_detection_transform",
    "resize_with_boxes",
    "with_detection_transforms",
    "xywh_to_xyxy",
]
