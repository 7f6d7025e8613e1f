"""`accelerate launch` with the CPU two-process config trains a detector with two processes, and the evaluation
gathers every held-out image's boxes from both exactly once (a distributed sampler pads an uneven last batch with
repeated images, which must not be scored twice)."""

import os
import socket
import subprocess
import sys
from pathlib import Path

from conftest import tiny_detection_config_file, tiny_detection_flags
from helpers import REPO, make_coco_folder, read_json


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_two_processes_train_and_gather_every_eval_image_once(tmp_path):
    train_dir = make_coco_folder(tmp_path / "train", count=16)
    validation_dir = make_coco_folder(tmp_path / "val", count=5)  # 5 images, 2 per process and batch: uneven
    output_dir = tmp_path / "ddp"
    flags = ["--train_dir", str(train_dir), "--validation_dir", str(validation_dir), "--max_steps", "2"]
    flags += ["--per_device_eval_batch_size", "2", "--eval_scale", "64", "48", "--eval_steps", "1"]
    command = [
        *("accelerate", "launch", "--config_file", str(REPO / "configuration/accelerate/cpu-2proc.yaml")),
        *("--main_process_port", str(_free_port()), str(REPO / "scripts/finetune_detection.py")),
        *tiny_detection_flags(tiny_detection_config_file(tmp_path), output_dir, *flags),
    ]
    # `accelerate` lives in the venv's bin, which a test runner started by its full path does not put on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    environment = {
        **os.environ,
        "PATH": path,
        "HF_HUB_OFFLINE": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "OMP_NUM_THREADS": "1",
    }
    completed = subprocess.run(
        command, check=False, env=environment, capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]

    for rank in (0, 1):
        assert f"[finetune-detection] process {rank} of 2" in completed.stdout
    results = read_json(output_dir / "all_results.json")
    assert results["world_size"] == 2 and results["eval_num_images"] == 5
    assert 0 <= results["eval_map"] <= 1 and (output_dir / "model" / "model.safetensors").is_file()
    state = read_json(output_dir / "checkpoint-2" / "trainer_state.json")
    evaluations = [entry for entry in state["log_history"] if "eval_num_images" in entry]
    assert [entry["eval_num_images"] for entry in evaluations] == [5, 5]  # at steps 1 and 2 as well
