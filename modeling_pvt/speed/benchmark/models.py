"""The models each benchmark mode runs (native and ours on identical weights) and the step functions it times."""

import contextlib
import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
import transformers

from ...configuration_pvt import PRESETS, PvtConfig
from ...cpu_fast_paths import OVERRIDE_VARIABLE
from ...modeling_pvt import (
    PvtBackbone,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    convert_native_config,
    convert_native_state_dict,
)
from ...modeling_pvt_detection import PvtForObjectDetection
from .settings import (
    DENSE_TASKS,
    DETECTION_LABELS,
    DETECTION_TASKS,
    FORCED_LINEAR_BACKENDS,
    INT8_BACKENDS,
    SEGMENTATION_LABELS,
    SEGMENTATION_TASKS,
    STATIC_INT8,
    TRAINING_TASKS,
)


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


def our_detector(config: PvtConfig, state_dict: dict, attn_implementation: str, seed: int) -> PvtForObjectDetection:
    """The paper's RetinaNet (80 classes) on the benchmark's backbone weights; neck and head random (seeded)."""
    torch.manual_seed(seed)
    config = copy.deepcopy(config)
    config.num_labels = DETECTION_LABELS
    model = PvtForObjectDetection._from_config(config, attn_implementation=attn_implementation)
    model.load_state_dict(_encoder_weights(state_dict, model), strict=False)
    return model


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


def is_bf16(mode: str) -> bool:
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


def default_attention() -> str:
    """The attention implementation our models get when none is asked for."""
    return PvtForImageClassification._from_config(
        PvtConfig(hidden_sizes=[8, 8, 8, 8], num_attention_heads=[1, 1, 1, 1])
    ).config._attn_implementation


def model_for(mode: str, task: str, native, config, state_dict, attention: str | None = None, seed: int = 0):
    if mode == "native":
        return copy.deepcopy(native.pvt if task in DENSE_TASKS else native)
    attention = mode if mode in ("eager", "sdpa") else attention or default_attention()
    if task == "backbone":
        model = our_backbone(config, state_dict, attention)
    elif task in SEGMENTATION_TASKS:
        model = our_segmenter(config, state_dict, attention, seed)
    elif task in DETECTION_TASKS:
        model = our_detector(config, state_dict, attention, seed)
    else:
        model = our_classifier(config, state_dict, attention)
    if mode == "checkpointed":
        model.activation_checkpointing_enable()
    return model


def first_output(output) -> torch.Tensor:
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
        from ..quantization import quantize_onednn

        model = quantize_onednn(model, calibration_pixel_values)
    elif mode in INT8_BACKENDS:
        from ..quantization import int8_classifier

        return int8_classifier(model, INT8_BACKENDS[mode])
    model = model.to(device).eval()
    dtype = torch.float32
    if is_bf16(mode):
        # bfloat16 weights instead of autocast: no per-call weight casts, and the oneDNN kernels run in bfloat16.
        model, dtype = model.to(torch.bfloat16), torch.bfloat16
    forward = model
    if _is_compiled(mode):
        # Freezing folds the weights into the graph as constants (inference only), letting inductor prepack them.
        forward = torch.compile(model, fullgraph=True, options={"freezing": True})

    def run(pixel_values: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), _linear_backend_of(mode):
            return first_output(forward(pixel_values.to(dtype))).float()

    return run


def _training_loss(task: str, model, pixel_values, labels) -> torch.Tensor:
    if task == "training":
        return F.cross_entropy(model(pixel_values).logits.float(), labels)
    if isinstance(model, (PvtForSemanticSegmentation, PvtForObjectDetection)):
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
    if mode == "native" and task in (*SEGMENTATION_TASKS, *DETECTION_TASKS):
        raise ValueError(f"transformers has no PVT model for {task}; compare the backbone task instead.")
    model = model_for(mode, task, native, config, state_dict, attention, seed)
    bf16 = is_bf16(mode)
    comparable = mode != "native" or task not in DENSE_TASKS

    if task in TRAINING_TASKS:
        model.to(device).train()
        # Fused, as Trainer's default optimizer (adamw_torch_fused) runs it: the for-loop AdamW is one kernel per
        # tensor and per operation (a fifth of a PVT-Small fp32 step on an AMD EPYC, 2 threads).
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
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
                    return first_output(forward(pixel_values)).float()
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
