"""scripts/finetune_segmentation.py / modeling_pvt.segmentation_training: a tiny run on the default data and its
outputs, image/mask folders and their bad inputs through the CLI, fine-tuning from classifier and native folders, and
resuming after SIGKILL. (Two processes: test_distributed.py; the evaluate CLI on a trained folder:
test_evaluate_script.py.)"""

import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from conftest import tiny_config, tiny_segmentation_config_file, tiny_segmentation_flags
from helpers import (
    CLASS_NAMES,
    REPO,
    kill_after_checkpoint,
    make_hub_segmentation_dataset,
    make_mask_folder,
    one_error_line,
    read_json,
    resume_killed_run,
)
from PIL import Image
from safetensors.torch import load_file

from modeling_pvt import PvtForImageClassification, PvtImageProcessor
from modeling_pvt.cli import run_cli
from modeling_pvt.tasks.segmentation.task import main

GRID_CLASSES = ["background"] + [f"digit_{digit}" for digit in range(10)]


def _strict_json(path: Path) -> dict:
    """The file's JSON, refusing NaN and Infinity (which json.dumps writes but JSON does not allow)."""

    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not valid JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_default_run_writes_hub_folder_results_and_pictures(tiny_segmentation_run):
    output_dir, results, printed = tiny_segmentation_run
    assert "grid-digits: 32 train / 16 eval images, 64x64" in printed
    model_dir = output_dir / "model"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_pvt.py"):
        assert (model_dir / name).is_file(), name
    config = read_json(model_dir / "config.json")
    assert config["architectures"] == ["PvtForSemanticSegmentation"]
    assert "AutoModelForSemanticSegmentation" in config["auto_map"]
    assert list(config["id2label"].values()) == ["background"] + [f"digit {digit}" for digit in range(10)]
    assert read_json(model_dir / "preprocessor_config.json")["size_divisor"] == 32
    card = (model_dir / "README.md").read_text()
    assert "grid-digits" in card and "mean_iou" in card

    all_results = _strict_json(output_dir / "all_results.json")
    assert all_results["world_size"] == 1 and all_results["resumed_from"] is None
    assert 0 <= all_results["eval_mean_iou"] <= 1 and 0 <= all_results["eval_overall_accuracy"] <= 1
    per_class = {name: all_results[f"eval_iou_{name}"] for name in GRID_CLASSES}
    assert all(value is None or 0 <= value <= 1 for value in per_class.values())
    assert all_results["eval_iou_background"] is not None  # every canvas is mostly background
    assert all_results["eval_mean_iou"] == results["eval_mean_iou"]
    for picture in ("loss_curve.png", "miou_curve.png", "predictions.png"):
        with Image.open(output_dir / picture) as image:
            assert image.format == "PNG" and image.size[0] > 100, picture

    summary = printed.strip().splitlines()[-1]
    assert summary.startswith("Done in") and f"held-out mean IoU {results['eval_mean_iou']:.3f}" in summary
    assert f"pipeline('image-segmentation', model='{model_dir}', trust_remote_code=True)" in summary

    segmenter = transformers.pipeline("image-segmentation", model=str(model_dir), trust_remote_code=True)
    segments = segmenter(Image.new("RGB", (64, 64), "white"))
    assert segments and {segment["label"] for segment in segments} <= set(config["id2label"].values())
    assert all(segment["mask"].size == (64, 64) for segment in segments)


def test_image_mask_folders_train_and_count_images_without_masks(tmp_path, caplog):
    train_dir = make_mask_folder(tmp_path / "train")
    Image.new("RGB", (40, 36)).save(train_dir / "images" / "orphan.png")
    validation_dir = make_mask_folder(tmp_path / "validation", count=4)
    output_dir = tmp_path / "run"
    flags = ["--train_dir", str(train_dir), "--validation_dir", str(validation_dir), "--max_steps", "2"]
    results = main(tiny_segmentation_flags(tiny_segmentation_config_file(tmp_path), output_dir, *flags))

    assert "Skipping 1 image file(s) of 9" in caplog.text and "orphan.png" in caplog.text
    config = read_json(output_dir / "model" / "config.json")
    assert config["id2label"] == {str(index): name for index, name in enumerate(CLASS_NAMES)}
    assert {f"eval_iou_{name}" for name in CLASS_NAMES} <= set(results)
    assert read_json(output_dir / "all_results.json")["eval_mean_iou"] == results["eval_mean_iou"]


