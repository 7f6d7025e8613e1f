"""Evaluating an image classifier (ours or transformers' native PVT) on a labeled split: accuracy, top-5 accuracy
(with 5 or more classes), per-class accuracy, `eval_results.json` and `confusion_matrix.png`. `--resolution`
evaluates at another input size than the checkpoint's processor (the position embeddings are resized to it)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import evaluate
import numpy as np
import torch

from ...data.sources import DataError, LabeledSplits, processor_size
from ...image_processing_pvt import EVAL_CROP_FRACTION, PvtImageProcessor
from ...pictures import pyplot, save_figure
from ...modeling_pvt import PvtForImageClassification
from ...speed.quantization import calibration_subset, describe_int8, quantize_on_dataset
from .data import ClassificationDatasetArguments, make_transform

logger = logging.getLogger(__name__)

ACCURACY_METRIC_PATH = Path(__file__).resolve().parents[2] / "metrics" / "topk_accuracy.py"
TOP_K = 5
# Beyond this many classes tick labels are unreadable; the matrix is still drawn.
_MAX_LABELED_CLASSES = 30
_GENERIC_LABEL = re.compile(r"LABEL_\d+")


def plot_confusion_matrix(predicted, references, label_names: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix (true class per row) as a PNG; counts are written in the cells when few."""
    from sklearn.metrics import confusion_matrix

    plt = pyplot()

    classes = list(range(len(label_names)))
    counts = confusion_matrix(references, predicted, labels=classes)
    rates = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    side = min(4 + 0.4 * len(classes), 20)
    figure, axes = plt.subplots(figsize=(side, side))
    image = axes.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    figure.colorbar(image, ax=axes, fraction=0.046, pad=0.04, label="fraction of the true class")
    if len(classes) <= _MAX_LABELED_CLASSES:
        axes.set_xticks(classes, label_names, rotation=90)
        axes.set_yticks(classes, label_names)
        for row in classes:
            for column in classes:
                if counts[row, column]:
                    colour = "white" if rates[row, column] > 0.5 else "black"
                    axes.text(column, row, counts[row, column], ha="center", va="center", color=colour, fontsize=8)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"Confusion matrix ({len(references)} images)")
    figure.tight_layout()
    return save_figure(figure, path)


def dataset_to_model_ids(dataset_labels: list[str], model_config) -> list[int]:
    """For each dataset class id, the model's class id with the same name. Models whose labels are unnamed
    (`LABEL_0`, …) are taken to use the dataset's order when they have enough classes."""
    model_labels = [model_config.id2label[i] for i in range(model_config.num_labels)]
    by_name = {name: index for index, name in enumerate(model_labels)}
    missing = [name for name in dataset_labels if name not in by_name]
    if not missing:
        return [by_name[name] for name in dataset_labels]
    if all(_GENERIC_LABEL.fullmatch(name) for name in model_labels) and len(dataset_labels) <= len(model_labels):
        return list(range(len(dataset_labels)))
    raise DataError(
        f"The dataset has classes the model does not know: {missing[:10]} (the model has {len(model_labels)} classes, "
        f"e.g. {model_labels[:5]}). Evaluate a checkpoint fine-tuned on this dataset, or check the label column."
    )


def set_resolution(processor: PvtImageProcessor, resolution: int) -> PvtImageProcessor:
    """The processor at `resolution`: a center-cropping processor keeps its crop fraction (shorter side
    `resolution / 0.875` for the original eval transform), a plain one resizes straight to `resolution`."""
    if processor.do_center_crop:
        processor.size = {"shortest_edge": int(resolution / EVAL_CROP_FRACTION)}
        processor.crop_size = {"height": resolution, "width": resolution}
    else:
        processor.size = {"height": resolution, "width": resolution}
    return processor


def _collate(examples: list[dict]) -> dict:
    return {
        "pixel_values": torch.stack([example["pixel_values"] for example in examples]),
        "labels": torch.tensor([example["labels"] for example in examples]),
    }


