"""scripts/finetune_detection.py / modeling_pvt.tasks.detection.task: a tiny run on the default data and its outputs
(the Hub folder through `pipeline("object-detection")`, all_results.json, pictures, card), scripts/evaluate.py on it
giving the run's numbers (and --int8), COCO folders and a streamed Hub dataset, bad data through the CLI, fine-tuning
from a classifier, and resuming after SIGKILL. (Two processes: test_detection_distributed.py.)"""

import json
import os
import sys
from pathlib import Path

import datasets
import numpy as np
import pytest
import torch
import transformers
from conftest import tiny_config, tiny_detection_config_file, tiny_detection_flags
from helpers import (
    REPO,
    kill_after_checkpoint,
    make_coco_folder,
    make_hub_detection_dataset,
    one_error_line,
    read_json,
    resume_killed_run,
)
from PIL import Image
from safetensors.torch import load_file

from modeling_pvt import PvtConfig, PvtForImageClassification, PvtForObjectDetection, PvtImageProcessor
from modeling_pvt.checkpoints.model_card import render_model_card
from modeling_pvt.cli import run_cli
from modeling_pvt.speed.quantization import HAS_ONEDNN_INT8
from modeling_pvt.tasks.detection.task import (
    DetectionRunDataArguments,
    DetectionTrainer,
    ObjectDetectionTask,
    main,
    resolved_scales,
)
from modeling_pvt.tasks.evaluate import main as evaluate_main
from modeling_pvt.training.arguments import parse_arguments

DIGITS = [str(digit) for digit in range(10)]


def _strict_json(path: Path) -> dict:
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}, which is not valid JSON")

    return json.loads(Path(path).read_text(), parse_constant=refuse)


def test_default_run_writes_hub_folder_results_pictures_and_card(tiny_detection_run):
    output_dir, results, printed = tiny_detection_run
    assert "scattered-digits: 32 train / 16 eval images, 128x128" in printed
    model_dir = output_dir / "model"
    for name in (
        "config.json",
        "model.safetensors",
        "preprocessor_config.json",
        "README.md",
        "modeling_pvt_detection.py",
    ):
        assert (model_dir / name).is_file(), name
    config = read_json(model_dir / "config.json")
    assert config["architectures"] == ["PvtForObjectDetection"] and "AutoModelForObjectDetection" in config["auto_map"]
    assert list(config["id2label"].values()) == DIGITS
    processor = read_json(model_dir / "preprocessor_config.json")
    assert processor["do_pad"] and processor["size"] == {"shortest_edge": 128, "longest_edge": 128}
    card = (model_dir / "README.md").read_text()
    assert "pipeline_tag: object-detection" in card and "scattered-digits" in card and "| map |" in card

    all_results = _strict_json(output_dir / "all_results.json")
    assert all_results["world_size"] == 1 and all_results["resumed_from"] is None
    assert all_results["eval_num_images"] == 16 and all_results["eval_map"] == results["eval_map"]
    for name in ("map", "map_50", "map_75", "mar_100", *(f"map_{digit}" for digit in DIGITS)):
        value = all_results[f"eval_{name}"]
        assert value is None or 0 <= value <= 1, name
    assert all_results["eval_map_large"] is None  # no digit is larger than 96x96
    for picture in ("loss_curve.png", "map_curve.png", "predictions.png"):
        with Image.open(output_dir / picture) as image:
            assert image.format == "PNG" and image.size[0] > 100, picture

    summary = printed.strip().splitlines()[-1]
    assert summary.startswith("Done in") and f"held-out COCO mAP {results['eval_map']:.3f}" in summary
    assert f"pipeline('object-detection', model='{model_dir}', trust_remote_code=True)" in summary

    detector = transformers.pipeline("object-detection", model=str(model_dir), trust_remote_code=True)
    found = detector(Image.new("RGB", (200, 150), "black"), threshold=0.0)
    assert found and {entry["label"] for entry in found} <= set(DIGITS)
    box = found[0]["box"]
    assert 0 <= box["xmin"] <= box["xmax"] <= 200 and 0 <= box["ymin"] <= box["ymax"] <= 150  # the image's pixels


