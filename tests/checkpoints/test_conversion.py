"""scripts/convert_checkpoint.py end to end on small checkpoints made here: original-release files (bare and
`{"model": …}`, .pth and .safetensors), transformers-native folders and Hub repo ids, this package's folders;
strict key checking, safe loading and --verify."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import transformers
from conftest import tiny_config
from helpers import (
    CONVERT_SCRIPT,
    REMOTE_CODE_FILES,
    lay_out_as_hub_cache,
    read_json,
    run_convert,
    run_without_package,
)
from reference_pvt import PyramidVisionTransformer, reference_kwargs
from safetensors.torch import save_file

from modeling_pvt import PvtConfig, PvtForImageClassification
from modeling_pvt.checkpoints.conversion import (
    ConversionError,
    build_model,
    detect_format,
    load_checkpoint,
    load_weights_file,
    verify,
)

HUB_FILES = {"config.json", "model.safetensors", "preprocessor_config.json", "README.md", *REMOTE_CODE_FILES}


def original_model(config: PvtConfig, num_classes: int) -> PyramidVisionTransformer:
    """The independent original-layout implementation with random weights, norms included (so a swapped or
    skipped LayerNorm would change the output)."""
    model = PyramidVisionTransformer(
        **reference_kwargs(config),
        num_classes=num_classes,
    ).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "norm" in name:
                parameter.add_(torch.randn_like(parameter) * 0.1)
    return model


def write_config(tmp_path: Path, config: PvtConfig) -> Path:
    path = tmp_path / "tiny_config.json"
    config.to_json_file(path)
    return path


@pytest.fixture
def tiny_original(tmp_path):
    """(reference model, path of its `{"model": state_dict}` .pth, path of the tiny config.json)."""
    config = tiny_config()
    model = original_model(config, num_classes=5)
    path = tmp_path / "pvt_tiny_original.pth"
    torch.save({"model": model.state_dict()}, path)
    return model, path, write_config(tmp_path, config)




@pytest.mark.parametrize("file_format", ["wrapped .pth", "bare .safetensors"])
def test_original_checkpoint_converts_verifies_and_matches_the_reference(tmp_path, capsys, file_format):
    config = tiny_config()
    reference = original_model(config, num_classes=5)
    if file_format == "wrapped .pth":
        checkpoint = tmp_path / "pvt.pth"
        torch.save({"model": reference.state_dict(), "epoch": 300}, checkpoint)
    else:
        checkpoint = tmp_path / "pvt.safetensors"
        save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, checkpoint)
    output = tmp_path / "converted"

    code, out, err = run_convert(
        capsys,
        "--checkpoint",
        checkpoint,
        "--config",
        write_config(tmp_path, config),
        "--output_dir",
        output,
        "--verify",
    )

    assert code == 0, err
    assert "Detected format: original PVT release" in out
    assert "Verify 224x224" in out and "Verify 192x288" in out and out.count(" OK") == 2
    assert {path.name for path in output.iterdir()} == HUB_FILES
    assert set(read_json(output / "config.json")["auto_map"]) >= {"AutoConfig", "AutoModelForImageClassification"}
    converted = PvtForImageClassification.from_pretrained(output).eval()
    pixel_values = torch.randn(2, 3, 160, 224)
    with torch.no_grad():
        torch.testing.assert_close(converted(pixel_values).logits, reference(pixel_values), atol=1e-5, rtol=1e-5)


def test_pvt_tiny_preset_with_1000_way_head_gets_imagenet_labels(tmp_path, capsys):
    config = PvtConfig.from_preset("pvt-tiny")
    checkpoint = tmp_path / "pvt_tiny.pth"
    torch.save(original_model(config, num_classes=1000).state_dict(), checkpoint)
    output = tmp_path / "pvt-tiny-224"

    code, out, err = run_convert(
        capsys, "--checkpoint", checkpoint, "--variant", "pvt-tiny", "--output_dir", output, "--verify"
    )

    assert code == 0, err
    assert "ImageNet-1k label names" in out and out.count(" OK") == 2
    saved = read_json(output / "config.json")
    assert len(saved["id2label"]) == 1000
    assert saved["id2label"]["0"] == "tench, Tinca tinca"
    assert saved["id2label"]["999"] == "toilet tissue, toilet paper, bathroom tissue"
    assert saved["depths"] == [2, 2, 2, 2]
    card = (output / "README.md").read_text()
    assert "PVT-Tiny" in card and "original PVT release checkpoint `pvt_tiny.pth`" in card


def test_converted_folder_loads_with_remote_code_and_pipeline_in_a_fresh_process(tiny_original, tmp_path, capsys):
    reference, checkpoint, config_path = tiny_original
    output = tmp_path / "converted"
    assert run_convert(capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", output)[0] == 0
    pixel_values = torch.randn(1, 3, 224, 224)
    torch.save({"pixel_values": pixel_values, "logits": reference(pixel_values).detach()}, tmp_path / "expected.pt")

    stdout = run_without_package(
        f"""
        import numpy as np, torch
        from PIL import Image
        from transformers import AutoModelForImageClassification, pipeline
        expected = torch.load("expected.pt")
        model = AutoModelForImageClassification.from_pretrained({str(output)!r}, trust_remote_code=True).eval()
        with torch.no_grad():
            logits = model(expected["pixel_values"]).logits
        torch.testing.assert_close(logits, expected["logits"], atol=1e-5, rtol=1e-5)
        classify = pipeline("image-classification", model={str(output)!r}, trust_remote_code=True)
        image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8))
        predictions = classify(image, top_k=5)
        print(type(model).__module__, sorted(p["label"] for p in predictions))
        """,
        tmp_path,
    )
    assert stdout.startswith("transformers_modules.")
    assert "['LABEL_0', 'LABEL_1', 'LABEL_2', 'LABEL_3', 'LABEL_4']" in stdout


def native_tiny_model(num_labels=4) -> transformers.PvtForImageClassification:
    config = transformers.PvtConfig(
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        num_labels=num_labels,
        id2label={index: f"kind-{index}" for index in range(num_labels)},
    )
    return transformers.PvtForImageClassification(config).eval()


def test_native_transformers_folder_converts_and_verifies(tmp_path, capsys):
    native = native_tiny_model()
    native.save_pretrained(tmp_path / "native")
    output = tmp_path / "converted"

    code, out, err = run_convert(capsys, "--checkpoint", tmp_path / "native", "--output_dir", output, "--verify")

    assert code == 0, err
    assert "Detected format: transformers-native PVT" in out
    assert "Verify 224x224" in out and " OK" in out
    # The native model cannot run off its training grid, which the report says instead of comparing.
    assert "Verify 192x288: not compared" in out
    assert read_json(output / "config.json")["id2label"]["3"] == "kind-3"
    converted = PvtForImageClassification.from_pretrained(output).eval()
    pixel_values = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(converted(pixel_values).logits, native(pixel_values).logits, atol=1e-5, rtol=1e-5)


def test_native_folder_with_placeholder_labels_and_1000_outputs_gets_imagenet_names(tmp_path, capsys):
    native = native_tiny_model(num_labels=1000)
    native.config.id2label = {index: f"LABEL_{index}" for index in range(1000)}
    native.save_pretrained(tmp_path / "native")
    code, out, err = run_convert(capsys, "--checkpoint", tmp_path / "native", "--output_dir", tmp_path / "out")
    assert code == 0, err
    assert "ImageNet-1k label names" in out
    assert read_json(tmp_path / "out" / "config.json")["id2label"]["1"] == "goldfish, Carassius auratus"


def test_native_folder_that_is_not_the_named_variant_is_refused(tmp_path, capsys):
    native_tiny_model().save_pretrained(tmp_path / "native")
    code, _, err = run_convert(
        capsys, "--checkpoint", tmp_path / "native", "--variant", "pvt-tiny", "--output_dir", tmp_path / "out"
    )
    assert code == 1
    assert "is not pvt-tiny" in err and "hidden_sizes" in err and "depths" in err
    assert not (tmp_path / "out").exists()


def test_native_hub_repo_id_resolves_from_the_cache(tmp_path):
    native_tiny_model().save_pretrained(tmp_path / "native")
    env = lay_out_as_hub_cache(tmp_path / "native", tmp_path / "hf_home", "Zetatech/pvt-tiny-test")
    result = subprocess.run(
        [sys.executable, str(CONVERT_SCRIPT), "--checkpoint", "Zetatech/pvt-tiny-test", "--output_dir", str(tmp_path / "out")],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "transformers-native PVT" in result.stdout
    assert (tmp_path / "out" / "model.safetensors").is_file()


def test_own_folder_is_re_exported_keeping_its_card(tmp_path, capsys):
    model = PvtForImageClassification(tiny_config()).eval()
    model.save_pretrained(tmp_path / "finetuned")
    (tmp_path / "finetuned" / "README.md").write_text("my fine-tuned card, accuracy 0.93")
    output = tmp_path / "out"

    code, out, err = run_convert(capsys, "--checkpoint", tmp_path / "finetuned", "--output_dir", output, "--verify")

    assert code == 0, err
    assert "Detected format: pvt-transformers (this package)" in out
    assert (output / "README.md").read_text() == "my fine-tuned card, accuracy 0.93"
    assert (output / "preprocessor_config.json").is_file()


@pytest.mark.parametrize(
    "mutate, expected",
    [
        (lambda sd: sd.pop("block1.0.attn.q.weight"), ["missing (1)", "encoder.stages.0.blocks.0.attn.q.weight"]),
        (lambda sd: sd.pop("cls_token"), ["missing (1)", "encoder.stages.3.embeddings.cls_token"]),
        (
            lambda sd: sd.__setitem__("block1.7.mlp.fc1.weight", torch.zeros(16, 8)),
            ["unexpected (1)", "encoder.stages.0.blocks.7.mlp.fc1.weight"],
        ),
        (lambda sd: sd.__setitem__("teacher.weight", torch.zeros(1)), ["Unrecognised original", "teacher.weight"]),
        (
            lambda sd: sd.__setitem__("block2.0.attn.q.weight", torch.zeros(3, 3)),
            ["mis-shaped (1)", "encoder.stages.1.blocks.0.attn.q.weight: checkpoint (3, 3) vs model (16, 16)"],
        ),
    ],
    ids=["missing", "missing-cls", "unexpected", "unknown", "mis-shaped"],
)
def test_key_problems_are_named_and_nothing_is_written(tmp_path, capsys, mutate, expected):
    config = tiny_config()
    state_dict = original_model(config, num_classes=5).state_dict()
    mutate(state_dict)
    torch.save(state_dict, tmp_path / "broken.pth")

    code, _, err = run_convert(
        capsys,
        "--checkpoint",
        tmp_path / "broken.pth",
        "--config",
        write_config(tmp_path, config),
        "--output_dir",
        tmp_path / "out",
    )

    assert code == 1
    for text in expected:
        assert text in err
    assert not (tmp_path / "out").exists()


def test_a_wrong_variant_is_reported_as_mis_shaped_keys(tmp_path, capsys):
    torch.save(original_model(tiny_config(), num_classes=5).state_dict(), tmp_path / "tiny.pth")
    code, _, err = run_convert(
        capsys, "--checkpoint", tmp_path / "tiny.pth", "--variant", "pvt-tiny", "--output_dir", tmp_path / "out"
    )
    assert code == 1
    assert "mis-shaped" in err and "encoder.stages.0.embeddings.proj.weight: checkpoint (8, 3, 4, 4)" in err
    assert "missing" in err  # pvt-tiny has 2 blocks in stage 1, the tiny checkpoint 1
    assert "--image_size" not in err and "--config with a config.json" in err  # only flags the script has


def test_new_label_set_replaces_only_the_head(tiny_original, tmp_path, capsys):
    reference, checkpoint, config_path = tiny_original
    output = tmp_path / "out"

    code, out, err = run_convert(
        capsys,
        "--checkpoint",
        checkpoint,
        "--config",
        config_path,
        "--output_dir",
        output,
        "--labels",
        "cat,dog,bird",
        "--verify",
    )

    assert code == 0, err
    assert "new 3-way classifier head, randomly initialised" in out
    assert "max |Δpre-head features (new head)|" in out and out.count(" OK") == 2
    saved = read_json(output / "config.json")
    assert saved["id2label"] == {"0": "cat", "1": "dog", "2": "bird"}
    converted = PvtForImageClassification.from_pretrained(output).eval()
    assert converted.classifier.out_features == 3
    torch.testing.assert_close(converted.pvt.encoder.stages[3].embeddings.cls_token, reference.cls_token)


def test_label_names_for_an_equal_sized_head_keep_its_weights(tiny_original, tmp_path, capsys):
    reference, checkpoint, config_path = tiny_original
    labels = tmp_path / "labels.json"
    labels.write_text(json.dumps(["a", "b", "c", "d", "e"]))
    output = tmp_path / "out"
    code, out, _ = run_convert(
        capsys, "--checkpoint", checkpoint, "--config", config_path, "--output_dir", output, "--labels", labels
    )
    assert code == 0
    assert "kept the checkpoint's 5-way head" in out
    converted = PvtForImageClassification.from_pretrained(output)
    torch.testing.assert_close(converted.classifier.weight, reference.head.weight)
    assert converted.config.id2label[4] == "e"


def test_a_checkpoint_without_head_needs_a_label_set(tmp_path, capsys):
    config = tiny_config()
    state_dict = {k: v for k, v in original_model(config, 5).state_dict().items() if not k.startswith("head.")}
    torch.save(state_dict, tmp_path / "headless.pth")
    args = ["--checkpoint", tmp_path / "headless.pth", "--config", write_config(tmp_path, config)]

    code, _, err = run_convert(capsys, *args, "--output_dir", tmp_path / "refused")
    assert code == 1 and "has no classifier head" in err and "--num_labels" in err

    code, out, err = run_convert(capsys, *args, "--output_dir", tmp_path / "out", "--num_labels", "7", "--verify")
    assert code == 0, err
    assert out.count(" OK") == 2
    assert read_json(tmp_path / "out" / "config.json")["id2label"]["6"] == "LABEL_6"


class _RunsCodeWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_pickle_that_would_run_code_is_refused_without_running_it(tmp_path, capsys):
    marker = tmp_path / "code_ran"
    payload = {"model": original_model(tiny_config(), 5).state_dict(), "extra": _RunsCodeWhenUnpickled(marker)}
    torch.save(payload, tmp_path / "suspicious.pth")

    code, _, err = run_convert(
        capsys, "--checkpoint", tmp_path / "suspicious.pth", "--variant", "pvt-tiny", "--output_dir", tmp_path / "out"
    )

    assert code == 1
    assert "Refusing to load" in err and "arbitrary code" in err and "Refused: " in err
    assert not marker.exists()
    assert not (tmp_path / "out").exists()


def test_bare_file_without_architecture_is_refused(tiny_original, tmp_path, capsys):
    _, checkpoint, _ = tiny_original
    code, _, err = run_convert(capsys, "--checkpoint", checkpoint, "--output_dir", tmp_path / "out")
    assert code == 1 and "pass --variant" in err


def test_verify_fails_when_the_conversion_is_wrong(tiny_original):
    _, checkpoint, _ = tiny_original
    result = build_model(load_checkpoint(checkpoint), config=tiny_config())
    assert all(line.endswith("OK") for line in verify(result))
    with torch.no_grad():
        result.model.pvt.encoder.stages[2].blocks[1].mlp.fc2.bias.add_(0.01)
    with pytest.raises(ConversionError, match="(?s)Verification failed.*224x224.*FAILED"):
        verify(result)


def test_unknown_layout_is_named():
    assert detect_format(["patch_embed1.proj.weight", "head.bias"]) == "original PVT release"
    with pytest.raises(ConversionError, match="Could not tell which PVT layout.*conv1.weight"):
        detect_format(["conv1.weight", "fc.bias"])


def test_bare_native_weights_file_converts_with_native_eps_but_cannot_be_verified(tmp_path, capsys):
    native = native_tiny_model()
    save_file(native.state_dict(), tmp_path / "native.safetensors")
    args = ["--checkpoint", tmp_path / "native.safetensors", "--config", write_config(tmp_path, tiny_config())]

    code, _, err = run_convert(capsys, *args, "--output_dir", tmp_path / "refused", "--verify")
    assert code == 1 and "bare weights file without its config" in err and "Pass the folder" in err

    code, out, err = run_convert(capsys, *args, "--output_dir", tmp_path / "out")
    assert code == 0, err
    converted = PvtForImageClassification.from_pretrained(tmp_path / "out").eval()
    pixel_values = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(converted(pixel_values).logits, native(pixel_values).logits, atol=1e-5, rtol=1e-5)


def test_state_dict_wrapper_is_unwrapped_and_corrupt_files_are_named(tmp_path):
    weights = {"patch_embed1.proj.weight": torch.ones(2, 3, 4, 4)}
    torch.save({"state_dict": weights, "optimizer": {"lr": 0.1}}, tmp_path / "wrapped.pt")
    assert set(load_weights_file(tmp_path / "wrapped.pt")) == {"patch_embed1.proj.weight"}

    (tmp_path / "truncated.pth").write_bytes((tmp_path / "wrapped.pt").read_bytes()[:100])
    with pytest.raises(ConversionError, match="Could not read .*truncated.pth as a PyTorch checkpoint"):
        load_weights_file(tmp_path / "truncated.pth")

    torch.save({"weights": [1, 2, 3]}, tmp_path / "not_a_state_dict.pth")
    with pytest.raises(ConversionError, match=r"not a plain state dict: entries \['weights'\]"):
        load_weights_file(tmp_path / "not_a_state_dict.pth")
