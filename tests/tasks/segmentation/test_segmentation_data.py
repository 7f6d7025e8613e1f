"""Segmentation data: grid digits, image/mask folders, Hub datasets, bad masks, joint transforms, collator."""

import json
import logging
import random

import numpy as np
import pytest
import torch
from datasets import IterableDataset
from helpers import REPO, make_hub_segmentation_dataset
from PIL import Image

from modeling_pvt import PvtImageProcessor
from modeling_pvt.data.digits import upscaled_digits
from modeling_pvt.data.sources import DataError
from modeling_pvt.tasks.segmentation.data import (
    GRID_LABEL_NAMES,
    GRID_TRAIN_CANVASES,
    SegmentationDataArguments,
    draw_grid_digits,
    load_grid_digits_splits,
    load_hub_segmentation_splits,
    load_mask_folder_splits,
)
from modeling_pvt.tasks.segmentation.transforms import (
    SegmentationAugmentation,
    SegmentationCollator,
    augment_pair,
    eval_resize,
    make_segmentation_transform,
    photometric_distortion,
    random_crop,
    rescaled_size,
    with_segmentation_transforms,
)

PROCESSOR = PvtImageProcessor()


def _noise(width, height, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8))


def _mask(width, height, values=(0, 1, 2), seed=0):
    return Image.fromarray(np.random.default_rng(seed).choice(values, (height, width)).astype(np.uint8), mode="L")


def _save(image, path):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path)
    return path


@pytest.fixture
def mask_folder(tmp_path):
    root = tmp_path / "data"
    for index in range(6):
        _save(_noise(40, 36, index), root / "images" / f"{index:03d}.jpg")
        _save(_mask(40, 36, seed=index), root / "masks" / f"{index:03d}.png")
    (root / "id2label.json").write_text(json.dumps({"0": "sky", "1": "road", "2": "car"}))
    return root


# ---------------------------------------------------------------------------------------------------- grid digits


def test_grid_digits_are_fixed_and_train_and_held_out_use_disjoint_digits():
    first, second = load_grid_digits_splits(30, 10), load_grid_digits_splits(30, 10)
    assert (len(first.train), len(first.eval)) == (30, 10)
    assert first.label_names == GRID_LABEL_NAMES and len(GRID_LABEL_NAMES) == 11
    assert first.source == "grid-digits" and first.id2label[0] == "background"
    for index in (0, 9):
        assert np.array_equal(np.asarray(first.eval[index]["image"]), np.asarray(second.eval[index]["image"]))
        assert np.array_equal(np.asarray(first.train[index]["label"]), np.asarray(second.train[index]["label"]))
    example = first.train[0]
    assert example["image"].mode == "RGB" and example["image"].size == (64, 64) and example["label"].mode == "L"
    assert GRID_TRAIN_CANVASES >= 2000

    images, classes, train_pool, eval_pool = upscaled_digits(32)
    intensities = np.stack([np.asarray(image, np.float32) / 255 for image in images])
    _, _, train_used = draw_grid_digits(intensities, classes, train_pool, 200, seed=0)
    _, _, eval_used = draw_grid_digits(intensities, classes, eval_pool, 50, seed=1)
    train_digits, eval_digits = set(sum(train_used, [])), set(sum(eval_used, []))
    assert train_digits <= set(train_pool.tolist()) and eval_digits <= set(eval_pool.tolist())
    assert not train_digits & eval_digits


def test_grid_digit_masks_label_the_bright_strokes_of_each_digit():
    images, classes, train_pool, _ = upscaled_digits(32)
    intensities = np.stack([np.asarray(image, np.float32) / 255 for image in images])
    canvases, masks, used = draw_grid_digits(intensities, classes, train_pool, 40, seed=3)
    for canvas, mask, digits in zip(canvases, masks, used):
        assert 1 <= len(digits) <= 3
        assert set(np.unique(mask).tolist()) == {0} | {int(classes[d]) + 1 for d in digits}
        brightness = canvas.astype(float).mean(axis=-1)
        assert brightness[mask > 0].mean() > brightness[mask == 0].mean() + 40


# ---------------------------------------------------------------------------------------------------- local folders


def test_mask_folder_pairs_names_and_held_out_split(mask_folder):
    splits = load_mask_folder_splits(mask_folder)
    assert splits.label_names == ["sky", "road", "car"]
    assert len(splits.train) + len(splits.eval) == 6 and len(splits.eval) >= 1
    both = load_mask_folder_splits(mask_folder, mask_folder)
    assert len(both.train) == len(both.eval) == 6
    transformed = with_segmentation_transforms(both, PROCESSOR, SegmentationAugmentation(crop_size=32))
    train_example, eval_example = transformed.train[0], transformed.eval[0]
    assert train_example["pixel_values"].shape == (3, 32, 32) and train_example["labels"].shape == (32, 32)
    assert eval_example["pixel_values"].shape == (3, 64, 64)  # rounded up to multiples of 32
    assert eval_example["labels"].dtype == np.int64 and set(np.unique(eval_example["labels"])) <= {0, 1, 2}


