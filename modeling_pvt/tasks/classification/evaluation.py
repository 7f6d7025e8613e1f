"""Evaluating a PVT checkpoint on a labeled split; `scripts/evaluate.py` is a thin CLI over `main`, which picks the
mode from the checkpoint's config `architectures`.

Classifiers (this module): prints accuracy, top-5 accuracy (with 5 or more classes) and per-class accuracy, and
writes `eval_results.json` and `confusion_matrix.png`. `--resolution` evaluates at another input size than the
checkpoint's processor (the position embeddings are resized to it). Segmentation models: `segmentation_evaluation`.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import numpy as np
import torch
from transformers import HfArgumentParser

from .cli import DEBUG_ENVIRONMENT_VARIABLE, DEBUG_FLAG
from .conversion import read_pvt_config
from .data import DataError, DatasetArguments, LabeledSplits, make_transform, processor_size
from .image_processing_pvt import EVAL_CROP_FRACTION, PvtImageProcessor
from .modeling_pvt import PvtForImageClassification
from .quantization import calibration_subset, describe_int8, quantize_on_dataset
from .segmentation_evaluation import (
    SegmentationEvaluationArguments,
    evaluate_segmentation,
    format_segmentation_report,
    is_segmentation_checkpoint,
)

logger = logging.getLogger(__name__)

ACCURACY_METRIC_PATH = Path(__file__).parent / "metrics" / "topk_accuracy.py"
TOP_K = 5
# Beyond this many classes tick labels are unreadable; the matrix is still drawn.
_MAX_LABELED_CLASSES = 30
_GENERIC_LABEL = re.compile(r"LABEL_\d+")


@dataclass
class EvaluationArguments:
    model_name_or_path: str = field(
        metadata={
            "help": "Checkpoint folder or Hub repo: ours (classifier or segmentation), or a transformers-native PVT "
            "classifier."
        }
    )
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where eval_results.json and confusion_matrix.png (classifiers) or predictions.png (segmentation) "
            "go. Default: outputs/eval/<model path>."
        },
    )
    resolution: int | None = field(
        default=None,
        metadata={"help": "Classifiers only: evaluate at this square input size instead of the processor's."},
    )
    batch_size: int = field(
        default=64,
        metadata={
            "help": "Images per forward pass. Segmentation pads the images of a batch to the largest, and the model "
            "sees the padding as context: use 1 for natural images of different sizes."
        },
    )
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N images."})
    int8: bool = field(
        default=False,
        metadata={
            "help": "Evaluate the static int8 model (modeling_pvt.quantization.quantize_onednn, oneDNN) instead of "
            "fp32, calibrated on the first --calibration_images images of the training split (never on the evaluated "
            "ones). Without --output_dir the results go to outputs/eval/<model>-int8, beside the fp32 ones."
        },
    )
    calibration_images: int = field(default=64, metadata={"help": "Training images that calibrate --int8."})


@dataclass
class EvaluationDataArguments(DatasetArguments):
    dataset_name: str | None = field(
        default=None,
        metadata={
            "help": "Hub dataset (or local dataset path). Default: the embedded digits (classifiers) or the grid "
            "digits' held-out canvases (segmentation)."
        },
    )
    train_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local folder laid out as for --validation_dir; without that, its fine-tuning held-out 20%%."
        },
    )
    validation_dir: str | None = field(
        default=None,
        metadata={
            "help": "Local eval folder: <class_name>/<image> for classifiers; images/ + masks/ (same file names, "
            "single-channel PNG masks of class ids, 255 = ignore) and an optional id2label.json for segmentation."
        },
    )
    label_column_name: str | None = field(
        default=None,
        metadata={
            "help": "Label column of --dataset_name. Default: label (classifiers); annotation, then label "
            "(segmentation)."
        },
    )


def plot_confusion_matrix(predicted, references, label_names: list[str], path: Path) -> Path:
    """Row-normalised confusion matrix (true class per row) as a PNG; counts are written in the cells when few."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import confusion_matrix

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
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


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


def default_output_dir(model_name_or_path: str, int8: bool = False) -> Path:
    """outputs/eval/<the model path or repo id with separators replaced>[-int8], e.g. outputs/eval/outputs--run--model:
    an int8 evaluation never overwrites the fp32 one."""
    name = re.sub(r"[^\w.-]+", "--", model_name_or_path.strip("/"))
    return Path("outputs") / "eval" / (f"{name}-int8" if int8 else name)


def evaluate_checkpoint(arguments: EvaluationArguments, data: DatasetArguments) -> dict:
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
    output_dir = Path(arguments.output_dir or default_output_dir(arguments.model_name_or_path, arguments.int8))
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


_DESCRIPTION = """Evaluate a PVT checkpoint; the mode follows its config's architectures. Classifiers (ours or
transformers' native PVT): accuracy, top-5 and per-class accuracy, eval_results.json and confusion_matrix.png, on the
embedded digits unless data is given. Segmentation models (PvtForSemanticSegmentation): mean IoU, IoU per class and
pixel accuracy (ignored pixels excluded) of predictions at the masks' full resolution, with the eval transform and
metric of finetune_segmentation.py, eval_results.json and predictions.png, on the grid digits' held-out canvases
unless --validation_dir (images/ + masks/) or --dataset_name (an image and a mask column) is given."""


def main(argv: list[str] | None = None) -> dict:
    parser = HfArgumentParser(
        (EvaluationArguments, EvaluationDataArguments, SegmentationEvaluationArguments),
        description=_DESCRIPTION,
        epilog=f"{DEBUG_FLAG} (or {DEBUG_ENVIRONMENT_VARIABLE}=1) shows the full traceback of an error.",
    )
    arguments, data, segmentation = parser.parse_args_into_dataclasses(args=sys.argv[1:] if argv is None else argv)
    if data.streaming:
        raise DataError(
            "scripts/evaluate.py reads whole splits; drop --streaming (use --max_eval_samples to subsample)."
        )
    if arguments.batch_size < 1:
        raise ValueError(f"--batch_size must be at least 1 (got {arguments.batch_size}).")
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    config = read_pvt_config(arguments.model_name_or_path)
    output_dir = Path(arguments.output_dir or default_output_dir(arguments.model_name_or_path, arguments.int8))
    if is_segmentation_checkpoint(config):
        if arguments.resolution is not None:
            raise ValueError(
                "--resolution is for classifiers; a segmentation model is evaluated at the data's resolution (or "
                "--eval_scale LONG SHORT, e.g. 2048 512)."
            )
        results = evaluate_segmentation(
            arguments.model_name_or_path,
            data,
            segmentation,
            output_dir,
            arguments.batch_size,
            arguments.max_eval_samples,
            arguments.calibration_images if arguments.int8 else None,
        )
        print(format_segmentation_report(results), flush=True)
        return results
    defaults = SegmentationEvaluationArguments()
    given = [name for name, value in vars(segmentation).items() if value != getattr(defaults, name)]
    if given:
        architectures = ", ".join(config.get("architectures") or []) or "no architectures in its config"
        raise ValueError(
            f"{arguments.model_name_or_path} is a classifier ({architectures}); "
            f"{', '.join('--' + name for name in given)} apply to segmentation checkpoints only. Drop them."
        )
    data.label_column_name = data.label_column_name or "label"
    results = evaluate_checkpoint(arguments, data)
    print(format_report(results), flush=True)
    return results
