"""`python -m modeling_pvt`: a quick look at a PVT on a real photo, no network needed.

Builds a preset (random weights) or loads a checkpoint folder, runs scikit-learn's bundled sample photo through the
image processor and the model at two resolutions, and prints the four feature-map shapes and the top-5 classes."""

import argparse
import sys

import torch
from sklearn.datasets import load_sample_image

from . import PRESETS, PvtConfig, PvtForImageClassification, PvtImageProcessor
from .cli import DEBUG_HELP, run_cli
from .checkpoints.conversion import imagenet_id2label, read_pvt_config


def _size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(side) for side in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"--sizes: {text!r} is not HEIGHTxWIDTH (e.g. 224x224,320x480).") from None
    return height, width


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--variant", default="pvt-tiny", choices=list(PRESETS), help="preset with random weights")
    source.add_argument("--model", help="a checkpoint folder or Hub id to load instead of a random preset")
    parser.add_argument("--sizes", default="224x224,320x480", help="comma-separated HxW input sizes")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    sizes = [_size(size) for size in args.sizes.split(",")]

    if args.model:
        read_pvt_config(args.model)
        model = PvtForImageClassification.from_pretrained(args.model)
        weights = args.model
    else:
        torch.manual_seed(0)
        labels = imagenet_id2label()
        model = PvtForImageClassification(PvtConfig.from_preset(args.variant, id2label=labels))
        weights = f"{args.variant}, random weights (predictions are meaningless; use --model for a checkpoint)"
    model.eval()
    photo = load_sample_image("china.jpg")
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"PVT model: {weights}; {params_m:.1f} M parameters; photo: scikit-learn china.jpg {photo.shape[:2]}")

    for height, width in sizes:
        processor = PvtImageProcessor(size={"height": height, "width": width})
        pixel_values = processor(photo, return_tensors="pt").pixel_values
        with torch.inference_mode():
            output = model(pixel_values, output_hidden_states=True)
        print(f"\ninput {tuple(pixel_values.shape)}")
        for stage, feature_map in enumerate(output.hidden_states, start=1):
            print(f"  stage{stage} (stride {model.config.stage_stride(stage - 1):2d}): {tuple(feature_map.shape)}")
        probabilities = output.logits.softmax(-1)[0]
        for probability, index in zip(*probabilities.topk(min(5, probabilities.numel()))):
            print(f"  {probability.item():6.2%}  {model.config.id2label[index.item()]}")


if __name__ == "__main__":
    sys.exit(run_cli(main))
