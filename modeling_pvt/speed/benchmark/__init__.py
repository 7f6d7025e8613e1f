"""`scripts/benchmark.py`: our PVT against transformers' native PVT on identical weights (speed, memory, agreement)."""
