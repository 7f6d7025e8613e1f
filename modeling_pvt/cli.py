"""The one error policy of every command-line tool (`scripts/*.py`, `python -m modeling_pvt`): a user's mistake is
one `error: …` line on stderr and a non-zero exit, never a traceback, unless `--debug` or `PVT_DEBUG=1` asks for it.

    from modeling_pvt.cli import run_cli
    if __name__ == "__main__":
        sys.exit(run_cli(main))

`main(argv)` raises; `run_cli` decides what the user sees. Library errors already say what was wrong and how to fix
it (ValueError/TypeError/OSError and their subclasses DataError, ConversionError, PublishError), so they are printed
as they are; anything else is a bug and keeps its traceback.

Flag mistakes are reported before torch is imported (that takes seconds): under `if __name__ == "__main__":`, a
script's first lines run `check_command_line` from this file, read by path because importing the package imports
torch (scripts/finetune.py shows the two lines to copy):

    runpy.run_path(str(Path(__file__).resolve().parents[1] / "modeling_pvt" / "cli.py"))["check_command_line"](__file__)

It knows each script's flags from a table generated from the scripts' own parsers (`python -m modeling_pvt.cli`
rewrites it; tests/test_cli.py fails when it is stale), so this file imports only the standard library at the top.
"""

from __future__ import annotations

import argparse
import difflib
import os
import re
import sys
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path

DEBUG_FLAG = "--debug"
DEBUG_ENVIRONMENT_VARIABLE = "PVT_DEBUG"
DEBUG_HELP = f"show the full traceback of an error (or set {DEBUG_ENVIRONMENT_VARIABLE}=1)"
INTERRUPTED_EXIT_CODE = 130  # the shell's code for Ctrl-C
EXPECTED_ERRORS = (ValueError, TypeError, OSError, ImportError)  # and checkpoints.hub.PublishError (_expected_errors)


class UsageError(Exception):
    """A command line that the argument parser rejected."""


def take_debug_flag(argv: list[str]) -> tuple[bool, list[str]]:
    """(whether a bare `--debug` was given or PVT_DEBUG is set, argv without it). A `--debug` followed by a value is
    left alone: Trainer's own `--debug underflow_overflow` has that name."""
    debug = os.environ.get(DEBUG_ENVIRONMENT_VARIABLE, "").lower() not in ("", "0", "false", "no")
    kept = []
    for index, argument in enumerate(argv):
        following = argv[index + 1] if index + 1 < len(argv) else None
        if argument == DEBUG_FLAG and (following is None or following.startswith("-")):
            debug = True
        else:
            kept.append(argument)
    return debug, kept


@contextmanager
def _usage_errors_raise():
    """argparse prints its usage block and exits on a bad flag; raise instead, so it becomes one line like the rest."""

    def error(parser, message):
        raise UsageError(f"{message}. Run {parser.prog} --help for the options.")

    original = argparse.ArgumentParser.error
    argparse.ArgumentParser.error = error
    try:
        yield
    finally:
        argparse.ArgumentParser.error = original


def count_of(count: int, noun: str, plural: str | None = None) -> str:
    """`1 thread`, `2 threads`: a count and its noun, in the right number."""
    return f"{count} {noun}" if count == 1 else f"{count} {plural or noun + 's'}"


def _expected_errors() -> tuple[type[BaseException], ...]:
    from .checkpoints.hub import (
        PublishError,  # imported here: the top of this file stays standard-library only
    )

    return (*EXPECTED_ERRORS, PublishError)


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def run_cli(main: Callable[[list[str]], object], argv: list[str] | None = None, *, interrupted_hint: str = "") -> int:
    """Runs `main(argv)` under the error policy; returns the process exit code (`main`'s int result, else 0).

    `interrupted_hint` is added to the message printed on Ctrl-C (e.g. how to resume)."""
    debug, argv = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    try:
        with _usage_errors_raise():
            result = main(argv)
    except KeyboardInterrupt:
        if debug:
            raise
        print(f"error: interrupted (Ctrl-C). {interrupted_hint}".rstrip(), file=sys.stderr, flush=True)
        return INTERRUPTED_EXIT_CODE
    except (UsageError, *_expected_errors()) as error:
        if debug:
            raise
        hint = "" if isinstance(error, UsageError) else f" (run with {DEBUG_FLAG} for the traceback)"
        print(f"error: {_one_line(error)}{hint}", file=sys.stderr, flush=True)
        return 2 if isinstance(error, UsageError) else 1
    return result if isinstance(result, int) and not isinstance(result, bool) else 0


