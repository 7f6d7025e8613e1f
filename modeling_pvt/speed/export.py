"""Export a PVT classifier to `torch.export` programs and ONNX with dynamic batch, height and width, and check the
ONNX file against PyTorch with onnxruntime. CLI: `scripts/export_onnx.py MODEL_DIR OUTPUT.onnx`."""

import argparse
import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn
from torch.export import Dim

from ..checkpoints.conversion import read_pvt_config
from ..cli import DEBUG_HELP
from ..modeling_pvt import PvtForImageClassification

INPUT_NAME = "pixel_values"
OUTPUT_NAME = "logits"
# Dim.AUTO lets the exporter derive the constraints the model itself implies (e.g. the minimum input size).
DYNAMIC_SHAPES = {INPUT_NAME: {0: Dim.AUTO, 2: Dim.AUTO, 3: Dim.AUTO}}
ONNX_TOLERANCE = 1e-4


class LogitsOnly(nn.Module):
    """`pixel_values -> logits` as a plain tensor function: exporters need tensors in and out, not ModelOutput."""

    def __init__(self, model: PvtForImageClassification):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=pixel_values).logits


def tracing_size(model: PvtForImageClassification) -> tuple[int, int]:
    """The input size to trace at: the trained size, but at least twice the minimum so that no feature map or
    reduced key/value grid is 1x1 — exporters specialise size-1 dimensions, which would fix the graph to that size."""
    smallest = 2 * model.config.min_input_size
    height, width = model.config.image_height_width
    return max(height, smallest), max(width, smallest)


def example_input(model: PvtForImageClassification, batch_size: int = 2, size: tuple[int, int] | None = None):
    height, width = size or tracing_size(model)
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch_size, model.config.num_channels, height, width, generator=generator)


def export_program(model: PvtForImageClassification, pixel_values: torch.Tensor | None = None):
    """A `torch.export.ExportedProgram` of `pixel_values -> logits`, dynamic in batch, height and width."""
    model.eval()
    pixel_values = example_input(model) if pixel_values is None else pixel_values
    return torch.export.export(LogitsOnly(model), (), kwargs={INPUT_NAME: pixel_values}, dynamic_shapes=DYNAMIC_SHAPES)


@contextmanager
def _quiet_exporter():
    """The exporter's notes that say nothing about this model: one warning per torchvision op it cannot register
    without torchvision (nms, roi_align, roi_pool, deform_conv2d; PVT uses none, and this project never installs
    torchvision), and a deprecation inside torch's own pytree code."""
    registration = logging.getLogger("torch.onnx._internal.exporter._registration")

    def not_torchvision(record: logging.LogRecord) -> bool:
        return "torchvision is not installed" not in record.getMessage()

    registration.addFilter(not_torchvision)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
            yield
    finally:
        registration.removeFilter(not_torchvision)


def export_onnx(model: PvtForImageClassification, path: str | Path, program=None, opset_version: int = 18) -> Path:
    """Writes an ONNX file with input `pixel_values` (batch, channels, height, width — all but channels dynamic) and
    output `logits`, through the `torch.export`-based exporter (from `program` when already exported)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_exporter():
        program = export_program(model) if program is None else program
        torch.onnx.export(
            program,
            f=str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=opset_version,
            external_data=False,
        )
    return path


def quantize_onnx(fp32_path: str | Path, int8_path: str | Path) -> Path:
    """ONNX Runtime dynamic quantization of the MatMul/Gemm nodes of an exported fp32 file: int8 weights, uint8
    activations (the pairing its x86 VNNI kernels expect)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    int8_path = Path(int8_path)
    int8_path.parent.mkdir(parents=True, exist_ok=True)
    quantize_dynamic(str(fp32_path), str(int8_path), op_types_to_quantize=["MatMul", "Gemm"], weight_type=QuantType.QInt8)
    return int8_path


