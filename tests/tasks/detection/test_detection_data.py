"""Detection data: the scattered digits (boxes inside the canvas, never overlapping, drawn from held-out digits only,
fixed), box augmentation checked against the pixels it moves, COCO-format folders with every bad-data error, Hub
datasets in CPPE-5's layout, and the collator."""

import json
import logging
import random

import numpy as np
import pytest
import torch
from helpers import make_coco_folder, make_hub_detection_dataset
from PIL import Image

from modeling_pvt import PvtImageProcessor
from modeling_pvt.data.digits import upscaled_digits
from modeling_pvt.data.sources import DataError, LabeledSplits
from modeling_pvt.tasks.detection.data import (
    SCATTERED_CANVAS,
    check_objects,
    draw_scattered_digits,
    load_coco_folder,
    load_coco_folder_splits,
    load_hub_detection_splits,
    load_scattered_digits_splits,
)
from modeling_pvt.tasks.detection.transforms import (
    DetectionAugmentation,
    DetectionCollator,
    augment,
    flip_with_boxes,
    resize_with_boxes,
    with_detection_transforms,
    xywh_to_xyxy,
)


@pytest.fixture(scope="module")
def digits():
    grayscale, classes, train_pool, eval_pool = upscaled_digits(8)
    return np.stack([np.asarray(image, np.uint8) for image in grayscale]), classes, train_pool, eval_pool


def test_scattered_digits_lie_inside_the_canvas_apart_and_on_their_strokes(digits):
    pixels, classes, _, eval_pool = digits
    images, annotations, used = draw_scattered_digits(pixels, classes, eval_pool, 40, seed=1)
    assert images.shape == (40, SCATTERED_CANVAS, SCATTERED_CANVAS, 3) and images.dtype == np.uint8
    assert {len(found["bbox"]) for found in annotations} == {1, 2, 3, 4}
    for image, found, digit_ids in zip(images, annotations, used):
        assert set(digit_ids) <= set(eval_pool.tolist())  # held-out canvases hold held-out digits only
        assert found["category"] == [int(classes[digit]) for digit in digit_ids]
        boxes = xywh_to_xyxy(found["bbox"])
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2:] <= SCATTERED_CANVAS).all()
        assert ((boxes[:, 2:] - boxes[:, :2]) >= 5).all() and ((boxes[:, 2:] - boxes[:, :2]) <= 44).all()
        for first in range(len(boxes)):
            for second in range(first + 1, len(boxes)):
                a, b = boxes[first], boxes[second]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], "overlapping boxes"
        # The background is dark (each channel < 0.4 + noise) and the digits bright (each channel >= 0.6): pixels
        # bright in every channel lie in boxes only, and every box holds pixels far brighter than the background.
        bright = image.min(axis=-1) > 200
        brightness = image.mean(axis=-1)
        inside = np.zeros_like(bright)
        for x0, y0, x1, y1 in boxes.astype(int):
            inside[y0:y1, x0:x1] = True
            assert brightness[y0:y1, x0:x1].max() > np.median(brightness) + 0.15 * 255
        assert not (bright & ~inside).any()


def test_scattered_digits_are_fixed_and_train_canvases_use_train_digits(digits):
    pixels, classes, train_pool, eval_pool = digits
    _, _, used = draw_scattered_digits(pixels, classes, train_pool, 30, seed=0)
    assert {digit for digits_used in used for digit in digits_used} <= set(train_pool.tolist())
    assert not set(train_pool.tolist()) & set(eval_pool.tolist())
    short, longer = load_scattered_digits_splits(4, 3), load_scattered_digits_splits(6, 5)
    # Canvases are drawn in sequence from fixed seeds: a shorter set is the start of a longer one.
    assert short.train["label"] == longer.train["label"][:4] and short.eval["label"] == longer.eval["label"][:3]
    assert np.array_equal(np.asarray(short.eval[2]["image"]), np.asarray(longer.eval[2]["image"]))
    assert short.label_names == [str(digit) for digit in range(10)] and short.source == "scattered-digits"


# ---------------------------------------------------------------------------------------------------- augmentation


def _painted_extent(image: Image.Image) -> list[float]:
    """(x0, y0, x1, y1) of the pixels brighter than the background."""
    rows, columns = np.nonzero(np.asarray(image.convert("L")) > 128)
    return [columns.min(), rows.min(), columns.max() + 1, rows.max() + 1]


