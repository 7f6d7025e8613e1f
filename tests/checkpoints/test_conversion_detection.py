"""scripts/convert_checkpoint.py for detection: original RetinaNet checkpoints (mmdet layout, made here from the
independent reference) with strict key checks and --verify (head outputs and detections), COCO class names, and
classifier checkpoints turned into a PvtForObjectDetection with a fresh neck and head (--task object-detection)."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from helpers import read_json, run_convert
from reference_pvt import PyramidVisionTransformer, reference_kwargs
from reference_retinanet import RetinaNet, randomise_head
from reference_semantic_fpn import randomise_norms

from modeling_pvt import PvtConfig, PvtForObjectDetection, PvtImageProcessor
from modeling_pvt.checkpoints.conversion import (
    ConversionError,
    build_model,
    coco_id2label,
    load_checkpoint,
    verify,
)

CLASSES = ("person", "bicycle", "kite")
SIZES = ((256, 352), (250, 333))  # small stand-ins for 800x1088 and 750x1333


def tiny_detection_config(**overrides) -> PvtConfig:
    return tiny_config(
        **{"fpn_hidden_size": 16, "detection_head_hidden_size": 16, "detection_head_num_convs": 2, **overrides}
    )


def reference_retinanet(config: PvtConfig, num_classes: int) -> RetinaNet:
    model = RetinaNet(
        num_classes,
        config.fpn_hidden_size,
        config.detection_head_hidden_size,
        config.detection_head_num_convs,
        **reference_kwargs(config),
    )
    generator = torch.Generator().manual_seed(0)
    return randomise_head(randomise_norms(model, generator), generator).eval()


def save_mmdet(path: Path, state_dict: dict, classes=CLASSES) -> Path:
    """An mmdet/mmcv checkpoint: weights under "state_dict", the dataset's classes in "meta"."""
    meta = {"mmdet_version": "2.13.0", "epoch": 12, "config": "model = dict(type='RetinaNet', ...)"}
    if classes:
        meta["CLASSES"] = classes
    torch.save({"state_dict": state_dict, "meta": meta}, path)
    return path


@pytest.fixture
def tiny_mmdet(tmp_path):
    config = tiny_detection_config()
    config_path = tmp_path / "config.json"
    config.to_json_file(config_path)
    reference = reference_retinanet(config, num_classes=len(CLASSES))
    return reference, save_mmdet(tmp_path / "retinanet_pvt_tiny.pth", reference.state_dict()), config_path


def test_mmdet_checkpoint_converts_and_matches_the_reference(tiny_mmdet, tmp_path, capsys):
    reference, checkpoint, config_path = tiny_mmdet
    output = tmp_path / "converted"

    code, out, err = run_convert(capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", output)

    assert code == 0, err
    assert "Detected format: original RetinaNet release (mmdet)" in out
    assert "label names from the checkpoint's meta.CLASSES" in out
    config = read_json(output / "config.json")
    assert config["architectures"] == ["PvtForObjectDetection"] and config["id2label"]["2"] == "kite"
    assert config["auto_map"]["AutoModelForObjectDetection"] == "modeling_pvt_detection.PvtForObjectDetection"
    assert (output / "modeling_pvt_detection.py").is_file()
    processor = PvtImageProcessor.from_pretrained(output)
    assert processor.size == {"shortest_edge": 800, "longest_edge": 1333} and processor.do_pad
    assert processor.pad_size_divisor == 32
    model = PvtForObjectDetection.from_pretrained(output).eval()
    pixel_values = torch.randn(1, 3, 160, 224)
    with torch.no_grad():
        cls_scores, _ = reference(pixel_values)
        logits = model(pixel_values).logits
    expected = torch.cat([m.permute(0, 2, 3, 1).reshape(1, -1, 3) for m in cls_scores], dim=1)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_verify_compares_head_outputs_and_detections_and_catches_a_difference(tmp_path):
    config = tiny_detection_config()
    reference = reference_retinanet(config, num_classes=len(CLASSES))
    with torch.no_grad():  # tens of detections per image rather than thousands of candidates: a quicker NMS
        reference.bbox_head.retina_cls.bias.normal_(-4.0, 0.5, generator=torch.Generator().manual_seed(1))
    checkpoint = save_mmdet(tmp_path / "retinanet.pth", reference.state_dict())
    result = build_model(load_checkpoint(checkpoint), config=config)
    lines = verify(result, sizes=SIZES)
    assert len(lines) == 2 and all("max |Δhead outputs|" in line and "detections identical" in line for line in lines)
    assert all(line.endswith(" OK") for line in lines)
    with torch.no_grad():  # a regression error too small for the logits check to see alone still moves boxes
        result.model.head.box_regressor.bias.add_(0.05)
    with pytest.raises(ConversionError, match="Verification failed"):
        verify(result, sizes=SIZES[:1], tolerance=1.0)


def test_missing_unexpected_and_mis_shaped_keys_are_refused(tiny_mmdet, tmp_path, capsys):
    reference, _, config_path = tiny_mmdet
    state_dict = reference.state_dict()
    missing = {k: v for k, v in state_dict.items() if not k.startswith("neck.fpn_convs.4.")}
    code, _, err = run_convert(
        capsys, "--checkpoint", save_mmdet(tmp_path / "missing.pth", missing), "--config", config_path,
        "--output_dir", tmp_path / "a",
    )
    assert code != 0 and "missing (2): neck.fpn_convs.4.weight, neck.fpn_convs.4.bias" in err
    assert not (tmp_path / "a").exists()

    unknown = {**state_dict, "bbox_head.retina_iou.weight": torch.zeros(1)}
    code, _, err = run_convert(
        capsys, "--checkpoint", save_mmdet(tmp_path / "unknown.pth", unknown), "--config", config_path,
        "--output_dir", tmp_path / "b",
    )
    assert code != 0 and "Unrecognised mmdet RetinaNet checkpoint keys" in err and "retina_iou" in err

    wider = tmp_path / "wider.json"
    tiny_detection_config(detection_head_hidden_size=32).to_json_file(wider)
    code, _, err = run_convert(
        capsys, "--checkpoint", save_mmdet(tmp_path / "ok.pth", state_dict), "--config", wider,
        "--output_dir", tmp_path / "c",
    )
    assert code != 0 and "mis-shaped" in err and "head.cls_convs.0.weight" in err


def test_an_80_way_head_gets_the_coco_class_names(tmp_path, capsys):
    config = tiny_detection_config()
    config_path = tmp_path / "config.json"
    config.to_json_file(config_path)
    reference = reference_retinanet(config, num_classes=80)
    checkpoint = save_mmdet(tmp_path / "coco.pth", reference.state_dict(), classes=None)
    code, out, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", tmp_path / "coco"
    )
    assert code == 0, err
    assert "80-way head: COCO class names" in out
    id2label = read_json(tmp_path / "coco" / "config.json")["id2label"]
    assert id2label == {str(index): name for index, name in coco_id2label().items()}
    assert id2label["0"] == "person" and id2label["79"] == "toothbrush" and len(set(id2label.values())) == 80


