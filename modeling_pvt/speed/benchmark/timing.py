"""Timing and memory: interleaved repeats of each variant in its own process, background load, GEMM peak, FLOPs."""

import contextlib
import copy
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch.profiler import ProfilerActivity, profile

from ...checkpoints.model_card import measure_model
from ...configuration_pvt import PvtConfig
from ...cpu_fast_paths import OVERRIDE_VARIABLE, describe_cpu_fast_paths
from ...modeling_pvt import (
    PvtBackbone,
    PvtForImageClassification,
)
from .models import (
    Runner,
    build_runner,
    first_output,
    model_for,
    our_detector,
    our_segmenter,
    paired_models,
)
from .settings import (
    DENSE_TASKS,
    DETECTION_LABELS,
    DETECTION_TASKS,
    FORCED_LINEAR_BACKENDS,
    SEGMENTATION_LABELS,
    SEGMENTATION_TASKS,
    TRAINING_TASKS,
    BenchmarkSettings,
    Measurement,
)

# One busy core each. They stop on their own after the time cap or when the benchmark's process is gone (they are
# reparented then), so a killed benchmark cannot leave them spinning.
_BUSY_LOOP = """
import os, sys, time
parent, deadline = os.getppid(), time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and os.getppid() == parent:
    for _ in range(100_000):
        pass
"""


@contextlib.contextmanager
def background_load(processes: int, max_seconds: float = 3600.0):
    """Runs `processes` busy-looping Python processes for the duration of the `with` block (at most `max_seconds`),
    so that a benchmark can be measured on an oversubscribed machine reproducibly."""
    workers = [
        subprocess.Popen([sys.executable, "-c", _BUSY_LOOP, str(max_seconds)], stdin=subprocess.DEVNULL)
        for _ in range(processes)
    ]
    try:
        yield workers
    finally:
        for worker in workers:
            worker.terminate()
        for worker in workers:
            try:
                worker.wait(timeout=10)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()


