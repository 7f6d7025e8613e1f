"""Fine-tuning / training PVT image classifiers with 🤗 Trainer; `scripts/finetune.py` is a thin CLI over `main`.

With no arguments this trains a PVT-Tiny-architecture model from scratch on scikit-learn's bundled digits (no
network) and writes to `outputs/pvt-tiny-digits/`:

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
from dataclasses import dataclass, field
from pathlib import Path

import evaluate
import torch
import torch.nn.functional as F
import yaml
from transformers import HfArgumentParser, PretrainedConfig, Trainer, TrainingArguments, set_seed
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from .configuration_pvt import PRESETS, PvtConfig, preset_name
from .data import DataError, DatasetArguments, LabeledSplits, TrainAugmentation, processor_size, with_transforms
from .evaluation import ACCURACY_METRIC_PATH, TOP_K, plot_confusion_matrix
from .hub import push_folder, save_hub_folder
from .image_processing_pvt import PvtImageProcessor
from .modeling_pvt import PvtForImageClassification

logger = logging.getLogger(__name__)

DEFAULT_OUTPUT_DIR = "outputs/pvt-tiny-digits"
# The embedded digits are 8x8; 32 is the smallest input PVT's strides and spatial reductions allow.
DIGITS_IMAGE_SIZE = 32
MODEL_SUBFOLDER = "model"


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
class DataArguments(DatasetArguments):
    max_train_samples: int | None = field(default=None, metadata={"help": "Use only the first N train images."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Use only the first N eval images."})
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
    recipe: str | None = field(
        default=None, metadata={"help": "JSON/YAML file of arguments (configuration/recipes/); flags override it."}
    )


def _default(name: str, value):
    """A TrainingArguments field with our default and its original help text."""
    return field(default=value, metadata=TrainingArguments.__dataclass_fields__[name].metadata)


# Our defaults are the digits run's: it must finish in minutes on two CPU cores.
@dataclass
class PvtTrainingArguments(TrainingArguments):
    output_dir: str = _default("output_dir", DEFAULT_OUTPUT_DIR)
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
    cpu_threads: int = field(
        default=1,
        metadata={
            "help": "PyTorch threads per process when training on the CPU; 0 keeps PyTorch's default (all cores). "
            "1 suits the 32x32 digits: their tensors are too small to split, and with other load on the machine "
            "2 threads ran 35x slower than 1 (OpenMP threads waiting on each other). Use 0 for large images."
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


def parse_arguments(argv: list[str]) -> tuple[ModelArguments, DataArguments, PvtTrainingArguments]:
    """Flags, optionally on top of `--recipe FILE` (the recipe's values come first, so flags override them)."""
    parser = HfArgumentParser((ModelArguments, DataArguments, PvtTrainingArguments))
    launch_flags = []
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.accelerator.is_available():
        # A multi-process launch on a machine without an accelerator: unless told to use the CPU, accelerate sets up
        # no process group and every process silently trains alone on all the data.
        launch_flags = ["--use_cpu", "true"]
    recipe_parser = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    recipe_parser.add_argument("--recipe")
    recipe = recipe_parser.parse_known_args(argv)[0].recipe
    recipe_flags = recipe_to_flags(recipe) if recipe else []
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(
        args=launch_flags + recipe_flags + list(argv)
    )
    return model_args, data_args, training_args


# ------------------------------------------------------------------------------------------------------ model setup


def resolve_checkpoint(resume_from_checkpoint: str | None, output_dir: str | Path) -> str | None:
    """`last` -> the newest *complete* checkpoint in `output_dir` (one killed while saving lacks trainer_state.json,
    which Trainer writes last), or None to start fresh; a path is checked and returned as is."""
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint != "last":
        if not (Path(resume_from_checkpoint) / TRAINER_STATE_NAME).is_file():
            raise FileNotFoundError(
                f"{resume_from_checkpoint} is not a complete Trainer checkpoint (no {TRAINER_STATE_NAME}). Pass a "
                f"{PREFIX_CHECKPOINT_DIR}-<step> folder or `last`."
            )
        return resume_from_checkpoint
    candidates = [
        path
        for path in Path(output_dir).glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.name.split("-")[-1].isdigit() and (path / TRAINER_STATE_NAME).is_file()
    ]
    if not candidates:
        logger.info("No complete checkpoint in %s; starting from scratch.", output_dir)
        return None
    return str(max(candidates, key=lambda path: int(path.name.split("-")[-1])))


def _load_processor(model_name_or_path: str) -> PvtImageProcessor:
    try:
        return PvtImageProcessor.from_pretrained(model_name_or_path)
    except OSError:
        logger.info("%s has no preprocessor_config.json; using the default PVT processor.", model_name_or_path)
        return PvtImageProcessor()


def _checkpoint_num_labels(model_name_or_path: str) -> int:
    config, _ = PretrainedConfig.get_config_dict(model_name_or_path)
    return len(config["id2label"]) if "id2label" in config else config.get("num_labels", 2)


def build_model_and_processor(model_args: ModelArguments, splits: LabeledSplits, is_digits: bool):
    labels = {"num_labels": len(splits.label_names), "id2label": splits.id2label, "label2id": splits.label2id}
    overrides = {} if model_args.drop_path_rate is None else {"drop_path_rate": model_args.drop_path_rate}
    if model_args.model_name_or_path:
        head_size = _checkpoint_num_labels(model_args.model_name_or_path)
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
        if preset_name(model_args.config_name):
            config = PvtConfig.from_preset(model_args.config_name, **labels, **overrides)
        else:
            config = PvtConfig.from_json_file(model_args.config_name)
            config.update({**labels, **overrides})
            config = PvtConfig(**config.to_dict())  # re-validates the architecture after the overrides
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


def plot_training_curves(log_history: list[dict], output_dir: Path) -> list[Path]:
    """loss_curve.png (train + eval loss per step) and accuracy_curve.png (eval accuracy / top-5 per step)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def series(key):
        points = [(entry["step"], entry[key]) for entry in log_history if key in entry]
        return ([step for step, _ in points], [value for _, value in points]) if points else None

    written = []
    for filename, title, keys in (
        ("loss_curve.png", "Loss", (("loss", "train loss"), ("eval_loss", "eval loss"))),
        ("accuracy_curve.png", "Eval accuracy", (("eval_accuracy", "top-1"), ("eval_top5_accuracy", "top-5"))),
    ):
        figure, axes = plt.subplots(figsize=(6, 4))
        for key, label in keys:
            if points := series(key):
                axes.plot(*points, marker="o" if key.startswith("eval") else None, markersize=3, label=label)
        axes.set_xlabel("optimizer step")
        axes.set_title(title)
        axes.grid(alpha=0.3)
        axes.legend()
        figure.tight_layout()
        figure.savefig(output_dir / filename, dpi=100)
        plt.close(figure)
        written.append(output_dir / filename)
    return written


def _card_hyperparameters(training_args: TrainingArguments, data_args: DataArguments) -> dict:
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
    values["world_size"] = training_args.world_size
    values.update({name: getattr(data_args, name) for name in ("mixup_alpha", "cutmix_alpha", "rand_augment_ops")})
    return values


def summary_line(metrics: dict, seconds: float, model_dir: Path) -> str:
    top5 = f", top-5 {metrics['eval_top5_accuracy']:.2%}" if "eval_top5_accuracy" in metrics else ""
    return (
        f"Done in {int(seconds // 60)} min {seconds % 60:.0f} s: eval accuracy {metrics['eval_accuracy']:.2%}{top5}. Checkpoint: {model_dir} — "
        f"load it with pipeline('image-classification', model='{model_dir}', trust_remote_code=True)"
    )


# ------------------------------------------------------------------------------------------------------------- main


def _limit(dataset, count: int | None):
    if count is None or dataset is None:
        return dataset
    if hasattr(dataset, "select"):
        return dataset.select(range(min(count, len(dataset))))
    return dataset.take(count)


def run(model_args: ModelArguments, data_args: DataArguments, training_args: PvtTrainingArguments) -> dict:
    """Trains, evaluates and writes every output; returns all_results."""
    started = time.time()
    # Our transforms add columns Trainer cannot see in forward's signature; never let it drop the image column.
    training_args.remove_unused_columns = False
    push_to_hub, training_args.push_to_hub = training_args.push_to_hub, False  # we publish our own folder at the end
    if push_to_hub and not training_args.hub_model_id:
        raise ValueError("--push_to_hub needs --hub_model_id org/name.")
    if data_args.streaming and training_args.max_steps <= 0:
        raise DataError("A streamed dataset has no length, so epochs are unknown: pass --max_steps N.")
    output_dir = Path(training_args.output_dir)
    rank, world_size = training_args.process_index, training_args.world_size
    # Printed by every process so that a launch can be checked to have started the processes it asked for.
    print(f"[finetune] process {rank} of {world_size} on {training_args.device}", flush=True)

    if training_args.device.type == "cpu" and training_args.cpu_threads:
        torch.set_num_threads(training_args.cpu_threads)
    set_seed(training_args.seed)
    splits = data_args.load(digits_image_size=model_args.image_size or DIGITS_IMAGE_SIZE)
    is_digits = data_args.is_digits
    model, processor = build_model_and_processor(model_args, splits, is_digits)
    augmentation = TrainAugmentation(
        data_args.crop_scale_min,
        data_args.horizontal_flip_probability,
        data_args.rand_augment_ops,
        data_args.rand_augment_magnitude,
    )
    if data_args.streaming:
        splits.train = splits.train.shuffle(seed=training_args.seed, buffer_size=1000)
    splits.train = _limit(splits.train, data_args.max_train_samples)
    splits.eval = _limit(splits.eval, data_args.max_eval_samples)
    transformed = with_transforms(splits, processor, augmentation)

    trainer = PvtTrainer(
        model=model,
        args=training_args,
        train_dataset=transformed.train,
        eval_dataset=transformed.eval,
        processing_class=processor,
        compute_metrics=make_compute_metrics(),
        preprocess_logits_for_metrics=top_k_indices,
        mixup_alpha=data_args.mixup_alpha,
        cutmix_alpha=data_args.cutmix_alpha,
    )
    checkpoint = resolve_checkpoint(training_args.resume_from_checkpoint, output_dir)
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    prediction = trainer.predict(transformed.eval, metric_key_prefix="eval")
    eval_metrics = prediction.metrics

    results = {**train_result.metrics, **eval_metrics, "world_size": world_size, "resumed_from": checkpoint}
    if trainer.is_world_process_zero():
        model_dir = save_hub_folder(
            trainer.model,
            processor,
            output_dir / MODEL_SUBFOLDER,
            overwrite=True,
            eval_results={
                name: eval_metrics[f"eval_{name}"]
                for name in ("accuracy", "top5_accuracy")
                if f"eval_{name}" in eval_metrics
            },
            dataset_name=splits.source,
            training_args=_card_hyperparameters(training_args, data_args),
            base_model=_hub_id_or_none(model_args.model_name_or_path),
            repo_id=training_args.hub_model_id,
        )
        results["model_dir"] = str(model_dir)
        (output_dir / "all_results.json").write_text(json.dumps(results, indent=2, default=str))
        plot_training_curves(trainer.state.log_history, output_dir)
        plot_confusion_matrix(
            prediction.predictions[:, 0], prediction.label_ids, splits.label_names, output_dir / "confusion_matrix.png"
        )
        if push_to_hub:
            url = push_folder(
                model_dir,
                training_args.hub_model_id,
                private=bool(training_args.hub_private_repo),
                revision=training_args.hub_revision,
                token=training_args.hub_token,
            )
            print(f"Pushed to {url}", flush=True)
        print(summary_line(eval_metrics, time.time() - started, model_dir), flush=True)
    return results


def _hub_id_or_none(model_name_or_path: str | None) -> str | None:
    """The card links the base model on the Hub; local folders have no Hub page."""
    if model_name_or_path is None or Path(model_name_or_path).exists():
        return None
    return model_name_or_path


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger().setLevel(training_args.get_process_log_level())
    return run(model_args, data_args, training_args)