# ------------------------------------------------------------------------------------------ flags, before torch

# Names people type for a flag of ours or of TrainingArguments (dashes read as underscores) -> the flags they may
# mean, the first one the script has; used only where the script lacks the name itself (benchmark.py has --threads).
FLAG_ALIASES = {
    "epochs": ("num_train_epochs",),
    "num_epochs": ("num_train_epochs",),
    "n_epochs": ("num_train_epochs",),
    "lr": ("learning_rate",),
    "batch_size": ("per_device_train_batch_size",),
    "bs": ("per_device_train_batch_size", "batch_size", "batch_sizes"),
    "train_batch_size": ("per_device_train_batch_size", "batch_size"),
    "eval_batch_size": ("per_device_eval_batch_size", "batch_size"),
    "steps": ("max_steps",),
    "wd": ("weight_decay",),
    "warmup": ("warmup_steps",),
    "warmup_ratio": ("warmup_steps",),  # transformers 5 folded it into warmup_steps (a value < 1 is a ratio)
    "model": ("model_name_or_path", "checkpoint"),
    "model_name": ("model_name_or_path",),
    "model_path": ("model_name_or_path", "checkpoint"),
    "model_dir": ("model_name_or_path", "checkpoint"),
    "checkpoint": ("model_name_or_path",),
    "resume": ("resume_from_checkpoint",),
    "output": ("output_dir",),
    "out": ("output_dir",),
    "output_path": ("output_dir",),
    "out_dir": ("output_dir",),
    "overwrite": ("overwrite_output_dir",),
    "data": ("train_dir",),
    "data_dir": ("train_dir",),
    "train_data": ("train_dir",),
    "val_dir": ("validation_dir",),
    "valid_dir": ("validation_dir",),
    "eval_dir": ("validation_dir",),
    "dataset": ("dataset_name",),
    "config": ("config_name",),
    "preset": ("config_name", "presets", "variant"),
    "threads": ("cpu_threads",),
    "num_threads": ("cpu_threads", "threads"),
    "resolution": ("image_size", "resolutions"),
    "image_size": ("resolution", "resolutions"),
    "size": ("image_size", "resolution", "resolutions"),
}
_GENERATED_BEGIN = "\n# BEGIN GENERATED FLAG TABLE"
_GENERATED_END = "\n# END GENERATED FLAG TABLE\n"


def _normalised(option: str) -> str:
    return option.lstrip("-").replace("-", "_").lower()


def _suggestions(given: str, actions: list[tuple[str, ...]]) -> list[str]:
    """The flags `given` (unknown to the script) most likely meant: an alias, a flag that contains it, or flags
    spelt alike (difflib), each by its first spelling."""
    by_name = {_normalised(option): options[0] for options in actions for option in options}
    name = _normalised(given)
    alias = next((target for target in FLAG_ALIASES.get(name, ()) if target in by_name), None)
    if alias:
        return [by_name[alias]]
    containing = sorted({canonical for key, canonical in by_name.items() if len(name) >= 3 and name in key})
    if 0 < len(containing) <= 3:
        return containing
    return list(dict.fromkeys(by_name[key] for key in difflib.get_close_matches(name, list(by_name), n=3, cutoff=0.75)))


def _did_you_mean(suggestions: list[str]) -> str:
    return f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""


