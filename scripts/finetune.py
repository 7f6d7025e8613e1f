"""Fine-tune or train a PVT image classifier. With no arguments: PVT-Tiny from scratch on the bundled digits.

    python scripts/finetune.py
    python scripts/finetune.py --recipe configuration/recipes/imagenet-pvt-tiny.yaml --dataset_name ...
    accelerate launch --config_file configuration/accelerate/cpu-2proc.yaml scripts/finetune.py ...

All options: python scripts/finetune.py --help (every TrainingArguments flag works). Errors are one `error: …` line;
a bare --debug (or PVT_DEBUG=1) shows the traceback.
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
from modeling_pvt.tasks.classification.task import main

if __name__ == "__main__":
    hint = "Checkpoints written so far are kept: continue with --resume_from_checkpoint last."
    sys.exit(run_cli(main, interrupted_hint=hint))
