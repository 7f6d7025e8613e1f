"""The model side of the demo, testable without Gradio: which task a checkpoint does (read from its config, without
torch), reading a user's upload into an RGB image (or a readable reason why not), and one prediction per task.

    predictor = Predictor.from_pretrained("outputs/pvt-tiny-sklearn-digits/model")
    image, notes = open_image("photo.png")
    result = predictor.predict(image)   # .top5 / .mask / .detections, and .seconds

Any model object with the transformers call contract works (`model(pixel_values=...)` returning logits or detection
outputs, a processor with `__call__` and `post_process_semantic_segmentation` / `post_process_object_detection`), so
tests can hand in stand-ins."""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

# The architecture a checkpoint's config names -> the demo's task.
TASKS = {
    "PvtForImageClassification": "classification",
    "PvtForSemanticSegmentation": "segmentation",
    "PvtForObjectDetection": "detection",
}
TASK_TITLES = {
    "classification": "image classification",
    "segmentation": "semantic segmentation",
    "detection": "object detection",
}
# Where `python scripts/finetune.py` (no arguments) writes its model: the demo's default.
DEFAULT_MODEL = "outputs/pvt-tiny-sklearn-digits/model"
CREATE_DEFAULT_MODEL = "python scripts/finetune.py"
# Uploads above this many pixels are refused (a 12-megapixel phone photo is fine); the model never sees more than
# DISPLAY_LONG_SIDE pixels a side anyway, as images are shown and predicted at that size.
MAX_PIXELS = 50_000_000
DISPLAY_LONG_SIDE = 1024
TOP_K = 5
# Segmentation logits are upsampled to the picture before the argmax; above this many values (classes x pixels,
# 256 MB in fp32) that is done at a smaller size and the class map enlarged (ADE20K's 150 classes at 1024x768: 472 MB).
MAX_UPSAMPLED_LOGITS = 64_000_000
# Detections are kept down to this score, so that the page's threshold slider filters them without a new run.
MIN_DETECTION_SCORE = 0.01
IMAGE_FORMATS_HINT = "Upload a PNG, JPEG, WebP, BMP, GIF or TIFF picture."


class BadImage(ValueError):
    """An upload the demo cannot use; its message is shown on the page as it is."""


# ------------------------------------------------------------------------------------------------ the checkpoint


def looks_like_repo_id(source: str) -> bool:
    parts = source.split("/")
    return len(parts) == 2 and all(parts) and not source.startswith((".", "~")) and "\\" not in source


def check_model_source(source: str | None) -> str:
    """The `--model` value to load, checked before anything heavy is imported: an existing folder with a
    config.json, or something shaped like a Hub repo id ("org/name"). Raises ValueError with what to do."""
    if source is None:
        if not (Path(DEFAULT_MODEL) / "config.json").is_file():
            raise ValueError(
                f"no model at {DEFAULT_MODEL}, the default. Create it with `{CREATE_DEFAULT_MODEL}` (about 3 minutes "
                "on 2 cores), or pass --model FOLDER_OR_REPO_ID"
            )
        return DEFAULT_MODEL
    path = Path(source).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ValueError(
                f"{source} is a folder but has no config.json: pass the folder a training run saved its model in "
                "(e.g. outputs/<run>/model), or a Hub repo id"
            )
        return str(path)
    if path.exists():
        raise ValueError(f"{source} is a file: --model takes a model folder (with config.json) or a Hub repo id")
    if not looks_like_repo_id(source):
        raise ValueError(f"no model folder at {source}, and it is not a Hub repo id ('org/name') either")
    return source


