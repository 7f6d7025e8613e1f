"""Image classification on the shared run loop: `scripts/finetune.py` is a thin CLI over `main`.

With no arguments this trains a PVT-Tiny-architecture model from scratch on scikit-learn's bundled digits (no
network) and writes to `outputs/pvt-tiny-sklearn-digits/` (by default `outputs/<model>-<data>/`; a folder holding a
finished model is never replaced unless `--overwrite_output_dir true` is given):

    model/                  the Hub-ready folder (weights, config with auto_map, processor, code, model card)
    checkpoint-<step>/      Trainer checkpoints (resume with --resume_from_checkpoint last)
    all_results.json        train + eval metrics, world size, the checkpoint a resumed run started from
    loss_curve.png  accuracy_curve.png  confusion_matrix.png

Every other setup is a recipe (`--recipe configuration/recipes/<name>.yaml`) and/or command-line flags; flags
given after the recipe override it. Every `TrainingArguments` flag works.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

import evaluate
import torch
import torch.nn.functional as F
from transformers import Trainer

from ...checkpoints.conversion import read_pvt_config
from ...data.digits import DIGITS_NAME
from ...data.sources import LabeledSplits, processor_size
from ...image_processing_pvt import PvtImageProcessor
from ...modeling_pvt import PvtForImageClassification
from ...pictures import LOSS_FIGURE, plot_training_curves
from ...training.arguments import (
    ModelArguments,
    RunDataArguments,
    architecture_config,
    checkpoint_num_labels,
)
from ...training.loop import PreparedRun, TrainingTask, limited
from ...training.loop import main as run_main
from .data import ClassificationDatasetArguments, TrainAugmentation, with_transforms
from .evaluation import ACCURACY_METRIC_PATH, TOP_K, plot_confusion_matrix

logger = logging.getLogger(__name__)

# The embedded digits are 8x8; 32 is the smallest input PVT's strides and spatial reductions allow.
DIGITS_IMAGE_SIZE = 32
# (log-history key, legend label) per line, and (title, lines) per figure file.
CLASSIFICATION_FIGURES = {
    "loss_curve.png": LOSS_FIGURE,
    "accuracy_curve.png": ("Eval accuracy", (("eval_accuracy", "top-1"), ("eval_top5_accuracy", "top-5"))),
}


@dataclass
class DataArguments(ClassificationDatasetArguments, RunDataArguments):
    streaming: bool = field(
        default=False, metadata={"help": "Stream --dataset_name instead of downloading it (needs --max_steps)."}
    )
    crop_scale_min: float = field(
        default=0.8,
        metadata={
            "help": "Smallest area fraction of the random-resized crop (0.08 for natural images, as in the paper)."
        },
    )
    horizontal_flip_probability: float = field(
        default=0.0, metadata={"help": "Default 0: mirrored digits are not digits. Use 0.5 for natural images."}
    )
    rand_augment_ops: int = field(default=0, metadata={"help": "RandAugment ops per image (0 = off; paper: 2)."})
    rand_augment_magnitude: int = field(default=9, metadata={"help": "RandAugment magnitude, 0..10 (paper: 9)."})
    mixup_alpha: float = field(default=0.0, metadata={"help": "Mixup Beta(alpha, alpha); 0 = off (paper: 0.8)."})
    cutmix_alpha: float = field(default=0.0, metadata={"help": "CutMix Beta(alpha, alpha); 0 = off (paper: 1.0)."})


def _load_processor(model_name_or_path: str) -> PvtImageProcessor:
    try:
        return PvtImageProcessor.from_pretrained(model_name_or_path)
    except OSError:
        logger.info("%s has no preprocessor_config.json; using the default PVT processor.", model_name_or_path)
        return PvtImageProcessor()


def build_model_and_processor(model_args: ModelArguments, splits: LabeledSplits, is_digits: bool):
    labels = {"num_labels": len(splits.label_names), "id2label": splits.id2label, "label2id": splits.label2id}
    overrides = {} if model_args.drop_path_rate is None else {"drop_path_rate": model_args.drop_path_rate}
    if model_args.model_name_or_path:
        head_size = checkpoint_num_labels(read_pvt_config(model_args.model_name_or_path))
        if head_size != len(splits.label_names) and not model_args.ignore_mismatched_sizes:
            raise ValueError(
                f"{model_args.model_name_or_path} has a {head_size}-class head but the dataset has "
                f"{len(splits.label_names)} classes. Pass --ignore_mismatched_sizes true to train a new head."
            )
        model = PvtForImageClassification.from_pretrained(
            model_args.model_name_or_path,
            ignore_mismatched_sizes=model_args.ignore_mismatched_sizes,
            **labels,
            **overrides,
        )
        processor = _load_processor(model_args.model_name_or_path)
    else:
        image_size = model_args.image_size or (DIGITS_IMAGE_SIZE if is_digits else None)
        if image_size is not None:
            overrides["image_size"] = image_size  # position embeddings stored at the training grid
        config = architecture_config(model_args.config_name, labels, overrides)
        model = PvtForImageClassification(config)
        processor = PvtImageProcessor()
        image_size = config.image_height_width[0]
        processor.size = {"height": image_size, "width": image_size}
    if model_args.image_size:
        processor.size = {"height": model_args.image_size, "width": model_args.image_size}
        processor.crop_size = dict(processor.size)
        processor.do_center_crop = False
    smallest = min(processor_size(processor))
    if smallest < model.config.min_input_size:
        raise ValueError(
            f"Training resolution {smallest} is below this architecture's minimum of {model.config.min_input_size} "
            f"pixels. Pass --image_size {model.config.min_input_size} or larger."
        )
    return model, processor


def mix_batch(
    pixel_values: torch.Tensor,
    labels: torch.Tensor,
    num_classes: int,
    mixup_alpha: float,
    cutmix_alpha: float,
    label_smoothing: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup or CutMix (one of them per batch, chosen at random when both are on, as in DeiT/PVT) of each image with
    the batch's mirror order; returns the mixed images and soft targets (label smoothing included)."""
    targets = F.one_hot(labels, num_classes).float()
    targets = targets * (1 - label_smoothing) + label_smoothing / num_classes
    use_cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or torch.rand(()) < 0.5)
    alpha = cutmix_alpha if use_cutmix else mixup_alpha
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    partner = pixel_values.flip(0)
    if use_cutmix:
        height, width = pixel_values.shape[-2:]
        cut_h, cut_w = int(height * math.sqrt(1 - lam)), int(width * math.sqrt(1 - lam))
        center_y, center_x = int(torch.randint(height, ())), int(torch.randint(width, ()))
        top, bottom = max(center_y - cut_h // 2, 0), min(center_y + cut_h // 2, height)
        left, right = max(center_x - cut_w // 2, 0), min(center_x + cut_w // 2, width)
        mixed = pixel_values.clone()
        mixed[..., top:bottom, left:right] = partner[..., top:bottom, left:right]
        lam = 1 - (bottom - top) * (right - left) / (height * width)  # the area actually pasted
    else:
        mixed = lam * pixel_values + (1 - lam) * partner
    return mixed, lam * targets + (1 - lam) * targets.flip(0)


class PvtTrainer(Trainer):
    """Trainer with single-label cross-entropy computed here, so that label smoothing, mixup and CutMix apply in
    training only: evaluation reports the plain cross-entropy of the unmodified images."""

    # compute_loss returns a per-batch mean, so Trainer divides it by the gradient accumulation steps.
    loss_is_scaled_for_ga = False

    def __init__(self, *args, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.label_smoother = None  # smoothing is applied in compute_loss

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        pixel_values = inputs["pixel_values"]
        smoothing = self.args.label_smoothing_factor if model.training else 0.0
        mixing = model.training and (self.mixup_alpha > 0 or self.cutmix_alpha > 0)
        if mixing:
            num_classes = self.accelerator.unwrap_model(model).config.num_labels
            pixel_values, targets = mix_batch(
                pixel_values, labels, num_classes, self.mixup_alpha, self.cutmix_alpha, smoothing
            )
        outputs = model(pixel_values=pixel_values)
        logits = outputs.logits.float()
        if mixing:
            loss = torch.sum(-targets * F.log_softmax(logits, dim=-1), dim=-1).mean()
        else:
            loss = F.cross_entropy(logits, labels, label_smoothing=smoothing)
        return (loss, outputs) if return_outputs else loss


def top_k_indices(logits: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Keeps only the ranked top-5 class ids of each example (not all logits) for the metric."""
    if isinstance(logits, tuple):
        logits = logits[0]
    return logits.topk(min(TOP_K, logits.shape[-1]), dim=-1).indices


def make_compute_metrics():
    metric = evaluate.load(str(ACCURACY_METRIC_PATH))

    def compute_metrics(eval_prediction) -> dict:
        return metric.compute(predictions=eval_prediction.predictions, references=eval_prediction.label_ids)

    return compute_metrics


class ImageClassificationTask(TrainingTask):
    name = "finetune"
    pipeline_task = "image-classification"
    data_arguments = DataArguments
    default_data_name = DIGITS_NAME

    def prepare(self, model_args, data_args, training_args) -> PreparedRun:
        splits = data_args.load(digits_image_size=model_args.image_size or DIGITS_IMAGE_SIZE)
        model, processor = build_model_and_processor(model_args, splits, data_args.is_digits)
        augmentation = TrainAugmentation(
            data_args.crop_scale_min,
            data_args.horizontal_flip_probability,
            data_args.rand_augment_ops,
            data_args.rand_augment_magnitude,
        )
        splits = limited(splits, data_args, training_args.seed)
        height, width = processor_size(processor)

        def probe_inputs(batch_size: int) -> dict:
            generator = torch.Generator().manual_seed(0)
            return {
                "pixel_values": torch.randn(batch_size, model.config.num_channels, height, width, generator=generator),
                "labels": torch.randint(model.config.num_labels, (batch_size,), generator=generator),
            }

        transformed = with_transforms(splits, processor, augmentation)
        return PreparedRun(splits, transformed, model, processor, f"{height}x{width}", probe_inputs)

    def trainer(self, prepared, data_args, training_args) -> Trainer:
        return PvtTrainer(
            model=prepared.model,
            args=training_args,
            train_dataset=prepared.transformed.train,
            eval_dataset=prepared.transformed.eval,
            processing_class=prepared.processor,
            compute_metrics=make_compute_metrics(),
            preprocess_logits_for_metrics=top_k_indices,
            mixup_alpha=data_args.mixup_alpha,
            cutmix_alpha=data_args.cutmix_alpha,
        )

    def evaluate(self, trainer, prepared):
        prediction = trainer.predict(prepared.transformed.eval, metric_key_prefix="eval")
        return prediction.metrics, prediction

    def card_results(self, metrics):
        return {name: metrics[f"eval_{name}"] for name in ("accuracy", "top5_accuracy") if f"eval_{name}" in metrics}

    def card_hyperparameters(self, data_args):
        return {name: getattr(data_args, name) for name in ("mixup_alpha", "cutmix_alpha", "rand_augment_ops")}

    def headline(self, metrics, prepared):
        top5 = f", top-5 {metrics['eval_top5_accuracy']:.2%}" if "eval_top5_accuracy" in metrics else ""
        return f"eval accuracy {metrics['eval_accuracy']:.2%}{top5}"

    def write_pictures(self, trainer, prepared, evaluation, output_dir):
        plot_training_curves(trainer.state.log_history, output_dir, CLASSIFICATION_FIGURES)
        plot_confusion_matrix(
            evaluation.predictions[:, 0],
            evaluation.label_ids,
            prepared.splits.label_names,
            output_dir / "confusion_matrix.png",
        )


def main(argv: list[str] | None = None) -> dict:
    """`scripts/finetune.py`: raises on a user's mistake (the script prints it as one line: `cli.run_cli`)."""
    return run_main(argv, ImageClassificationTask())