def test_detection_cards_cite_the_papers_coco_ap_as_the_papers():
    config = PvtConfig.from_preset(
        "pvt-tiny", num_labels=10, detection_head_hidden_size=128, detection_head_num_convs=2
    )
    with torch.device("meta"):
        model = PvtForObjectDetection(config)
    card = render_model_card(model, eval_results={"map": 0.51}, dataset_name="scattered-digits")
    assert "| map | 0.51 |" in card and "pipeline_tag: object-detection" in card
    assert "For scale only (COCO is not this checkpoint's data): the paper reports **36.7 box AP**" in card
    with torch.device("meta"):
        coco = PvtForObjectDetection(PvtConfig.from_preset("pvt-small", num_labels=80))
    card = render_model_card(coco)
    assert "## COCO results (reported by the paper)" in card and "**40.4 box AP** on COCO val2017" in card
    assert "name: box AP (reported by the paper, RetinaNet 1x)" in card and "value: 40.4" in card


def test_evaluate_script_gives_the_runs_numbers(tiny_detection_run, tmp_path, capsys):
    run_dir, run_results, _ = tiny_detection_run
    output_dir = tmp_path / "eval"
    argv = ["--model_name_or_path", str(run_dir / "model"), "--output_dir", str(output_dir)]
    assert run_cli(evaluate_main, [*argv, "--max_eval_samples", "16"]) == 0  # the run's held-out canvases

    written = _strict_json(output_dir / "eval_results.json")
    assert written["dataset"] == "scattered-digits" and written["num_images"] == 16 and written["scale"] == [128, 128]
    for name in ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_100"):
        assert written[name] == run_results[f"eval_{name}"], name
    assert written["per_class_ap"] == {digit: run_results[f"eval_map_{digit}"] for digit in DIGITS}
    with Image.open(output_dir / "predictions.png") as image:
        assert image.format == "PNG"
    report = capsys.readouterr().out
    assert "16 images, resized to fit 128x128, fp32" in report and "AP per class" in report

    assert run_cli(evaluate_main, [*argv, "--resolution", "64"]) == 1
    assert "is a detector (PvtForObjectDetection)" in one_error_line(capsys)


@pytest.mark.skipif(not HAS_ONEDNN_INT8, reason="this PyTorch has no oneDNN int8 kernels")
def test_int8_evaluation_quantizes_the_backbone(tiny_detection_run, tmp_path, capsys):
    run_dir, run_results, _ = tiny_detection_run
    argv = ["--model_name_or_path", str(run_dir / "model"), "--output_dir", str(tmp_path / "int8")]
    results = evaluate_main([*argv, "--max_eval_samples", "16", "--int8", "--calibration_images", "8"])
    assert results["precision"] == "int8 (static, oneDNN; calibrated on 8 training images)"
    assert results["map"] == pytest.approx(run_results["eval_map"], abs=0.1)


def test_coco_folders_train_with_their_category_names(tmp_path):
    train_dir, validation_dir = make_coco_folder(tmp_path / "train"), make_coco_folder(tmp_path / "val", count=4)
    flags = ["--train_dir", str(train_dir), "--validation_dir", str(validation_dir), "--max_steps", "2"]
    flags += ["--eval_scale", "96", "72", "--train_ratio_range", "0.8", "1.2"]
    results = main(tiny_detection_flags(tiny_detection_config_file(tmp_path), tmp_path / "run", *flags))
    config = read_json(tmp_path / "run" / "model" / "config.json")
    assert config["id2label"] == {"0": "person", "1": "car"}
    assert {"eval_map_person", "eval_map_car"} <= set(results) and results["eval_num_images"] == 4
    assert read_json(tmp_path / "run" / "model" / "preprocessor_config.json")["size"]["longest_edge"] == 96
    card = (tmp_path / "run" / "model" / "README.md").read_text()
    assert "| train_ratio_range | [0.8, 1.2] |" in card and "local folder train" in card


def test_a_bf16_run_trains_and_evaluates_in_fp32(tmp_path):
    # The default on CPUs with native bf16; forced here, where it may be emulated. Evaluation runs the class's own
    # forward in fp32, so scripts/evaluate.py gives the run's numbers whatever the training precision.
    flags = ["--max_steps", "2", "--eval_steps", "2", "--bf16", "true"]
    results = main(tiny_detection_flags(tiny_detection_config_file(tmp_path), tmp_path / "run", *flags))
    assert np.isfinite(results["train_loss"]) and np.isfinite(results["eval_loss"])
    assert 0 <= results["eval_map"] <= 1 and results["eval_num_images"] == 16
    weights = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert {tensor.dtype for tensor in weights.values()} == {torch.float32}  # fp32 master weights, as Trainer keeps