def test_mask_folder_without_label_file_names_classes_by_id(mask_folder):
    (mask_folder / "id2label.json").unlink()
    assert load_mask_folder_splits(mask_folder, mask_folder).label_names == ["class 0", "class 1", "class 2"]


def test_images_without_masks_are_skipped_with_a_count(mask_folder, caplog):
    _save(_noise(40, 36), mask_folder / "images" / "orphan.jpg")
    with caplog.at_level(logging.WARNING, logger="modeling_pvt.data.sources"):
        splits = load_mask_folder_splits(mask_folder, mask_folder)
    assert len(splits.eval) == 6
    assert "Skipping 1 image file(s) of 7" in caplog.text and "orphan.jpg" in caplog.text and "no mask" in caplog.text


def test_a_folder_whose_masks_are_mostly_misnamed_is_refused_unless_allowed(tmp_path, caplog):
    root = tmp_path / "data"
    for index in range(12):
        _save(_noise(40, 36, index), root / "images" / f"{index:03d}.jpg")
        # 10 of 12 masks misnamed (a suffix the images lack), one corrupt: 2 usable pairs.
        name = f"{index:03d}.png" if index < 2 else f"{index:03d}_mask.png"
        _save(_mask(40, 36, seed=index), root / "masks" / name)
    (root / "masks" / "002.png").write_bytes(b"not a png")
    with pytest.raises(DataError) as refused:
        load_mask_folder_splits(root, root)
    message = str(refused.value)
    assert f"10 of 12 image files in {root / 'images'} are unusable, more than half" in message
    assert f"9 have no mask of the same name in {root / 'masks'} (e.g. 003.jpg" in message
    assert "1 have a corrupt or truncated mask (e.g. 002.jpg)" in message
    assert "Only 2 would be used" in message and "--allow_skipped_files true" in message

    with caplog.at_level(logging.WARNING, logger="modeling_pvt.data.sources"):
        splits = load_mask_folder_splits(root, root, allow_skipped_files=True)
    assert len(splits.eval) == 2 and "Skipping 10 image file(s) of 12" in caplog.text
    arguments = SegmentationDataArguments(train_dir=str(root), validation_dir=str(root), allow_skipped_files=True)
    assert len(arguments.load().train) == 2  # the shared data flag reaches the loader


def test_half_of_the_images_unusable_is_still_used(mask_folder):
    for index in range(3):
        _save(_noise(40, 36, index), mask_folder / "images" / f"orphan-{index}.jpg")
    assert len(load_mask_folder_splits(mask_folder, mask_folder).eval) == 6  # 3 of 9 skipped


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda root: _save(_noise(40, 36), root / "masks" / "000.png"), r"not single-channel .*000.png: mode RGB"),
        (lambda root: _save(_mask(20, 36), root / "masks" / "001.png"), r"differ in size .*001.png is 20x36 .* 40x36"),
        (lambda root: _save(_mask(40, 36, (0, 7)), root / "masks" / "002.png"), r"class ids \[7\] outside 0..2"),
        (lambda root: _save(_mask(40, 36), root / "masks" / "003.jpg"), r"JPEGs .*Save masks as PNG"),
        (lambda root: (root / "id2label.json").write_text('{"0": "a", "2": "c"}'), r"ids \[1\] have no name"),
    ],
)
def test_bad_masks_raise_one_clear_error(mask_folder, damage, message):
    damage(mask_folder)
    with pytest.raises(DataError, match=message):
        load_mask_folder_splits(mask_folder, mask_folder)


def test_folder_layout_errors(tmp_path, mask_folder):
    with pytest.raises(DataError, match="masks does not exist.*images/ and masks/"):
        _save(_noise(40, 36), tmp_path / "flat" / "images" / "a.png")
        load_mask_folder_splits(tmp_path / "flat")
    for path in (mask_folder / "masks").iterdir():
        path.rename(path.with_name("other_" + path.name))
    with pytest.raises(DataError, match="No image in .* has a mask of the same name"):
        load_mask_folder_splits(mask_folder)


def test_reduce_labels_makes_zero_ignored_and_shifts_the_rest(mask_folder):
    splits = load_mask_folder_splits(mask_folder, mask_folder, do_reduce_labels=True)
    assert splits.label_names == ["sky", "road", "car"] and splits.do_reduce_labels
    raw = np.asarray(splits.eval[0]["label"]).astype(np.int64)
    transform = make_segmentation_transform(PROCESSOR, 3, do_reduce_labels=True, size_divisor=4)
    labels = transform({"image": [splits.eval[0]["image"]], "label": [splits.eval[0]["label"]]})["labels"][0]
    assert np.array_equal(labels, np.where(raw == 0, 255, raw - 1))


