"""PvtForSemanticSegmentation: shapes at any size, the loss, head configuration, training features, the processor's
segmentation side and the pipeline. Exactness against the original code is in tests/test_segmentation_parity.py."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_config
from PIL import Image
from transformers import pipeline

from modeling_pvt import (
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtImageProcessor,
)


def segmentation_config(**overrides):
    return tiny_config(**{"num_labels": 4, "fpn_hidden_size": 16, "decoder_hidden_size": 8, **overrides})


@pytest.mark.parametrize("size", [(64, 64), (96, 160), (70, 101), (33, 250)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_logits_at_a_quarter_of_any_input_size(size):
    model = PvtForSemanticSegmentation(segmentation_config()).eval()
    output = model(torch.randn(2, 3, *size), output_hidden_states=True)
    assert output.logits.shape == (2, 4, size[0] // 4, size[1] // 4)
    assert [tuple(h.shape[-2:]) for h in output.hidden_states][0] == (size[0] // 4, size[1] // 4)
    assert torch.isfinite(output.logits).all()


def test_loss_is_cross_entropy_of_upsampled_logits_over_labelled_pixels():
    model = PvtForSemanticSegmentation(segmentation_config()).eval()
    pixel_values, labels = torch.randn(2, 3, 64, 96), torch.randint(0, 4, (2, 64, 96))
    labels[0, :20] = 255
    output = model(pixel_values, labels=labels)
    upsampled = F.interpolate(output.logits, size=(64, 96), mode="bilinear", align_corners=False)
    log_probabilities = upsampled.log_softmax(dim=1)
    labelled = labels != 255
    picked = log_probabilities.gather(1, labels.clamp(max=3)[:, None])[:, 0]
    torch.testing.assert_close(output.loss, -picked[labelled].mean())


def test_all_ignored_batch_gives_zero_loss_not_nan():
    model = PvtForSemanticSegmentation(segmentation_config(semantic_loss_ignore_index=7)).train()
    loss = model(torch.randn(2, 3, 64, 64), labels=torch.full((2, 64, 64), 7)).loss
    assert loss.item() == 0.0
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_head_widths_and_dropout_come_from_the_config():
    config = segmentation_config(fpn_hidden_size=24, decoder_hidden_size=12, classifier_dropout_prob=0.3)
    model = PvtForSemanticSegmentation(config)
    assert {conv.out_channels for conv in model.neck.fpn_convs} == {24}
    assert model.decode_head.classifier.in_channels == 12
    assert model.decode_head.dropout.p == 0.3
    # Branch lengths max(1, log2(stride / 4)) conv blocks, each followed by an upsample except at stride 4.
    assert [len(branch) for branch in model.decode_head.scale_heads] == [1, 2, 4, 6]


def test_dropout_only_in_training():
    model = PvtForSemanticSegmentation(segmentation_config(classifier_dropout_prob=0.5))
    pixel_values = torch.randn(1, 3, 64, 64)
    model.eval()
    torch.testing.assert_close(model(pixel_values).logits, model(pixel_values).logits)
    model.train()
    assert not torch.allclose(model(pixel_values).logits, model(pixel_values).logits)


def test_classifier_checkpoint_gives_the_backbone_and_a_fresh_head(tmp_path):
    classifier = PvtForImageClassification(tiny_config())
    classifier.save_pretrained(tmp_path)
    model = PvtForSemanticSegmentation.from_pretrained(tmp_path, num_labels=4, fpn_hidden_size=16, decoder_hidden_size=8)
    ours, theirs = model.state_dict(), classifier.state_dict()
    for key, tensor in ours.items():
        if key.startswith("encoder."):
            torch.testing.assert_close(tensor, theirs[f"pvt.{key}"])
    assert "encoder.stages.3.embeddings.cls_token" not in ours
    assert ours["encoder.stages.3.embeddings.position_embeddings"].shape[1] == 1 + 7 * 7  # the CLS slot is kept


def test_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    model = PvtForSemanticSegmentation(segmentation_config(classifier_dropout_prob=0.0)).train()
    pixel_values, labels = torch.randn(2, 3, 64, 64), torch.randint(0, 4, (2, 64, 64))

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
    model = PvtForSemanticSegmentation(segmentation_config()).eval()
    pixel_values = torch.randn(2, 3, 64, 96)
    model.set_attn_implementation("eager")
    eager = model(pixel_values).logits
    model.set_attn_implementation("sdpa")
    torch.testing.assert_close(model(pixel_values).logits, eager, atol=1e-5, rtol=1e-5)
    bf16 = model.to(torch.bfloat16)(pixel_values.bfloat16()).logits
    assert bf16.dtype == torch.bfloat16
    torch.testing.assert_close(bf16.float(), eager, atol=0.1, rtol=0.05)


def test_processor_gives_nearest_resized_integer_labels():
    processor = PvtImageProcessor.for_segmentation(short_side=64)
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (75, 100, 3), dtype=np.uint8))
    label_map = np.zeros((75, 100), dtype=np.uint8)
    label_map[:, 50:] = 3
    label_map[0, 0] = 255
    batch = processor(image, segmentation_maps=Image.fromarray(label_map), return_tensors="pt")
    # 75x100 -> short side 64 (64x85), each side up to a multiple of 32: 64x96.
    assert batch["pixel_values"].shape == (1, 3, 64, 96)
    assert batch["labels"].shape == (1, 64, 96) and batch["labels"].dtype == torch.int64
    assert set(batch["labels"].unique().tolist()) == {0, 3, 255}
    reduced = processor(image, segmentation_maps=Image.fromarray(label_map), do_reduce_labels=True)["labels"][0]
    assert set(np.unique(reduced).tolist()) == {2, 255}


def test_paper_test_size_for_ade20k_images():
    processor = PvtImageProcessor.for_segmentation()
    image = Image.new("RGB", (683, 512))
    assert processor(image, return_tensors="pt")["pixel_values"].shape[-2:] == (512, 704)
    tall = Image.new("RGB", (300, 1500))  # the long side would pass 2048 at short side 512: capped, then aligned
    assert processor(tall, return_tensors="pt")["pixel_values"].shape[-2:] == (2048, 416)


def test_post_processing_resizes_to_each_target_size():
    processor = PvtImageProcessor.for_segmentation()
    logits = torch.zeros(2, 3, 8, 8)
    logits[0, 2] = 1.0
    logits[1, 1, :, 4:] = 1.0

    class Output:
        pass

    output = Output()
    output.logits = logits
    first, second = processor.post_process_semantic_segmentation(output, target_sizes=[(30, 40), (16, 16)])
    assert first.shape == (30, 40) and (first == 2).all()
    assert second.shape == (16, 16) and (second[:, :7] == 0).all() and (second[:, 9:] == 1).all()
    assert processor.post_process_semantic_segmentation(output)[0].shape == (8, 8)


def test_pipeline_returns_one_mask_per_present_class_at_the_image_size(tmp_path):
    labels = {0: "sky", 1: "tree", 2: "road", 3: "car"}
    model = PvtForSemanticSegmentation(segmentation_config(id2label=labels)).eval()
    with torch.no_grad():  # a head that predicts "tree" everywhere: one class present, one mask
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.copy_(torch.tensor([0.0, 1.0, 0.0, 0.5]))
    model.save_pretrained(tmp_path)
    PvtImageProcessor.for_segmentation(short_side=64).save_pretrained(tmp_path)
    segmenter = pipeline("image-segmentation", model=str(tmp_path), trust_remote_code=True)
    image = Image.new("RGB", (90, 70), "white")
    results = segmenter(image)
    assert [result["label"] for result in results] == ["tree"]
    assert results[0]["mask"].size == (90, 70)
    assert np.asarray(results[0]["mask"]).min() == 255
