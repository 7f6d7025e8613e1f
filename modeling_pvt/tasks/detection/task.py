"""Fine-tuning PVT + RetinaNet (`PvtForObjectDetection`) with 🤗 Trainer: the detection task of the shared training
run in `training/loop.py`; `scripts/finetune_detection.py` is a thin CLI over `main`.

With no arguments this trains a PVT-Tiny-architecture RetinaNet from scratch on the scattered digits (128x128 canvases
of scikit-learn's bundled digits, 10 classes; no network) and writes to `outputs/pvt-tiny-scattered-digits/`:

    model/                  the Hub-ready folder (weights, config with auto_map, processor, code, model card)
    checkpoint-<step>/      Trainer checkpoints (resume with --resume_from_checkpoint last)
    all_results.json        train + eval metrics (COCO mAP, AP50, AP75, AP by size, AR@100, AP per class)
    loss_curve.png  map_curve.png  predictions.png (held-out canvases, true and predicted boxes)

Other data: `--train_dir`/`--validation_dir` COCO-format folders (images/ + annotations.json), or `--dataset_name`
in the layout of transformers' object-detection example (e.g. cppe-5); the paper's COCO recipe is
configuration/recipes/coco-retinanet-pvt-small.yaml.
"""

from __future__ import annotations

import bisect
import functools
import math
import sys
import time
from dataclasses import dataclass, field

import torch
from transformers import Trainer
from transformers.trainer_utils import speed_metrics

from ...checkpoints.conversion import read_pvt_config
from ...configuration_pvt import preset_name
from ...image_processing_pvt import DETECTION_LONG_SIDE, DETECTION_SHORT_SIDE, PvtImageProcessor
from ...modeling_pvt_detection import PvtForObjectDetection
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
from .data import (
    SCATTERED_CANVAS,
    SCATTERED_DIGITS_NAME,
    SCATTERED_EVAL_CANVASES,
    SCATTERED_TRAIN_CANVASES,
    DetectionDataArguments,
)
from .evaluation import DETECTION_ARCHITECTURE, loss_per_image, predict, summarize
from .metrics import per_class_keys
from .pictures import DETECTION_FIGURES, plot_detections
from .transforms import DetectionAugmentation, DetectionCollator, with_detection_transforms

# The scattered digits' detector, where a preset is trained from scratch on them. The head: 128 channels x 2 convs per
# branch reached mAP 0.47 in 5.5 minutes where the paper's 256 x 4 reached 0.03 (2.2x the time per step, and slower
# to learn). The anchors: half the paper's size (smallest 16 px at stride 8, not 32), because the digits' boxes are
# 6-38 px wide and 18-44 px high; with the paper's, a small digit's best anchor overlaps it by IoU ~0.2 and the digit
# gets one positive anchor (the assigner's low-quality match) instead of several. Measured over the default's 500
# steps (2 epochs): held-out mAP 0.766 against 0.729 with the paper's anchors (AP small 0.763 against 0.716).
DIGITS_DETECTOR = {"detection_head_hidden_size": 128, "detection_head_num_convs": 2, "anchor_octave_base_scale": 2}
PAPER_FLIP_PROBABILITY = 0.5


@dataclass
class DetectionHeadArguments:
    """The RetinaNet head's size for a new head (training from scratch or from a classifier / segmentation
    checkpoint); a detection checkpoint keeps its own."""

    detection_head_hidden_size: int | None = field(
        default=None,
        metadata={
            "help": "Channels of the head's convolutions. Default: 128 on the scattered digits, else the config's "
            "(the paper's 256)."
        },
    )
    detection_head_num_convs: int | None = field(
        default=None,
        metadata={"help": "3x3 convs per head branch. Default: 2 on the scattered digits, else the config's (4)."},
    )


@dataclass
class DetectionRunDataArguments(DetectionDataArguments, DetectionHeadArguments, RunDataArguments):
    pass


