"""The flags every fine-tuning task shares: model (checkpoint or architecture), run-wide data limits and recipes,
and our `TrainingArguments` defaults; `parse_arguments` reads them (recipe first, flags override it)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml
from transformers import HfArgumentParser, TrainingArguments
from transformers.hf_argparser import string_to_bool

from ..cli import (
    DEBUG_ENVIRONMENT_VARIABLE,
    DEBUG_FLAG,
    UsageError,
    flag_mistakes,
    usage_message,
)
from ..configuration_pvt import PRESETS, PvtConfig, preset_name
from ..cpu_fast_paths import detect_cpu_capabilities
from .runs import AUTO_THREADS, data_label, default_output_dir, model_label


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
            "help": "Training resolution (square). Default: 32 for the embedded digits, else the "
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


def trainer_default(name: str, value):
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
    learning_rate: float = trainer_default("learning_rate", 1e-3)
    weight_decay: float = trainer_default("weight_decay", 0.05)
    num_train_epochs: float = trainer_default("num_train_epochs", 20)
    warmup_steps: float = trainer_default("warmup_steps", 0.05)
    lr_scheduler_type: str = trainer_default("lr_scheduler_type", "cosine")
    per_device_train_batch_size: int = trainer_default("per_device_train_batch_size", 32)
    per_device_eval_batch_size: int = trainer_default("per_device_eval_batch_size", 128)
    eval_strategy: str = trainer_default("eval_strategy", "epoch")
    save_strategy: str = trainer_default("save_strategy", "epoch")
    save_total_limit: int | None = trainer_default("save_total_limit", 2)
    logging_steps: float = trainer_default("logging_steps", 10)
    report_to: None | str | list[str] = trainer_default("report_to", "none")
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
    bf16: bool = field(
        default=False,
        metadata={
            "help": "bf16 autocast with fp32 master weights. Default on a CPU-only run: on where the CPU runs bf16 "
            "natively (AVX512_BF16 or AMX), off elsewhere (emulated bf16 is slower than fp32); true/false decides."
        },
    )
    # Set by `parse_arguments` (not a flag): why the run trains in its precision, for the run's header.
    precision_choice: str = field(default="", init=False, repr=False)


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
    for name in ("--bf16", "--fp16", "--use_cpu", "--use-cpu"):
        parser.add_argument(name, type=string_to_bool, nargs="?", const=True)
    return parser.parse_known_args(flags)[0]


def _check_flags(parser: argparse.ArgumentParser, argv: list[str], recipe_flags: list[str], recipe: str | None):
    """Unknown or ambiguous flags, on the command line or as a recipe's keys, as one `UsageError` that names the flag
    meant (HfArgumentParser would list them as "not used", or call two spellings of one flag ambiguous)."""
    actions = [action.option_strings for action in parser._actions if action.option_strings]
    script = Path(sys.argv[0]).name if sys.argv and sys.argv[0] else parser.prog
    problems = flag_mistakes(argv, actions, script)
    problems += [f"In the recipe {recipe}: {problem}" for problem in flag_mistakes(recipe_flags, actions, script)]
    if problems:
        raise UsageError(usage_message(problems, script))


def parse_arguments(argv: list[str], task) -> tuple:
    """(model, data, training) arguments of `task` (a `TrainingTask`) from flags, optionally on top of
    `--recipe FILE` (the recipe's values come first, so flags override them)."""
    parser = HfArgumentParser(
        (ModelArguments, task.data_arguments, task.training_arguments),
        epilog=f"A bare {DEBUG_FLAG} (or {DEBUG_ENVIRONMENT_VARIABLE}=1) shows the full traceback of an error; "
        f"{DEBUG_FLAG} with a value is Trainer's own debug option.",
    )
    recipe = _pre_parse(argv).recipe
    recipe_flags = recipe_to_flags(recipe) if recipe else []
    _check_flags(parser, argv, recipe_flags, recipe)
    flags = recipe_flags + list(argv)
    given = _pre_parse(flags)
    launch_flags = []
    precision_flags, precision_choice = cpu_precision(given)
    if not torch.accelerator.is_available() and given.use_cpu is None:
        # A multi-process launch on a machine without an accelerator: unless told to use the CPU, accelerate sets up
        # no process group and every process silently trains alone on all the data. And bf16 (the ImageNet recipe)
        # is refused by TrainingArguments without an accelerator unless the CPU is named: it runs as CPU autocast.
        if int(os.environ.get("WORLD_SIZE", "1")) > 1 or given.bf16 or precision_flags:
            launch_flags = ["--use_cpu", "true"]
    flags = launch_flags + precision_flags + flags
    model_args, data_args, training_args = parser.parse_args_into_dataclasses(args=flags)
    training_args.precision_choice = precision_choice
    if given.output_dir is None:
        source = task.data_source(data_args)
        model = model_label(model_args.model_name_or_path, model_args.config_name)
        training_args.output_dir = str(default_output_dir(model, data_label(source)))
    return model_args, data_args, training_args


def cpu_precision(given: argparse.Namespace) -> tuple[list[str], str]:
    """(flags to add, why the run trains in the precision it does) on a CPU-only run. Unless --bf16 or --fp16 is
    given, bf16 autocast is the default where the CPU runs it natively (AVX512_BF16 or AMX: its GEMMs several times
    faster than fp32) and fp32 elsewhere, where oneDNN would emulate bf16 more slowly than fp32."""
    if torch.accelerator.is_available() and not given.use_cpu:
        return [], ""
    native = detect_cpu_capabilities().native_bf16
    if given.bf16 is None and not given.fp16:
        if native:
            return ["--bf16", "true"], (
                "bf16 autocast, fp32 weights (default: this CPU runs bf16 natively; --bf16 false for fp32)"
            )
        return [], "fp32 (default: this CPU has no native bf16, which would be emulated, slower; --bf16 true forces it)"
    if given.bf16:
        speed = "native on this CPU" if native else "emulated on this CPU, slower than fp32"
        return [], f"bf16 autocast, fp32 weights (--bf16 true; {speed})"
    return [], "fp32 (--bf16 false)" if given.bf16 is False else ""


def checkpoint_num_labels(config: dict) -> int:
    # transformers writes `"id2label": null` for a model saved without label names.
    return len(config["id2label"]) if config.get("id2label") else config.get("num_labels", 2)


def check_config_name(config_name: str) -> None:
    if not preset_name(config_name) and not Path(config_name).is_file():
        raise FileNotFoundError(
            f"--config_name {config_name!r} is neither a preset ({', '.join(PRESETS)}) nor a config JSON file. Pick "
            "a preset, or check the file's path."
        )


def architecture_config(config_name: str, labels: dict, overrides: dict) -> PvtConfig:
    check_config_name(config_name)
    if preset_name(config_name):
        return PvtConfig.from_preset(config_name, **labels, **overrides)
    config = PvtConfig.from_json_file(config_name)
    config.update({**labels, **overrides})
    return PvtConfig(**config.to_dict())  # re-validates the architecture after the overrides
