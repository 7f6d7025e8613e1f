"""Speed, memory and accuracy of this package's PVT against transformers' native PVT on identical weights.

Every comparison builds the native model first and loads its weights into ours through the one key table
(`convert_native_state_dict`), so both compute the same function. Each variant (mode) runs in a process of its own, as
a user's model would: in one shared process the variants disturb each other through the C allocator's heap (our
PVT-Small inference at batch 8 took 68 ms/img next to the native model, 58 next to another variant of ours). Within
one setting (preset, task, batch size, resolution) the variants are still timed interleaved, one call of each in turn
while the others idle, so that machine noise hits them alike; the reported time is the median over the repeats after
the warm-up calls. CLI: `scripts/benchmark.py`.
"""

import argparse
import contextlib
import copy
import json
import multiprocessing
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
import transformers
from torch.profiler import ProfilerActivity, profile

from .cli import DEBUG_HELP
from .configuration_pvt import PRESETS, PvtConfig
from .cpu_fast_paths import OVERRIDE_VARIABLE, describe_cpu_fast_paths, detect_cpu_capabilities
from .model_card import measure_model
from .modeling_pvt import (
    PvtBackbone,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    convert_native_config,
    convert_native_state_dict,
)

# Table 1 / Table 2 of the paper: parameters (millions) and GFLOPs (multiply-accumulates) at 224x224.
PAPER_PARAMS_M = {"pvt-tiny": 13.2, "pvt-small": 24.5, "pvt-medium": 44.2, "pvt-large": 61.4}
PAPER_GFLOPS = {"pvt-tiny": 1.9, "pvt-small": 3.8, "pvt-medium": 6.7, "pvt-large": 9.8}

MODES = (
    "native", "eager", "sdpa", "bf16", "compile", "compile-bf16", "checkpointed", "aten-linear", "onednn-linear",
    "int8", "int8-onnx", "int8-static",
)  # fmt: skip
# backbone: the encoder's feature maps (dense sizes); segmentation: backbone + Semantic FPN.
TASKS = ("inference", "training", "backbone", "segmentation", "segmentation-training")
TRAINING_TASKS = ("training", "segmentation-training")
DENSE_TASKS = ("backbone", "segmentation", "segmentation-training")
INT8_BACKENDS = {"int8": "torch", "int8-onnx": "onnxruntime"}
# Static int8 is the model with int8 layers, so it also runs the dense inference tasks.
STATIC_INT8 = "int8-static"
FORCED_LINEAR_BACKENDS = {"aten-linear": "aten", "onednn-linear": "onednn"}
# Training images that calibrate static int8 for the top-1 agreement.
CALIBRATION_IMAGES = 64
# ADE20K's classes: the head width of the segmentation benchmark.
SEGMENTATION_LABELS = 150
# What each mode means; printed with the table and stored in the JSON.
MODE_DESCRIPTIONS = {
    "native": "transformers.PvtForImageClassification, fp32, eager",
    "eager": "ours, fp32, eager attention",
    "sdpa": "ours, fp32, scaled_dot_product_attention",
    "bf16": "ours, bfloat16 autocast (inference: bfloat16 weights)",
    "compile": "ours, fp32, torch.compile(fullgraph=True) (inference: inductor freezing)",
    "compile-bf16": "ours, torch.compile + bfloat16 (as in bf16)",
    "checkpointed": "ours, fp32, gradient checkpointing (training only)",
    "aten-linear": f"ours, fp32, linear layers forced to ATen/MKL F.linear ({OVERRIDE_VARIABLE}=aten)",
    "onednn-linear": f"ours, fp32, linear layers forced to oneDNN ({OVERRIDE_VARIABLE}=onednn)",
    "int8": "ours, dynamic int8 linear layers, torch.ao quantize_dynamic (inference only)",
    "int8-onnx": "ours exported to ONNX, dynamic int8 MatMuls, onnxruntime quantize_dynamic (inference only)",
    "int8-static": "ours, static int8 on oneDNN (block linears, strided convs, Semantic FPN convs), ranges calibrated "
    "on sample images (inference only)",
}


