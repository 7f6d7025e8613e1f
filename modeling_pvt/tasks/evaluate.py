"""`scripts/evaluate.py`: evaluates a PVT checkpoint on a labeled split, in the mode its config's `architectures`
name; each task's `evaluation` module does the work."""

from __future__ import annotations

import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from transformers import HfArgumentParser

from ..checkpoints.conversion import read_pvt_config
from ..cli import DEBUG_ENVIRONMENT_VARIABLE, DEBUG_FLAG
from ..data.sources import DataError
from .classification.data import ClassificationDatasetArguments
from .classification.evaluation import evaluate_checkpoint, format_report
from .detection.evaluation import evaluate_detection, format_detection_report, is_detection_checkpoint
from .segmentation.evaluation import (
    SegmentationEvaluationArguments,
    evaluate_segmentation,
    format_segmentation_report,
    is_segmentation_checkpoint,
)


@dataclass
class EvaluationArguments:
    model_name_or_path: str = field(
        metadata={
            "help": "Checkpoint folder or Hub repo: ours (classifier, segmentation or detection), or a "
            "transformers-native PVT classifier."
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
class EvaluationDataArguments(ClassificationDatasetArguments):
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


def default_output_dir(model_name_or_path: str, int8: bool = False) -> Path:
    """outputs/eval/<the model path or repo id with separators replaced>[-int8], e.g. outputs/eval/outputs--run--model:
    an int8 evaluation never overwrites the fp32 one."""
    name = re.sub(r"[^\w.-]+", "--", model_name_or_path.strip("/"))
    return Path("outputs") / "eval" / (f"{name}-int8" if int8 else name)


_DESCRIPTION = """Evaluate a PVT checkpoint; the mode follows its config's architectures. Classifiers (ours or
transformers' native PVT): accuracy, top-5 and per-class accuracy, eval_results.json and confusion_matrix.png, on the
embedded digits unless data is given. Segmentation models (PvtForSemanticSegmentation): mean IoU, IoU per class and
pixel accuracy (ignored pixels excluded) of predictions at the masks' full resolution, with the eval transform and
metric of finetune_segmentation.py, eval_results.json and predictions.png, on the grid digits' held-out canvases
unless --validation_dir (images/ + masks/) or --dataset_name (an image and a mask column) is given. Detection models
(PvtForObjectDetection): COCO mAP@[.5:.95], AP50, AP75, AP small/medium/large, AR@100 and AP per class at the
processor's scale, with the evaluation of finetune_detection.py, eval_results.json and predictions.png, on the
scattered digits' held-out canvases unless --validation_dir (images/ + annotations.json, COCO) or --dataset_name (an
image and an objects column, as CPPE-5) is given; --id2label_file names its classes where the data does not."""


def _evaluate_detection(arguments, data, segmentation, output_dir: Path) -> dict:
    """The detection mode: its data flags are the shared ones, and --id2label_file."""
    defaults = SegmentationEvaluationArguments()
    segmentation_only = ("do_reduce_labels", "eval_scale", "size_divisor")
    given = [name for name in segmentation_only if getattr(segmentation, name) != getattr(defaults, name)]
    if arguments.resolution is not None:
        given.insert(0, "resolution")
    if given:
        raise ValueError(
            f"{arguments.model_name_or_path} is a detector (PvtForObjectDetection), evaluated at its processor's "
            f"scale; {', '.join('--' + name for name in given)} apply to other checkpoints. Drop them."
        )
    results = evaluate_detection(
        arguments.model_name_or_path,
        data,
        output_dir,
        arguments.batch_size,
        arguments.max_eval_samples,
        arguments.calibration_images if arguments.int8 else None,
        segmentation.id2label_file,
    )
    print(format_detection_report(results), flush=True)
    return results


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
    if is_detection_checkpoint(config):
        return _evaluate_detection(arguments, data, segmentation, output_dir)
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
    results = evaluate_checkpoint(arguments, data, output_dir)
    print(format_report(results), flush=True)
    return results
