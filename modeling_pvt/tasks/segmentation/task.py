"""Fine-tuning PVT + Semantic FPN (`PvtForSemanticSegmentation`) with 🤗 Trainer: the segmentation task of the shared
training run in `training/loop.py`; `scripts/finetune_segmentation.py` is a thin CLI over `main`.

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

from ...checkpoints.conversion import read_pvt_config
from ...image_processing_pvt import PvtImageProcessor
from ...modeling_pvt import PvtForSemanticSegmentation
from ...pictures import plot_training_curves
from ...training.arguments import (
    ModelArguments,
    PvtTrainingArguments,
    RunDataArguments,
    architecture_config,
    checkpoint_num_labels,
    trainer_default,
)
from ...training.loop import PreparedRun, TrainingTask, limited, lowest_class
from ...training.loop import main as run_main
from ...training.sync_batch_norm import synchronize_batch_norms
from .data import GRID_CANVAS, GRID_DIGITS_NAME, IGNORE_INDEX, SegmentationDataArguments
from .metrics import StreamingMeanIoU, class_metric_key, nan_to_none
from .pictures import SEGMENTATION_FIGURES, plot_predictions
from .transforms import (
    SegmentationAugmentation,
    SegmentationCollator,
    with_segmentation_transforms,
)

# Position embeddings of a model trained from scratch are stored at the crop size (natural images) or the canvas.
DEFAULT_CROP = 512
STRIDE = 32  # of the deepest feature map; the collator pads inputs to multiples of it


@dataclass
class SegmentationRunDataArguments(SegmentationDataArguments, RunDataArguments):
    pass


# The grid-digits run's defaults: held-out mean IoU above 0.7 in about 5 minutes on two CPU cores (README).
@dataclass
class SegmentationTrainingArguments(PvtTrainingArguments):
    learning_rate: float = trainer_default("learning_rate", 1e-3)
    weight_decay: float = trainer_default("weight_decay", 0.01)
    num_train_epochs: float = trainer_default("num_train_epochs", 2)
    per_device_train_batch_size: int = trainer_default("per_device_train_batch_size", 16)
    per_device_eval_batch_size: int = trainer_default("per_device_eval_batch_size", 16)
    eval_strategy: str = trainer_default("eval_strategy", "steps")
    eval_steps: float = trainer_default("eval_steps", 0.25)
    save_strategy: str = trainer_default("save_strategy", "steps")
    # Two checkpoints in a five-minute run: each holds 200 MB of weights and AdamW state, and writing them costs time.
    save_steps: float = trainer_default("save_steps", 0.5)
    logging_steps: float = trainer_default("logging_steps", 20)
    # Per-batch metric updates: Trainer then keeps pixel counts, never a dataset's worth of prediction maps.
    batch_eval_metrics: bool = trainer_default("batch_eval_metrics", True)


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
        head_size = checkpoint_num_labels(config)
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
            architecture_config(model_args.config_name, labels, {**overrides, "image_size": size})
        )
    return model, processor


class SegmentationTrainer(Trainer):
    """Trainer whose training batches come from `train_collator` (evaluation keeps `data_collator`): the training
    collator pads a batch of one small image so that BatchNorm can train on it (`SegmentationCollator.training`)."""

    def __init__(self, *args, train_collator, **kwargs):
        super().__init__(*args, **kwargs)
        self.train_collator = train_collator

    def get_train_dataloader(self):
        eval_collator, self.data_collator = self.data_collator, self.train_collator
        try:
            return super().get_train_dataloader()
        finally:
            self.data_collator = eval_collator


class SemanticSegmentationTask(TrainingTask):
    name = "finetune-segmentation"
    pipeline_task = "image-segmentation"
    data_arguments = SegmentationRunDataArguments
    training_arguments = SegmentationTrainingArguments
    default_data_name = GRID_DIGITS_NAME

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
            # As the training collator pads it: BatchNorm cannot train on one small image's 1x1 deepest map.
            height = side + STRIDE if batch_size == 1 and side <= STRIDE else side
            return {
                "pixel_values": torch.randn(batch_size, model.config.num_channels, height, side, generator=generator),
                "labels": torch.randint(model.config.num_labels, (batch_size, height, side), generator=generator),
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
        return SegmentationTrainer(
            model=prepared.model,
            args=training_args,
            train_dataset=prepared.transformed.train,
            eval_dataset=prepared.transformed.eval,
            processing_class=prepared.processor,
            data_collator=SegmentationCollator(STRIDE, IGNORE_INDEX),
            train_collator=SegmentationCollator(STRIDE, IGNORE_INDEX, training=True),
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
        return (
            f"held-out mean IoU {metrics['eval_mean_iou']:.3f}, pixel accuracy {metrics['eval_overall_accuracy']:.2%}"
            f"{lowest_class(per_class, 'IoU')}"
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
    "SegmentationTrainer",
    "SegmentationTrainingArguments",
    "SemanticSegmentationTask",
    "build_segmentation_model",
    "main",
]