def flag_mistakes(argv: Iterable[str], actions: Iterable[Iterable[str]], script: str) -> list[str]:
    """One sentence per flag of `argv` that `script`'s parser would refuse, `actions` being its options (the
    spellings of each option together, e.g. `("--model_name_or_path", "--model-name-or-path")`). Mirrors argparse:
    an exact spelling or the start of exactly one spelling is accepted; values and everything after `--` are not
    flags. Unlike argparse it names the flag meant, and never calls two spellings of one flag ambiguous."""
    actions = [tuple(options) for options in actions]
    spellings = {option: options for options in actions for option in options}
    problems = []
    for argument in argv:
        if argument == "--":
            break
        if not argument.startswith("-") or argument in ("-h", "--help") or re.fullmatch(r"-\d.*|-\.\d.*", argument):
            continue  # a value (negative numbers included), or help
        given = argument.split("=", 1)[0] if argument.startswith("--") else argument
        if given in spellings:
            continue
        matches = [option for option in spellings if option.startswith(given)] if given.startswith("--") else []
        meant = list(dict.fromkeys(spellings[option] for option in matches))
        if len(matches) == 1:
            continue  # argparse accepts the unambiguous start of a flag
        if len(meant) == 1:  # the start of two spellings of one flag: argparse would call it ambiguous
            problems.append(f"{script} has no flag {given}; did you mean {meant[0][0]}?")
        elif meant:
            suggestions = _suggestions(given, actions)
            starts = ", ".join(options[0] for options in meant[:6]) + (", …" if len(meant) > 6 else "")
            problems.append(f"{given} is ambiguous in {script} (the start of {starts}){_did_you_mean(suggestions)}")
        else:
            problems.append(f"{script} has no flag {given}{_did_you_mean(_suggestions(given, actions))}")
    return problems


def _flag_value(argv: list[str], flag: str) -> str | None:
    """The last value given to `flag` (`--flag value` or `--flag=value`), or None."""
    value = None
    for index, argument in enumerate(argv):
        if argument == "--":
            break
        if argument == flag and index + 1 < len(argv):
            value = argv[index + 1]
        elif argument.startswith(f"{flag}="):
            value = argument.split("=", 1)[1]
    return value


def output_dir_is_a_file_message(output_dir: str | Path) -> str:
    return (
        f"--output_dir {output_dir} is a file, not a folder. Pass a folder path: a new one, or the folder of an "
        "earlier run."
    )


def missing_checkpoint_message(checkpoint: str | Path, output_dir: str | Path | None) -> str:
    """What to say when `--resume_from_checkpoint PATH` names no folder: the checkpoints that exist, and `last`."""
    found = []
    if output_dir is not None and Path(output_dir).is_dir():
        steps = (path.name.rpartition("-")[2] for path in Path(output_dir).glob("checkpoint-*"))
        found = sorted(int(step) for step in steps if step.isdigit())
    if found:
        shown = ", ".join(str(Path(output_dir) / f"checkpoint-{step}") for step in found[-3:])
        where = f"{output_dir} holds {shown}{' (newest last)' if len(found) > 1 else ''}: pass one of those"
    else:
        folder = output_dir or "OUTPUT_DIR"
        where = f"Pass a checkpoint-<step> folder of the run (`ls {folder}` lists them)"
    return f"--resume_from_checkpoint {checkpoint}: not found. {where}, or `last` for the newest complete one."


def value_mistakes(argv: list[str], actions: Iterable[Iterable[str]]) -> list[str]:
    """Flag values known wrong without the package: an --output_dir that is a file, a --resume_from_checkpoint
    path that does not exist."""
    spellings = {option: options for options in actions for option in options}

    def value(flag: str) -> str | None:
        given = (_flag_value(argv, spelling) for spelling in spellings.get(flag, ()))
        return next((value for value in given if value is not None), None)

    problems = []
    output_dir = value("--output_dir")
    if output_dir and Path(output_dir).exists() and not Path(output_dir).is_dir():
        problems.append(output_dir_is_a_file_message(output_dir))
    resume = value("--resume_from_checkpoint")
    if resume and resume != "last" and not Path(resume).exists():
        problems.append(missing_checkpoint_message(resume, output_dir))
    return problems


def usage_message(problems: list[str], script: str) -> str:
    sentences = (problem if problem.endswith(("?", ".")) else f"{problem}." for problem in problems)
    return f"{' '.join(sentences)} Run {script} --help for the options."


