"""The task-independent parts of a training run, shared by every fine-tuning script (image classification today,
semantic segmentation next): where a run writes and what it must never replace, which checkpoint it resumes from,
how many CPU threads it uses, whether freed memory stays with the process, and the summary it prints before it starts.

    output_dir = default_output_dir(model_label(model_name_or_path, config_name), data_label(source))
    check_output_dir(output_dir, overwrite, resume)            # before any data is read
    checkpoint = resolve_checkpoint(resume, output_dir)
    choice = choose_cpu_threads(setting, cores=..., image_pixels=..., total_steps=..., measure=...)
    print_run_summary({"data": ..., "output": ..., "threads": choice.describe(), "resume": describe_resume(...)})
"""

from __future__ import annotations

import ctypes
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers.trainer import TRAINER_STATE_NAME
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

from ..cli import missing_checkpoint_message, output_dir_is_a_file_message

OUTPUTS_ROOT = Path("outputs")
MODEL_SUBFOLDER = "model"  # the Hub-ready folder of a finished run; its config.json marks the run as finished
# Folder names that say which split a folder is, not what the data is: /data/imagenet/train -> "imagenet".
_SPLIT_FOLDER_NAMES = {"train", "training", "val", "valid", "validation", "test", "images", "data"}
AUTO_THREADS = "auto"
# Below this many optimizer steps a run is too short for a measurement to pay for itself.
MEASURE_MIN_STEPS = 50
# Up to this many pixels per image the tensors are too small to split across threads (the 32x32 digits: 1 thread).
SMALL_IMAGE_PIXELS = 64 * 64
MEASURED_STEPS = 2


# ------------------------------------------------------------------------------------------------- output folders


def _slug(text: str) -> str:
    return re.sub(r"[^\w.-]+", "-", text).strip("-.") or "run"


def model_label(model_name_or_path: str | None, config_name: str | None = None) -> str:
    """The model part of a run name: a checkpoint's name (a run's `<run>/model` folder is named after the run), else
    the architecture (a preset name or a config file's stem)."""
    if model_name_or_path:
        path = Path(model_name_or_path.rstrip("/"))
        return path.parent.name if path.name == MODEL_SUBFOLDER and path.parent.name else path.name
    return Path(config_name).stem if config_name else "pvt"


def data_label(source: str) -> str:
    """The data part of a run name: a dataset id's name, or a folder's name (its parent's for train/val folders)."""
    path = Path(source.rstrip("/"))
    if path.name.lower() in _SPLIT_FOLDER_NAMES and path.parent.name:
        return path.parent.name
    return path.name


def default_output_dir(model: str, data: str) -> Path:
    """outputs/<model>-<data>, e.g. outputs/pvt-tiny-sklearn-digits: two runs on different data or models never
    share a folder."""
    return OUTPUTS_ROOT / f"{_slug(model)}-{_slug(data)}"


def is_finished(output_dir: str | Path) -> bool:
    return (Path(output_dir) / MODEL_SUBFOLDER / "config.json").is_file()


def _checkpoints(output_dir: Path, complete_only: bool = True) -> list[Path]:
    found = [
        path
        for path in output_dir.glob(f"{PREFIX_CHECKPOINT_DIR}-*")
        if path.name.split("-")[-1].isdigit() and (not complete_only or (path / TRAINER_STATE_NAME).is_file())
    ]
    return sorted(found, key=lambda path: int(path.name.split("-")[-1]))


def check_output_dir(output_dir: str | Path, overwrite: bool, resume: str | None) -> None:
    """Raises `FileExistsError` (naming the ways out) when a run in `output_dir` would replace finished work: a
    finished model, or an unfinished run's checkpoints that this run neither resumes nor was told to overwrite."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise FileExistsError(output_dir_is_a_file_message(output_dir))
    if overwrite or not output_dir.is_dir():
        return
    if is_finished(output_dir):
        raise FileExistsError(
            f"{output_dir} already holds a finished model ({output_dir / MODEL_SUBFOLDER}); this run would replace "
            "it. Choose another folder with --output_dir, or replace it with --overwrite_output_dir true."
        )
    checkpoints = _checkpoints(output_dir, complete_only=False)
    if checkpoints and resume is None:
        raise FileExistsError(
            f"{output_dir} holds {len(checkpoints)} checkpoint(s) of an unfinished run (newest "
            f"{checkpoints[-1].name}). Continue it with --resume_from_checkpoint last, choose another --output_dir, "
            "or start over with --overwrite_output_dir true."
        )


# ---------------------------------------------------------------------------------------------------------- resume


def check_resume_checkpoint(resume_from_checkpoint: str | None, output_dir: str | Path) -> None:
    """Raises `FileNotFoundError` naming the checkpoints that exist (and `last`) when `--resume_from_checkpoint`
    is a path that does not exist; before any data is read. Whether it is complete is `resolve_checkpoint`'s."""
    if resume_from_checkpoint not in (None, "last") and not Path(resume_from_checkpoint).exists():
        raise FileNotFoundError(missing_checkpoint_message(resume_from_checkpoint, output_dir))


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
    complete = _checkpoints(Path(output_dir))
    return str(complete[-1]) if complete else None


