"""Evaluate a PVT classifier checkpoint: accuracy, top-5, per-class accuracy, JSON and a confusion-matrix PNG.

    python scripts/evaluate.py --model_name_or_path outputs/pvt-tiny-sklearn-digits/model
    python scripts/evaluate.py --model_name_or_path my-model --validation_dir data/val --resolution 288

All options: python scripts/evaluate.py --help. Errors are one `error: …` line; --debug shows the traceback.
"""

import sys
from pathlib import Path

# Python puts this folder first on sys.path, where scripts/evaluate.py would shadow the `evaluate` library.
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != Path(__file__).resolve().parent]

from modeling_pvt.cli import run_cli
from modeling_pvt.evaluation import main

if __name__ == "__main__":
    sys.exit(run_cli(main))
