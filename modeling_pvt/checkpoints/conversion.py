"""Turning checkpoints from elsewhere into this package's `PvtForImageClassification`,
`PvtForSemanticSegmentation` or `PvtForObjectDetection`, and checking the result.

Five sources are recognised from their parameter names (never from the file name):

- the original PVT release (`pvt_tiny.pth` …: `patch_embed1.proj.weight`, `block1.0.attn.kv.weight`, …), a bare
  state dict or wrapped as `{"model": state_dict}`;
- the original Semantic FPN release (`fpn_pvt_s_ade20k_40k.pth`: mmseg's `{"state_dict": …, "meta": …}` with
  `backbone.patch_embed1.…`, `neck.lateral_convs.0.conv.…`, `decode_head.conv_seg.…`);
- the original RetinaNet release (`retinanet_pvt_s_fpn_1x_coco.pth`: mmdet's `{"state_dict": …, "meta": …}` with
  `backbone.patch_embed1.…`, `neck.fpn_convs.4.conv.…`, `bbox_head.retina_cls.…`, `bbox_head.retina_reg.…`);
- transformers' native PVT (`encoder.patch_embeddings.0.projection.weight`, …), a folder, a Hub repo id or a
  weights file;
- this package's own layout (`pvt.encoder.stages.0…`), e.g. a model fine-tuned with our scripts.

Key names are translated with the tables in `modeling_pvt.py` (`modeling_pvt_detection.py` for mmdet's). Files are read
with `torch.load(..., weights_only=True)`, so a pickle that would run code is refused, never executed.
"""

import copy
import json
import math
import pickle
import re
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
from transformers import PretrainedConfig

from ..configuration_pvt import PRESETS, PvtConfig, preset_name
from ..image_processing_pvt import PvtImageProcessor
from ..modeling_pvt import (
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    convert_mmseg_state_dict,
    convert_native_config,
    convert_native_state_dict,
    convert_original_state_dict,
    load_checkpoint_weights,
    read_checkpoint_json,
)
from ..modeling_pvt_detection import PvtForObjectDetection, convert_mmdet_state_dict

ORIGINAL = "original PVT release"
MMSEG = "original Semantic FPN release (mmseg)"
MMDET = "original RetinaNet release (mmdet)"
NATIVE = "transformers-native PVT"
OWN = "pvt-transformers (this package)"
# Names that only occur in one layout; the first match decides.
_FORMAT_MARKERS = (
    # Before mmseg: both start with `backbone.patch_embed1.`.
    (MMDET, ("bbox_head.retina_cls.", "bbox_head.retina_reg.")),
    (MMSEG, ("backbone.patch_embed1.", "decode_head.conv_seg.")),
    (ORIGINAL, ("patch_embed1.", "pos_embed1", "block1.")),
    (NATIVE, ("encoder.patch_embeddings.", "pvt.encoder.patch_embeddings.", "encoder.block.", "pvt.encoder.block.")),
    (OWN, ("encoder.stages.", "pvt.encoder.stages.")),
)
# Training scripts often save `{"model": state_dict, "optimizer": …}`; the original release uses "model".
_WRAPPER_KEYS = ("model", "state_dict")
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
VERIFY_SIZES = ((224, 224), (192, 288))
# The paper's segmentation test size, and a non-square one whose sides are not multiples of 32.
VERIFY_SEGMENTATION_SIZES = ((512, 512), (480, 650))
# A 640x480 photo as the paper's COCO test transform feeds it (1067x800, padded to 1088x800), and a non-square size
# whose sides are not multiples of 32.
VERIFY_DETECTION_SIZES = ((800, 1088), (750, 1333))
# Detections after post-processing: the same boxes, labels and order, box corners within this many pixels.
VERIFY_BOX_TOLERANCE = 1e-2
VERIFY_TOLERANCE = 1e-4
CLASSIFIER_PREFIX = "classifier."
NATIVE_MODEL_TYPE = "pvt"  # transformers' own PVT
SEGMENTATION_CLASSIFIER_PREFIX = "decode_head.classifier."
DETECTION_CLASSIFIER_PREFIX = "head.classifier."
CLASSIFICATION, SEGMENTATION, DETECTION = "image-classification", "semantic-segmentation", "object-detection"
TASKS = (CLASSIFICATION, SEGMENTATION, DETECTION)
_MODEL_CLASSES = {
    CLASSIFICATION: PvtForImageClassification,
    SEGMENTATION: PvtForSemanticSegmentation,
    DETECTION: PvtForObjectDetection,
}
# What a new head replaces: the classifier's Linear; for segmentation the last 1x1 conv, or (starting from a
# classifier) the whole neck and decode head.
_NEW_HEAD_PREFIXES = {
    (CLASSIFICATION, CLASSIFICATION): (CLASSIFIER_PREFIX,),
    (SEGMENTATION, SEGMENTATION): (SEGMENTATION_CLASSIFIER_PREFIX,),
    (CLASSIFICATION, SEGMENTATION): ("neck.", "decode_head."),
    (DETECTION, DETECTION): (DETECTION_CLASSIFIER_PREFIX,),
    (CLASSIFICATION, DETECTION): ("neck.", "head."),
}
# Parts of a classifier that the dense segmentation model has no use for (its CLS token is dropped only when the
# model has none; the CLS slot of the stage-4 position embeddings is kept).
_CLASSIFIER_ONLY_PREFIXES = ("norm.", CLASSIFIER_PREFIX)


