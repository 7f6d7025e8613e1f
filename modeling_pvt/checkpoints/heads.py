"""PVT v1 inside transformers' own heads (UperNet, Mask2Former, MaskFormer, DETR), which take `PvtBackbone` through
`backbone_config`. Two calls cover what transformers 5 leaves open:

    from transformers import UperNetConfig, UperNetForSemanticSegmentation
    from modeling_pvt import PvtConfig
    from modeling_pvt.heads import load_pvt_backbone_weights, save_head_model

    backbone_config = PvtConfig.from_preset("pvt-small", image_size=512, out_indices=[0, 1, 2, 3])
    model = UperNetForSemanticSegmentation(UperNetConfig(backbone_config=backbone_config, num_labels=150))
    print(load_pvt_backbone_weights(model, "pvt_small.pth"))  # any PVT checkpoint; position embeddings resized
    save_head_model(model, "pvt-small-upernet")  # loads with trust_remote_code=True where this package is absent

Not Hub remote code: this module uses the conversion tools. The folder's remote code is `modeling_pvt_heads.py`.
"""

import math
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..configuration_pvt import PvtConfig
from ..image_processing_pvt import PvtV1ImageProcessor
from .conversion import (
    NATIVE,
    Checkpoint,
    ConversionError,
    key_problems,
    load_checkpoint,
)
from .hub import DEFAULT_MAX_SHARD_SIZE, save_hub_folder

# transformers' head class -> (the remote config and model classes in modeling_pvt_heads.py, the Auto class).
HEAD_MODELS = {
    "UperNetForSemanticSegmentation": (
        "PvtUperNetConfig",
        "PvtUperNetForSemanticSegmentation",
        "AutoModelForSemanticSegmentation",
    ),
    "Mask2FormerForUniversalSegmentation": (
        "PvtMask2FormerConfig",
        "PvtMask2FormerForUniversalSegmentation",
        "AutoModelForUniversalSegmentation",
    ),
    "MaskFormerForInstanceSegmentation": (
        "PvtMaskFormerConfig",
        "PvtMaskFormerForInstanceSegmentation",
        "AutoModelForUniversalSegmentation",
    ),
    "DetrForObjectDetection": ("PvtDetrConfig", "PvtDetrForObjectDetection", "AutoModelForObjectDetection"),
}
# The PVT model code a head folder needs (modeling_pvt.py and the module it imports) and the head wrappers.
REMOTE_CODE_FILES = ("configuration_pvt.py", "modeling_pvt.py", "cpu_fast_paths.py", "modeling_pvt_heads.py")
_POSITION_EMBEDDINGS = "encoder.stages.{}.embeddings.position_embeddings"


@dataclass
class BackboneLoadReport:
    """What `load_pvt_backbone_weights` did."""

    source: str
    format: str
    backbone: str  # the backbone's module path in the head model
    loaded: int  # tensors loaded into the backbone
    resized: list[str] = field(default_factory=list)  # "stage 1: 56x56 -> 128x128"
    ignored: list[str] = field(default_factory=list)  # checkpoint parts the backbone has no use for
    notes: list[str] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [f"Loaded {self.loaded} tensors from {self.source} ({self.format}) into {self.backbone}."]
        if self.resized:
            lines.append("Position embeddings resized (bilinear, CLS slot kept): " + "; ".join(self.resized) + ".")
        if self.ignored:
            lines.append("Not used by a dense backbone: " + ", ".join(self.ignored) + ".")
        return "\n".join(lines + self.notes)


def find_pvt_backbone(model: nn.Module) -> tuple[str, nn.Module]:
    """The (module path, module) of the one PVT backbone inside `model` (ours or its remote-code twin)."""
    found = [(name or "the model", module) for name, module in model.named_modules() if _is_pvt_backbone(module)]
    if len(found) != 1:
        raise ValueError(
            f"Expected exactly one PvtBackbone inside {type(model).__name__}, found {len(found)}"
            + (f" ({', '.join(name for name, _ in found)})" if found else "")
            + ". Build the head with backbone_config=PvtConfig(...)."
        )
    return found[0]


