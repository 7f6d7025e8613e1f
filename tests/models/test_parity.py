"""Exactness: our model against an independent implementation of the seed's code (original parameter names), and
against transformers' native PVT with identical weights."""

import pytest
import torch
import transformers
from reference_pvt import PyramidVisionTransformer

from modeling_pvt import PvtBackbone, PvtConfig, PvtForImageClassification, PvtModel
from modeling_pvt.modeling_pvt import convert_original_state_dict

TOLERANCE = 1e-4


def randomize_norms(model: torch.nn.Module):
    """Fresh LayerNorms are the identity; random affine parameters make the parity checks meaningful."""
    for name, parameter in model.named_parameters():
        if "norm" in name:
            parameter.data.normal_(1.0 if name.endswith("weight") else 0.0, 0.2)
    return model


@pytest.fixture(scope="module")
def seed_and_ours():
    torch.manual_seed(0)
    reference = randomize_norms(PyramidVisionTransformer()).eval()  # PVT-Tiny, the seed's defaults
    ours = PvtForImageClassification(PvtConfig.from_preset("pvt-tiny", num_labels=1000)).eval()
    ours.load_state_dict(
        PvtForImageClassification._to_own_layout(convert_original_state_dict(reference.state_dict())), strict=True
    )
    return reference, ours


@pytest.mark.parametrize("attn_implementation", ["eager", "sdpa"])
@pytest.mark.parametrize("size", [(224, 224), (200, 296), (256, 320), (96, 160)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_logits_equal_the_seed(seed_and_ours, attn_implementation, size):
    reference, ours = seed_and_ours
    ours.set_attn_implementation(attn_implementation)
    pixel_values = torch.randn(2, 3, *size)
    with torch.inference_mode():
        error = (ours(pixel_values).logits - reference(pixel_values)).abs().max().item()
    assert error < TOLERANCE, error


def test_every_seed_tensor_has_exactly_one_home(seed_and_ours):
    reference, ours = seed_and_ours
    converted = PvtForImageClassification._to_own_layout(convert_original_state_dict(reference.state_dict()))
    assert len(converted) == len(reference.state_dict()) == len(ours.state_dict())
    assert set(converted) == set(ours.state_dict())


@pytest.fixture(scope="module")
def native_folder(tmp_path_factory):
    torch.manual_seed(1)
    native = transformers.PvtForImageClassification(transformers.PvtConfig(num_labels=7)).eval()
    randomize_norms(native)
    folder = tmp_path_factory.mktemp("native")
    native.save_pretrained(folder)
    return native, folder


def test_logits_equal_native_transformers_at_224(native_folder):
    native, folder = native_folder
    ours = PvtForImageClassification.from_pretrained(folder).eval()
    assert ours.config.model_type == "pvt_v1" and ours.config.num_labels == 7
    assert ours.config.layer_norm_eps == ours.config.conv_layer_norm_eps == 1e-6
    pixel_values = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        error = (ours(pixel_values).logits - native(pixel_values).logits).abs().max().item()
        assert error < TOLERANCE, error
        # Native PVT cannot run other sizes; ours can, from the same checkpoint.
        assert ours(torch.randn(1, 3, 200, 296)).logits.shape == (1, 7)


def test_base_model_and_backbone_load_native_folders(native_folder):
    native, folder = native_folder
    pixel_values = torch.randn(1, 3, 224, 224)
    base = PvtModel.from_pretrained(folder).eval()
    backbone = PvtBackbone.from_pretrained(folder, out_features=["stage1", "stage4"], last_stage_cls_token=True).eval()
    with torch.inference_mode():
        theirs = native.pvt(pixel_values).last_hidden_state
        torch.testing.assert_close(base(pixel_values).last_hidden_state, theirs, atol=TOLERANCE, rtol=0)
        maps = backbone(pixel_values).feature_maps
        ours_maps = base(pixel_values, output_hidden_states=True).hidden_states
    assert [m.shape[1] for m in maps] == [64, 512]
    torch.testing.assert_close(maps[1], ours_maps[3])


def test_native_folder_with_new_label_set(native_folder):
    _, folder = native_folder
    model = PvtForImageClassification.from_pretrained(folder, num_labels=3, ignore_mismatched_sizes=True)
    assert model.classifier.out_features == 3
    assert model(torch.randn(1, 3, 224, 224)).logits.shape == (1, 3)


def test_saved_model_round_trip(tmp_path, seed_and_ours):
    _, ours = seed_and_ours
    ours.save_pretrained(tmp_path)
    reloaded = PvtForImageClassification.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ours.set_attn_implementation("eager")
    pixel_values = torch.randn(1, 3, 224, 224)
    with torch.inference_mode():
        torch.testing.assert_close(reloaded(pixel_values).logits, ours(pixel_values).logits, atol=1e-6, rtol=0)
