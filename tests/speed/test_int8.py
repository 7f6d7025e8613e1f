"""Static int8 on oneDNN (`quantize_onednn`): each int8 layer computes its float layer within quantization error, the
fused quantizations (LayerNorm -> uint8, fc1 + GELU -> uint8) equal quantizing the float result, and a quantized model
of every kind keeps the model contract (outputs, attentions, hidden states, pipeline) close to fp32."""

import dataclasses
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from helpers import REPO
from PIL import Image
from torch import nn
from transformers import pipeline

from modeling_pvt import (
    PvtBackbone,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtImageProcessor,
)
from modeling_pvt.cpu_fast_paths import detect_cpu_capabilities, isa_caps_from
from modeling_pvt.data.digits import load_digits_splits
from modeling_pvt.speed import quantization
from modeling_pvt.speed.benchmark import run as benchmark
from modeling_pvt.speed.quantization import (
    Int8Conv2d,
    Int8Linear,
    Int8Mlp,
    QuantizingLayerNorm,
    calibrate_input_ranges,
    int8_classifier,
    quantize_onednn,
    quantize_uint8,
    uint8_quantization,
)

pytestmark = pytest.mark.skipif(not quantization.HAS_ONEDNN_INT8, reason="this PyTorch has no oneDNN int8 kernels")


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())


def reference_uint8(values: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    return (torch.round(values / scale) + zero_point).clamp(0, 255).to(torch.uint8)


def test_uint8_quantization_covers_the_range_and_zero():
    assert uint8_quantization(-1.0, 1.0) == pytest.approx((2 / 255, 128))
    # A range that excludes 0 is widened to include it: 0 must stay exactly representable (zero padding, ReLU-like).
    scale, zero_point = uint8_quantization(0.5, 2.55)
    assert (scale, zero_point) == (pytest.approx(0.01), 0)
    assert uint8_quantization(-3.0, -1.0) == (pytest.approx(3 / 255), 255)
    assert uint8_quantization(0.0, 0.0)[0] > 0


def test_quantize_uint8_rounds_to_nearest_clamps_and_keeps_the_layout():
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(2, 6, 5, 7, generator=generator).contiguous(memory_format=torch.channels_last) * 3
    scale, zero_point = 0.02, 100
    quantized = quantize_uint8(values, scale, zero_point)
    assert quantized.dtype == torch.uint8 and quantized.is_contiguous(memory_format=torch.channels_last)
    # Random values hit no exact ties, where the two rounding rules could differ.
    assert torch.equal(quantized, reference_uint8(values, scale, zero_point))
    assert quantized.min() == 0 and quantized.max() == 255


@pytest.mark.parametrize(
    ("flags", "cap", "levels"),
    [
        ({"avx2", "avx512_vnni"}, "", 127),
        ({"avx2", "avx_vnni"}, "", 127),
        ({"avx2", "avx512f"}, "", 63),
        ({"avx2", "avx512_vnni", "amx_int8"}, "avx512_core_amx", 127),
        ({"avx2", "avx512_vnni"}, "AVX2", 63),
        ({"avx2", "avx512_vnni"}, "AVX512_CORE", 63),
    ],
)
def test_weights_are_7_bit_where_onednn_has_no_int8_dot_product(flags, cap, levels, monkeypatch):
    caps = isa_caps_from({"ONEDNN_MAX_CPU_ISA": cap})
    capabilities = dataclasses.replace(detect_cpu_capabilities(), flags=frozenset(flags), isa_caps=caps)
    monkeypatch.setattr(quantization, "detect_cpu_capabilities", lambda: capabilities)
    assert quantization.int8_weight_levels() == levels


# Inputs at the top of the uint8 range times weights at the top of the int8 range: what saturates int16 pair sums.
SATURATION_CHECK = """
import torch
from modeling_pvt.speed.quantization import Int8Linear
linear = torch.nn.Linear(64, 8, bias=False)
torch.nn.init.ones_(linear.weight)
print(Int8Linear(linear, (0.0, 255.0))(torch.full((4, 64), 255.0))[0, 0].item())
"""


@pytest.mark.parametrize("isa", ["AVX2", "AVX512_CORE_VNNI"])
def test_int8_linear_does_not_saturate_without_vnni(isa):
    # oneDNN reads its ISA cap once per process: a fresh one per ISA.
    environment = {**os.environ, "ONEDNN_MAX_CPU_ISA": isa, "PYTHONPATH": str(REPO)}
    result = subprocess.run([sys.executable, "-c", SATURATION_CHECK], env=environment, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout) == pytest.approx(255 * 64, rel=1e-5)


@pytest.mark.parametrize("gelu", [False, True])
def test_int8_linear_tracks_the_float_layer(gelu):
    torch.manual_seed(0)
    linear = nn.Linear(48, 80)
    hidden_states = torch.randn(3, 17, 48)
    expected = linear(hidden_states).detach()
    expected = F.gelu(expected) if gelu else expected
    low, high = hidden_states.min().item(), hidden_states.max().item()
    layer = Int8Linear(linear, (low, high))
    actual = layer(hidden_states, gelu=gelu)
    assert actual.shape == expected.shape and actual.dtype == torch.float32
    assert 0 < relative_error(actual, expected) < 0.02
    # Input already quantized for this layer: used as it is.
    quantized_input = quantize_uint8(hidden_states, layer.input_scale, layer.input_zero_point)
    assert torch.equal(layer(quantized_input, gelu=gelu), actual)
    # Output quantized in the kernel: what quantizing the float output gives, to one step.
    scale, zero_point = uint8_quantization(actual.min().item(), actual.max().item())
    quantized = layer(hidden_states, gelu=gelu, output_quantization=(scale, zero_point, torch.uint8))
    assert quantized.dtype == torch.uint8
    assert (quantized.int() - reference_uint8(actual, scale, zero_point).int()).abs().max() <= 1


def test_int8_conv_tracks_the_float_conv_on_a_token_sequence_read_channels_last():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 24, kernel_size=4, stride=4)
    tokens = torch.randn(2, 12 * 8, 16)
    feature_map = tokens.transpose(1, 2).reshape(2, 16, 12, 8)
    expected = conv(feature_map).detach()
    actual = Int8Conv2d(conv, (tokens.min().item(), tokens.max().item()))(feature_map)
    assert actual.shape == expected.shape == (2, 24, 3, 2)
    assert 0 < relative_error(actual, expected) < 0.02


