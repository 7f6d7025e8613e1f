"""Top-1 and top-5 accuracy as an `evaluate` metric module, shipped with the package and loaded by path, so that
no network is needed (`evaluate.load("accuracy")` downloads its script from the Hub):

    evaluate.load(str(modeling_pvt.evaluation.ACCURACY_METRIC_PATH))
"""

import datasets
import evaluate
import numpy as np

_DESCRIPTION = """Accuracy of ranked class predictions: `accuracy` checks the first-ranked class, `top5_accuracy` (reported
when every prediction ranks at least 5 classes, i.e. for datasets with 5 or more classes) checks the first five."""

_KWARGS_DESCRIPTION = """
Args:
    predictions (`list` of `list` of `int`): per example, class ids ranked from most to least likely (for example
        `logits.topk(min(5, num_classes)).indices`). A plain class id per example counts as a ranking of one.
    references (`list` of `int`): the true class ids.
Returns:
    accuracy (`float`): fraction whose first-ranked class is right.
    top5_accuracy (`float`, only with rankings of length >= 5): fraction with the right class in the first five.
Example:
    >>> metric.compute(predictions=[[2, 0, 1, 3, 4], [1, 2, 0, 3, 4]], references=[2, 0])
    {'accuracy': 0.5, 'top5_accuracy': 1.0}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TopkAccuracy(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation="",
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features(
                    {"predictions": datasets.Sequence(datasets.Value("int64")), "references": datasets.Value("int64")}
                ),
                datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}),
            ],
        )

    def _compute(self, predictions, references):
        ranked = np.asarray(predictions, dtype=np.int64)
        if ranked.ndim == 1:
            ranked = ranked[:, None]
        references = np.asarray(references, dtype=np.int64)
        if len(references) == 0:
            raise ValueError("No examples to score: predictions and references are empty.")
        hits = ranked == references[:, None]
        results = {"accuracy": float(hits[:, 0].mean())}
        if ranked.shape[1] >= 5:
            results["top5_accuracy"] = float(hits[:, :5].any(axis=1).mean())
        return results