# The scattered digits' defaults: held-out COCO mAP above 0.5 in about 7 minutes on two CPU cores (docs/detection.md).
@dataclass
class DetectionTrainingArguments(PvtTrainingArguments):
    learning_rate: float = trainer_default("learning_rate", 1e-3)
    weight_decay: float = trainer_default("weight_decay", 0.05)
    # 375 steps: 1.5 epochs took 7 min 52 s of training on 2 cores of an AMD EPYC (fp32) for mAP 0.723; 2 epochs gave
    # 0.771 in 10 min.
    num_train_epochs: float = trainer_default("num_train_epochs", 1.5)
    warmup_steps: float = trainer_default("warmup_steps", 0.05)
    per_device_train_batch_size: int = trainer_default("per_device_train_batch_size", 16)
    per_device_eval_batch_size: int = trainer_default("per_device_eval_batch_size", 16)
    eval_strategy: str = trainer_default("eval_strategy", "steps")
    eval_steps: float = trainer_default("eval_steps", 0.25)
    save_strategy: str = trainer_default("save_strategy", "steps")
    save_steps: float = trainer_default("save_steps", 0.5)
    logging_steps: float = trainer_default("logging_steps", 20)
    lr_step_decay_at: list[float] | None = field(
        default=None,
        metadata={
            "help": "mmdet's step schedule instead of --lr_scheduler_type: the learning rate is multiplied by 0.1 at "
            "each of these steps (a value below 1 is a share of the run's steps: 0.6667 0.9167 = after epochs 8 and "
            "11 of 12, the paper's 1x schedule)."
        },
    )
    warmup_start_factor: float = field(
        default=0.0,
        metadata={
            "help": "With --lr_step_decay_at: the linear warm-up starts at this share of the rate (mmdet: 0.001)."
        },
    )


def resolved_scales(data_args, is_digits: bool):
    """(eval scale, train augmentation) with the defaults of the data: the canvas, without flips, for the scattered
    digits; the paper's 1333x800 with flips otherwise. Scale jitter only when asked for."""
    default_scale = (SCATTERED_CANVAS, SCATTERED_CANVAS) if is_digits else (DETECTION_LONG_SIDE, DETECTION_SHORT_SIDE)
    eval_scale = tuple(data_args.eval_scale) if data_args.eval_scale else default_scale
    # No scale jitter by default: the digits already vary in size 2.2x, and upscaled canvases cost time per step.
    ratio_range = data_args.train_ratio_range
    flip = data_args.horizontal_flip_probability
    flip = (0.0 if is_digits else PAPER_FLIP_PROBABILITY) if flip is None else flip
    for name, scale in (("eval_scale", eval_scale), ("train_scale", data_args.train_scale)):
        if scale is not None and (len(scale) != 2 or min(scale) < 1):
            raise ValueError(f"--{name} takes two positive sides (long short), e.g. 1333 800; got {list(scale)}.")
    if ratio_range is not None and (len(ratio_range) != 2 or not 0 < ratio_range[0] <= ratio_range[1]):
        raise ValueError(f"--train_ratio_range takes two ratios low <= high above 0, e.g. 0.8 1.25; got {ratio_range}.")
    train_scale = tuple(data_args.train_scale) if data_args.train_scale else eval_scale
    return eval_scale, DetectionAugmentation(train_scale, ratio_range and tuple(ratio_range), flip)


def build_detection_model(model_args: ModelArguments, data_args, label_names: list[str], is_digits: bool, scale):
    """A `PvtForObjectDetection` for `label_names`: from a checkpoint (a detector of ours, or a classifier or
    segmentation model — ours or transformers-native — whose backbone it takes, with a new FPN and head) or from
    scratch, and the processor of the eval `scale` (the paper's test transform at that scale)."""
    id2label = dict(enumerate(label_names))
    labels = {"num_labels": len(label_names), "id2label": id2label, "label2id": {v: k for k, v in id2label.items()}}
    head = {name: getattr(data_args, name) for name in DetectionHeadArguments.__dataclass_fields__}
    head = {name: value for name, value in head.items() if value is not None}
    overrides = {} if model_args.drop_path_rate is None else {"drop_path_rate": model_args.drop_path_rate}
    processor = PvtImageProcessor.for_detection(long_side=scale[0], short_side=scale[1])
    if model_args.model_name_or_path:
        source = model_args.model_name_or_path
        config = read_pvt_config(source)
        if DETECTION_ARCHITECTURE in (config.get("architectures") or []):
            if head:
                raise ValueError(
                    f"{source} is a detector with its own head; --{' --'.join(head)} only size a new head. Drop them."
                )
            head_size = checkpoint_num_labels(config)
            if head_size != len(label_names) and not model_args.ignore_mismatched_sizes:
                raise ValueError(
                    f"{source} has a {head_size}-class detection head but the dataset has {len(label_names)} "
                    "classes. Pass --ignore_mismatched_sizes true to train a new classifier layer."
                )
        return PvtForObjectDetection.from_pretrained(
            source, ignore_mismatched_sizes=model_args.ignore_mismatched_sizes, **labels, **head, **overrides
        ), processor
    if is_digits and preset_name(model_args.config_name):  # a config file of the user's keeps its own head
        head = {**DIGITS_DETECTOR, **head}
    size = model_args.image_size or min(scale)
    config = architecture_config(model_args.config_name, labels, {**overrides, **head, "image_size": size})
    return PvtForObjectDetection(config), processor


