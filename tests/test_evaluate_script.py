"""scripts/evaluate.py / modeling_pvt.evaluation: metrics, per-class accuracy, JSON + PNG outputs, --resolution,
label matching, native-transformers checkpoints and clear errors."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import tiny_config
from helpers import read_json
from PIL import Image
from transformers import PvtConfig as NativePvtConfig
from transformers import PvtForImageClassification as NativePvtForImageClassification

from modeling_pvt import PvtForImageClassification, PvtImageProcessor
from modeling_pvt.data import DataError
from modeling_pvt.evaluation import dataset_to_model_ids, default_output_dir, main

REPO = Path(__file__).resolve().parents[1]
DIGITS = [str(d) for d in range(10)]


def _save_classifier(folder: Path, label_names=DIGITS) -> Path:
    labels = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    model = PvtForImageClassification(tiny_config(num_labels=len(label_names), image_size=32, **labels))
    model.save_pretrained(folder)
    PvtImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def test_evaluates_a_checkpoint_on_the_digits(tmp_path, capsys):
    model_dir = _save_classifier(tmp_path / "model")
    output_dir = tmp_path / "eval"
    results = main(
        ["--model_name_or_path", str(model_dir), "--output_dir", str(output_dir), "--max_eval_samples", "50"]
    )

    assert results["num_images"] == 50 and results["resolution"] == [32, 32]
    assert 0 <= results["accuracy"] <= results["top5_accuracy"] <= 1
    per_class = results["per_class_accuracy"]
    assert set(per_class) <= set(DIGITS) and all(0 <= value <= 1 for value in per_class.values())
    written = read_json(output_dir / "eval_results.json")
    assert written["accuracy"] == results["accuracy"] and written["per_class_accuracy"] == per_class
    with Image.open(output_dir / "confusion_matrix.png") as image:
        assert image.format == "PNG"
    report = capsys.readouterr().out
    assert f"accuracy {results['accuracy']:.2%}, top-5 {results['top5_accuracy']:.2%}" in report
    assert "per class: 0 " in report


def test_resolution_changes_the_input_size_and_is_checked(tmp_path):
    model_dir = _save_classifier(tmp_path / "model")
    common = ["--model_name_or_path", str(model_dir), "--max_eval_samples", "20"]
    at_64 = main([*common, "--output_dir", str(tmp_path / "e64"), "--resolution", "64"])
    assert at_64["resolution"] == [64, 64]
    with pytest.raises(ValueError, match="--resolution 16 is below this model's minimum input size of 32"):
        main([*common, "--output_dir", str(tmp_path / "e16"), "--resolution", "16"])


def test_center_crop_processors_keep_their_crop_fraction(tmp_path):
    model_dir = _save_classifier(tmp_path / "model")
    PvtImageProcessor.for_evaluation(32).save_pretrained(model_dir)
    results = main(
        [
            "--model_name_or_path",
            str(model_dir),
            "--output_dir",
            str(tmp_path / "eval"),
            "--max_eval_samples",
            "10",
            "--resolution",
            "48",
        ]
    )
    assert results["resolution"] == [48, 48]


def test_model_labels_are_matched_by_name():
    config = tiny_config(num_labels=3, id2label={0: "b", 1: "c", 2: "a"})
    assert dataset_to_model_ids(["a", "b", "c"], config) == [2, 0, 1]
    assert dataset_to_model_ids(["x", "y"], tiny_config(num_labels=3)) == [0, 1]  # unnamed LABEL_i heads
    with pytest.raises(DataError, match=r"classes the model does not know: \['x'\]"):
        dataset_to_model_ids(["a", "x"], config)


def test_mismatched_labels_and_streaming_are_refused(tmp_path):
    model_dir = _save_classifier(tmp_path / "pets", label_names=["cat", "dog"])
    with pytest.raises(DataError, match="classes the model does not know"):
        main(["--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "e")])
    with pytest.raises(DataError, match="drop --streaming"):
        main(["--model_name_or_path", str(model_dir), "--dataset_name", "x", "--streaming", "true"])


def test_native_transformers_checkpoint_runs_through_the_cli_script(tmp_path):
    """A folder saved by transformers' own PVT, evaluated by running scripts/evaluate.py as a user would (which
    also proves the script does not shadow the `evaluate` library it is named after)."""
    native_config = NativePvtConfig(
        image_size=32,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        sequence_reduction_ratios=[8, 4, 2, 1],
        patch_sizes=[4, 2, 2, 2],
        strides=[4, 2, 2, 2],
        num_labels=10,
    )
    torch.manual_seed(0)
    NativePvtForImageClassification(native_config).save_pretrained(tmp_path / "native")
    output_dir = tmp_path / "eval"
    completed = subprocess.run(
        [
            sys.executable,
            str(REPO / "scripts" / "evaluate.py"),
            "--model_name_or_path",
            str(tmp_path / "native"),
            "--output_dir",
            str(output_dir),
            "--resolution",
            "32",
            "--max_eval_samples",
            "30",
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = read_json(output_dir / "eval_results.json")
    assert results["num_images"] == 30 and "top5_accuracy" in results
    assert "accuracy" in completed.stdout and "eval_results.json" in completed.stdout


def test_default_output_folder_is_named_after_the_model():
    assert default_output_dir("outputs/pvt-tiny-digits/model") == Path("outputs/eval/outputs--pvt-tiny-digits--model")
    assert default_output_dir("org/pvt-tiny") == Path("outputs/eval/org--pvt-tiny")


def test_help_names_only_options_the_script_has(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = capsys.readouterr().out
    assert "--max_steps" not in help_text and "--debug" in help_text
