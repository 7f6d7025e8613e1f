"""Every CLI turns a user's mistake into one `error: …` line and a non-zero exit (modeling_pvt.cli.run_cli); --debug
or PVT_DEBUG=1 shows the traceback."""

import argparse
import os
import runpy
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
from helpers import one_error_line

from modeling_pvt import __main__ as demo
from modeling_pvt.cli import (
    _parser_of,
    check_command_line,
    count_of,
    flag_mistakes,
    render_flag_table,
    run_cli,
    script_actions,
    take_debug_flag,
)
from modeling_pvt.speed import export
from modeling_pvt.speed.benchmark import run as benchmark
from modeling_pvt.tasks import evaluate as evaluation
from modeling_pvt.tasks.classification import task as training

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
        (["--output_dir", "weights.pth"], "--output_dir weights.pth is a file, not a folder. Pass a folder path"),
        (["--resume_from_checkpoint", "outputs/run/checkpoint-9"], "checkpoint-9: not found. Pass a checkpoint-<step>"),
    ],
    ids=["preset", "vit", "typo-deep", "typo-shallow", "file", "batch-0", "threads", "output-file", "no-checkpoint"],
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
    assert run_cli(benchmark.main, ["--presets", "pvt-huge"]) == 2
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


# ----------------------------------------------------------------------------------- flags checked before torch

SCRIPTS = REPO / "scripts"
# Each script but the demo (optional extra) checks its flags before its heavy imports. finetune_detection.py joins
# when it calls check_command_line (see modeling_pvt/cli.py).
PRECHECKED = ("benchmark", "convert_checkpoint", "demo", "evaluate", "export_onnx", "finetune", "finetune_detection",
              "finetune_segmentation", "push_to_hub")


def test_generated_flag_table_is_current():
    text = (REPO / "modeling_pvt" / "cli.py").read_text()
    assert render_flag_table() in text, "modeling_pvt/cli.py's flag table is stale: run `python -m modeling_pvt.cli`"


@pytest.mark.parametrize("script", PRECHECKED)
def test_flag_table_holds_exactly_what_the_scripts_parser_accepts(script):
    parser = _parser_of(SCRIPTS / f"{script}.py")
    accepted = {
        option
        for action in parser._actions
        if action.option_strings and not isinstance(action, argparse._HelpAction)
        for option in action.option_strings
    }
    assert {option for options in script_actions(script) for option in options} == accepted


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["--epochs", "3"], "finetune.py has no flag --epochs; did you mean --num_train_epochs?"),
        (["--lr", "0.1"], "--lr is ambiguous in finetune.py (the start of --lr_scheduler_kwargs, --lr_scheduler_type); "
         "did you mean --learning_rate?"),
        (["--model", "x"], "finetune.py has no flag --model; did you mean --model_name_or_path?"),
        (["--per-device-batch-size=3"], "finetune.py has no flag --per-device-batch-size; did you mean "
         "--per_device_eval_batch_size or --per_device_train_batch_size?"),
        (["--weight_decai", "0"], "finetune.py has no flag --weight_decai; did you mean --weight_decay?"),
        (["--zzz"], "finetune.py has no flag --zzz"),
    ],
    ids=["alias", "ambiguous-alias", "two-spellings", "similar", "typo", "unknown"],
)
def test_flag_mistakes_name_the_flag_meant(argv, expected):
    assert flag_mistakes(argv, script_actions("finetune"), "finetune.py") == [expected]


def test_accepted_flags_values_and_abbreviations_pass():
    argv = ["--learning_rate", "-1e-3", "--num-train-epochs=2", "--model-name", "x", "--overwrite_output", "true",
            "--debug", "underflow_overflow", "-h", "--", "--anything"]
    assert flag_mistakes(argv, script_actions("finetune"), "finetune.py") == []
    assert flag_mistakes(["--batch-sizes", "1", "--thread", "2"], script_actions("benchmark"), "benchmark.py") == []
    assert flag_mistakes(["--bs", "1"], script_actions("evaluate"), "evaluate.py") == [
        "evaluate.py has no flag --bs; did you mean --batch_size?"
    ]


def test_every_script_reports_a_flag_mistake_without_importing_torch(tmp_path):
    probe = (
        "import runpy, sys\n"
        "sys.argv = sys.argv[1:]\n"
        "try:\n"
        "    runpy.run_path(sys.argv[0], run_name='__main__')\n"
        "except SystemExit as exit:\n"
        "    print(exit.code, 'torch' in sys.modules)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    for script in PRECHECKED:
        command = [sys.executable, "-c", probe, str(SCRIPTS / f"{script}.py"), "a", "b", "--epochs", "3"]
        result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        assert result.stdout.split() == ["2", "False"], (script, result.stdout, result.stderr[-2000:])
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith(f"error: {script}.py has no flag --epochs") and line.endswith("for the options."), line


def test_command_line_check_names_a_missing_checkpoint_and_a_file_as_output_dir(tmp_path, capsys):
    run = tmp_path / "run"
    for step in (4, 12):
        (run / f"checkpoint-{step}").mkdir(parents=True)
    with pytest.raises(SystemExit) as exit:
        check_command_line("finetune.py", ["--output_dir", str(run), "--resume_from_checkpoint", str(run / "x")])
    assert exit.value.code == 2
    line = one_error_line(capsys)
    assert f"--resume_from_checkpoint {run / 'x'}: not found. {run} holds {run / 'checkpoint-4'}" in line
    assert "or `last` for the newest complete one" in line

    (tmp_path / "file").write_text("")
    with pytest.raises(SystemExit):
        check_command_line("convert_checkpoint.py", ["--output_dir", str(tmp_path / "file")])
    assert "is a file, not a folder" in one_error_line(capsys)
    check_command_line("finetune.py", ["--output_dir", str(run), "--resume_from_checkpoint", "last"])  # fine
    check_command_line("new_script.py", ["--anything"])  # a script the table does not know: its own parser judges


def test_unknown_flags_and_recipe_keys_are_usage_errors_of_the_full_parser(tmp_path, capsys):
    assert run_cli(training.main, ["--no_such_flag", "1"]) == 2
    assert "has no flag --no_such_flag" in one_error_line(capsys)
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("epochs: 3\n")
    assert run_cli(training.main, ["--recipe", str(recipe)]) == 2
    line = one_error_line(capsys)
    assert f"In the recipe {recipe}: " in line and "has no flag --epochs; did you mean --num_train_epochs?" in line


def test_counts_are_said_in_the_right_number():
    assert (count_of(1, "thread"), count_of(2, "thread"), count_of(1, "process", "processes")) == (
        "1 thread", "2 threads", "1 process"
    )
