"""PvtForObjectDetection and its post-processing against the independent RetinaNet written from the original mmdet
description (tests/reference_retinanet.py), weights moved through the mmdet key table; the vectorised NMS against
the reference's box-by-box greedy loop."""

import pytest
import torch
from conftest import tiny_config
from reference_pvt import reference_kwargs
from reference_retinanet import (
    RetinaNet,
    batched_nms as reference_batched_nms,
    delta2bbox,
    mmdet_scale_factor,
    nms as reference_nms,
    randomise_head,
)
from reference_semantic_fpn import randomise_norms

from modeling_pvt import PvtConfig, PvtForObjectDetection, PvtImageProcessor
from modeling_pvt.image_processing_pvt import batched_nms, non_max_suppression
from modeling_pvt.modeling_pvt_detection import convert_mmdet_state_dict, decode_boxes

SIZES = [(256, 320), (200, 333), (321, 250)]  # square-ish, non-square, and sides that are not multiples of 32


def detection_config(**overrides) -> PvtConfig:
    return tiny_config(
        **{"fpn_hidden_size": 16, "detection_head_hidden_size": 16, "detection_head_num_convs": 2, **overrides}
    )


def reference_and_ours(config: PvtConfig, seed: int = 0) -> tuple[RetinaNet, PvtForObjectDetection]:
    generator = torch.Generator().manual_seed(seed)
    reference = RetinaNet(
        config.num_labels,
        config.fpn_hidden_size,
        config.detection_head_hidden_size,
        config.detection_head_num_convs,
        **reference_kwargs(config),
    )
    randomise_head(randomise_norms(reference, generator), generator).eval()
    ours = PvtForObjectDetection(config).eval()
    ours.load_state_dict(convert_mmdet_state_dict(reference.state_dict()), strict=True)
    return reference, ours


def flat(level_maps, width: int) -> torch.Tensor:
    """mmdet's per-level (B, A * width, H, W) maps as our (B, N, width)."""
    return torch.cat([m.permute(0, 2, 3, 1).reshape(m.shape[0], -1, width) for m in level_maps], dim=1)


