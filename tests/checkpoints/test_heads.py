"""PVT inside transformers' own heads: loading PVT checkpoints into a head's backbone (position embeddings resized,
strict checks) and head folders that load by repo id with trust_remote_code where this package is not importable."""

import json

import pytest
import torch
from conftest import tiny_config
from helpers import lay_out_as_hub_cache, read_json, run_without_package
from reference_pvt import PyramidVisionTransformer, reference_kwargs
from reference_semantic_fpn import (
    DensePyramidVisionTransformer,
    SemanticFPN,
    randomise_norms,
)
from transformers import (
    DetrConfig,
    DetrForObjectDetection,
    Mask2FormerConfig,
    Mask2FormerForUniversalSegmentation,
    MaskFormerConfig,
    MaskFormerForInstanceSegmentation,
    UperNetConfig,
    UperNetForSemanticSegmentation,
)

from modeling_pvt import (
    PvtBackbone,
    PvtForImageClassification,
    PvtV1ImageProcessor,
)
from modeling_pvt.checkpoints.conversion import ConversionError
from modeling_pvt.checkpoints.heads import load_pvt_backbone_weights, save_head_model

ALL_STAGES = [0, 1, 2, 3]



def upernet(**backbone_overrides) -> UperNetForSemanticSegmentation:
    config = UperNetConfig(
        backbone_config=tiny_config(out_indices=ALL_STAGES, **backbone_overrides),
        hidden_size=16,
        auxiliary_in_channels=32,
        num_labels=3,
    )
    return UperNetForSemanticSegmentation(config).eval()


def detr() -> DetrForObjectDetection:
    config = DetrConfig(
        backbone_config=tiny_config(out_indices=[3]),
        use_timm_backbone=False,
        d_model=16,
        encoder_layers=1,
        decoder_layers=1,
        encoder_ffn_dim=16,
        decoder_ffn_dim=16,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        num_queries=4,
        num_labels=3,
    )
    return DetrForObjectDetection(config).eval()


def mask2former() -> Mask2FormerForUniversalSegmentation:
    config = Mask2FormerConfig(
        backbone_config=tiny_config(out_indices=ALL_STAGES),
        hidden_dim=32,  # Mask2Former's GroupNorms have 32 groups
        mask_feature_size=32,
        feature_size=32,
        encoder_layers=1,
        decoder_layers=2,
        num_attention_heads=2,
        num_queries=4,
        num_labels=3,
        encoder_feedforward_dim=32,
        dim_feedforward=32,
    )
    return Mask2FormerForUniversalSegmentation(config).eval()


