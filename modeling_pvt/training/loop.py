"""Fine-tuning / training PVT image classifiers with 🤗 Trainer; `scripts/finetune.py` is a thin CLI over `main`.

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

import argparse
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import torch
import torch.nn.functional as F
import yaml
from transformers import HfArgumentParser, Trainer, TrainingArguments, set_seed
from transformers.hf_argparser import string_to_bool

from .cli import DEBUG_ENVIRONMENT_VARIABLE, DEBUG_FLAG
from .cpu_fast_paths import describe_cpu_fast_paths
from .configuration_pvt import PRESETS, PvtConfig, preset_name
from .conversion import read_pvt_config
from .data import (
    DIGITS_NAME,
    DataError,
    DatasetArguments,
    LabeledSplits,
    TrainAugmentation,
    processor_size,
    with_transforms,
)
from .evaluation import ACCURACY_METRIC_PATH, TOP_K, plot_confusion_matrix
from .hub import PublishError, check_push_target, push_folder, save_hub_folder
from .image_processing_pvt import PvtImageProcessor
from .pictures import CLASSIFICATION_FIGURES, plot_training_curves
from .modeling_pvt import PvtForImageClassification
from .runs import (
    AUTO_THREADS,
    MODEL_SUBFOLDER,
    ThreadChoice,
    available_cores,
    check_output_dir,
    choose_cpu_threads,
    data_label,
    default_output_dir,
    describe_resume,
    is_finished,
    keep_freed_memory,
    model_label,
    parse_thread_setting,
    print_run_summary,
    resolve_checkpoint,
    time_training_steps,
)

logger = logging.getLogger(__name__)

# The embedded digits are 8x8; 32 is the smallest input PVT's strides and spatial reductions allow.
DIGITS_IMAGE_SIZE = 32
PUSH_LATER = "python scripts/push_to_hub.py {folder} {repo_id}"


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None,
        metadata={
            "help": "Checkpoint to fine-tune: a folder or Hub repo of ours, or a transformers-native PVT one. "
            "Leave unset to train from scratch with --config_name."
        },
    )
    config_name: str = field(
        default="pvt-tiny",
        metadata={"help": f"Architecture for training from scratch: a preset ({', '.join(PRESETS)}) or a config JSON."},
    )
    ignore_mismatched_sizes: bool = field(
        default=False,
        metadata={"help": "Replace a classifier head whose number of classes differs from the dataset's."},
    )
    image_size: int | None = field(
        default=None,
        metadata={
            "help": f"Training resolution (square). Default: {DIGITS_IMAGE_SIZE} for the embedded digits, else the "
            "checkpoint's processor size (224 for the presets)."
        },
    )
    drop_path_rate: float | None = field(
        default=None, metadata={"help": "Stochastic depth rate (the paper uses 0.1 for PVT-Tiny). Default: config's."}
    )


@dataclass
class RunDataArguments:
    """Data flags every task shares (mixed into each task's data arguments)."""

    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N train images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N eval images."})
    recipe: str | None = field(
        default=None, metadata={"help": "JSON/YAML file of arguments (configuration/recipes/); flags override it."}
    )


@dataclass
class DataArguments(DatasetArguments, RunDataArguments):
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


def _default(name: str, value):
    """A TrainingArguments field with our default and its original help text."""
    return field(default=value, metadata=TrainingArguments.__dataclass_fields__[name].metadata)


# Our defaults are the digits run's: it must finish in minutes on two CPU cores.
@dataclass
class PvtTrainingArguments(TrainingArguments):
    output_dir: str | None = field(
        default=None,
        metadata={
            "help": "Where checkpoints, the model (<output_dir>/model) and results go. Default: "
            "outputs/<model>-<data>, e.g. outputs/pvt-tiny-sklearn-digits. A folder holding a finished model is "
            "never replaced unless --overwrite_output_dir true; resume an unfinished one with "
            "--resume_from_checkpoint last."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={"help": "Replace the finished model (and ignore the checkpoints) already in --output_dir."},
    )
    resume_from_checkpoint: str | None = field(
        default=None,
        metadata={
            "help": "Continue an interrupted run: a checkpoint-<step> folder, or `last` for the newest complete one in "
            "--output_dir (the run says which it resumed from, or that none was found and it starts fresh)."
        },
    )
    learning_rate: float = _default("learning_rate", 1e-3)
    weight_decay: float = _default("weight_decay", 0.05)
    num_train_epochs: float = _default("num_train_epochs", 20)
    warmup_steps: float = _default("warmup_steps", 0.05)
    lr_scheduler_type: str = _default("lr_scheduler_type", "cosine")
    per_device_train_batch_size: int = _default("per_device_train_batch_size", 32)
    per_device_eval_batch_size: int = _default("per_device_eval_batch_size", 128)
    eval_strategy: str = _default("eval_strategy", "epoch")
    save_strategy: str = _default("save_strategy", "epoch")
    save_total_limit: int | None = _default("save_total_limit", 2)
    logging_steps: float = _default("logging_steps", 10)
    report_to: None | str | list[str] = _default("report_to", "none")
    cpu_threads: str = field(
        default=AUTO_THREADS,
        metadata={
            "help": "PyTorch threads per process when training on the CPU: auto, a count, or 0 for PyTorch's default "
            "(all cores). auto times 2 training steps with 1 thread and with all cores and takes the faster (other "
            "load on the machine can make many threads far slower than one); runs too short to be worth measuring "
            "use 1 thread for images up to 64x64 and all cores above. The first lines of the run say what was chosen."
        },
    )
    cpu_keep_freed_memory: bool = field(
        default=True,
        metadata={
            "help": "When training on the CPU with glibc: keep freed memory in the process for the next step instead "
            "of returning it to the system, where every new page costs a fault (about 20%% of a PVT-Small step at "
            "batch 8, 224²). The process keeps its peak memory until it ends."
        },
    )


def recipe_to_flags(path: str | Path) -> list[str]:
    """A JSON/YAML mapping of argument names to values, as command-line flags (lists -> several values, mappings ->
    a JSON string as TrainingArguments expects for e.g. `fsdp_config`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Recipe {path} not found. Recipes live in configuration/recipes/.")
    text = path.read_text()
    recipe = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    if not isinstance(recipe, dict):
        raise ValueError(f"Recipe {path} must be a mapping of argument names to values, got {type(recipe).__name__}.")
    flags = []
    for name, value in recipe.items():
        if name == "recipe":
            raise ValueError(f"Recipe {path} names another recipe; recipes do not nest.")
        flags.append(f"--{name}")
        if isinstance(value, list):
            flags.extend(str(item) for item in value)
        elif isinstance(value, dict):
            flags.append(json.dumps(value))
        else:
            flags.append(str(value))
    return flags


def _pre_parse(flags: list[str]) -> argparse.Namespace:
    """The few flags that decide other flags, read before the full parse."""
    parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    parser.add_argument("--recipe")
    parser.add_argument("--output_dir", "--output-dir")
    for name in ("--bf16", "--use_cpu", "--use-cpu"):
        parser.add_argument(name, type=string_to_bool, nargs="?", const=True)
    return parser.parse_known_args(flags)[0]


def parse_arguments(argv: list[str], task: "TrainingTask | None" = None) -> tuple:
    """(model, data, training) arguments of `task` (default: image classification) from flags, optionally on top of
    `--recipe FILE` (the recipe's values come first, so flags override them)."""
    task = task or ImageClassificationTask()
    parser = HfArgumentParser(
        (ModelArguments, task.data_arguments, task.training_arguments),
        epilog=f"A bare {DEBUG_FLAG} (or {DEBUG_ENVIRONMENT_VARIABLE}=1) shows the full traceback of an error; "
        f"{DEBUG_FLAG} with a value is Trainer's own debug option.",
    )
    recipe = _pre_parse(argv).recipe
    flags = (recipe_to_flags(recipe) if recipe else []) + list(argv)
    given = _pre_parse(flags)
    launch_flags = []
    if not torch.accelerator.is_available() and given.use_cpu is None:
        # A multi-process launch on a machine without an accelerator: unless told to use the CPU, accelerate sets up
        # no process group and every process silently trains alone on all the data. And bf16 (the ImageNet recipe)
        # is refused by TrainingArguments without an accelerator unless the CPU is named: it runs as CPU autocast.
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or given.bf16:
            launch_flags = ["--use_cpu", "true"]
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=launch_flags + flags)
    if given.output_dir is None:
        source = task.data_source(data_args)
        model = model_label(model_args.model_name_or_path, model_args.config_name)
        training_args.output_dir = str(default_output_dir(model, data_label(source)))
    return model_args, data_args, training_args


# ------------------------------------------------------------------------------------------------------ model setup


def _load_processor(model_name_or_path: str) -> PvtImageProcessor:
    try:
        return PvtImageProcessor.from_pretrained(model_name_or_path)
    except OSError:
        logger.info("%s has no preprocessor_config.json; using the default PVT processor.", model_name_or_path)
        return PvtImageProcessor()


def _checkpoint_num_labels(config: dict) -> int:
    # transformers writes `"id2label": null` for a model saved without label names.
    return len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)


def _check_config_name(config_name: str) -> None:
    if not preset_name(config_name) and not Path(config_name).is_file():
        raise FileNotFoundError(
            f"--config_name {config_name!r} is neither a preset ({', '.join(PRESETS)}) nor a config JSON file. Pick "
            "a preset, or check the file's path."
        )


def _architecture_config(config_name: str, labels: dict, overrides: dict) -> PvtConfig:
    _check_config_name(config_name)
    if preset_name(config_name):
        return PvtConfig.from_preset(config_name, **labels, **overrides)
    config = PvtConfig.from_json_file(config_name)
    config.update({**labels, **overrides})
    return PvtConfig(**config.to_dict())  # re-validates the architecture after the overrides


def build_model_and_processor(model_args: ModelArguments, splits: LabeledSplits, is_digits: bool):
    labels = {"num_labels": len(splits.label_names), "id2label": splits.id2label, "label2id": splits.label2id}
    overrides = {} if model_args.drop_path_rate is None else {"drop_path_rate": model_args.drop_path_rate}
    if model_args.model_name_or_path:
        head_size = _checkpoint_num_labels(read_pvt_config(model_args.model_name_or_path))
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
        config = _architecture_config(model_args.config_name, labels, overrides)
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


# ---------------------------------------------------------------------------------------------------------- trainer


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


# ---------------------------------------------------------------------------------------------------------- outputs


def _card_hyperparameters(training_args: TrainingArguments, task_values: dict) -> dict:
    names = (
        "learning_rate",
        "weight_decay",
        "num_train_epochs",
        "max_steps",
        "lr_scheduler_type",
        "warmup_steps",
        "per_device_train_batch_size",
        "gradient_accumulation_steps",
        "label_smoothing_factor",
        "seed",
    )
    values = {name: getattr(training_args, name) for name in names}
    values = {name: getattr(value, "value", value) for name, value in values.items()}  # enums -> their strings
    if values["max_steps"] <= 0:  # unset: the run is defined by num_train_epochs
        del values["max_steps"]
    if not values["label_smoothing_factor"]:
        del values["label_smoothing_factor"]
    values["world_size"] = training_args.world_size
    return {**values, **task_values}


def summary_line(headline: str, seconds: float, model_dir: Path, pipeline_task: str, push_note: str = "") -> str:
    return (
        f"Done in {int(seconds // 60)} min {seconds % 60:.0f} s: {headline}.{push_note} Checkpoint: {model_dir} — "
        f"load it with pipeline('{pipeline_task}', model='{model_dir}', trust_remote_code=True)"
    )


# ------------------------------------------------------------------------------------------------------ the task


@dataclass
class PreparedRun:
    """What a task hands the shared run: its data (raw splits for names and sizes, transformed for Trainer), the
    model and processor, a batch of the training shape for the thread measurement, and facts about the run the task
    records in all_results.json (filled in by the task as the run goes)."""

    splits: LabeledSplits
    transformed: LabeledSplits
    model: torch.nn.Module
    processor: PvtImageProcessor
    resolution: str
    probe_inputs: Callable[[int], dict]
    facts: dict = field(default_factory=dict)


class TrainingTask:
    """The task-specific half of a fine-tuning run; `run` does the rest (checks, threads, summary, resume, Hub
    folder, push, results). Subclasses: image classification here, semantic segmentation in
    `segmentation_training.py`."""

    name = "finetune"
    pipeline_task = "image-classification"
    data_arguments: type = DataArguments
    training_arguments: type = PvtTrainingArguments

    def data_source(self, data_args) -> str:
        return data_args.dataset_name or data_args.train_dir or data_args.validation_dir or DIGITS_NAME

    def prepare(self, model_args: ModelArguments, data_args, training_args) -> PreparedRun:
        raise NotImplementedError

    def trainer(self, prepared: PreparedRun, data_args, training_args) -> Trainer:
        raise NotImplementedError

    def evaluate(self, trainer: Trainer, prepared: PreparedRun) -> tuple[dict, object]:
        """(eval_* metrics, whatever `write_pictures` needs)."""
        raise NotImplementedError

    def card_results(self, metrics: dict) -> dict:
        raise NotImplementedError

    def card_hyperparameters(self, data_args) -> dict:
        return {}

    def headline(self, metrics: dict, prepared: PreparedRun) -> str:
        raise NotImplementedError

    def write_pictures(self, trainer: Trainer, prepared: PreparedRun, evaluation, output_dir: Path) -> None:
        raise NotImplementedError


class ImageClassificationTask(TrainingTask):
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


# ------------------------------------------------------------------------------------------------------------- run


def _limit(dataset, count: int | None):
    if count is None or dataset is None:
        return dataset
    if hasattr(dataset, "select"):
        return dataset.select(range(min(count, len(dataset))))
    return dataset.take(count)


def limited(splits: LabeledSplits, data_args, seed: int) -> LabeledSplits:
    """`--max_train_samples` / `--max_eval_samples` applied (a streamed train split shuffled first)."""
    if data_args.streaming:
        splits.train = splits.train.shuffle(seed=seed, buffer_size=1000)
    splits.train = _limit(splits.train, data_args.max_train_samples)
    splits.eval = _limit(splits.eval, data_args.max_eval_samples)
    return splits


def _check_before_training(model_args: ModelArguments, data_args, training_args, push_to_hub: bool) -> None:
    """Everything that can be known wrong before data is read or a step is taken: the run stops at once."""
    if model_args.model_name_or_path:
        read_pvt_config(model_args.model_name_or_path)
    else:
        _check_config_name(model_args.config_name)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if getattr(training_args, name) < 1:
            raise ValueError(f"--{name} must be at least 1 (got {getattr(training_args, name)}).")
    parse_thread_setting(training_args.cpu_threads)
    if data_args.streaming and training_args.max_steps <= 0:
        raise DataError("A streamed dataset has no length, so epochs are unknown: pass --max_steps N.")
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir, training_args.resume_from_checkpoint)
    if push_to_hub:
        if not training_args.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id org/name.")
        check_push_target(training_args.hub_model_id, training_args.hub_token)


