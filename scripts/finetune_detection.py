"""Fine-tune or train PVT + RetinaNet for object detection. With no arguments: PVT-Tiny from scratch on the scattered
digits built from scikit-learn's bundled digits (no network).

    python scripts/finetune_detection.py
    python scripts/finetune_detection.py --train_dir data/train --validation_dir data/val \
        --model_name_or_path outputs/pvt-small-imagenet/model
    python scripts/finetune_detection.py --dataset_name cppe-5 --model_name_or_path your-org/pvt-small-224
    python scripts/finetune_detection.py --recipe configuration/recipes/coco-retinanet-pvt-small.yaml \
        --model_name_or_path your-org/pvt-small-224
    accelerate launch --config_file configuration/accelerate/cpu-2proc.yaml scripts/finetune_detection.py

All options: python scripts/finetune_detection.py --help (every TrainingArguments flag works). Errors are one
`error: …` line; a bare --debug (or PVT_DEBUG=1) shows the traceback.
"""

import runpy
import sys
from pathlib import Path

# Flag mistakes are reported before the imports below load torch (seconds): modeling_pvt/cli.py is read by path.
if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "modeling_pvt" / "cli.py"))["check_command_line"](__file__)

# Python puts this folder first on sys.path, where scripts/evaluate.py would shadow the `evaluate` library.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from modeling_pvt.cli import run_cli
from modeling_pvt.tasks.detection.task import main

if __name__ == "__main__":
    hint = "Checkpoints written so far are kept: continue with --resume_from_checkpoint last."
    sys.exit(run_cli(main, interrupted_hint=hint))
