"""Evaluating a PVT semantic-segmentation checkpoint (`PvtForSemanticSegmentation`): the segmentation mode of
`scripts/evaluate.py`, chosen by `evaluation.main` from the checkpoint's config `architectures`.

Mean IoU, IoU per class and pixel accuracy (ignored pixels excluded) of predictions at the labels' full resolution,
with the fine-tuning run's eval transform and metric code (`segmentation_transforms`, `segmentation_metrics`): a
model scored on its run's held-out data gets the run's numbers. Writes `eval_results.json` (a class absent from both
the masks and the predictions has IoU null) and `predictions.png`.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import EvalPrediction

from ...data.sources import DataError, DatasetArguments
from ...image_processing_pvt import PvtImageProcessor
from ...modeling_pvt import PvtForSemanticSegmentation
from ...speed.quantization import calibration_subset, describe_int8, quantize_on_dataset
from .data import IGNORE_INDEX, SegmentationDataArguments, SegmentationSplits
from .metrics import StreamingMeanIoU, class_metric_key, nan_to_none
from .pictures import plot_predictions
from .transforms import SegmentationCollator, with_segmentation_transforms

logger = logging.getLogger(__name__)

SEGMENTATION_ARCHITECTURE = "PvtForSemanticSegmentation"
# Unnamed classes: transformers' default names, and those of a mask folder without id2label.json.
_UNNAMED_MODEL_CLASS = re.compile(r"LABEL_\d+")
_UNNAMED_DATA_CLASS = re.compile(r"class \d+")
_NAMES_SHOWN = 5


def _as_in_training(name: str):
    """The fine-tuning script's data flag of that name, with its default and help."""
    source = SegmentationDataArguments.__dataclass_fields__[name]
    return field(default=source.default, metadata=source.metadata)


@dataclass
class SegmentationEvaluationArguments:
    """The flags only segmentation checkpoints take; they mean what they mean in finetune_segmentation.py."""

    _argument_group_name = f"segmentation checkpoints ({SEGMENTATION_ARCHITECTURE}) only"

    do_reduce_labels: bool = _as_in_training("do_reduce_labels")
    id2label_file: str | None = _as_in_training("id2label_file")
    eval_scale: list[int] | None = _as_in_training("eval_scale")  # noqa: RUF009 - a field(), no shared list
    size_divisor: int = _as_in_training("size_divisor")


def is_segmentation_checkpoint(config: dict) -> bool:
    """Whether a saved config (`conversion.read_pvt_config`) is a segmentation model's."""
    return SEGMENTATION_ARCHITECTURE in (config.get("architectures") or [])


def _preview(names: list[str]) -> str:
    return ", ".join(names[:_NAMES_SHOWN]) + (", …" if len(names) > _NAMES_SHOWN else "")


def segmentation_label_names(data_names: list[str], model_config) -> list[str]:
    """The class names to score with. Mask values are class ids, so the data's classes must be the model's, in the
    same order; unnamed classes on one side (the model's `LABEL_i`, or `class i` of a mask folder without
    id2label.json, which counts only up to the largest id its masks hold) take the other side's names."""
    model_names = [model_config.id2label[index] for index in range(model_config.num_labels)]
    if data_names == model_names:
        return model_names
    if all(_UNNAMED_DATA_CLASS.fullmatch(name) for name in data_names) and len(data_names) <= len(model_names):
        return model_names
    if all(_UNNAMED_MODEL_CLASS.fullmatch(name) for name in model_names) and len(data_names) == len(model_names):
        return list(data_names)
    if len(data_names) == len(model_names):
        index = next(index for index, (ours, theirs) in enumerate(zip(model_names, data_names)) if ours != theirs)
        difference = f"class {index} is {model_names[index]!r} for the model but {data_names[index]!r} in the data"
    else:
        difference = f"the model has {len(model_names)} classes, the data {len(data_names)}"
    raise DataError(
        f"The model's classes do not match the data's: {difference} (model: {_preview(model_names)}; data: "
        f"{_preview(data_names)}). Evaluate a checkpoint fine-tuned on this data, or, if the masks do use the model's "
        "class ids, name them with --id2label_file."
    )


def _processor(model_name_or_path: str) -> PvtImageProcessor:
    """The checkpoint's processor, for its normalisation (the eval transform sets the size)."""
    try:
        return PvtImageProcessor.from_pretrained(model_name_or_path)
    except OSError:
        logger.warning(
            "%s has no preprocessor_config.json; normalising with ImageNet's mean and std.", model_name_or_path
        )
        return PvtImageProcessor.for_segmentation()


def load_eval_split(
    data: DatasetArguments, options: SegmentationEvaluationArguments, train_canvases: int = 0
) -> SegmentationSplits:
    """The held-out split the fine-tuning script would evaluate on with the same data flags (and `train_canvases`
    training canvases where the data is the grid digits)."""
    shared = {flag.name: getattr(data, flag.name) for flag in dataclasses.fields(DatasetArguments)}
    arguments = SegmentationDataArguments(**shared, **dataclasses.asdict(options))
    return arguments.load(grid_train_canvases=train_canvases)


