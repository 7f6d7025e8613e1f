"""Fast paths and exports compute what fp32 eager computes: the oneDNN linear kernels, bfloat16, torch.compile
(inference and training, one graph for every input size), torch.export and ONNX run by onnxruntime."""

import copy

import onnx
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from torch._dynamo.testing import CompileCounterWithBackend
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from modeling_pvt import PvtForImageClassification
from modeling_pvt.modeling_pvt import _HAS_ONEDNN_LINEAR, fast_linear
from modeling_pvt.speed.export import _quiet_exporter, check_sizes, export_program
from modeling_pvt.speed.export import main as export_onnx_main
from modeling_pvt.speed.quantization import int8_classifier, quantize_torch

# Non-square first: dynamo's duck sizing would otherwise guard on height == width and compile once more for the
# first non-square input. Batch sizes stay >= 2 because size-1 dimensions are always specialised.
SIZES = [(96, 64), (64, 64), (128, 96)]
BATCH_SIZES = (2, 3, 4)


@pytest.fixture
def model() -> PvtForImageClassification:
    return PvtForImageClassification(tiny_config()).eval()


def test_this_machine_has_the_onednn_linear():
    # Without it every fast-path test below would compare F.linear with itself.
    assert _HAS_ONEDNN_LINEAR


@pytest.mark.parametrize("fused_gelu", [False, True])
def test_fast_linear_matches_f_linear_with_gradients(fused_gelu):
    linear = torch.nn.Linear(24, 40)
    hidden_states = torch.randn(3, 17, 24, requires_grad=True)
    expected = F.linear(hidden_states, linear.weight, linear.bias)
    expected = F.gelu(expected) if fused_gelu else expected
    actual = fast_linear(hidden_states, linear, fused_gelu=fused_gelu)
    torch.testing.assert_close(actual, expected, atol=1e-5, rtol=1e-5)

    grad_output = torch.randn_like(expected)
    inputs = (hidden_states, linear.weight, linear.bias)
    expected_grads = torch.autograd.grad(expected, inputs, grad_output)
    actual_grads = torch.autograd.grad(actual, inputs, grad_output)
    for actual_grad, expected_grad in zip(actual_grads, expected_grads):
        torch.testing.assert_close(actual_grad, expected_grad, atol=1e-5, rtol=1e-5)

    with torch.inference_mode():
        fused = fast_linear(hidden_states, linear, fused_gelu=fused_gelu)
    torch.testing.assert_close(fused, expected.detach(), atol=1e-5, rtol=1e-5)


def test_bfloat16_paths_track_fp32(model):
    pixel_values = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        reference = model(pixel_values).logits
        bf16_weights = copy.deepcopy(model).to(torch.bfloat16)(pixel_values.to(torch.bfloat16)).logits.float()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            autocast = model(pixel_values).logits.float()
    # bfloat16 keeps 8 significant bits: a few percent of the logit scale after a dozen layers.
    tolerance = 0.05 * reference.abs().max().item()
    torch.testing.assert_close(bf16_weights, reference, atol=tolerance, rtol=0)
    torch.testing.assert_close(autocast, reference, atol=tolerance, rtol=0)


def test_compiled_inference_is_one_graph_for_all_sizes(model):
    torch._dynamo.reset()
    counter = CompileCounterWithBackend("inductor")
    compiled = torch.compile(model, backend=counter, fullgraph=True, dynamic=True)
    graphs_after_each_size = []
    with torch.inference_mode():
        for batch_size, (height, width) in zip(BATCH_SIZES, SIZES):
            pixel_values = torch.randn(batch_size, 3, height, width)
            torch.testing.assert_close(compiled(pixel_values).logits, model(pixel_values).logits, atol=1e-4, rtol=1e-4)
            graphs_after_each_size.append(counter.frame_count)
    assert graphs_after_each_size[0] > 0
    assert len(set(graphs_after_each_size)) == 1, f"graphs compiled after each new size: {graphs_after_each_size}"


def test_compiled_training_matches_eager(model):
    """Forward and backward traced as one graph for every size. The aot_eager backend runs the same dynamo and
    AOTAutograd graphs as inductor but skips code generation, which would take minutes on a 2-core runner."""
    torch._dynamo.reset()
    model.train()
    twin = copy.deepcopy(model)
    counter = CompileCounterWithBackend("aot_eager")
    compiled = torch.compile(twin, backend=counter, fullgraph=True, dynamic=True)
    labels = torch.tensor([0, 3])
    graphs_after_each_size = []
    for height, width in SIZES[:2]:
        pixel_values = torch.randn(2, 3, height, width)
        F.cross_entropy(model(pixel_values).logits, labels).backward()
        F.cross_entropy(compiled(pixel_values).logits, labels).backward()
        graphs_after_each_size.append(counter.frame_count)
    for (name, expected), actual in zip(model.named_parameters(), twin.parameters()):
        assert torch.allclose(actual.grad, expected.grad, atol=1e-4, rtol=1e-3), f"gradient of {name} differs"
    assert graphs_after_each_size[0] > 0
    assert len(set(graphs_after_each_size)) == 1, f"graphs compiled after each new size: {graphs_after_each_size}"