class ConversionError(ValueError):
    """The checkpoint cannot be converted as asked; the message names the problem and the fix."""


@dataclass
class Checkpoint:
    """A loaded source checkpoint: its detected format and weights in this package's base-model names."""

    location: str
    format: str
    state_dict: dict
    original_state_dict: dict | None = None  # the untranslated original weights, to run the original layout
    config: PvtConfig | None = None  # only when the source carries one (a folder or Hub repo)
    image_processor: PvtImageProcessor | None = None
    class_names: list[str] | None = None  # mmseg checkpoints record their dataset's classes in `meta`

    @property
    def task(self) -> str:
        """What the checkpoint's head does: semantic segmentation when it has a decode head, object detection when it
        has a box regressor."""
        if any(key.startswith("decode_head.") for key in self.state_dict):
            return SEGMENTATION
        if "head.box_regressor.weight" in self.state_dict:
            return DETECTION
        return CLASSIFICATION

    @property
    def head_size(self) -> int | None:
        """The number of classes of the checkpoint's head (a detector's classifier has one set per anchor shape)."""
        if self.task == DETECTION:
            anchors = self.state_dict["head.box_regressor.weight"].shape[0] // 4
            weight = self.state_dict.get(f"{DETECTION_CLASSIFIER_PREFIX}weight")
            return None if weight is None else weight.shape[0] // anchors
        prefix = SEGMENTATION_CLASSIFIER_PREFIX if self.task == SEGMENTATION else CLASSIFIER_PREFIX
        weight = self.state_dict.get(f"{prefix}weight")
        return None if weight is None else weight.shape[0]


@dataclass
class ConversionResult:
    model: PvtForImageClassification | PvtForSemanticSegmentation | PvtForObjectDetection
    source: Checkpoint
    new_head: bool
    notes: list[str] = field(default_factory=list)

    @property
    def task(self) -> str:
        return next(task for task, model_class in _MODEL_CLASSES.items() if isinstance(self.model, model_class))


def _shipped_labels(filename: str) -> dict[int, str]:
    text = resources.files("modeling_pvt").joinpath(filename).read_text(encoding="utf-8")
    return {int(index): name for index, name in json.loads(text).items()}


def imagenet_id2label() -> dict[int, str]:
    """The 1000 ImageNet-1k class names shipped with the package (index -> name)."""
    return _shipped_labels("imagenet_labels.json")


def ade20k_id2label() -> dict[int, str]:
    """The 150 ADE20K (SceneParsing) class names shipped with the package, in mmseg's `ADE20KDataset` order."""
    return _shipped_labels("ade20k_labels.json")


def coco_id2label() -> dict[int, str]:
    """The 80 COCO detection class names shipped with the package, in mmdet's `CocoDataset.CLASSES` order."""
    return _shipped_labels("coco_labels.json")