def test_quantizing_layer_norm_equals_quantizing_the_norm():
    torch.manual_seed(0)
    norm = nn.LayerNorm(32)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    hidden_states = torch.randn(4, 9, 32)
    expected = norm(hidden_states).detach()
    scale, zero_point = uint8_quantization(expected.min().item(), expected.max().item())
    actual = QuantizingLayerNorm(norm, (scale, zero_point, torch.uint8))(hidden_states)
    assert actual.dtype == torch.uint8
    assert (actual.int() - reference_uint8(expected, scale, zero_point).int()).abs().max() <= 1


@pytest.fixture(scope="module")
def classifier() -> PvtForImageClassification:
    torch.manual_seed(0)
    return PvtForImageClassification(tiny_config()).eval()


@pytest.fixture(scope="module")
def calibration() -> torch.Tensor:
    return torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(1))


def test_calibration_sees_every_replaced_layer_and_leaves_no_hooks(classifier, calibration):
    ranges = calibrate_input_ranges(classifier, calibration)
    blocks = sum(classifier.config.depths)
    # q, kv, proj, fc1, fc2 per block, and the patch embeddings of stages 2-4 (stage 1 reads the pixels).
    assert len(ranges) == 5 * blocks + 3
    assert all(low <= 0 <= high or low < high for low, high in ranges.values())
    assert not any(module._forward_pre_hooks for module in classifier.modules())


def test_quantized_classifier_is_a_copy_close_to_fp32(classifier, calibration):
    quantized = quantize_onednn(classifier, calibration)
    assert type(classifier.pvt.encoder.stages[0].blocks[0].mlp.fc1) is nn.Linear, "the original was changed"
    block = quantized.pvt.encoder.stages[0].blocks[0]
    assert isinstance(block.mlp, Int8Mlp) and isinstance(block.attn.q, Int8Linear)
    assert isinstance(block.attn.sr, Int8Conv2d)
    assert isinstance(block.norm1, QuantizingLayerNorm) and isinstance(block.norm2, QuantizingLayerNorm)
    assert type(quantized.pvt.encoder.stages[0].embeddings.proj) is nn.Conv2d
    assert isinstance(quantized.pvt.encoder.stages[1].embeddings.proj, Int8Conv2d)
    assert type(quantized.classifier) is nn.Linear

    for shape in [(2, 3, 64, 64), (1, 3, 96, 64)]:
        pixel_values = torch.randn(shape, generator=torch.Generator().manual_seed(2))
        with torch.inference_mode():
            expected, actual = classifier(pixel_values).logits, quantized(pixel_values).logits
        assert not torch.equal(actual, expected), "nothing was quantized"
        assert (actual.softmax(-1) - expected.softmax(-1)).abs().max() < 0.05


def test_quantized_classifier_keeps_attentions_and_hidden_states(classifier, calibration):
    quantized = quantize_onednn(classifier, calibration)
    pixel_values = calibration[:2]
    with torch.inference_mode():
        expected = classifier(pixel_values, output_attentions=True, output_hidden_states=True)
        actual = quantized(pixel_values, output_attentions=True, output_hidden_states=True)
    assert len(actual.attentions) == len(expected.attentions) == sum(classifier.config.depths)
    pairs = zip(actual.attentions + actual.hidden_states, expected.attentions + expected.hidden_states)
    for actual_map, expected_map in pairs:
        assert actual_map.shape == expected_map.shape and actual_map.dtype == torch.float32
        assert relative_error(actual_map, expected_map) < 0.1