def script_actions(script: str) -> list[tuple[str, ...]] | None:
    """The options of `scripts/<script>.py` from the generated table (each action's spellings), or None when the
    table does not know the script or was generated for another transformers version than the one installed (the
    script's own parser then judges its flags, seconds later)."""
    table = _SCRIPT_FLAGS.get(script)
    if table is None:
        return None
    if _TRAINING_ARGUMENTS_MARK in table.split():
        from importlib.metadata import PackageNotFoundError, version

        try:
            if version("transformers") != FLAG_TABLE_TRANSFORMERS_VERSION:
                return None
        except PackageNotFoundError:
            return None
        table = table.replace(_TRAINING_ARGUMENTS_MARK, _TRAINING_ARGUMENTS_FLAGS)
    actions = []
    for token in table.split():
        names = token.split(",")
        if len(names) == 1 and names[0].endswith("+"):  # `a_b+`: --a_b and its twin --a-b
            names = [names[0][:-1], names[0][:-1].replace("_", "-")]
        actions.append(tuple(name if name.startswith("-") else f"--{name}" for name in names))
    return actions


def check_command_line(script_file: str, argv: list[str] | None = None) -> None:
    """Exits with one `error: …` line (code 2) if the command line of `scripts/<name>.py` has a flag its parser
    would refuse or a value known wrong without the package; returns otherwise. Reads only this file and the
    standard library, so a mistake is reported in milliseconds instead of after torch's import. A bare --debug (or
    PVT_DEBUG=1) skips it: the full run then shows the traceback."""
    script = Path(script_file).name
    debug, argv = take_debug_flag(list(sys.argv[1:] if argv is None else argv))
    actions = script_actions(Path(script_file).stem)
    if debug or actions is None:
        return
    problems = flag_mistakes(argv, actions, script) or value_mistakes(argv, actions)
    if problems:
        print(f"error: {usage_message(problems, script)}", file=sys.stderr, flush=True)
        sys.exit(2)


# ------------------------------------------------------------------------------- the generated table of flags

_TRAINING_ARGUMENTS_MARK = "<TrainingArguments>"


def _parser_of(script: Path) -> argparse.ArgumentParser:
    """The argument parser `scripts/<name>.py` builds, caught as its `main` starts parsing (no work is done)."""
    import runpy

    class Caught(Exception):
        pass

    original = argparse.ArgumentParser.parse_known_args

    def catch(self, *args, **kwargs):
        if self.add_help:  # the script's parser; helper parsers (add_help=False) read a few flags first
            raise Caught(self)
        return original(self, *args, **kwargs)

    main = runpy.run_path(str(script))["main"]
    argparse.ArgumentParser.parse_known_args = catch
    try:
        main([])
    except Caught as caught:
        return caught.args[0]
    finally:
        argparse.ArgumentParser.parse_known_args = original
    raise RuntimeError(f"{script} parsed no arguments")


def _tokens(parser: argparse.ArgumentParser) -> list[str]:
    tokens = []
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        names = [option[2:] if option.startswith("--") else option for option in action.option_strings]
        twin = len(names) == 2 and "_" in names[0] and names[1] == names[0].replace("_", "-")
        tokens.append(f"{names[0]}+" if twin else ",".join(names))
    return sorted(tokens)


def _wrapped(tokens: list[str], indent: str = "") -> str:
    lines, line = [], ""
    for token in tokens:
        if line and len(indent) + len(line) + 1 + len(token) > 116:
            lines.append(indent + line)
            line = token
        else:
            line = f"{line} {token}" if line else token
    return "\n".join([*lines, indent + line])


FLAG_TABLE_SCRIPTS = (
    "benchmark",
    "convert_checkpoint",
    "demo",
    "evaluate",
    "export_onnx",
    "finetune",
    "finetune_detection",
    "finetune_segmentation",
    "push_to_hub",
)


