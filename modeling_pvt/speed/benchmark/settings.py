"""Benchmark settings and records: modes, tasks, the paper's figures, what one measurement holds."""

from dataclasses import dataclass, field

import torch

from ...cpu_fast_paths import OVERRIDE_VARIABLE

# Table 1 / Table 2 of the paper: parameters (millions) and GFLOPs (multiply-accumulates) at 224x224.
PAPER_PARAMS_M = {"pvt-tiny": 13.2, "pvt-small": 24.5, "pvt-medium": 44.2, "pvt-large": 61.4}


PAPER_GFLOPS = {"pvt-tiny": 1.9, "pvt-small": 3.8, "pvt-medium": 6.7, "pvt-large": 9.8}


MODES = (
    "native", "eager", "sdpa", "bf16", "compile", "compile-bf16", "checkpointed", "aten-linear", "onednn-linear",
    "int8", "int8-onnx", "int8-static",
)  # fmt: skip


# backbone: the encoder's feature maps (dense sizes); segmentation: backbone + Semantic FPN; detection: RetinaNet.
TASKS = (
    "inference", "training", "backbone", "segmentation", "segmentation-training", "detection", "detection-training",
)  # fmt: skip
SEGMENTATION_TASKS = ("segmentation", "segmentation-training")
DETECTION_TASKS = ("detection", "detection-training")


TRAINING_TASKS = ("training", "segmentation-training", "detection-training")


DENSE_TASKS = ("backbone", *SEGMENTATION_TASKS, *DETECTION_TASKS)


FORCED_LINEAR_BACKENDS = {"aten-linear": "aten", "onednn-linear": "onednn"}


# Training images that calibrate static int8 for the top-1 agreement.
CALIBRATION_IMAGES = 64


# ADE20K's classes: the head width of the segmentation benchmark.
SEGMENTATION_LABELS = 150
# COCO's classes: the head width of the detection benchmark (the paper's RetinaNet, 256 channels x 4 convs).
DETECTION_LABELS = 80


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
    # 800x1344: a 4:3 COCO image under the paper's test transform (fit 1333x800, padded to a multiple of 32);
    # 128x128: the detection default's canvases.
    detection_resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(800, 1344)])
    detection_training_resolutions: list[tuple[int, int]] = field(default_factory=lambda: [(128, 128)])
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


INT8_BACKENDS = {"int8": "torch", "int8-onnx": "onnxruntime"}


# Static int8 is the model with int8 layers, so it also runs the dense inference tasks.
STATIC_INT8 = "int8-static"
