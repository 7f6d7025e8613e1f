"""PvtForSemanticSegmentation and the dense PvtBackbone against the independent reference written from the original
dense code's and mmseg's description (tests/reference_semantic_fpn.py), weights moved through the key tables."""

import pytest
import torch
from conftest import tiny_config
from reference_pvt import PyramidVisionTransformer, reference_kwargs
from reference_semantic_fpn import (
    DensePyramidVisionTransformer,
    SemanticFPN,
    randomise_norms,
)

from modeling_pvt import PvtBackbone, PvtConfig, PvtForSemanticSegmentation
from modeling_pvt.modeling_pvt import (
    convert_mmseg_state_dict,
    convert_original_state_dict,
)


def reference_and_ours(config: PvtConfig) -> tuple[SemanticFPN, PvtForSemanticSegmentation]:
    reference = SemanticFPN(
        config.num_labels, config.fpn_hidden_size, config.decoder_hidden_size, **reference_kwargs(config)
    )
    randomise_norms(reference).eval()
    ours = PvtForSemanticSegmentation(config).eval()
    ours.load_state_dict(convert_mmseg_state_dict(reference.state_dict()), strict=True)
    return reference, ours


@pytest.mark.parametrize("size", [(512, 512), (360, 500)], ids=["512x512", "360x500"])
def test_semantic_fpn_on_the_real_pvt_tiny_matches_the_reference(size):
    reference, ours = reference_and_ours(PvtConfig.from_preset("pvt-tiny", num_labels=19))
    pixel_values = torch.randn(1, 3, *size)
    with torch.no_grad():
        expected = reference(pixel_values)
        logits = ours(pixel_values).logits
    assert logits.shape == (1, 19, size[0] // 4, size[1] // 4) == expected.shape
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)


def test_dense_backbone_matches_the_original_dense_code_and_the_switch_restores_the_cls_token():
    config = tiny_config()
    classifier = randomise_norms(PyramidVisionTransformer(num_classes=5, **reference_kwargs(config))).eval()
    dense = DensePyramidVisionTransformer(**reference_kwargs(config)).eval()
    # As mmseg initialises its backbone from an ImageNet checkpoint: the classifier-only parts are left out.
    dense.load_state_dict(
        {k: v for k, v in classifier.state_dict().items() if not k.startswith(("cls_token", "norm.", "head."))}
    )
    converted = convert_original_state_dict(classifier.state_dict())
    pixel_values = torch.randn(2, 3, 96, 160)

    backbone = PvtBackbone(tiny_config(out_indices=[0, 1, 2, 3])).eval()
    assert backbone.encoder.stages[-1].embeddings.cls_token is None
    with_cls = PvtBackbone(tiny_config(out_indices=[0, 1, 2, 3], last_stage_cls_token=True)).eval()
    for model in (backbone, with_cls):
        model.load_state_dict({k: v for k, v in converted.items() if k in model.state_dict()}, strict=True)
    with torch.no_grad():
        expected = dense(pixel_values)
        maps = backbone(pixel_values).feature_maps
        maps_with_cls = with_cls(pixel_values).feature_maps
    for ours, theirs in zip(maps, expected):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    for ours, theirs in zip(maps_with_cls[:3], expected[:3]):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)
    assert (maps_with_cls[3] - expected[3]).abs().max() > 1e-3  # the CLS token takes part in stage-4 attention


def test_batch_norm_statistics_and_dropout_follow_train_and_eval_modes():
    config = tiny_config(num_labels=3)
    reference, ours = reference_and_ours(config)
    pixel_values = torch.randn(2, 3, 64, 96)
    ours.train()
    reference.train()
    torch.manual_seed(1)
    train_logits = ours(pixel_values).logits
    torch.manual_seed(1)
    torch.testing.assert_close(train_logits, reference(pixel_values), atol=1e-5, rtol=1e-5)
    running_mean = ours.decode_head.scale_heads[0][0].batch_norm.running_mean
    torch.testing.assert_close(running_mean, reference.decode_head.scale_heads[0][0].bn.running_mean)
