"""scripts/evaluate.py / modeling_pvt.evaluation: metrics, per-class accuracy, JSON + PNG outputs, --resolution,
label matching, native-transformers checkpoints and clear errors; the segmentation mode (a trained folder scored as
its run scored it, mask folders, absent classes, label mismatches)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_config
from datasets import Dataset, Features
from datasets import Image as ImageFeature
from helpers import CLASS_NAMES, REPO, make_mask_folder, one_error_line, read_json
from PIL import Image
from transformers import PvtConfig as NativePvtConfig
from transformers import PvtForImageClassification as NativePvtForImageClassification

from modeling_pvt import (
    PvtForImageClassification,
    PvtForSemanticSegmentation,
    PvtImageProcessor,
)
from modeling_pvt.cli import run_cli
from modeling_pvt.data.sources import DataError
from modeling_pvt.speed.quantization import HAS_ONEDNN_INT8
from modeling_pvt.tasks.classification.evaluation import dataset_to_model_ids
from modeling_pvt.tasks.evaluate import default_output_dir, main
from modeling_pvt.tasks.segmentation.evaluation import segmentation_label_names
from modeling_pvt.tasks.segmentation.metrics import class_metric_key

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
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--max_steps" not in help_text and "--debug" in help_text
    assert "Classifiers (ours or transformers' native PVT): accuracy" in help_text
    assert "Segmentation models (PvtForSemanticSegmentation): mean IoU" in help_text
    assert "segmentation checkpoints (PvtForSemanticSegmentation) only: --do_reduce_labels" in help_text
    assert "--eval_scale" in help_text and "--train_scale" not in help_text


# ---------------------------------------------------------------------------------------------------- segmentation


def test_segmentation_folder_is_scored_as_its_training_run_scored_it(tiny_segmentation_run, tmp_path, capsys):
    run_dir, run_results, _ = tiny_segmentation_run
    output_dir = tmp_path / "eval"
    argv = ["--model_name_or_path", str(run_dir / "model"), "--output_dir", str(output_dir)]
    assert run_cli(main, [*argv, "--max_eval_samples", "16"]) == 0  # the run's held-out images

    written = json.loads((output_dir / "eval_results.json").read_text(), parse_constant=pytest.fail)
    assert written["dataset"] == "grid-digits" and written["num_images"] == 16
    assert written["mean_iou"] == pytest.approx(run_results["eval_mean_iou"], abs=1e-6)
    assert written["overall_accuracy"] == pytest.approx(run_results["eval_overall_accuracy"], abs=1e-6)
    for name, value in written["per_class_iou"].items():
        assert value == pytest.approx(run_results[f"eval_iou_{class_metric_key(name)}"], abs=1e-6), name
    with Image.open(output_dir / "predictions.png") as image:
        assert image.format == "PNG"
    report = capsys.readouterr().out
    assert f"mean IoU {written['mean_iou']:.3f}, pixel accuracy {written['overall_accuracy']:.2%}" in report
    assert "digit 7" in report and f"{output_dir}/eval_results.json and predictions.png" in report

    assert run_cli(main, [*argv, "--resolution", "64"]) == 1
    assert "--resolution is for classifiers" in one_error_line(capsys)


def _save_segmenter(folder: Path, label_names=CLASS_NAMES, never_predicted: int | None = None) -> Path:
    labels = {"id2label": dict(enumerate(label_names)), "label2id": {n: i for i, n in enumerate(label_names)}}
    config = tiny_config(
        num_labels=len(label_names), image_size=64, fpn_hidden_size=16, decoder_hidden_size=16, **labels
    )
    model = PvtForSemanticSegmentation(config)
    if never_predicted is not None:
        with torch.no_grad():
            model.decode_head.classifier.bias[never_predicted] = -1e4
    model.save_pretrained(folder)
    PvtImageProcessor.for_segmentation(short_side=64).save_pretrained(folder)
    return folder


def test_segmentation_on_a_mask_folder_reports_absent_classes_as_null(tmp_path, capsys):
    model_dir = _save_segmenter(tmp_path / "model", never_predicted=2)
    validation_dir = make_mask_folder(tmp_path / "validation", count=3)
    for path in (validation_dir / "masks").iterdir():  # no car in the masks either
        Image.fromarray(np.minimum(np.asarray(Image.open(path)), 1).astype(np.uint8), mode="L").save(path)
    output_dir = tmp_path / "eval"
    argv = ["--model_name_or_path", str(model_dir), "--validation_dir", str(validation_dir), "--batch_size", "2"]
    assert run_cli(main, [*argv, "--output_dir", str(output_dir)]) == 0

    written = json.loads((output_dir / "eval_results.json").read_text(), parse_constant=pytest.fail)
    assert written["num_images"] == 3 and written["dataset"] == str(validation_dir)
    assert written["per_class_iou"]["car"] is None and written["per_class_iou"]["sky"] is not None
    report = capsys.readouterr().out
    assert "    car   -" in report and "neither the masks nor the predictions" in report


def test_segmentation_label_mismatch_and_unknown_folders_are_one_error_line(tmp_path, capsys):
    model_dir = _save_segmenter(tmp_path / "model")
    assert run_cli(main, ["--model_name_or_path", str(model_dir), "--output_dir", str(tmp_path / "e")]) == 1
    error = one_error_line(capsys)  # the default data is the grid digits: 11 classes
    assert "the model has 3 classes, the data 11 (model: sky, road, car; data: background, digit 0" in error

    assert run_cli(main, ["--model_name_or_path", str(tmp_path / "nowhere")]) == 1
    assert "nowhere does not exist" in one_error_line(capsys)
    classifier = _save_classifier(tmp_path / "classifier")
    assert run_cli(main, ["--model_name_or_path", str(classifier), "--do_reduce_labels", "true"]) == 1
    assert "is a classifier (PvtForImageClassification); --do_reduce_labels apply to" in one_error_line(capsys)


def test_segmentation_classes_are_matched_by_id_and_unnamed_ones_take_the_other_names():
    named = tiny_config(num_labels=3, id2label=dict(enumerate(CLASS_NAMES)))
    assert segmentation_label_names(CLASS_NAMES, named) == CLASS_NAMES
    assert segmentation_label_names(["class 0", "class 1"], named) == CLASS_NAMES  # a folder without id2label.json
    assert segmentation_label_names(CLASS_NAMES, tiny_config(num_labels=3)) == CLASS_NAMES  # LABEL_0, ...
    with pytest.raises(DataError, match="class 0 is 'sky' for the model but 'road' in the data"):
        segmentation_label_names(["road", "sky", "car"], named)
    with pytest.raises(DataError, match="the model has 3 classes, the data 4"):
        segmentation_label_names(["class 0", "class 1", "class 2", "class 3"], named)


def test_segmentation_on_a_hub_layout_dataset_with_reduced_labels(tmp_path, capsys):
    """A dataset folder read like a Hub dataset (scene_parse_150's columns: 0 = unlabelled, classes from 1)."""
    features = Features({"image": ImageFeature(), "annotation": ImageFeature()})
    rng = np.random.default_rng(0)
    for split, count in (("train", 2), ("validation", 3)):
        data = {
            "image": [Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)) for _ in range(count)],
            "annotation": [
                Image.fromarray(rng.integers(0, 4, (40, 48), dtype=np.uint8), mode="L") for _ in range(count)
            ],
        }
        Dataset.from_dict(data, features=features).to_parquet(str(tmp_path / "hub" / "data" / f"{split}.parquet"))
    (tmp_path / "hub" / "id2label.json").write_text(json.dumps(dict(enumerate(CLASS_NAMES))))
    model_dir = _save_segmenter(tmp_path / "model")
    argv = ["--model_name_or_path", str(model_dir), "--dataset_name", str(tmp_path / "hub")]
    argv += [
        "--eval_split_name",
        "validation",
        "--label_column_name",
        "annotation",
        "--output_dir",
        str(tmp_path / "e"),
    ]

    assert run_cli(main, argv) == 1  # 4 mask values for 3 classes
    assert "class ids [3] outside 0..2" in one_error_line(capsys)
    assert run_cli(main, [*argv, "--do_reduce_labels", "true", "--eval_scale", "96", "48"]) == 0
    written = read_json(tmp_path / "e" / "eval_results.json")
    assert written["num_images"] == 3 and written["eval_scale"] == [96, 48]
    assert set(written["per_class_iou"]) == set(CLASS_NAMES)
    assert "rescaled to fit 96x48, sides multiples of 32" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------------------------ int8


