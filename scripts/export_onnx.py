"""Export a PVT image classifier to ONNX and check it with onnxruntime at two resolutions.

    python scripts/export_onnx.py outputs/pvt-tiny-sklearn-digits/model outputs/pvt-tiny-sklearn-digits.onnx
    python scripts/export_onnx.py outputs/pvt-tiny-sklearn-digits/model outputs/pvt-tiny-sklearn-digits.onnx --int8   # + .int8.onnx

Input `pixel_values` (batch, 3, height, width; batch, height and width dynamic), output `logits`. Needs the dev extra
(onnx, onnxscript, onnxruntime).
"""

import runpy
import sys
from pathlib import Path

# Flag mistakes are reported before the imports below load torch (seconds): modeling_pvt/cli.py is read by path.
if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "modeling_pvt" / "cli.py"))["check_command_line"](__file__)

from modeling_pvt.cli import run_cli
from modeling_pvt.speed.export import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
