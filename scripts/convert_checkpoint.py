"""Convert a PVT v1 checkpoint into a Hub-ready folder (weights, config with auto_map, processor config, remote
code, model card) that loads with `trust_remote_code=True`."""

import argparse
import json
import runpy
import sys
from pathlib import Path

# Flag mistakes are reported before the imports below load torch (seconds): modeling_pvt/cli.py is read by path.
if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "modeling_pvt" / "cli.py"))["check_command_line"](__file__)

from modeling_pvt import PRESETS, PvtConfig
from modeling_pvt.checkpoints.conversion import (
    OWN,
    TASKS,
    VERIFY_DETECTION_SIZES,
    VERIFY_SEGMENTATION_SIZES,
    VERIFY_SIZES,
    build_model,
    default_image_processor,
    load_checkpoint,
    verify,
)
from modeling_pvt.checkpoints.hub import DEFAULT_MAX_SHARD_SIZE, save_hub_folder
from modeling_pvt.cli import DEBUG_HELP, run_cli

EXAMPLES = """examples:
  # the original release's pvt_tiny.pth, ImageNet-1k labels, checked against the original layout
  python scripts/convert_checkpoint.py --checkpoint pvt_tiny.pth --variant pvt-tiny --output_dir pvt-tiny-224 --verify

  # a transformers-native PVT folder (e.g. a downloaded Zetatech/pvt-tiny-224); its config gives the architecture
  python scripts/convert_checkpoint.py --checkpoint ./pvt-tiny-224-native --output_dir pvt-tiny-224 --verify

  # the paper's Semantic FPN on ADE20K (mmseg checkpoint), checked against the original layout at 512x512 and 480x650
  python scripts/convert_checkpoint.py --checkpoint fpn_pvt_s_ade20k_40k.pth --variant pvt-small \
      --output_dir pvt-small-fpn-ade20k --verify

  # the paper's RetinaNet on COCO (mmdet checkpoint, COCO's 80 class names), checked against the original layout
  python scripts/convert_checkpoint.py --checkpoint retinanet_pvt_s_fpn_1x_coco.pth --variant pvt-small \
      --output_dir pvt-small-retinanet-coco --verify

  # an ImageNet classifier as the backbone of a new RetinaNet (fresh FPN and head, COCO's names), to fine-tune
  python scripts/convert_checkpoint.py --checkpoint pvt_small.pth --variant pvt-small --task object-detection \
      --num_labels 80 --output_dir pvt-small-retinanet-init

  # an ImageNet classifier as the backbone of a new Semantic FPN model (ADE20K's 150 class names), to fine-tune
  python scripts/convert_checkpoint.py --checkpoint pvt_small.pth --variant pvt-small --task semantic-segmentation \
      --num_labels 150 --output_dir pvt-small-fpn-init

  # keep the backbone, attach a new 3-way head for fine-tuning (labels: JSON list / {"0": name} file, or a,b,c)
  python scripts/convert_checkpoint.py --checkpoint pvt_small.pth --variant pvt-small --output_dir pvt-small-beans \\
      --labels angular_leaf_spot,bean_rust,healthy
"""