@dataclass
class BenchmarkSettings:
    presets: list[str] = field(default_factory=lambda: ["pvt-small"])
    tasks: list[str] = field(default_factory=lambda: ["inference", "training"])
    modes: list[str] = field(default_factory=lambda: ["native", "eager", "sdpa", "bf16"])
    batch_sizes: list[int] = field(default_factory=lambda: [8])
    resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224)])
    backbone_resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224), (512, 512), (1024, 1024)])
    # 512x683: ADE20K's test size (short side 512).
    segmentation_resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512), (512, 683)])
    segmentation_training_resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512)])
    dense_batch_size: int = 1
    repeats: int = 7
    warmup: int = 2
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    measure_memory: bool = True
    agreement_model: str | None = None
    config_overrides: dict = field(default_factory=dict)
    # Attention of the bf16/compile/checkpointed modes; None: what our models use by default.
    attention: str | None = None
    seed: int = 0
    # Busy processes running during the measurements (contention), and their time cap in seconds.
    background_load: int = 0
    background_load_seconds: float = 3600.0
    # bf16 modes are dropped on CPUs that only emulate bf16, unless asked for (to show what emulation costs).
    allow_emulated_bf16: bool = False
    measure_gemm_peak: bool = True


@dataclass
class Measurement:
    preset: str
    task: str
    mode: str
    batch_size: int
    height: int
    width: int
    median_seconds: float
    images_per_second: float
    seconds_per_image: float
    repeat_seconds: list[float]
    peak_memory_mb: float | None
    peak_memory_mb_per_image: float | None
    max_abs_diff_vs_fp32_eager: float | None
    speedup_vs_native: float | None = None
    speedup_vs_eager: float | None = None
    # From the fastest repeat of each: on a shared machine, noise only ever adds time, so this is the ratio least
    # disturbed by other processes; the median-based ratios above are the headline numbers.
    best_speedup_vs_native: float | None = None
    compile_seconds: float | None = None
    # Forward FLOPs of one image (FlopCounterMode: matmuls and convolutions), and the rate achieved; training counts
    # 3x the forward FLOPs (forward, input and weight gradients).
    gflops_per_image: float | None = None
    achieved_gflops_per_second: float | None = None
    # The linear backends the variant's own process chose (the training choice is measured in each process).
    fast_paths: str | None = None


# ----------------------------------------------------------------------------------------------------------- models


def native_config(preset: str, **overrides) -> transformers.PvtConfig:
    dimensions = {**PRESETS[preset], **overrides}
    return transformers.PvtConfig(
        hidden_sizes=dimensions["hidden_sizes"],
        depths=dimensions["depths"],
        num_attention_heads=dimensions["num_attention_heads"],
        mlp_ratios=dimensions["mlp_ratios"],
        sequence_reduction_ratios=dimensions["sr_ratios"],
        patch_sizes=dimensions["patch_sizes"],
        strides=dimensions["patch_sizes"],
        num_labels=dimensions.get("num_labels", 1000),
        image_size=dimensions.get("image_size", 224),
    )


def paired_models(preset: str, seed: int = 0, **overrides):
    """transformers' native PVT (random init from `seed`) and our config + state dict holding the same weights."""
    torch.manual_seed(seed)
    native = transformers.PvtForImageClassification(native_config(preset, **overrides))
    config = PvtConfig(**convert_native_config(native.config.to_dict()))
    state_dict = PvtForImageClassification._to_own_layout(convert_native_state_dict(native.state_dict()))
    return native, config, state_dict


def our_classifier(config: PvtConfig, state_dict: dict, attn_implementation: str) -> PvtForImageClassification:
    # A copy each: `_from_config` keeps the config object, and the attention choice is stored on it.
    model = PvtForImageClassification._from_config(copy.deepcopy(config), attn_implementation=attn_implementation)
    model.load_state_dict(state_dict)
    return model


def _encoder_weights(state_dict: dict, model) -> dict:
    """The classifier's encoder weights that `model` has (dense models have no CLS token)."""
    own = model.state_dict()
    return {key[len("pvt.") :]: value for key, value in state_dict.items() if key[len("pvt.") :] in own}


