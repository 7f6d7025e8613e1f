"""Export a PVT image classifier to ONNX and check it with onnxruntime at two resolutions.

    python scripts/export_onnx.py outputs/pvt-tiny-sklearn-digits/model outputs/pvt-tiny-sklearn-digits.onnx
    python scripts/export_onnx.py outputs/pvt-tiny-sklearn-digits/model outputs/pvt-tiny-sklearn-digits.onnx --int8   # + .int8.onnx

Input `pixel_values` (batch, 3, height, width; batch, height and width dynamic), output `logits`. Needs the dev extra
(onnx, onnxscript, onnxruntime).
"""

import sys

from modeling_pvt.cli import run_cli
from modeling_pvt.export import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