def test_natural_images_default_to_the_papers_scale_and_flips():
    arguments = DetectionRunDataArguments(train_dir="somewhere")
    eval_scale, augmentation = resolved_scales(arguments, is_digits=False)
    assert eval_scale == (1333, 800) and augmentation.scale == (1333, 800)
    assert augmentation.horizontal_flip_probability == 0.5 and augmentation.ratio_range is None
    eval_scale, augmentation = resolved_scales(DetectionRunDataArguments(), is_digits=True)
    assert eval_scale == augmentation.scale == (128, 128) and augmentation.horizontal_flip_probability == 0.0


def test_streamed_hub_dataset_trains_for_max_steps(tmp_path, monkeypatch):
    # datasets sleeps 5 s whenever a parquet stream's reader threads stop (apache/arrow#45214); 0.2 s is plenty here.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0.2)
    dataset = make_hub_detection_dataset(tmp_path / "hub")
    flags = ["--dataset_name", str(dataset), "--streaming", "true", "--max_steps", "2", "--eval_scale", "96", "80"]
    results = main(tiny_detection_flags(tiny_detection_config_file(tmp_path), tmp_path / "run", *flags))
    assert sorted(path.name for path in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-2"]
    assert read_json(tmp_path / "run" / "model" / "config.json")["id2label"] == {"0": "coverall", "1": "mask"}
    assert results["eval_num_images"] == 3


def _break_category(folder: Path):
    coco = json.loads((folder / "annotations.json").read_text())
    coco["annotations"][0]["category_id"] = 99
    (folder / "annotations.json").write_text(json.dumps(coco))


@pytest.mark.parametrize(
    "damage, message",
    [
        (_break_category, r"annotations.json: annotation 1 has category_id 99, which 'categories' does not list"),
        (lambda folder: (folder / "images" / "001.png").unlink(), r"references 1 image\(s\) that are not in"),
    ],
    ids=["category", "missing-image"],
)
def test_bad_data_is_one_error_line(tmp_path, capsys, damage, message):
    import re

    train_dir = make_coco_folder(tmp_path / "train", count=4)
    damage(train_dir)
    argv = tiny_detection_flags(tiny_detection_config_file(tmp_path), tmp_path / "run", "--train_dir", str(train_dir))
    assert run_cli(main, argv) == 1
    error = one_error_line(capsys)
    assert re.search(message, error), error
    assert not (tmp_path / "run" / "model").exists()


def test_flag_mistakes_are_one_error_line(tmp_path, capsys):
    flags = tiny_detection_flags(tiny_detection_config_file(tmp_path), tmp_path / "run")
    assert run_cli(main, [*flags, "--train_ratio_range", "1.2", "0.8"]) == 1
    assert "--train_ratio_range takes two ratios low <= high" in one_error_line(capsys)


def test_fine_tunes_from_a_classifier_with_a_new_head(tmp_path, capsys):
    model = PvtForImageClassification(tiny_config(num_labels=10, image_size=32))
    model.save_pretrained(tmp_path / "classifier")
    PvtImageProcessor(size={"height": 32, "width": 32}).save_pretrained(tmp_path / "classifier")
    patch_embedding = model.state_dict()["pvt.encoder.stages.0.embeddings.proj.weight"]
    train_dir = make_coco_folder(tmp_path / "train")
    flags = ["--model_name_or_path", str(tmp_path / "classifier"), "--train_dir", str(train_dir)]
    flags += ["--learning_rate", "0", "--detection_head_hidden_size", "8", "--detection_head_num_convs", "1"]
    flags += ["--output_dir", str(tmp_path / "run"), "--max_steps", "1", "--disable_tqdm", "true"]
    flags += ["--cpu_threads", "1", "--eval_scale", "64", "48"]
    main(flags)
    weights = load_file(tmp_path / "run" / "model" / "model.safetensors")
    assert torch.equal(weights["encoder.stages.0.embeddings.proj.weight"], patch_embedding)
    assert weights["head.classifier.weight"].shape[0] == 9 * 2 and weights["head.cls_convs.0.weight"].shape[0] == 8
    assert not any(name.startswith("classifier.") for name in weights)

    # A detector keeps its own head: sizing a new one is refused.
    detector = ["--model_name_or_path", str(tmp_path / "run" / "model"), "--train_dir", str(train_dir)]
    detector += ["--output_dir", str(tmp_path / "again"), "--detection_head_num_convs", "2"]
    assert run_cli(main, detector) == 1
    assert "is a detector with its own head; --detection_head_num_convs only size a new head" in one_error_line(capsys)


def test_run_killed_with_sigkill_resumes_to_the_same_metrics(tmp_path):
    train_dir = make_coco_folder(tmp_path / "train", count=24)
    config_file = tiny_detection_config_file(tmp_path)

    def flags(output_dir: Path, *extra: str) -> list[str]:
        # 19 train images / batch 8 = 3 steps per epoch, 3 epochs; a checkpoint every 2 steps; no eval until the end.
        # No flips: Trainer restores the random state of the checkpoint, taken after it had already drawn the next
        # batch's augmentation, so random augmentation repeats differently after a resume.
        run = ["--train_dir", str(train_dir), "--max_steps", "-1", "--num_train_epochs", "3", "--save_steps", "2"]
        run += ["--save_total_limit", "3", "--eval_strategy", "no", "--eval_scale", "64", "48"]
        run += ["--horizontal_flip_probability", "0"]
        return tiny_detection_flags(config_file, output_dir, *run, *extra)

    reference_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    reference = main(flags(reference_dir))

    script = [sys.executable, str(REPO / "scripts" / "finetune_detection.py")]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    killed_at = kill_after_checkpoint(script + flags(killed_dir), killed_dir, 2, environment)
    assert killed_at < 9 and not (killed_dir / "model").exists()  # really interrupted mid-training
    command = script + flags(killed_dir, "--resume_from_checkpoint", "last")
    stdout, results = resume_killed_run(command, killed_dir, killed_at, environment)
    assert f"[finetune-detection] resume   from {killed_dir / f'checkpoint-{killed_at}'}" in stdout
    names = [name for name in reference if name.startswith("eval_map") or name in ("eval_mar_100", "eval_num_images")]
    assert len(names) > 8
    for name in names:
        assert results[name] == reference[name], name
    assert results["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-5)
    assert np.isfinite(results["eval_loss"])


def test_the_coco_recipe_parses_into_the_papers_schedule(tmp_path):
    model_args, data_args, training_args = parse_arguments(
        ["--recipe", str(REPO / "configuration/recipes/coco-retinanet-pvt-small.yaml"), "--output_dir", str(tmp_path)],
        ObjectDetectionTask(),
    )
    assert model_args.config_name == "pvt-small" and data_args.train_dir == "coco/train"
    assert data_args.train_scale == data_args.eval_scale == [1333, 800] and data_args.horizontal_flip_probability == 0.5
    assert (training_args.learning_rate, training_args.weight_decay, training_args.num_train_epochs) == (1e-4, 1e-4, 12)
    assert training_args.per_device_train_batch_size * 8 == 16  # 8 GPUs: the paper's global batch
    assert training_args.lr_step_decay_at == [0.6667, 0.9167] and training_args.warmup_start_factor == 0.001

    # mmdet's step schedule: linear warm-up from 0.001 x lr, then x0.1 after 8 and 11 of 12 "epochs" (here 12 steps).
    model = PvtForObjectDetection(tiny_config(fpn_hidden_size=8, detection_head_hidden_size=8))
    training_args.warmup_steps, training_args.eval_strategy = 2, "no"
    trainer = DetectionTrainer(model=model, args=training_args, label_names=["a"])
    trainer.create_optimizer()
    scheduler = trainer.create_scheduler(12)
    rates = []
    for _ in range(12):
        rates.append(scheduler.get_last_lr()[0])
        trainer.optimizer.step()
        scheduler.step()
    assert rates[0] == pytest.approx(1e-7) and rates[1] == pytest.approx(1e-4 * (0.001 + 0.999 / 2))
    assert rates[2:8] == pytest.approx([1e-4] * 6) and rates[8:11] == pytest.approx([1e-5] * 3)
    assert rates[11] == pytest.approx(1e-6)