def maskformer() -> MaskFormerForInstanceSegmentation:
    decoder = {"model_type": "detr", "d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "num_queries": 4}
    config = MaskFormerConfig(
        backbone_config=tiny_config(out_indices=ALL_STAGES),
        fpn_feature_size=32,  # GroupNorms with 32 groups
        mask_feature_size=32,
        num_queries=4,
        num_labels=3,
        decoder_config={**decoder, "encoder_ffn_dim": 16, "decoder_ffn_dim": 16},
    )
    return MaskFormerForInstanceSegmentation(config).eval()


@pytest.fixture
def original_classifier(tmp_path):
    """An original-release classifier .pth (224 px position grids) and the reference model it holds."""
    classifier = randomise_norms(PyramidVisionTransformer(num_classes=5, **reference_kwargs(tiny_config()))).eval()
    path = tmp_path / "pvt_tiny.pth"
    torch.save({"model": classifier.state_dict()}, path)
    return classifier, path


def test_original_checkpoint_at_another_size_lands_in_upernet_as_the_original_dense_code_runs_it(original_classifier):
    classifier, path = original_classifier
    model = upernet(image_size=128)  # the checkpoint's grids are for 224 px

    report = load_pvt_backbone_weights(model, path)

    assert report.backbone == "backbone" and report.format == "original PVT release"
    assert report.resized == [
        "stage 1: 56x56 -> 32x32",
        "stage 2: 28x28 -> 16x16",
        "stage 3: 14x14 -> 8x8",
        "stage 4: 7x7 -> 4x4",
    ]
    assert report.ignored == ["classifier.*", "encoder.stages.3.embeddings.cls_token", "norm.*"]
    assert "Loaded" in str(report) and "CLS slot kept" in str(report)
    stored = model.backbone.encoder.stages[3].embeddings.position_embeddings
    torch.testing.assert_close(stored[:, 0], classifier.pos_embed4[:, 0])
    dense = DensePyramidVisionTransformer(**reference_kwargs(tiny_config())).eval()
    unused = ("cls_token", "norm.", "head.")
    dense.load_state_dict({k: v for k, v in classifier.state_dict().items() if not k.startswith(unused)})
    pixel_values = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        for ours, theirs in zip(model.backbone(pixel_values).feature_maps, dense(pixel_values)):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
        assert model(pixel_values).logits.shape == (2, 3, 128, 128)


@pytest.mark.parametrize("build", [detr, mask2former], ids=["detr", "mask2former"])
def test_our_folder_lands_in_detr_and_mask2former_backbones(tmp_path, build):
    folder = tmp_path / "classifier"
    PvtForImageClassification(tiny_config()).save_pretrained(folder)
    model = build()

    report = load_pvt_backbone_weights(model, folder)

    assert report.resized == [] and report.loaded == len(PvtBackbone(tiny_config()).state_dict())
    out_indices = model.config.backbone_config.out_indices
    expected = PvtBackbone.from_pretrained(folder, out_indices=list(out_indices)).eval()
    _, backbone = next((n, m) for n, m in model.named_modules() if type(m).__name__ == "PvtBackbone")
    pixel_values = torch.randn(1, 3, 96, 64)
    with torch.no_grad():
        for ours, theirs in zip(backbone(pixel_values).feature_maps, expected(pixel_values).feature_maps):
            torch.testing.assert_close(ours, theirs)


def test_mmseg_checkpoint_gives_its_backbone_and_leaves_out_neck_and_head(tmp_path):
    reference = randomise_norms(SemanticFPN(4, 16, 8, **reference_kwargs(tiny_config()))).eval()
    torch.save({"state_dict": reference.state_dict(), "meta": {}}, tmp_path / "fpn.pth")
    model = upernet()

    report = load_pvt_backbone_weights(model, tmp_path / "fpn.pth")

    assert report.ignored == ["decode_head.*", "neck.*"]
    pixel_values = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        for ours, theirs in zip(model.backbone(pixel_values).feature_maps, reference.backbone(pixel_values)):
            torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


def test_a_checkpoint_of_another_architecture_is_named_and_nothing_is_loaded(original_classifier):
    _, path = original_classifier
    model = upernet(depths=[1, 2, 2, 1])
    before = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    expected = r"(?s)missing \(18\): encoder\.stages\.1\.blocks\.1\..*nothing was loaded"
    with pytest.raises(ConversionError, match=expected):
        load_pvt_backbone_weights(model, path)
    for key, value in model.backbone.state_dict().items():
        torch.testing.assert_close(value, before[key])


def test_save_head_model_refuses_what_it_cannot_write(tmp_path):
    with pytest.raises(ValueError, match="save_head_model writes UperNetForSemanticSegmentation"):
        save_head_model(PvtForImageClassification(tiny_config()), tmp_path / "x")
    with pytest.raises(ValueError, match="Pass the image processor for DetrForObjectDetection"):
        save_head_model(detr(), tmp_path / "x")
    assert not (tmp_path / "x").exists()


def test_head_folders_load_by_repo_id_in_a_fresh_process_without_the_package(original_classifier, tmp_path):
    _, path = original_classifier
    pixel_values = torch.randn(1, 3, 64, 64)
    expected, env = {}, {}
    models = {
        "org/pvt-upernet": upernet(),
        "org/pvt-detr": detr(),
        "org/pvt-mask2former": mask2former(),
        "org/pvt-maskformer": maskformer(),
    }
    for repo_id, model in models.items():
        load_pvt_backbone_weights(model, path)
        processor = PvtV1ImageProcessor.for_segmentation(short_side=64)
        folder = save_head_model(model, tmp_path / repo_id.split("/")[1], image_processor=processor)
        env = lay_out_as_hub_cache(folder, tmp_path / "hf_home", repo_id)
        with torch.no_grad():
            outputs = model(pixel_values)
        expected[repo_id] = outputs.class_queries_logits if "former" in repo_id else outputs.logits
    upernet_config = read_json(tmp_path / "pvt-upernet" / "config.json")
    assert upernet_config["auto_map"] == {
        "AutoConfig": "modeling_pvt_heads.PvtUperNetConfig",
        "AutoModelForSemanticSegmentation": "modeling_pvt_heads.PvtUperNetForSemanticSegmentation",
    }
    assert "auto_map" not in models["org/pvt-upernet"].config.__dict__  # the user's model is left as it was
    torch.save({"pixel_values": pixel_values, **expected}, tmp_path / "expected.pt")

    code = """
        import json, torch
        import numpy as np
        from PIL import Image
        from transformers import (AutoModelForObjectDetection, AutoModelForSemanticSegmentation,
                                  AutoModelForUniversalSegmentation, pipeline)
        expected = torch.load("expected.pt")
        report = {}
        for repo_id, auto_class, output in [
            ("org/pvt-upernet", AutoModelForSemanticSegmentation, "logits"),
            ("org/pvt-detr", AutoModelForObjectDetection, "logits"),
            ("org/pvt-mask2former", AutoModelForUniversalSegmentation, "class_queries_logits"),
            ("org/pvt-maskformer", AutoModelForUniversalSegmentation, "class_queries_logits"),
        ]:
            model = auto_class.from_pretrained(repo_id, trust_remote_code=True).eval()
            with torch.no_grad():
                result = getattr(model(expected["pixel_values"]), output)
            torch.testing.assert_close(result, expected[repo_id], atol=1e-5, rtol=1e-5)
            backbone = next(m for m in model.modules() if type(m).__name__ == "PvtBackbone")
            report[repo_id] = [type(model).__name__, type(backbone).__module__.split(".")[0]]
        segment = pipeline("image-segmentation", model="org/pvt-upernet", trust_remote_code=True)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (90, 120, 3), dtype=np.uint8))
        report["pipeline"] = sorted({r["mask"].size for r in segment(image)})
        print(json.dumps(report))
        """
    report = json.loads(run_without_package(code, tmp_path, env).strip().splitlines()[-1])
    assert report == {
        "org/pvt-upernet": ["PvtUperNetForSemanticSegmentation", "transformers_modules"],
        "org/pvt-detr": ["PvtDetrForObjectDetection", "transformers_modules"],
        "org/pvt-mask2former": ["PvtMask2FormerForUniversalSegmentation", "transformers_modules"],
        "org/pvt-maskformer": ["PvtMaskFormerForInstanceSegmentation", "transformers_modules"],
        "pipeline": [[120, 90]],
    }