# ------------------------------------------------------------------------------------------------------------- Hub


@pytest.fixture
def hub_folder(tmp_path):
    return make_hub_segmentation_dataset(tmp_path / "hub")


def test_hub_dataset_with_annotation_column_reduced_labels_and_streaming(hub_folder):
    splits = load_hub_segmentation_splits(str(hub_folder), do_reduce_labels=True)
    assert (len(splits.train), len(splits.eval)) == (6, 3) and splits.label_names == ["wall", "floor", "sky"]
    assert splits.train.column_names == ["image", "label"]
    batch = SegmentationCollator()([with_segmentation_transforms(splits, PROCESSOR, None).eval[i] for i in range(2)])
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and batch["labels"].dtype == torch.int64
    assert set(batch["labels"].unique().tolist()) <= {0, 1, 2, 255}

    arguments = SegmentationDataArguments(dataset_name=str(hub_folder), streaming=True, do_reduce_labels=True)
    streamed = arguments.load()
    assert isinstance(streamed.train, IterableDataset)
    transformed = with_segmentation_transforms(streamed, PROCESSOR, SegmentationAugmentation(crop_size=64))
    example = next(iter(transformed.train))
    assert np.asarray(example["pixel_values"]).shape == (3, 64, 64)  # the 48x40 image padded to the crop size
    assert (np.asarray(example["labels"])[40:] == 255).all()


def test_hub_errors_name_the_flag_or_the_fix(hub_folder):
    with pytest.raises(DataError, match=r"class ids \[3\] outside 0..2.*--do_reduce_labels"):
        splits = load_hub_segmentation_splits(str(hub_folder))  # 4 mask values, 3 names: labels not reduced
        with_segmentation_transforms(splits, PROCESSOR, None).eval[0]
    with pytest.raises(DataError, match="one class per image.*classification dataset"):
        load_hub_segmentation_splits(str(hub_folder), label_column="scene")
    with pytest.raises(DataError, match="no label column 'segmentation'.*--label_column_name"):
        load_hub_segmentation_splits(str(hub_folder), label_column="segmentation")
    (hub_folder / "id2label.json").unlink()
    with pytest.raises(DataError, match="not found"):
        load_hub_segmentation_splits(str(hub_folder))
    with pytest.raises(DataError, match="--streaming needs --dataset_name"):
        SegmentationDataArguments(streaming=True).load()


def test_rgb_masks_in_a_dataset_fail_when_transformed():
    transform = make_segmentation_transform(PROCESSOR, 3)
    with pytest.raises(DataError, match="not single-channel.*mode L or P"):
        transform({"image": [_noise(32, 32)], "label": [_noise(32, 32)]})
    with pytest.raises(DataError, match="is 16x32 but its image is 32x32"):
        transform({"image": [_noise(32, 32)], "label": [_mask(16, 32)]})


# ------------------------------------------------------------------------------------------------------ transforms


def _square_scene(width=120, height=90):
    """A black image with a white rectangle, and the mask marking that rectangle as class 1."""
    pixels = np.zeros((height, width, 3), np.uint8)
    mask = np.zeros((height, width), np.int64)
    pixels[20:60, 30:100] = 255
    mask[20:60, 30:100] = 1
    return Image.fromarray(pixels), mask


def test_train_geometry_keeps_image_and_mask_aligned():
    random.seed(0)
    augmentation = SegmentationAugmentation(
        scale=(160, 80), ratio_range=(0.5, 2.0), crop_size=64, cat_max_ratio=0.75, horizontal_flip_probability=0.5
    )
    for _ in range(20):
        image, mask = augment_pair(*_square_scene(), augmentation)
        bright = np.asarray(image).mean(axis=-1) > 127
        assert image.size == (mask.shape[1], mask.shape[0])
        assert (bright == (mask == 1)).mean() > 0.97  # only interpolated edge pixels may differ


def test_normalised_transform_paints_labels_where_the_image_is_painted():
    random.seed(1)
    image, mask = _square_scene()
    augmentation = SegmentationAugmentation(scale=(160, 80), crop_size=96, horizontal_flip_probability=1.0)
    transform = make_segmentation_transform(PROCESSOR, 2, augmentation=augmentation)
    out = transform({"image": [image], "label": [Image.fromarray(mask.astype(np.uint8))]})
    pixels, labels = out["pixel_values"][0], out["labels"][0]
    assert pixels.shape == (3, 96, 96) and pixels.dtype == np.float32 and labels.dtype == np.int64
    labelled = labels != 255
    assert ((pixels[0] > 0)[labelled] == (labels[labelled] == 1)).mean() > 0.97
    assert (pixels[:, ~labelled] == 0).all()  # crop padding: the mean colour, and ignored