def _total_steps(train_dataset, training_args) -> int:
    if training_args.max_steps > 0:
        return training_args.max_steps
    global_batch = (
        training_args.per_device_train_batch_size * training_args.gradient_accumulation_steps * training_args.world_size
    )
    return math.ceil(len(train_dataset) / global_batch) * math.ceil(training_args.num_train_epochs)


def _choose_threads(prepared: PreparedRun, training_args) -> ThreadChoice:
    """Picks and applies this process's CPU thread count (see `choose_cpu_threads`)."""
    if training_args.device.type != "cpu":
        return ThreadChoice(None, f"training on {training_args.device.type}")
    inputs = prepared.probe_inputs(training_args.per_device_train_batch_size)
    choice = choose_cpu_threads(
        training_args.cpu_threads,
        cores=available_cores(),
        image_pixels=inputs["pixel_values"].shape[-2] * inputs["pixel_values"].shape[-1],
        total_steps=_total_steps(prepared.splits.train, training_args),
        measure=lambda threads: time_training_steps(prepared.model, inputs, threads),
    )
    if choice.threads is not None:
        torch.set_num_threads(choice.threads)
    return choice


def _size(dataset) -> str:
    return f"{len(dataset):,}" if hasattr(dataset, "__len__") else "streamed"


def _precision(training_args) -> str:
    if training_args.bf16:
        on_cpu = " on the CPU (fastest only on CPUs with native bf16)" if training_args.use_cpu else ""
        return f"bf16 autocast{on_cpu}"
    return "fp16 mixed precision" if training_args.fp16 else "fp32"


