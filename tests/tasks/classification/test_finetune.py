"""scripts/finetune.py / modeling_pvt.training: arguments and recipes, a full tiny run and its outputs, fine-tuning
a saved checkpoint on an image folder, and resuming after SIGKILL."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import httpx2
import huggingface_hub
import pytest
import torch
import transformers
from conftest import tiny_config
from datasets import ClassLabel, Dataset, Features
from datasets import Image as ImageFeature
from helpers import REPO, kill_after_checkpoint, read_json, resume_killed_run
from huggingface_hub.errors import HfHubHTTPError
from PIL import Image

from modeling_pvt.checkpoints.hub import PublishError
from modeling_pvt.data.sources import DataError
from modeling_pvt.pictures import plot_training_curves
from modeling_pvt.tasks.classification.task import CLASSIFICATION_FIGURES, ImageClassificationTask, main
from modeling_pvt.training import loop
from modeling_pvt.training.arguments import parse_arguments
from modeling_pvt.training.runs import resolve_checkpoint

TASK = ImageClassificationTask()

FINETUNE = REPO / "scripts" / "finetune.py"


@pytest.fixture
def tiny_config_file(tmp_path) -> str:
    path = tmp_path / "tiny_config.json"
    tiny_config().to_json_file(path)
    return str(path)


def _tiny_run_flags(config_file: str, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--config_name",
        config_file,
        "--output_dir",
        str(output_dir),
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "40",
        "--num_train_epochs",
        "2",
        "--per_device_train_batch_size",
        "16",
        "--logging_steps",
        "1",
        "--dataloader_num_workers",
        "0",
        *extra,
    ]


def test_no_arguments_means_the_digits_recipe():
    defaults = parse_arguments([], TASK)
    from_recipe = parse_arguments(["--recipe", str(REPO / "configuration/recipes/pvt-tiny-digits.json")], TASK)
    recipe = json.loads((REPO / "configuration/recipes/pvt-tiny-digits.json").read_text())
    for name in recipe:
        values = [getattr(next(a for a in args if hasattr(a, name)), name) for args in (defaults, from_recipe)]
        if name == "image_size":  # unset means 32 for the digits
            values[0] = values[0] or 32
        assert values[0] == values[1], name
    model_args, data_args, training_args = defaults
    assert model_args.config_name == "pvt-tiny" and data_args.is_digits
    # Named after the model and the data, so that runs on other data or models never share a folder.
    assert training_args.output_dir == "outputs/pvt-tiny-sklearn-digits"
    shapes_flags = ["--train_dir", "/data/shapes/train", "--model_name_or_path", "runs/x/model"]
    shapes_run = parse_arguments(shapes_flags, TASK)[2]
    assert shapes_run.output_dir == "outputs/x-shapes"


def test_bf16_works_on_a_cpu_only_machine_without_use_cpu():
    recipe = str(REPO / "configuration/recipes/imagenet-pvt-tiny.yaml")
    for flags in (["--bf16", "true"], ["--bf16"], ["--recipe", recipe]):
        training_args = parse_arguments(flags, TASK)[2]
        assert training_args.bf16 and training_args.use_cpu == (not torch.accelerator.is_available())


def test_imagenet_recipe_and_flags_override_it():
    recipe = str(REPO / "configuration/recipes/imagenet-pvt-tiny.yaml")
    model_args, data_args, training_args = parse_arguments(["--recipe", recipe, "--use_cpu", "true"], TASK)
    assert (data_args.mixup_alpha, data_args.cutmix_alpha, training_args.label_smoothing_factor) == (0.8, 1.0, 0.1)
    assert (data_args.rand_augment_ops, data_args.crop_scale_min, data_args.horizontal_flip_probability) == (
        2,
        0.08,
        0.5,
    )
    assert model_args.drop_path_rate == 0.1 and model_args.image_size == 224
    assert (training_args.weight_decay, training_args.num_train_epochs, training_args.lr_scheduler_type) == (
        0.05,
        300,
        "cosine",
    )
    # lr = 5e-4 x global batch / 512 with the documented 8 x 128 batch
    assert training_args.learning_rate == pytest.approx(5e-4 * 8 * training_args.per_device_train_batch_size / 512)
    assert training_args.warmup_steps == pytest.approx(5 / 300, abs=1e-5)
    overridden = parse_arguments(["--recipe", recipe, "--use_cpu", "true", "--learning_rate", "0.123"], TASK)[2]
    assert overridden.learning_rate == 0.123


def test_tiny_run_writes_hub_folder_results_and_plots(tiny_config_file, tmp_path, capsys, recwarn):
    output_dir = tmp_path / "run"
    flags = _tiny_run_flags(
        tiny_config_file,
        output_dir,
        "--mixup_alpha",
        "0.8",
        "--cutmix_alpha",
        "1.0",
        "--label_smoothing_factor",
        "0.1",
        "--rand_augment_ops",
        "2",
    )
    results = main(flags)

    first_lines = capsys.readouterr().out
    for expected in (
        "[finetune] data ",
        "64 train / 40 eval images, 32x32",
        "[finetune] classes  10 (0, 1, 2",
        f"[finetune] output   {output_dir}",
        "[finetune] threads  1 (auto: small images (1024 pixels) and a run of 8 steps, too short to measure)",
        "[finetune] device   cpu, fp32",
        "[finetune] memory   freed memory kept for reuse (glibc",
        "[finetune] resume   no (a fresh run)",
    ):
        assert expected in first_lines, expected
    assert not [warning for warning in recwarn if "pin_memory" in str(warning.message)]

    model_dir = output_dir / "model"
    for name in ("config.json", "model.safetensors", "preprocessor_config.json", "README.md", "modeling_pvt.py"):
        assert (model_dir / name).is_file(), name
    config = read_json(model_dir / "config.json")
    assert (
        config["id2label"] == {str(d): str(d) for d in range(10)}
        and "AutoModelForImageClassification" in config["auto_map"]
    )
    assert read_json(model_dir / "preprocessor_config.json")["size"] == {"height": 32, "width": 32}
    card = (model_dir / "README.md").read_text()
    card_accuracy = next(line for line in card.splitlines() if line.startswith("| accuracy |")).split("|")[2]
    assert float(card_accuracy) == pytest.approx(results["eval_accuracy"], abs=1e-4) and "sklearn-digits" in card
    # From a random initialisation, with the default warmup (0.05, a fraction of the steps in transformers 5).
    assert "Trained from scratch on `sklearn-digits`." in card and "Fine-tuned" not in card
    assert "| warmup (fraction of steps) | 0.05 |" in card and "warmup_steps" not in card

    all_results = read_json(output_dir / "all_results.json")
    assert all_results["world_size"] == 1 and 0 <= all_results["eval_accuracy"] <= 1
    assert "eval_top5_accuracy" in all_results and math.isfinite(all_results["train_loss"])
    for plot in ("loss_curve.png", "accuracy_curve.png", "confusion_matrix.png"):
        with Image.open(output_dir / plot) as image:
            assert image.format == "PNG" and image.size[0] > 100
    summary = first_lines.strip().splitlines()[-1]
    assert summary.startswith("Done in") and f"{results['eval_accuracy']:.2%}" in summary
    assert f"pipeline('image-classification', model='{model_dir}', trust_remote_code=True)" in summary

    from transformers import pipeline

    classifier = pipeline("image-classification", model=str(model_dir), trust_remote_code=True)
    prediction = classifier(Image.new("RGB", (32, 32), "white"), top_k=3)
    assert len(prediction) == 3 and prediction[0]["label"] in {str(d) for d in range(10)}

    # A second run into the same folder stops before reading any data, naming both ways out; the model is untouched.
    before = (model_dir / "model.safetensors").read_bytes()
    with pytest.raises(FileExistsError, match="holds a finished model.*--output_dir.*--overwrite_output_dir true"):
        main(flags)
    with pytest.raises(FileExistsError, match="already holds a finished model"):
        main([*flags, "--resume_from_checkpoint", "last"])
    assert (model_dir / "model.safetensors").read_bytes() == before


def test_plots_without_eval_data_are_not_written(tmp_path):
    written = plot_training_curves([{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.5}], tmp_path, CLASSIFICATION_FIGURES)
    assert [path.name for path in written] == ["loss_curve.png"] and not (tmp_path / "accuracy_curve.png").exists()


def test_finetunes_a_saved_checkpoint_on_an_image_folder_with_a_new_head(
    tiny_config_file, tmp_path, monkeypatch, capsys
):
    source = tmp_path / "digits-run"
    main(_tiny_run_flags(tiny_config_file, source, "--num_train_epochs", "1"))
    folder = tmp_path / "folder"
    for class_index, name in enumerate(("circle", "square", "triangle")):
        (folder / name).mkdir(parents=True)
        for index in range(6):
            Image.new("L", (40, 40), 60 * class_index + index).save(folder / name / f"{index}.png")
    output_dir = tmp_path / "folder-run"
    with pytest.raises(
        ValueError, match="has a 10-class head but the dataset has 3 classes.*--ignore_mismatched_sizes"
    ):
        main(
            [
                "--model_name_or_path",
                str(source / "model"),
                "--train_dir",
                str(folder),
                "--output_dir",
                str(output_dir),
                "--max_steps",
                "1",
            ]
        )
    flags = [
        *("--model_name_or_path", str(source / "model"), "--ignore_mismatched_sizes", "true"),
        *("--train_dir", str(folder), "--output_dir", str(output_dir), "--num_train_epochs", "1"),
        *("--per_device_train_batch_size", "8", "--push_to_hub", "true", "--hub_model_id", "someone/pvt-shapes"),
    ]
    # The push target is checked before any data is read: offline, the run stops at once.
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE is set.*scripts/push_to_hub.py"):
        main(flags)
    assert not output_dir.exists()

    # Reachable at the start but failing at the end: the model is kept and the summary says how to push it later.
    monkeypatch.setattr(loop, "check_push_target", lambda repo_id, token=None: "someone")
    request = httpx2.Request("POST", "https://huggingface.co/api/repos/create")
    failure = HfHubHTTPError("503 Server Error", response=httpx2.Response(503, request=request))

    def unavailable_hub(*args, **kwargs):
        raise failure

    monkeypatch.setattr(huggingface_hub.HfApi, "create_repo", unavailable_hub)
    results = main(flags)
    captured = capsys.readouterr()
    assert "HTTP 503" in captured.err and "HTTP 503" in results["push_error"]
    summary = captured.out.strip().splitlines()[-1]
    assert "NOT pushed to someone/pvt-shapes" in summary
    assert f"push it later with: python scripts/push_to_hub.py {output_dir / 'model'} someone/pvt-shapes" in summary
    config = read_json(output_dir / "model" / "config.json")
    assert config["id2label"] == {"0": "circle", "1": "square", "2": "triangle"}
    assert "eval_top5_accuracy" not in read_json(output_dir / "all_results.json")  # 3 classes: no top-5


def test_native_folder_without_label_names_fine_tunes_in_bf16_on_the_cpu(tmp_path):
    """transformers 5.24 writes `"id2label": null` for a PVT saved without label names; and --bf16 alone must work
    on a machine without an accelerator."""
    native = transformers.PvtForImageClassification(
        transformers.PvtConfig(
            hidden_sizes=[8, 16, 32, 64],
            depths=[1, 1, 1, 1],
            num_attention_heads=[1, 1, 2, 2],
            mlp_ratios=[2, 2, 2, 2],
            image_size=32,
            num_labels=4,
        )
    )
    native.save_pretrained(tmp_path / "native")
    config = read_json(tmp_path / "native" / "config.json")
    config.update(id2label=None, label2id=None)
    (tmp_path / "native" / "config.json").write_text(json.dumps(config))
    folder = tmp_path / "shapes"
    for class_index, name in enumerate(("circle", "square")):
        (folder / name).mkdir(parents=True)
        for index in range(5):
            Image.new("L", (36, 36), 100 * class_index + index).save(folder / name / f"{index}.png")
    results = main(
        [
            *("--model_name_or_path", str(tmp_path / "native"), "--ignore_mismatched_sizes", "true"),
            *("--train_dir", str(folder), "--output_dir", str(tmp_path / "run"), "--max_steps", "1"),
            *("--per_device_train_batch_size", "4", "--image_size", "32", "--bf16", "true"),
        ]
    )
    assert read_json(tmp_path / "run" / "model" / "config.json")["id2label"] == {"0": "circle", "1": "square"}
    assert math.isfinite(results["eval_loss"])


def test_bad_arguments_get_clear_errors(tiny_config_file, tmp_path):
    with pytest.raises(ValueError, match="below this architecture's minimum of 32 pixels.*--image_size 32"):
        main(_tiny_run_flags(tiny_config_file, tmp_path / "small", "--image_size", "16"))
    with pytest.raises(ValueError, match="--push_to_hub needs --hub_model_id"):
        main(_tiny_run_flags(tiny_config_file, tmp_path / "push", "--push_to_hub", "true"))
    with pytest.raises(FileNotFoundError, match="not a complete Trainer checkpoint"):
        resolve_checkpoint(str(tmp_path), tmp_path)
    assert resolve_checkpoint("last", tmp_path) is None  # nothing yet: start fresh


def _finetune_command(config_file: str, output_dir: Path, *extra: str) -> list[str]:
    # 64 images / batch 8 = 8 steps per epoch, 3 epochs; a checkpoint every 4 steps; augmentation stays on.
    # Later flags override the tiny-run defaults (argparse keeps the last occurrence).
    return [
        sys.executable,
        str(FINETUNE),
        *_tiny_run_flags(
            config_file,
            output_dir,
            *("--max_eval_samples", "32", "--per_device_train_batch_size", "8", "--num_train_epochs", "3"),
            *("--save_strategy", "steps", "--save_steps", "4", "--save_total_limit", "3"),
            *("--eval_strategy", "no", "--logging_steps", "4", "--disable_tqdm", "true"),
            *extra,
        ),
    ]


def test_run_killed_with_sigkill_resumes_to_the_same_metrics(tiny_config_file, tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1"}
    reference_dir, killed_dir = tmp_path / "uninterrupted", tmp_path / "killed"
    subprocess.run(
        _finetune_command(tiny_config_file, reference_dir),
        env=environment,
        check=True,
        capture_output=True,
        timeout=600,
    )
    reference = read_json(reference_dir / "all_results.json")

    killed_at = kill_after_checkpoint(_finetune_command(tiny_config_file, killed_dir), killed_dir, 8, environment)
    assert killed_at < 24 and not (killed_dir / "model").exists()  # really interrupted mid-training

    command = _finetune_command(tiny_config_file, killed_dir, "--resume_from_checkpoint", "last")
    stdout, results = resume_killed_run(command, killed_dir, killed_at, environment)
    assert f"[finetune] resume   from {killed_dir / f'checkpoint-{killed_at}'}" in stdout
    assert results["eval_accuracy"] == reference["eval_accuracy"]
    assert results["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-4)


def test_streamed_dataset_by_name_trains_for_max_steps(tiny_config_file, tmp_path, capsys):
    features = Features({"img": ImageFeature(), "fine_label": ClassLabel(names=["a", "b", "c"])})
    for split, count in (("train", 24), ("validation", 9)):
        images = [Image.new("RGB", (36, 36), (20 * i, 0, 0)) for i in range(count)]
        Dataset.from_dict({"img": images, "fine_label": [i % 3 for i in range(count)]}, features=features).to_parquet(
            str(tmp_path / "hub" / "data" / f"{split}.parquet")
        )
    flags = [
        "--config_name",
        tiny_config_file,
        "--dataset_name",
        str(tmp_path / "hub"),
        "--image_column_name",
        "img",
        "--label_column_name",
        "fine_label",
        "--streaming",
        "true",
        "--output_dir",
        str(tmp_path / "stream"),
        "--per_device_train_batch_size",
        "4",
        "--image_size",
        "32",
    ]
    with pytest.raises(DataError, match="pass --max_steps N"):
        main(flags)
    results = main([*flags, "--max_steps", "3", "--resume_from_checkpoint", "last"])
    assert "no complete checkpoint found in" in capsys.readouterr().out  # `last` in a new folder: a fresh start
    assert results["eval_accuracy"] >= 0 and read_json(tmp_path / "stream" / "model" / "config.json")["id2label"] == {
        "0": "a",
        "1": "b",
        "2": "c",
    }