def parse_labels(text: str) -> dict[int, str]:
    """`a,b,c`, or a JSON file holding a list of names or an {index: name} object."""
    path = Path(text)
    if path.is_file():
        loaded = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(loaded, list):
            return dict(enumerate(loaded))
        if isinstance(loaded, dict):
            return {int(index): name for index, name in loaded.items()}
        raise argparse.ArgumentTypeError(f"{path} must hold a JSON list of names or an {{index: name}} object.")
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError("--labels needs comma-separated names or a JSON file.")
    return dict(enumerate(names))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description=__doc__, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="an original .pth/.pt/.bin/.safetensors file (bare or {'model': state_dict}), an original Semantic FPN "
        "checkpoint (mmseg's {'state_dict': …, 'meta': …}), an original RetinaNet checkpoint (mmdet's), a folder saved by "
        "transformers' native PVT or by this package, or a Hub repo id already in the local cache",
    )
    architecture = parser.add_mutually_exclusive_group()
    architecture.add_argument(
        "--variant",
        choices=list(PRESETS),
        help="architecture of a bare weights file (required there); for folders, checked against their config",
    )
    architecture.add_argument(
        "--config",
        type=Path,
        help="a config.json with a custom architecture, instead of --variant (labels come from the options below)",
    )
    parser.add_argument(
        "--task",
        choices=TASKS,
        help="the model to write: image-classification (PvtForImageClassification), semantic-segmentation "
        "(PvtForSemanticSegmentation) or object-detection (PvtForObjectDetection, the paper's RetinaNet). Default: "
        "what the checkpoint's head does; a classifier checkpoint with semantic-segmentation or object-detection "
        "gives a new neck and head (pass --num_labels or --labels)",
    )
    parser.add_argument("--output_dir", required=True, type=Path, help="folder to write (must be new or empty)")
    parser.add_argument(
        "--num_labels",
        type=int,
        help="number of labels (named LABEL_0…, or ADE20K's names for a 150-way segmentation head); a number "
        "different from the checkpoint's head gives a new, randomly initialised head. Default: the checkpoint's head, with "
        "ImageNet-1k names for 1000 outputs and ADE20K names for 150-way segmentation heads",
    )
    parser.add_argument(
        "--labels",
        type=parse_labels,
        help="label names: 'a,b,c' or a JSON file (list or {index: name}). A count different from the "
        "checkpoint's head replaces the head with a new, randomly initialised one",
    )
    parser.add_argument(
        "--verify",
        action="store_true",
        help="run the source model (the original layout, or transformers' native PVT) and the converted one at "
        + " and ".join(f"{h}x{w}" for h, w in VERIFY_SIZES)
        + " (segmentation: "
        + " and ".join(f"{h}x{w}" for h, w in VERIFY_SEGMENTATION_SIZES)
        + "; detection: "
        + " and ".join(f"{h}x{w}" for h, w in VERIFY_DETECTION_SIZES)
        + ", plus the detections after post-processing); fail if they differ by more than 1e-4",
    )
    parser.add_argument("--repo_id", help="the Hub repo id the folder is meant for (used in the model card)")
    parser.add_argument(
        "--max_shard_size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help=f"split model.safetensors into shards above this size (default {DEFAULT_MAX_SHARD_SIZE})",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace an existing non-empty --output_dir")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    checkpoint = load_checkpoint(args.checkpoint)
    print(f"Detected format: {checkpoint.format} ({len(checkpoint.state_dict)} tensors in {checkpoint.location})")
    config = PvtConfig.from_json_file(args.config) if args.config else None
    result = build_model(
        checkpoint,
        variant=args.variant,
        num_labels=args.num_labels,
        id2label=args.labels,
        config=config,
        task=args.task,
    )
    for note in result.notes:
        print(f"Labels: {note}")
    if args.verify:
        for line in verify(result):
            print(f"Verify {line}")
    existing_card = Path(args.checkpoint) / "README.md"
    folder = save_hub_folder(
        result.model,
        default_image_processor(checkpoint, result.model.config, result.task),
        args.output_dir,
        max_shard_size=args.max_shard_size,
        overwrite=args.overwrite,
        model_card=existing_card.read_text(encoding="utf-8")
        if checkpoint.format == OWN and checkpoint.task == result.task and existing_card.is_file()
        else None,
        variant=args.variant,
        repo_id=args.repo_id,
        converted_from=f"the {checkpoint.format} checkpoint `{Path(checkpoint.location).name}`",
    )
    print(f"Wrote {folder}: {', '.join(sorted(path.name for path in folder.iterdir()))}")
    return 0


if __name__ == "__main__":
    sys.exit(run_cli(main))
