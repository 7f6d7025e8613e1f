"""Joint image + mask transforms for semantic segmentation (mmsegmentation's pipeline, in PIL and NumPy), and the
collator.

Train: random resize by a ratio of a base scale, random crop with `cat_max_ratio`, horizontal flip, photometric
distortion, normalisation by the image processor, padding to the crop size (ignored pixels). Eval: rescale to fit a
scale keeping the aspect ratio, then to multiples of `size_divisor`. Geometry moves image and mask together; the mask
is only ever resized with NEAREST and never normalised.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from ...data.sources import DataError, attach_transform, to_rgb
from .data import (
    IGNORE_INDEX,
    SegmentationDataArguments,
    SegmentationSplits,
    check_mask_values,
    mask_array,
)

# mmsegmentation's PhotoMetricDistortion defaults; its hue delta is in OpenCV units (180 per turn), PIL's are 256.
_BRIGHTNESS_DELTA = 32
_CONTRAST_RANGE = (0.5, 1.5)
_SATURATION_RANGE = (0.5, 1.5)
_HUE_DELTA = 18
_CROP_ATTEMPTS = 10


@dataclass
class SegmentationAugmentation:
    """Per-image train augmentation; `None`/1.0/0.0/False turn each step off."""

    scale: tuple[int, int] | None = None  # (long side, short side) of the random resize
    ratio_range: tuple[float, float] = (0.5, 2.0)
    crop_size: int | None = None
    cat_max_ratio: float = 1.0
    horizontal_flip_probability: float = 0.0
    photometric_distortion: bool = False

    @classmethod
    def from_arguments(cls, arguments: SegmentationDataArguments) -> "SegmentationAugmentation":
        return cls(
            tuple(arguments.train_scale) if arguments.train_scale else None,
            tuple(arguments.train_ratio_range),
            arguments.crop_size,
            arguments.cat_max_ratio,
            arguments.horizontal_flip_probability,
            arguments.photometric_distortion,
        )


# -------------------------------------------------------------------------------------------------------- geometry


def rescaled_size(width: int, height: int, scale: tuple[int, int]) -> tuple[int, int]:
    """(width, height) keeping the aspect ratio, as large as fits `scale` = (long side, short side) — mmcv's
    `imrescale`: (2048, 512) gives a 512 short side unless the long side would pass 2048."""
    factor = min(max(scale) / max(width, height), min(scale) / min(width, height))
    return int(width * factor + 0.5), int(height * factor + 0.5)


def resize_pair(image: Image.Image, mask: np.ndarray, size: tuple[int, int]) -> tuple[Image.Image, np.ndarray]:
    """Image bilinear, mask nearest (a class id is never blended with its neighbours), to `size` = (width, height)."""
    if image.size == size:
        return image, mask
    resized_mask = Image.fromarray(mask.astype(np.int32), mode="I").resize(size, Image.NEAREST)
    return image.resize(size, Image.BILINEAR), np.asarray(resized_mask).astype(np.int64)


def random_resize(image, mask, scale: tuple[int, int], ratio_range: tuple[float, float]):
    ratio = random.uniform(*ratio_range)
    target = (int(scale[0] * ratio), int(scale[1] * ratio))
    return resize_pair(image, mask, rescaled_size(*image.size, target))


def random_crop(image: Image.Image, mask: np.ndarray, crop_size: int, cat_max_ratio: float = 1.0):
    """A `crop_size` square (smaller where the image is). With `cat_max_ratio` < 1 the crop is redrawn, up to 10
    times, until no class covers more than that share of its labelled pixels (mmsegmentation's RandomCrop)."""
    height, width = mask.shape

    def draw():
        top = random.randint(0, max(height - crop_size, 0))
        left = random.randint(0, max(width - crop_size, 0))
        return top, left, min(top + crop_size, height), min(left + crop_size, width)

    box = draw()
    if cat_max_ratio < 1.0:
        for _ in range(_CROP_ATTEMPTS):
            labels, counts = np.unique(mask[box[0] : box[2], box[1] : box[3]], return_counts=True)
            counts = counts[labels != IGNORE_INDEX]
            if len(counts) > 1 and counts.max() / counts.sum() < cat_max_ratio:
                break
            box = draw()
    top, left, bottom, right = box
    return image.crop((left, top, right, bottom)), mask[top:bottom, left:right]


def horizontal_flip(image: Image.Image, mask: np.ndarray):
    return image.transpose(Image.FLIP_LEFT_RIGHT), mask[:, ::-1]


def eval_resize(image, mask, scale: tuple[int, int] | None, size_divisor: int):
    """Rescale to fit `scale` (if given), then round each side up to a multiple of `size_divisor`."""
    width, height = rescaled_size(*image.size, scale) if scale else image.size
    size = (math.ceil(width / size_divisor) * size_divisor, math.ceil(height / size_divisor) * size_divisor)
    return resize_pair(image, mask, size)


# ------------------------------------------------------------------------------------------------------ photometric


def _affine(values: np.ndarray, alpha: float = 1.0, beta: float = 0.0) -> np.ndarray:
    return (values.astype(np.float32) * alpha + beta).clip(0, 255).astype(np.uint8)


def photometric_distortion(image: Image.Image) -> Image.Image:
    """mmsegmentation's PhotoMetricDistortion: each with probability 1/2, brightness +-32, contrast x0.5..1.5
    (before or after the colour steps, at random), saturation x0.5..1.5, hue +-18/180 of a turn."""
    pixels = np.asarray(image)
    if random.randint(0, 1):
        pixels = _affine(pixels, beta=random.uniform(-_BRIGHTNESS_DELTA, _BRIGHTNESS_DELTA))
    contrast_first = random.randint(0, 1)
    if contrast_first and random.randint(0, 1):
        pixels = _affine(pixels, alpha=random.uniform(*_CONTRAST_RANGE))
    saturate, shift_hue = random.randint(0, 1), random.randint(0, 1)
    if saturate or shift_hue:
        hsv = np.array(Image.fromarray(pixels).convert("HSV"))
        if saturate:
            hsv[..., 1] = _affine(hsv[..., 1], alpha=random.uniform(*_SATURATION_RANGE))
        if shift_hue:
            delta = round(random.randint(-_HUE_DELTA, _HUE_DELTA) * 256 / 180)
            hsv[..., 0] = (hsv[..., 0].astype(np.int64) + delta) % 256
        pixels = np.asarray(Image.fromarray(hsv, mode="HSV").convert("RGB"))
    if not contrast_first and random.randint(0, 1):
        pixels = _affine(pixels, alpha=random.uniform(*_CONTRAST_RANGE))
    return Image.fromarray(pixels)


# -------------------------------------------------------------------------------------------------------- pipeline


def augment_pair(image: Image.Image, mask: np.ndarray, augmentation: SegmentationAugmentation):
    """The train geometry and colour steps, in mmsegmentation's order; returns (image, mask) before normalisation."""
    if augmentation.scale:
        image, mask = random_resize(image, mask, augmentation.scale, augmentation.ratio_range)
    if augmentation.crop_size:
        image, mask = random_crop(image, mask, augmentation.crop_size, augmentation.cat_max_ratio)
    if random.random() < augmentation.horizontal_flip_probability:
        image, mask = horizontal_flip(image, mask)
    if augmentation.photometric_distortion:
        image = photometric_distortion(image)
    return image, mask


def pad_to(array: np.ndarray, height: int, width: int, value) -> np.ndarray:
    """`array` (..., H, W) padded at the bottom and right to (height, width)."""
    extra = [(0, 0)] * (array.ndim - 2) + [(0, height - array.shape[-2]), (0, width - array.shape[-1])]
    return np.pad(array, extra, constant_values=value)


def make_segmentation_transform(
    image_processor,
    num_labels: int,
    do_reduce_labels: bool = False,
    augmentation: SegmentationAugmentation | None = None,
    eval_scale: tuple[int, int] | None = None,
    size_divisor: int = 32,
):
    """A batch transform for `with_transform`/`map`: `image`, `label` (mask) -> `pixel_values` float32 (3, H, W)
    normalised by `image_processor` (ImageNet mean/std), `labels` int64 (H, W) with 255 = ignore.

    With `augmentation`: the train pipeline, padded to the crop size (image 0, i.e. the mean colour after
    normalisation, mask ignored). Without: the eval resize."""

    def transform(batch: dict) -> dict:
        pixel_values, labels = [], []
        for image, mask in zip(batch["image"], batch["label"]):
            image = to_rgb(image)
            mask = mask_array(mask, do_reduce_labels, "a mask of the dataset")
            if mask.shape != (image.height, image.width):
                raise DataError(
                    f"A mask of the dataset is {mask.shape[1]}x{mask.shape[0]} but its image is "
                    f"{image.width}x{image.height}. Masks must have their image's size; fix the dataset's masks."
                )
            check_mask_values(mask, num_labels, "a mask of the dataset")
            if augmentation is None:
                image, mask = eval_resize(image, mask, eval_scale, size_divisor)
            else:
                image, mask = augment_pair(image, mask, augmentation)
            pixels = image_processor(image, do_resize=False, do_center_crop=False, return_tensors="np")["pixel_values"]
            pixels, mask = pixels[0].astype(np.float32), np.ascontiguousarray(mask, dtype=np.int64)
            if augmentation is not None and augmentation.crop_size:
                side = augmentation.crop_size
                pixels = pad_to(pixels, max(side, pixels.shape[1]), max(side, pixels.shape[2]), 0.0)
                mask = pad_to(mask, max(side, mask.shape[0]), max(side, mask.shape[1]), IGNORE_INDEX)
            pixel_values.append(pixels)
            labels.append(mask)
        return {"pixel_values": pixel_values, "labels": labels}

    return transform


def with_segmentation_transforms(
    splits: SegmentationSplits,
    image_processor,
    augmentation: SegmentationAugmentation | None,
    eval_scale: tuple[int, int] | None = None,
    size_divisor: int = 32,
) -> SegmentationSplits:
    """The splits with lazy transforms attached (train augmented, eval deterministic)."""
    num_labels = len(splits.label_names)
    train = splits.train
    if train is not None:
        train_transform = make_segmentation_transform(
            image_processor, num_labels, splits.do_reduce_labels, augmentation or SegmentationAugmentation()
        )
        train = attach_transform(train, train_transform)
    eval_transform = make_segmentation_transform(
        image_processor, num_labels, splits.do_reduce_labels, None, eval_scale, size_divisor
    )
    evaluation = attach_transform(splits.eval, eval_transform)
    return SegmentationSplits(train, evaluation, splits.label_names, splits.source, splits.do_reduce_labels)


@dataclass
class SegmentationCollator:
    """Stacks examples into `pixel_values` float32 (B, 3, H, W) and `labels` int64 (B, H, W). Images of different
    sizes (eval of natural images) are padded at the bottom/right to the largest, rounded up to a multiple of
    `pad_to_multiple_of` (which also lifts tiny images to the model's 32-px minimum): pixels with 0 (the mean colour
    after normalisation), labels with the ignore index, so padding never counts in the loss or the metric. The
    model does see the padding as context near those edges; evaluate with batch size 1 to avoid it.

    `training=True` (the training batches' collator): a batch of one image of at most `pad_to_multiple_of` pixels a
    side gets one more band of padding at the bottom. Its deepest feature map (stride 32) would be 1x1, and BatchNorm
    in the Semantic FPN head cannot train on one value per channel (a last batch of one, or batch size 1, of small
    images); the extra band is ignored by the loss like all padding."""

    pad_to_multiple_of: int = 32
    ignore_index: int = IGNORE_INDEX
    training: bool = False

    def __call__(self, examples: list[dict]) -> dict:
        pixels = [np.asarray(example["pixel_values"], dtype=np.float32) for example in examples]
        labels = [np.asarray(example["labels"], dtype=np.int64) for example in examples]
        multiple = self.pad_to_multiple_of
        height = math.ceil(max(p.shape[1] for p in pixels) / multiple) * multiple
        width = math.ceil(max(p.shape[2] for p in pixels) / multiple) * multiple
        if self.training and len(examples) == 1 and height == width == multiple:
            height += multiple  # a 2x1 deepest map: two values per channel for BatchNorm
        return {
            "pixel_values": torch.from_numpy(np.stack([pad_to(p, height, width, 0.0) for p in pixels])),
            "labels": torch.from_numpy(np.stack([pad_to(m, height, width, self.ignore_index) for m in labels])),
        }


__all__ = [
    "SegmentationAugmentation",
    "SegmentationCollator",
    "augment_pair",
    "eval_resize",
    "horizontal_flip",
    "make_segmentation_transform",
    "photometric_distortion",
    "random_crop",
    "random_resize",
    "rescaled_size",
    "resize_pair",
    "with_segmentation_transforms",
]
