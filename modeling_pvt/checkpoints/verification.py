"""`--verify` for `scripts/convert_checkpoint.py`: the source model as its authors ran it (the original layouts in
`original.py`, transformers' native PVT, or our own saved model) against the converted one, on the same random
inputs. `conversion.verify` is the entry point; this module holds the checks so that conversion stays a readable size.
"""

import torch

from ..configuration_pvt import PvtConfig
from ..image_processing_pvt import PvtImageProcessor
from ..modeling_pvt import PvtBackbone, PvtForImageClassification, PvtForSemanticSegmentation
from ..modeling_pvt_detection import PvtForObjectDetection
from .conversion import (
    CLASSIFICATION,
    DETECTION,
    MMDET,
    MMSEG,
    NATIVE,
    ORIGINAL,
    SEGMENTATION,
    VERIFY_BOX_TOLERANCE,
    VERIFY_DETECTION_SIZES,
    VERIFY_SEGMENTATION_SIZES,
    VERIFY_SIZES,
    VERIFY_TOLERANCE,
    Checkpoint,
    ConversionError,
    ConversionResult,
)
from .original import (
    OriginalDensePyramidVisionTransformer,
    OriginalPyramidVisionTransformer,
    OriginalRetinaNet,
    OriginalSemanticFpn,
)


def _source_model(checkpoint: Checkpoint, config: PvtConfig, task: str):
    """The model as its source runs it, returning (features, logits) per input: features are the pre-head vector
    (classification) or the four dense backbone maps (segmentation)."""
    if checkpoint.format == MMSEG:
        original = OriginalSemanticFpn(config, num_classes=checkpoint.head_size).eval()
        original.load_state_dict(checkpoint.original_state_dict, strict=True)
        return lambda pixel_values: (original.backbone(pixel_values), original(pixel_values))
    if checkpoint.format == MMDET:
        retinanet = OriginalRetinaNet(config, num_classes=checkpoint.head_size).eval()
        retinanet.load_state_dict(checkpoint.original_state_dict, strict=True)

        def run_retinanet(pixel_values):
            cls_scores, bbox_preds = retinanet(pixel_values)
            run_retinanet.head_maps = cls_scores, bbox_preds  # for the detections after post-processing
            return retinanet.backbone(pixel_values), (_flat(cls_scores, checkpoint.head_size), _flat(bbox_preds, 4))

        run_retinanet.original = retinanet
        return run_retinanet
    if checkpoint.format == ORIGINAL and task in (SEGMENTATION, DETECTION):
        # As mmseg initialises the dense backbone from an ImageNet checkpoint: everything but the classifier parts.
        dense = OriginalDensePyramidVisionTransformer(config).eval()
        unused = ("cls_token", "norm.", "head.")
        dense.load_state_dict(
            {k: v for k, v in checkpoint.original_state_dict.items() if not k.startswith(unused)}, strict=True
        )
        return lambda pixel_values: (dense(pixel_values), None)
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
    if checkpoint.format == NATIVE and task in (SEGMENTATION, DETECTION):
        raise ConversionError(
            f"--verify has no dense {NATIVE} model to compare a segmentation backbone with (transformers' PVT always "
            "keeps the CLS token). Convert without --verify, or start from the original release's .pth."
        )
    if checkpoint.format == NATIVE:
        from transformers import (
            PvtForImageClassification as NativePvtForImageClassification,
        )

        native = NativePvtForImageClassification.from_pretrained(checkpoint.location).eval()

        def run(pixel_values):
            features = native.pvt(pixel_values).last_hidden_state[:, 0]
            return features, native.classifier(features)

        return run
    if task == SEGMENTATION and checkpoint.task == SEGMENTATION:
        own = PvtForSemanticSegmentation.from_pretrained(checkpoint.location).eval()
        return lambda pixel_values: _dense_outputs(own, pixel_values)
    if task == DETECTION and checkpoint.task == DETECTION:
        detector = PvtForObjectDetection.from_pretrained(checkpoint.location).eval()
        return lambda pixel_values: _converted_outputs(detector, pixel_values)
    if task in (SEGMENTATION, DETECTION):
        backbone = PvtBackbone.from_pretrained(checkpoint.location, out_indices=[0, 1, 2, 3]).eval()
        return lambda pixel_values: (backbone(pixel_values).feature_maps, None)
    own = PvtForImageClassification.from_pretrained(checkpoint.location).eval()

    def run(pixel_values):
        features = own.pvt(pixel_values).pooler_output
        return features, own.classifier(features)

    return run


def _dense_outputs(model: PvtForSemanticSegmentation, pixel_values) -> tuple[tuple, torch.Tensor]:
    outputs = model(pixel_values, output_hidden_states=True)
    return outputs.hidden_states, outputs.logits