class DetectionTrainer(Trainer):
    """Trainer whose evaluation is the detection evaluation (`evaluation.predict` + COCO mAP): the detections and
    ground truth of every image, gathered from all processes without the duplicates a distributed sampler pads the
    last batch with, then scored once. Trainer's own loop cannot gather one list of boxes per image."""

    def __init__(self, *args, label_names: list[str], **kwargs):
        super().__init__(*args, **kwargs)
        self.detection_label_names = label_names

    def create_scheduler(self, num_training_steps: int, optimizer=None):
        """With `lr_step_decay_at`: linear warm-up from `warmup_start_factor`, then x0.1 at each step (mmdet's
        `lr_config = dict(policy='step', warmup='linear', ...)`); otherwise Trainer's `lr_scheduler_type`."""
        decay_at = self.args.lr_step_decay_at
        if not decay_at or self.lr_scheduler is not None:
            return super().create_scheduler(num_training_steps, optimizer)
        milestones = sorted(int(at) if at >= 1 else round(at * num_training_steps) for at in decay_at)
        warmup, start = self.args.get_warmup_steps(num_training_steps), self.args.warmup_start_factor

        def factor(step: int) -> float:
            warm = start + (1 - start) * step / warmup if step < warmup else 1.0
            return warm * 0.1 ** bisect.bisect_right(milestones, step)

        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer or self.optimizer, factor)
        return self.lr_scheduler

    def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval") -> dict:
        self._memory_tracker.start()
        loader = self.get_eval_dataloader(eval_dataset)
        started = time.time()
        self.model.eval()
        # The class's own forward, in fp32: accelerate wraps the instance's forward in autocast in a --bf16 run, and
        # scripts/evaluate.py, which must give the run's numbers, evaluates in fp32.
        forward = functools.partial(type(self.model).forward, self.model)
        records = []
        for batch in loader:
            batch = self._prepare_inputs(batch)
            loss, batch_records = predict(self.model, batch, self.processing_class, forward)
            loss_per_image(loss, batch_records)
            records.extend(self.accelerator.gather_for_metrics(batch_records, use_gather_object=True))
        metrics = summarize(records, self.detection_label_names, metric_key_prefix)
        batch_size = self.args.eval_batch_size * self.args.world_size
        metrics.update(speed_metrics(metric_key_prefix, started, len(records), math.ceil(len(records) / batch_size)))
        self.log(metrics)
        self.control = self.callback_handler.on_evaluate(self.args, self.state, self.control, metrics)
        self._memory_tracker.stop_and_update_metrics(metrics)
        return metrics