def _rectangle_image(width=60, height=40, box=(7, 5, 25, 30)) -> tuple[Image.Image, np.ndarray]:
    pixels = np.zeros((height, width, 3), np.uint8)
    x0, y0, x1, y1 = box
    pixels[y0:y1, x0:x1] = 255
    return Image.fromarray(pixels), np.array([box], dtype=np.float32)


def test_flip_resize_and_jitter_move_boxes_with_the_pixels():
    image, boxes = _rectangle_image()
    flipped, flipped_boxes = flip_with_boxes(image, boxes)
    assert flipped_boxes[0].tolist() == _painted_extent(flipped) == [35, 5, 53, 30]

    resized, resized_boxes = resize_with_boxes(image, boxes, (120, 80))  # x2: exact
    assert resized_boxes[0].tolist() == _painted_extent(resized)
    random.seed(0)
    for _ in range(5):
        augmentation = DetectionAugmentation(scale=(90, 60), ratio_range=(0.5, 1.5), horizontal_flip_probability=0.5)
        moved, moved_boxes = augment(image, boxes, augmentation)
        assert moved.width / moved.height == pytest.approx(1.5, abs=0.05) and moved.size != image.size
        # Bilinear resampling blurs the edge by up to a pixel.
        assert moved_boxes[0] == pytest.approx(_painted_extent(moved), abs=1.0)


def test_train_transform_boxes_follow_a_scattered_digit():
    splits = load_scattered_digits_splits(2, 1)
    processor = PvtImageProcessor.for_detection(long_side=128, short_side=128)
    augmentation = DetectionAugmentation((128, 128), (0.6, 0.6), horizontal_flip_probability=1.0)
    transformed = with_detection_transforms(splits, processor, augmentation, (128, 128))
    example, raw = transformed.train[0], splits.train[0]
    pixels = np.asarray(example["pixel_values"])
    assert pixels.shape == (3, 77, 77)  # 128 x 0.6, rounded as mmcv rounds
    # Denormalised brightness: strokes are bright, the background dark; each box holds its flipped digit's strokes.
    mean, std = np.array(processor.image_mean)[:, None, None], np.array(processor.image_std)[:, None, None]
    brightness = (pixels * std + mean).mean(axis=0)
    bright = brightness > np.median(brightness) + 0.15
    for (x0, y0, x1, y1), (x, y, w, h) in zip(example["labels"]["boxes"], raw["label"]["bbox"]):
        factor = 77 / 128  # boxes scale with the pixels' actual size
        expected = [(128 - x - w) * factor, y * factor, (128 - x) * factor, (y + h) * factor]
        assert [x0, y0, x1, y1] == pytest.approx(expected, abs=1e-4)
        assert bright[int(y0) : int(np.ceil(y1)), int(x0) : int(np.ceil(x1))].any()
    assert example["labels"]["class_labels"] == raw["label"]["category"]


def test_eval_transform_keeps_original_ground_truth_and_the_collator_pads(tmp_path):
    splits = LabeledSplits(None, load_coco_folder(make_coco_folder(tmp_path / "coco"))[0], ["person", "car"], "coco")
    processor = PvtImageProcessor.for_detection(long_side=100, short_side=50)
    transformed = with_detection_transforms(splits, processor, None, (100, 50)).eval
    example = transformed[0]
    assert np.asarray(example["pixel_values"]).shape == (3, 50, 67)  # 64x48 fit into 100x50: x50/48
    target = example["targets"]
    assert target["orig_size"] == [48, 64] and target["bbox"] == splits.eval[0]["label"]["bbox"]
    batch = DetectionCollator()([transformed[0], transformed[3]])  # image 3 has no boxes
    assert batch["pixel_values"].shape == (2, 3, 64, 96) and batch["pixel_mask"][0].sum() == 50 * 67
    assert batch["pixel_mask"][0, 49, 66] == 1 and batch["pixel_mask"][0, 50, 0] == 0
    assert batch["labels"][1]["boxes"].shape == (0, 4) and batch["labels"][1]["class_labels"].dtype == torch.long
    assert len(batch["targets"]) == 2


# ---------------------------------------------------------------------------------------------------- COCO folders


@pytest.fixture
def coco_folder(tmp_path):
    return make_coco_folder(tmp_path / "train")