def _push(model_dir: Path, training_args) -> tuple[str, str | None]:
    """(a note for the summary line, the error if the upload failed). A failed upload keeps the local model."""
    later = PUSH_LATER.format(folder=model_dir, repo_id=training_args.hub_model_id)
    try:
        url = push_folder(
            model_dir,
            training_args.hub_model_id,
            private=bool(training_args.hub_private_repo),
            revision=training_args.hub_revision,
            token=training_args.hub_token,
        )
    except PublishError as error:
        print(f"warning: the upload failed: {error}", file=sys.stderr, flush=True)
        note = f" NOT pushed to {training_args.hub_model_id} (see the warning above); push it later with: {later}."
        return note, str(error)
    return f" Pushed to {url}.", None


def _cpu_lines() -> dict:
    """The CPU and the fast paths chosen on it (bf16 only where native, the faster linear backend): two summary
    lines, so that a run's speed can be read against the machine it ran on."""
    cpu, fast_paths = describe_cpu_fast_paths().split("\n")
    return {"cpu": cpu.removeprefix("CPU: "), "kernels": fast_paths.removeprefix("fast paths: ")}


def _print_start(task: TrainingTask, prepared: PreparedRun, model_args, training_args, extra: dict) -> None:
    splits, output_dir = prepared.splits, Path(training_args.output_dir)
    names = splits.label_names
    replacing = " (replacing the finished model there)" if is_finished(output_dir) else ""
    print_run_summary(
        {
            "data": f"{splits.source}: {_size(splits.train)} train / {_size(splits.eval)} eval images, "
            f"{prepared.resolution}",
            "classes": f"{len(names)} ({', '.join(names[:10])}{', …' if len(names) > 10 else ''})",
            "model": f"{model_args.model_name_or_path or model_args.config_name} as {type(prepared.model).__name__}, "
            f"{sum(p.numel() for p in prepared.model.parameters()) / 1e6:.1f} M parameters",
            "output": f"{output_dir}{replacing}",
            "device": f"{training_args.device}, {_precision(training_args)}, world size {training_args.world_size}",
            **extra,
        },
        prefix=f"[{task.name}]",
    )