def test_classifier_checkpoint_becomes_a_detector_with_a_fresh_neck_and_head(tmp_path, capsys):
    config = tiny_detection_config()
    config_path = tmp_path / "config.json"
    config.to_json_file(config_path)
    classifier = randomise_norms(PyramidVisionTransformer(num_classes=1000, **reference_kwargs(config))).eval()
    checkpoint = tmp_path / "pvt_tiny.pth"
    torch.save({"model": classifier.state_dict()}, checkpoint)

    code, out, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--task", "object-detection",
        "--num_labels", "80", "--output_dir", tmp_path / "detector",
    )
    assert code == 0, err
    assert "new 80-way detection head (COCO class names), randomly initialised with the FPN neck" in out
    result = build_model(load_checkpoint(checkpoint), config=config, task="object-detection", num_labels=80)
    lines = verify(result, sizes=SIZES)  # the four backbone maps against the original dense backbone
    assert all("max |Δbackbone maps (new head)|" in line and line.endswith(" OK") for line in lines)
    model = PvtForObjectDetection.from_pretrained(tmp_path / "detector")
    converted = model.state_dict()
    assert converted["encoder.stages.0.blocks.0.attn.q.weight"].equal(classifier.state_dict()["block1.0.attn.q.weight"])
    assert "encoder.stages.3.embeddings.cls_token" not in converted
    torch.testing.assert_close(model.head.classifier.bias, torch.full((720,), -torch.log(torch.tensor(99.0)).item()))


def test_a_detector_is_not_turned_into_another_task(tiny_mmdet, tmp_path, capsys):
    _, checkpoint, config_path = tiny_mmdet
    code, _, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--task", "semantic-segmentation",
        "--output_dir", tmp_path / "x",
    )
    assert code != 0 and "is a checkpoint for object-detection, which gives no semantic-segmentation model" in err


def test_a_plainly_saved_detector_becomes_a_hub_folder(tmp_path):
    from modeling_pvt.checkpoints.hub import check_hub_folder, plain_folder_as_hub_folder

    model = PvtForObjectDetection(tiny_detection_config(num_labels=3))
    model.save_pretrained(tmp_path / "plain")
    PvtImageProcessor.for_detection().save_pretrained(tmp_path / "plain")
    folder = check_hub_folder(plain_folder_as_hub_folder(tmp_path / "plain", tmp_path / "hub"))
    assert read_json(folder / "config.json")["architectures"] == ["PvtForObjectDetection"]
    assert (folder / "modeling_pvt_detection.py").is_file()
