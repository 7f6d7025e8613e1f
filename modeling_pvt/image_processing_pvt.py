"""Image processor for PVT: bicubic resize (optionally shortest edge + center crop), rescale, ImageNet normalize.

Built on transformers' PIL/NumPy backend, so it needs neither torchvision nor a GPU."""

import numpy as np
from PIL import Image
from transformers.image_processing_backends import PilBackend
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    PILImageResampling,
)

# The original evaluation transform resizes the shorter side to crop / 0.875 (256 for 224) before cropping.
EVAL_CROP_FRACTION = 0.875
_WIDE_MODES = {"I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def to_8_bit(image: Image.Image) -> Image.Image:
    """16/32-bit and float grayscale images scaled to 8 bit by their value range; PIL's own conversion to RGB
    clips them at 255 (a white image). Other images are returned as they are."""
    if image.mode not in _WIDE_MODES:
        return image
    values = np.asarray(image, dtype=np.float64)
    scale = 255.0 / 65535.0 if values.max() > 255 else 1.0
    return Image.fromarray((values * scale).clip(0, 255).astype(np.uint8), mode="L")


class PvtImageProcessor(PilBackend):
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

    def convert_to_rgb(self, image, input_data_format=None):
        if isinstance(image, Image.Image):
            image = to_8_bit(image)
        return super().convert_to_rgb(image, input_data_format=input_data_format)

    @classmethod
    def for_evaluation(cls, crop: int = 224, **kwargs) -> "PvtImageProcessor":
        """The original ImageNet eval transform: shortest edge to `crop / 0.875` (256 for 224), then center crop."""
        return cls(
            size={"shortest_edge": int(crop / EVAL_CROP_FRACTION)},
            do_center_crop=True,
            crop_size={"height": crop, "width": crop},
            **kwargs,
        )


__all__ = ["PvtImageProcessor", "to_8_bit"]