def read_pvt_config(name_or_path: str) -> dict:
    """The config dict of a saved PVT model (ours or transformers-native) given as a folder or Hub repo id, checked
    before any weights are read: a missing folder, a weights file or another model type get an error that says so
    (instead of a Hub repo-id error, a network wait or a failure deep inside the model)."""
    path = Path(name_or_path).expanduser()
    if path.is_file():
        raise ConversionError(
            f"{path} is a file, not a saved model folder. Convert a weights file first: python "
            f"scripts/convert_checkpoint.py --checkpoint {path} --variant <preset> --output_dir <folder>."
        )
    first_part = Path(name_or_path.split("/")[0]).expanduser()
    looks_local = name_or_path.startswith((".", "/", "~")) or name_or_path.count("/") != 1 or first_part.is_dir()
    if not path.exists() and looks_local:
        raise FileNotFoundError(
            f"The model folder {name_or_path} does not exist. Check the path (a fine-tuning run writes its model to "
            "<output_dir>/model); a Hub repo id has the form org-or-user/name."
        )
    if path.is_dir() and not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path} has no config.json, so it is not a saved model folder. Pass the folder written by "
            "save_pretrained (a fine-tuning run's <output_dir>/model), or convert a checkpoint with "
            "scripts/convert_checkpoint.py."
        )
    config, _ = PretrainedConfig.get_config_dict(name_or_path)
    model_type = config.get("model_type")
    if model_type not in (PvtConfig.model_type, NATIVE_MODEL_TYPE):
        architectures = ", ".join(config.get("architectures") or []) or "unknown architecture"
        raise ConversionError(
            f"{name_or_path} is not a PVT checkpoint: its config.json has model_type {model_type!r} "
            f"({architectures}). Pass a PVT v1 model (this package's or transformers' native PVT), or train from "
            "scratch with --config_name <preset>."
        )
    return config


def key_problems(weights: dict, expected: dict, missing: list[str], target: str) -> list[str]:
    """One line each for the missing, unexpected and mis-shaped keys of `weights` against `expected` (a model's
    state dict), at most 12 names a line; empty when everything fits."""
    unexpected = [key for key in weights if key not in expected]
    mis_shaped = [
        f"{key}: checkpoint {tuple(weights[key].shape)} vs {target} {tuple(expected[key].shape)}"
        for key in weights
        if key in expected and weights[key].shape != expected[key].shape
    ]
    return [
        f"{title} ({len(keys)}): " + ", ".join(keys[:12]) + (" …" if len(keys) > 12 else "")
        for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped))
        if keys
    ]


def detect_format(keys) -> str:
    keys = list(keys)
    for name, markers in _FORMAT_MARKERS:
        if any(key.startswith(markers) for key in keys):
            return name
    raise ConversionError(
        f"Could not tell which PVT layout this checkpoint uses; its first keys are {keys[:8]}. Expected an original "
        "PVT release checkpoint (patch_embed1.proj.weight, …), an original Semantic FPN checkpoint "
        "(backbone.patch_embed1.proj.weight, …, decode_head.conv_seg.weight), a transformers-native PVT checkpoint "
        "(encoder.patch_embeddings.0.projection.weight, …) or one saved by this package."
    )


def load_weights_file(path: Path) -> dict:
    """A state dict from a `.pth`/`.pt`/`.bin`/`.safetensors` file, loaded without running any pickled code."""
    return _read_weights_file(path)[0]


def _read_weights_file(path: Path) -> tuple[dict, list[str] | None]:
    """The state dict and, for mmseg checkpoints, the class names their `meta` records."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path), None
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise ConversionError(
            f"Refusing to load {path}: it contains pickled Python objects besides tensors, and unpickling them could "
            "run arbitrary code, so it was not opened that way. If you trust its origin, re-save just the weights "
            "(`torch.save(checkpoint['model'], 'weights.pth')` or safetensors) and convert that file."
            + _blocked_global(error)
        ) from error
    except (RuntimeError, OSError, EOFError) as error:
        raise ConversionError(
            f"Could not read {path} as a PyTorch checkpoint ({error}). Is the file complete?"
        ) from error
    meta = loaded.get("meta") if isinstance(loaded, dict) else None
    class_names = meta.get("CLASSES") if isinstance(meta, dict) else None
    return _unwrap(loaded, path), [str(name).strip() for name in class_names] if class_names else None


def _blocked_global(error: Exception) -> str:
    """The line of torch's message naming the object that was refused (the rest suggests weights_only=False)."""
    lines = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line.upper()]
    return f"\nRefused: {lines[0]}" if lines else ""


def _unwrap(loaded, path) -> dict:
    if isinstance(loaded, dict):
        for wrapper in _WRAPPER_KEYS:
            if isinstance(loaded.get(wrapper), dict):
                loaded = loaded[wrapper]
                break
    if not isinstance(loaded, dict):
        raise ConversionError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors.")
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise ConversionError(
            f"{path} is not a plain state dict: entries {not_tensors[:8]} are not tensors. Expected the weights "
            "alone or wrapped as {'model': state_dict}."
        )
    return loaded


