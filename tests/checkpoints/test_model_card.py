"""The shared model-card renderer: metadata, measured size and compute, paper numbers cited as the paper's,
fine-tuned cards with their own metrics, and the committed cards under model_cards/ being current."""


import pytest
import torch
from conftest import tiny_config
from helpers import REPO
from huggingface_hub import ModelCard

from modeling_pvt import (
    PRESETS,
    PvtBackbone,
    PvtConfig,
    PvtForImageClassification,
    PvtForSemanticSegmentation,
)
from modeling_pvt.checkpoints.model_card import (
    CARD_TEMPLATE,
    PAPER_RESULTS,
    PAPER_SEGMENTATION,
    infer_variant,
    measure_model,
    preset_card,
    render_model_card,
)

MODEL_CARDS = REPO / "model_cards"


def test_committed_template_and_preset_cards_are_current():
    assert (MODEL_CARDS / "TEMPLATE.md").read_text() == CARD_TEMPLATE.template
    for variant in PRESETS:
        assert (MODEL_CARDS / f"{variant}.md").read_text() == preset_card(variant), (
            f"model_cards/{variant}.md is stale: run `python -m modeling_pvt.checkpoints.model_card model_cards`"
        )


@pytest.mark.parametrize("variant", list(PRESETS))
def test_preset_card_metadata_and_sections(variant):
    card = ModelCard(preset_card(variant))
    data = card.data.to_dict()
    assert data["license"] == "apache-2.0"
    assert data["library_name"] == "transformers"
    assert data["pipeline_tag"] == "image-classification"
    assert data["datasets"] == ["imagenet-1k"]
    assert "pvt" in data["tags"] and variant in data["tags"]
    (result,) = card.data.eval_results
    assert result.metric_type == "accuracy" and result.metric_value == PAPER_RESULTS[variant]["top1"]
    assert "paper" in result.source_name and result.source_url == "https://arxiv.org/abs/2102.12122"
    for heading in (
        "## Model description",
        "## Size and compute (measured by our code)",
        "## ImageNet-1k results (reported by the paper)",
        "## Intended uses",
        "## How to use",
        "## Limitations",
        "## Citation",
    ):
        assert heading in card.text
    assert "torch.utils.flop_counter.FlopCounterMode" in card.text
    assert "trust_remote_code=True" in card.text and 'pipeline("image-classification"' in card.text
    assert "@inproceedings{wang2021pyramid" in card.text
    # AutoBackbone.from_pretrained fails for folders and offline (see README); the card recommends what works.
    assert "AutoBackbone.from_pretrained(" not in card.text
    assert "AutoModel.from_pretrained(repo, trust_remote_code=True)" in card.text
    assert "output_hidden_states=True" in card.text


@pytest.mark.parametrize("variant", list(PRESETS))
def test_measured_size_and_compute_agree_with_the_paper(variant):
    with torch.device("meta"):
        model = PvtForImageClassification(PvtConfig.from_preset(variant, num_labels=1000))
    measured = measure_model(model)
    paper = PAPER_RESULTS[variant]
    assert measured["params"] / 1e6 == pytest.approx(paper["params_m"], rel=0.005)
    # The paper rounds to one decimal; its "GFLOPs" are multiply-adds.
    assert measured["gmacs"] == pytest.approx(paper["gflops"], abs=0.06)
    assert measured["gflops"] == pytest.approx(2 * measured["gmacs"])