def describe_resume(requested: str | None, checkpoint: str | None, output_dir: str | Path) -> str:
    if requested is None:
        return "no (a fresh run)"
    if checkpoint is None:
        return f"no complete checkpoint found in {output_dir}; training starts fresh"
    return f"from {checkpoint}"


# --------------------------------------------------------------------------------------------------------- threads


@dataclass
class ThreadChoice:
    threads: int | None  # None: PyTorch's default (all cores)
    reason: str

    def describe(self) -> str:
        count = "PyTorch's default" if self.threads is None else f"{self.threads}"
        return f"{count} ({self.reason})"


def available_cores() -> int:
    """CPU cores this process may use: the ones it is allowed to run on, shared among a launch's local processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return max(1, cores // max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))


def parse_thread_setting(setting: str | int) -> str | int:
    """`auto`, or a thread count (0 = PyTorch's default); anything else is refused with the accepted forms."""
    if str(setting).strip().lower() == AUTO_THREADS:
        return AUTO_THREADS
    try:
        threads = int(setting)
    except ValueError:
        threads = -1
    if threads < 0:
        raise ValueError(f"--cpu_threads {setting!r} is not valid. Pass auto, 0 (PyTorch's default) or a count >= 1.")
    return threads


def choose_cpu_threads(
    setting: str | int, *, cores: int, image_pixels: int, total_steps: int, measure: Callable[[int], float]
) -> ThreadChoice:
    """The PyTorch thread count for CPU training. `auto`: 1 on one core; for runs too short to measure, 1 for small
    images (their tensors are too small to split) and all cores otherwise; else the faster of 1 thread and all
    cores by `measure(threads)` (seconds per training step), because other load on the machine can make many
    threads much slower than one."""
    setting = parse_thread_setting(setting)
    if setting == 0:
        return ThreadChoice(None, "--cpu_threads 0")
    if setting != AUTO_THREADS:
        return ThreadChoice(setting, f"--cpu_threads {setting}")
    if cores == 1:
        return ThreadChoice(1, "one CPU core available")
    if total_steps < MEASURE_MIN_STEPS:
        small = image_pixels <= SMALL_IMAGE_PIXELS
        size = "small" if small else "large"
        return ThreadChoice(
            1 if small else cores,
            f"auto: {size} images ({image_pixels} pixels) and a run of {total_steps} steps, too short to measure",
        )
    one, many = measure(1), measure(cores)
    return ThreadChoice(
        1 if one <= many else cores,
        f"auto: measured {MEASURED_STEPS} training steps, 1 thread {one:.3f} s/step, {cores} threads {many:.3f} s/step",
    )


def time_training_steps(model: torch.nn.Module, inputs: dict, threads: int, steps: int = MEASURED_STEPS) -> float:
    """Seconds per forward + backward pass of `model(**inputs).loss` with `threads` threads (the fastest of `steps`,
    after one warm-up pass). The model's weights, gradients, mode and the random state are left as they were."""
    previous_threads, was_training = torch.get_num_threads(), model.training
    torch.set_num_threads(threads)
    model.train()
    seconds = []
    try:
        with torch.random.fork_rng(devices=[]):  # dropout / drop path must not shift the run's random stream
            for _ in range(steps + 1):
                start = time.perf_counter()
                model(**inputs).loss.backward()
                seconds.append(time.perf_counter() - start)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
        torch.set_num_threads(previous_threads)
    return min(seconds[1:])


# ----------------------------------------------------------------------------------------------------------- memory

# glibc's malloc gives back to the system every freed block above its mmap threshold (at most 32 MiB) and the heap's
# free top above its trim threshold, so the next step's activations page-fault in again, one fault per 4 KiB. A
# training process allocates the same sizes every step, so it keeps them: PVT-Small training steps at batch 8, 224²,
# ran 242 -> 194 ms/img (native transformers) and 217 -> 194 (ours) with these thresholds on a 2-core Xeon.
KEEP_FREED_BYTES = 2**30
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameters, malloc.h


def keep_freed_memory(keep: bool) -> str:
    """Raises glibc's mmap and trim thresholds to `KEEP_FREED_BYTES` for this process when `keep`; returns what the
    allocator now does, for the run summary. Elsewhere (another C library, another OS) nothing changes."""
    if not keep:
        return "returned to the system (glibc's default; --cpu_keep_freed_memory false)"
    try:
        libc = ctypes.CDLL(None)
        glibc = hasattr(libc, "gnu_get_libc_version") and hasattr(libc, "mallopt")
    except OSError:
        glibc = False
    if not glibc:
        return "this C library's default (only glibc's thresholds are changed)"
    if libc.mallopt(_M_MMAP_THRESHOLD, KEEP_FREED_BYTES) and libc.mallopt(_M_TRIM_THRESHOLD, KEEP_FREED_BYTES):
        return "kept for reuse (glibc mmap/trim thresholds 1 GiB; --cpu_keep_freed_memory false gives it back)"
    return "returned to the system (glibc refused the thresholds)"


# --------------------------------------------------------------------------------------------------------- summary


def print_run_summary(items: dict[str, str], prefix: str = "[run]") -> None:
    """One aligned `name  value` line per item, flushed: the first lines of a run's output."""
    width = max(len(name) for name in items)
    for name, value in items.items():
        print(f"{prefix} {name:<{width}}  {value}", flush=True)
