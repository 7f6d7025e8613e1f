"""What transformers' common model tests expect of every model class: missing weights initialised, save/load round
trips, hidden states and attentions, Auto classes resolving to ours."""

import pytest
import torch
from conftest import tiny_config
from transformers import (
    AutoBackbone,
    AutoImageProcessor,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForSemanticSegmentation,
)

from modeling_pvt import (
    PvtBackbone,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtImageProcessor,
    PvtModel,
    PvtV1ImageProcessor,
)

MODEL_CLASSES = (PvtModel, PvtForImageClassification, PvtBackbone, PvtForSemanticSegmentation)
_UNSET_INT = 12345


@pytest.fixture
def poisoned_allocations(monkeypatch):
    """Memory that from_pretrained allocates for missing weights starts as NaN (floats) or 12345 (integers), so a
    weight that no initialiser touches is caught instead of passing as whatever the allocator left there."""
    real_empty, real_empty_like = torch.empty, torch.empty_like

    def poison(tensor):
        return tensor.fill_(float("nan")) if tensor.is_floating_point() else tensor.fill_(_UNSET_INT)

    monkeypatch.setattr(torch, "empty", lambda *a, **k: poison(real_empty(*a, **k)))
    monkeypatch.setattr(torch, "empty_like", lambda *a, **k: poison(real_empty_like(*a, **k)))


def _uninitialised(model) -> list[str]:
    tensors = [*model.named_parameters(), *model.named_buffers()]
    return [
        name
        for name, tensor in tensors
        if (tensor.is_floating_point() and not torch.isfinite(tensor).all())
        or (not tensor.is_floating_point() and (tensor == _UNSET_INT).any())
    ]


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_every_weight_missing_from_a_checkpoint_is_initialised_reproducibly(model_class, poisoned_allocations):
    def load():
        torch.manual_seed(3)
        return model_class.from_pretrained(None, config=tiny_config(), state_dict={})

    first, second = load(), load()
    assert _uninitialised(first) == []
    for (name, tensor), (_, again) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(tensor, again), name


def test_new_input_channels_get_initialised_first_stage(tmp_path, poisoned_allocations):
    PvtForImageClassification(tiny_config()).save_pretrained(tmp_path)
    model = PvtForImageClassification.from_pretrained(tmp_path, num_channels=1, ignore_mismatched_sizes=True)
    assert _uninitialised(model) == []
    assert torch.isfinite(model(torch.randn(2, 1, 64, 64)).logits).all()


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
def test_save_load_round_trip_and_auto_class(model_class, tmp_path, monkeypatch):
    # transformers 5.24's AutoBackbone asks the Hub whether even a local folder is a repo, else tries timm (README).
    monkeypatch.setattr("huggingface_hub.HfApi.repo_exists", lambda self, repo_id, **kwargs: True)
    auto_class = {
        PvtModel: AutoModel,
        PvtForImageClassification: AutoModelForImageClassification,
        PvtBackbone: AutoBackbone,
        PvtForSemanticSegmentation: AutoModelForSemanticSegmentation,
    }[model_class]
    model = model_class(tiny_config()).eval()
    model.save_pretrained(tmp_path)
    loaded = auto_class.from_pretrained(str(tmp_path)).eval()
    assert type(loaded) is model_class
    pixel_values = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        for ours, theirs in zip(model(pixel_values).to_tuple(), loaded(pixel_values).to_tuple()):
            torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("model_class", MODEL_CLASSES, ids=lambda c: c.__name__)
@pytest.mark.parametrize("attention", ["eager", "sdpa"])
def test_hidden_states_and_attentions_for_every_class(model_class, attention):
    config = tiny_config()
    model = model_class(config).eval()
    model.set_attn_implementation(attention)
    output = model(torch.randn(1, 3, 64, 96), output_hidden_states=True, output_attentions=True)
    assert len(output.hidden_states) == config.num_stages
    assert [h.shape[1] for h in output.hidden_states] == config.hidden_sizes
    assert len(output.attentions) == sum(config.depths)
    assert all(torch.isfinite(a).all() for a in output.attentions)
    plain = model(torch.randn(1, 3, 64, 96))
    assert plain.attentions is None and plain.hidden_states is None


def test_auto_image_processor_gives_ours_not_the_native_one(tmp_path):
    """transformers' own PVT processor has the name "PvtImageProcessor"; a folder must not resolve to it."""
    PvtImageProcessor.for_segmentation().save_pretrained(tmp_path)
    processor = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(processor) is PvtV1ImageProcessor
    assert processor.size_divisor == 32
