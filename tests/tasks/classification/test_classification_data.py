"""Data loading, transforms, bad-input errors and the shipped accuracy metric (modeling_pvt.data, metrics/)."""

import io
import logging
import math
import random
from collections import Counter

import evaluate
import numpy as np
import pytest
import torch
from datasets import ClassLabel, Dataset, Features, IterableDataset
from datasets import Image as ImageFeature
from PIL import Image

from modeling_pvt import PvtImageProcessor
from modeling_pvt.data.digits import load_digits_splits
from modeling_pvt.data.sources import DataError, LabeledSplits, to_rgb
from modeling_pvt.tasks.classification.data import (
    TrainAugmentation,
    check_labels,
    load_hub_splits,
    load_image_folder_splits,
    load_splits,
    make_transform,
    rand_augment,
    random_resized_crop,
    with_transforms,
)
from modeling_pvt.tasks.classification.evaluation import ACCURACY_METRIC_PATH
from modeling_pvt.tasks.classification.task import mix_batch


def _save(image: Image.Image, path, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    image.save(path, **kwargs)
    return path


def _noise(size=40, mode="RGB", seed=0):
    array = np.random.default_rng(seed).integers(0, 255, (size, size, 3), dtype=np.uint8)
    return Image.fromarray(array).convert(mode)


@pytest.fixture
def image_folder(tmp_path):
    """Two classes in <root>/<class>/, with grayscale, RGBA, palette and 16-bit images among them."""
    root = tmp_path / "images"
    for index in range(5):
        _save(_noise(seed=index), root / "cat" / f"rgb{index}.png")
        _save(_noise(seed=10 + index), root / "dog" / f"rgb{index}.jpg")
    _save(_noise(mode="L"), root / "cat" / "gray.png")
    _save(_noise(mode="RGBA"), root / "dog" / "alpha.png")
    _save(_noise(mode="P"), root / "dog" / "palette.png")
    sixteen_bit = Image.fromarray(np.full((40, 40), 30000, dtype=np.uint16))
    _save(sixteen_bit, root / "cat" / "sixteen.png")
    return root


def test_digits_split_is_fixed_stratified_and_rgb():
    first, second = load_digits_splits(32), load_digits_splits(32)
    assert (len(first.train), len(first.eval)) == (1437, 360)
    assert first.eval["label"] == second.eval["label"]  # the held-out split does not depend on anything
    counts = Counter(first.eval["label"])
    assert sorted(counts) == list(range(10)) and min(counts.values()) >= 35  # ~20% of each class
    image = first.train[0]["image"]
    assert image.mode == "RGB" and image.size == (32, 32)
    assert first.label_names == [str(d) for d in range(10)]
    assert first.id2label[3] == "3" and first.label2id["7"] == 7


def test_image_folder_reads_classes_and_converts_every_mode(image_folder):
    splits = load_image_folder_splits(image_folder, image_folder)
    assert splits.label_names == ["cat", "dog"]
    assert len(splits.train) == len(splits.eval) == 14
    transformed = with_transforms(splits, PvtImageProcessor(size={"height": 32, "width": 32}), TrainAugmentation())
    batch = transformed.eval[:14]
    assert all(pixels.shape == (3, 32, 32) and pixels.dtype == torch.float32 for pixels in batch["pixel_values"])
    assert transformed.train[0]["pixel_values"].shape == (3, 32, 32)
    assert sorted(set(batch["labels"])) == [0, 1]


def test_to_rgb_scales_sixteen_bit_and_composites_alpha():
    sixteen = to_rgb(Image.fromarray(np.full((4, 4), 32768, dtype=np.uint16)))
    assert sixteen.mode == "RGB" and np.asarray(sixteen)[0, 0, 0] == 127  # mid-grey, not clipped to white
    transparent = to_rgb(Image.new("RGBA", (4, 4), (0, 0, 0, 0)))
    assert np.asarray(transparent)[0, 0].tolist() == [255, 255, 255]
    assert to_rgb(Image.new("L", (4, 4), 9)).getpixel((0, 0)) == (9, 9, 9)


def test_image_folder_without_validation_holds_out_a_stratified_part(image_folder):
    splits = load_image_folder_splits(image_folder)
    assert len(splits.train) + len(splits.eval) == 14 and len(splits.eval) == 3
    assert set(splits.eval["label"]) == {0, 1}


def test_corrupt_and_truncated_images_are_skipped_with_a_count(image_folder, caplog):
    (image_folder / "cat" / "garbage.jpg").write_bytes(b"this is not an image")
    buffer = io.BytesIO()
    _noise(64).save(buffer, format="JPEG")
    (image_folder / "dog" / "truncated.jpg").write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with caplog.at_level(logging.WARNING, logger="modeling_pvt.data.sources"):
        splits = load_image_folder_splits(image_folder, image_folder)
    assert len(splits.train) == 14  # both broken files left out
    assert "Skipping 2 corrupt or truncated image file(s) of 16" in caplog.text
    assert "garbage.jpg" in caplog.text and "truncated.jpg" in caplog.text


def test_a_folder_of_mostly_corrupt_images_is_refused_unless_allowed(tmp_path):
    root = tmp_path / "data"
    for index in range(4):
        _save(_noise(seed=index), root / ("cat" if index % 2 else "dog") / f"{index}.png")
    for index in range(5):
        (root / "cat" / f"broken-{index}.jpg").write_bytes(b"this is not an image")
    with pytest.raises(DataError) as refused:
        load_image_folder_splits(root, root)
    message = str(refused.value)
    assert f"5 of 9 image files in {root} are unusable, more than half: 5 corrupt or truncated (e.g. broken-0.jpg" in (
        message
    )
    assert "Only 4 would be used" in message and "--allow_skipped_files true" in message
    splits = load_splits(train_dir=str(root), validation_dir=str(root), allow_skipped_files=True)
    assert len(splits.train) == 4


def test_folder_errors_name_the_problem_and_the_fix(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="No image files found under .*one subfolder per class"):
        load_image_folder_splits(empty)
    with pytest.raises(DataError, match="does not exist"):
        load_image_folder_splits(tmp_path / "missing")

    flat = tmp_path / "flat"
    _save(_noise(), flat / "a.png")
    _save(_noise(), flat / "b.png")
    with pytest.raises(DataError, match="no label.*move them to .*<class_name>"):
        load_image_folder_splits(flat)

    single = tmp_path / "single"
    for index in range(4):
        _save(_noise(seed=index), single / "only" / f"{index}.png")
    with pytest.raises(DataError, match="only 1 class.*at least 2"):
        load_image_folder_splits(single, single)

    train, validation = tmp_path / "train", tmp_path / "val"
    for name in ("circle", "square"):
        _save(_noise(), train / name / "0.png")
    for name in ("circle", "sqaure"):
        _save(_noise(), validation / name / "0.png")
    with pytest.raises(DataError) as typo:
        load_image_folder_splits(train, validation)
    message = str(typo.value)
    assert "classes the training folder" in message and "['sqaure']" in message
    assert "Training classes: ['circle', 'square']; validation classes: ['circle', 'sqaure']" in message

    few = tmp_path / "few"
    for name in ("a", "b", "c"):
        _save(_noise(), few / name / "0.png")
    with pytest.raises(DataError, match="Cannot hold out a stratified 20%.*at least 2 images.*--validation_dir"):
        load_image_folder_splits(few)

    broken = tmp_path / "broken"
    (broken / "a").mkdir(parents=True)
    (broken / "a" / "x.png").write_bytes(b"\x89PNG broken")
    with pytest.raises(DataError, match="All 1 image files .* are corrupt"):
        load_image_folder_splits(broken)


@pytest.fixture
def parquet_dataset(tmp_path):
    """A dataset folder that `load_dataset(<path>)` reads like a Hub dataset, with non-default column names."""
    features = Features({"img": ImageFeature(), "fine_label": ClassLabel(names=["a", "b", "c"])})
    for split, count in (("train", 12), ("test", 6)):
        data = {"img": [_noise(36, seed=i) for i in range(count)], "fine_label": [i % 3 for i in range(count)]}
        Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / "hub" / "data" / f"{split}.parquet"))
    return str(tmp_path / "hub")