def load_checkpoint(location) -> Checkpoint:
    """Reads a weights file, a folder or a cached Hub repo id and detects its layout."""
    path = Path(location)
    if path.is_file():
        if path.suffix not in WEIGHT_FILE_SUFFIXES:
            raise ConversionError(
                f"{path} has suffix {path.suffix!r}; expected one of {', '.join(WEIGHT_FILE_SUFFIXES)} or a folder."
            )
        raw, class_names = _read_weights_file(path)
        checkpoint = _translated(str(path), raw, config=None, image_processor=None)
        checkpoint.class_names = class_names
        return checkpoint
    if not path.exists() and not re.fullmatch(r"[\w.-]+/[\w.-]+", str(location)):
        raise ConversionError(f"{location} does not exist. Give a checkpoint file, a folder or a Hub repo id.")
    try:
        config_dict = read_checkpoint_json(str(location), "config.json", {})
    except OSError as error:
        raise ConversionError(
            f"{location} is neither a local file or folder nor a Hub repo that can be fetched ({error})."
        ) from error
    if config_dict is None:
        raise ConversionError(
            f"{location} has no config.json. Point --checkpoint at the weights file itself, or at a folder saved "
            "with save_pretrained."
        )
    try:
        raw = load_checkpoint_weights(str(location), {})
    except OSError as error:
        raise ConversionError(f"{error} Save the model with save_pretrained, or pass the weights file.") from error
    model_type = config_dict.get("model_type")
    if model_type == NATIVE_MODEL_TYPE:
        config = PvtConfig(**convert_native_config(config_dict))
        image_processor = None
    elif model_type == PvtConfig.model_type:
        config = PvtConfig.from_pretrained(str(location))
        has_processor = read_checkpoint_json(str(location), "preprocessor_config.json", {}) is not None
        image_processor = PvtImageProcessor.from_pretrained(str(location)) if has_processor else None
    else:
        raise ConversionError(
            f"{location}/config.json has model_type {model_type!r}; expected 'pvt' (transformers' native PVT) "
            f"or {PvtConfig.model_type!r} (this package)."
        )
    return _translated(str(location), raw, config=config, image_processor=image_processor)


def _translated(location, raw: dict, config, image_processor) -> Checkpoint:
    source_format = detect_format(raw)
    try:
        if source_format == ORIGINAL:
            num_stages = len({key.split(".")[0] for key in raw if key.startswith("patch_embed")})
            state_dict = convert_original_state_dict(raw, num_stages=num_stages)
        elif source_format == MMSEG:
            state_dict = convert_mmseg_state_dict(raw)
        elif source_format == MMDET:
            state_dict = convert_mmdet_state_dict(raw)
        elif source_format == NATIVE:
            state_dict = convert_native_state_dict(raw)
        else:
            state_dict = {key.removeprefix("pvt."): tensor for key, tensor in raw.items()}
    except ValueError as error:
        raise ConversionError(f"{location}: {error}") from error
    return Checkpoint(
        location=location,
        format=source_format,
        state_dict=state_dict,
        original_state_dict=raw if source_format in (ORIGINAL, MMSEG, MMDET) else None,
        config=config,
        image_processor=image_processor,
    )


def _stored_image_size(state_dict: dict, config: PvtConfig) -> int | None:
    """The (square) training resolution implied by stage 1's position embeddings, if they are present."""
    embeddings = state_dict.get("encoder.stages.0.embeddings.position_embeddings")
    if embeddings is None:
        return None
    side = math.isqrt(embeddings.shape[1])
    return side * config.patch_sizes[0] if side * side == embeddings.shape[1] else None


def _architecture(checkpoint: Checkpoint, variant: str | None, config: PvtConfig | None) -> PvtConfig:
    if config is not None:
        return copy.deepcopy(config)
    if checkpoint.config is not None:
        config = checkpoint.config
        if variant is not None:
            preset = PvtConfig.from_preset(variant)
            different = [
                name for name in PRESETS[preset_name(variant)] if getattr(config, name) != getattr(preset, name)
            ]
            if different:
                raise ConversionError(
                    f"{checkpoint.location} is not {variant}: its config differs in {', '.join(different)}. Drop "
                    "--variant (the folder's config decides) or pick the matching variant."
                )
        return config
    if variant is None:
        raise ConversionError(
            f"{checkpoint.location} is a bare weights file, so the architecture must be given: pass --variant "
            f"(one of {', '.join(PRESETS)}) or --config with a config.json for a custom size."
        )
    config = PvtConfig.from_preset(variant)
    image_size = _stored_image_size(checkpoint.state_dict, config)
    if image_size is not None:
        config.image_size = image_size
    return config