@pytest.fixture(scope="module")
def tiny_pair():
    return reference_and_ours(detection_config())


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_head_outputs_anchors_boxes_and_detections_match_the_reference(tiny_pair, size):
    reference, ours = tiny_pair
    pixel_values = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(size[0]))
    with torch.no_grad():
        cls_scores, bbox_preds = reference(pixel_values)
        output = ours(pixel_values)
    expected_logits, expected_deltas = flat(cls_scores, ours.config.num_labels), flat(bbox_preds, 4)
    torch.testing.assert_close(output.logits, expected_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output.box_deltas, expected_deltas, atol=1e-4, rtol=1e-4)

    featmap_sizes = [score.shape[-2:] for score in cls_scores]
    anchors = torch.cat(reference.bbox_head.anchor_generator.grid_anchors(featmap_sizes))
    assert torch.equal(output.anchors[0], anchors)  # bit for bit: same float32 operations in the same order
    per_level = reference.bbox_head.anchor_generator.grid_anchors(featmap_sizes)
    assert output.num_anchors_per_level[0].tolist() == [len(level) for level in per_level]
    expected_boxes = delta2bbox(anchors, expected_deltas[0], max_shape=size)
    assert torch.equal(decode_boxes(anchors, expected_deltas, output.image_sizes)[0], expected_boxes)
    torch.testing.assert_close(output.pred_boxes[0], expected_boxes, atol=1e-3, rtol=0)

    original_size = (size[0] * 2 + 1, size[1] * 3 // 2 - 7)  # rescaled to an "original" image of another ratio
    boxes, scores, labels = reference.bbox_head.get_bboxes_single(
        cls_scores, bbox_preds, size, mmdet_scale_factor(size, original_size)
    )
    assert len(boxes) == 100  # the random head scores everything: top-k, thresholds, NMS and the cap all bite
    processor = PvtImageProcessor()
    # Exact on the same raw outputs: the same candidates, scores, rescaled boxes, NMS decisions and order.
    output.logits, output.pred_boxes = expected_logits, decode_boxes(anchors, expected_deltas, output.image_sizes)
    exact = processor.post_process_object_detection(output, target_sizes=[original_size])[0]
    assert torch.equal(exact["boxes"], boxes) and torch.equal(exact["scores"], scores)
    assert torch.equal(exact["labels"], labels)


def test_end_to_end_detections_agree_with_the_reference(tiny_pair):
    reference, ours = tiny_pair
    size, original_size = (224, 300), (300, 400)
    pixel_values = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        cls_scores, bbox_preds = reference(pixel_values)
        output = ours(pixel_values)
    boxes, scores, labels = reference.bbox_head.get_bboxes_single(
        cls_scores, bbox_preds, size, mmdet_scale_factor(size, original_size)
    )
    result = PvtImageProcessor().post_process_object_detection(output, target_sizes=[original_size])[0]
    assert torch.equal(result["labels"], labels)
    torch.testing.assert_close(result["boxes"], boxes, atol=1e-3, rtol=0)
    torch.testing.assert_close(result["scores"], scores, atol=1e-5, rtol=0)


def test_the_real_pvt_tiny_retinanet_matches_the_reference():
    """The paper's PVT-Tiny RetinaNet widths (256-channel FPN and head, 80 classes) at a non-square size."""
    reference, ours = reference_and_ours(PvtConfig.from_preset("pvt-tiny", num_labels=80))
    pixel_values = torch.randn(1, 3, 320, 416, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        cls_scores, bbox_preds = reference(pixel_values)
        output = ours(pixel_values)
    torch.testing.assert_close(output.logits, flat(cls_scores, 80), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output.box_deltas, flat(bbox_preds, 4), atol=1e-4, rtol=1e-4)


def test_loss_matches_the_reference_with_empty_images_and_padding():
    reference, ours = reference_and_ours(detection_config(num_labels=3), seed=1)
    generator = torch.Generator().manual_seed(2)
    pixel_values = torch.randn(3, 3, 256, 320, generator=generator)
    pixel_mask = torch.ones(3, 256, 320, dtype=torch.long)
    pixel_mask[1, 190:] = 0  # image 1 is 190x250 inside the batch: anchors over its padding are left out
    pixel_mask[1, :, 250:] = 0
    boxes = [
        torch.tensor([[10.0, 20.0, 90.0, 120.0], [100.0, 50.0, 300.0, 250.0], [150.0, 30.0, 170.0, 45.0]]),
        torch.tensor([[30.0, 40.0, 200.0, 180.0]]),
        torch.zeros(0, 4),  # an image without objects: every anchor is background
    ]
    classes = [torch.tensor([0, 2, 1]), torch.tensor([1]), torch.zeros(0, dtype=torch.long)]
    ours.train()
    reference.train()
    output = ours(
        pixel_values,
        pixel_mask=pixel_mask,
        labels=[{"class_labels": c, "boxes": b} for c, b in zip(classes, boxes)],
    )
    cls_scores, bbox_preds = reference(pixel_values)
    # mmdet's pad_shape: each image padded to a multiple of 32 (`Pad(size_divisor=32)`).
    loss_cls, loss_bbox = reference.bbox_head.loss(
        cls_scores, bbox_preds, boxes, classes, pad_shapes=[(256, 320), (192, 256), (256, 320)]
    )
    torch.testing.assert_close(output.loss_dict["loss_cls"], loss_cls, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output.loss_dict["loss_bbox"], loss_bbox, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(output.loss, loss_cls + loss_bbox, atol=1e-4, rtol=1e-4)
    assert loss_bbox > 0


def random_boxes(count: int, generator, extent: float = 300.0, max_side: float = 80.0) -> torch.Tensor:
    corner = torch.rand(count, 2, generator=generator) * extent
    return torch.cat([corner, corner + torch.rand(count, 2, generator=generator) * max_side + 1], dim=1)


def clustered_boxes(count: int, generator) -> torch.Tensor:
    """Jittered copies of a few boxes: long chains of heavy overlaps, where greedy order matters most."""
    centres = random_boxes(6, generator)
    picks = torch.randint(0, 6, (count,), generator=generator)
    return centres[picks] + torch.randn(count, 4, generator=generator) * 4


@pytest.mark.parametrize("threshold", [0.3, 0.5, 0.7])
@pytest.mark.parametrize("kind", ["random", "clustered"])
def test_vectorised_nms_is_greedy_nms(kind, threshold):
    generator = torch.Generator().manual_seed(int(threshold * 10))
    boxes = (random_boxes if kind == "random" else clustered_boxes)(700, generator)
    boxes = torch.cat([boxes[:, :2], torch.max(boxes[:, 2:], boxes[:, :2] + 0.5)], dim=1)
    # Rounded scores: many ties, broken by index in both.
    scores = (torch.rand(700, generator=generator) * 20).round() / 20
    keep = non_max_suppression(boxes, scores, threshold)
    assert keep.tolist() == reference_nms(boxes, scores, threshold).tolist()
    assert 0 < len(keep) < 700


def test_nms_suppresses_only_above_the_threshold_and_breaks_ties_by_index():
    # IoU of the first two boxes is exactly 0.5 (overlap 2, union 4): strict ">" keeps both, as mmcv does.
    boxes = torch.tensor([[0.0, 0.0, 3.0, 1.0], [1.0, 0.0, 4.0, 1.0], [0.0, 0.0, 3.0, 1.01], [10.0, 10.0, 11.0, 11.0]])
    scores = torch.tensor([0.9, 0.8, 0.9, 0.9])
    # Box 2 ties box 0's score, comes after it and overlaps it almost fully: suppressed. Box 3 is elsewhere.
    assert non_max_suppression(boxes, scores, 0.5).tolist() == [0, 3, 1]
    assert non_max_suppression(boxes[:2], scores[:2], 0.49).tolist() == [0]
    assert non_max_suppression(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []


@pytest.mark.parametrize("split", [10000, 50], ids=["offset-trick", "per-class"])
def test_class_wise_nms_matches_mmcvs_batched_nms(split):
    generator = torch.Generator().manual_seed(split)
    boxes = torch.cat([random_boxes(300, generator, extent=100), clustered_boxes(300, generator).abs() + 1])
    boxes = torch.cat([boxes[:, :2], torch.max(boxes[:, 2:], boxes[:, :2] + 0.5)], dim=1)
    scores = torch.rand(600, generator=generator)
    labels = torch.randint(0, 4, (600,), generator=generator)
    keep = batched_nms(boxes, scores, labels, 0.5, split_threshold=split)
    assert keep.tolist() == reference_batched_nms(boxes, scores, labels, 0.5, split_thr=split).tolist()
    # Classes never suppress each other: the same box under two labels survives twice.
    twin = batched_nms(boxes[:1].repeat(2, 1), scores[:2], torch.tensor([0, 1]), 0.5)
    assert sorted(twin.tolist()) == [0, 1]
