"""Speed, memory and accuracy of this package's PVT against transformers' native PVT on identical weights.

Every comparison builds the native model first and loads its weights into ours through the one key table
(`convert_native_state_dict`), so both compute the same function. Within one setting (preset, task, batch size,
resolution) the variants are timed interleaved — one call of each in turn, repeated — so that machine noise hits them
alike; the reported time is the median over the repeats after the warm-up calls. CLI: `scripts/benchmark.py`.
"""

import argparse
import copy
import json
import os
import platform
import statistics
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
from .model_card import measure_model
from .modeling_pvt import PvtBackbone, PvtForImageClassification, convert_native_config, convert_native_state_dict

# Table 1 / Table 2 of the paper: parameters (millions) and GFLOPs (multiply-accumulates) at 224x224.
PAPER_PARAMS_M = {"pvt-tiny": 13.2, "pvt-small": 24.5, "pvt-medium": 44.2, "pvt-large": 61.4}
PAPER_GFLOPS = {"pvt-tiny": 1.9, "pvt-small": 3.8, "pvt-medium": 6.7, "pvt-large": 9.8}

MODES = ("native", "eager", "sdpa", "bf16", "compile", "compile-bf16", "checkpointed")
TASKS = ("inference", "training", "backbone")
# What each mode means; printed with the table and stored in the JSON.
MODE_DESCRIPTIONS = {
    "native": "transformers.PvtForImageClassification, fp32, eager",
    "eager": "ours, fp32, eager attention",
    "sdpa": "ours, fp32, scaled_dot_product_attention",
    "bf16": "ours, bfloat16 autocast (inference: bfloat16 weights)",
    "compile": "ours, fp32, torch.compile(fullgraph=True) (inference: inductor freezing)",
    "compile-bf16": "ours, torch.compile + bfloat16 (as in bf16)",
    "checkpointed": "ours, fp32, gradient checkpointing (training only)",
}


@dataclass
class BenchmarkSettings:
    presets: list[str] = field(default_factory=lambda: ["pvt-small"])
    tasks: list[str] = field(default_factory=lambda: ["inference", "training"])
    modes: list[str] = field(default_factory=lambda: ["native", "eager", "sdpa", "bf16"])
    batch_sizes: list[int] = field(default_factory=lambda: [8])
    resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(224, 224)])
    backbone_resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(512, 512), (800, 1333), (1024, 1024)])
    repeats: int = 7
    warmup: int = 2
    device: str = "cuda" if torch.cuda.is_available() else "cpu"
    measure_memory: bool = True
    agreement_model: str | None = None
    config_overrides: dict = field(default_factory=dict)
    # Attention of the bf16/compile/checkpointed modes; None: what our models use by default.
    attention: str | None = None
    seed: int = 0


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


def our_backbone(config: PvtConfig, state_dict: dict, attn_implementation: str) -> PvtBackbone:
    model = PvtBackbone._from_config(copy.deepcopy(config), attn_implementation=attn_implementation)
    model.load_state_dict(
        {key[len("pvt.") :]: value for key, value in state_dict.items() if key.startswith("pvt.encoder.")}
    )
    return model


# ---------------------------------------------------------------------------------------------------------- runners


@dataclass
class Runner:
    """One variant ready to time: `step()` runs one forward (inference) or forward+backward+AdamW step (training)
    on the setting's fixed input; `outputs()` gives what is compared with fp32 eager (logits or the last feature map)."""

    step: Callable[[], object]
    outputs: Callable[[], torch.Tensor]
    compile_seconds: float | None = None


def _autocast(device: str, enabled: bool):
    return torch.autocast(device_type=device, dtype=torch.bfloat16, enabled=enabled)


def _is_bf16(mode: str) -> bool:
    return mode in ("bf16", "compile-bf16")


def _is_compiled(mode: str) -> bool:
    return mode.startswith("compile")


def _default_attention() -> str:
    """The attention implementation our models get when none is asked for."""
    return PvtForImageClassification._from_config(
        PvtConfig(hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1])
    ).config._attn_implementation


def _model_for(mode: str, task: str, native, config, state_dict, attention: str | None = None):
    if mode == "native":
        return copy.deepcopy(native)
    attention = mode if mode in ("eager", "sdpa") else attention or _default_attention()
    build = our_backbone if task == "backbone" else our_classifier
    model = build(config, state_dict, attention)
    if mode == "checkpointed":
        model.activation_checkpointing_enable()
    return model