def onnx_max_abs_difference(
    model: PvtForImageClassification, path: str | Path, pixel_values: torch.Tensor, probabilities: bool = False
) -> float:
    """Largest |logit difference| (or |probability difference|) between onnxruntime running `path` and the PyTorch
    model on `pixel_values`."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (onnx_logits,) = session.run([OUTPUT_NAME], {INPUT_NAME: pixel_values.numpy()})
    onnx_logits = torch.from_numpy(onnx_logits)
    with torch.inference_mode():
        torch_logits = model.eval()(pixel_values).logits
    if probabilities:
        onnx_logits, torch_logits = onnx_logits.softmax(-1), torch_logits.softmax(-1)
    return float((onnx_logits - torch_logits).abs().max())


def check_sizes(model: PvtForImageClassification) -> list[tuple[int, int, int]]:
    """(batch, height, width) to verify an export at: the trained size, and a larger non-square size with another
    batch size, so that a graph specialised to one shape would fail the check."""
    height, width = model.config.image_height_width
    stride = model.config.min_input_size
    return [(1, height, width), (2, height + stride, width + 2 * stride)]


def export_and_verify(
    model_dir: str | Path, output: str | Path, tolerance: float = ONNX_TOLERANCE, int8: bool = False
) -> dict:
    """Exports `model_dir` to `output` and checks it at `check_sizes`; with `int8`, also writes OUTPUT_STEM.int8.onnx
    (dynamic int8 MatMuls, `quantize_onnx`) next to it."""
    read_pvt_config(str(model_dir))
    model = PvtForImageClassification.from_pretrained(model_dir).eval()
    path = export_onnx(model, output)
    differences = {}
    for batch_size, height, width in check_sizes(model):
        pixel_values = example_input(model, batch_size, (height, width))
        differences[f"{batch_size}x{height}x{width}"] = onnx_max_abs_difference(model, path, pixel_values)
    worst = max(differences.values())
    if worst > tolerance:
        raise RuntimeError(f"onnxruntime logits differ from PyTorch by {worst:.2e} (> {tolerance:.0e}): {differences}")
    report = {"onnx": str(path), "max_abs_difference": differences}
    if int8:
        # Int8 is not exact: what it changes is reported (probabilities against fp32 PyTorch), not bounded here;
        # `scripts/benchmark.py --modes int8-onnx --agreement-model` measures top-1 agreement on real images.
        int8_path = quantize_onnx(path, path.with_name(f"{path.stem}.int8.onnx"))
        report["int8_onnx"] = str(int8_path)
        report["int8_max_probability_difference"] = {
            f"{batch_size}x{height}x{width}": onnx_max_abs_difference(
                model, int8_path, example_input(model, batch_size, (height, width)), probabilities=True
            )
            for batch_size, height, width in check_sizes(model)
        }
    return report


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        description="Export a PVT image classifier to ONNX (input `pixel_values` with dynamic batch/height/width, "
        "output `logits`) and check onnxruntime against PyTorch at two resolutions."
    )
    parser.add_argument(
        "model_dir", help="a folder saved by save_pretrained (ours or transformers' native PVT), or a Hub id"
    )
    parser.add_argument("output", help="path of the .onnx file to write")
    parser.add_argument("--tolerance", type=float, default=ONNX_TOLERANCE, help="largest allowed |Δlogit|")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    parser.add_argument(
        "--int8", action="store_true", help="also write OUTPUT_STEM.int8.onnx: linear layers dynamically quantized"
    )
    args = parser.parse_args(argv)
    report = export_and_verify(args.model_dir, args.output, args.tolerance, args.int8)
    print(f"Wrote {report['onnx']}")
    for shape, difference in report["max_abs_difference"].items():
        print(f"  onnxruntime vs PyTorch at {shape}: max |Δlogit| = {difference:.2e}")
    if args.int8:
        print(f"Wrote {report['int8_onnx']}")
        for shape, difference in report["int8_max_probability_difference"].items():
            print(f"  int8 onnxruntime vs fp32 PyTorch at {shape}: max |Δprobability| = {difference:.2e}")
    return report
