"""scripts/convert_checkpoint.py for segmentation: original Semantic FPN checkpoints (mmseg layout, made here from
the independent reference) with strict key checks and --verify, and classifier checkpoints turned into a
PvtForSemanticSegmentation with a new head (--task semantic-segmentation)."""

from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from helpers import read_json, run_convert
from reference_pvt import PyramidVisionTransformer, reference_kwargs
from reference_semantic_fpn import SemanticFPN, randomise_norms

from modeling_pvt import PvtConfig, PvtForSemanticSegmentation, PvtImageProcessor
from modeling_pvt.checkpoints.conversion import ade20k_id2label

CLASSES = ("road", "sky", "tree", "person")


def tiny_segmentation_config(**overrides) -> PvtConfig:
    return tiny_config(fpn_hidden_size=16, decoder_hidden_size=8, **overrides)



def reference_fpn(config: PvtConfig, num_classes: int) -> SemanticFPN:
    model = SemanticFPN(num_classes, config.fpn_hidden_size, config.decoder_hidden_size, **reference_kwargs(config))
    return randomise_norms(model).eval()


def save_mmseg(model: SemanticFPN, path: Path, state_dict=None, classes=CLASSES) -> Path:
    """An mmseg/mmcv checkpoint: weights under "state_dict", the dataset's classes in "meta"."""
    meta = {"mmseg_version": "0.11.0", "CLASSES": classes, "iter": 40000, "config": "model = dict(...)"}
    torch.save({"state_dict": state_dict or model.state_dict(), "meta": meta}, path)
    return path




@pytest.fixture
def tiny_mmseg(tmp_path):
    config = tiny_segmentation_config()
    config_path = tmp_path / "config.json"
    config.to_json_file(config_path)
    reference = reference_fpn(config, num_classes=len(CLASSES))
    return reference, save_mmseg(reference, tmp_path / "fpn_pvt_tiny.pth"), config_path


def test_mmseg_checkpoint_converts_verifies_and_matches_the_reference(tiny_mmseg, tmp_path, capsys):
    reference, checkpoint, config_path = tiny_mmseg
    output = tmp_path / "converted"

    code, out, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", output, "--verify"
    )

    assert code == 0, err
    assert "Detected format: original Semantic FPN release (mmseg)" in out
    assert "label names from the checkpoint's meta.CLASSES" in out
    assert "Verify 512x512: max |Δlogits|" in out and "Verify 480x650" in out and out.count(" OK") == 2
    saved = read_json(output / "config.json")
    assert saved["architectures"] == ["PvtForSemanticSegmentation"]
    assert saved["auto_map"]["AutoModelForSemanticSegmentation"] == "modeling_pvt.PvtForSemanticSegmentation"
    assert saved["id2label"] == {str(i): name for i, name in enumerate(CLASSES)}
    processor = PvtImageProcessor.from_pretrained(output)
    assert processor.size == {"shortest_edge": 512, "longest_edge": 2048} and processor.size_divisor == 32
    converted = PvtForSemanticSegmentation.from_pretrained(output).eval()
    pixel_values = torch.randn(2, 3, 100, 140)
    with torch.no_grad():
        torch.testing.assert_close(converted(pixel_values).logits, reference(pixel_values), atol=1e-5, rtol=1e-5)


def test_the_real_pvt_tiny_fpn_with_150_classes_gets_ade20k_names(tmp_path, capsys):
    reference = reference_fpn(PvtConfig.from_preset("pvt-tiny"), num_classes=150)
    checkpoint = save_mmseg(reference, tmp_path / "fpn_pvt_t_ade20k_40k.pth", classes=None)
    output = tmp_path / "pvt-tiny-fpn"

    code, out, err = run_convert(capsys, "--checkpoint", checkpoint, "--variant", "pvt-tiny", "--output_dir", output)

    assert code == 0, err
    assert "150-way head: ADE20K class names" in out
    id2label = read_json(output / "config.json")["id2label"]
    assert len(id2label) == 150 and id2label["0"] == "wall" and id2label["12"] == "person"
    assert id2label["149"] == "flag" and len(set(id2label.values())) == 150
    assert {int(k): v for k, v in id2label.items()} == ade20k_id2label()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (
            lambda sd: sd.pop("decode_head.scale_heads.1.0.bn.running_var"),
            ["missing (1)", "decode_head.scale_heads.1.0.batch_norm.running_var"],
        ),
        (lambda sd: sd.pop("backbone.pos_embed4"), ["missing (1)", "encoder.stages.3.embeddings.position_embeddings"]),
        (
            lambda sd: sd.__setitem__("neck.fpn_convs.4.conv.weight", torch.zeros(16, 16, 3, 3)),
            ["unexpected (1)", "neck.fpn_convs.4.weight"],
        ),
        (
            lambda sd: sd.__setitem__("auxiliary_head.conv_seg.weight", torch.zeros(4, 8, 1, 1)),
            ["Unrecognised mmseg Semantic FPN", "auxiliary_head.conv_seg.weight"],
        ),
        (
            lambda sd: sd.__setitem__("backbone.pos_embed4", sd["backbone.pos_embed4"][:, 1:]),
            ["mis-shaped (1)", "encoder.stages.3.embeddings.position_embeddings: checkpoint (1, 49, 64)"],
        ),
    ],
    ids=["missing-bn-statistic", "missing-pos-embed", "extra-level", "unknown", "pos-embed-without-cls-slot"],
)
def test_mmseg_key_problems_are_named_and_nothing_is_written(tiny_mmseg, tmp_path, capsys, mutate, expected):
    reference, _, config_path = tiny_mmseg
    state_dict = reference.state_dict()
    mutate(state_dict)
    checkpoint = save_mmseg(reference, tmp_path / "broken.pth", state_dict=state_dict)

    output = tmp_path / "o"
    code, _, err = run_convert(capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", output)

    assert code == 1
    assert err.startswith("error: ") and "Traceback" not in err
    for text in expected:
        assert text in err
    assert not output.exists()


def test_mmseg_checkpoint_cannot_become_a_classifier(tiny_mmseg, tmp_path, capsys):
    _, checkpoint, config_path = tiny_mmseg
    code, _, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", tmp_path / "o",
        "--task", "image-classification",
    )
    assert code == 1 and "is a segmentation checkpoint" in err and "--task semantic-segmentation" in err
    assert not (tmp_path / "o").exists()