def _is_pvt_backbone(module: nn.Module) -> bool:
    return type(module).__name__ == "PvtBackbone" and getattr(module.config, "model_type", None) == PvtConfig.model_type


def load_pvt_backbone_weights(model: nn.Module, checkpoint) -> BackboneLoadReport:
    """Loads a PVT checkpoint's encoder into the PVT backbone of `model` (a UperNet/Mask2Former/MaskFormer/DETR head
    model, or a `PvtBackbone`) and returns a report.

    `checkpoint`: anything `scripts/convert_checkpoint.py` reads — this package's folders, transformers-native PVT
    folders or repo ids, the original release's `.pth`, original Semantic FPN (mmseg) `.pth` — or a loaded
    `conversion.Checkpoint`. Position embeddings stored for another `image_size` than the backbone config's are
    resized bilinearly (as the model resizes them at run time; the stage-4 CLS slot is kept). The classifier's norm,
    head and CLS token (when the backbone has none) and a segmentation model's neck and head are left out. Strict:
    a missing, unexpected or mis-shaped tensor is named in a `ConversionError` and nothing is loaded."""
    name, backbone = find_pvt_backbone(model)
    source = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    expected = backbone.state_dict()
    weights, ignored = {}, set()
    for key, tensor in source.state_dict.items():
        if key in expected or (key.startswith("encoder.") and not key.endswith(".cls_token")):
            weights[key] = tensor
        else:
            ignored.add(key if key.endswith(".cls_token") else key.split(".")[0] + ".*")
    resized = _resize_position_embeddings(weights, expected, backbone.config, source)
    missing = [key for key in expected if key not in weights]
    if problems := key_problems(weights, expected, missing, "backbone"):
        raise ConversionError(
            f"{source.location} ({source.format}) does not fit the PVT backbone of {type(model).__name__}:\n  "
            + "\n  ".join(problems)
            + "\nGive the head's backbone_config the checkpoint's architecture (PvtConfig.from_preset(...)); nothing "
            "was loaded."
        )
    with torch.no_grad():
        backbone.load_state_dict(weights, strict=True)
    notes = []
    if source.format == NATIVE and backbone.config.conv_layer_norm_eps != backbone.config.layer_norm_eps:
        notes.append(
            "Note: transformers-native PVT uses eps 1e-6 in every LayerNorm; set conv_layer_norm_eps=1e-6 in the "
            "backbone config to reproduce it exactly."
        )
    return BackboneLoadReport(source.location, source.format, name, len(weights), resized, sorted(ignored), notes)


def _resize_position_embeddings(weights: dict, expected: dict, config, source: Checkpoint) -> list[str]:
    """Resizes, in `weights`, each stage's stored position grid to the backbone's; returns what was resized."""
    resized = []
    for stage in range(config.num_stages):
        key = _POSITION_EMBEDDINGS.format(stage)
        if key not in weights or key not in expected or weights[key].shape == expected[key].shape:
            continue
        stored, target = weights[key], expected[key]
        num_cls_slots = int(stage == config.num_stages - 1)
        target_grid = config.position_grid(stage)
        source_grid = _stored_grid(stored.shape[1] - num_cls_slots, stage, source)
        if source_grid is None or stored.shape[-1] != target.shape[-1]:
            continue  # left to the strict shape check, which names it
        grid = stored[:, num_cls_slots:].reshape(1, *source_grid, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid.float(), size=target_grid, mode="bilinear").flatten(2).transpose(1, 2)
        weights[key] = torch.cat((stored[:, :num_cls_slots], grid.to(stored.dtype)), dim=1)
        resized.append(
            f"stage {stage + 1}: {source_grid[0]}x{source_grid[1]} -> {target_grid[0]}x{target_grid[1]}"
        )
    return resized