def our_backbone(config: PvtConfig, state_dict: dict, attn_implementation: str) -> PvtBackbone:
    model = PvtBackbone._from_config(copy.deepcopy(config), attn_implementation=attn_implementation)
    model.load_state_dict(_encoder_weights(state_dict, model))
    return model


def our_segmenter(
    config: PvtConfig, state_dict: dict, attn_implementation: str, seed: int
) -> PvtForSemanticSegmentation:
    """The paper's Semantic FPN on the benchmark's backbone weights; the neck and head are random (seeded, so every
    variant of one setting gets the same ones and their outputs can be compared)."""
    torch.manual_seed(seed)
    config = copy.deepcopy(config)
    config.num_labels = SEGMENTATION_LABELS
    model = PvtForSemanticSegmentation._from_config(config, attn_implementation=attn_implementation)
    model.load_state_dict(_encoder_weights(state_dict, model), strict=False)
    return model


# ------------------------------------------------------------------------------------------------- background load

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


# ---------------------------------------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One variant ready to time: `step()` runs one forward (inference) or forward+backward+AdamW step (training)
    on the setting's fixed input; `outputs()` gives what is compared with fp32 eager (logits or the last feature map;
    None where it is not the same function, e.g. native's last hidden state against our backbone's feature map)."""

    step: Callable[[], object]
    outputs: Callable[[], torch.Tensor | None]
    compile_seconds: float | None = None


def _autocast(device: str, enabled: bool):
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


def _is_bf16(mode: str) -> bool:
    return mode in ("bf16", "compile-bf16")


def _is_compiled(mode: str) -> bool:
    return mode.startswith("compile")


@contextlib.contextmanager
def _linear_backend_of(mode: str):
    """The linear backend a forced mode asks for, set only while that variant runs (fast_linear reads it per call)."""
    backend = FORCED_LINEAR_BACKENDS.get(mode)
    previous = os.environ.get(OVERRIDE_VARIABLE)
    if backend:
        os.environ[OVERRIDE_VARIABLE] = backend
    try:
        yield
    finally:
        if backend and previous is None:
            os.environ.pop(OVERRIDE_VARIABLE, None)
        elif backend:
            os.environ[OVERRIDE_VARIABLE] = previous


def _default_attention() -> str:
    """The attention implementation our models get when none is asked for."""
    return PvtForImageClassification._from_config(
        PvtConfig(hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1])
    ).config._attn_implementation


def _model_for(mode: str, task: str, native, config, state_dict, attention: str | None = None, seed: int = 0):
    if mode == "native":
        return copy.deepcopy(native.pvt if task in DENSE_TASKS else native)
    attention = mode if mode in ("eager", "sdpa") else attention or _default_attention()
    if task == "backbone":
        model = our_backbone(config, state_dict, attention)
    elif task in ("segmentation", "segmentation-training"):
        model = our_segmenter(config, state_dict, attention, seed)
    else:
        model = our_classifier(config, state_dict, attention)
    if mode == "checkpointed":
        model.activation_checkpointing_enable()
    return model


def _first_output(output) -> torch.Tensor:
    if hasattr(output, "logits"):
        return output.logits
    if hasattr(output, "feature_maps"):
        return output.feature_maps[-1]
    return output.last_hidden_state  # transformers' PvtModel


def inference_function(
    mode: str, model, device: str, calibration_pixel_values: torch.Tensor | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`pixel_values -> fp32 logits (or last feature map)` of `model` run as `mode` runs it; shared by the timing and
    the top-1 agreement, so that both measure the same thing. `calibration_pixel_values`: for static int8."""
    if mode == STATIC_INT8:
        from .quantization import quantize_onednn

        model = quantize_onednn(model, calibration_pixel_values)
    elif mode in INT8_BACKENDS:
        from .quantization import int8_classifier

        return int8_classifier(model, INT8_BACKENDS[mode])
    model = model.to(device).eval()
    dtype = torch.float32
    if _is_bf16(mode):
        # bfloat16 weights instead of autocast: no per-call weight casts, and the oneDNN kernels run in bfloat16.
        model, dtype = model.to(torch.bfloat16), torch.bfloat16
    forward = model
    if _is_compiled(mode):
        # Freezing folds the weights into the graph as constants (inference only), letting inductor prepack them.
        forward = torch.compile(model, fullgraph=True, options={"freezing": True})

    def run(pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _linear_backend_of(mode):
            return _first_output(forward(pixel_values.to(dtype))).float()

    return run


def _training_loss(task: str, model, pixel_values, labels) -> torch.Tensor:
    if task == "training":
        return F.cross_entropy(model(pixel_values).logits.float(), labels)
    if isinstance(model, PvtForSemanticSegmentation):
        return model(pixel_values, labels=labels).loss
    # A backbone alone (ours, or native's PvtModel): a loss touching every feature map.
    output = model(pixel_values)
    maps = output.feature_maps if hasattr(output, "feature_maps") else (output.last_hidden_state,)
    return sum(feature_map.float().mean() for feature_map in maps)


def build_runner(
    mode: str,
    task: str,
    native,
    config,
    state_dict,
    pixel_values,
    labels,
    device: str,
    attention: str | None = None,
    seed: int = 0,
) -> Runner:
    if mode == "checkpointed" and task not in TRAINING_TASKS:
        raise ValueError("Gradient checkpointing only changes training; use it with --tasks training.")
    if mode in INT8_BACKENDS and task != "inference":
        raise ValueError(f"{mode} is an inference path for the classifier; use it with --tasks inference.")
    if mode == STATIC_INT8 and task in TRAINING_TASKS:
        raise ValueError(f"{mode} is an inference path; use it with the inference, backbone or segmentation tasks.")
    if mode == "native" and task in ("segmentation", "segmentation-training"):
        raise ValueError("transformers has no PVT segmentation model; compare the backbone task instead.")
    model = _model_for(mode, task, native, config, state_dict, attention, seed)
    bf16 = _is_bf16(mode)
    comparable = mode != "native" or task not in DENSE_TASKS

    if task in TRAINING_TASKS:
        model.to(device).train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        forward = torch.compile(model, fullgraph=True) if _is_compiled(mode) else model

        def train_step():
            with _autocast(device, bf16), _linear_backend_of(mode):
                loss = _training_loss(task, forward, pixel_values, labels)
                loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        def training_outputs():
            # In eval mode: dropout and BatchNorm's batch statistics would make every variant's output differ.
            model.eval()
            try:
                with torch.no_grad(), _autocast(device, bf16), _linear_backend_of(mode):
                    return _first_output(forward(pixel_values)).float()
            finally:
                model.train()

        runner = Runner(train_step, training_outputs if comparable else lambda: None)
    else:
        # Timing does not depend on the calibrated ranges: the input itself calibrates.
        run = inference_function(mode, model, device, calibration_pixel_values=pixel_values)
        runner = Runner(lambda: run(pixel_values), (lambda: run(pixel_values)) if comparable else lambda: None)

    if _is_compiled(mode):
        started = time.perf_counter()
        runner.outputs()
        runner.compile_seconds = time.perf_counter() - started
    return runner


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
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as profiler:
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
        if task in ("segmentation", "segmentation-training"):
            model = our_segmenter(config, {}, "eager", 0)
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
    if setting.task == "segmentation-training":
        label_shape, num_labels = (setting.batch_size, setting.height, setting.width), SEGMENTATION_LABELS
    else:
        label_shape, num_labels = (setting.batch_size,), config.num_labels
    labels = torch.randint(0, num_labels, label_shape, generator=generator).to(setting.device)
    return native, config, state_dict, pixel_values, labels


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
    reference_model = _model_for("eager", task, native, config, state_dict, seed=setting.seed).eval()
    with torch.no_grad():
        reference = _first_output(reference_model.to(setting.device)(pixel_values)).float().cpu()
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


# --------------------------------------------------------------------------------------------------------- accuracy


def top1_agreement(model_dir: str, modes: list[str], settings: BenchmarkSettings) -> dict:
    """Top-1 agreement of each fast inference path with our fp32 eager model on real images: the held-out split of
    scikit-learn's digits (the fine-tuning data), classified by a model fine-tuned on them (`scripts/finetune.py`).
    A trained model is needed: with random weights the top logits are near-ties that any rounding reorders."""
    from .data import load_digits_splits
    from .image_processing_pvt import PvtImageProcessor

    device = settings.device
    trained = PvtForImageClassification.from_pretrained(model_dir)
    config, state_dict = trained.config, trained.state_dict()
    processor = PvtImageProcessor.from_pretrained(model_dir)
    splits = load_digits_splits(image_size=max(config.image_height_width))
    pixel_values = processor(images=list(splits.eval["image"]), return_tensors="pt")["pixel_values"].to(device)
    labels = torch.tensor(list(splits.eval["label"]))
    # Static int8 is calibrated on training images, never on the held-out ones it is scored on.
    calibration_images = list(splits.train.select(range(CALIBRATION_IMAGES))["image"])
    calibration = processor(images=calibration_images, return_tensors="pt")["pixel_values"].to(device)

    def probabilities(mode):
        model = _model_for(mode, "inference", None, config, state_dict, settings.attention)
        run = inference_function(mode, model, device, calibration_pixel_values=calibration)
        return torch.cat([run(chunk).float().softmax(-1).cpu() for chunk in pixel_values.split(64)])

    reference = probabilities("eager")
    agreement, probability_error = {}, {}
    for mode in modes:
        if mode in ("native", "eager", "checkpointed"):
            continue
        probs = probabilities(mode)
        agreement[mode] = (probs.argmax(-1) == reference.argmax(-1)).float().mean().item()
        probability_error[mode] = (probs - reference).abs().max().item()
    return {
        "model": str(model_dir),
        "eval_images": len(labels),
        "calibration_images": CALIBRATION_IMAGES,
        "fp32_eager_accuracy": (reference.argmax(-1) == labels).float().mean().item(),
        "agreement_with_fp32_eager": agreement,
        "max_probability_error_vs_fp32_eager": probability_error,
    }


# ---------------------------------------------------------------------------------------------------------- driving


def environment(settings: BenchmarkSettings) -> dict:
    device = settings.device
    info = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": detect_cpu_capabilities().summary(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "(unset: OpenMP runtime default)"),
        "cpu_fast_paths": describe_cpu_fast_paths() if device == "cpu" else None,
        "default_attention": _default_attention(),
        "attention_of_other_modes": settings.attention or _default_attention(),
        "background_load_processes": settings.background_load,
        "segmentation_model": "PvtForSemanticSegmentation",
        "gpu": torch.cuda.get_device_name() if device == "cuda" else "none available in this run",
    }
    if settings.measure_gemm_peak and device == "cpu":
        info.update(measure_gemm_peak())
    return info