def multiply_adds_by_hand(config: PvtConfig, size: int) -> int:
    """PVT's multiply-adds written out layer by layer: patch convolutions, q / spatial reduction / kv / attention /
    proj, MLP and head."""
    total, channels_in, side = 0, config.num_channels, size
    for stage in range(config.num_stages):
        channels, patch, ratio = config.hidden_sizes[stage], config.patch_sizes[stage], config.sr_ratios[stage]
        side //= patch
        spatial = side * side
        tokens = spatial + (1 if stage == config.num_stages - 1 else 0)
        total += spatial * channels * channels_in * patch * patch
        reduced = spatial // (ratio * ratio) if ratio > 1 else tokens
        per_block = tokens * channels * channels  # q
        per_block += (spatial * channels * channels) if ratio > 1 else 0  # sr convolution, kernel = stride = R
        per_block += reduced * channels * 2 * channels  # kv
        per_block += 2 * tokens * reduced * channels  # q·kᵀ and attention·v
        per_block += tokens * channels * channels  # proj
        per_block += 2 * tokens * channels * int(channels * config.mlp_ratios[stage])  # fc1, fc2
        total += config.depths[stage] * per_block
        channels_in = channels
    return total + config.hidden_sizes[-1] * config.num_labels


def test_measurement_matches_a_count_by_hand():
    model = PvtForImageClassification(tiny_config()).eval()
    measured = measure_model(model)
    assert measured["gmacs"] * 1e9 == pytest.approx(multiply_adds_by_hand(model.config, 224))
    assert measured["params"] == sum(parameter.numel() for parameter in model.parameters())
    backbone = PvtBackbone(tiny_config())
    assert measure_model(backbone)["params"] == sum(parameter.numel() for parameter in backbone.parameters())


def test_measuring_leaves_the_model_unchanged():
    model = PvtForImageClassification(tiny_config())
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    implementation = model.config._attn_implementation
    render_model_card(model)
    assert model.config._attn_implementation == implementation
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_fine_tuned_card_reports_its_own_metrics_dataset_and_hyper_parameters():
    model = PvtForImageClassification(PvtConfig.from_preset("pvt-tiny", num_labels=3))
    text = render_model_card(
        model,
        eval_results={"eval_accuracy": 0.9375, "eval_f1": 0.91, "eval_loss": 0.21, "eval_runtime": 3.2, "epoch": 5.0},
        dataset_name="AI-Lab-Makerere/beans",
        training_args={"learning_rate": 5e-5, "num_train_epochs": 5, "per_device_train_batch_size": 32},
        base_model="my-org/pvt-tiny-224",
        repo_id="my-org/pvt-tiny-beans",
    )
    card = ModelCard(text)
    data = card.data.to_dict()
    assert data["datasets"] == ["AI-Lab-Makerere/beans"] and data["base_model"] == "my-org/pvt-tiny-224"
    metrics = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert metrics == {"accuracy": 0.9375, "f1": 0.91}
    assert all(result.dataset_type == "AI-Lab-Makerere/beans" for result in card.data.eval_results)
    assert "## Evaluation results (measured on this checkpoint)" in text
    assert "| eval_accuracy | 0.9375 |" in text
    assert "| learning_rate | 5e-05 |" in text and "| per_device_train_batch_size | 32 |" in text
    assert "reported by the paper" not in text and "75.1" not in text
    assert 'repo = "my-org/pvt-tiny-beans"' in text
    assert card.data.model_name == "pvt-tiny-beans"


def test_a_card_says_from_scratch_or_fine_tuned_and_names_the_installed_transformers():
    import transformers

    model = PvtForImageClassification(tiny_config())
    scratch = render_model_card(model, dataset_name="sklearn-digits", training_args={"seed": 42}, from_scratch=True)
    assert "Trained from scratch on `sklearn-digits`." in scratch and "Fine-tuned" not in scratch
    assert "Trained from scratch on `sklearn-digits` with these hyper-parameters:" in scratch
    tuned = render_model_card(model, dataset_name="beans", training_args={"seed": 42}, base_model="org/pvt-tiny")
    assert "Fine-tuned from [`org/pvt-tiny`]" in tuned and "Fine-tuned on `beans` with" in tuned
    assert "from scratch" not in tuned
    assert f"(transformers\n# {transformers.__version__} asks the Hub" in scratch


