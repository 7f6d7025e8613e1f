"""Benchmark this package's PVT against transformers' native PVT on identical weights; prints a markdown table and
writes JSON (and optionally a PNG plot).

    python scripts/benchmark.py                                   # PVT-Small, batch 8, 224², inference + training
    python scripts/benchmark.py --tasks backbone --modes eager sdpa bf16    # 512², 800x1333, 1024² backbone
    python scripts/benchmark.py --modes native eager compile --plot outputs/benchmark/bench.png

All options: python scripts/benchmark.py --help
"""

import sys

from modeling_pvt.benchmarking import main
from modeling_pvt.cli import run_cli

if __name__ == "__main__":
    sys.exit(run_cli(main))