def model_statistics(preset: str, settings: BenchmarkSettings) -> dict:
    config = PvtConfig(**convert_native_config(native_config(preset, **settings.config_overrides).to_dict()))
    # The model cards' counter: FlopCounterMode on a weightless copy, so nothing is allocated or run for real.
    with torch.device("meta"):
        model = PvtForImageClassification(config)
    measured = measure_model(model, config.image_height_width)
    return {
        "parameters_m": measured["params"] / 1e6,
        # The paper's numbers describe the presets as published, not a preset with overridden dimensions.
        "paper_parameters_m": None if settings.config_overrides else PAPER_PARAMS_M.get(preset),
        "gflops_per_image": measured["gflops"],
        "gmacs_per_image": measured["gmacs"],
        "paper_gflops": None if settings.config_overrides else PAPER_GFLOPS.get(preset),
        "flop_counter": "torch.utils.flop_counter.FlopCounterMode, 1 image at the config's image_size, eager attention",
    }


def _modes_for(task: str, modes: list[str], height: int, width: int, trained_size: tuple[int, int]) -> list[str]:
    """The requested modes that can run this task at this size."""
    excluded = set()
    if task not in TRAINING_TASKS:
        excluded.add("checkpointed")
    if task != "inference":
        excluded |= set(INT8_BACKENDS)
    if task in TRAINING_TASKS:
        excluded.add(STATIC_INT8)
    # The native model crashes at any size but the one its position embeddings were made for; as a backbone it is
    # built for the size (square only: its config has one image_size), and it has no segmentation model.
    if task in ("segmentation", "segmentation-training") or (task == "backbone" and height != width):
        excluded.add("native")
    elif task not in DENSE_TASKS and (height, width) != trained_size:
        excluded.add("native")
    return [mode for mode in modes if mode not in excluded]


