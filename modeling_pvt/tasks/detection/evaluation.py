"""Evaluating a PVT detection checkpoint (`PvtForObjectDetection`): the evaluation the fine-tuning run ends with (and
logs at every eval step), and the detection mode of `scripts/evaluate.py`, chosen from the checkpoint's config
`architectures`. Both go through `predict` and `metrics.coco_metrics`, so a model scored on its run's held-out data
gets the run's numbers.

Predictions are the processor's `post_process_object_detection` at mmdet's RetinaNet test settings (score > 0.05,
class-wise NMS at IoU 0.5, the 100 best per image), rescaled to each image's original size, where COCO mAP is
measured against the ground truth as annotated. Writes `eval_results.json` and `predictions.png`.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import torch

from ...data.sources import DataError, DatasetArguments, LabeledSplits
from ...image_processing_pvt import PvtImageProcessor
from ...modeling_pvt_detection import PvtForObjectDetection
from ...speed.quantization import calibration_subset, describe_int8, quantize_on_dataset
from .data import DetectionDataArguments
from .metrics import REPORTED, coco_metrics, per_class_keys
from .pictures import plot_detections
from .transforms import DetectionCollator, with_detection_transforms

logger = logging.getLogger(__name__)

DETECTION_ARCHITECTURE = "PvtForObjectDetection"
_UNNAMED_MODEL_CLASS = re.compile(r"LABEL_\d+")
_NAMES_SHOWN = 5


def is_detection_checkpoint(config: dict) -> bool:
    """Whether a saved config (`conversion.read_pvt_config`) is a detection model's."""
    return DETECTION_ARCHITECTURE in (config.get("architectures") or [])


def processor_scale(processor: PvtImageProcessor) -> tuple[int, int] | None:
    """The (long side, short side) a detection processor resizes to; its images are evaluated at that scale."""
    size = processor.size or {}
    if size.get("longest_edge") and size.get("shortest_edge"):
        return size["longest_edge"], size["shortest_edge"]
    return None


@torch.inference_mode()
def predict(model, batch: dict, processor: PvtImageProcessor, forward=None) -> tuple[torch.Tensor | None, list[dict]]:
    """(the batch's loss, one record per image: its `targets` — original size and ground truth — with `pred_boxes`
    (x0, y0, x1, y1 in the original image), `pred_scores` and `pred_labels`). `forward` replaces `model`'s call."""
    targets = batch["targets"]
    inputs = {name: batch[name] for name in ("pixel_values", "pixel_mask", "labels")}
    outputs = (forward or model)(**inputs)
    sizes = [target["orig_size"] for target in targets]
    detections = processor.post_process_object_detection(outputs, target_sizes=sizes)
    records = [
        {
            **target,
            "pred_boxes": found["boxes"].float().cpu().numpy(),
            "pred_scores": found["scores"].float().cpu().numpy(),
            "pred_labels": found["labels"].cpu().numpy(),
        }
        for target, found in zip(targets, detections)
    ]
    return outputs.loss, records


def loss_per_image(loss: torch.Tensor | None, records: list[dict]) -> None:
    """Stores the batch's loss in each of its records: averaged over images, it is Trainer's eval loss."""
    value = None if loss is None else float(loss)
    for record in records:
        record["loss"] = value


def summarize(records: list[dict], label_names: list[str], prefix: str = "eval") -> dict:
    """`<prefix>_loss`, the COCO metrics and `<prefix>_num_images` of the records of a whole eval split."""
    metrics = coco_metrics(records, label_names)
    losses = [record["loss"] for record in records if record.get("loss") is not None]
    if losses:
        metrics = {"loss": float(np.mean(losses)), **metrics}
    return {f"{prefix}_{name}": value for name, value in metrics.items()}


def score(model, eval_dataset, processor, label_names: list[str], batch_size: int) -> dict:
    """The `eval_*` metrics of `model` on a transformed eval split, batch by batch as in the fine-tuning run."""
    model.eval()
    loader = torch.utils.data.DataLoader(eval_dataset, batch_size=batch_size, collate_fn=DetectionCollator())
    records = []
    for batch in loader:
        batch = {**batch, "pixel_values": batch["pixel_values"].to(model.device)}
        batch["pixel_mask"] = batch["pixel_mask"].to(model.device)
        batch["labels"] = [{name: value.to(model.device) for name, value in image.items()} for image in batch["labels"]]
        loss, batch_records = predict(model, batch, processor)
        loss_per_image(loss, batch_records)
        records.extend(batch_records)
    return summarize(records, label_names)


def _preview(names: list[str]) -> str:
    return ", ".join(names[:_NAMES_SHOWN]) + (", …" if len(names) > _NAMES_SHOWN else "")


