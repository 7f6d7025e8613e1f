"""Shared by the demo's tests: tiny saved checkpoints for each task, a stand-in detector, pictures (good and bad),
starting the app on a free localhost port, and the skip-or-fail rule for optional tools (gradio, chromium).

Not a conftest.py: the suite imports `conftest` by name, and a second one would shadow it."""

from __future__ import annotations

import os
import shutil
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")

CLASS_NAMES = ["tabby cat", "golden retriever", "zebra", "tulip", "pagoda", "teapot"]
TOP_CLASS = "pagoda"  # the tiny classifier's bias makes it the top label for any image
SEGMENTATION_NAMES = ["background", "sky", "tree", "road"]
DETECTION_NAMES = ["cat", "dog"]
# The stand-in detector's boxes: (score, class id, box as fractions of the image's width/height).
STUB_BOXES = [(0.92, 0, (0.05, 0.10, 0.45, 0.70)), (0.71, 1, (0.50, 0.20, 0.95, 0.90)), (0.30, 0, (0.3, 0.3, 0.6, 0.6))]
SCREENS = Path("/tmp/demo_screens")
CHROMIUM_INSTALL = "apt-get update && apt-get install -y chromium chromium-driver"


def require(condition: bool, what: str, install: str) -> None:
    """Skip when an optional tool is missing, saying how to install it; under CI (the CI variable set) fail instead,
    since .ci/run installs everything these tests need."""
    if condition:
        return
    message = f"{what} is not installed: {install}"
    if os.environ.get("CI"):
        pytest.fail(f"{message} (CI is set, so this is a failure, not a skip)")
    pytest.skip(message, allow_module_level=True)


def require_gradio() -> None:
    import importlib.util

    for module in ("gradio", "gradio_client"):
        require(importlib.util.find_spec(module) is not None, module, 'pip install -e ".[demo]"')


# ---------------------------------------------------------------------------------------------------- checkpoints


