"""The shipped mean-IoU metric (modeling_pvt/metrics/mean_iou.py) and its Trainer helpers (segmentation_metrics)."""

import math

import evaluate
import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix
from transformers import EvalPrediction

from modeling_pvt.tasks.segmentation.metrics import (
    MEAN_IOU_METRIC_PATH,
    StreamingMeanIoU,
)


@pytest.fixture(scope="module")
def metric():
    return evaluate.load(str(MEAN_IOU_METRIC_PATH))


def test_hand_computed_iou_with_ignored_pixels_and_an_absent_class(metric):
    prediction = [[0, 0, 1], [1, 2, 2]]
    reference = [[0, 1, 1], [1, 2, 255]]  # the last pixel is ignored, whatever is predicted there
    # Labelled (prediction, reference) pairs: (0,0) (0,1) (1,1) (1,1) (2,2); class 3 appears nowhere.
    results = metric.compute(predictions=[prediction], references=[reference], num_labels=4)
    assert results["per_category_iou"][:3].tolist() == pytest.approx([1 / 2, 2 / 3, 1.0])
    assert math.isnan(results["per_category_iou"][3])
    assert results["per_category_accuracy"][:3].tolist() == pytest.approx([1.0, 2 / 3, 1.0])
    assert results["mean_iou"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)  # NaN left out of the mean
    assert results["mean_accuracy"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert results["overall_accuracy"] == pytest.approx(4 / 5)


def test_a_class_only_predicted_has_iou_zero_and_no_accuracy(metric):
    results = metric.compute(predictions=[[[1, 1], [0, 0]]], references=[[[0, 0], [0, 0]]], num_labels=3)
    assert results["per_category_iou"][1] == 0.0 and math.isnan(results["per_category_accuracy"][1])
    assert results["per_category_iou"][0] == pytest.approx(0.5)
    assert results["mean_iou"] == pytest.approx(0.25)  # class 2 (absent from both) excluded


def test_matches_a_confusion_matrix_on_random_maps(metric):
    rng = np.random.default_rng(0)
    predictions = [rng.integers(0, 5, (7, 9)) for _ in range(3)]
    references = [np.where(rng.random((7, 9)) < 0.1, 255, rng.integers(0, 5, (7, 9))) for _ in range(3)]
    results = metric.compute(predictions=predictions, references=references, num_labels=5)
    labelled = np.concatenate([r.ravel() for r in references]) != 255
    matrix = confusion_matrix(
        np.concatenate([r.ravel() for r in references])[labelled],
        np.concatenate([p.ravel() for p in predictions])[labelled],
        labels=range(5),
    )
    iou = np.diag(matrix) / (matrix.sum(0) + matrix.sum(1) - np.diag(matrix))
    np.testing.assert_allclose(results["per_category_iou"], iou)
    assert results["overall_accuracy"] == pytest.approx(np.trace(matrix) / matrix.sum())


def test_bad_inputs_are_named(metric):
    with pytest.raises(ValueError, match="upsample the logits"):
        metric.compute(predictions=[[[0, 1]]], references=[[[0], [1]]], num_labels=2)
    with pytest.raises(ValueError, match="reference holds class ids outside 0..1.*e.g. 7"):
        metric.compute(predictions=[[[0, 1]]], references=[[[0, 7]]], num_labels=2)
    with pytest.raises(ValueError, match="No labelled pixels"):
        metric.compute(predictions=[[[0, 1]]], references=[[[255, 255]]], num_labels=2)


def test_streaming_counts_equal_one_computation(metric):
    rng = np.random.default_rng(1)
    streaming = StreamingMeanIoU(["background", "cat", "dog"])
    predictions, references = [], []
    for index in range(3):
        height = 6 + 2 * index  # batches of different sizes, as natural images have
        logits = torch.from_numpy(rng.normal(size=(2, 3, height, 5))).float()
        labels = torch.from_numpy(np.where(rng.random((2, height, 5)) < 0.1, 255, rng.integers(0, 3, (2, height, 5))))
        counts = streaming.preprocess_logits((logits,), labels)
        assert counts.shape == (2, 4, 3) and counts.dtype == torch.int64
        result = streaming(EvalPrediction(counts, labels), compute_result=index == 2)
        assert (result is None) == (index < 2)
        predictions += list(logits.argmax(dim=1).numpy())  # same size: upsampling changes nothing
        references += list(labels.numpy())
    whole = metric.compute(predictions=predictions, references=references, num_labels=3)
    assert result["mean_iou"] == pytest.approx(whole["mean_iou"])
    assert result["overall_accuracy"] == pytest.approx(whole["overall_accuracy"])
    assert [result[f"iou_{name}"] for name in ("background", "cat", "dog")] == pytest.approx(
        whole["per_category_iou"].tolist()
    )
    assert streaming.total.sum() == 0  # a new evaluation starts from zero


def test_counts_are_taken_at_full_resolution_without_trainers_padding_rows():
    streaming = StreamingMeanIoU(["a", "b", "c", "d"])
    logits = torch.zeros(1, 4, 3, 3)
    logits[0, 3, :, 2] = 5.0  # the right third of the image is class 3, the rest class 0
    labels = torch.zeros(1, 12, 12, dtype=torch.long)
    labels[0, :, 8:] = 3
    padded = torch.cat([labels, torch.full((1, 4, 12), -100)], dim=1)  # as Trainer pads labels across processes
    counts = streaming.preprocess_logits(logits, padded)[0]
    assert counts[3].tolist() == [12 * 8, 0, 0, 12 * 4]  # reference areas: no padding row counted
    assert counts[2].sum() == 12 * 12  # predictions upsampled to the 12 unpadded rows
    # Bilinear upsampling puts the class boundary midway between the logits' column centres: columns 6..11.
    assert counts[2, 3] == 12 * 6 and counts[0, 3] == 12 * 4