def _labels(checkpoint: Checkpoint, task: str, num_labels, id2label) -> tuple[dict, bool, str]:
    """The label set, whether it needs a new head, and a sentence saying where it came from."""
    # A classifier's Linear is no segmentation head: starting from one, segmentation always gets a new head.
    head_size = checkpoint.head_size if checkpoint.task == task else None
    head_name = {SEGMENTATION: "segmentation head", DETECTION: "detection head"}.get(task, "classifier head")
    if id2label is not None and num_labels is not None and len(id2label) != num_labels:
        raise ConversionError(f"--num_labels {num_labels} disagrees with the {len(id2label)} label names given.")
    known = _known_label_set(task, num_labels) if id2label is None and num_labels is not None else None
    if known is not None:
        id2label = known[0]
    elif id2label is None and num_labels is not None:
        id2label = {index: f"LABEL_{index}" for index in range(num_labels)}
    if id2label is not None:
        named = f" ({known[1]})" if known else ""
        if len(id2label) == head_size:
            note = f"kept the checkpoint's {head_size}-way head with the given label names{named}"
            return id2label, False, note
        with_neck = " with the FPN neck" if task != CLASSIFICATION and checkpoint.task == CLASSIFICATION else ""
        return (
            id2label,
            True,
            (
                f"new {len(id2label)}-way {head_name}{named}, randomly initialised{with_neck} (the checkpoint's "
                + (f"{head_name} has {head_size} outputs" if head_size else f"{head_name} is absent")
                + "); fine-tune before use"
            ),
        )
    if head_size is None:
        raise ConversionError(
            f"{checkpoint.location} has no {head_name}. Pass --num_labels N or --labels FILE to attach a new one"
            + {
                SEGMENTATION: " (--num_labels 150 names the classes as ADE20K's).",
                DETECTION: " (--num_labels 80 names the classes as COCO's).",
            }.get(task, ".")
        )
    source_labels = checkpoint.config.id2label if checkpoint.config is not None else {}
    # transformers fills id2label with placeholders LABEL_0… when a config has none; those are not names.
    named = any(name != f"LABEL_{index}" for index, name in source_labels.items())
    if named and len(source_labels) == head_size:
        return dict(source_labels), False, "label names from the source config"
    if checkpoint.class_names and len(checkpoint.class_names) == head_size:
        return dict(enumerate(checkpoint.class_names)), False, "label names from the checkpoint's meta.CLASSES"
    known = _known_label_set(task, head_size)
    if known is not None:
        return known[0], False, f"{head_size}-way head: {known[1]}"
    return (
        {index: f"LABEL_{index}" for index in range(head_size)},
        False,
        f"{head_size}-way head without label names: using LABEL_0…; pass --labels FILE to name them",
    )


def _known_label_set(task: str, size: int) -> tuple[dict, str] | None:
    """The shipped label names a head of `size` outputs stands for: ImageNet-1k classifiers, ADE20K segmenters."""
    if task == CLASSIFICATION and size == 1000:
        return imagenet_id2label(), "ImageNet-1k label names"
    if task == SEGMENTATION and size == 150:
        return ade20k_id2label(), "ADE20K class names"
    if task == DETECTION and size == 80:
        return coco_id2label(), "COCO class names"
    return None