def _shapes_for(task: str, settings: BenchmarkSettings) -> list[tuple[int, int, int]]:
    resolutions = {
        "backbone": settings.backbone_resolutions,
        "segmentation": settings.segmentation_resolutions,
        "segmentation-training": settings.segmentation_training_resolutions,
    }.get(task)
    if resolutions is not None:
        return [(settings.dense_batch_size, height, width) for height, width in resolutions]
    return [(batch, height, width) for batch in settings.batch_sizes for height, width in settings.resolutions]


def run_benchmark(settings: BenchmarkSettings, progress: Callable[[str], None] = print) -> dict:
    unknown = (set(settings.modes) - set(MODES)) | (set(settings.tasks) - set(TASKS))
    if unknown:
        raise ValueError(
            f"Unknown modes/tasks {sorted(unknown)}; modes: {', '.join(MODES)}; tasks: {', '.join(TASKS)}."
        )
    try:
        torch.empty(0, device=settings.device)
    except (RuntimeError, AssertionError) as error:
        raise ValueError(f"--device {settings.device} is not usable here ({error}); use --device cpu.") from None
    modes, notes = list(settings.modes), []
    emulated_bf16 = settings.device == "cpu" and not detect_cpu_capabilities().native_bf16
    if emulated_bf16 and not settings.allow_emulated_bf16 and any(_is_bf16(mode) for mode in modes):
        modes = [mode for mode in modes if not _is_bf16(mode)]
        notes.append("bf16 modes skipped: this CPU has no native bf16 (oneDNN would emulate it, slower than fp32).")
    timed_modes = modes if settings.tasks else []
    with background_load(settings.background_load, settings.background_load_seconds), VariantProcesses(
        timed_modes
    ) as variants:
        results = {
            "environment": environment(settings),
            "settings": asdict(settings),
            "modes": {mode: MODE_DESCRIPTIONS[mode] for mode in modes},
            "notes": notes,
            "models": {},
            "measurements": [],
            "agreement": [],
        }
        progress(results["environment"]["cpu_fast_paths"] or f"device: {settings.device}")
        for preset in settings.presets:
            results["models"][preset] = model_statistics(preset, settings)
            trained_size = PvtConfig(**{**PRESETS[preset], **settings.config_overrides}).image_height_width
            for task in settings.tasks:
                for batch_size, height, width in _shapes_for(task, settings):
                    task_modes = _modes_for(task, modes, height, width, trained_size)
                    progress(f"{preset} {task} batch {batch_size} {height}x{width}: {', '.join(task_modes)}")
                    measured = measure_setting(
                        preset, task, task_modes, batch_size, height, width, settings, variants
                    )
                    results["measurements"].extend(asdict(measurement) for measurement in measured)
        if settings.agreement_model:
            progress(f"top-1 agreement of {settings.agreement_model} on the held-out digits")
            results["agreement"].append(top1_agreement(settings.agreement_model, modes, settings))
    return results


