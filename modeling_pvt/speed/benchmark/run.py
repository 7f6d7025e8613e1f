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
import json
import os
import platform
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch
import transformers

from ...checkpoints.model_card import measure_model
from ...cli import DEBUG_HELP
from ...configuration_pvt import PRESETS, PvtConfig
from ...cpu_fast_paths import describe_cpu_fast_paths, detect_cpu_capabilities
from ...modeling_pvt import (
    PvtForImageClassification,
    convert_native_config,
)
from .models import (
    default_attention,
    inference_function,
    is_bf16,
    model_for,
    native_config,
)
from .report import format_table, plot
from .settings import (
    CALIBRATION_IMAGES,
    DENSE_TASKS,
    DETECTION_TASKS,
    INT8_BACKENDS,
    MODE_DESCRIPTIONS,
    MODES,
    PAPER_GFLOPS,
    PAPER_PARAMS_M,
    SEGMENTATION_TASKS,
    STATIC_INT8,
    TASKS,
    TRAINING_TASKS,
    BenchmarkSettings,
)
from .timing import (
    VariantProcesses,
    background_load,
    measure_gemm_peak,
    measure_setting,
)

# --------------------------------------------------------------------------------------------------------- accuracy


def top1_agreement(model_dir: str, modes: list[str], settings: BenchmarkSettings) -> dict:
    """Top-1 agreement of each fast inference path with our fp32 eager model on real images: the held-out split of
    scikit-learn's digits (the fine-tuning data), classified by a model fine-tuned on them (`scripts/finetune.py`).
    A trained model is needed: with random weights the top logits are near-ties that any rounding reorders."""
    from ...data.digits import load_digits_splits
    from ...image_processing_pvt import PvtImageProcessor

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
        model = model_for(mode, "inference", None, config, state_dict, settings.attention)
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
        "default_attention": default_attention(),
        "attention_of_other_modes": settings.attention or default_attention(),
        "background_load_processes": settings.background_load,
        "segmentation_model": "PvtForSemanticSegmentation",
        "detection_model": "PvtForObjectDetection (RetinaNet, 80 classes)",
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
    if task in (*SEGMENTATION_TASKS, *DETECTION_TASKS) or (task == "backbone" and height != width):
        excluded.add("native")
    elif task not in DENSE_TASKS and (height, width) != trained_size:
        excluded.add("native")
    return [mode for mode in modes if mode not in excluded]


def _shapes_for(task: str, settings: BenchmarkSettings) -> list[tuple[int, int, int]]:
    resolutions = {
        "backbone": settings.backbone_resolutions,
        "segmentation": settings.segmentation_resolutions,
        "segmentation-training": settings.segmentation_training_resolutions,
        "detection": settings.detection_resolutions,
        "detection-training": settings.detection_training_resolutions,
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
    if emulated_bf16 and not settings.allow_emulated_bf16 and any(is_bf16(mode) for mode in modes):
        modes = [mode for mode in modes if not is_bf16(mode)]
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
    parser.add_argument(
        "--detection-resolutions", nargs="+", type=_resolution, default=defaults.detection_resolutions
    )
    parser.add_argument(
        "--detection-training-resolutions",
        nargs="+",
        type=_resolution,
        default=defaults.detection_training_resolutions,
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
        detection_resolutions=args.detection_resolutions,
        detection_training_resolutions=args.detection_training_resolutions,
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