def _edit(folder, change):
    path = folder / "annotations.json"
    coco = json.loads(path.read_text())
    change(coco)
    path.write_text(json.dumps(coco))


def test_coco_folder_maps_categories_keeps_crowds_and_empty_images(coco_folder):
    _edit(coco_folder, lambda coco: coco["annotations"][0].update(iscrowd=1))
    dataset, names = load_coco_folder(coco_folder)
    assert names == ["person", "car"] and len(dataset) == 8
    assert dataset[3]["label"]["bbox"] == []  # an image without annotations is kept
    first = dataset[0]["label"]
    assert first["iscrowd"] == [1] and first["category"] == [0]  # category id 3 -> class 0
    assert dataset[1]["label"]["category"] == [1, 0]  # id 7 -> class 1
    splits = load_coco_folder_splits(coco_folder)
    assert len(splits.train) + len(splits.eval) == 8 and len(splits.eval) == 2


def test_tiny_boxes_are_dropped_with_a_count_and_mostly_tiny_data_is_refused(coco_folder, caplog):
    # A sliver, and a box of height 0 as COCO's own train2017 has two of (bbox [296.65, 388.33, 1.03, 0.0]).
    _edit(coco_folder, lambda coco: coco["annotations"][0].update(bbox=[3, 3, 0.5, 9]))
    _edit(coco_folder, lambda coco: coco["annotations"][1].update(bbox=[30.5, 20.25, 1.03, 0.0]))
    with caplog.at_level(logging.WARNING):
        dataset, _ = load_coco_folder(coco_folder)
    assert "Dropping 2 of 8 boxes" in caplog.text and "under 1 px wide or high" in caplog.text
    assert "1.03x0" in caplog.text
    assert dataset[0]["label"]["bbox"] == [] and len(dataset[1]["label"]["bbox"]) == 1

    def shrink(coco):
        for annotation in coco["annotations"]:
            annotation["bbox"][2] = 0.5

    _edit(coco_folder, shrink)
    with pytest.raises(DataError, match=r"8 of the 8 boxes are under 1 px .* most of the data is unusable"):
        load_coco_folder(coco_folder)


def test_a_folder_of_mostly_corrupt_images_is_refused_unless_allowed(coco_folder, caplog):
    for path in sorted((coco_folder / "images").glob("*.png"))[:5]:
        path.write_bytes(path.read_bytes()[:40])  # truncated: the header no longer opens
    with pytest.raises(DataError, match=r"5 of 8 image files in .*images are unusable.*--allow_skipped_files true"):
        load_coco_folder(coco_folder)
    with caplog.at_level(logging.WARNING):
        dataset, _ = load_coco_folder(coco_folder, allow_skipped_files=True)
    assert len(dataset) == 3 and "Skipping 5 corrupt or truncated image file(s) of 8" in caplog.text


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda folder: (folder / "annotations.json").write_text("{not json"), r"annotations.json is not a COCO "
         r"instances file: it is not valid JSON"),
        (lambda folder: (folder / "annotations.json").write_text('{"images": []}'), r"'annotations' is missing"),
        (lambda folder: _edit(folder, lambda c: c["annotations"][1].update(category_id=5)), r"annotation 2 has "
         r"category_id 5, which 'categories' does not list \(ids 3; 7\)\. Add the category"),
        (lambda folder: (folder / "images" / "002.png").unlink(), r"references 1 image\(s\) that are not in .*images: "
         r"002.png"),
        (lambda folder: _edit(folder, lambda c: c["annotations"][0].update(bbox=[50, 10, 30, 10])), r"annotation 1 "
         r"\(image 000.png\): bbox \[50, 10, 30, 10\] reaches outside the 64x48 image"),
        (lambda folder: _edit(folder, lambda c: c["annotations"][0].update(bbox=[20, 5, -8, 10])), r"has a "
         r"negative width or height"),
        (lambda folder: _edit(folder, lambda c: c["images"][0].update(width=32)), r"000.png is 64x48 but .* says "
         r"32x48"),
        (lambda folder: _edit(folder, lambda c: c["categories"].append({"id": 3, "name": "x"})), r"two categories "
         r"share the id 3"),
    ],
    ids=["not-json", "not-coco", "unknown-category", "missing-image", "outside", "negative", "size", "dup-id"],
)  # fmt: skip
def test_bad_coco_data_names_the_file_and_the_fix(coco_folder, damage, message):
    damage(coco_folder)
    with pytest.raises(DataError, match=message) as error:
        load_coco_folder(coco_folder)
    assert "annotations.json" in str(error.value) or "images" in str(error.value)