def tiny_classifier_folder(folder: Path) -> Path:
    """A random-weight 6-class PVT classifier with ImageNet-like names whose bias makes TOP_CLASS win."""
    from conftest import tiny_config

    from modeling_pvt import PvtForImageClassification, PvtImageProcessor

    id2label = dict(enumerate(CLASS_NAMES))
    model = PvtForImageClassification(
        tiny_config(num_labels=len(CLASS_NAMES), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    )
    with torch.no_grad():
        model.classifier.bias.copy_(torch.linspace(0.0, 1.0, len(CLASS_NAMES)))
        model.classifier.bias[CLASS_NAMES.index(TOP_CLASS)] = 6.0
    model.save_pretrained(folder)
    PvtImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def tiny_segmentation_folder(folder: Path) -> Path:
    """A random-weight 4-class PVT Semantic FPN (width 16) whose classifier favours two classes, so that the legend
    shows more than one."""
    from conftest import tiny_config

    from modeling_pvt import PvtForSemanticSegmentation, PvtImageProcessor

    id2label = dict(enumerate(SEGMENTATION_NAMES))
    config = tiny_config(
        fpn_hidden_size=16, decoder_hidden_size=16, num_labels=len(SEGMENTATION_NAMES), id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    model = PvtForSemanticSegmentation(config)
    head = [module for name, module in model.named_modules() if name.endswith("classifier")][-1]
    with torch.no_grad():
        # Class "sky" for bright pixels' features and "tree" elsewhere would need training; a weight pattern that
        # splits the (random) features between two classes is enough for a legend with several rows.
        head.weight.mul_(4.0)
        head.bias.copy_(torch.tensor([-5.0, 0.0, 0.0, -5.0]))
    model.save_pretrained(folder)
    PvtImageProcessor.for_segmentation(short_side=64).save_pretrained(folder)
    return folder


def tiny_detector_folder(folder: Path) -> Path:
    """A random-weight 2-class PVT RetinaNet (widths 16) whose classifier is scaled so that a handful of boxes on
    the photo score above 0.5 (untrained, every anchor would score the prior, 0.01)."""
    from conftest import tiny_config

    from modeling_pvt import PvtForObjectDetection, PvtImageProcessor

    torch.manual_seed(0)
    id2label = dict(enumerate(DETECTION_NAMES))
    config = tiny_config(
        fpn_hidden_size=16, detection_head_hidden_size=16, detection_head_num_convs=1,
        num_labels=len(DETECTION_NAMES), id2label=id2label, label2id={v: k for k, v in id2label.items()},
    )
    model = PvtForObjectDetection(config)
    classifier = model.head.classifier  # channel a * num_labels + c: anchor a's class c
    with torch.no_grad():
        classifier.weight.normal_(0.0, 0.5)
        classifier.bias.fill_(-4.6)
        classifier.bias[4 * len(DETECTION_NAMES) : 5 * len(DETECTION_NAMES)] = torch.tensor([-1.0, -1.5])
    model.save_pretrained(folder)
    PvtImageProcessor.for_detection(long_side=160, short_side=128).save_pretrained(folder)
    return folder


class StubDetectionProcessor:
    """The detection processor contract (DETR's): `post_process_object_detection(outputs, threshold, target_sizes)`
    gives one dict per image with `scores`, `labels` and `boxes` (x0, y0, x1, y1 in the target size's pixels)."""

    def __call__(self, images, return_tensors="pt"):
        return {"pixel_values": torch.zeros(1, 3, 32, 32)}

    def post_process_object_detection(self, outputs, threshold=0.5, target_sizes=None):
        height, width = target_sizes[0]
        scores = torch.tensor([score for score, _, _ in STUB_BOXES])
        labels = torch.tensor([label for _, label, _ in STUB_BOXES])
        corners = [(x0 * width, y0 * height, x1 * width, y1 * height) for _, _, (x0, y0, x1, y1) in STUB_BOXES]
        boxes = torch.tensor(corners)
        keep = scores > threshold
        return [{"scores": scores[keep], "labels": labels[keep], "boxes": boxes[keep]}]


class StubDetector(torch.nn.Module):
    """Stands in for PvtForObjectDetection: a config with id2label and an output with logits and boxes."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(2))
        self.config = SimpleNamespace(
            id2label=dict(enumerate(DETECTION_NAMES)), architectures=["PvtForObjectDetection"], problem_type=None
        )

    def forward(self, pixel_values):
        return SimpleNamespace(logits=torch.zeros(1, len(STUB_BOXES), 2), pred_boxes=torch.zeros(1, len(STUB_BOXES), 4))


def stub_detection_predictor():
    from modeling_pvt.demo.predict import Predictor

    return Predictor(StubDetector().eval(), StubDetectionProcessor(), "detection", "stub-detector")


def expected_stub_boxes(threshold: float) -> int:
    return sum(score >= threshold for score, _, _ in STUB_BOXES)


# ------------------------------------------------------------------------------------------------------- pictures


def photo(folder: Path, name: str = "china.png") -> Path:
    """scikit-learn's photo of a temple, as a PNG file a user would upload."""
    from sklearn.datasets import load_sample_image

    path = folder / name
    Image.fromarray(load_sample_image("china.jpg")).resize((320, 214)).save(path)
    return path


def not_an_image(folder: Path) -> Path:
    """Text with an image's name: passes the browser's file-type filter, fails on the server."""
    path = folder / "holiday.png"
    path.write_text("this is a text file, not a PNG\n" * 20)
    return path


def rgba_png(folder: Path) -> Path:
    pixels = np.zeros((48, 64, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[:, 32:, 3] = 255  # the left half fully transparent
    path = folder / "logo-rgba.png"
    Image.fromarray(pixels, mode="RGBA").save(path)
    return path


def grayscale_png(folder: Path) -> Path:
    path = folder / "scan-gray.png"
    Image.fromarray(np.tile(np.arange(64, dtype=np.uint8) * 4, (48, 1)), mode="L").save(path)
    return path


# --------------------------------------------------------------------------------------------------------- server


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_app(predictor, examples_folder: Path, **build_kwargs):
    """The app for `predictor` serving on a free localhost port in this process's threads; returns (app, url).
    Close with `app.close()`."""
    from modeling_pvt.demo.app import build_app

    app = build_app(predictor, examples_folder=examples_folder, **build_kwargs)
    app.queue(default_concurrency_limit=1)
    app.launch(
        server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, share=False,
        allowed_paths=[app.examples_folder], ssr_mode=False,
    )
    return app, app.local_url


def save_screen(path: Path, task: str) -> None:
    """A copy of a screenshot in /tmp/demo_screens/, one per task, for people to look at."""
    SCREENS.mkdir(parents=True, exist_ok=True)
    shutil.copy(path, SCREENS / f"{task}.png")
