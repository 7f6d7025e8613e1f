"""Shared fixtures. Tests never touch the network: the Hub is offline and tiny configs keep the suite fast."""

import os

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from modeling_pvt import PvtConfig  # noqa: E402


def tiny_config(**overrides) -> PvtConfig:
    """A 4-stage PVT with the real layout (patch 4/2/2/2, SR 8/4/2/1, CLS in stage 4) but widths 8/16/32/64."""
    params = dict(
        hidden_sizes=[8, 16, 32, 64],
        depths=[1, 1, 2, 1],
        num_attention_heads=[1, 2, 2, 4],
        mlp_ratios=[2, 2, 2, 2],
        num_labels=5,
    )
    return PvtConfig(**{**params, **overrides})


@pytest.fixture
def config() -> PvtConfig:
    return tiny_config()


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def tiny_segmentation_config_file(folder) -> str:
    """`tiny_config` with a Semantic FPN of width 16 (the presets' 256/128 would dominate a test's time), as a JSON
    file for --config_name."""
    path = folder / "tiny_segmentation_config.json"
    tiny_config(fpn_hidden_size=16, decoder_hidden_size=16).to_json_file(path)
    return str(path)


def tiny_segmentation_flags(config_file: str, output_dir, *extra: str) -> list[str]:
    """finetune_segmentation.py flags for a run of a few steps; later flags override these."""
    return [
        *("--config_name", config_file, "--output_dir", str(output_dir)),
        *("--max_train_samples", "32", "--max_eval_samples", "16", "--per_device_train_batch_size", "8"),
        *("--max_steps", "4", "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1"),
        # One thread: the tiny images gain nothing from more, and on a loaded machine more can be far slower.
        *("--cpu_threads", "1", "--disable_tqdm", "true", "--dataloader_num_workers", "0"),
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_segmentation_run(tmp_path_factory):
    """One tiny run on the default data (the grid digits), shared by the tests that inspect a trained segmentation
    folder: (output_dir, results, printed output)."""
    import contextlib
    import io

    from modeling_pvt.tasks.segmentation.task import main

    folder = tmp_path_factory.mktemp("segmentation-run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = main(tiny_segmentation_flags(tiny_segmentation_config_file(folder), folder / "run"))
    return folder / "run", results, printed.getvalue()


def tiny_detection_config_file(folder) -> str:
    """`tiny_config` with a RetinaNet FPN and head of width 16, one conv per head branch (the paper's 256 x 4 would
    dominate a test's time), as a JSON file for --config_name."""
    path = folder / "tiny_detection_config.json"
    tiny_config(fpn_hidden_size=16, detection_head_hidden_size=16, detection_head_num_convs=1).to_json_file(path)
    return str(path)


def tiny_detection_flags(config_file: str, output_dir, *extra: str) -> list[str]:
    """finetune_detection.py flags for a run of a few steps; later flags override these."""
    return [
        *("--config_name", config_file, "--output_dir", str(output_dir)),
        *("--max_train_samples", "32", "--max_eval_samples", "16", "--per_device_train_batch_size", "8"),
        *("--max_steps", "4", "--eval_steps", "2", "--save_steps", "2", "--logging_steps", "1"),
        *("--cpu_threads", "1", "--disable_tqdm", "true", "--dataloader_num_workers", "0"),
        *extra,
    ]


@pytest.fixture(scope="session")
def tiny_detection_run(tmp_path_factory):
    """One tiny run on the default data (the scattered digits), shared by the tests that inspect a trained detection
    folder: (output_dir, results, printed output)."""
    import contextlib
    import io

    from modeling_pvt.tasks.detection.task import main

    folder = tmp_path_factory.mktemp("detection-run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        results = main(tiny_detection_flags(tiny_detection_config_file(folder), folder / "run"))
    return folder / "run", results, printed.getvalue()
