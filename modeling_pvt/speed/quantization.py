"""Int8 inference for CPUs without native bfloat16 (VNNI/AMX-int8 CPUs run int8 dot products natively). Three backends
behind one function, all with int8 weights per output channel and uint8 activations:
- "onednn" (the fastest): static quantization. Activation ranges are calibrated once on sample images; then every
  block's linear layers, the attention's reduction convs and the later stages' patch-embedding convs run oneDNN's
  int8 kernels. Quantization is fused where the data already passes: each LayerNorm writes uint8 for the layers
  after it, and `fc1` applies the GELU and writes the MLP's wide hidden activation as uint8 for `fc2` (a quarter of
  the largest tensor's memory traffic, and no quantization pass). The Semantic FPN's convolutions run int8 too
  (BatchNorm folded, ReLU fused). Attention, the normalisations, the first patch embedding, the classification head
  and the segmentation classifier stay fp32.
- "torch": PyTorch's dynamic `quantize_dynamic` of the linear layers (activation ranges measured per call).
- "onnxruntime": ONNX Runtime's dynamic `quantize_dynamic` of the MatMuls in the exported ONNX file."""

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from ..cpu_fast_paths import detect_cpu_capabilities
from ..data.sources import DataError
from ..modeling_pvt import (
    PvtBlock,
    PvtConvBatchNormRelu,
    PvtForImageClassification,
    PvtFpnNeck,
    PvtMlp,
    PvtPatchEmbeddings,
)
from .export import INPUT_NAME, OUTPUT_NAME, export_onnx, quantize_onnx

BACKENDS = ("onednn", "torch", "onnxruntime")
HAS_ONEDNN_INT8 = torch.backends.mkldnn.is_available() and hasattr(torch.ops.onednn, "qlinear_pointwise")
# Images run through the fp32 model per calibration call: enough to see each activation's range, little memory.
CALIBRATION_BATCH_SIZE = 16


def uint8_quantization(low: float, high: float) -> tuple[float, int]:
    """(scale, zero point) mapping [low, high], widened to include 0, onto 0..255."""
    low, high = min(low, 0.0), max(high, 0.0)
    scale = max((high - low) / 255, 1e-8)
    return scale, min(255, max(0, round(-low / scale)))