def test_torch_export_is_dynamic_in_batch_and_size(model):
    program = export_program(model)
    assert "mkldnn" not in str(program.graph), "exported graphs must not contain private oneDNN ops"
    exported = program.module()
    for batch_size, (height, width) in zip((1, 3), SIZES[1:]):  # batch 1 and sizes other than the example's
        pixel_values = torch.randn(batch_size, 3, height, width)
        with torch.no_grad():
            torch.testing.assert_close(
                exported(pixel_values=pixel_values), model(pixel_values).logits, atol=1e-5, rtol=1e-5
            )


def test_export_onnx_script_checks_onnxruntime_at_two_sizes(model, tmp_path):
    model.save_pretrained(tmp_path / "model")
    report = export_onnx_main([str(tmp_path / "model"), str(tmp_path / "pvt.onnx")])
    assert (tmp_path / "pvt.onnx").stat().st_size > 0
    expected_shapes = {f"{b}x{h}x{w}" for b, h, w in check_sizes(model)}
    assert set(report["max_abs_difference"]) == expected_shapes and len(expected_shapes) == 2
    assert max(report["max_abs_difference"].values()) <= 1e-4

    graph_input = onnx.load(str(tmp_path / "pvt.onnx")).graph.input[0]
    dims = [dim.dim_param or dim.dim_value for dim in graph_input.type.tensor_type.shape.dim]
    assert graph_input.name == "pixel_values" and dims[1] == 3
    assert all(isinstance(dim, str) for dim in (dims[0], dims[2], dims[3])), f"batch/height/width not dynamic: {dims}"


def test_export_drops_only_the_exporters_torchvision_notes(caplog):
    from torch.onnx._internal.exporter import _registration

    _registration._get_overload("torchvision::nms")  # what the exporter does for each torchvision op it knows
    assert "torchvision is not installed. Skipping torchvision::nms" in caplog.text
    caplog.clear()
    with _quiet_exporter():
        _registration._get_overload("torchvision::nms")
        _registration.logger.warning("another note")
    assert "torchvision" not in caplog.text and "another note" in caplog.text


def test_export_of_a_model_trained_at_its_minimum_size_stays_dynamic():
    # At 32x32 the last stage is a single token; tracing there would fix that size into the graph. (torch.export
    # guards then keep the program to inputs without 1x1 feature maps; the ONNX file carries no such guard.)
    model = PvtForImageClassification(tiny_config(image_size=32)).eval()
    exported = export_program(model).module()
    for batch_size, height, width in ((1, 64, 96), (3, 128, 64)):
        pixel_values = torch.randn(batch_size, 3, height, width)
        with torch.no_grad():
            torch.testing.assert_close(
                exported(pixel_values=pixel_values), model(pixel_values).logits, atol=1e-5, rtol=1e-5
            )


def test_export_onnx_script_writes_an_int8_file_close_to_fp32(model, tmp_path):
    model.save_pretrained(tmp_path / "model")
    report = export_onnx_main([str(tmp_path / "model"), str(tmp_path / "pvt.onnx"), "--int8"])
    int8_path = tmp_path / "pvt.int8.onnx"
    assert report["int8_onnx"] == str(int8_path)
    graph = onnx.load(str(int8_path)).graph
    assert any(node.op_type in ("MatMulInteger", "DynamicQuantizeLinear") for node in graph.node)
    assert set(report["int8_max_probability_difference"]) == set(report["max_abs_difference"])
    assert 0 < max(report["int8_max_probability_difference"].values()) < 0.05


@pytest.mark.parametrize("backend", ["onednn", "torch", "onnxruntime"])
def test_int8_classifiers_agree_with_fp32(model, backend, tmp_path):
    # Static int8 is calibrated on other images than the ones it is compared on.
    calibration = torch.randn(8, 3, 96, 64, generator=torch.Generator().manual_seed(1)) if backend == "onednn" else None
    workdir = tmp_path if backend == "onnxruntime" else None
    classify = int8_classifier(model, backend, workdir=workdir, calibration_pixel_values=calibration)
    pixel_values = torch.randn(4, 3, 96, 64)
    with torch.inference_mode():
        reference = model(pixel_values).logits
    logits = classify(pixel_values)
    assert logits.shape == reference.shape and logits.dtype == torch.float32
    assert not torch.equal(logits, reference), "nothing was quantized"
    assert (logits.softmax(-1) - reference.softmax(-1)).abs().max() < 0.05
    if backend == "onnxruntime":
        assert (tmp_path / "model.int8.onnx").stat().st_size < (tmp_path / "model.onnx").stat().st_size
    elif backend == "torch":
        assert isinstance(quantize_torch(model).pvt.encoder.stages[0].blocks[0].mlp.fc1, DynamicQuantizedLinear)