def _stored_grid(num_positions: int, stage: int, source: Checkpoint) -> tuple[int, int] | None:
    if source.config is not None:
        grid = source.config.position_grid(stage)
        return grid if grid[0] * grid[1] == num_positions else None
    side = math.isqrt(num_positions)  # bare weights files (the original releases) are square
    return (side, side) if side * side == num_positions else None


def save_head_model(
    model,
    output_dir,
    image_processor=None,
    *,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> Path:
    """Writes a transformers head model with a PVT backbone as a Hub folder that loads with
    `Auto….from_pretrained(folder_or_repo_id, trust_remote_code=True)` (and `pipeline(...)`) in a process where this
    package is not installed. Written atomically, as every Hub folder of this package.

    The folder holds the model's own config and weights plus the remote code (`configuration_pvt.py`,
    `modeling_pvt.py`, `modeling_pvt_heads.py`); `auto_map` points `AutoConfig` and the head's Auto class at
    `modeling_pvt_heads`, which registers PVT before transformers builds the backbone. `image_processor` defaults to
    the paper's segmentation transform (`PvtV1ImageProcessor.for_segmentation()`) for UperNet; other heads need theirs
    (e.g. `DetrImageProcessor`, `Mask2FormerImageProcessor`)."""
    head = next((cls.__name__ for cls in type(model).__mro__ if cls.__name__ in HEAD_MODELS), None)
    if head is None:
        raise ValueError(
            f"save_head_model writes {', '.join(HEAD_MODELS)}; got {type(model).__name__}. PVT's own models are saved "
            "with save_pretrained or scripts/convert_checkpoint.py."
        )
    find_pvt_backbone(model)
    if image_processor is None:
        if head != "UperNetForSemanticSegmentation":
            raise ValueError(f"Pass the image processor for {head} (e.g. transformers' own for that head).")
        image_processor = PvtV1ImageProcessor.for_segmentation()
    config_class, model_class, auto_class = HEAD_MODELS[head]
    code = resources.files("modeling_pvt")
    remote_code = {name: code.joinpath(name).read_text(encoding="utf-8") for name in REMOTE_CODE_FILES}
    had_auto_map = "auto_map" in model.config.__dict__
    previous = model.config.__dict__.get("auto_map")
    model.config.auto_map = {
        "AutoConfig": f"modeling_pvt_heads.{config_class}",
        auto_class: f"modeling_pvt_heads.{model_class}",
    }
    try:
        return save_hub_folder(
            model,
            image_processor,
            output_dir,
            max_shard_size=max_shard_size,
            overwrite=overwrite,
            model_card=_head_card(head, auto_class, model.config.backbone_config),
            extra_files=remote_code,
        )
    finally:
        if had_auto_map:
            model.config.auto_map = previous
        else:
            del model.config.auto_map


def _head_card(head: str, auto_class: str, backbone_config) -> str:
    stages = ", ".join(f"{width}x{depth}" for width, depth in zip(backbone_config.hidden_sizes, backbone_config.depths))
    return f"""---
library_name: transformers
tags:
- pvt
- vision
---

# {head} with a PVT v1 backbone

transformers' `{head}` on a Pyramid Vision Transformer v1 backbone (widths x depths per stage: {stages};
position embeddings stored for {backbone_config.image_size} px inputs). The PVT backbone is Hub remote code, so
load with `trust_remote_code=True`:

```python
from transformers import {auto_class}

model = {auto_class}.from_pretrained("path/to/this/folder-or-repo", trust_remote_code=True)
```

Paper: "Pyramid Vision Transformer: A Versatile Backbone for Dense Prediction without Convolutions" (Wang et al.,
ICCV 2021).
"""


__all__ = ["BackboneLoadReport", "HEAD_MODELS", "find_pvt_backbone", "load_pvt_backbone_weights", "save_head_model"]
