"""Shapes, dtypes and output conventions of every public model."""

import functools

import pytest
import torch
from conftest import tiny_config

from modeling_pvt import (
    PRESETS,
    PvtBackbone,
    PvtConfig,
    PvtForImageClassification,
    PvtModel,
)

SIZES = [(224, 224), (256, 320), (200, 296)]


@functools.cache
def preset_classifier(name: str) -> PvtForImageClassification:
    return PvtForImageClassification(PvtConfig.from_preset(name, num_labels=1000)).eval()


def expected_map_shapes(config, batch, height, width):
    shapes = []
    for stage in range(config.num_stages):
        height, width = height // config.patch_sizes[stage], width // config.patch_sizes[stage]
        shapes.append((batch, config.hidden_sizes[stage], height, width))
    return shapes


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_preset_output_shapes(name, batch, size):
    model = preset_classifier(name)
    with torch.inference_mode():
        output = model(torch.randn(batch, 3, *size), output_hidden_states=True)
    maps = expected_map_shapes(model.config, batch, *size)
    assert output.logits.shape == (batch, 1000) and output.logits.dtype == torch.float32
    assert [tuple(h.shape) for h in output.hidden_states] == maps
    assert all(h.dtype == torch.float32 for h in output.hidden_states)
    assert torch.isfinite(output.logits).all()


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
def test_base_model_outputs(config, size):
    model = PvtModel(config).eval()
    output = model(torch.randn(2, 3, *size), output_hidden_states=True)
    maps = expected_map_shapes(config, 2, *size)
    last_tokens = 1 + maps[-1][2] * maps[-1][3]
    assert output.last_hidden_state.shape == (2, last_tokens, config.hidden_sizes[-1])
    assert torch.equal(output.pooler_output, output.last_hidden_state[:, 0])
    assert [tuple(h.shape) for h in output.hidden_states] == maps
    assert output.attentions is None
    assert model(torch.randn(1, 3, *size)).hidden_states is None


