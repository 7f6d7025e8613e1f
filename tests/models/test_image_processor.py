import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from modeling_pvt import PvtImageProcessor
from modeling_pvt.image_processing_pvt import EVAL_CROP_FRACTION

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_sample_image("china.jpg")  # (427, 640, 3) uint8, a real photo shipped with scikit-learn


def test_defaults_match_the_original_training_transform():
    processor = PvtImageProcessor()
    assert processor.resample == Image.Resampling.BICUBIC
    assert processor.size == {"height": 224, "width": 224} and not processor.do_center_crop
    assert list(processor.image_mean) == list(MEAN) and list(processor.image_std) == list(STD)


def test_pil_numpy_and_torch_inputs_agree(photo):
    processor = PvtImageProcessor()
    from_pil = processor(Image.fromarray(photo), return_tensors="pt").pixel_values
    from_numpy = processor(photo, return_tensors="pt").pixel_values
    from_torch = processor(torch.from_numpy(photo.copy()).permute(2, 0, 1), return_tensors="pt").pixel_values
    assert from_pil.shape == (1, 3, 224, 224) and from_pil.dtype == torch.float32
    torch.testing.assert_close(from_numpy, from_pil)
    torch.testing.assert_close(from_torch, from_pil)


def test_bicubic_resize_rescale_and_normalize(photo):
    processor = PvtImageProcessor(size={"height": 64, "width": 96})
    expected = np.asarray(Image.fromarray(photo).resize((96, 64), Image.Resampling.BICUBIC), dtype=np.float64)
    expected = ((expected / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    actual = processor(Image.fromarray(photo), return_tensors="np").pixel_values[0]
    np.testing.assert_allclose(actual, expected, atol=1e-5)


def test_evaluation_transform_resizes_shortest_edge_then_crops(photo):
    processor = PvtImageProcessor.for_evaluation(224)
    assert processor.size == {"shortest_edge": int(224 / EVAL_CROP_FRACTION)} == {"shortest_edge": 256}
    pixel_values = processor(Image.fromarray(photo), return_tensors="np").pixel_values
    assert pixel_values.shape == (1, 3, 224, 224)
    resized = Image.fromarray(photo).resize((383, 256), Image.Resampling.BICUBIC)  # 640x427 -> short side 256
    left, top = (383 - 224) // 2, (256 - 224) // 2
    expected = np.asarray(resized.crop((left, top, left + 224, top + 224)), dtype=np.float64)
    expected = ((expected / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(pixel_values[0], expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "RGBA", "P", "CMYK"])
def test_other_color_modes_become_rgb(photo, mode):
    image = Image.fromarray(photo).convert(mode)
    assert PvtImageProcessor()(image, return_tensors="pt").pixel_values.shape == (1, 3, 224, 224)


def test_16_bit_images_keep_their_contrast(photo):
    gray = np.asarray(Image.fromarray(photo).convert("L"))
    wide = Image.fromarray(gray.astype(np.uint16) * 257)  # the same picture as 16-bit
    assert wide.mode.startswith("I;16")
    processor = PvtImageProcessor()
    torch.testing.assert_close(
        processor(wide, return_tensors="pt").pixel_values,
        processor(Image.fromarray(gray), return_tensors="pt").pixel_values,
    )


def test_batches_and_save_round_trip(tmp_path, photo):
    processor = PvtImageProcessor.for_evaluation(160)
    processor.save_pretrained(tmp_path)
    reloaded = PvtImageProcessor.from_pretrained(tmp_path)
    assert reloaded.to_dict() == processor.to_dict()
    batch = reloaded([photo, photo[::2, ::2]], return_tensors="pt").pixel_values
    assert batch.shape == (2, 3, 160, 160)