def test_hub_dataset_by_name_with_custom_columns(parquet_dataset):
    splits = load_hub_splits(parquet_dataset, image_column="img", label_column="fine_label")
    assert splits.label_names == ["a", "b", "c"]
    assert (len(splits.train), len(splits.eval)) == (12, 6)  # "test" is the eval split when there is no validation
    assert splits.train.column_names == ["image", "label"]

    with pytest.raises(
        DataError, match=r"no image column 'image'; its columns are \['img', 'fine_label'\].*--image_column_name"
    ):
        load_hub_splits(parquet_dataset, label_column="fine_label")
    with pytest.raises(DataError, match="no label column 'label'.*--label_column_name"):
        load_hub_splits(parquet_dataset, image_column="img")
    with pytest.raises(DataError, match="no split 'valid'"):
        load_hub_splits(parquet_dataset, image_column="img", label_column="fine_label", eval_split="valid")


def test_streaming_hub_dataset_is_transformed_lazily(parquet_dataset):
    splits = load_splits(
        dataset_name=parquet_dataset, image_column_name="img", label_column_name="fine_label", streaming=True
    )
    assert isinstance(splits.train, IterableDataset)
    transformed = with_transforms(splits, PvtImageProcessor(size={"height": 32, "width": 32}), TrainAugmentation())
    example = next(iter(transformed.train))
    assert torch.as_tensor(example["pixel_values"]).shape == (3, 32, 32) and example["labels"] in (0, 1, 2)
    with pytest.raises(DataError, match="--streaming needs --dataset_name"):
        load_splits(streaming=True)