def quantize_uint8(values: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """round(values / scale) + zero_point, clamped to 0..255, as uint8 (ties round up)."""
    # Three passes over the tensor, as fast as the deprecated torch.quantize_per_tensor + int_repr: scale and shift by
    # zero_point + 0.5 in one op, clamp, and let the conversion to uint8 truncate (which rounds, the values being >= 0).
    shifted = torch.add(torch.tensor(zero_point + 0.5), values, alpha=1 / scale)
    return shifted.clamp_(0, 255.4).to(torch.uint8)


def int8_weight_levels() -> int:
    """The largest |int8 weight|: 127 where oneDNN multiplies int8 with VNNI/AMX (or Arm dot products), 63 elsewhere.
    Without VNNI its u8 x s8 products are summed in pairs into int16, which saturates unless the weights are 7-bit
    (measured with ONEDNN_MAX_CPU_ISA=AVX2: 255 x 127 summed over 64 inputs came out as 8256 instead of 16320)."""
    # detect_cpu_capabilities counts oneDNN's ISA cap, which can hide VNNI from it on a CPU that has it.
    return 127 if detect_cpu_capabilities().int8_dot_product else 63


def _int8_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(int8 weight, fp32 scale per output channel), symmetric: each channel's largest |w| maps to the top level."""
    levels = int8_weight_levels()
    weight = weight.detach().float()
    scales = (weight.flatten(1).abs().amax(1) / levels).clamp_min(1e-12)
    int8_weight = (weight / scales.view(-1, *[1] * (weight.ndim - 1))).round_().clamp_(-levels, levels)
    return int8_weight.to(torch.int8), scales


class _Int8Layer(nn.Module):
    """What oneDNN's int8 linear and convolution kernels share: int8 weights per output channel, uint8 inputs with a
    calibrated per-tensor scale, fp32 bias and accumulation. Inputs that are already uint8 (quantized for this layer
    by the layer before) are used as they are. Built from a float layer, not saved: the packed weights are opaque."""

    def __init__(self, layer: nn.Module, input_range: tuple[float, float]):
        super().__init__()
        self.input_scale, self.input_zero_point = uint8_quantization(*input_range)
        int8_weight, self.weight_scales = _int8_weight(layer.weight)
        self.weight_shape = tuple(int8_weight.shape)
        # An opaque oneDNN tensor in the kernel's blocked layout.
        self.packed_weight = self.pack(int8_weight, layer)
        self.weight_zero_points = torch.zeros(len(self.weight_scales), dtype=torch.int64)
        self.bias = None if layer.bias is None else layer.bias.detach().float().clone()

    def pack(self, int8_weight: torch.Tensor, layer: nn.Module) -> torch.Tensor:
        raise NotImplementedError

    @property
    def input_quantization(self) -> tuple[float, int, torch.dtype]:
        return self.input_scale, self.input_zero_point, torch.uint8

    def quantize(self, values: torch.Tensor) -> torch.Tensor:
        if values.dtype == torch.uint8:
            return values
        return quantize_uint8(values, self.input_scale, self.input_zero_point)

    def extra_repr(self) -> str:
        return f"weight={self.weight_shape}, input_scale={self.input_scale:.3g}"


class Int8Linear(_Int8Layer):
    """An `nn.Linear` on oneDNN's int8 kernel; fp32 output unless `output_quantization` (scale, zero point, uint8)
    asks for the next layer's input, and optionally the exact GELU fused."""

    def __init__(self, linear: nn.Linear, input_range: tuple[float, float]):
        super().__init__(linear, input_range)
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def pack(self, int8_weight: torch.Tensor, layer: nn.Linear) -> torch.Tensor:
        return torch.ops.onednn.qlinear_prepack(int8_weight, None)

    def forward(self, hidden_states: torch.Tensor, gelu: bool = False, output_quantization=None) -> torch.Tensor:
        output_scale, output_zero_point, output_dtype = output_quantization or (1.0, 0, torch.float32)
        return torch.ops.onednn.qlinear_pointwise(
            self.quantize(hidden_states), self.input_scale, self.input_zero_point, self.packed_weight,
            self.weight_scales, self.weight_zero_points, self.bias, output_scale, output_zero_point, output_dtype,
            "gelu" if gelu else "none", [], "none" if gelu else "",
        )  # fmt: skip


def _geometry(conv: nn.Conv2d) -> list:
    return [list(conv.stride), list(conv.padding), list(conv.dilation), conv.groups]


class Int8Conv2d(_Int8Layer):
    """An `nn.Conv2d` (numeric zero padding) on oneDNN's int8 kernel, reading its input channels-last (as the token
    sequences already are), fp32 output; `relu` fuses a ReLU after it."""

    def __init__(self, conv: nn.Conv2d, input_range: tuple[float, float], relu: bool = False):
        if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError(f"Int8Conv2d needs numeric zero padding, not {conv.padding!r}/{conv.padding_mode}.")
        super().__init__(conv, input_range)
        self.geometry = _geometry(conv)
        self.post_op = "relu" if relu else "none"

    def pack(self, int8_weight: torch.Tensor, layer: nn.Conv2d) -> torch.Tensor:
        return torch.ops.onednn.qconv_prepack(
            int8_weight, self.weight_scales, self.input_scale, self.input_zero_point, *_geometry(layer), None
        )

    def forward(self, feature_map: torch.Tensor) -> torch.Tensor:
        feature_map = self.quantize(feature_map.contiguous(memory_format=torch.channels_last))
        return torch.ops.onednn.qconv2d_pointwise(
            feature_map, self.input_scale, self.input_zero_point, self.packed_weight, self.weight_scales,
            self.weight_zero_points, self.bias, *self.geometry, 1.0, 0, torch.float32, self.post_op, [], "",
        )  # fmt: skip


# Without int8 dot products oneDNN runs int8 matmuls on its older GEMM, which accumulates the whole int32 product in
# a scratch buffer before the GELU and requantization: on oneDNN capped to AVX2, PVT-Small's stage-1 MLP (batch 8,
# 224², 12.8 MB of uint8 hidden activation) took 47 ms whole and 27 ms in 2 MiB row chunks (fp32: 48 ms); with VNNI
# the whole MLP is fastest.
INT8_GEMM_CHUNKING_BYTES = 4 * 2**20
INT8_GEMM_CHUNK_BYTES = 2 * 2**20


class Int8Mlp(PvtMlp):
    """PvtMlp with Int8Linear layers: `fc1` applies the exact GELU and writes its output already quantized for `fc2`.
    Row chunking is inherited, in smaller chunks where oneDNN has no int8 dot products; it measures the hidden
    activation in uint8 bytes, as it is stored here."""

    def __init__(self, mlp: PvtMlp, ranges: dict[str, tuple[float, float]]):
        nn.Module.__init__(self)
        self.fc1 = Int8Linear(mlp.fc1, ranges["fc1"])
        self.fc2 = Int8Linear(mlp.fc2, ranges["fc2"])
        self.act, self.drop, self.exact_gelu = mlp.act, mlp.drop, mlp.exact_gelu

    def chunk_sizes(self) -> tuple[int, int]:
        if detect_cpu_capabilities().int8_dot_product:
            return super().chunk_sizes()
        return INT8_GEMM_CHUNKING_BYTES, INT8_GEMM_CHUNK_BYTES

    def unchunked_forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if self.exact_gelu:
            return self.fc2(self.fc1(hidden_states, gelu=True, output_quantization=self.fc2.input_quantization))
        return self.fc2(self.act(self.fc1(hidden_states)))


class QuantizingLayerNorm(nn.Module):
    """A LayerNorm whose output is quantized to uint8 for the int8 layers that read it: the quantization's scale and
    shift are folded into the norm's own affine weights, leaving one clamp and the conversion."""

    def __init__(self, norm: nn.LayerNorm, quantization: tuple[float, int, torch.dtype]):
        super().__init__()
        scale, zero_point, _ = quantization
        self.normalized_shape, self.eps = norm.normalized_shape, norm.eps
        # + 0.5: the conversion to uint8 truncates, which rounds the non-negative values to nearest.
        self.weight = norm.weight.detach().float() / scale
        self.bias = norm.bias.detach().float() / scale + (zero_point + 0.5)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        shifted = F.layer_norm(hidden_states, self.normalized_shape, self.weight, self.bias, self.eps)
        return shifted.clamp_(0, 255.4).to(torch.uint8)


def _quantize_block(block: PvtBlock, ranges: dict[str, tuple[float, float]]) -> None:
    """Replaces `block`'s layers in place. Each LayerNorm writes uint8 for the layers after it: `norm1` for `q`, the
    reduction conv `sr` and, where there is no reduction, `kv` (all read that one tensor, so they share its range);
    `norm2` for `fc1`."""
    attention = block.attn
    attention.q = Int8Linear(attention.q, ranges["attn.q"])
    attention.kv = Int8Linear(attention.kv, ranges["attn.q" if attention.sr_ratio == 1 else "attn.kv"])
    attention.proj = Int8Linear(attention.proj, ranges["attn.proj"])
    if attention.sr_ratio > 1:
        attention.sr = Int8Conv2d(attention.sr, ranges["attn.q"])
    block.mlp = Int8Mlp(block.mlp, {"fc1": ranges["mlp.fc1"], "fc2": ranges["mlp.fc2"]})
    block.norm1 = QuantizingLayerNorm(block.norm1, attention.q.input_quantization)
    block.norm2 = QuantizingLayerNorm(block.norm2, block.mlp.fc1.input_quantization)


def _quantized_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The layers int8 replaces, by qualified name: every linear layer in the encoder's blocks, the patch embeddings'
    convolutions after the first stage (the first reads the pixels, whose precision uint8 would cut), and the Semantic
    FPN's convolutions but its classifier. The attention's reduction convs read what `q` reads, so they are calibrated
    with it. The classification head and the segmentation classifier stay fp32."""
    layers = {}
    for name, module in model.named_modules():
        if isinstance(module, PvtBlock):
            linears = {inner: layer for inner, layer in module.named_modules() if type(layer) is nn.Linear}
            layers.update({f"{name}.{inner}": layer for inner, layer in linears.items()})
        elif isinstance(module, PvtPatchEmbeddings) and module.proj.in_channels != model.config.num_channels:
            layers[f"{name}.proj"] = module.proj
        elif isinstance(module, PvtFpnNeck):
            convs = {inner: conv for inner, conv in module.named_modules() if type(conv) is nn.Conv2d}
            layers.update({f"{name}.{inner}": conv for inner, conv in convs.items()})
        elif isinstance(module, PvtConvBatchNormRelu):
            layers[f"{name}.conv"] = module.conv
    return layers


def calibration_batches(pixel_values: torch.Tensor | Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """Calibration images as fp32 batches: one tensor of same-size images (split into batches), or batches already
    made (images of different sizes, padded per batch as the data's collator does)."""
    if isinstance(pixel_values, torch.Tensor):
        pixel_values = pixel_values.split(CALIBRATION_BATCH_SIZE)
    batches = [batch.float() for batch in pixel_values if len(batch)]
    if not batches:
        raise ValueError("Static int8 quantization needs calibration images; none were given.")
    return batches


def calibrate_input_ranges(
    model: nn.Module, pixel_values: torch.Tensor | Iterable[torch.Tensor]
) -> dict[str, tuple[float, float]]:
    """(min, max) of the input of every layer int8 replaces, over `pixel_values` (see `calibration_batches`) run
    through the fp32 model."""
    ranges = {}

    def record(name):
        def hook(module, args):
            low, high = torch.aminmax(args[0].detach())
            previous = ranges.get(name, (float("inf"), float("-inf")))
            ranges[name] = (min(previous[0], low.item()), max(previous[1], high.item()))

        return hook

    handles = [layer.register_forward_pre_hook(record(name)) for name, layer in _quantized_layers(model).items()]
    try:
        with torch.inference_mode():
            for batch in calibration_batches(pixel_values):
                model(batch)
    finally:
        for handle in handles:
            handle.remove()
    return ranges


def quantize_onednn(model: nn.Module, calibration_pixel_values: torch.Tensor | Iterable[torch.Tensor]) -> nn.Module:
    """A copy of `model` (any of our PVT models) for int8 inference on oneDNN: the layers `_quantized_layers` names
    run oneDNN's static int8 kernels, with activation ranges calibrated on `calibration_pixel_values` (a few dozen
    images like the ones it will see, never the ones it is evaluated on; one tensor or a list of batches)."""
    if not HAS_ONEDNN_INT8:
        raise ValueError(
            "This PyTorch build has no oneDNN int8 kernels (torch.ops.onednn.qlinear_pointwise); use the 'torch' or "
            "'onnxruntime' int8 backend."
        )
    batches = calibration_batches(calibration_pixel_values)
    model = copy.deepcopy(model).eval().float()
    ranges = calibrate_input_ranges(model, batches)

    for name, module in list(model.named_modules()):
        if isinstance(module, PvtBlock):
            prefix = f"{name}."
            block_ranges = {key[len(prefix) :]: value for key, value in ranges.items() if key.startswith(prefix)}
            _quantize_block(module, block_ranges)
        elif isinstance(module, PvtConvBatchNormRelu):
            # Inference BatchNorm is a per-channel affine map: folded into the conv, whose kernel then applies ReLU.
            folded = fuse_conv_bn_eval(module.conv, module.batch_norm)
            module.conv = Int8Conv2d(folded, ranges[f"{name}.conv"], relu=True)
            module.batch_norm, module.activation = nn.Identity(), nn.Identity()
        elif type(module) is nn.Conv2d and name in ranges and model.get_submodule(name) is module:
            parent_name, _, child_name = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child_name, Int8Conv2d(module, ranges[name]))
    return model


def calibration_subset(train_split, count: int):
    """The first `count` images of `train_split`, which calibrate `scripts/evaluate.py --int8`."""
    if count < 1:
        raise ValueError(f"--calibration_images must be at least 1 (got {count}).")
    if train_split is None or len(train_split) == 0:
        raise DataError(
            "--int8 calibrates on training images, and this data has no training split: pass --train_dir (or a "
            "--dataset_name with a train split) next to the evaluation data."
        )
    return train_split.select(range(min(count, len(train_split))))


def quantize_on_dataset(model: nn.Module, calibration_dataset, collate, batch_size: int) -> nn.Module:
    """`quantize_onednn` calibrated on a dataset already prepared by the evaluation transform, batched by `collate`
    (which pads images of different sizes, as evaluation does)."""
    loader = torch.utils.data.DataLoader(calibration_dataset, batch_size=batch_size, collate_fn=collate)
    return quantize_onednn(model, [batch["pixel_values"] for batch in loader])


def describe_int8(calibration_images: int) -> str:
    return f"int8 (static, oneDNN; calibrated on {calibration_images} training images)"


def quantize_torch(model: nn.Module) -> nn.Module:
    """A copy of `model` whose nn.Linear layers are `torch.ao` dynamic int8 linears (our fast_linear falls back to
    calling such layers, which are not plain nn.Linear)."""
    return torch.ao.quantization.quantize_dynamic(copy.deepcopy(model).eval(), {nn.Linear}, dtype=torch.qint8)


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU session using as many threads as PyTorch; its pool stops spinning when OMP_WAIT_POLICY is
    PASSIVE, as PyTorch's OpenMP threads then do, so that both behave alike on a busy machine."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def int8_classifier(
    model: PvtForImageClassification,
    backend: str,
    workdir: str | Path | None = None,
    calibration_pixel_values: torch.Tensor | None = None,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`pixel_values -> fp32 logits` computed with int8 linear layers by `backend`: "onednn" (static, calibrated on
    `calibration_pixel_values`), "torch" or "onnxruntime" (dynamic; the latter exports `model` to ONNX in `workdir`,
    a temporary folder when None)."""
    if backend in ("onednn", "torch"):
        if backend == "onednn" and calibration_pixel_values is None:
            raise ValueError("The 'onednn' int8 backend is calibrated: pass calibration_pixel_values.")
        quantized = quantize_torch(model) if backend == "torch" else quantize_onednn(model, calibration_pixel_values)

        def classify(pixel_values: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return quantized(pixel_values).logits

        return classify
    if backend != "onnxruntime":
        raise ValueError(f"Unknown int8 backend {backend!r}; choose one of {', '.join(BACKENDS)}.")
    with tempfile.TemporaryDirectory() if workdir is None else contextlib.nullcontext(workdir) as folder:
        fp32_path = export_onnx(model.eval(), Path(folder) / "model.onnx")
        session = onnx_session(quantize_onnx(fp32_path, Path(folder) / "model.int8.onnx"))

    def classify(pixel_values: torch.Tensor) -> torch.Tensor:
        (logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixel_values.float().numpy()})
        return torch.from_numpy(logits)

    return classify