def _first_output(output) -> torch.Tensor:
    if hasattr(output, "logits"):
        return output.logits
    return output.feature_maps[-1]


def build_runner(
    mode: str, task: str, native, config, state_dict, pixel_values, labels, device: str, attention: str | None = None
) -> Runner:
    if mode == "checkpointed" and task != "training":
        raise ValueError("Gradient checkpointing only changes training; use it with --tasks training.")
    if mode == "native" and task == "backbone":
        raise ValueError("transformers' native PVT has no backbone class and only runs at its training resolution.")
    model = _model_for(mode, task, native, config, state_dict, attention).to(device)
    bf16 = _is_bf16(mode)

    if task == "training":
        model.train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        forward = torch.compile(model, fullgraph=True) if _is_compiled(mode) else model

        def train_step():
            with _autocast(device, bf16):
                logits = forward(pixel_values).logits
            loss = F.cross_entropy(logits.float(), labels)
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            return loss

        def training_outputs():
            with _autocast(device, bf16):
                return forward(pixel_values).logits.float()

        runner = Runner(train_step, training_outputs)
    else:
        model.eval()
        inputs = pixel_values
        if bf16:
            # bfloat16 weights instead of autocast: no per-call weight casts, and the oneDNN kernels run in bfloat16.
            model = model.to(torch.bfloat16)
            inputs = pixel_values.to(torch.bfloat16)
        forward = model
        if _is_compiled(mode):
            # Freezing folds the weights into the graph as constants (inference only), letting inductor prepack them.
            forward = torch.compile(model, fullgraph=True, options={"freezing": True})

        def inference_outputs():
            with torch.inference_mode():
                return _first_output(forward(inputs)).float()

        runner = Runner(inference_outputs, inference_outputs)

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


def time_interleaved(runners: dict[str, Runner], repeats: int, warmup: int, device: str) -> dict[str, list[float]]:
    for _ in range(warmup):
        for runner in runners.values():
            runner.step()
    _synchronize(device)
    seconds = {name: [] for name in runners}
    for _ in range(repeats):
        for name, runner in runners.items():
            started = time.perf_counter()
            runner.step()
            _synchronize(device)
            seconds[name].append(time.perf_counter() - started)
    return seconds


def measure_setting(
    preset: str, task: str, modes: list[str], batch_size: int, height: int, width: int, settings: BenchmarkSettings
) -> list[Measurement]:
    device = settings.device
    native, config, state_dict = paired_models(preset, settings.seed, **settings.config_overrides)
    generator = torch.Generator().manual_seed(settings.seed)
    pixel_values = torch.randn(batch_size, config.num_channels, height, width, generator=generator).to(device)
    labels = torch.randint(0, config.num_labels, (batch_size,), generator=generator).to(device)

    reference_model = _model_for("eager", task, native, config, state_dict).to(device).eval()
    with torch.no_grad():
        reference = _first_output(reference_model(pixel_values)).float()
    del reference_model

    runners = {
        mode: build_runner(mode, task, native, config, state_dict, pixel_values, labels, device, settings.attention)
        for mode in modes
    }
    differences = {mode: (runner.outputs() - reference).abs().max().item() for mode, runner in runners.items()}
    seconds = time_interleaved(runners, settings.repeats, settings.warmup, device)
    measurements = []
    for mode, runner in runners.items():
        median = statistics.median(seconds[mode])
        peak = peak_memory_bytes(runner.step, device) / 2**20 if settings.measure_memory else None
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
                compile_seconds=runner.compile_seconds,
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
    eval_split = load_digits_splits(image_size=max(config.image_height_width)).eval
    pixel_values = processor(images=list(eval_split["image"]), return_tensors="pt")["pixel_values"].to(device)
    labels = torch.tensor(list(eval_split["label"]))

    def predictions(mode):
        model = _model_for(mode, "inference", None, config, state_dict, settings.attention).to(device).eval()
        inputs = pixel_values
        if _is_bf16(mode):
            model, inputs = model.to(torch.bfloat16), pixel_values.to(torch.bfloat16)
        forward = torch.compile(model, fullgraph=True, options={"freezing": True}) if _is_compiled(mode) else model
        with torch.inference_mode():
            return torch.cat([forward(chunk).logits.float().argmax(-1).cpu() for chunk in inputs.split(64)])

    reference = predictions("eager")
    agreement = {
        mode: (predictions(mode) == reference).float().mean().item()
        for mode in modes
        if mode not in ("native", "eager", "checkpointed")
    }
    return {
        "model": str(model_dir),
        "eval_images": len(labels),
        "fp32_eager_accuracy": (reference == labels).float().mean().item(),
        "agreement_with_fp32_eager": agreement,
    }


