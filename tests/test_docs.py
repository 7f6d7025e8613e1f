"""Every ```python block of README.md and docs/*.md runs as written, offline, in a fresh process: the folders and
repo ids the blocks name exist there (tiny saved models, also laid out in a Hub cache as the repo ids the pages use)."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import tiny_config
from helpers import REPO, lay_out_as_hub_cache
from transformers import UperNetConfig, UperNetForSemanticSegmentation

from modeling_pvt import (
    PvtConfig,
    PvtForImageClassification,
    PvtForObjectDetection,
    PvtForSemanticSegmentation,
    PvtImageProcessor,
)
from modeling_pvt.checkpoints.heads import save_head_model
from modeling_pvt.checkpoints.hub import save_hub_folder

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCKS = [
    (page.relative_to(REPO), block)
    for page in PAGES
    for block in re.findall(r"^```python\n(.*?)^```", page.read_text(encoding="utf-8"), flags=re.DOTALL | re.MULTILINE)
]
# What the blocks name: the default runs' model folders, an ImageNet-size classifier folder and published repo ids.
CLASSIFIER_RUN_FOLDER = "outputs/pvt-tiny-sklearn-digits/model"
SEGMENTATION_RUN_FOLDER = "outputs/pvt-tiny-grid-digits/model"
DETECTION_RUN_FOLDER = "outputs/pvt-tiny-scattered-digits/model"
IMAGENET_FOLDER = "pvt-tiny-224"
REPO_IDS = sorted(
    set(re.findall(r'(?:from_pretrained\(|model=)"([\w-]+/[\w.-]+)"', "\n".join(block for _, block in BLOCKS)))
)
HEAD_REPO = "org/pvt-tiny-upernet"


def test_the_readme_and_docs_have_python_blocks():
    assert len([page for page, _ in BLOCKS if page.name == "README.md"]) >= 3
    assert REPO_IDS == ["org/pvt-small", HEAD_REPO]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("readme")
    digits = {"id2label": {i: str(i) for i in range(10)}, "label2id": {str(i): i for i in range(10)}}
    classifier = PvtForImageClassification(tiny_config(num_labels=10, image_size=32, **digits)).eval()
    save_hub_folder(classifier, PvtImageProcessor(size={"height": 32, "width": 32}), root / CLASSIFIER_RUN_FOLDER)
    segmenter = PvtForSemanticSegmentation(tiny_config(num_labels=11, image_size=64)).eval()
    save_hub_folder(segmenter, PvtImageProcessor.for_segmentation(short_side=64), root / SEGMENTATION_RUN_FOLDER)
    narrow = {"fpn_hidden_size": 16, "detection_head_hidden_size": 16, "detection_head_num_convs": 1}
    detector = PvtForObjectDetection(tiny_config(num_labels=10, image_size=128, **narrow, **digits)).eval()
    canvas_processor = PvtImageProcessor.for_detection(long_side=128, short_side=128)
    save_hub_folder(detector, canvas_processor, root / DETECTION_RUN_FOLDER)
    PvtForImageClassification(PvtConfig.from_preset("pvt-tiny", num_labels=1000)).save_pretrained(root / IMAGENET_FOLDER)
    head = UperNetForSemanticSegmentation(
        UperNetConfig(backbone_config=tiny_config(out_indices=[0, 1, 2, 3]), hidden_size=16, num_labels=3)
    )
    save_head_model(head, root / "head")
    hub_home = root / "hf_home"
    lay_out_as_hub_cache(root / CLASSIFIER_RUN_FOLDER, hub_home, "org/pvt-small")
    return root, lay_out_as_hub_cache(root / "head", hub_home, HEAD_REPO)


@pytest.mark.parametrize(
    "page, block", BLOCKS, ids=[f"{page.stem}-{index}" for index, (page, _) in enumerate(BLOCKS)]
)
def test_docs_block_runs(page, block, workspace):
    root, hub_env = workspace
    env = {**os.environ, **hub_env, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=root, env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, f"{page} block failed:\n{block}\n{result.stderr[-3000:]}"
