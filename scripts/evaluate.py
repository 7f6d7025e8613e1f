"""Evaluate a PVT checkpoint; the mode follows its config's `architectures`. Classifiers: accuracy, top-5, per-class
accuracy, eval_results.json and confusion_matrix.png. Segmentation models (PvtForSemanticSegmentation): mean IoU, IoU
per class and pixel accuracy at full label resolution, eval_results.json and predictions.png.

    python scripts/evaluate.py --model_name_or_path outputs/pvt-tiny-sklearn-digits/model
    python scripts/evaluate.py --model_name_or_path my-model --validation_dir data/val --resolution 288
    python scripts/evaluate.py --model_name_or_path outputs/pvt-tiny-grid-digits/model
    python scripts/evaluate.py --model_name_or_path my-segmenter --validation_dir data/val  # images/ + masks/
    python scripts/evaluate.py --model_name_or_path my-ade-model --dataset_name scene_parse_150 \
        --do_reduce_labels true --eval_scale 2048 512 --batch_size 1

All options: python scripts/evaluate.py --help. Errors are one `error: …` line; --debug shows the traceback.
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
from modeling_pvt.tasks.evaluate import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
