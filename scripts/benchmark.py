"""Benchmark this package's PVT against transformers' native PVT on identical weights; prints a markdown table and
writes JSON (and optionally a PNG plot).

    python scripts/benchmark.py                                   # PVT-Small, batch 8, 224², inference + training
    python scripts/benchmark.py --tasks backbone --modes eager sdpa bf16    # 512², 800x1333, 1024² backbone
    python scripts/benchmark.py --modes native eager compile --plot outputs/benchmark/bench.png

    python scripts/benchmark.py --background-load 3               # the same with 3 busy processes (contention)
    python scripts/benchmark.py --tasks backbone segmentation segmentation-training --presets pvt-tiny pvt-small

All options: python scripts/benchmark.py --help
"""

import os
import runpy
from pathlib import Path

# Flag mistakes are reported before the imports below load torch (seconds): modeling_pvt/cli.py is read by path.
if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "modeling_pvt" / "cli.py"))["check_command_line"](__file__)

# OpenMP threads that wait by spinning burn the time slice of the sibling they wait for when the cores are shared:
# on a 2-core Xeon with 3 busy processes, PVT inference ran ~4-9x slower with the runtime's default than with PASSIVE
# (see README, Performance). OpenMP reads this once, when torch is imported, so it is set before that import.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402

from modeling_pvt.speed.benchmark.run import main  # noqa: E402
from modeling_pvt.cli import run_cli  # noqa: E402

if __name__ == "__main__":
    sys.exit(run_cli(main))