def build_model(
    checkpoint: Checkpoint, variant=None, num_labels=None, id2label=None, config=None, task: str | None = None
) -> ConversionResult:
    """A `PvtForImageClassification` (task "image-classification") or `PvtForSemanticSegmentation` ("semantic-
    segmentation") carrying the checkpoint's weights; `task` defaults to what the checkpoint's head does. Fails, naming
    the keys, unless every parameter is matched in name and shape; only the head may be left out, for a new label set
    (from a classifier, a segmentation model gets a new neck and decode head; its CLS token, final norm and head are
    dropped, the CLS slot of the position embeddings kept).

    The architecture is `config` if given, else the source's own config (folders), else the preset `variant`."""
    task = task or checkpoint.task
    if task not in TASKS:
        raise ConversionError(f"Unknown task {task!r}; choose one of {', '.join(TASKS)}.")
    if task == CLASSIFICATION and checkpoint.task == SEGMENTATION:
        raise ConversionError(
            f"{checkpoint.location} is a segmentation checkpoint; it has no CLS token or classifier to build an image "
            "classifier from. Convert it with --task semantic-segmentation (the default for it)."
        )
    if checkpoint.task != task and DETECTION in (task, checkpoint.task) and checkpoint.task != CLASSIFICATION:
        raise ConversionError(
            f"{checkpoint.location} is a checkpoint for {checkpoint.task}, which gives no {task} model. Convert it "
            f"with --task {checkpoint.task} (the default for it), or build a {task} model from an ImageNet classifier "
            "checkpoint."
        )
    config = _architecture(checkpoint, variant, config)
    if checkpoint.format == NATIVE and checkpoint.config is None:
        # transformers' native PVT uses its one eps (1e-6) in every LayerNorm, the original release 1e-5 in some.
        config.conv_layer_norm_eps = config.layer_norm_eps
    labels, new_head, label_note = _labels(checkpoint, task, num_labels, id2label)
    config.id2label = {int(index): name for index, name in labels.items()}
    config.label2id = {name: index for index, name in config.id2label.items()}
    config.num_labels = len(labels)
    model = _MODEL_CLASSES[task](config).eval()
    expected = model.state_dict()

    weights = dict(checkpoint.state_dict)
    fresh = _NEW_HEAD_PREFIXES[(checkpoint.task, task)] if new_head else ()
    if checkpoint.task != task:
        weights = {
            key: value
            for key, value in weights.items()
            if not key.startswith(_CLASSIFIER_ONLY_PREFIXES)
            and not (key.endswith(".cls_token") and key not in expected)
        }
    if fresh:
        weights = {key: value for key, value in weights.items() if not key.startswith(fresh)}
    weights = model._to_own_layout(weights)
    missing = [key for key in expected if key not in weights and not (fresh and key.startswith(fresh))]
    if problems := key_problems(weights, expected, missing, "model"):
        raise ConversionError(
            f"{checkpoint.location} ({checkpoint.format}) does not match {variant or 'the configured architecture'} "
            "(names as in this package's layout):\n  " + "\n  ".join(problems) + "\nCheck --variant, or pass "
            "--config with a config.json of the checkpoint's architecture (its image_size included, for position "
            "embeddings of a non-square grid); nothing was written."
        )
    model.load_state_dict(weights, strict=not new_head)
    return ConversionResult(model=model, source=checkpoint, new_head=new_head, notes=[label_note])


def default_image_processor(checkpoint: Checkpoint, config: PvtConfig, task: str = CLASSIFICATION) -> PvtImageProcessor:
    """The source's own processor if it has one of ours for the same task, else the original test transform: the
    ImageNet evaluation crop, or for segmentation the paper's ADE20K resize (short side 512, multiples of 32)."""
    if checkpoint.image_processor is not None and checkpoint.task == task:
        return checkpoint.image_processor
    if task == SEGMENTATION:
        return PvtImageProcessor.for_segmentation()
    if task == DETECTION:
        return PvtImageProcessor.for_detection()
    return PvtImageProcessor.for_evaluation(config.image_height_width[0])


def verify(result: ConversionResult, sizes=None, tolerance: float = VERIFY_TOLERANCE) -> list[str]:
    """Runs the source model and the converted one on the same random batch at each size (default: 224x224 and
    192x288 for classifiers, 512x512 and 480x650 for segmentation, 800x1088 and 750x1333 for detection) and returns
    one report line per size. Compares logits (a detector's class logits and box deltas), or the features entering
    the head (the four backbone maps for segmentation and detection) when the head was replaced; for an original
    RetinaNet also the detections after post-processing (rescaled to a smaller original image), which must be the same
    boxes. Raises `ConversionError` if any difference exceeds `tolerance`."""
    # The checks live in verification.py (they run the source models); imported here on use, one way.
    from .verification import verify_conversion

    return verify_conversion(result, sizes, tolerance)


__all__ = [
    "ConversionError",
    "Checkpoint",
    "ConversionResult",
    "CLASSIFICATION",
    "SEGMENTATION",
    "DETECTION",
    "TASKS",
    "detect_format",
    "load_weights_file",
    "load_checkpoint",
    "build_model",
    "verify",
    "imagenet_id2label",
    "ade20k_id2label",
    "coco_id2label",
    "default_image_processor",
]