def render_flag_table(scripts_dir: Path | None = None) -> str:
    """The generated block of this file, from the parsers of `FLAG_TABLE_SCRIPTS` (imports the package)."""
    import transformers
    from transformers import HfArgumentParser, TrainingArguments

    scripts_dir = scripts_dir or Path(__file__).resolve().parents[1] / "scripts"
    trainer = set(_tokens(HfArgumentParser(TrainingArguments)))
    entries = []
    for name in FLAG_TABLE_SCRIPTS:
        if not (scripts_dir / f"{name}.py").is_file():
            continue
        tokens = set(_tokens(_parser_of(scripts_dir / f"{name}.py")))
        if trainer <= tokens:
            tokens = (tokens - trainer) | {_TRAINING_ARGUMENTS_MARK}
        entries.append(f'    "{name}": """\n{_wrapped(sorted(tokens))}\n""",')
    return "\n".join(
        [
            f"{_GENERATED_BEGIN.strip()}: `python -m modeling_pvt.cli` rewrites it from the scripts' parsers; `a_b+`",
            f"# is --a_b and --a-b; {_TRAINING_ARGUMENTS_MARK} stands for transformers' TrainingArguments flags.",
            f'FLAG_TABLE_TRANSFORMERS_VERSION = "{transformers.__version__}"',
            f'_TRAINING_ARGUMENTS_FLAGS = """\n{_wrapped(sorted(trainer))}\n"""',
            "_SCRIPT_FLAGS = {",
            *entries,
            "}",
            _GENERATED_END.strip(),
        ]
    )


def write_flag_table() -> Path:
    """Rewrites the generated block of this file in place."""
    path = Path(__file__)
    text = path.read_text(encoding="utf-8")
    start, end = text.index(_GENERATED_BEGIN) + 1, text.index(_GENERATED_END) + len(_GENERATED_END)
    path.write_text(text[:start] + render_flag_table() + "\n" + text[end:], encoding="utf-8")
    return path


