"""Every CLI turns a user's mistake into one `error: …` line and a non-zero exit (modeling_pvt.cli.run_cli); --debug
or PVT_DEBUG=1 shows the traceback."""

import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from helpers import one_error_line

from modeling_pvt import __main__ as demo
from modeling_pvt import benchmarking, evaluation, export, training
from modeling_pvt.cli import run_cli, take_debug_flag

REPO = Path(__file__).resolve().parents[1]
push_main = runpy.run_path(str(REPO / "scripts" / "push_to_hub.py"))["main"]


def _vit_folder(path: Path) -> Path:
    config = transformers.ViTConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1, intermediate_size=8)
    config.save_pretrained(path)
    return path


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # default output folders land here
    monkeypatch.delenv("PVT_DEBUG", raising=False)


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--config_name", "pvt-huge"], "neither a preset (pvt-tiny, pvt-small, pvt-medium, pvt-large)"),
        (["--model_name_or_path", "VIT"], "is not a PVT checkpoint: its config.json has model_type 'vit'"),
        (["--model_name_or_path", "outputs/pvt-tiny-digits/modle"], "folder outputs/pvt-tiny-digits/modle does not"),
        (["--model_name_or_path", "outputs/modle"], "The model folder outputs/modle does not exist"),
        (["--model_name_or_path", "weights.pth"], "is a file, not a saved model folder"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be at least 1 (got 0)"),
        (["--cpu_threads", "many"], "--cpu_threads 'many' is not valid. Pass auto, 0"),
        (["--no_such_flag", "1"], "--no_such_flag"),
    ],
    ids=["preset", "vit", "typo-deep", "typo-shallow", "file", "batch-0", "threads", "unknown-flag"],
)
def test_finetune_mistakes_are_one_line(tmp_path, capsys, argv, expected):
    _vit_folder(tmp_path / "VIT")
    (tmp_path / "outputs").mkdir()
    (tmp_path / "weights.pth").write_bytes(b"")
    assert run_cli(training.main, argv) == 1
    assert expected in one_error_line(capsys)


def test_too_few_images_per_class_is_explained(tmp_path, capsys):
    from PIL import Image

    for name in ("a", "b", "c"):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (8, 8)).save(tmp_path / "data" / name / "0.png")
    assert run_cli(training.main, ["--train_dir", str(tmp_path / "data")]) == 1
    line = one_error_line(capsys)
    assert "Cannot hold out a stratified 20%" in line and "at least 2 images" in line and "--validation_dir" in line


def test_other_clis_report_mistakes_in_one_line(tmp_path, capsys):
    _vit_folder(tmp_path / "vit")
    cases = [
        (evaluation.main, ["--model_name_or_path", str(tmp_path / "missing")], "does not exist"),
        (evaluation.main, ["--model_name_or_path", str(tmp_path / "vit"), "--batch_size", "0"], "--batch_size"),
        (export.main, [str(tmp_path / "vit"), str(tmp_path / "x.onnx")], "is not a PVT checkpoint"),
        (demo.main, ["--model", str(tmp_path / "vit")], "is not a PVT checkpoint"),
        (demo.main, ["--sizes", "224"], "'224' is not HEIGHTxWIDTH"),
        (push_main, [str(tmp_path / "missing"), "org/name"], "is not a folder"),
    ]
    for main, argv, expected in cases:
        assert run_cli(main, argv) == 1, argv
        assert expected in one_error_line(capsys), argv


def test_usage_errors_are_one_line_with_exit_code_2(capsys):
    assert run_cli(benchmarking.main, ["--presets", "pvt-huge"]) == 2
    line = one_error_line(capsys)
    assert "invalid choice: 'pvt-huge'" in line and "--help" in line
    assert run_cli(push_main, []) == 2
    assert "the following arguments are required: folder, repo_id" in one_error_line(capsys)


def test_ctrl_c_is_one_line_with_the_hint(capsys):
    def interrupted(argv):
        raise KeyboardInterrupt

    assert run_cli(interrupted, [], interrupted_hint="Resume with --resume_from_checkpoint last.") == 130
    assert one_error_line(capsys) == "error: interrupted (Ctrl-C). Resume with --resume_from_checkpoint last."


def test_debug_flag_and_environment_variable_show_the_traceback(monkeypatch):
    def failing(argv):
        assert "--debug" not in argv  # the flag is the policy's, not the tool's
        raise ValueError("bad input")

    with pytest.raises(ValueError, match="bad input"):
        run_cli(failing, ["--debug"])
    monkeypatch.setenv("PVT_DEBUG", "1")
    with pytest.raises(ValueError, match="bad input"):
        run_cli(failing, [])


def test_trainers_own_debug_option_is_left_alone():
    trainers_option = ["--debug", "underflow_overflow", "--x", "1"]
    assert take_debug_flag(trainers_option) == (False, trainers_option)
    assert take_debug_flag(["--x", "1", "--debug"]) == (True, ["--x", "1"])
    assert take_debug_flag(["--debug", "--x", "1"]) == (True, ["--x", "1"])


def test_script_prints_one_line_and_debug_prints_the_traceback(tmp_path):
    command = [sys.executable, str(REPO / "scripts" / "finetune.py"), "--config_name", "pvt-huge"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    plain = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines()[-1].startswith("error: --config_name 'pvt-huge' is neither a preset")
    debug = subprocess.run([*command, "--debug"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "FileNotFoundError" in debug.stderr