def test_attentions_with_eager(config):
    model = PvtModel(config).eval()
    model.set_attn_implementation("eager")
    output = model(torch.randn(2, 3, 64, 96), output_attentions=True)
    assert len(output.attentions) == sum(config.depths)
    expected = []
    for stage, depth in enumerate(config.depths):
        height, width = 64 // config.stage_stride(stage), 96 // config.stage_stride(stage)
        sr = config.sr_ratios[stage]
        queries = height * width + (stage == config.num_stages - 1)
        keys = (height // sr) * (width // sr) + (sr == 1 and stage == config.num_stages - 1)
        expected += [(2, config.num_attention_heads[stage], queries, keys)] * depth
    assert [tuple(a.shape) for a in output.attentions] == expected
    for attention in output.attentions:
        torch.testing.assert_close(attention.sum(-1), torch.ones(attention.shape[:-1]))


def test_output_attentions_under_sdpa_uses_eager_for_that_call(config):
    model = PvtForImageClassification(config).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    model.set_attn_implementation("eager")
    eager = model(pixel_values, output_attentions=True)
    model.set_attn_implementation("sdpa")
    sdpa = model(pixel_values, output_attentions=True)
    assert model.config._attn_implementation == "sdpa"
    assert len(sdpa.attentions) == sum(config.depths)
    for ours, reference in zip(sdpa.attentions, eager.attentions):
        torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(sdpa.logits, eager.logits, atol=1e-5, rtol=1e-5)
    assert model(pixel_values).attentions is None


def test_eager_and_sdpa_agree(config):
    model = PvtForImageClassification(config).eval()
    pixel_values = torch.randn(2, 3, 96, 128)
    model.set_attn_implementation("eager")
    eager = model(pixel_values).logits
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(model(pixel_values).logits, eager, atol=1e-5, rtol=1e-5)


def test_return_dict_false_gives_tuples(config):
    model = PvtForImageClassification(config).eval()
    logits, hidden_states = model(torch.randn(1, 3, 64, 64), output_hidden_states=True, return_dict=False)
    assert logits.shape == (1, config.num_labels) and len(hidden_states) == 4
    _, pooled = PvtModel(config)(torch.randn(1, 3, 64, 64), return_dict=False)
    assert pooled.shape == (1, config.hidden_sizes[-1])


@pytest.mark.parametrize("size", [(224, 224), (200, 296)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_backbone_feature_maps(size):
    config = tiny_config(out_features=["stage1", "stage2", "stage3", "stage4"])
    backbone = PvtBackbone(config).eval()
    output = backbone(torch.randn(2, 3, *size))
    assert [tuple(f.shape) for f in output.feature_maps] == expected_map_shapes(config, 2, *size)
    assert [size[0] // f.shape[-2] for f in output.feature_maps[:2]] == [4, 8]
    assert backbone.channels == config.hidden_sizes
    assert output.hidden_states is None


def test_backbone_default_and_selected_stages():
    assert len(PvtBackbone(tiny_config())(torch.randn(1, 3, 64, 64)).feature_maps) == 1
    backbone = PvtBackbone(tiny_config(out_indices=[1, 3])).eval()
    feature_maps, hidden_states = backbone(torch.randn(1, 3, 64, 64), output_hidden_states=True, return_dict=False)
    assert backbone.out_features == ["stage2", "stage4"] and backbone.channels == [16, 64]
    assert [f.shape[1] for f in feature_maps] == [16, 64] and len(hidden_states) == 4


def test_backbone_drops_the_cls_token_only_in_stage_4(config):
    """Dense default: stages 1-3 are the classifier's, stage 4 attends without the CLS token (which changes it)."""
    model = PvtModel(config).eval()
    dense = PvtBackbone(tiny_config(out_indices=[0, 1, 2, 3])).eval()
    missing, unexpected = dense.load_state_dict(model.state_dict(), strict=False)
    assert missing == [] and sorted(unexpected) == ["encoder.stages.3.embeddings.cls_token", "norm.bias", "norm.weight"]
    with_cls = PvtBackbone(tiny_config(out_indices=[0, 1, 2, 3], last_stage_cls_token=True)).eval()
    with_cls.load_state_dict(model.state_dict(), strict=False)
    pixel_values = torch.randn(1, 3, 96, 64)
    reference = model(pixel_values, output_hidden_states=True).hidden_states
    dense_maps, with_cls_maps = dense(pixel_values).feature_maps, with_cls(pixel_values).feature_maps
    for stage in range(3):
        torch.testing.assert_close(dense_maps[stage], reference[stage])
    for ours, theirs in zip(with_cls_maps, reference):
        torch.testing.assert_close(ours, theirs)
    assert (dense_maps[3] - reference[3]).abs().max() > 1e-3


def test_classification_losses():
    pixel_values = torch.randn(4, 3, 64, 64)
    single = PvtForImageClassification(tiny_config(num_labels=3))
    labels = torch.tensor([0, 2, 1, 2])
    output = single(pixel_values, labels=labels)
    torch.testing.assert_close(output.loss, torch.nn.functional.cross_entropy(output.logits, labels))

    multi = PvtForImageClassification(tiny_config(num_labels=3, problem_type="multi_label_classification"))
    targets = torch.tensor([[1.0, 0, 1], [0, 0, 1], [1, 1, 0], [0, 0, 0]])
    output = multi(pixel_values, labels=targets)
    torch.testing.assert_close(
        output.loss, torch.nn.functional.binary_cross_entropy_with_logits(output.logits, targets)
    )

    regression = PvtForImageClassification(tiny_config(num_labels=1))
    values = torch.randn(4)
    output = regression(pixel_values, labels=values)
    torch.testing.assert_close(output.loss, torch.nn.functional.mse_loss(output.logits.squeeze(), values))


def test_headless_classifier_returns_features(config):
    model = PvtForImageClassification(tiny_config(num_labels=0)).eval()
    assert model(torch.randn(1, 3, 64, 64)).logits.shape == (1, config.hidden_sizes[-1])


class _ScaledLinear(torch.nn.Linear):
    """Stands in for an adapter layer (e.g. PEFT's LoRA) that replaces an nn.Linear and changes its output."""

    def forward(self, hidden_states):
        return 2 * super().forward(hidden_states)


@pytest.mark.parametrize("mode", ["inference", "training"])
def test_replaced_and_hooked_linear_layers_are_honoured(config, mode):
    """The fast linear kernel must not bypass adapters or hooks that users attach to the layers."""
    model = PvtForImageClassification(config).train(mode == "training")
    pixel_values = torch.randn(1, 3, 64, 64)
    context = torch.inference_mode() if mode == "inference" else torch.enable_grad()
    with context:
        baseline = model(pixel_values).logits
        mlp = model.pvt.encoder.stages[3].blocks[0].mlp
        original_fc2 = mlp.fc2
        mlp.fc2 = _ScaledLinear(original_fc2.in_features, original_fc2.out_features)
        mlp.fc2.load_state_dict(original_fc2.state_dict())
        adapted = model(pixel_values).logits
        mlp.fc2 = original_fc2
        handle = model.pvt.encoder.stages[3].blocks[0].attn.proj.register_forward_hook(lambda m, i, out: out * 0)
        hooked = model(pixel_values).logits
        handle.remove()
        restored = model(pixel_values).logits
    assert not torch.allclose(adapted, baseline) and not torch.allclose(hooked, baseline)
    torch.testing.assert_close(restored, baseline)
