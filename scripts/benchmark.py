"""Benchmark this package's PVT against transformers' native PVT on identical weights; prints a markdown table and
writes JSON (and optionally a PNG plot).

    python scripts/benchmark.py                                   # PVT-Small, batch 8, 224², inference + training
    python scripts/benchmark.py --tasks backbone --modes eager sdpa bf16    # 512², 800x1333, 1024² backbone
    python scripts/benchmark.py --modes native eager compile --json outputs/benchmark.json --plot outputs/bench.png

All options: python scripts/benchmark.py --help
"""

from modeling_pvt.benchmarking import main

if __name__ == "__main__":
    main()
