"""Mean IoU, per-class IoU and pixel accuracy for semantic segmentation as an `evaluate` metric module, shipped with
the package and loaded by path, so that no network is needed:

    metric = evaluate.load(str(modeling_pvt.segmentation_metrics.MEAN_IOU_METRIC_PATH))
    metric.compute(predictions=[...], references=[...], num_labels=150, ignore_index=255)

The scores come from per-class pixel counts (intersection, union, predicted area, reference area), as in
mmsegmentation and transformers' `mean_iou`. The counts add up over images, so a whole dataset can be scored batch
by batch in constant memory: `metric.areas(...)` counts one batch, `metric.scores(summed_areas)` scores the sum.
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Intersection over union of predicted and reference segmentation maps, per class and averaged over
classes (mean IoU), plus per-class and overall pixel accuracy. Pixels whose reference is `ignore_index` are left out.
A class absent from both the predictions and the references has no IoU (NaN) and is left out of the mean."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D integer arrays): predicted class id per pixel, one map per image, at the size of its
        reference map (upsample the logits to full resolution before the argmax).
    references (`list` of 2-D integer arrays): true class id per pixel; `ignore_index` marks unlabeled pixels.
    num_labels (`int`): number of classes.
    ignore_index (`int`, default 255): reference value of pixels to leave out.
Returns:
    mean_iou (`float`): mean over classes of IoU, classes absent from both sides excluded.
    mean_accuracy (`float`): mean over classes present in the references of the share of their pixels predicted right.
    overall_accuracy (`float`): share of all labelled pixels predicted right (pixel accuracy).
    per_category_iou (`ndarray` of shape (num_labels,)): IoU per class, NaN for classes absent from both sides.
    per_category_accuracy (`ndarray` of shape (num_labels,)): accuracy per class, NaN for classes not in the references.
Example:
    >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [255, 0]]], num_labels=2)
    {'mean_iou': 0.5, 'mean_accuracy': 0.5, 'overall_accuracy': 0.666..., 'per_category_iou': array([0.5, 0.5]), ...}
"""

# areas() rows
INTERSECTION, UNION, PREDICTED, REFERENCE = range(4)


def intersect_and_union(prediction, reference, num_labels: int, ignore_index: int = 255) -> np.ndarray:
    """int64 (4, num_labels): per class, the pixels in both maps, in either, in the prediction, in the reference;
    pixels whose reference is `ignore_index` are not counted."""
    prediction, reference = np.asarray(prediction), np.asarray(reference)
    if prediction.shape != reference.shape:
        raise ValueError(
            f"A prediction of shape {prediction.shape} is scored against a reference of shape {reference.shape}; "
            "upsample the logits to the reference's size before the argmax."
        )
    labelled = reference != ignore_index
    prediction, reference = prediction[labelled].astype(np.int64), reference[labelled].astype(np.int64)
    for name, values in (("prediction", prediction), ("reference", reference)):
        if values.size and (values.min() < 0 or values.max() >= num_labels):
            raise ValueError(
                f"A {name} holds class ids outside 0..{num_labels - 1} that are not the ignore index {ignore_index} "
                f"(e.g. {int(values[(values < 0) | (values >= num_labels)][0])}). Check num_labels and ignore_index."
            )
    intersection = np.bincount(reference[prediction == reference], minlength=num_labels)
    predicted = np.bincount(prediction, minlength=num_labels)
    referenced = np.bincount(reference, minlength=num_labels)
    return np.stack([intersection, predicted + referenced - intersection, predicted, referenced]).astype(np.int64)


def scores_from_areas(areas: np.ndarray) -> dict:
    """The metric's results from summed `intersect_and_union` counts."""
    areas = np.asarray(areas, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):  # 0/0 is the NaN of an absent class
        iou = areas[INTERSECTION] / areas[UNION]
        accuracy = areas[INTERSECTION] / areas[REFERENCE]
    labelled = areas[REFERENCE].sum()
    if labelled == 0:
        raise ValueError("No labelled pixels to score: every reference pixel is the ignore index, or none were given.")
    return {
        "mean_iou": float(np.nanmean(iou)),
        "mean_accuracy": float(np.nanmean(accuracy)),
        "overall_accuracy": float(areas[INTERSECTION].sum() / labelled),
        "per_category_iou": iou,
        "per_category_accuracy": accuracy,
    }


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class MeanIoU(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                    "references": datasets.Sequence(datasets.Sequence(datasets.Value("int64"))),
                }
            ),
        )

    def _compute(self, predictions, references, num_labels: int, ignore_index: int = 255):
        return self.scores(self.areas(predictions, references, num_labels, ignore_index))

    @staticmethod
    def areas(predictions, references, num_labels: int, ignore_index: int = 255) -> np.ndarray:
        """Summed `intersect_and_union` counts of a batch of maps (an array (B, H, W) or a list of 2-D maps)."""
        total = np.zeros((4, num_labels), dtype=np.int64)
        for prediction, reference in zip(predictions, references, strict=True):
            total += intersect_and_union(prediction, reference, num_labels, ignore_index)
        return total

    @staticmethod
    def scores(areas: np.ndarray) -> dict:
        return scores_from_areas(areas)
