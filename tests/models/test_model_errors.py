"""Bad input gets a clear error naming the fix, never a raw shape error from inside torch."""

import numpy as np
import pytest
import torch
from conftest import tiny_config

from modeling_pvt import PvtBackbone, PvtForImageClassification, PvtModel


@pytest.fixture(params=[PvtModel, PvtForImageClassification, PvtBackbone], ids=lambda c: c.__name__)
def model(request):
    return request.param(tiny_config()).eval()


@pytest.mark.parametrize(
    ("pixel_values", "message"),
    [
        (torch.randn(1, 1, 64, 64), "has 1 channels but the model expects 3"),
        (torch.randn(1, 4, 64, 64), "has 4 channels but the model expects 3"),
        (torch.randn(1, 3, 31, 64), "at least 32x32"),
        (torch.randn(1, 3, 64, 16), "at least 32x32"),
        (torch.randn(3, 64, 64), r"4-D .*unsqueeze\(0\)"),
        (torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8), "floating-point"),
    ],
    ids=["gray", "rgba", "short", "narrow", "3d", "uint8"],
)
def test_bad_pixel_values(model, pixel_values, message):
    with pytest.raises(ValueError, match=message):
        model(pixel_values)


def test_non_tensor_input(model):
    with pytest.raises(TypeError, match="return_tensors='pt'"):
        model(np.zeros((1, 3, 64, 64), dtype=np.float32))


def test_smallest_valid_input_runs(model):
    assert model(torch.randn(1, 3, 32, 32)) is not None


def test_minimum_size_follows_the_config():
    config = tiny_config(sr_ratios=[4, 2, 1, 1])
    assert config.min_input_size == 32
    config = tiny_config(sr_ratios=[16, 4, 2, 1])
    assert config.min_input_size == 64
    with pytest.raises(ValueError, match="at least 64x64"):
        PvtModel(config)(torch.randn(1, 3, 48, 64))
