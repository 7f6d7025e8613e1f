"""Data plumbing every task shares: image sources (folders, Hub datasets), the embedded digits, `DataError`."""

from .digits import DIGITS_NAME, load_digits_splits, upscaled_digits
from .sources import DataError, DatasetArguments, LabeledSplits, find_images, to_rgb

__all__ = [
    "DIGITS_NAME",
    "DataError",
    "DatasetArguments",
    "LabeledSplits",
    "find_images",
    "load_digits_splits",
    "to_rgb",
    "upscaled_digits",
]