def read_config(source: str) -> dict:
    """The checkpoint's config.json as a dict (a local folder, or a Hub repo's file through the Hub cache)."""
    path = Path(source).expanduser()
    if path.is_dir():
        config_file = path / "config.json"
    else:
        from huggingface_hub import hf_hub_download

        try:
            config_file = Path(hf_hub_download(source, "config.json"))
        except Exception as error:  # not found, offline, no access: the Hub's own words, on one line
            reason = " ".join(str(error).split())[:300] or type(error).__name__
            raise ValueError(f"cannot read the config of the Hub model {source}: {reason}") from None
    try:
        return json.loads(config_file.read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read the config of {source}: {error}") from error


def task_of(config: dict, source: str = "this checkpoint") -> tuple[str, str]:
    """(task, architecture) from a config's `architectures`; a backbone or an unknown head is refused."""
    architectures = config.get("architectures") or []
    for architecture in architectures:
        if architecture in TASKS:
            return TASKS[architecture], architecture
    known = ", ".join(TASKS)
    named = ", ".join(architectures) or "no architecture"
    raise ValueError(
        f"{source} is a {named} checkpoint; the demo shows models with a task head ({known}). Fine-tune one first, "
        "e.g. with scripts/finetune.py or scripts/finetune_segmentation.py"
    )


def model_class(architecture: str):
    """The class of this package that loads `architecture`, or a ValueError saying it does not exist here yet."""
    import modeling_pvt

    try:
        return getattr(modeling_pvt, architecture)
    except AttributeError:
        raise ValueError(
            f"this checkpoint is a {architecture}, which this version of modeling_pvt does not have; update the "
            "package (pip install -e .) to a version with that model"
        ) from None


# ---------------------------------------------------------------------------------------------------- the upload


def _flatten_alpha(image: Image.Image) -> Image.Image:
    """RGBA/LA/transparent palettes composited on white (what a viewer shows), as RGB."""
    rgba = image.convert("RGBA")
    background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(background, rgba).convert("RGB")


def as_rgb(image: Image.Image) -> tuple[Image.Image, list[str]]:
    """`image` as 8-bit RGB, and a note for each conversion a user would want to know about."""
    from ..image_processing_pvt import to_8_bit

    notes = []
    mode = image.mode
    if getattr(image, "n_frames", 1) > 1:
        notes.append(f"used the first of its {image.n_frames} frames")
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in image.info):
        image = _flatten_alpha(image)
        notes.append(f"{mode} image: transparent parts shown on white")
    elif mode != "RGB":
        wide = to_8_bit(image)
        if wide is not image:
            notes.append(f"{mode} image: scaled to 8 bits")
        elif mode in ("L", "1"):
            notes.append(f"grayscale ({mode}) image: used as RGB with three equal channels")
        elif mode != "P":
            notes.append(f"{mode} image: converted to RGB")
        image = wide.convert("RGB")
    return image, notes


def unreadable(name: str, error: BaseException, max_pixels: int = MAX_PIXELS) -> BadImage:
    """The page's message for a file PIL could not open (`error` is what opening it raised)."""
    if isinstance(error, Image.DecompressionBombError):
        limit = f"{max_pixels / 1e6:.0f} megapixels"
        return BadImage(f"{name} is too large to open safely. Downscale it to at most {limit}.")
    if isinstance(error, UnidentifiedImageError):
        return BadImage(f"Could not read {name}: it is not an image file. {IMAGE_FORMATS_HINT}")
    return BadImage(f"Could not read {name}: {' '.join(str(error).split())}. {IMAGE_FORMATS_HINT}")


def open_image(value, max_pixels: int = MAX_PIXELS) -> tuple[Image.Image, list[str]]:
    """A user's upload (a path, a PIL image or a uint8 array) as an RGB image, downscaled so that its long side is at
    most DISPLAY_LONG_SIDE, and notes on what was done. Raises BadImage with a message for the page."""
    if isinstance(value, BadImage):  # what the page's upload component found
        raise value
    if value is None:
        raise BadImage(f"No image yet. {IMAGE_FORMATS_HINT}")
    if isinstance(value, np.ndarray):
        value = Image.fromarray(value)
    if isinstance(value, Image.Image):
        image = value
        name = "the image"
    else:
        name = Path(str(value)).name
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                image = Image.open(value)
        except Exception as error:
            raise unreadable(name, error, max_pixels) from None
    width, height = image.size
    if width * height > max_pixels:
        raise BadImage(
            f"{name} is {width}×{height} ({width * height / 1e6:.0f} megapixels); the demo takes at most "
            f"{max_pixels / 1e6:.0f} megapixels. Downscale it first."
        )
    if width < 1 or height < 1:
        raise BadImage(f"{name} is empty ({width}×{height}). {IMAGE_FORMATS_HINT}")
    try:
        image = ImageOps.exif_transpose(image)
        image, notes = as_rgb(image)
    except (OSError, ValueError, SyntaxError) as error:  # truncated or corrupt pixel data
        raise unreadable(name, error, max_pixels) from None
    width, height = image.size  # after the EXIF rotation
    if max(image.size) > DISPLAY_LONG_SIDE:
        scale = DISPLAY_LONG_SIDE / max(image.size)
        shown = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(shown, Image.BILINEAR)
        notes.append(f"shown and predicted at {shown[0]}×{shown[1]} (uploaded {width}×{height})")
    image.info["uploaded_size"] = (width, height)  # boxes are reported in the upload's pixels
    return image, notes


