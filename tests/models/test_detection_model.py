"""PvtForObjectDetection: outputs at any size, the loss and its label checks, initialisation, parameter counts, training
features, save/load and Auto classes, the processor's detection transform and post-processing, and the pipeline as Hub
remote code. Exactness against the original code is in tests/models/test_detection_parity.py."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import tiny_config
from helpers import read_json, run_without_package
from PIL import Image
from sklearn.datasets import load_sample_image
from transformers import AutoModelForObjectDetection, pipeline

from modeling_pvt import (
    PvtConfig,
    PvtForImageClassification,
    PvtForObjectDetection,
    PvtImageProcessor,
)
from modeling_pvt.modeling_pvt_detection import PvtObjectDetectionOutput

MEAN = np.array([0.485, 0.456, 0.406])
STD = np.array([0.229, 0.224, 0.225])
LABELS = {0: "cat", 1: "dog", 2: "car"}


def detection_config(**overrides) -> PvtConfig:
    return tiny_config(
        **{
            "num_labels": 3,
            "fpn_hidden_size": 16,
            "detection_head_hidden_size": 16,
            "detection_head_num_convs": 2,
            **overrides,
        }
    )


def targets(*boxes_per_image):
    return [
        {"class_labels": torch.arange(len(boxes)) % 3, "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)}
        for boxes in boxes_per_image
    ]


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (70, 101)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_outputs_cover_five_levels_at_any_input_size(size):
    model = PvtForObjectDetection(detection_config()).eval()
    output = model(torch.randn(2, 3, *size), output_hidden_states=True)
    assert isinstance(output, PvtObjectDetectionOutput)
    # P3-P7: strides 8..128 (each stride-2 conv rounds up), 9 anchors per cell.
    levels, height, width = [], size[0] // 8, size[1] // 8
    for _ in range(5):
        levels.append(height * width * 9)
        height, width = math.ceil(height / 2), math.ceil(width / 2)
    assert output.num_anchors_per_level.tolist() == [levels, levels]
    assert output.logits.shape == (2, sum(levels), 3) and output.box_deltas.shape == (2, sum(levels), 4)
    assert output.pred_boxes.dtype == torch.float32 and output.anchors.shape == (2, sum(levels), 4)
    assert output.image_sizes.tolist() == [list(size), list(size)]
    boxes = output.pred_boxes
    assert (boxes >= 0).all() and (boxes[..., 0::2] <= size[1]).all() and (boxes[..., 1::2] <= size[0]).all()
    assert [tuple(h.shape[1:]) for h in output.hidden_states] == [
        (8, size[0] // 4, size[1] // 4),
        (16, size[0] // 8, size[1] // 8),
        (32, size[0] // 16, size[1] // 16),
        (64, size[0] // 32, size[1] // 32),
    ]
    assert model(torch.randn(1, 3, *size)).hidden_states is None
    assert output.loss is None and output.loss_dict is None


def test_pixel_mask_gives_each_image_its_size_and_clips_its_boxes():
    model = PvtForObjectDetection(detection_config()).eval()
    pixel_mask = torch.zeros(2, 96, 128, dtype=torch.long)
    pixel_mask[0] = 1
    pixel_mask[1, :70, :90] = 1
    output = model(torch.randn(2, 3, 96, 128), pixel_mask=pixel_mask)
    assert output.image_sizes.tolist() == [[96, 128], [70, 90]]
    assert output.pred_boxes[1, :, 0::2].max() <= 90 and output.pred_boxes[1, :, 1::2].max() <= 70
    assert output.pred_boxes[0, :, 0::2].max() > 90
    with pytest.raises(ValueError, match="pixel_mask must have shape"):
        model(torch.randn(2, 3, 96, 128), pixel_mask=pixel_mask[:, :64])


def test_head_widths_depth_and_anchors_come_from_the_config():
    config = detection_config(
        fpn_hidden_size=24, detection_head_hidden_size=12, detection_head_num_convs=3, anchor_ratios=[1.0, 2.0],
        anchor_scales_per_octave=2,
    )
    model = PvtForObjectDetection(config)
    assert [conv.out_channels for conv in model.neck.fpn_convs] == [24] * 5
    assert [conv.in_channels for conv in model.neck.lateral_convs] == [16, 32, 64]  # stride-4 map unused
    assert model.neck.fpn_convs[3].in_channels == 64 and model.neck.fpn_convs[3].stride == (2, 2)  # P6 from C5
    assert len(model.head.cls_convs) == len(model.head.reg_convs) == 3
    assert model.head.classifier.out_channels == 4 * 3 and model.head.box_regressor.out_channels == 4 * 4
    output = model(torch.randn(1, 3, 64, 64))
    assert output.num_anchors_per_level[0, 0] == 8 * 8 * 4
    with pytest.raises(ValueError, match="detection_neg_iou_threshold"):
        detection_config(detection_neg_iou_threshold=0.6)


def test_paper_initialisation_for_every_weight_missing_from_a_checkpoint(monkeypatch):
    # torch caches its set of factory functions (for `with torch.device(...)`) on first use; filled while torch.empty
    # is patched, it would hold the patch, and later meta-device models (model cards) would allocate on the CPU.
    torch.utils._device._device_constructors()
    real_empty = torch.empty
    monkeypatch.setattr(torch, "empty", lambda *a, **k: real_empty(*a, **k).fill_(float("nan")))
    model = PvtForObjectDetection.from_pretrained(None, config=detection_config(), state_dict={})
    assert all(torch.isfinite(tensor).all() for tensor in model.state_dict().values())
    prior_bias = -math.log(0.99 / 0.01)
    torch.testing.assert_close(model.head.classifier.bias, torch.full_like(model.head.classifier.bias, prior_bias))
    assert all((conv.bias == 0).all() for conv in [*model.head.cls_convs, model.head.box_regressor])
    assert 0.005 < model.head.cls_convs[1].weight.std() < 0.015  # N(0, 0.01)
    fpn = model.neck.fpn_convs[0].weight
    bound = math.sqrt(6 / (fpn.shape[0] * 9 + fpn.shape[1] * 9))  # Xavier uniform
    assert fpn.abs().max() <= bound and fpn.abs().max() > 0.8 * bound
    # Every anchor starts at the prior probability, so the loss starts where RetinaNet's does.
    probabilities = model(torch.randn(1, 3, 64, 64)).logits.sigmoid()
    assert (probabilities - 0.01).abs().max() < 0.005


@pytest.mark.parametrize(
    ("variant", "millions"),
    [("pvt-tiny", 23.0), ("pvt-small", 34.2), ("pvt-medium", 53.9), ("pvt-large", 71.1)],
)
def test_parameter_counts_are_the_papers_retinanet_sizes(variant, millions):
    with torch.device("meta"):
        model = PvtForObjectDetection(PvtConfig.from_preset(variant, num_labels=80))
    assert round(sum(p.numel() for p in model.parameters()) / 1e6, 1) == millions


def test_loss_with_images_without_boxes_is_finite_and_trains():
    model = PvtForObjectDetection(detection_config()).train()
    pixel_values = torch.randn(2, 3, 96, 128)
    output = model(pixel_values, labels=targets([[10, 10, 60, 70], [40, 20, 120, 90]], []))
    assert torch.isfinite(output.loss) and output.loss_dict["loss_bbox"] > 0
    output.loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    assert model.head.box_regressor.weight.grad.abs().sum() > 0

    model.zero_grad()
    empty = model(pixel_values, labels=targets([], []))
    assert empty.loss_dict["loss_bbox"] == 0
    # All anchors are background and the normaliser is max(0, 1) per image: the focal loss summed over anchors / 2.
    probabilities = empty.logits.float().sigmoid()
    expected = (-(1 - 0.25) * probabilities**2 * torch.log1p(-probabilities)).sum() / 2
    torch.testing.assert_close(empty.loss, expected, rtol=1e-4, atol=1e-4)
    empty.loss.backward()


@pytest.mark.parametrize(
    ("boxes", "message"),
    [
        ([[50, 10, 20, 40]], r"labels\[1\]: box 0 = \[50.0, 10.0, 20.0, 40.0\] is not an \(x0, y0, x1, y1\) box"),
        ([[10, 10, 20, 20], [5, float("nan"), 30, 40]], r"labels\[1\]: box 1 = \[5.0, nan"),
        ([[10, 10, 140, 40]], r"inside the 128x96 \(width x height\) input image"),
        ([[-20, 10, 30, 40]], r"labels\[1\]: box 0"),
    ],
    ids=["x1-before-x0", "nan", "right-of-image", "left-of-image"],
)
def test_a_bad_box_names_the_image_and_the_box(boxes, message):
    model = PvtForObjectDetection(detection_config())
    with pytest.raises(ValueError, match=message):
        model(torch.randn(2, 3, 96, 128), labels=targets([[1, 1, 30, 30]], boxes))


def test_other_label_mistakes_are_explained():
    model = PvtForObjectDetection(detection_config())
    pixel_values = torch.randn(2, 3, 96, 128)
    with pytest.raises(ValueError, match="one dict per image"):
        model(pixel_values, labels=targets([[1, 1, 30, 30]]))
    bad_class = targets([[1, 1, 30, 30]], [])
    bad_class[0]["class_labels"] = torch.tensor([3])
    with pytest.raises(ValueError, match=r"labels\[0\]: class 3 is outside 0..2"):
        model(pixel_values, labels=bad_class)
    with pytest.raises(ValueError, match="look like normalised coordinates"):
        model(pixel_values, labels=targets([[0.1, 0.2, 0.5, 0.6]], [[0.3, 0.3, 0.9, 0.8]]))
    with pytest.raises(ValueError, match=r"labels\[1\] must be a dict"):
        model(pixel_values, labels=[targets([])[0], [1, 2, 3, 4]])


def test_boxes_a_pixel_outside_are_clipped_not_refused():
    model = PvtForObjectDetection(detection_config())
    pixel_values = torch.randn(1, 3, 96, 128)
    nudged = model(pixel_values, labels=targets([[-0.5, 10, 128.7, 96.4]])).loss
    clipped = model(pixel_values, labels=targets([[0, 10, 128, 96]])).loss
    torch.testing.assert_close(nudged, clipped)


def test_gradient_checkpointing_gives_the_same_gradients():
    model = PvtForObjectDetection(detection_config()).train()
    pixel_values = torch.randn(2, 3, 64, 96)
    labels = targets([[5, 5, 40, 50]], [[20, 10, 90, 60], [0, 0, 30, 30]])

    def gradients():
        model.zero_grad()
        model(pixel_values, labels=labels).loss.backward()
        return {name: p.grad.clone() for name, p in model.named_parameters()}

    plain = gradients()
    model.activation_checkpointing_enable()
    checkpointed = gradients()
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], atol=1e-6, rtol=1e-5, msg=name)


def test_eager_sdpa_and_bf16_agree():
    model = PvtForObjectDetection(detection_config()).eval()
    pixel_values = torch.randn(1, 3, 64, 96)
    model.set_attn_implementation("eager")
    eager = model(pixel_values)
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(model(pixel_values).logits, eager.logits, atol=1e-5, rtol=1e-5)
    bf16 = model.to(torch.bfloat16)(pixel_values.bfloat16())
    assert bf16.logits.dtype == torch.bfloat16 and bf16.pred_boxes.dtype == torch.float32
    torch.testing.assert_close(bf16.logits.float(), eager.logits, atol=0.1, rtol=0.05)
    torch.testing.assert_close(bf16.pred_boxes, eager.pred_boxes, atol=1.0, rtol=0.05)


def test_save_load_round_trip_and_auto_class(tmp_path):
    model = PvtForObjectDetection(detection_config(id2label=LABELS)).eval()
    model.save_pretrained(tmp_path)
    config = read_json(tmp_path / "config.json")
    assert config["auto_map"]["AutoModelForObjectDetection"] == "modeling_pvt_detection.PvtForObjectDetection"
    assert (tmp_path / "modeling_pvt_detection.py").is_file() and (tmp_path / "modeling_pvt.py").is_file()
    loaded = AutoModelForObjectDetection.from_pretrained(str(tmp_path)).eval()
    assert type(loaded) is PvtForObjectDetection
    pixel_values = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(pixel_values).logits, model(pixel_values).logits)


def test_classifier_checkpoint_gives_the_backbone_and_a_fresh_neck_and_head(tmp_path):
    classifier = PvtForImageClassification(tiny_config())
    classifier.save_pretrained(tmp_path)
    model = PvtForObjectDetection.from_pretrained(
        tmp_path, num_labels=3, fpn_hidden_size=16, detection_head_hidden_size=16, detection_head_num_convs=2
    )
    ours, theirs = model.state_dict(), classifier.state_dict()
    for key, tensor in ours.items():
        if key.startswith("encoder."):
            torch.testing.assert_close(tensor, theirs[f"pvt.{key}"])
    assert "encoder.stages.3.embeddings.cls_token" not in ours
    torch.testing.assert_close(model.head.classifier.bias, torch.full((27,), -math.log(99.0)))


@pytest.fixture(scope="module")
def photo() -> np.ndarray:
    return load_sample_image("china.jpg")  # (427, 640, 3)


def test_detection_transform_is_the_papers_test_pipeline(photo):
    processor = PvtImageProcessor.for_detection()
    batch = processor([Image.fromarray(photo), Image.fromarray(photo[:201, :299])], return_tensors="pt")
    # 640x427: scale min(1333 / 640, 800 / 427) -> 1199x800 (mmcv rounds half up, 1199.25); 299x201: min(4.46, 3.98)
    # -> 1190x800 (1190.05 and 800.0 rounded half up).
    assert batch["pixel_values"].shape == (2, 3, 800, 1216)  # the largest, padded to multiples of 32
    mask = batch["pixel_mask"]
    assert mask[0].any(dim=1).sum() == 800 and mask[0].any(dim=0).sum() == 1199
    assert mask[1].any(dim=1).sum() == 800 and mask[1].any(dim=0).sum() == 1190
    expected = np.asarray(Image.fromarray(photo).resize((1199, 800), Image.Resampling.BILINEAR), dtype=np.float64)
    expected = ((expected / 255.0 - MEAN) / STD).transpose(2, 0, 1)
    np.testing.assert_allclose(batch["pixel_values"][0, :, :, :1199].numpy(), expected, atol=1e-5)
    assert (batch["pixel_values"][0, :, :, 1199:] == 0).all() and (batch["pixel_values"][1, :, :, 1190:] == 0).all()
    assert PvtImageProcessor()(photo, return_tensors="pt").keys() == {"pixel_values"}  # no padding by default


def fake_outputs(logits, boxes, counts, image_size):
    return PvtObjectDetectionOutput(
        logits=logits[None],
        pred_boxes=boxes[None],
        num_anchors_per_level=torch.tensor([counts]),
        image_sizes=torch.tensor([image_size]),
    )


def test_post_processing_keeps_the_top_k_per_level_rescales_and_caps():
    # Level 0 has 3 anchors and level 1 has 2; with top_k=2 the weakest anchor of level 0 is dropped even though it
    # beats everything in level 1.
    logits = torch.tensor([[3.0, -9], [2.0, -9], [1.0, -9], [0.5, -9], [-9, 0.2]])
    boxes = torch.tensor([[0, 0, 10, 10], [20, 20, 30, 30], [40, 40, 50, 50], [60, 60, 70, 70], [60, 60, 70, 70.0]])
    processor = PvtImageProcessor()
    outputs = fake_outputs(logits, boxes, [3, 2], (100, 200))
    result = processor.post_process_object_detection(outputs, threshold=0.5, top_k=2, target_sizes=[(50, 400)])[0]
    assert result["labels"].tolist() == [0, 0, 0, 1]
    torch.testing.assert_close(result["scores"], torch.tensor([3.0, 2.0, 0.5, 0.2]).sigmoid())
    # Input 200x100 -> original 400x50: x doubles, y halves.
    torch.testing.assert_close(result["boxes"][0], torch.tensor([0.0, 0.0, 20.0, 5.0]))
    assert processor.post_process_object_detection(outputs, threshold=0.5, max_detections=1)[0]["scores"].shape == (1,)
    everything = processor.post_process_object_detection(outputs, threshold=0.0)[0]
    # Below 1000 anchors per level nothing is cut; the shared box survives once per class (the better of each).
    assert len(everything["scores"]) == 8
    with pytest.raises(ValueError, match="target sizes"):
        processor.post_process_object_detection(outputs, target_sizes=[(1, 1), (2, 2)])


def test_pipeline_finds_objects_in_the_original_frame(tmp_path, photo):
    model = PvtForObjectDetection(detection_config(id2label=LABELS)).eval()
    with torch.no_grad():  # a head sure of "dog" everywhere
        model.head.classifier.bias.copy_(torch.tensor([-9.0, 3.0, -9.0] * 9))
    model.save_pretrained(tmp_path)
    PvtImageProcessor.for_detection(long_side=200, short_side=120).save_pretrained(tmp_path)
    detector = pipeline("object-detection", model=str(tmp_path), trust_remote_code=True)
    results = detector(Image.fromarray(photo), threshold=0.5)
    assert 0 < len(results) <= 100 and {result["label"] for result in results} == {"dog"}
    assert max(result["box"]["xmax"] for result in results) <= 640 and max(r["box"]["ymax"] for r in results) <= 427
    assert max(result["box"]["xmax"] for result in results) > 200  # rescaled from the 180x120 input to 640x427


FRESH_PROCESS = """
import json, sys
import numpy as np
from PIL import Image
from transformers import AutoConfig, AutoImageProcessor, AutoModelForObjectDetection, pipeline

