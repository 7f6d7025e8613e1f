"""Every ```python block of README.md runs as written, offline, in a fresh process: the folders and repo ids the
blocks name exist there (a tiny saved model, also laid out in a Hub cache as the repo id the README uses)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config
from helpers import lay_out_as_hub_cache

from modeling_pvt import PvtForImageClassification, PvtImageProcessor
from modeling_pvt.hub import save_hub_folder

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)
# What the blocks name: the default fine-tuning run's model folder and a published repo id.
RUN_MODEL_FOLDER = "outputs/pvt-tiny-sklearn-digits/model"
REPO_IDS = sorted(set(re.findall(r'from_pretrained\("([\w-]+/[\w.-]+)"', "\n".join(BLOCKS))))


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3 and REPO_IDS == ["org/pvt-small"]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("readme")
    labels = {"id2label": {i: str(i) for i in range(10)}, "label2id": {str(i): i for i in range(10)}}
    model = PvtForImageClassification(tiny_config(num_labels=10, image_size=32, **labels)).eval()
    folder = save_hub_folder(model, PvtImageProcessor(size={"height": 32, "width": 32}), root / RUN_MODEL_FOLDER)
    env = {}
    for repo_id in REPO_IDS:
        env = lay_out_as_hub_cache(folder, root / "hf_home", repo_id)
    return root, env


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{index}" for index in range(len(BLOCKS))])
def test_readme_block_runs(block, workspace):
    root, hub_env = workspace
    env = {**os.environ, **hub_env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"README block failed:\n{block}\n{result.stderr[-3000:]}"
