"""`accelerate launch` with the CPU two-process config really trains with two processes (accelerate can silently
start only one), writes one checkpoint, and reports an unscaled loss; segmentation runs synchronise BatchNorm across
the processes."""

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import tiny_config, tiny_segmentation_config_file, tiny_segmentation_flags
from helpers import REPO, make_mask_folder, read_json

from modeling_pvt import PvtConfig, PvtForSemanticSegmentation


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _launch_environment() -> dict:
    # `accelerate` lives in the venv's bin, which a test runner started by its full path does not put on PATH.
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    return {**os.environ, "PATH": path, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}


def test_two_cpu_processes_train_one_model(tmp_path):
    config_file = tmp_path / "tiny_config.json"
    tiny_config().to_json_file(config_file)
    output_dir = tmp_path / "ddp"
    # 64 images, 8 per process and step: 4 optimizer steps with two processes (8 if only one had started).
    command = [
        "accelerate",
        "launch",
        "--config_file",
        str(REPO / "configuration/accelerate/cpu-2proc.yaml"),
        "--main_process_port",
        str(_free_port()),
        str(REPO / "scripts/finetune.py"),
        "--config_name",
        str(config_file),
        "--output_dir",
        str(output_dir),
        "--max_train_samples",
        "64",
        "--max_eval_samples",
        "32",
        "--per_device_train_batch_size",
        "8",
        "--num_train_epochs",
        "1",
        "--logging_steps",
        "1",
        "--disable_tqdm",
        "true",
    ]
    completed = subprocess.run(
        command, check=False, env=_launch_environment(), capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]

    assert "[finetune] process 0 of 2" in completed.stdout and "[finetune] process 1 of 2" in completed.stdout
    results = read_json(output_dir / "all_results.json")
    assert results["world_size"] == 2
    assert [path.name for path in output_dir.glob("checkpoint-*")] == ["checkpoint-4"]  # data split over both
    assert (output_dir / "model" / "model.safetensors").is_file()

    # At initialisation the logits are ~0, so the cross-entropy over 10 digits is ~ln(10); a loss scaled by the
    # world size (Trainer's num_items_in_batch path) would log ~2 x ln(10).
    state = read_json(output_dir / "checkpoint-4" / "trainer_state.json")
    first_loss = next(entry["loss"] for entry in state["log_history"] if "loss" in entry)
    assert abs(first_loss - math.log(10)) < 0.25 * math.log(10)


def test_two_process_segmentation_synchronises_batch_norm(tmp_path):
    config_file = tiny_segmentation_config_file(tmp_path)
    batch_norms = sum(
        isinstance(module, torch.nn.BatchNorm2d)
        for module in PvtForSemanticSegmentation(PvtConfig.from_json_file(config_file)).modules()
    )
    output_dir = tmp_path / "ddp"
    train_dir = make_mask_folder(tmp_path / "train", count=16)
    command = [
        *("accelerate", "launch", "--config_file", str(REPO / "configuration/accelerate/cpu-2proc.yaml")),
        *("--main_process_port", str(_free_port()), str(REPO / "scripts/finetune_segmentation.py")),
        *tiny_segmentation_flags(config_file, output_dir, "--train_dir", str(train_dir), "--max_steps", "2"),
    ]
    completed = subprocess.run(
        command, check=False, env=_launch_environment(), capture_output=True, text=True, timeout=600, cwd=tmp_path
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]

    for rank in (0, 1):
        assert f"[finetune-segmentation] process {rank} of 2" in completed.stdout
        synchronised = f"process {rank}: {batch_norms} BatchNorm layers synchronised across 2 processes"
        assert synchronised in completed.stdout
    results = read_json(output_dir / "all_results.json")
    assert results["world_size"] == 2 and results["synchronized_batch_norms"] == batch_norms > 0
    assert 0 <= results["eval_mean_iou"] <= 1 and (output_dir / "model" / "model.safetensors").is_file()


def test_every_accelerate_config_is_read_by_accelerate():
    from accelerate.commands.config.config_args import load_config_from_file

    configs = {
        path.name: load_config_from_file(str(path)) for path in (REPO / "configuration/accelerate").glob("*.yaml")
    }
    assert {name: (config.distributed_type.value, config.num_processes) for name, config in configs.items()} == {
        "cpu-2proc.yaml": ("MULTI_GPU", 2),  # torchrun-launched; MULTI_CPU would start one process
        "gpu-1-bf16.yaml": ("NO", 1),
        "multi-gpu-ddp.yaml": ("MULTI_GPU", 8),
        "multi-node-ddp.yaml": ("MULTI_GPU", 16),
        "fsdp.yaml": ("FSDP", 8),
    }
    assert configs["gpu-1-bf16.yaml"].mixed_precision == "bf16"
    assert configs["fsdp.yaml"].fsdp_config["fsdp_transformer_layer_cls_to_wrap"] == "PvtBlock"
    multi_node = (REPO / "configuration/accelerate/multi-node-ddp.yaml").read_text()
    for field in ("num_machines", "machine_rank", "num_processes", "main_process_ip", "main_process_port"):
        assert "# FILL_IN" in multi_node.split(f"\n{field}:")[0].rsplit("\n", 2)[-1], field  # documented just above
