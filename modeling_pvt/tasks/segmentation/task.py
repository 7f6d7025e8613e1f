"""Fine-tuning PVT + Semantic FPN (`PvtForSemanticSegmentation`) with 🤗 Trainer: the segmentation task of the shared
training run in `training.py`; `scripts/finetune_segmentation.py` is a thin CLI over `main`.

With no arguments this trains a PVT-Tiny-architecture Semantic FPN from scratch on the grid digits (64x64 canvases of
scikit-learn's bundled digits, 11 classes; no network) and writes to `outputs/pvt-tiny-grid-digits/`:

    model/                  the Hub-ready folder (weights, config with auto_map, processor, code, model card)
    checkpoint-<step>/      Trainer checkpoints (resume with --resume_from_checkpoint last)
    all_results.json        train + eval metrics (mean IoU, pixel accuracy, IoU per class), world size, resume
    loss_curve.png  miou_curve.png  predictions.png (held-out images | ground truth | prediction)

Other data: `--train_dir`/`--validation_dir` folders of images/ + masks/, or `--dataset_name` (e.g.
scene_parse_150); the paper's ADE20K recipe is configuration/recipes/ade20k-semfpn-pvt-small.yaml.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import torch
from transformers import Trainer

from .conversion import read_pvt_config
from .image_processing_pvt import PvtImageProcessor
from .modeling_pvt import PvtForSemanticSegmentation
from .pictures import SEGMENTATION_FIGURES, plot_predictions, plot_training_curves
from .segmentation_data import GRID_CANVAS, GRID_DIGITS_NAME, IGNORE_INDEX, SegmentationDataArguments
from .segmentation_metrics import StreamingMeanIoU, class_metric_key, nan_to_none
from .segmentation_transforms import SegmentationAugmentation, SegmentationCollator, with_segmentation_transforms
from .sync_batch_norm import synchronize_batch_norms
from .training import (
    ModelArguments,
    PreparedRun,
    PvtTrainingArguments,
    RunDataArguments,
    TrainingTask,
    _architecture_config,
    _checkpoint_num_labels,
    _default,
    limited,
)
from .training import main as run_main

# Position embeddings of a model trained from scratch are stored at the crop size (natural images) or the canvas.
DEFAULT_CROP = 512


@dataclass
class SegmentationRunDataArguments(SegmentationDataArguments, RunDataArguments):
    pass


# The grid-digits run's defaults: held-out mean IoU above 0.7 in about 5 minutes on two CPU cores (README).
@dataclass
class SegmentationTrainingArguments(PvtTrainingArguments):
    learning_rate: float = _default("learning_rate", 1e-3)
    weight_decay: float = _default("weight_decay", 0.01)
    num_train_epochs: float = _default("num_train_epochs", 2)
    per_device_train_batch_size: int = _default("per_device_train_batch_size", 16)
    per_device_eval_batch_size: int = _default("per_device_eval_batch_size", 16)
    eval_strategy: str = _default("eval_strategy", "steps")
    eval_steps: float = _default("eval_steps", 0.25)
    save_strategy: str = _default("save_strategy", "steps")
    # Two checkpoints in a five-minute run: each holds 200 MB of weights and AdamW state, and writing them costs time.
    save_steps: float = _default("save_steps", 0.5)
    logging_steps: float = _default("logging_steps", 20)
    # Per-batch metric updates: Trainer then keeps pixel counts, never a dataset's worth of prediction maps.
    batch_eval_metrics: bool = _default("batch_eval_metrics", True)


def build_segmentation_model(model_args: ModelArguments, label_names: list[str], is_grid_digits: bool):
    """A `PvtForSemanticSegmentation` for `label_names`: from a checkpoint (ours — classifier or segmentation —, or
    transformers-native; a classifier gives the backbone and a new neck and head) or from scratch, and its
    processor (the checkpoint's segmentation processor, else the paper's test transform)."""
    id2label = dict(enumerate(label_names))
    labels = {"num_labels": len(label_names), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    overrides = {} if model_args.drop_path_rate is None else {"drop_path_rate": model_args.drop_path_rate}
    processor = PvtImageProcessor.for_segmentation(short_side=GRID_CANVAS if is_grid_digits else DEFAULT_CROP)
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        config = read_pvt_config(source)
        is_segmentation = "PvtForSemanticSegmentation" in (config.get("architectures") or [])
        head_size = _checkpoint_num_labels(config)
        if is_segmentation and head_size != len(label_names) and not model_args.ignore_mismatched_sizes:
            raise ValueError(
                f"{source} has a {head_size}-class segmentation head but the dataset has {len(label_names)} classes. "
                "Pass --ignore_mismatched_sizes true to train a new classifier layer."
            )
        model = PvtForSemanticSegmentation.from_pretrained(
            source, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **labels, **overrides
        )
        try:
            saved = PvtImageProcessor.from_pretrained(source)
            processor = saved if saved.size_divisor else processor
        except OSError:
            pass  # no preprocessor_config.json: the paper's test transform
    else:
        size = model_args.image_size or (GRID_CANVAS if is_grid_digits else DEFAULT_CROP)
        model = PvtForSemanticSegmentation(
            _architecture_config(model_args.config_name, labels, {**overrides, "image_size": size})
        )
    return model, processor


class SemanticSegmentationTask(TrainingTask):
    name = "finetune-segmentation"
    pipeline_task = "image-segmentation"
    data_arguments = SegmentationRunDataArguments
    training_arguments = SegmentationTrainingArguments

    def data_source(self, data_args) -> str:
        return data_args.dataset_name or data_args.train_dir or data_args.validation_dir or GRID_DIGITS_NAME

    def prepare(self, model_args, data_args, training_args) -> PreparedRun:
        splits = data_args.load()
        is_grid_digits = splits.source == GRID_DIGITS_NAME
        model, processor = build_segmentation_model(model_args, splits.label_names, is_grid_digits)
        if model.config.semantic_loss_ignore_index != IGNORE_INDEX:
            raise ValueError(
                f"The model ignores label {model.config.semantic_loss_ignore_index} but the data marks unlabelled "
                f"pixels with {IGNORE_INDEX}; set semantic_loss_ignore_index to {IGNORE_INDEX} in its config."
            )
        splits = limited(splits, data_args, training_args.seed)
        augmentation = SegmentationAugmentation.from_arguments(data_args)
        eval_scale = tuple(data_args.eval_scale) if data_args.eval_scale else None
        transformed = with_segmentation_transforms(splits, processor, augmentation, eval_scale, data_args.size_divisor)
        # The thread measurement's batch: without a crop, natural images are taken to be about crop-sized.
        side = GRID_CANVAS if is_grid_digits else (data_args.crop_size or DEFAULT_CROP)
        if is_grid_digits:
            resolution = f"{side}x{side}"
        else:
            train_size = f"{side}x{side} crops" if data_args.crop_size else "train images as stored"
            resolution = f"{train_size}, eval scale {eval_scale or 'as stored'}"

        def probe_inputs(batch_size: int) -> dict:
            generator = torch.Generator().manual_seed(0)
            return {
                "pixel_values": torch.randn(batch_size, model.config.num_channels, side, side, generator=generator),
                "labels": torch.randint(model.config.num_labels, (batch_size, side, side), generator=generator),
            }

        return PreparedRun(splits, transformed, model, processor, resolution, probe_inputs)

    def trainer(self, prepared, data_args, training_args) -> Trainer:
        if training_args.world_size > 1:
            # The original trains the head with SyncBN: statistics of the global batch, not of each process's share.
            converted = synchronize_batch_norms(prepared.model)
            prepared.facts["synchronized_batch_norms"] = converted
            print(
                f"[{self.name}] process {training_args.process_index}: {converted} BatchNorm layers synchronised "
                f"across {training_args.world_size} processes",
                flush=True,
            )
        metric = StreamingMeanIoU(prepared.splits.label_names)
        training_args.batch_eval_metrics = True
        return Trainer(
            model=prepared.model,
            args=training_args,
            train_dataset=prepared.transformed.train,
            eval_dataset=prepared.transformed.eval,
            processing_class=prepared.processor,
            data_collator=SegmentationCollator(ignore_index=IGNORE_INDEX),
            compute_metrics=metric,
            preprocess_logits_for_metrics=metric.preprocess_logits,
        )

    def evaluate(self, trainer, prepared):
        # evaluate, not predict: predict keeps every output in memory.
        return nan_to_none(trainer.evaluate(metric_key_prefix="eval")), None

    def card_results(self, metrics):
        return {
            name: metrics[f"eval_{name}"]
            for name in ("mean_iou", "overall_accuracy", "mean_accuracy")
            if f"eval_{name}" in metrics
        }

    def card_hyperparameters(self, data_args):
        values = {
            "crop_size": data_args.crop_size,
            "train_scale": data_args.train_scale,
            "horizontal_flip_probability": data_args.horizontal_flip_probability or None,
            "photometric_distortion": data_args.photometric_distortion or None,
        }
        return {name: value for name, value in values.items() if value is not None}

    def headline(self, metrics, prepared):
        per_class = {name: metrics.get(f"eval_iou_{class_metric_key(name)}") for name in prepared.splits.label_names}
        measured = [(value, name) for name, value in per_class.items() if value is not None]
        worst = f", lowest class IoU {min(measured)[0]:.3f} ({min(measured)[1]})" if measured else ""
        return (
            f"held-out mean IoU {metrics['eval_mean_iou']:.3f}, pixel accuracy {metrics['eval_overall_accuracy']:.2%}"
            f"{worst}"
        )

    def write_pictures(self, trainer, prepared, evaluation, output_dir):
        plot_training_curves(trainer.state.log_history, output_dir, SEGMENTATION_FIGURES)
        plot_predictions(
            trainer.model,
            prepared.transformed.eval,
            prepared.processor,
            prepared.splits.label_names,
            output_dir / "predictions.png",
        )


def main(argv: list[str] | None = None) -> dict:
    """The segmentation fine-tuning CLI; raises on a user's mistake (printed as one line by `cli.run_cli`)."""
    return run_main(sys.argv[1:] if argv is None else argv, SemanticSegmentationTask())


__all__ = [
    "SegmentationRunDataArguments",
    "SegmentationTrainingArguments",
    "SemanticSegmentationTask",
    "build_segmentation_model",
    "main",
]