def run(model_args: ModelArguments, data_args, training_args, task: TrainingTask | None = None) -> dict:
    """Trains, evaluates and writes every output; returns all_results."""
    task = task or ImageClassificationTask()
    started = time.time()
    # Our transforms add columns Trainer cannot see in forward's signature; never let it drop the image column.
    training_args.remove_unused_columns = False
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # we publish our own folder at the end
    on_cpu = training_args.device.type == "cpu"
    if on_cpu:
        training_args.dataloader_pin_memory = False  # pinning only helps copies to an accelerator
    _check_before_training(model_args, data_args, training_args, push_to_hub)
    output_dir = Path(training_args.output_dir)
    rank, world_size = training_args.process_index, training_args.world_size
    # Printed by every process so that a launch can be checked to have started the processes it asked for.
    print(f"[{task.name}] process {rank} of {world_size} on {training_args.device}", flush=True)

    freed_memory = keep_freed_memory(training_args.cpu_keep_freed_memory) if on_cpu else None
    set_seed(training_args.seed)
    prepared = task.prepare(model_args, data_args, training_args)
    threads = _choose_threads(prepared, training_args)
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir)
    if rank == 0:
        _print_start(
            task,
            prepared,
            model_args,
            training_args,
            {
                "threads": threads.describe(),
                **(_cpu_lines() | {"memory": f"freed memory {freed_memory}"} if on_cpu else {}),
                "resume": describe_resume(training_args.resume_from_checkpoint, checkpoint, output_dir),
                "push": f"to {training_args.hub_model_id} at the end" if push_to_hub else "no",
            },
        )

    trainer = task.trainer(prepared, data_args, training_args)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    eval_metrics, evaluation = task.evaluate(trainer, prepared)

    results = {
        **train_result.metrics,
        **eval_metrics,
        "world_size": world_size,
        "resumed_from": checkpoint,
        **prepared.facts,
    }
    if trainer.is_world_process_zero():
        model_dir = save_hub_folder(
            trainer.model,
            prepared.processor,
            output_dir / MODEL_SUBFOLDER,
            overwrite=True,
            eval_results=task.card_results(eval_metrics),
            dataset_name=prepared.splits.source,
            training_args=_card_hyperparameters(training_args, task.card_hyperparameters(data_args)),
            base_model=_hub_id_or_none(model_args.model_name_or_path),
            repo_id=training_args.hub_model_id,
        )
        results["model_dir"] = str(model_dir)
        push_note = ""
        if push_to_hub:
            push_note, results["push_error"] = _push(model_dir, training_args)
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2, default=str))
        task.write_pictures(trainer, prepared, evaluation, output_dir)
        headline = task.headline(eval_metrics, prepared)
        print(summary_line(headline, time.time() - started, model_dir, task.pipeline_task, push_note), flush=True)
    return results


def _hub_id_or_none(model_name_or_path: str | None) -> str | None:
    """The card links the base model on the Hub; local folders have no Hub page."""
    if model_name_or_path is None or Path(model_name_or_path).exists():
        return None
    return model_name_or_path


def main(argv: list[str] | None = None, task: TrainingTask | None = None) -> dict:
    """A fine-tuning CLI; raises on a user's mistake (the scripts print it as one line: `cli.run_cli`)."""
    task = task or ImageClassificationTask()
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv, task)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger().setLevel(training_args.get_process_log_level())
    return run(model_args, data_args, training_args, task)