def test_streamed_hub_dataset_with_reduced_labels_trains_for_max_steps(tmp_path):
    dataset = make_hub_segmentation_dataset(tmp_path / "hub")
    flags = ["--dataset_name", str(dataset), "--streaming", "true", "--do_reduce_labels", "true", "--max_steps", "2"]
    results = main(tiny_segmentation_flags(tiny_segmentation_config_file(tmp_path), tmp_path / "run", *flags))
    assert sorted(path.name for path in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]  # max_steps
    assert read_json(tmp_path / "run" / "model" / "config.json")["id2label"] == {"0": "wall", "1": "floor", "2": "sky"}
    assert {"eval_iou_wall", "eval_iou_floor", "eval_iou_sky"} <= set(results)


def _save_mask(root: Path, name: str, array: np.ndarray, mode: str | None = None):
    Image.fromarray(array, mode=mode).save(root / "masks" / name)


@pytest.mark.parametrize(
    "damage, message",
    [
        (
            lambda root: _save_mask(root, "000.png", np.zeros((36, 40, 3), np.uint8)),
            r"1 mask\(s\) are not single-channel \(e.g. .*000.png: mode RGB\)",
        ),
        (
            lambda root: _save_mask(root, "001.png", np.zeros((36, 20), np.uint8), "L"),
            r"1 mask\(s\) differ in size from their image \(e.g. .*001.png is 20x36 but .*001.png is 40x36\)",
        ),
        (
            lambda root: _save_mask(root, "002.png", np.full((36, 40), 7, np.uint8), "L"),
            r"class ids \[7\] outside 0..2 that are not the ignore index 255",
        ),
    ],
    ids=["rgb-mask", "mask-size", "label-value"],
)
def test_bad_folder_data_is_one_error_line(tmp_path, capsys, damage, message):
    train_dir = make_mask_folder(tmp_path / "train", count=4)
    damage(train_dir)
    argv = tiny_segmentation_flags(
        tiny_segmentation_config_file(tmp_path), tmp_path / "run", "--train_dir", str(train_dir)
    )
    assert run_cli(main, argv) == 1
    error = one_error_line(capsys)
    assert re.search(message, error), error
    assert not (tmp_path / "run" / "model").exists()


def test_a_folder_with_mostly_misnamed_masks_stops_with_one_line(tmp_path, capsys):
    train_dir = make_mask_folder(tmp_path / "train", count=12)
    for mask in sorted((train_dir / "masks").iterdir())[2:]:
        mask.rename(mask.with_name(f"mask_{mask.name}"))  # 10 of 12 masks no longer named like their image
    config_file = tiny_segmentation_config_file(tmp_path)
    argv = tiny_segmentation_flags(config_file, tmp_path / "run", "--train_dir", str(train_dir))
    assert run_cli(main, argv) == 1
    error = one_error_line(capsys)
    assert "10 of 12 image files" in error and "10 have no mask of the same name" in error, error
    assert "--allow_skipped_files true" in error
    assert not (tmp_path / "run").exists()


def test_small_images_and_a_last_batch_of_one_train_quietly(tmp_path, monkeypatch, capsys):
    # 32x32 images: the head's stride-32 map is 1x1, and 3 images in batches of 2 end in a batch of one, which
    # BatchNorm cannot train on unless the training collator pads it.
    monkeypatch.setattr(transformers.utils.logging, "_tqdm_active", True)  # progress bars as on a terminal
    train_dir = make_mask_folder(tmp_path / "train", count=3, size=(32, 32))
    validation_dir = make_mask_folder(tmp_path / "validation", count=1, size=(32, 32))
    flags = ["--train_dir", str(train_dir), "--validation_dir", str(validation_dir), "--per_device_train_batch_size"]
    flags += ["2", "--max_steps", "4", "--save_steps", "2", "--eval_strategy", "no"]
    results = main(tiny_segmentation_flags(tiny_segmentation_config_file(tmp_path), tmp_path / "run", *flags))
    assert results["train_loss"] > 0 and 0 <= results["eval_mean_iou"] <= 1
    assert (tmp_path / "run" / "checkpoint-4").is_dir()
    assert "Writing model shards" not in capsys.readouterr().err  # not after each checkpoint, nor at the end