def _flat(level_maps, width: int) -> torch.Tensor:
    """mmdet's per-level (B, A * width, H, W) head maps as one (B, N, width) tensor, in our anchor order."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in level_maps], dim=1)


def _converted_outputs(model, pixel_values):
    if isinstance(model, PvtForSemanticSegmentation):
        return _dense_outputs(model, pixel_values)
    if isinstance(model, PvtForObjectDetection):
        outputs = model(pixel_values, output_hidden_states=True)
        return outputs.hidden_states, (outputs.logits, outputs.box_deltas)
    features = model.pvt(pixel_values).pooler_output
    return features, model.classifier(features)


def _max_difference(ours, theirs) -> tuple[float, float]:
    """max |ours - theirs| and max |theirs| over a tensor or a sequence of tensors (the four feature maps)."""
    pairs = list(zip(ours, theirs)) if isinstance(ours, (list, tuple)) else [(ours, theirs)]
    return max((a - b).abs().max().item() for a, b in pairs), max(b.abs().max().item() for _, b in pairs)


def _detections_differ(outputs, source, index: int, input_size, original_size) -> str | None:
    """Compares image `index`'s detections after post-processing (ours: the processor on our outputs; the source: the
    original layout's mmdet `get_bboxes` on its own head maps), both rescaled to `original_size`. Returns what
    differs, or None when the kept boxes are the same: count, labels and order identical, corners within
    `VERIFY_BOX_TOLERANCE` pixels."""
    cls_scores, bbox_preds = source.head_maps
    scale = (input_size[1] / original_size[1], input_size[0] / original_size[0])
    boxes, scores, labels = source.original.bbox_head.get_bboxes(cls_scores, bbox_preds, index, input_size, scale)
    single = type(outputs)(**{k: v[index : index + 1] for k, v in outputs.items() if k != "hidden_states"})
    ours = PvtImageProcessor().post_process_object_detection(single, target_sizes=[original_size])[0]
    if len(ours["boxes"]) != len(boxes) or not torch.equal(ours["labels"], labels):
        return f"{len(ours['boxes'])} detections vs {len(boxes)}, or other labels"
    difference = (ours["boxes"] - boxes).abs().max().item() if len(boxes) else 0.0
    return None if difference <= VERIFY_BOX_TOLERANCE else f"box corners differ by up to {difference:.3g} px"


def verify_conversion(result: ConversionResult, sizes=None, tolerance: float = VERIFY_TOLERANCE) -> list[str]:
    """`conversion.verify`: one report line per size; raises `ConversionError` past `tolerance`."""
    model, config = result.model, result.model.config
    default_sizes = {SEGMENTATION: VERIFY_SEGMENTATION_SIZES, DETECTION: VERIFY_DETECTION_SIZES}
    sizes = sizes or default_sizes.get(result.task, VERIFY_SIZES)
    source = _source_model(result.source, config, result.task)
    if result.new_head:
        compared = "pre-head features (new head)" if result.task == CLASSIFICATION else "backbone maps (new head)"
    else:
        compared = "head outputs" if result.task == DETECTION else "logits"
    compare_detections = result.task == DETECTION and not result.new_head and hasattr(source, "original")
    generator = torch.Generator().manual_seed(0)
    lines, failures = [], []
    for height, width in sizes:
        pixel_values = torch.randn(2, config.num_channels, height, width, generator=generator)
        with torch.no_grad():
            if isinstance(model, PvtForObjectDetection):
                outputs = model(pixel_values, output_hidden_states=True)
                our_features, our_logits = outputs.hidden_states, (outputs.logits, outputs.box_deltas)
            else:
                our_features, our_logits = _converted_outputs(model, pixel_values)
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
        if result.new_head:
            difference, magnitude = _max_difference(our_features, source_features)
        else:
            difference, magnitude = _max_difference(our_logits, source_logits)
        detections, problem = "", None
        if compare_detections:
            original_size = (round(height / 1.25), round(width / 1.25))
            problems = [
                _detections_differ(outputs, source, index, (height, width), original_size)
                for index in range(len(pixel_values))
            ]
            problem = next((problem for problem in problems if problem), None)
            detections = f"; detections {'differ: ' + problem if problem else 'identical'}"
        status = "OK" if difference <= tolerance and problem is None else "FAILED"
        lines.append(
            f"{height}x{width}: max |Δ{compared}| = {difference:.3e} (tolerance {tolerance:g}; values up to "
            f"{magnitude:.3g}){detections} {status}"
        )
        if status == "FAILED":
            failures.append(f"{height}x{width}")
    if failures:
        raise ConversionError(
            "Verification failed: the converted model disagrees with the source at "
            + ", ".join(failures)
            + ":\n  "
            + "\n  ".join(lines)
        )
    return lines


__all__ = ["verify_conversion"]