def test_labels_out_of_range_are_reported():
    features = Features({"image": ImageFeature(), "label": ClassLabel(names=["a", "b"])})
    dataset = Dataset.from_dict({"image": [_noise(8)] * 3, "label": [0, 1, -1]}, features=features)
    with pytest.raises(DataError, match=r"1 label\(s\) outside 0..1 \(e.g. -1\).*unlabeled split"):
        check_labels(LabeledSplits(dataset, dataset, ["a", "b"], "toy"))
    transform = make_transform(PvtImageProcessor(size={"height": 32, "width": 32}), num_classes=2)
    with pytest.raises(DataError, match="outside 0..1"):
        transform({"image": [_noise(8)], "label": [5]})


def test_augmentations_keep_the_output_size():
    random.seed(0)
    image = _noise(50)
    for _ in range(20):
        assert random_resized_crop(image, (32, 40), scale=(0.08, 1.0)).size == (40, 32)
        assert rand_augment(image, num_ops=2, magnitude=9).size == (50, 50)
    processor = PvtImageProcessor(size={"height": 32, "width": 32})
    augmented = make_transform(processor, 2, TrainAugmentation(rand_augment_ops=2))({"image": [image], "label": [1]})
    assert augmented["pixel_values"][0].shape == (3, 32, 32)


def test_mixup_and_cutmix_make_valid_soft_targets():
    torch.manual_seed(0)
    pixels, labels = torch.randn(6, 3, 32, 32), torch.tensor([0, 1, 2, 3, 4, 1])
    for mixup, cutmix in ((0.8, 0.0), (0.0, 1.0), (0.8, 1.0)):
        mixed, targets = mix_batch(pixels, labels, 5, mixup, cutmix, label_smoothing=0.1)
        assert mixed.shape == pixels.shape
        assert torch.allclose(targets.sum(-1), torch.ones(6))
        assert targets.min() >= 0.1 / 5 - 1e-6  # smoothing keeps every class above zero
    torch.manual_seed(1)
    mixed, targets = mix_batch(pixels, labels, 5, 0.0, 1.0, label_smoothing=0.0)
    pasted = (mixed != pixels).any(dim=1)[0].float().mean()  # the area taken from the partner image
    assert math.isclose(targets[0, 0].item(), 1 - pasted.item(), abs_tol=1e-6)


def test_shipped_metric_loads_by_path_without_network():
    metric = evaluate.load(str(ACCURACY_METRIC_PATH))
    ranked = [[2, 0, 1, 3, 4], [1, 2, 0, 3, 4], [4, 3, 2, 1, 0]]
    assert metric.compute(predictions=ranked, references=[2, 0, 0]) == {
        "accuracy": pytest.approx(1 / 3),
        "top5_accuracy": 1.0,
    }
    assert metric.compute(predictions=[[1, 0], [0, 1]], references=[1, 1]) == {"accuracy": 0.5}  # < 5 classes
    assert metric.compute(predictions=[1, 0], references=[1, 1]) == {"accuracy": 0.5}
