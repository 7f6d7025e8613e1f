"""Export a PVT image classifier to ONNX and check it with onnxruntime at two resolutions.

    python scripts/export_onnx.py outputs/pvt-tiny-digits/model pvt-tiny.onnx
    python scripts/export_onnx.py outputs/pvt-tiny-digits/model pvt-tiny.onnx --int8   # + pvt-tiny.int8.onnx

Input `pixel_values` (batch, 3, height, width; batch, height and width dynamic), output `logits`. Needs the dev extra
(onnx, onnxscript, onnxruntime).
"""

from modeling_pvt.export import main

if __name__ == "__main__":
    main()
