"""Turning checkpoints from elsewhere into this package's `PvtForImageClassification`, and checking the result.

Three sources are recognised from their parameter names (never from the file name):

- the original PVT release (`pvt_tiny.pth` …: `patch_embed1.proj.weight`, `block1.0.attn.kv.weight`, …), a bare
  state dict or wrapped as `{"model": state_dict}`;
- transformers' native PVT (`encoder.patch_embeddings.0.projection.weight`, …), a folder, a Hub repo id or a
  weights file;
- this package's own layout (`pvt.encoder.stages.0…`), e.g. a model fine-tuned with our scripts.

Key names are translated with the tables in `modeling_pvt.py` (the only copy of the mapping). Files are read
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

from .configuration_pvt import PRESETS, PvtConfig, preset_name
from .image_processing_pvt import PvtImageProcessor
from .modeling_pvt import (
    PvtForImageClassification,
    convert_native_config,
    convert_native_state_dict,
    convert_original_state_dict,
    load_checkpoint_weights,
    read_checkpoint_json,
)
from .original import OriginalPyramidVisionTransformer

ORIGINAL = "original PVT release"
NATIVE = "transformers-native PVT"
OWN = "pvt-transformers (this package)"
# Names that only occur in one layout; the first match decides.
_FORMAT_MARKERS = (
    (ORIGINAL, ("patch_embed1.", "pos_embed1", "block1.")),
    (NATIVE, ("encoder.patch_embeddings.", "pvt.encoder.patch_embeddings.", "encoder.block.", "pvt.encoder.block.")),
    (OWN, ("encoder.stages.", "pvt.encoder.stages.")),
)
# Training scripts often save `{"model": state_dict, "optimizer": …}`; the original release uses "model".
_WRAPPER_KEYS = ("model", "state_dict")
WEIGHT_FILE_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
VERIFY_SIZES = ((224, 224), (192, 288))
VERIFY_TOLERANCE = 1e-4
CLASSIFIER_PREFIX = "classifier."
NATIVE_MODEL_TYPE = "pvt"  # transformers' own PVT


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

    @property
    def head_size(self) -> int | None:
        weight = self.state_dict.get(f"{CLASSIFIER_PREFIX}weight")
        return None if weight is None else weight.shape[0]


@dataclass
class ConversionResult:
    model: PvtForImageClassification
    source: Checkpoint
    new_head: bool
    notes: list[str] = field(default_factory=list)


def imagenet_id2label() -> dict[int, str]:
    """The 1000 ImageNet-1k class names shipped with the package (index -> name)."""
    text = resources.files(__package__).joinpath("imagenet_labels.json").read_text(encoding="utf-8")
    return {int(index): name for index, name in json.loads(text).items()}


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


def detect_format(keys) -> str:
    keys = list(keys)
    for name, markers in _FORMAT_MARKERS:
        if any(key.startswith(markers) for key in keys):
            return name
    raise ConversionError(
        f"Could not tell which PVT layout this checkpoint uses; its first keys are {keys[:8]}. Expected an original "
        "PVT release checkpoint (patch_embed1.proj.weight, …), a transformers-native PVT checkpoint "
        "(encoder.patch_embeddings.0.projection.weight, …) or one saved by this package."
    )


def load_weights_file(path: Path) -> dict:
    """A state dict from a `.pth`/`.pt`/`.bin`/`.safetensors` file, loaded without running any pickled code."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(path)
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
    return _unwrap(loaded, path)


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
        raw = load_weights_file(path)
        return _translated(str(path), raw, config=None, image_processor=None)
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
        original_state_dict=raw if source_format == ORIGINAL else None,
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


def _labels(checkpoint: Checkpoint, config: PvtConfig, num_labels, id2label) -> tuple[dict, bool, str]:
    """The label set, whether it needs a new head, and a sentence saying where it came from."""
    head_size = checkpoint.head_size
    if id2label is not None and num_labels is not None and len(id2label) != num_labels:
        raise ConversionError(f"--num_labels {num_labels} disagrees with the {len(id2label)} label names given.")
    if id2label is None and num_labels is not None:
        id2label = {index: f"LABEL_{index}" for index in range(num_labels)}
    if id2label is not None:
        if len(id2label) == head_size:
            return id2label, False, f"kept the checkpoint's {head_size}-way head with the given label names"
        return (
            id2label,
            True,
            (
                f"new {len(id2label)}-way classifier head, randomly initialised (the checkpoint's head "
                + (f"has {head_size} outputs" if head_size else "is absent")
                + "); fine-tune before use"
            ),
        )
    if head_size is None:
        raise ConversionError(
            f"{checkpoint.location} has no classifier head. Pass --num_labels N or --labels FILE to attach a new one."
        )
    source_labels = checkpoint.config.id2label if checkpoint.config is not None else {}
    # transformers fills id2label with placeholders LABEL_0… when a config has none; those are not names.
    named = any(name != f"LABEL_{index}" for index, name in source_labels.items())
    if named and len(source_labels) == head_size:
        return dict(source_labels), False, "label names from the source config"
    imagenet = imagenet_id2label()
    if head_size == len(imagenet):
        return imagenet, False, "1000-way head: ImageNet-1k label names"
    return (
        {index: f"LABEL_{index}" for index in range(head_size)},
        False,
        f"{head_size}-way head without label names: using LABEL_0…; pass --labels FILE to name them",
    )


