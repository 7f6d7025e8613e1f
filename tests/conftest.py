"""Shared fixtures. Tests never touch the network: the Hub is offline and tiny configs keep the suite fast."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from modeling_pvt import PvtConfig  # noqa: E402


def tiny_config(**overrides) -> PvtConfig:
    """A 4-stage PVT with the real layout (patch 4/2/2/2, SR 8/4/2/1, CLS in stage 4) but widths 8/16/32/64."""
    params = dict(
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        num_labels=5,
    )
    return PvtConfig(**{**params, **overrides})


@pytest.fixture
def config() -> PvtConfig:
    return tiny_config()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
