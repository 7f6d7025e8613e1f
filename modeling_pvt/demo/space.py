"""A Hugging Face Space folder that runs this demo for a pushed model: `app.py`, `requirements.txt`, a README.md
with the Space's front matter, and a copy of this package (the Space installs nothing of ours from a registry).

    python scripts/push_to_hub.py outputs/pvt-tiny-sklearn-digits/model my-org/pvt-tiny-digits --space spaces/digits
    hf upload my-org/pvt-tiny-digits-demo spaces/digits --repo-type space

or from Python: `write_space("my-org/pvt-tiny-digits", "spaces/digits")`. Needs no Gradio to write."""

from __future__ import annotations

import importlib.metadata
import re
import shutil
import sys
from pathlib import Path

from .predict import looks_like_repo_id, read_config, task_of

PACKAGE = Path(__file__).resolve().parents[1]
DISTRIBUTION = "pvt-transformers"
MARKER = "# Written by modeling_pvt.demo.space"
# What the Space needs when the installed package's metadata cannot be read (a source checkout never installed).
FALLBACK_REQUIREMENTS = [
    "torch>=2.4", "transformers>=5.0", "huggingface-hub>=1.0", "safetensors>=0.4", "pillow>=10", "numpy>=1.24",
    "scikit-learn>=1.3",
]
DEFAULT_GRADIO_VERSION = "5.0.0"

APP_TEMPLATE = '''{marker} for {model_id}: the same page as `python scripts/demo.py --model {model_id}`.
"""Demo of {model_id} (PVT, Pyramid Vision Transformer). Runs locally too: pip install -r requirements.txt gradio,
then python app.py."""

import os

from modeling_pvt.demo.app import launch
from modeling_pvt.demo.predict import Predictor

MODEL_ID = os.environ.get("PVT_DEMO_MODEL", "{model_id}")

if __name__ == "__main__":
    # host None: Gradio's GRADIO_SERVER_NAME/PORT, which Spaces set (0.0.0.0:7860).
    launch(Predictor.from_pretrained(MODEL_ID), host=None)
'''

README_TEMPLATE = """---
title: {title}
emoji: 🔎
colorFrom: indigo
colorTo: green
sdk: gradio
sdk_version: "{gradio_version}"
python_version: "{python_version}"
app_file: app.py
pinned: false
models:
  - {model_id}
short_description: {short_description}
---

# {model_id}: a PVT {task_hint}demo

Drop a picture on the page to see what [{model_id}](https://huggingface.co/{model_id}) makes of it. The page follows
the model's task (top-5 classes, a segmentation overlay with its legend, or boxes with a score threshold), and shows
the CPU fast path in use and the time per image.

This folder was written by `scripts/push_to_hub.py --space` of the PVT package: `app.py` runs the package's demo
(`modeling_pvt/demo/`, copied here with the rest of the package) for the model above. For a private model, add a
secret `HF_TOKEN` to the Space. Run it locally with `pip install -r requirements.txt gradio && python app.py`.
"""


def _requirements() -> list[str]:
    """The package's own dependencies (its installed metadata, without extras), else a fixed list."""
    try:
        requires = importlib.metadata.requires(DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError:
        return list(FALLBACK_REQUIREMENTS)
    kept = [requirement.split(";")[0].strip() for requirement in requires if "extra ==" not in requirement]
    return kept or list(FALLBACK_REQUIREMENTS)


def _gradio_version() -> str:
    try:
        return importlib.metadata.version("gradio")
    except importlib.metadata.PackageNotFoundError:
        return DEFAULT_GRADIO_VERSION


def _copy_package(destination: Path) -> None:
    def ignored(folder, names):
        return [name for name in names if name == "__pycache__" or name.endswith((".pyc", ".pyo"))]

    shutil.copytree(PACKAGE, destination, ignore=ignored)


def write_space(model_id: str, output_folder: str | Path, model_folder: str | Path | None = None) -> Path:
    """Writes the Space folder for the Hub model `model_id` ("org/name") into `output_folder` and returns it.
    `model_folder`, the local copy of that model, is checked to have a task the demo shows. A folder that holds
    anything but a Space written here before is refused, never overwritten."""
    if not looks_like_repo_id(model_id):
        raise ValueError(f"{model_id!r} is not a Hub repo id ('org/name'): a Space loads the model from the Hub")
    task = None
    if model_folder is not None and Path(model_folder).is_dir():
        task = task_of(read_config(str(model_folder)), str(model_folder))[0]
    output = Path(output_folder)
    if output.exists() and not output.is_dir():
        raise ValueError(f"--space {output} is a file; give a folder for the Space's files")
    if output.is_dir() and any(output.iterdir()):
        app = output / "app.py"
        if not (app.is_file() and app.read_text().startswith(MARKER)):
            raise ValueError(f"--space {output} is not empty and holds no Space written here before; give a new folder")
        for path in (output / "modeling_pvt", app, output / "requirements.txt", output / "README.md"):
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
    output.mkdir(parents=True, exist_ok=True)

    (output / "app.py").write_text(APP_TEMPLATE.format(marker=MARKER, model_id=model_id))
    (output / "requirements.txt").write_text("\n".join(_requirements()) + "\n")
    name = model_id.split("/")[1]
    (output / "README.md").write_text(
        README_TEMPLATE.format(
            title=re.sub(r"[^\w .-]", "", f"PVT {name}")[:30].strip(),
            gradio_version=_gradio_version(),
            python_version=f"{sys.version_info.major}.{sys.version_info.minor}",
            model_id=model_id,
            short_description=f"Try {name} on your own pictures"[:60],
            task_hint=f"{task} " if task else "",
        )
    )
    _copy_package(output / "modeling_pvt")
    return output


def upload_hint(model_id: str, output: Path) -> str:
    return (
        f"Wrote a Space folder for {model_id} to {output}. Publish it with: "
        f"hf upload {model_id}-demo {output} --repo-type space"
    )