def _synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def peak_memory_bytes(function: Callable[[], object], device: str) -> int:
    """Peak bytes allocated by `function` above what was live when it started.

    CUDA: the caching allocator's peak statistic. CPU: the allocations and frees that PyTorch's CPU allocator reports
    to `torch.profiler` (profile_memory=True), replayed in time order; this counts every tensor (activations,
    gradients, optimizer state, kernel workspaces allocated through PyTorch) but not memory a library allocates
    privately, and unlike peak RSS it does not include the interpreter or memory the allocator has not returned."""
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        function()
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - before
    with _quiet_kineto(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
        function()
    events = sorted(
        (event for event in profiler.profiler.kineto_results.events() if event.name() == "[memory]"),
        key=lambda event: event.start_ns(),
    )
    live = peak = 0
    for event in events:
        live += event.nbytes()
        peak = max(peak, live)
    return peak


# Kineto, torch.profiler's C++ core, prints `USDT: … profiler_start` / `profiler_stop` to stderr at its every start
# and stop whatever its log level, unless the level is above all of its severities (6); it reads the level once.
KINETO_LOG_LEVEL = "KINETO_LOG_LEVEL"
_KINETO_QUIET = "6"


@contextlib.contextmanager
def _quiet_kineto():
    """Kineto's start/stop lines off for the block, unless the user set KINETO_LOG_LEVEL."""
    if KINETO_LOG_LEVEL in os.environ:
        yield
        return
    os.environ[KINETO_LOG_LEVEL] = _KINETO_QUIET
    try:
        yield
    finally:
        os.environ.pop(KINETO_LOG_LEVEL, None)


def timed_step(runner: Runner, device: str) -> float:
    started = time.perf_counter()
    runner.step()
    _synchronize(device)
    return time.perf_counter() - started


def time_interleaved(timers: dict[str, Callable[[], float]], repeats: int, warmup: int) -> dict[str, list[float]]:
    """`timers[mode]()` runs one step of that variant and returns its seconds; one call of each in turn."""
    for _ in range(warmup):
        for timer in timers.values():
            timer()
    seconds = {name: [] for name in timers}
    for _ in range(repeats):
        for name, timer in timers.items():
            seconds[name].append(timer())
    return seconds


def forward_gflops(task: str, config: PvtConfig, height: int, width: int) -> float:
    """FLOPs (2 per multiply-add) of one image's forward pass at height x width, counted on a weightless copy."""
    with torch.device("meta"):
        if task in SEGMENTATION_TASKS:
            model = our_segmenter(config, {}, "eager", 0)
        elif task in DETECTION_TASKS:
            model = our_detector(config, {}, "eager", 0)
        else:
            model = (PvtBackbone if task in DENSE_TASKS else PvtForImageClassification)(copy.deepcopy(config))
    return measure_model(model, (height, width))["gflops"]


def measure_gemm_peak(size: int = 2048, repeats: int = 5) -> dict:
    """GFLOP/s of a square fp32 matmul (MKL) at the current thread count, best of `repeats`: what this machine's
    GEMM can reach, to put the models' achieved GFLOP/s in proportion."""
    generator = torch.Generator().manual_seed(0)
    left, right = (torch.randn(size, size, generator=generator) for _ in range(2))
    left.mm(right)
    best = min(_seconds(lambda: left.mm(right)) for _ in range(repeats))
    return {"gemm_size": size, "gemm_fp32_gflops_per_second": 2 * size**3 / best / 1e9}


def _seconds(function: Callable[[], object]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


@dataclass(frozen=True)
class Setting:
    """One benchmark setting: everything a variant's process needs to rebuild the same models and inputs."""

    preset: str
    task: str
    batch_size: int
    height: int
    width: int
    overrides: dict
    device: str
    attention: str | None
    seed: int


def setting_models_and_inputs(setting: Setting):
    """(native, config, state_dict, pixel_values, labels), identical in every process for one setting."""
    native, config, state_dict = paired_models(setting.preset, setting.seed, **setting.overrides)
    generator = torch.Generator().manual_seed(setting.seed)
    shape = (setting.batch_size, config.num_channels, setting.height, setting.width)
    pixel_values = torch.randn(shape, generator=generator).to(setting.device)
    if setting.task == "detection-training":
        return native, config, state_dict, pixel_values, synthetic_boxes(setting, generator)
    if setting.task == "segmentation-training":
        label_shape, num_labels = (setting.batch_size, setting.height, setting.width), SEGMENTATION_LABELS
    else:
        label_shape, num_labels = (setting.batch_size,), config.num_labels
    labels = torch.randint(0, num_labels, label_shape, generator=generator).to(setting.device)
    return native, config, state_dict, pixel_values, labels


def synthetic_boxes(setting: Setting, generator: torch.Generator, boxes_per_image: int = 3) -> list[dict]:
    """Seeded boxes (x0, y0, x1, y1 inside the image, sides at least an eighth of it) and COCO classes per image."""
    labels = []
    for _ in range(setting.batch_size):
        corners = torch.rand(boxes_per_image, 2, generator=generator) * 0.5
        sides = 0.125 + torch.rand(boxes_per_image, 2, generator=generator) * 0.375
        scale = torch.tensor([setting.width, setting.height], dtype=torch.float32)
        boxes = torch.cat([corners * scale, (corners + sides) * scale], dim=1)
        classes = torch.randint(0, DETECTION_LABELS, (boxes_per_image,), generator=generator)
        labels.append({"class_labels": classes.to(setting.device), "boxes": boxes.to(setting.device)})
    return labels


def _variant_process(mode: str, threads: int, connection) -> None:
    """A variant's own process: builds its runner for each setting it is sent and answers timing/memory requests."""
    torch.set_num_threads(threads)
    if mode in FORCED_LINEAR_BACKENDS:
        # For the whole process, so that its reported fast paths say what it ran.
        os.environ[OVERRIDE_VARIABLE] = FORCED_LINEAR_BACKENDS[mode]
    runner, device = None, None
    while True:
        request, argument = connection.recv()
        try:
            if request == "stop":
                return
            if request == "build":
                runner = None
                setting: Setting = argument
                native, config, state_dict, pixel_values, labels = setting_models_and_inputs(setting)
                device = setting.device
                runner = build_runner(
                    mode, setting.task, native, config, state_dict, pixel_values, labels, device,
                    setting.attention, setting.seed,
                )  # fmt: skip
                outputs = runner.outputs()
                fast_paths = describe_cpu_fast_paths().splitlines()[-1] if device == "cpu" else None
                reply = (None if outputs is None else outputs.cpu(), runner.compile_seconds, fast_paths)
            elif request == "step":
                reply = timed_step(runner, device)
            else:  # "memory"
                reply = peak_memory_bytes(runner.step, device)
        except Exception as error:  # noqa: BLE001 - sent to the parent, which raises it with the variant's name
            connection.send(("error", f"{type(error).__name__}: {error}"))
        else:
            connection.send(("ok", reply))


class VariantFailed(ValueError):
    """What a variant's process raised (an impossible mode for the setting, a missing package), as one message: its
    traceback stays in that process."""


def _process_context():
    """Fresh processes (never a fork of this one: its OpenMP threads do not survive a fork). Where available, they
    are forked from a server that imported this module once, instead of each importing torch and transformers."""
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    return context


class VariantProcesses:
    """One process per mode for the whole benchmark (started once: importing torch and transformers takes seconds);
    each keeps only the current setting's model."""

    def __init__(self, modes: list[str]):
        context = _process_context()
        self.connections, self.processes = {}, {}
        for mode in modes:
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=_variant_process, args=(mode, torch.get_num_threads(), child_end), daemon=True
            )
            process.start()
            self.connections[mode], self.processes[mode] = parent_end, process

    def request(self, mode: str, request: str, argument=None):
        """Sends `request` ("build" a Setting, "step", "memory") to the mode's process and waits for its reply."""
        try:
            self.connections[mode].send((request, argument))
            status, reply = self.connections[mode].recv()
        except (EOFError, BrokenPipeError):
            raise RuntimeError(f"The process of the {mode!r} variant died (out of memory?).") from None
        if status == "error":
            raise VariantFailed(f"The {mode} variant failed: {reply}")
        return reply

    def close(self) -> None:
        for mode, process in self.processes.items():
            if process.is_alive():
                with contextlib.suppress(OSError):
                    self.connections[mode].send(("stop", None))
            process.join(timeout=30)
            if process.is_alive():
                process.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def measure_setting(
    preset: str,
    task: str,
    modes: list[str],
    batch_size: int,
    height: int,
    width: int,
    settings: BenchmarkSettings,
    variants: VariantProcesses,
) -> list[Measurement]:
    overrides = dict(settings.config_overrides)
    if task == "backbone" and "native" in modes:
        # transformers' PvtModel only runs at its config's image_size: build both models for this (square) size.
        overrides["image_size"] = height
    setting = Setting(
        preset, task, batch_size, height, width, overrides, settings.device, settings.attention, settings.seed
    )
    native, config, state_dict, pixel_values, _ = setting_models_and_inputs(setting)
    reference_model = model_for("eager", task, native, config, state_dict, seed=setting.seed).eval()
    with torch.no_grad():
        reference = first_output(reference_model.to(setting.device)(pixel_values)).float().cpu()
    del native, state_dict, reference_model

    differences, compile_seconds, fast_paths = {}, {}, {}
    # One at a time: a process times its linear backends when it builds, which must not overlap with other work.
    for mode in modes:
        outputs, compile_seconds[mode], fast_paths[mode] = variants.request(mode, "build", setting)
        differences[mode] = None if outputs is None else (outputs - reference).abs().max().item()
    gflops = forward_gflops(task, config, height, width)
    timers = {mode: (lambda mode=mode: variants.request(mode, "step")) for mode in modes}
    seconds = time_interleaved(timers, settings.repeats, settings.warmup)
    measurements = []
    for mode in modes:
        median = statistics.median(seconds[mode])
        # onnxruntime allocates outside PyTorch's allocator, which is what the memory measurement sees.
        measured_memory = settings.measure_memory and mode != "int8-onnx"
        peak = variants.request(mode, "memory") / 2**20 if measured_memory else None
        measurements.append(
            Measurement(
                preset=preset,
                task=task,
                mode=mode,
                batch_size=batch_size,
                height=height,
                width=width,
                median_seconds=median,
                images_per_second=batch_size / median,
                seconds_per_image=median / batch_size,
                repeat_seconds=seconds[mode],
                peak_memory_mb=peak,
                peak_memory_mb_per_image=None if peak is None else peak / batch_size,
                max_abs_diff_vs_fp32_eager=differences[mode],
                compile_seconds=compile_seconds[mode],
                fast_paths=fast_paths[mode],
                gflops_per_image=gflops,
                achieved_gflops_per_second=gflops * (3 if task in TRAINING_TASKS else 1) * batch_size / median,
            )
        )
    for measurement in measurements:
        for baseline_mode, attribute in (("native", "speedup_vs_native"), ("eager", "speedup_vs_eager")):
            if baseline_mode in seconds:
                setattr(measurement, attribute, statistics.median(seconds[baseline_mode]) / measurement.median_seconds)
        if "native" in seconds:
            measurement.best_speedup_vs_native = min(seconds["native"]) / min(measurement.repeat_seconds)
    return measurements