def detection_label_names(data_names: list[str], model_config) -> list[str]:
    """The class names to score with: the data's category ids are the model's classes, so both must name the same
    classes in the same order; a model without names (`LABEL_i`) takes the data's."""
    model_names = [model_config.id2label[index] for index in range(model_config.num_labels)]
    if data_names == model_names:
        return model_names
    if all(_UNNAMED_MODEL_CLASS.fullmatch(name) for name in model_names) and len(data_names) == len(model_names):
        return list(data_names)
    raise DataError(
        f"The model's classes do not match the data's (model: {len(model_names)}, {_preview(model_names)}; data: "
        f"{len(data_names)}, {_preview(data_names)}). Evaluate a checkpoint fine-tuned on this data (categories in "
        "the same order of ids)."
    )


def _processor(model_name_or_path: str) -> PvtImageProcessor:
    try:
        processor = PvtImageProcessor.from_pretrained(model_name_or_path)
    except OSError:
        processor = None
    if processor is None or processor_scale(processor) is None:
        logger.warning("%s has no detection preprocessor_config.json; using the paper's 1333x800.", model_name_or_path)
        return PvtImageProcessor.for_detection()
    return processor


def evaluate_detection(
    model_name_or_path: str,
    data: DatasetArguments,
    output_dir: Path,
    batch_size: int,
    max_eval_samples: int | None = None,
    int8_calibration_images: int | None = None,
    id2label_file: str | None = None,
) -> dict:
    """Scores a detection checkpoint (its static int8 copy, calibrated on that many training images, when
    `int8_calibration_images` is given: the backbone's linears and patch embeddings run int8, the FPN and head stay
    fp32) at its processor's scale, writes eval_results.json and predictions.png, and returns the results."""
    int8 = int8_calibration_images is not None
    model = PvtForObjectDetection.from_pretrained(model_name_or_path).eval()
    processor = _processor(model_name_or_path)
    shared = {name: getattr(data, name) for name in DatasetArguments.__dataclass_fields__}
    shared["label_column_name"] = data.label_column_name or "objects"
    arguments = DetectionDataArguments(**shared, id2label_file=id2label_file)
    splits = arguments.load(scattered_train_canvases=int8_calibration_images or 0)
    label_names = detection_label_names(splits.label_names, model.config)
    evaluation = splits.eval
    if max_eval_samples is not None:
        evaluation = evaluation.select(range(min(max_eval_samples, len(evaluation))))
    scale = processor_scale(processor)

    def evaluation_transform(split):
        """The eval transform (keep-ratio resize to the processor's scale, normalise), applied to any split."""
        return with_detection_transforms(LabeledSplits(None, split, label_names, splits.source), processor, None, scale)

    transformed = evaluation_transform(evaluation).eval
    precision = "fp32"
    if int8:
        calibration = calibration_subset(splits.train, int8_calibration_images)
        model = quantize_on_dataset(model, evaluation_transform(calibration).eval, DetectionCollator(), batch_size)
        precision = describe_int8(len(calibration))
    metrics = score(model, transformed, processor, label_names, batch_size)
    keys = dict(zip(label_names, per_class_keys(label_names)))
    results = {
        "model": model_name_or_path,
        "dataset": splits.source,
        "num_images": metrics["eval_num_images"],
        "scale": list(scale),
        "precision": precision,
        **{name: metrics[f"eval_{name}"] for name in REPORTED},
        "per_class_ap": {name: metrics[f"eval_{key}"] for name, key in keys.items()},
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    plot_detections(model, transformed, processor, label_names, output_dir / "predictions.png")
    results["output_dir"] = str(output_dir)
    return results


def _value(value) -> str:
    return "-" if value is None else f"{value:.3f}"


def format_detection_report(results: dict) -> str:
    per_class = results["per_class_ap"]
    width = max(len(name) for name in per_class)
    long_side, short_side = results["scale"]
    lines = [
        f"{results['model']} on {results['dataset']} ({results['num_images']} images, resized to fit "
        f"{long_side}x{short_side}, {results['precision']}):",
        f"  COCO mAP@[.5:.95] {_value(results['map'])}, AP50 {_value(results['map_50'])}, AP75 "
        f"{_value(results['map_75'])}, AR@100 {_value(results['mar_100'])}",
        f"  AP small {_value(results['map_small'])}, medium {_value(results['map_medium'])}, large "
        f"{_value(results['map_large'])}",
        "  AP per class:",
        *(f"    {name:<{width}}  {_value(value)}" for name, value in per_class.items()),
    ]
    if None in (*per_class.values(), results["map_small"], results["map_medium"], results["map_large"]):
        lines.append("    (- : no ground-truth box of that class or size)")
    lines.append(f"  wrote {results['output_dir']}/eval_results.json and predictions.png")
    return "\n".join(lines)


__all__ = [
    "DETECTION_ARCHITECTURE",
    "detection_label_names",
    "evaluate_detection",
    "format_detection_report",
    "is_detection_checkpoint",
    "loss_per_image",
    "predict",
    "processor_scale",
    "score",
    "summarize",
]