@pytest.fixture
def tiny_classifier(tmp_path):
    config = tiny_segmentation_config()
    config_path = tmp_path / "config.json"
    config.to_json_file(config_path)
    classifier = randomise_norms(PyramidVisionTransformer(num_classes=1000, **reference_kwargs(config))).eval()
    checkpoint = tmp_path / "pvt_tiny.pth"
    torch.save({"model": classifier.state_dict()}, checkpoint)
    return classifier, checkpoint, config_path


def test_a_classifier_becomes_a_segmentation_model_with_a_new_head(tiny_classifier, tmp_path, capsys):
    classifier, checkpoint, config_path = tiny_classifier
    output = tmp_path / "fpn-init"

    code, out, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", output,
        "--task", "semantic-segmentation", "--num_labels", "150", "--verify",
    )

    assert code == 0, err
    assert "new 150-way segmentation head (ADE20K class names), randomly initialised with the FPN neck" in out
    assert "Verify 512x512: max |Δbackbone maps (new head)|" in out and out.count(" OK") == 2
    assert read_json(output / "config.json")["id2label"]["2"] == "sky"
    model = PvtForSemanticSegmentation.from_pretrained(output)
    assert not any(key.endswith("cls_token") for key in model.state_dict())
    # The stored stage-4 position embeddings keep their CLS slot (unused by the dense model).
    torch.testing.assert_close(model.encoder.stages[3].embeddings.position_embeddings, classifier.pos_embed4)
    torch.testing.assert_close(model.encoder.stages[0].blocks[0].attn.kv.weight, classifier.block1[0].attn.kv.weight)


def test_a_classifier_needs_a_label_set_for_segmentation(tiny_classifier, tmp_path, capsys):
    _, checkpoint, config_path = tiny_classifier
    code, _, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", tmp_path / "o",
        "--task", "semantic-segmentation",
    )
    assert code == 1 and "has no segmentation head" in err and "--num_labels" in err
    assert not (tmp_path / "o").exists()


def test_our_segmentation_folder_re_exports_with_new_labels_keeping_the_rest(tiny_mmseg, tmp_path, capsys):
    _, checkpoint, config_path = tiny_mmseg
    first = tmp_path / "first"
    assert run_convert(capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", first)[0] == 0
    second = tmp_path / "second"

    code, out, err = run_convert(capsys, "--checkpoint", first, "--output_dir", second, "--labels", "a,b", "--verify")

    assert code == 0, err
    assert "Detected format: pvt-transformers (this package)" in out and out.count(" OK") == 2
    before = PvtForSemanticSegmentation.from_pretrained(first)
    after = PvtForSemanticSegmentation.from_pretrained(second)
    assert after.decode_head.classifier.out_channels == 2
    torch.testing.assert_close(after.neck.fpn_convs[3].weight, before.neck.fpn_convs[3].weight)
    assert PvtImageProcessor.from_pretrained(second).size_divisor == 32


def test_a_native_transformers_classifier_becomes_a_segmentation_model_but_cannot_be_verified(tmp_path, capsys):
    import transformers

    native_config = transformers.PvtConfig(
        hidden_sizes=[8, 16, 32, 64], depths=[1, 1, 2, 1], num_attention_heads=[1, 2, 2, 4], mlp_ratios=[2, 2, 2, 2]
    )
    native = transformers.PvtForImageClassification(native_config).eval()
    native.save_pretrained(tmp_path / "native")
    args = ["--checkpoint", tmp_path / "native", "--task", "semantic-segmentation", "--num_labels", "3"]

    code, _, err = run_convert(capsys, *args, "--output_dir", tmp_path / "refused", "--verify")
    assert code == 1 and "no dense transformers-native PVT model to compare" in err
    assert not (tmp_path / "refused").exists()

    code, out, err = run_convert(capsys, *args, "--output_dir", tmp_path / "out")
    assert code == 0, err
    model = PvtForSemanticSegmentation.from_pretrained(tmp_path / "out")
    torch.testing.assert_close(
        model.encoder.stages[2].blocks[1].mlp.fc1.weight, native.pvt.encoder.block[2][1].mlp.dense1.weight
    )
