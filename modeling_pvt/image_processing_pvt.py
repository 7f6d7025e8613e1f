"""Image processor for PVT: bicubic resize (optionally shortest edge + center crop), rescale, ImageNet normalize;
segmentation maps (nearest resize, never normalised) and semantic post-processing.

Built on transformers' PIL/NumPy backend, so it needs neither torchvision nor a GPU."""

import math

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    PILImageResampling,
    SizeDict,
    get_image_size,
)
from transformers.processing_utils import ImagesKwargs

# The original evaluation transform resizes the shorter side to crop / 0.875 (256 for 224) before cropping.
EVAL_CROP_FRACTION = 0.875
# The paper's ADE20K test transform (mmseg `Resize(img_scale=(2048, 512), keep_ratio=True)` + PVT's `AlignResize`):
# short side 512 unless the long side would pass 2048, then each side rounded up to a multiple of 32.
SEGMENTATION_SHORT_SIDE, SEGMENTATION_LONG_SIDE, SEGMENTATION_SIZE_DIVISOR = 512, 2048, 32
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_8_bit(image: Image.Image) -> Image.Image:
    """16/32-bit and float grayscale images scaled to 8 bit by their value range; PIL's own conversion to RGB
    clips them at 255 (a white image). Other images are returned as they are."""
    if image.mode not in _WIDE_MODES:
        return image
    values = np.asarray(image, dtype=np.float64)
    scale = 255.0 / 65535.0 if values.max() > 255 else 1.0
    return Image.fromarray((values * scale).clip(0, 255).astype(np.uint8), mode="L")


def aligned_resize_shape(height: int, width: int, short_side: int, long_side: int, divisor: int) -> tuple[int, int]:
    """mmcv's keep-ratio rescale (scale = min(short/short_edge, long/long_edge), rounded half up), then each side
    rounded up to a multiple of `divisor`, as PVT's segmentation test pipeline does."""
    scale = min(short_side / min(height, width), long_side / max(height, width))
    return tuple(math.ceil(int(side * scale + 0.5) / divisor) * divisor for side in (height, width))


class PvtImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_reduce_labels (`bool`): subtract 1 from every label of the segmentation maps and turn 0 into 255 (ignored), for
        datasets whose 0 means "other" (ADE20K).
    size_divisor (`int`): with a `shortest_edge`/`longest_edge` size, round each resized side up to a multiple of it.
    """

    do_reduce_labels: bool
    size_divisor: int


class PvtV1ImageProcessor(PilBackend):
    # Not "PvtImageProcessor": AutoImageProcessor resolves a saved `image_processor_type` by class name, and that
    # name is transformers' native PVT processor, which lacks our 16-bit handling and segmentation maps.
    valid_kwargs = PvtImageProcessorKwargs
    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    size = {"height": 224, "width": 224}
    crop_size = {"height": 224, "width": 224}
    default_to_square = True
    do_resize = True
    do_center_crop = False
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_reduce_labels = False
    size_divisor = None

    def convert_to_rgb(self, image, input_data_format=None):
        if isinstance(image, Image.Image):
            image = to_8_bit(image)
        return super().convert_to_rgb(image, input_data_format=input_data_format)

    @classmethod
    def for_evaluation(cls, crop: int = 224, **kwargs) -> "PvtV1ImageProcessor":
        """The original ImageNet eval transform: shortest edge to `crop / 0.875` (256 for 224), then center crop."""
        return cls(
            size={"shortest_edge": int(crop / EVAL_CROP_FRACTION)},
            do_center_crop=True,
            crop_size={"height": crop, "width": crop},
            **kwargs,
        )

    @classmethod
    def for_segmentation(cls, short_side: int = SEGMENTATION_SHORT_SIDE, **kwargs) -> "PvtV1ImageProcessor":
        """The paper's segmentation test transform: keep the aspect ratio with the short side at `short_side` (the
        long side at most 4x that), sides rounded up to a multiple of 32, bilinear, ImageNet mean/std."""
        return cls(
            size={"shortest_edge": short_side, "longest_edge": short_side * SEGMENTATION_LONG_SIDE // SEGMENTATION_SHORT_SIDE},
            size_divisor=SEGMENTATION_SIZE_DIVISOR,
            resample=PILImageResampling.BILINEAR,
            **kwargs,
        )

    def preprocess(self, images, segmentation_maps=None, **kwargs) -> BatchFeature:
        r"""
        segmentation_maps (`ImageInput`, *optional*): per-image class-index maps (H, W), returned as `labels`
            (int64, resized with nearest neighbour to the images' output size, never rescaled or normalised).
        """
        return super().preprocess(images, segmentation_maps, **kwargs)

    def resize(self, image: np.ndarray, size: SizeDict, resample=None, size_divisor: int | None = None, **kwargs):
        if size_divisor and size.shortest_edge and size.longest_edge:
            height, width = get_image_size(image, channel_dim=ChannelDimension.FIRST)
            target = aligned_resize_shape(height, width, size.shortest_edge, size.longest_edge, size_divisor)
            size = SizeDict(height=target[0], width=target[1])
        return super().resize(image, size, resample, **kwargs)

    def _preprocess_image_like_inputs(
        self, images, segmentation_maps, do_convert_rgb, input_data_format, return_tensors, **kwargs
    ) -> BatchFeature:
        do_reduce_labels = kwargs.pop("do_reduce_labels")
        images = self._prepare_image_like_inputs(
            images=images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format
        )
        data = {"pixel_values": self._preprocess(images, **kwargs)}
        if segmentation_maps is not None:
            maps = self._prepare_image_like_inputs(
                images=segmentation_maps,
                expected_ndims=2,
                do_convert_rgb=False,
                input_data_format=ChannelDimension.FIRST,
            )
            if len(maps) != len(images):
                raise ValueError(f"Got {len(images)} images but {len(maps)} segmentation maps; give one per image.")
            if do_reduce_labels:
                maps = [reduce_labels(label_map) for label_map in maps]
            map_kwargs = {**kwargs, "do_rescale": False, "do_normalize": False, "resample": PILImageResampling.NEAREST}
            data["labels"] = [label_map.squeeze(0).astype(np.int64) for label_map in self._preprocess(maps, **map_kwargs)]
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _preprocess(
        self,
        images: list[np.ndarray],
        do_resize: bool,
        size: SizeDict,
        resample,
        do_center_crop: bool,
        crop_size: SizeDict,
        do_rescale: bool,
        rescale_factor: float,
        do_normalize: bool,
        image_mean,
        image_std,
        size_divisor: int | None = None,
        **kwargs,
    ) -> list[np.ndarray]:
        processed = []
        for image in images:
            if do_resize:
                image = self.resize(image, size, resample, size_divisor=size_divisor)
            if do_center_crop:
                image = self.center_crop(image, crop_size)
            if do_rescale:
                image = self.rescale(image, rescale_factor)
            if do_normalize:
                image = self.normalize(image, image_mean, image_std)
            processed.append(image)
        return processed

    def post_process_semantic_segmentation(self, outputs, target_sizes=None) -> list:
        """Class-index maps (H, W) from a segmentation model's `logits`: bilinearly resized to `target_sizes`
        (one (height, width) per image, e.g. the original images' sizes) before the argmax, else at logits size."""
        import torch
        import torch.nn.functional as F

        logits = outputs.logits
        if target_sizes is None:
            return list(logits.argmax(dim=1))
        if len(target_sizes) != len(logits):
            raise ValueError(f"Got {len(target_sizes)} target sizes for a batch of {len(logits)}; give one per image.")
        return [
            F.interpolate(image_logits[None], size=tuple(int(s) for s in size), mode="bilinear", align_corners=False)[
                0
            ].argmax(dim=0)
            for image_logits, size in zip(logits, torch.as_tensor(target_sizes).tolist())
        ]


def reduce_labels(label_map: np.ndarray) -> np.ndarray:
    """ADE20K-style label reduction: 0 ("other") becomes 255 (ignored) and every other class moves down by one."""
    label_map = label_map.astype(np.int64)
    return np.where((label_map == 0) | (label_map == 255), 255, label_map - 1)


# The name users and saved code know; the class itself is registered under its own name.
PvtImageProcessor = PvtV1ImageProcessor

__all__ = ["PvtImageProcessor", "PvtV1ImageProcessor", "to_8_bit", "reduce_labels", "aligned_resize_shape"]
