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
from transformers import UperNetConfig, UperNetForSemanticSegmentation

from modeling_pvt import (
    PvtConfig,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtImageProcessor,
)
from modeling_pvt.heads import save_head_model
from modeling_pvt.hub import save_hub_folder

REPO = Path(__file__).resolve().parents[1]
README = (REPO / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"^```python\n(.*?)^```", README, flags=re.DOTALL | re.MULTILINE)
# What the blocks name: the default runs' model folders, an ImageNet-size classifier folder and published repo ids.
CLASSIFIER_RUN_FOLDER = "outputs/pvt-tiny-sklearn-digits/model"
SEGMENTATION_RUN_FOLDER = "outputs/pvt-tiny-grid-digits/model"
IMAGENET_FOLDER = "pvt-tiny-224"
REPO_IDS = sorted(set(re.findall(r'(?:from_pretrained\(|model=)"([\w-]+/[\w.-]+)"', "\n".join(BLOCKS))))
HEAD_REPO = "org/pvt-tiny-upernet"


def test_the_readme_has_python_blocks():
    assert len(BLOCKS) >= 3 and REPO_IDS == ["org/pvt-small", HEAD_REPO]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("readme")
    digits = {"id2label": {i: str(i) for i in range(10)}, "label2id": {str(i): i for i in range(10)}}
    classifier = PvtForImageClassification(tiny_config(num_labels=10, image_size=32, **digits)).eval()
    save_hub_folder(classifier, PvtImageProcessor(size={"height": 32, "width": 32}), root / CLASSIFIER_RUN_FOLDER)
    segmenter = PvtForSemanticSegmentation(tiny_config(num_labels=11, image_size=64)).eval()
    save_hub_folder(segmenter, PvtImageProcessor.for_segmentation(short_side=64), root / SEGMENTATION_RUN_FOLDER)
    PvtForImageClassification(PvtConfig.from_preset("pvt-tiny", num_labels=1000)).save_pretrained(root / IMAGENET_FOLDER)
    head = UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=tiny_config(out_indices=[0, 1, 2, 3]), hidden_size=16, num_labels=3)
    )
    save_head_model(head, root / "head")
    hub_home = root / "hf_home"
    lay_out_as_hub_cache(root / CLASSIFIER_RUN_FOLDER, hub_home, "org/pvt-small")
    return root, lay_out_as_hub_cache(root / "head", hub_home, HEAD_REPO)


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{index}" for index in range(len(BLOCKS))])
def test_readme_block_runs(block, workspace):
    root, hub_env = workspace
    env = {**os.environ, **hub_env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"README block failed:\n{block}\n{result.stderr[-3000:]}"