def _saved_classifier(folder: Path) -> tuple[Path, torch.Tensor]:
    model = PvtForImageClassification(tiny_config(num_labels=10, image_size=32))
    model.save_pretrained(folder)
    PvtImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder, model.state_dict()["pvt.encoder.stages.0.embeddings.proj.weight"]


def _saved_native_classifier(folder: Path) -> tuple[Path, torch.Tensor]:
    config = transformers.PvtConfig(
        image_size=32,
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        num_labels=4,
    )
    model = transformers.PvtForImageClassification(config)
    model.save_pretrained(folder)
    return folder, model.state_dict()["pvt.encoder.patch_embeddings.0.projection.weight"]


@pytest.mark.parametrize("saved", [_saved_classifier, _saved_native_classifier], ids=["ours", "native"])
def test_fine_tunes_from_a_classifier_folder_with_a_new_head(tmp_path, saved):
    source, patch_embedding = saved(tmp_path / "classifier")
    train_dir = make_mask_folder(tmp_path / "train")
    output_dir = tmp_path / "run"
    # Learning rate 0: the saved weights are exactly the classifier's wherever they were taken from it.
    flags = ["--model_name_or_path", str(source), "--train_dir", str(train_dir), "--learning_rate", "0"]
    flags += ["--output_dir", str(output_dir), "--max_steps", "1", "--disable_tqdm", "true", "--cpu_threads", "1"]
    results = main(flags)

    weights = load_file(output_dir / "model" / "model.safetensors")
    assert torch.equal(weights["encoder.stages.0.embeddings.proj.weight"], patch_embedding)
    assert weights["decode_head.classifier.weight"].shape[0] == len(CLASS_NAMES)  # a new head for the 3 classes
    assert not any(name.startswith("classifier.") for name in weights)
    assert read_json(output_dir / "model" / "config.json")["architectures"] == ["PvtForSemanticSegmentation"]
    assert 0 <= results["eval_mean_iou"] <= 1


def test_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path):
    train_dir = make_mask_folder(tmp_path / "train", count=32, size=(64, 64))
    config_file = tiny_segmentation_config_file(tmp_path)

    def flags(output_dir: Path, *extra: str) -> list[str]:
        # 32 images / batch 8 = 4 steps per epoch, 3 epochs; a checkpoint every 2 steps; no eval until the end.
        run = ["--train_dir", str(train_dir), "--max_train_samples", "32", "--max_steps", "-1"]
        run += ["--num_train_epochs", "3", "--save_steps", "2", "--save_total_limit", "3", "--eval_strategy", "no"]
        return tiny_segmentation_flags(config_file, output_dir, *run, *extra)

    reference_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = main(flags(reference_dir))  # in this process: one interpreter start fewer

    script = [sys.executable, str(REPO / "scripts" / "finetune_segmentation.py")]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    killed_at = kill_after_checkpoint(script + flags(killed_dir), killed_dir, 4, environment)
    assert killed_at < 12 and not (killed_dir / "model").exists()  # really interrupted mid-training
    command = script + flags(killed_dir, "--resume_from_checkpoint", "last")
    stdout, results = resume_killed_run(command, killed_dir, killed_at, environment)
    assert f"[finetune-segmentation] resume   from {killed_dir / f'checkpoint-{killed_at}'}" in stdout
    for name in ("eval_mean_iou", "eval_overall_accuracy", *(f"eval_iou_{name}" for name in CLASS_NAMES)):
        assert results[name] == reference[name], name
    assert results["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-5)