def test_folder_layout_and_category_mismatch_errors(tmp_path, coco_folder):
    with pytest.raises(DataError, match=r"nowhere/annotations.json does not exist.*holds images/ and annotations"):
        load_coco_folder(tmp_path / "nowhere")
    other = make_coco_folder(tmp_path / "val", count=2)
    _edit(other, lambda coco: coco["categories"].reverse() or coco["categories"][0].update(name="bus"))
    with pytest.raises(DataError, match="name different categories"):
        load_coco_folder_splits(coco_folder, other)


# ------------------------------------------------------------------------------------------------------------- Hub


def test_hub_dataset_in_cppe5_layout_loads_streams_and_checks_boxes(tmp_path):
    folder = make_hub_detection_dataset(tmp_path / "hub")
    splits = load_hub_detection_splits(str(folder))
    assert splits.label_names == ["coverall", "mask"] and len(splits.train) == 6 and len(splits.eval) == 3
    processor = PvtImageProcessor.for_detection(long_side=96, short_side=80)
    transformed = with_detection_transforms(splits, processor, DetectionAugmentation((96, 80)), (96, 80))
    example = transformed.train[1]
    assert example["labels"] == {"class_labels": [1], "boxes": [[20.0, 16.0, 60.0, 56.0]]}  # x2 (48x40 -> 96x80)
    assert transformed.eval[0]["targets"]["bbox"] == [[10.0, 8.0, 20.0, 20.0]]

    streamed = load_hub_detection_splits(str(folder), streaming=True)
    stream = with_detection_transforms(streamed, processor, DetectionAugmentation((96, 80)), (96, 80)).train
    assert next(iter(stream))["labels"]["class_labels"] == [0]

    with pytest.raises(DataError, match=r"has no validation or test split .* cannot be cut from a stream"):
        load_hub_detection_splits(str(make_hub_detection_dataset(tmp_path / "one", {"train": 2})), streaming=True)


def test_boxes_of_a_dataset_are_checked_as_they_are_transformed():
    found = {"bbox": [[1, 1, 10, 10], [5, 5, 0.4, 3]], "category": [0, 1]}
    kept, dropped = check_objects(found, 20, 20, 2, "an image")
    assert dropped == 1 and kept["bbox"] == [[1, 1, 10, 10]] and kept["iscrowd"] == [0]
    with pytest.raises(DataError, match=r"an image: box 0 \[12, 2, 15, 15\] reaches outside the 20x20 image.*"
                       r"not normalised or \[x0, y0, x1, y1\]"):  # fmt: skip
        check_objects({"bbox": [[12, 2, 15, 15]], "category": [0]}, 20, 20, 2, "an image")
    with pytest.raises(DataError, match=r"category 4 is outside the dataset's 2 classes"):
        check_objects({"bbox": [[1, 1, 5, 5]], "category": [4]}, 20, 20, 2, "an image")
    # A list of dicts (another layout of the same objects) is read alike.
    as_list = [{"bbox": [1, 1, 10, 10], "category": 1, "area": 50.0}]
    assert check_objects(as_list, 20, 20, 2, "an image")[0]["area"] == [50.0]


def test_hub_categories_must_be_named(tmp_path):
    from datasets import Dataset, Features, List, Value
    from datasets import Image as ImageFeature

    features = Features(
        {"image": ImageFeature(), "objects": {"bbox": List(List(Value("float32"))), "category": List(Value("int64"))}}
    )
    data = {"image": [Image.new("RGB", (8, 8))] * 2, "objects": [{"bbox": [[1, 1, 2, 2]], "category": [0]}] * 2}
    for split in ("train", "test"):
        Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / "d" / "data" / f"{split}.parquet"))
    with pytest.raises(DataError, match="holds no class names .* Pass --id2label_file"):
        load_hub_detection_splits(str(tmp_path / "d"))
    (tmp_path / "names.json").write_text(json.dumps({"0": "thing"}))
    assert load_hub_detection_splits(str(tmp_path / "d"), id2label_file=str(tmp_path / "names.json")).label_names == [
        "thing"
    ]