def _number(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _scientific(value) -> str:
    return "–" if value is None else f"{value:.1e}"


def _other_fast_paths(results: dict) -> list[str]:
    """Variants whose process ran other fast paths than this one reports: forced modes, or another outcome of the
    training backend's measurement."""
    chosen = (results["environment"]["cpu_fast_paths"] or "").splitlines()[-1:]
    return sorted({
        f"{row['mode']} ({row['task']}) ran with: {row['fast_paths']}"
        for row in results["measurements"]
        if row["fast_paths"] and row["mode"] != "native" and [row["fast_paths"]] != chosen
    })  # fmt: skip


def format_table(results: dict) -> str:
    """Markdown tables: model statistics, then one row per measured variant."""
    environment = results["environment"]
    peak = environment.get("gemm_fp32_gflops_per_second")
    lines = [
        f"CPU: {environment['cpu']}; {environment['torch_threads']} threads; GPU: {environment['gpu']}; "
        f"background load: {environment['background_load_processes']} busy processes; "
        f"OMP_WAIT_POLICY: {environment['omp_wait_policy']}",
        *([environment["cpu_fast_paths"].splitlines()[-1]] if environment["cpu_fast_paths"] else []),
        *_other_fast_paths(results),
        *([f"Measured GEMM peak (fp32 {environment['gemm_size']}³ matmul): {peak:.0f} GFLOP/s"] if peak else []),
        *results["notes"],
        "",
        "| preset | params (M) | paper params (M) | GFLOPs (MACs) at 224² | paper GFLOPs |",
        "|---|---|---|---|---|",
    ]
    for preset, stats in results["models"].items():
        lines.append(
            f"| {preset} | {stats['parameters_m']:.1f} | {_number(stats['paper_parameters_m'], 1)} | "
            f"{stats['gmacs_per_image']:.3g} | {_number(stats['paper_gflops'], 1)} |"
        )
    lines += [
        "",
        (
            "| preset | task | mode | batch | size | img/s | ms/img | × native | × native (best) | × our eager "
            "| peak MB/img | max abs Δ vs fp32 eager | GFLOP/s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["measurements"]:
        lines.append(
            f"| {row['preset']} | {row['task']} | {row['mode']} | {row['batch_size']} | {row['height']}×{row['width']} | "
            f"{row['images_per_second']:.2f} | {row['seconds_per_image'] * 1e3:.1f} | {_number(row['speedup_vs_native'])} | "
            f"{_number(row['best_speedup_vs_native'])} | "
            f"{_number(row['speedup_vs_eager'])} | {_number(row['peak_memory_mb_per_image'], 1)} | "
            f"{_scientific(row['max_abs_diff_vs_fp32_eager'])} | "
            f"{_number(row['achieved_gflops_per_second'], 1)} |"
        )
    for agreement in results["agreement"]:
        errors = agreement["max_probability_error_vs_fp32_eager"]
        shares = ", ".join(
            f"{mode} {share:.1%} (max |Δp| {errors[mode]:.1e})"
            for mode, share in agreement["agreement_with_fp32_eager"].items()
        )
        lines += [
            "",
            (
                f"Top-1 agreement with fp32 eager, {agreement['model']}, {agreement['eval_images']} held-out digits "
                f"(fp32 eager accuracy {agreement['fp32_eager_accuracy']:.1%}; int8-static calibrated on "
                f"{agreement['calibration_images']} training images): {shares}"
            ),
        ]
    lines += ["", "Modes: " + "; ".join(f"{mode} = {text}" for mode, text in results["modes"].items())]
    lines += [f"Attention of bf16/compile/checkpointed: {environment['attention_of_other_modes']}."]
    lines += [
        f"Dense tasks: {environment['segmentation_model']} for segmentation; native rows of the backbone task are "
        "transformers.PvtModel built for that (square) size, compared by time only. GFLOP/s: FlopCounterMode "
        "forward FLOPs (x3 for training) per second."
    ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in results["measurements"] if row["task"] != "backbone"]
    labels = [f"{row['preset']}\n{row['task']}\nb{row['batch_size']} {row['height']}" for row in rows]
    figure, axis = plt.subplots(figsize=(max(6, len(rows) * 0.75), 4.5))
    axis.bar(range(len(rows)), [row["images_per_second"] for row in rows])
    axis.set_xticks(range(len(rows)), [f"{row['mode']}\n{label}" for row, label in zip(rows, labels)], fontsize=6)
    axis.set_ylabel("images / second")
    environment = results["environment"]
    # A throughput figure means nothing without the machine it came from.
    machine = environment["cpu"] if environment["device"] == "cpu" else environment["gpu"]
    axis.set_title(f"PVT throughput: {machine}, {environment['torch_threads']} threads", fontsize=8, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _resolution(text: str) -> tuple[int, int]:
    height, _, width = text.lower().partition("x")
    return int(height), int(width or height)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default in --help, and the module docstring's examples kept as written."""


DEFAULT_JSON = Path("outputs") / "benchmark" / "benchmark.json"


def parse_args(argv: list[str] | None = None) -> tuple[BenchmarkSettings, argparse.Namespace]:
    defaults = BenchmarkSettings()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--presets", nargs="+", default=defaults.presets, choices=list(PRESETS), help="architectures")
    parser.add_argument("--tasks", nargs="*", default=defaults.tasks, choices=TASKS, help="none: only statistics")
    parser.add_argument("--modes", nargs="+", default=defaults.modes, choices=MODES, help="variants to time")
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=defaults.batch_sizes, help="images per call")
    parser.add_argument(
        "--resolutions", nargs="+", type=_resolution, default=defaults.resolutions, help="e.g. 224 or 800x1333"
    )
    parser.add_argument(
        "--backbone-resolutions",
        nargs="+",
        type=_resolution,
        default=defaults.backbone_resolutions,
        help="input sizes of the backbone task",
    )
    parser.add_argument(
        "--segmentation-resolutions", nargs="+", type=_resolution, default=defaults.segmentation_resolutions
    )
    parser.add_argument(
        "--segmentation-training-resolutions",
        nargs="+",
        type=_resolution,
        default=defaults.segmentation_training_resolutions,
    )
    parser.add_argument("--dense-batch-size", type=int, default=defaults.dense_batch_size, help="of the dense tasks")
    parser.add_argument(
        "--background-load",
        type=int,
        default=0,
        metavar="N",
        help="run N busy processes during the measurements (contention); they stop with the benchmark",
    )
    parser.add_argument(
        "--background-load-seconds",
        type=float,
        default=defaults.background_load_seconds,
        help="time cap of the busy processes, in case the benchmark cannot stop them",
    )
    parser.add_argument(
        "--allow-emulated-bf16", action="store_true", help="measure bf16 modes even where the CPU only emulates bf16"
    )
    parser.add_argument(
        "--repeats", type=int, default=defaults.repeats, help="timed calls per variant (median reported)"
    )
    parser.add_argument("--warmup", type=int, default=defaults.warmup, help="untimed calls per variant first")
    parser.add_argument("--device", default=defaults.device, help="torch device")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads; unset: PyTorch's choice (all cores)")
    parser.add_argument(
        "--attention",
        choices=("eager", "sdpa"),
        help="attention of the bf16/compile/checkpointed modes; unset: our models' default",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the (profiled) peak-memory call")
    parser.add_argument(
        "--agreement-model", help="a classifier fine-tuned on the digits: top-1 agreement of each mode with fp32 eager"
    )
    parser.add_argument(
        "--config-overrides", type=json.loads, default={}, help="JSON, e.g. '{\"hidden_sizes\": [8, 16, 32, 64]}'"
    )
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON, help="where to write the results")
    parser.add_argument("--plot", type=Path, help="also write a PNG bar chart here")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    settings = BenchmarkSettings(
        presets=args.presets,
        tasks=args.tasks,
        modes=args.modes,
        batch_sizes=args.batch_sizes,
        resolutions=args.resolutions,
        backbone_resolutions=args.backbone_resolutions,
        segmentation_resolutions=args.segmentation_resolutions,
        segmentation_training_resolutions=args.segmentation_training_resolutions,
        dense_batch_size=args.dense_batch_size,
        background_load=args.background_load,
        background_load_seconds=args.background_load_seconds,
        allow_emulated_bf16=args.allow_emulated_bf16,
        repeats=args.repeats,
        warmup=args.warmup,
        device=args.device,
        measure_memory=not args.no_memory,
        agreement_model=args.agreement_model,
        config_overrides=args.config_overrides,
        attention=args.attention,
    )
    return settings, args


def main(argv: list[str] | None = None) -> dict:
    settings, args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    results = run_benchmark(settings)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    print(format_table(results))
    print(f"\nJSON: {args.json}")
    if args.plot:
        print(f"Plot: {plot(results, args.plot)}")
    return results
