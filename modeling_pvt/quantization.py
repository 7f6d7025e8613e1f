"""Int8 inference: dynamic quantization of every linear layer (weights int8 ahead of time, activations quantized per
call), for CPUs without native bfloat16 — VNNI/AMX-int8 CPUs run int8 dot products natively. Two backends behind one
function: PyTorch's `quantize_dynamic` on the model, and ONNX Runtime's `quantize_dynamic` on the exported ONNX file.
Convolutions, normalisations and attention stay fp32 in both."""

import contextlib
import copy
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from .export import INPUT_NAME, OUTPUT_NAME, export_onnx, quantize_onnx
from .modeling_pvt import PvtForImageClassification

BACKENDS = ("torch", "onnxruntime")


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
    model: PvtForImageClassification, backend: str, workdir: str | Path | None = None
) -> Callable[[torch.Tensor], torch.Tensor]:
    """`pixel_values -> fp32 logits` computed with int8 linear layers by `backend` ("torch" or "onnxruntime"; the
    latter exports `model` to ONNX in `workdir`, a temporary folder when None)."""
    if backend == "torch":
        quantized = quantize_torch(model)

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