folder = sys.argv[1] if len(sys.argv) > 1 else FOLDER
photo = Image.fromarray(np.asarray(json.loads(PHOTO), dtype=np.uint8))
model = AutoModelForObjectDetection.from_pretrained(folder, trust_remote_code=True)
processor = AutoImageProcessor.from_pretrained(folder, trust_remote_code=True)
detector = pipeline("object-detection", model=folder, trust_remote_code=True)
report = {
    "classes": [
        type(model).__name__, type(model).__module__.startswith("transformers_modules"), type(processor).__name__
    ],
    "detections": detector(photo, threshold=0.2),
}
print(json.dumps(report))
"""


def test_remote_code_pipeline_in_a_process_without_the_package(tmp_path):
    folder = tmp_path / "detector"
    model = PvtForObjectDetection(detection_config(id2label=LABELS)).eval()
    with torch.no_grad():
        model.head.classifier.bias.normal_(-1.0, 1.0, generator=torch.Generator().manual_seed(0))
    model.save_pretrained(folder)
    processor = PvtImageProcessor.for_detection(long_side=160, short_side=96)
    processor.save_pretrained(folder)
    files = {path.name for path in folder.iterdir()}
    assert {"modeling_pvt_detection.py", "modeling_pvt.py", "image_processing_pvt.py"} <= files
    pixels = np.random.default_rng(0).integers(0, 255, (90, 140, 3), dtype=np.uint8)
    in_process = pipeline("object-detection", model=model, image_processor=processor)
    expected = in_process(Image.fromarray(pixels), threshold=0.2)
    code = FRESH_PROCESS.replace("FOLDER", repr(str(folder))).replace("PHOTO", repr(json.dumps(pixels.tolist())))
    report = json.loads(run_without_package(code, tmp_path).strip().splitlines()[-1])
    assert report["classes"] == ["PvtForObjectDetection", True, "PvtV1ImageProcessor"]
    assert len(expected) > 0
    assert [d["label"] for d in report["detections"]] == [d["label"] for d in expected]
    assert [d["box"] for d in report["detections"]] == [d["box"] for d in expected]
    np.testing.assert_allclose([d["score"] for d in report["detections"]], [d["score"] for d in expected], atol=1e-5)