def test_custom_architecture_card_has_no_paper_claims():
    model = PvtForImageClassification(tiny_config())
    assert infer_variant(model.config) is None
    text = render_model_card(model)
    assert "No evaluation results are recorded" in text
    assert "model-index" not in text and "the paper reports" not in text.lower()
    assert "| hidden size | 8 | 16 | 32 | 64 |" in text


def test_a_preset_with_a_new_head_does_not_cite_the_paper_accuracy():
    model = PvtForImageClassification(PvtConfig.from_preset("pvt-tiny", num_labels=3))
    text = render_model_card(model)
    assert "model-index" not in text and "No evaluation results are recorded" in text
    assert "75.1" not in text


def test_variant_is_inferred_and_unknown_variants_are_refused():
    with torch.device("meta"):
        model = PvtForImageClassification(PvtConfig.from_preset("pvt-medium", num_labels=1000))
    assert infer_variant(model.config) == "pvt-medium"
    with pytest.raises(ValueError, match="Unknown PVT variant 'pvt-huge'.*pvt-tiny"):
        render_model_card(model, variant="pvt-huge")


def test_a_local_folder_is_not_hub_metadata_and_its_path_is_not_published(tmp_path):
    folder = tmp_path / "secret-user" / "shapes"
    folder.mkdir(parents=True)
    model = PvtForImageClassification(tiny_config())
    text = render_model_card(model, eval_results={"eval_accuracy": 0.5}, dataset_name=str(folder))
    card = ModelCard(text)
    assert card.data.to_dict().get("datasets") is None
    assert str(tmp_path) not in text and "local folder shapes" in text


@pytest.mark.parametrize("variant", list(PRESETS))
def test_semantic_fpn_size_and_compute_agree_with_the_paper(variant):
    """The paper's Semantic FPN table (150 classes, 512x512) pins down the whole segmentation architecture."""
    with torch.device("meta"):
        model = PvtForSemanticSegmentation(PvtConfig.from_preset(variant, num_labels=150))
    measured = measure_model(model, 512)
    paper = PAPER_SEGMENTATION[variant]
    assert measured["params"] / 1e6 == pytest.approx(paper["params_m"], rel=0.005)
    # Within 0.1% (pvt-large: 79.53 measured, 79.6 printed).
    assert measured["gmacs"] == pytest.approx(paper["gflops"], rel=0.001)


def test_segmentation_cards_cite_ade20k_only_for_the_paper_model_and_report_measured_miou():
    with torch.device("meta"):
        ade20k = PvtForSemanticSegmentation(PvtConfig.from_preset("pvt-small", num_labels=150))
    card = ModelCard(render_model_card(ade20k))
    assert card.data.pipeline_tag == "image-segmentation" and "semantic-segmentation" in card.data.tags
    (paper,) = card.data.eval_results
    assert (paper.metric_type, paper.metric_value, paper.dataset_name) == ("mean_iou", 39.8, "ADE20K")
    assert "AutoModelForSemanticSegmentation" in card.text and 'pipeline("image-segmentation"' in card.text
    assert "Compute at 512x512" in card.text and "28.2 M parameters and 44.5" in card.text

    digits = PvtForSemanticSegmentation(PvtConfig.from_preset("pvt-tiny", num_labels=11, image_size=64))
    text = render_model_card(
        digits,
        eval_results={"mean_iou": 0.8123, "overall_accuracy": 0.97},
        dataset_name="grid-digits",
        training_args={"learning_rate": 1e-3},
    )
    card = ModelCard(text)
    assert {r.metric_type: r.metric_value for r in card.data.eval_results} == {"mean_iou": 0.8123, "overall_accuracy": 0.97}
    assert all(r.task_type == "image-segmentation" for r in card.data.eval_results)
    assert card.data.to_dict().get("datasets") is None  # built by this package, not a Hub dataset
    assert "| mean_iou | 0.8123 |" in text and "reported by the paper" not in text and "39.8" not in text