@torch.inference_mode()
def predict(model, dataset, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(ranked top-k class ids per image, true labels) over `dataset` (already transformed)."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=_collate)
    ranked, references = [], []
    k = min(TOP_K, model.config.num_labels)
    for batch in loader:
        logits = model(pixel_values=batch["pixel_values"].to(model.device)).logits
        ranked.append(logits.topk(k, dim=-1).indices.cpu().numpy())
        references.append(batch["labels"].numpy())
    return np.concatenate(ranked), np.concatenate(references)


def per_class_accuracy(predicted: np.ndarray, references: np.ndarray, label_names: list[str]) -> dict[str, float]:
    """Accuracy within each class that occurs in `references`, keyed by class name."""
    return {
        label_names[label]: float((predicted[references == label] == label).mean()) for label in np.unique(references)
    }


def evaluate_checkpoint(arguments, data: ClassificationDatasetArguments, output_dir: Path) -> dict:
    """`arguments`: the evaluation CLI's (`tasks.evaluate.EvaluationArguments`)."""
    """Runs the evaluation, writes eval_results.json and confusion_matrix.png, and returns the results."""
    model = PvtForImageClassification.from_pretrained(arguments.model_name_or_path).eval()
    try:
        processor = PvtImageProcessor.from_pretrained(arguments.model_name_or_path)
    except OSError:
        logger.warning(
            "%s has no preprocessor_config.json; using the default PVT processor.", arguments.model_name_or_path
        )
        processor = PvtImageProcessor()
    if arguments.resolution is not None:
        if arguments.resolution < model.config.min_input_size:
            raise ValueError(
                f"--resolution {arguments.resolution} is below this model's minimum input size of "
                f"{model.config.min_input_size} pixels. Pass --resolution {model.config.min_input_size} or larger."
            )
        set_resolution(processor, arguments.resolution)
    digits_size = arguments.resolution or model.config.image_height_width[0]
    splits: LabeledSplits = data.load(digits_image_size=digits_size)
    eval_split = splits.eval
    if arguments.max_eval_samples is not None:
        eval_split = eval_split.select(range(min(arguments.max_eval_samples, len(eval_split))))

    model_ids = np.asarray(dataset_to_model_ids(splits.label_names, model.config))
    model_labels = [model.config.id2label[i] for i in range(model.config.num_labels)]
    transform = make_transform(processor, len(splits.label_names))
    precision = "fp32"
    if arguments.int8:
        calibration = calibration_subset(splits.train, arguments.calibration_images)
        model = quantize_on_dataset(model, calibration.with_transform(transform), _collate, arguments.batch_size)
        precision = describe_int8(len(calibration))
    ranked, dataset_references = predict(model, eval_split.with_transform(transform), arguments.batch_size)
    references = model_ids[dataset_references]

    metric = evaluate.load(str(ACCURACY_METRIC_PATH))
    scores = metric.compute(predictions=ranked, references=references)
    height, width = processor_size(processor)
    results = {
        "model": arguments.model_name_or_path,
        "dataset": splits.source,
        "num_images": len(references),
        "resolution": [height, width],
        "precision": precision,
        **scores,
        "per_class_accuracy": per_class_accuracy(ranked[:, 0], references, model_labels),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "eval_results.json").write_text(json.dumps(results, indent=2))
    present = sorted(set(references.tolist()) | set(ranked[:, 0].tolist()))
    compact = {model_id: index for index, model_id in enumerate(present)}  # only the classes that occur
    plot_confusion_matrix(
        [compact[p] for p in ranked[:, 0]],
        [compact[r] for r in references],
        [model_labels[i] for i in present],
        output_dir / "confusion_matrix.png",
    )
    results["output_dir"] = str(output_dir)
    return results


def format_report(results: dict) -> str:
    lines = [
        (
            f"{results['model']} on {results['dataset']} ({results['num_images']} images at "
            f"{results['resolution'][0]}x{results['resolution'][1]}, {results['precision']}):"
        ),
        f"  accuracy {results['accuracy']:.2%}"
        + (f", top-5 {results['top5_accuracy']:.2%}" if "top5_accuracy" in results else ""),
        "  per class: " + ", ".join(f"{name} {value:.1%}" for name, value in results["per_class_accuracy"].items()),
        f"  wrote {results['output_dir']}/eval_results.json and confusion_matrix.png",
    ]
    return "\n".join(lines)