# BEGIN GENERATED FLAG TABLE: `python -m modeling_pvt.cli` rewrites it from the scripts' parsers; `a_b+`
# is --a_b and --a-b; <TrainingArguments> stands for transformers' TrainingArguments flags.
FLAG_TABLE_TRANSFORMERS_VERSION = "5.25.0"
_TRAINING_ARGUMENTS_FLAGS = """
accelerator_config+ activation_checkpointing+ activation_checkpointing_kwargs+ adam_beta1+ adam_beta2+ adam_epsilon+
auto_find_batch_size+ average_tokens_across_devices+ batch_eval_metrics+ bf16 bf16_full_eval+ data_seed+
dataloader_drop_last+ dataloader_in_order+ dataloader_multiprocessing_context+ dataloader_num_workers+
dataloader_persistent_workers+ dataloader_pin_memory+ dataloader_prefetch_factor+ ddp_backend+
ddp_broadcast_buffers+ ddp_bucket_cap_mb+ ddp_find_unused_parameters+ ddp_static_graph+ ddp_timeout+ debug deepspeed
disable_tqdm+ do_eval+ do_predict+ do_train+ enable_jit_checkpoint+ eval_accumulation_steps+ eval_delay+
eval_do_concat_batches+ eval_on_start+ eval_steps+ eval_strategy+ eval_use_gather_object+ fp16 fp16_full_eval+ fsdp
fsdp_config+ full_determinism+ gradient_accumulation_steps+ gradient_checkpointing+ gradient_checkpointing_kwargs+
greater_is_better+ hub_always_push+ hub_model_id+ hub_private_repo+ hub_revision+ hub_strategy+ hub_token+
ignore_data_skip+ include_for_metrics+ include_num_input_tokens_seen+ label_names+ label_smoothing_factor+
learning_rate+ length_column_name+ liger_kernel_config+ load_best_model_at_end+ local_rank+ log_level+
log_level_replica+ log_on_each_node+ logging_first_step+ logging_nan_inf_filter+ logging_steps+ logging_strategy+
lr_scheduler_kwargs+ lr_scheduler_type+ max_grad_norm+ max_steps+ metric_for_best_model+ neftune_noise_alpha+
no_average_tokens_across_devices+ no_dataloader_in_order+ no_dataloader_pin_memory+ no_eval_do_concat_batches+
no_log_on_each_node+ no_logging_nan_inf_filter+ no_remove_unused_columns+ no_skip_memory_metrics+ num_train_epochs+
optim optim_args+ optim_target_modules+ output_dir+ parallelism_config+ per_device_eval_batch_size+
per_device_train_batch_size+ prediction_loss_only+ project push_to_hub+ remove_unused_columns+ report_to+
restore_callback_states_from_checkpoint+ resume_from_checkpoint+ run_name+ save_on_each_node+ save_only_model+
save_steps+ save_strategy+ save_total_limit+ seed skip_memory_metrics+ tf32 torch_compile+ torch_compile_backend+
torch_compile_mode+ torch_empty_cache_steps+ trackio_bucket_id+ trackio_space_id+ trackio_static_space_id+
train_sampling_strategy+ use_cache+ use_cpu+ use_liger_kernel+ warmup_steps+ weight_decay+
"""
_SCRIPT_FLAGS = {
    "benchmark": """
agreement-model allow-emulated-bf16 attention backbone-resolutions background-load background-load-seconds
batch-sizes config-overrides debug dense-batch-size detection-resolutions detection-training-resolutions device json
modes no-memory plot presets repeats resolutions segmentation-resolutions segmentation-training-resolutions tasks
threads warmup
""",
    "convert_checkpoint": """
checkpoint config debug labels max_shard_size num_labels output_dir overwrite repo_id task variant verify
""",
    "demo": """
debug host model port share
""",
    "evaluate": """
allow_skipped_files+ batch_size+ calibration_images+ dataset_config_name+ dataset_name+ do_reduce_labels+
eval_scale+ eval_split_name+ id2label_file+ image_column_name+ int8 label_column_name+ max_eval_samples+
model_name_or_path+ no_verify_images+ output_dir+ resolution size_divisor+ streaming train_dir+ train_split_name+
validation_dir+ verify_images+
""",
    "export_onnx": """
debug int8 tolerance
""",
    "finetune": """
<TrainingArguments> allow_skipped_files+ config_name+ cpu_keep_freed_memory+ cpu_threads+ crop_scale_min+
cutmix_alpha+ dataset_config_name+ dataset_name+ drop_path_rate+ eval_split_name+ horizontal_flip_probability+
ignore_mismatched_sizes+ image_column_name+ image_size+ label_column_name+ max_eval_samples+ max_train_samples+
mixup_alpha+ model_name_or_path+ no_cpu_keep_freed_memory+ no_verify_images+ overwrite_output_dir+
rand_augment_magnitude+ rand_augment_ops+ recipe streaming train_dir+ train_split_name+ validation_dir+
verify_images+
""",
    "finetune_detection": """
<TrainingArguments> allow_skipped_files+ config_name+ cpu_keep_freed_memory+ cpu_threads+ dataset_config_name+
dataset_name+ detection_head_hidden_size+ detection_head_num_convs+ drop_path_rate+ eval_scale+ eval_split_name+
horizontal_flip_probability+ id2label_file+ ignore_mismatched_sizes+ image_column_name+ image_size+
label_column_name+ lr_step_decay_at+ max_eval_samples+ max_train_samples+ model_name_or_path+
no_cpu_keep_freed_memory+ no_verify_images+ overwrite_output_dir+ recipe streaming train_dir+ train_ratio_range+
train_scale+ train_split_name+ validation_dir+ verify_images+ warmup_start_factor+
""",
    "finetune_segmentation": """
<TrainingArguments> allow_skipped_files+ cat_max_ratio+ config_name+ cpu_keep_freed_memory+ cpu_threads+ crop_size+
dataset_config_name+ dataset_name+ do_reduce_labels+ drop_path_rate+ eval_scale+ eval_split_name+
horizontal_flip_probability+ id2label_file+ ignore_mismatched_sizes+ image_column_name+ image_size+
label_column_name+ max_eval_samples+ max_train_samples+ model_name_or_path+ no_batch_eval_metrics+
no_cpu_keep_freed_memory+ no_verify_images+ overwrite_output_dir+ photometric_distortion+ recipe size_divisor+
streaming train_dir+ train_ratio_range+ train_scale+ train_split_name+ validation_dir+ verify_images+
""",
    "push_to_hub": """
commit-message,commit_message debug private revision space
""",
}
# END GENERATED FLAG TABLE


if __name__ == "__main__":
    print(f"wrote {write_flag_table()}")