@pytest.mark.skipif(not HAS_ONEDNN_INT8, reason="this PyTorch has no oneDNN int8 kernels")
def test_int8_evaluation_calibrates_on_training_images_and_keeps_the_fp32_results(tmp_path, capsys, monkeypatch):
    model_dir = _save_classifier(tmp_path / "model")
    monkeypatch.chdir(tmp_path)
    argv = ["--model_name_or_path", str(model_dir), "--max_eval_samples", "60"]
    fp32 = main(argv)
    int8 = main([*argv, "--int8", "--calibration_images", "24"])

    assert fp32["precision"] == "fp32"
    assert int8["precision"] == "int8 (static, oneDNN; calibrated on 24 training images)"
    # Its own folder: the fp32 evaluation is not overwritten.
    assert Path(int8["output_dir"]) == default_output_dir(str(model_dir), int8=True) != Path(fp32["output_dir"])
    assert read_json(Path(fp32["output_dir"]) / "eval_results.json")["precision"] == "fp32"
    assert abs(int8["accuracy"] - fp32["accuracy"]) <= 0.1
    assert "60 images at 32x32, int8 (static, oneDNN; calibrated on 24 training images)" in capsys.readouterr().out


@pytest.mark.skipif(not HAS_ONEDNN_INT8, reason="this PyTorch has no oneDNN int8 kernels")
def test_int8_segmentation_evaluation_tracks_fp32(tmp_path, capsys):
    model_dir = _save_segmenter(tmp_path / "model")
    train_dir = make_mask_folder(tmp_path / "train", count=3)
    validation_dir = make_mask_folder(tmp_path / "val", count=3)
    argv = ["--model_name_or_path", str(model_dir), "--validation_dir", str(validation_dir)]
    argv += ["--train_dir", str(train_dir)]
    fp32 = main([*argv, "--output_dir", str(tmp_path / "fp32")])
    int8 = main([*argv, "--output_dir", str(tmp_path / "int8"), "--int8"])
    assert int8["precision"] == "int8 (static, oneDNN; calibrated on 3 training images)"
    assert int8["mean_iou"] == pytest.approx(fp32["mean_iou"], abs=0.1)
    assert "int8 (static, oneDNN; calibrated on 3 training images)" in capsys.readouterr().out

    # No training split to calibrate on, or nothing asked to calibrate on: one error line naming the fix.
    assert run_cli(main, [*argv[:4], "--int8"]) == 1  # --validation_dir alone
    assert "--int8 calibrates on training images, and this data has no training split: pass --train_dir" in (
        one_error_line(capsys)
    )
    assert run_cli(main, [*argv, "--int8", "--calibration_images", "0"]) == 1
    assert "--calibration_images must be at least 1 (got 0)" in one_error_line(capsys)