def test_row_chunked_int8_mlp_matches_the_whole_one(classifier, calibration, monkeypatch):
    quantized = quantize_onednn(classifier, calibration)
    pixel_values = calibration[:4]
    with torch.inference_mode():
        whole = quantized(pixel_values).logits
    chunk_rows = []
    unchunked_forward = Int8Mlp.unchunked_forward

    def counting_forward(self, hidden_states):
        chunk_rows.append(hidden_states.shape[0])
        return unchunked_forward(self, hidden_states)

    monkeypatch.setattr(Int8Mlp, "unchunked_forward", counting_forward)
    # The MLP's input is uint8 (the LayerNorm quantized it): stage 1's 16-wide hidden rows are 16 bytes each.
    for module, prefix in (("modeling_pvt.modeling_pvt", "MLP_"), ("modeling_pvt.speed.quantization", "INT8_GEMM_")):
        monkeypatch.setattr(f"{module}.{prefix}CHUNKING_BYTES", 1024)
        monkeypatch.setattr(f"{module}.{prefix}CHUNK_BYTES", 256)
    with torch.inference_mode():
        chunked = quantized(pixel_values).logits
    assert len(chunk_rows) > sum(classifier.config.depths) and min(chunk_rows) <= 256 // 16
    torch.testing.assert_close(chunked, whole, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize(("flags", "chunking_bytes"), [({"avx512_vnni"}, 32 * 2**20), ({"avx2"}, 4 * 2**20)])
def test_int8_mlps_chunk_smaller_where_onednn_has_no_int8_dot_product(classifier, calibration, flags, chunking_bytes,
                                                                       monkeypatch):  # fmt: skip
    quantized = quantize_onednn(classifier, calibration)
    capabilities = dataclasses.replace(detect_cpu_capabilities(), flags=frozenset(flags), isa_caps=())
    monkeypatch.setattr(quantization, "detect_cpu_capabilities", lambda: capabilities)
    mlp = quantized.pvt.encoder.stages[0].blocks[0].mlp
    row_bytes = mlp.fc1.out_features  # uint8 hidden activation
    just_above = torch.empty(chunking_bytes // row_bytes + 1, mlp.fc1.in_features, dtype=torch.uint8)
    assert mlp.rows_per_chunk(just_above[:-1]) is None and mlp.rows_per_chunk(just_above) is not None


@pytest.mark.parametrize("model_class", [PvtBackbone, PvtForSemanticSegmentation])
def test_dense_models_quantize_too(model_class, calibration):
    torch.manual_seed(0)
    model = model_class(tiny_config(out_indices=[0, 1, 2, 3])).eval()
    quantized = quantize_onednn(model, calibration)
    pixel_values = calibration[:2]
    with torch.inference_mode():
        expected, actual = model(pixel_values), quantized(pixel_values)
    if model_class is PvtBackbone:
        pairs = zip(actual.feature_maps, expected.feature_maps)
    else:
        pairs = [(actual.logits, expected.logits)]
    for actual_map, expected_map in pairs:
        assert actual_map.shape == expected_map.shape
        assert 0 < relative_error(actual_map, expected_map) < 0.1


def test_a_quantized_classifier_runs_in_a_pipeline(classifier, calibration):
    processor = PvtImageProcessor(size={"height": 64, "width": 64})
    quantized = quantize_onednn(classifier, calibration)
    classify = pipeline("image-classification", model=quantized, image_processor=processor)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))
    predictions = classify(image, top_k=2)
    assert len(predictions) == 2 and {"label", "score"} <= set(predictions[0])


def test_static_int8_needs_calibration_images(classifier):
    with pytest.raises(ValueError, match="calibration images"):
        quantize_onednn(classifier, torch.empty(0, 3, 64, 64))
    with pytest.raises(ValueError, match="calibration_pixel_values"):
        int8_classifier(classifier, "onednn")
    with pytest.raises(ValueError, match="Unknown int8 backend 'fbgemm'; choose one of onednn, torch, onnxruntime"):
        int8_classifier(classifier, "fbgemm")


def test_the_agreement_benchmark_calibrates_on_training_images_only(tmp_path, monkeypatch):
    torch.manual_seed(0)
    model = PvtForImageClassification(tiny_config(num_labels=10, image_size=32)).eval()
    model.save_pretrained(tmp_path)
    PvtImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path)
    seen = []
    original = quantization.quantize_onednn

    def spy(model, calibration_pixel_values):
        seen.append(calibration_pixel_values)
        return original(model, calibration_pixel_values)

    monkeypatch.setattr(quantization, "quantize_onednn", spy)
    settings = benchmark.BenchmarkSettings(modes=["int8-static"])
    report = benchmark.top1_agreement(str(tmp_path), ["int8-static"], settings)
    assert report["calibration_images"] == len(seen[0]) == benchmark.CALIBRATION_IMAGES
    assert 0 <= report["agreement_with_fp32_eager"]["int8-static"] <= 1
    assert report["max_probability_error_vs_fp32_eager"]["int8-static"] > 0
    evaluated = PvtImageProcessor(size={"height": 32, "width": 32})(
        images=list(load_digits_splits(image_size=32).eval["image"]), return_tensors="pt"
    )["pixel_values"]
    overlap = (seen[0].flatten(1)[:, None] == evaluated.flatten(1)[None]).all(-1)
    assert not overlap.any(), "a held-out image was used for calibration"