def test_crop_padding_cat_max_ratio_and_eval_resize():
    random.seed(2)
    mask = np.zeros((64, 64), np.int64)
    mask[:, 32:] = 1  # a crop of 32 columns is mixed only when it straddles the middle
    for _ in range(10):
        _, cropped = random_crop(_noise(64, 64), mask, crop_size=32, cat_max_ratio=0.9)
        assert cropped.shape == (32, 32)
        assert len(np.unique(cropped)) == 2
    image, small = random_crop(_noise(20, 10), np.zeros((10, 20), np.int64), crop_size=32)
    assert image.size == (20, 10) and small.shape == (10, 20)  # padded later, after normalisation

    assert rescaled_size(500, 375, (2048, 512)) == (683, 512)  # mmcv's imrescale
    assert rescaled_size(4000, 500, (2048, 512)) == (2048, 256)  # the long side caps it
    labels = np.random.default_rng(0).integers(0, 4, (75, 100))
    image, resized = eval_resize(_noise(100, 75), labels, (256, 64), size_divisor=32)
    assert image.size == (96, 64) and resized.shape == (64, 96)  # 85x64 rounded up to multiples of 32
    assert set(np.unique(resized)) <= set(np.unique(labels))  # nearest: no blended class ids


def test_photometric_distortion_changes_colours_not_geometry():
    random.seed(3)
    image = _noise(32, 24)
    changed = [np.asarray(photometric_distortion(image)) for _ in range(8)]
    assert all(pixels.shape == (24, 32, 3) and pixels.dtype == np.uint8 for pixels in changed)
    assert any(not np.array_equal(pixels, np.asarray(image)) for pixels in changed)


def test_collator_pads_variable_sizes_with_ignored_labels():
    examples = [
        {"pixel_values": np.ones((3, 40, 50), np.float32), "labels": np.ones((40, 50), np.int64)},
        {"pixel_values": np.ones((3, 64, 30), np.float32).tolist(), "labels": np.zeros((64, 30), np.int64).tolist()},
    ]
    batch = SegmentationCollator()(examples)
    assert batch["pixel_values"].shape == (2, 3, 64, 64) and batch["pixel_values"].dtype == torch.float32
    assert batch["labels"].shape == (2, 64, 64) and batch["labels"].dtype == torch.int64
    assert (batch["labels"][0, 40:] == 255).all() and (batch["labels"][0, :40, 50:] == 255).all()
    assert (batch["pixel_values"][0, :, 40:] == 0).all() and (batch["labels"][1, :, :30] == 0).all()


def test_training_collator_lets_batchnorm_train_on_one_small_image():
    from conftest import tiny_config

    from modeling_pvt import PvtForSemanticSegmentation

    example = {"pixel_values": np.ones((3, 32, 28), np.float32), "labels": np.ones((32, 28), np.int64)}
    assert SegmentationCollator()([example])["pixel_values"].shape == (1, 3, 32, 32)  # evaluation: as before
    assert SegmentationCollator(training=True)([example, example])["pixel_values"].shape == (2, 3, 32, 32)
    batch = SegmentationCollator(training=True)([example])
    assert batch["pixel_values"].shape == (1, 3, 64, 32) and (batch["labels"][0, 32:] == 255).all()
    assert (batch["labels"][0, :32, :28] == 1).all()

    model = PvtForSemanticSegmentation(tiny_config(num_labels=3, fpn_hidden_size=16, decoder_hidden_size=16)).train()
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):  # what the padding avoids
        model(**SegmentationCollator()([example]))
    model(**batch).loss.backward()


def test_ade20k_recipe_parses_into_data_and_training_arguments():

    from transformers import HfArgumentParser, TrainingArguments

    from modeling_pvt.training.arguments import recipe_to_flags

    recipe = REPO / "configuration" / "recipes" / "ade20k-semfpn-pvt-small.yaml"
    parser = HfArgumentParser((SegmentationDataArguments, TrainingArguments))
    data, training, model_flags = parser.parse_args_into_dataclasses(
        args=recipe_to_flags(recipe) + ["--use_cpu", "true", "--bf16", "false"], return_remaining_strings=True
    )
    assert model_flags == ["--config_name", "pvt-small"]  # the model arguments are the script's
    assert data.train_scale == [2048, 512] and data.train_ratio_range == [0.5, 2.0] and data.do_reduce_labels
    augmentation = SegmentationAugmentation.from_arguments(data)
    assert augmentation.crop_size == 512 and augmentation.cat_max_ratio == 0.75 and augmentation.photometric_distortion
    assert training.lr_scheduler_type == "polynomial" and training.lr_scheduler_kwargs == {"power": 0.9, "lr_end": 0.0}
    assert (training.learning_rate, training.weight_decay, training.max_steps) == (1e-4, 1e-4, 80000)