# ---------------------------------------------------------------------------------------------------- predicting


@dataclass
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x0, y0, x1, y1 in the predicted image's pixels
    class_id: int


@dataclass
class Prediction:
    seconds: float
    top5: dict[str, float] = field(default_factory=dict)  # classification: label -> probability, best first
    mask: np.ndarray | None = None  # segmentation: (H, W) class ids at the image's size
    detections: list[Detection] = field(default_factory=list)  # detection: every box down to MIN_DETECTION_SCORE


class Predictor:
    """One loaded checkpoint and the prediction for its task."""

    def __init__(self, model, processor, task: str, name: str):
        if task not in TASK_TITLES:
            raise ValueError(f"unknown task {task!r}; one of {', '.join(TASK_TITLES)}")
        self.model, self.processor, self.task, self.name = model, processor, task, name
        config = model.config
        self.id2label = {int(key): str(value) for key, value in (getattr(config, "id2label", None) or {}).items()}

    @classmethod
    def from_pretrained(cls, source: str) -> Predictor:
        """Loads a folder or Hub repo id with this package's classes (no remote code is run)."""
        task, architecture = task_of(read_config(source), source)
        model = model_class(architecture).from_pretrained(source).eval()
        from transformers import AutoImageProcessor

        import modeling_pvt  # noqa: F401 (registers our processor with AutoImageProcessor)

        processor = AutoImageProcessor.from_pretrained(source)
        return cls(model, processor, task, source)

    def label(self, class_id: int) -> str:
        return self.id2label.get(int(class_id), f"class {int(class_id)}")

    @property
    def num_parameters(self) -> int:
        return sum(parameter.numel() for parameter in self.model.parameters())

    def predict(self, image: Image.Image) -> Prediction:
        """The model's output for one RGB image, timed from preprocessing to post-processing."""
        import torch

        start = time.perf_counter()
        with torch.inference_mode():
            inputs = self.processor(images=image, return_tensors="pt")  # with a pixel_mask where it pads
            outputs = self.model(**inputs)
            prediction = getattr(self, f"_{self.task}")(outputs, image)
        prediction.seconds = time.perf_counter() - start
        return prediction

    def _classification(self, outputs, image) -> Prediction:
        logits = outputs.logits[0].float()
        multi_label = getattr(self.model.config, "problem_type", None) == "multi_label_classification"
        scores = logits.sigmoid() if multi_label else logits.softmax(-1)
        values, indices = scores.topk(min(TOP_K, scores.numel()))
        best = zip(values.tolist(), indices.tolist(), strict=True)
        return Prediction(0.0, top5={self.label(index): float(value) for value, index in best})

    def _segmentation(self, outputs, image) -> Prediction:
        num_classes = max(1, outputs.logits.shape[1])
        scale = min(1.0, (MAX_UPSAMPLED_LOGITS / (num_classes * image.width * image.height)) ** 0.5)
        size = (max(1, round(image.height * scale)), max(1, round(image.width * scale)))
        mask = np.asarray(self.processor.post_process_semantic_segmentation(outputs, target_sizes=[size])[0].cpu())
        if size != (image.height, image.width):
            mask = np.asarray(Image.fromarray(mask.astype(np.int32)).resize(image.size, Image.NEAREST))
        return Prediction(0.0, mask=mask.astype(np.int64))

    def _detection(self, outputs, image) -> Prediction:
        size = [(image.height, image.width)]
        found = self.processor.post_process_object_detection(
            outputs, threshold=MIN_DETECTION_SCORE, target_sizes=size
        )[0]
        scores, labels, boxes = (np.asarray(found[key].cpu()) for key in ("scores", "labels", "boxes"))
        detections = [
            Detection(self.label(label), float(score), tuple(float(v) for v in box), int(label))
            for score, label, box in zip(scores, labels, boxes, strict=True)
        ]
        return Prediction(0.0, detections=sorted(detections, key=lambda found: -found.score))
