"""The run loop every task plugs into: checks before anything heavy, threads, the run's header, resume, Trainer,
evaluation, the Hub-ready model folder, push, all_results.json and pictures. A task (`TrainingTask`) supplies only
its data, model, Trainer, metrics and pictures; scripts hand `main` their task."""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import Trainer, TrainingArguments, set_seed

from ..checkpoints.conversion import read_pvt_config
from ..checkpoints.hub import (
    PublishError,
    check_push_target,
    push_folder,
    quiet_shard_writing,
    save_hub_folder,
)
from ..cpu_fast_paths import describe_cpu_fast_paths
from ..data.sources import DataError, LabeledSplits
from ..image_processing_pvt import PvtImageProcessor
from .arguments import (
    ModelArguments,
    PvtTrainingArguments,
    check_config_name,
    parse_arguments,
)
from .runs import (
    MODEL_SUBFOLDER,
    ThreadChoice,
    available_cores,
    check_output_dir,
    check_resume_checkpoint,
    choose_cpu_threads,
    describe_resume,
    is_finished,
    keep_freed_memory,
    parse_thread_setting,
    print_run_summary,
    resolve_checkpoint,
    time_training_steps,
)

logger = logging.getLogger(__name__)

PUSH_LATER = "python scripts/push_to_hub.py {folder} {repo_id}"
WARMUP_FRACTION = "warmup (fraction of steps)"  # the card's name for a --warmup_steps value below 1


def _not_checkpoint_mtime_note(record: logging.LogRecord) -> bool:
    """Trainer notes that checkpoints written within a second of each other cannot be ordered by time and falls back
    to their step numbers, which is what orders them anyway: nothing for a user to act on."""
    return "mtime may not be reliable" not in record.getMessage()


logging.getLogger("transformers.trainer_utils").addFilter(_not_checkpoint_mtime_note)


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
    if 0 < values["warmup_steps"] < 1:  # transformers reads a value below 1 as a fraction of the run's steps
        values = {WARMUP_FRACTION if name == "warmup_steps" else name: value for name, value in values.items()}
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
    folder, push, results). Each task's folder under `modeling_pvt/tasks/` has one."""

    name: str
    pipeline_task: str
    data_arguments: type
    training_arguments: type = PvtTrainingArguments
    default_data_name: str  # the embedded data set a run without data flags trains on

    def data_source(self, data_args) -> str:
        return data_args.dataset_name or data_args.train_dir or data_args.validation_dir or self.default_data_name

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


# ------------------------------------------------------------------------------------------------------------- run


def lowest_class(per_class: dict[str, float | None], metric: str) -> str:
    """`, lowest class <metric> 0.512 (name)` for a run's headline; empty when no class was measured."""
    measured = [(value, name) for name, value in per_class.items() if value is not None]
    return f", lowest class {metric} {min(measured)[0]:.3f} ({min(measured)[1]})" if measured else ""


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
        check_config_name(model_args.config_name)
    for name in ("per_device_train_batch_size", "per_device_eval_batch_size"):
        if getattr(training_args, name) < 1:
            raise ValueError(f"--{name} must be at least 1 (got {getattr(training_args, name)}).")
    parse_thread_setting(training_args.cpu_threads)
    if data_args.streaming and training_args.max_steps <= 0:
        raise DataError("A streamed dataset has no length, so epochs are unknown: pass --max_steps N.")
    check_output_dir(training_args.output_dir, training_args.overwrite_output_dir, training_args.resume_from_checkpoint)
    check_resume_checkpoint(training_args.resume_from_checkpoint, training_args.output_dir)
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
    if training_args.precision_choice:
        return training_args.precision_choice
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


def run(model_args: ModelArguments, data_args, training_args, task: TrainingTask) -> dict:
    """Trains, evaluates and writes every output; returns all_results."""
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
    with quiet_shard_writing():  # Trainer saves a checkpoint every --save_steps
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
            from_scratch=model_args.model_name_or_path is None,
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


def main(argv: list[str] | None, task: TrainingTask) -> dict:
    """A fine-tuning CLI; raises on a user's mistake (the scripts print it as one line: `cli.run_cli`)."""
    argv = sys.argv[1:] if argv is None else argv
    model_args, data_args, training_args = parse_arguments(argv, task)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    logging.getLogger().setLevel(training_args.get_process_log_level())
    return run(model_args, data_args, training_args, task)