# ---------------------------------------------------------------------------------------------------------- driving


def environment(settings: BenchmarkSettings) -> dict:
    device = settings.device
    info = {
        "device": device,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "default_attention": _default_attention(),
        "attention_of_other_modes": settings.attention or _default_attention(),
    }
    if device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
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


def run_benchmark(settings: BenchmarkSettings, progress: Callable[[str], None] = print) -> dict:
    unknown = (set(settings.modes) - set(MODES)) | (set(settings.tasks) - set(TASKS))
    if unknown:
        raise ValueError(
            f"Unknown modes/tasks {sorted(unknown)}; modes: {', '.join(MODES)}; tasks: {', '.join(TASKS)}."
        )
    results = {
        "environment": environment(settings),
        "settings": asdict(settings),
        "modes": {mode: MODE_DESCRIPTIONS[mode] for mode in settings.modes},
        "models": {},
        "measurements": [],
        "agreement": [],
    }
    for preset in settings.presets:
        results["models"][preset] = model_statistics(preset, settings)
        trained_size = PvtConfig(**{**PRESETS[preset], **settings.config_overrides}).image_height_width
        for task in settings.tasks:
            if task == "backbone":
                modes = [mode for mode in settings.modes if mode not in ("native", "checkpointed")]
                shapes = [(1, height, width) for height, width in settings.backbone_resolutions]
            else:
                modes = [mode for mode in settings.modes if mode != "checkpointed" or task == "training"]
                shapes = [(batch, h, w) for batch in settings.batch_sizes for h, w in settings.resolutions]
            for batch_size, height, width in shapes:
                if (height, width) != trained_size:
                    # The native model crashes at any size but the one its position embeddings were made for.
                    modes = [mode for mode in modes if mode != "native"]
                progress(f"{preset} {task} batch {batch_size} {height}x{width}: {', '.join(modes)}")
                measured = measure_setting(preset, task, modes, batch_size, height, width, settings)
                results["measurements"].extend(asdict(measurement) for measurement in measured)
    if settings.agreement_model:
        progress(f"top-1 agreement of {settings.agreement_model} on the held-out digits")
        results["agreement"].append(top1_agreement(settings.agreement_model, settings.modes, settings))
    return results


def _number(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def format_table(results: dict) -> str:
    """Markdown tables: model statistics, then one row per measured variant."""
    lines = [
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
            "| peak MB/img | max abs Δ vs fp32 eager |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["measurements"]:
        lines.append(
            f"| {row['preset']} | {row['task']} | {row['mode']} | {row['batch_size']} | {row['height']}×{row['width']} | "
            f"{row['images_per_second']:.2f} | {row['seconds_per_image'] * 1e3:.1f} | {_number(row['speedup_vs_native'])} | "
            f"{_number(row['best_speedup_vs_native'])} | "
            f"{_number(row['speedup_vs_eager'])} | {_number(row['peak_memory_mb_per_image'], 1)} | "
            f"{row['max_abs_diff_vs_fp32_eager']:.1e} |"
        )
    for agreement in results["agreement"]:
        shares = ", ".join(f"{mode} {share:.1%}" for mode, share in agreement["agreement_with_fp32_eager"].items())
        lines += [
            "",
            (
                f"Top-1 agreement with fp32 eager, {agreement['model']}, {agreement['eval_images']} held-out digits "
                f"(fp32 eager accuracy {agreement['fp32_eager_accuracy']:.1%}): {shares}"
            ),
        ]
    lines += ["", "Modes: " + "; ".join(f"{mode} = {text}" for mode, text in results["modes"].items())]
    lines += [f"Attention of bf16/compile/checkpointed: {results['environment']['attention_of_other_modes']}."]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in results["measurements"] if row["task"] != "backbone"]
    labels = [f"{row['preset']}\n{row['task']}\nb{row['batch_size']} {row['height']}" for row in rows]
    figure, axis = plt.subplots(figsize=(max(6, len(rows) * 0.6), 4))
    axis.bar(range(len(rows)), [row["images_per_second"] for row in rows])
    axis.set_xticks(range(len(rows)), [f"{row['mode']}\n{label}" for row, label in zip(rows, labels)], fontsize=6)
    axis.set_ylabel("images / second")
    axis.set_title(
        f"PVT throughput ({results['environment']['device']}, {results['environment']['torch_threads']} threads)"
    )
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