@torch.inference_mode()
def score(model, eval_dataset, label_names: list[str], batch_size: int) -> dict:
    """The metrics of `model` on a transformed eval split, counted batch by batch as in the fine-tuning run."""
    loader = torch.utils.data.DataLoader(
        eval_dataset, batch_size=batch_size, collate_fn=SegmentationCollator(ignore_index=IGNORE_INDEX)
    )
    metric = StreamingMeanIoU(label_names)
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"].to(model.device)).logits
        counts = metric.preprocess_logits(logits, batch["labels"].to(model.device))
        metric(EvalPrediction(predictions=counts, label_ids=None), compute_result=False)
    return metric.result()


def describe_scale(eval_scale: list[int] | None, size_divisor: int) -> str:
    if eval_scale:
        return f"rescaled to fit {eval_scale[0]}x{eval_scale[1]}, sides multiples of {size_divisor}"
    return f"each at its own size, sides rounded up to multiples of {size_divisor}"


def evaluate_segmentation(
    model_name_or_path: str,
    data: DatasetArguments,
    options: SegmentationEvaluationArguments,
    output_dir: Path,
    batch_size: int,
    max_eval_samples: int | None = None,
    int8_calibration_images: int | None = None,
) -> dict:
    """Scores a segmentation checkpoint (its static int8 copy, calibrated on that many training images, when
    `int8_calibration_images` is given), writes eval_results.json and predictions.png, and returns the results."""
    int8 = int8_calibration_images is not None
    model = PvtForSemanticSegmentation.from_pretrained(model_name_or_path).eval()
    processor = _processor(model_name_or_path)
    splits = load_eval_split(data, options, int8_calibration_images or 0)
    label_names = segmentation_label_names(splits.label_names, model.config)
    evaluation = splits.eval
    if max_eval_samples is not None:
        evaluation = evaluation.select(range(min(max_eval_samples, len(evaluation))))
    eval_scale = tuple(options.eval_scale) if options.eval_scale else None

    def evaluation_transform(split):
        """The eval transform (resize, pad to size_divisor, normalise), applied to any split."""
        prepared = SegmentationSplits(None, split, label_names, splits.source, splits.do_reduce_labels)
        return with_segmentation_transforms(prepared, processor, None, eval_scale, options.size_divisor).eval

    transformed = evaluation_transform(evaluation)
    precision = "fp32"
    if int8:
        calibration = calibration_subset(splits.train, int8_calibration_images)
        collate = SegmentationCollator(ignore_index=IGNORE_INDEX)
        model = quantize_on_dataset(model, evaluation_transform(calibration), collate, batch_size)
        precision = describe_int8(len(calibration))
    scores = score(model, transformed, label_names, batch_size)
    results = {
        "model": model_name_or_path,
        "dataset": splits.source,
        "num_images": len(evaluation),
        "eval_scale": options.eval_scale,
        "size_divisor": options.size_divisor,
        "precision": precision,
        "mean_iou": scores["mean_iou"],
        "overall_accuracy": scores["overall_accuracy"],
        "mean_accuracy": scores["mean_accuracy"],
        "per_class_iou": nan_to_none({name: scores[f"iou_{class_metric_key(name)}"] for name in label_names}),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    plot_predictions(model, transformed, processor, label_names, output_dir / "predictions.png")
    results["output_dir"] = str(output_dir)
    return results


def format_segmentation_report(results: dict) -> str:
    per_class = results["per_class_iou"]
    width = max(len(name) for name in per_class)
    scale = describe_scale(results["eval_scale"], results["size_divisor"])
    accuracy = f"pixel accuracy {results['overall_accuracy']:.2%} (ignored pixels excluded)"
    lines = [
        f"{results['model']} on {results['dataset']} ({results['num_images']} images, {scale}, "
        f"{results['precision']}):",
        f"  mean IoU {results['mean_iou']:.3f}, {accuracy}, mean class accuracy {results['mean_accuracy']:.2%}",
        "  IoU per class:",
        *(f"    {name:<{width}}  {'-' if value is None else f'{value:.3f}'}" for name, value in per_class.items()),
    ]
    if None in per_class.values():
        lines.append("    (- : the class is in neither the masks nor the predictions)")
    lines.append(f"  wrote {results['output_dir']}/eval_results.json and predictions.png")
    return "\n".join(lines)


__all__ = [
    "SEGMENTATION_ARCHITECTURE",
    "SegmentationEvaluationArguments",
    "evaluate_segmentation",
    "format_segmentation_report",
    "is_segmentation_checkpoint",
    "load_eval_split",
    "score",
    "segmentation_label_names",
]