def build_model(checkpoint: Checkpoint, variant=None, num_labels=None, id2label=None, config=None) -> ConversionResult:
    """A `PvtForImageClassification` carrying the checkpoint's weights. Fails, naming the keys, unless every
    parameter is matched in name and shape; only the classifier head may be left out, for a new label set.

    The architecture is `config` if given, else the source's own config (folders), else the preset `variant`."""
    config = _architecture(checkpoint, variant, config)
    if checkpoint.format == NATIVE and checkpoint.config is None:
        # transformers' native PVT uses its one eps (1e-6) in every LayerNorm, the original release 1e-5 in some.
        config.conv_layer_norm_eps = config.layer_norm_eps
    labels, new_head, label_note = _labels(checkpoint, config, num_labels, id2label)
    config.id2label = {int(index): name for index, name in labels.items()}
    config.label2id = {name: index for index, name in config.id2label.items()}
    config.num_labels = len(labels)
    model = PvtForImageClassification(config).eval()

    weights = dict(checkpoint.state_dict)
    if new_head:
        weights = {key: value for key, value in weights.items() if not key.startswith(CLASSIFIER_PREFIX)}
    weights = model._to_own_layout(weights)
    expected = model.state_dict()
    missing = [key for key in expected if key not in weights and not (new_head and key.startswith(CLASSIFIER_PREFIX))]
    unexpected = [key for key in weights if key not in expected]
    mis_shaped = [
        f"{key}: checkpoint {tuple(weights[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in weights
        if key in expected and weights[key].shape != expected[key].shape
    ]
    if missing or unexpected or mis_shaped:
        problems = [
            f"{title} ({len(keys)}): " + ", ".join(keys[:12]) + (" …" if len(keys) > 12 else "")
            for title, keys in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", mis_shaped))
            if keys
        ]
        raise ConversionError(
            f"{checkpoint.location} ({checkpoint.format}) does not match {variant or 'the configured architecture'} "
            "(names as in this package's layout):\n  " + "\n  ".join(problems) + "\nCheck --variant, or pass "
            "--config with a config.json of the checkpoint's architecture (its image_size included, for position "
            "embeddings of a non-square grid); nothing was written."
        )
    model.load_state_dict(weights, strict=not new_head)
    return ConversionResult(model=model, source=checkpoint, new_head=new_head, notes=[label_note])


def default_image_processor(checkpoint: Checkpoint, config: PvtConfig) -> PvtImageProcessor:
    """The source's own processor if it has one of ours, else the original evaluation transform."""
    if checkpoint.image_processor is not None:
        return checkpoint.image_processor
    return PvtImageProcessor.for_evaluation(config.image_height_width[0])


def _source_model(checkpoint: Checkpoint, config: PvtConfig):
    """The model as its source runs it, returning (features, logits) per input."""
    if checkpoint.format == ORIGINAL:
        head = checkpoint.original_state_dict.get("head.weight")
        head_size = 0 if head is None else head.shape[0]
        original = OriginalPyramidVisionTransformer(config, num_classes=head_size).eval()
        original.load_state_dict(checkpoint.original_state_dict, strict=True)

        def run(pixel_values):
            features = original.forward_features(pixel_values)
            return features, original.head(features)

        return run
    if checkpoint.config is None:
        raise ConversionError(
            f"--verify needs the {checkpoint.format} model itself, but {checkpoint.location} is a bare weights file "
            "without its config. Pass the folder it came from (config.json + weights), or convert without --verify."
        )
    if checkpoint.format == NATIVE:
        from transformers import PvtForImageClassification as NativePvtForImageClassification

        native = NativePvtForImageClassification.from_pretrained(checkpoint.location).eval()

        def run(pixel_values):
            features = native.pvt(pixel_values).last_hidden_state[:, 0]
            return features, native.classifier(features)

        return run
    own = PvtForImageClassification.from_pretrained(checkpoint.location).eval()

    def run(pixel_values):
        features = own.pvt(pixel_values).pooler_output
        return features, own.classifier(features)

    return run


def verify(result: ConversionResult, sizes=VERIFY_SIZES, tolerance: float = VERIFY_TOLERANCE) -> list[str]:
    """Runs the source model and the converted one on the same random batch at each size and returns one report
    line per size. Compares logits, or the features entering the head when the head was replaced. Raises
    `ConversionError` if any difference exceeds `tolerance`."""
    model, config = result.model, result.model.config
    source = _source_model(result.source, config)
    compared = "pre-head features (new head)" if result.new_head else "logits"
    generator = torch.Generator().manual_seed(0)
    lines, failures = [], []
    for height, width in sizes:
        pixel_values = torch.randn(2, config.num_channels, height, width, generator=generator)
        with torch.no_grad():
            ours = model.pvt(pixel_values).pooler_output
            if not result.new_head:
                ours = model.classifier(ours)
            try:
                source_features, source_logits = source(pixel_values)
            except RuntimeError as error:
                if result.source.format != NATIVE:
                    raise
                # transformers' native PVT reshapes stored position embeddings straight to the new grid, so it
                # cannot run at any size but its training size: there is nothing to compare against.
                lines.append(
                    f"{height}x{width}: not compared, the {NATIVE} source model cannot run at this size ({error})"
                )
                continue
        theirs = source_features if result.new_head else source_logits
        difference = (ours - theirs).abs().max().item()
        status = "OK" if difference <= tolerance else "FAILED"
        lines.append(
            f"{height}x{width}: max |Δ{compared}| = {difference:.3e} (tolerance {tolerance:g}; values up to "
            f"{theirs.abs().max().item():.3g}) {status}"
        )
        if difference > tolerance:
            failures.append(f"{height}x{width}")
    if failures:
        raise ConversionError(
            "Verification failed: the converted model disagrees with the source at "
            + ", ".join(failures)
            + ":\n  "
            + "\n  ".join(lines)
        )
    return lines


__all__ = [
    "ConversionError",
    "Checkpoint",
    "ConversionResult",
    "detect_format",
    "load_weights_file",
    "load_checkpoint",
    "build_model",
    "verify",
    "imagenet_id2label",
    "default_image_processor",
]