class ObjectDetectionTask(TrainingTask):
    name = "finetune-detection"
    pipeline_task = "object-detection"
    data_arguments = DetectionRunDataArguments
    training_arguments = DetectionTrainingArguments
    default_data_name = SCATTERED_DIGITS_NAME

    def prepare(self, model_args, data_args, training_args) -> PreparedRun:
        train_canvases = min(SCATTERED_TRAIN_CANVASES, data_args.max_train_samples or SCATTERED_TRAIN_CANVASES)
        eval_canvases = min(SCATTERED_EVAL_CANVASES, data_args.max_eval_samples or SCATTERED_EVAL_CANVASES)
        splits = data_args.load(train_canvases, eval_canvases)
        is_digits = splits.source == SCATTERED_DIGITS_NAME
        eval_scale, augmentation = resolved_scales(data_args, is_digits)
        model, processor = build_detection_model(model_args, data_args, splits.label_names, is_digits, eval_scale)
        splits = limited(splits, data_args, training_args.seed)
        transformed = with_detection_transforms(splits, processor, augmentation, eval_scale)
        config = model.config
        # What the card and all_results.json record: the head and anchors as built, the geometry as resolved.
        self.run_values = {
            "detection_head_hidden_size": config.detection_head_hidden_size,
            "detection_head_num_convs": config.detection_head_num_convs,
            "fpn_hidden_size": config.fpn_hidden_size,
            "anchor_octave_base_scale": config.anchor_octave_base_scale,
            "train_scale": list(augmentation.scale),
            "train_ratio_range": list(augmentation.ratio_range) if augmentation.ratio_range else None,
            "horizontal_flip_probability": augmentation.horizontal_flip_probability,
            "eval_scale": list(eval_scale),
            "lr_step_decay_at": training_args.lr_step_decay_at,
        }
        long_side, short_side = eval_scale
        resolution = f"{long_side}x{short_side}" if is_digits else f"resized to fit {long_side}x{short_side}"
        if augmentation.ratio_range:
            resolution += f", train scale x{augmentation.ratio_range[0]:g}-{augmentation.ratio_range[1]:g}"
        side = short_side  # the thread measurement's batch: square images of the short side

        def probe_inputs(batch_size: int) -> dict:
            generator = torch.Generator().manual_seed(0)
            corner = side / 4
            box = torch.tensor([[corner, corner, 3 * corner, 3 * corner]])
            return {
                "pixel_values": torch.randn(batch_size, model.config.num_channels, side, side, generator=generator),
                "labels": [{"class_labels": torch.tensor([0]), "boxes": box} for _ in range(batch_size)],
            }

        facts = {name: value for name, value in self.run_values.items() if value is not None}
        return PreparedRun(splits, transformed, model, processor, resolution, probe_inputs, facts)

    def trainer(self, prepared, data_args, training_args) -> Trainer:
        return DetectionTrainer(
            model=prepared.model,
            args=training_args,
            train_dataset=prepared.transformed.train,
            eval_dataset=prepared.transformed.eval,
            processing_class=prepared.processor,
            data_collator=DetectionCollator(),
            label_names=prepared.splits.label_names,
        )

    def evaluate(self, trainer, prepared):
        return trainer.evaluate(metric_key_prefix="eval"), None

    def card_results(self, metrics):
        names = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100")
        return {name: metrics[f"eval_{name}"] for name in names if metrics.get(f"eval_{name}") is not None}

    def card_hyperparameters(self, data_args):
        return {name: value for name, value in self.run_values.items() if value is not None}  # as in all_results

    def headline(self, metrics, prepared):
        names = prepared.splits.label_names
        per_class = {name: metrics.get(f"eval_{key}") for name, key in zip(names, per_class_keys(names))}

        def shown(name):
            value = metrics.get(f"eval_{name}")
            return "-" if value is None else f"{value:.3f}"

        return (
            f"held-out COCO mAP {shown('map')}, AP50 {shown('map_50')}, AP75 {shown('map_75')}"
            f"{lowest_class(per_class, 'AP')}"
        )

    def write_pictures(self, trainer, prepared, evaluation, output_dir):
        plot_training_curves(trainer.state.log_history, output_dir, DETECTION_FIGURES)
        plot_detections(
            trainer.model,
            prepared.transformed.eval,
            prepared.processor,
            prepared.splits.label_names,
            output_dir / "predictions.png",
        )


def main(argv: list[str] | None = None) -> dict:
    """The detection fine-tuning CLI; raises on a user's mistake (printed as one line by `cli.run_cli`)."""
    return run_main(sys.argv[1:] if argv is None else argv, ObjectDetectionTask())


__all__ = [
    "DetectionRunDataArguments",
    "DetectionTrainer",
    "DetectionTrainingArguments",
    "ObjectDetectionTask",
    "build_detection_model",
    "main",
]
