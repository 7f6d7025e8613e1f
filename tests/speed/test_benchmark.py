"""The benchmark runs end to end on a tiny config and writes complete, consistent JSON. Speed itself is measured by
scripts/benchmark.py, never asserted here."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from modeling_pvt.cpu_fast_paths import CpuCapabilities, detect_cpu_capabilities
from modeling_pvt.speed.benchmark import run as benchmark
from modeling_pvt.speed.benchmark.models import build_runner, our_classifier, paired_models
from modeling_pvt.speed.benchmark.run import (
    main,
    model_statistics,
    parse_args,
    run_benchmark,
)
from modeling_pvt.speed.benchmark.report import format_table
from modeling_pvt.speed.benchmark.settings import PAPER_GFLOPS, BenchmarkSettings
from modeling_pvt.speed.benchmark.timing import (
    Setting,
    VariantProcesses,
    background_load,
    forward_gflops,
    peak_memory_bytes,
)

TINY = {
    "hidden_sizes": [8, 16, 32, 64],
    "num_attention_heads": [1, 2, 2, 4],
    "depths": [1, 1, 1, 1],
    "mlp_ratios": [2, 2, 2, 2],
    "num_labels": 5,
    "image_size": 64,
}
MEASUREMENT_FIELDS = {
    "preset", "task", "mode", "batch_size", "height", "width", "median_seconds", "images_per_second",
    "seconds_per_image", "repeat_seconds", "peak_memory_mb", "peak_memory_mb_per_image",
    "max_abs_diff_vs_fp32_eager", "speedup_vs_native", "speedup_vs_eager", "best_speedup_vs_native",
    "compile_seconds", "gflops_per_image", "achieved_gflops_per_second", "fast_paths",
}  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark")
    main([
        "--presets", "pvt-tiny", "--config-overrides", json.dumps(TINY),
        "--tasks", "inference", "training", "backbone", "segmentation", "segmentation-training",
        "--modes", "native", "eager", "bf16", "checkpointed", "aten-linear", "int8", "int8-onnx", "int8-static",
        "--batch-sizes", "2", "--resolutions", "64", "96x64", "--backbone-resolutions", "128x96", "64",
        "--segmentation-resolutions", "64x96", "--segmentation-training-resolutions", "64",
        "--repeats", "2", "--warmup", "1", "--json", str(folder / "bench.json"), "--plot", str(folder / "bench.png"),
    ])  # fmt: skip
    assert (folder / "bench.png").stat().st_size > 0
    return json.loads((folder / "bench.json").read_text())


def test_json_has_every_setting_and_mode(results):
    rows = {(row["task"], row["mode"], row["height"], row["width"]) for row in results["measurements"]}
    fp32 = ("eager", "aten-linear")
    int8 = ("int8", "int8-onnx", "int8-static")
    # Where bf16 is emulated the benchmark skips its modes (with a note) instead of timing a slow emulation.
    bf16 = ("bf16",) if detect_cpu_capabilities().native_bf16 else ()
    expected = {("inference", mode, 64, 64) for mode in ("native", *fp32, *bf16, *int8)}
    expected |= {("training", mode, 64, 64) for mode in ("native", *fp32, *bf16, "checkpointed")}
    # The native model cannot run at any size but its own; as a backbone it is built for a square size.
    expected |= {("inference", mode, 96, 64) for mode in (*fp32, *bf16, *int8)}
    expected |= {("training", mode, 96, 64) for mode in (*fp32, *bf16, "checkpointed")}
    # Static int8 is our model with int8 layers: it runs the dense inference tasks too, never training.
    expected |= {("backbone", mode, 128, 96) for mode in (*fp32, *bf16, "int8-static")}
    expected |= {("backbone", mode, 64, 64) for mode in ("native", *fp32, *bf16, "int8-static")}
    expected |= {("segmentation", mode, 64, 96) for mode in (*fp32, *bf16, "int8-static")}
    expected |= {("segmentation-training", mode, 64, 64) for mode in (*fp32, *bf16, "checkpointed")}
    assert rows == expected
    for row in results["measurements"]:
        assert set(row) == MEASUREMENT_FIELDS
        assert len(row["repeat_seconds"]) == 2 and row["median_seconds"] > 0
        # onnxruntime's memory is invisible to PyTorch's allocator: not reported rather than reported as 0.
        assert row["peak_memory_mb"] is None if row["mode"] == "int8-onnx" else row["peak_memory_mb"] > 0, row
        assert row["images_per_second"] == pytest.approx(row["batch_size"] / row["median_seconds"])
        assert row["gflops_per_image"] > 0 and row["achieved_gflops_per_second"] > 0
        native_ran = (row["height"], row["width"]) == (64, 64) and not row["task"].startswith("segmentation")
        assert (row["speedup_vs_native"] is not None) == native_ran, row


def test_fp32_paths_match_and_bf16_is_close(results):
    for row in results["measurements"]:
        if row["mode"] == "native" and row["task"] == "backbone":
            # transformers' PvtModel returns tokens, our backbone feature maps: timed side by side, not compared.
            assert row["max_abs_diff_vs_fp32_eager"] is None
            continue
        limit = {"bf16": 0.05, "int8": 0.05, "int8-onnx": 0.05, "int8-static": 0.1}.get(row["mode"], 1e-4)
        assert row["max_abs_diff_vs_fp32_eager"] <= limit, row


def test_model_statistics_and_environment(results):
    stats = results["models"]["pvt-tiny"]
    assert stats["gflops_per_image"] == pytest.approx(2 * stats["gmacs_per_image"]) and stats["gmacs_per_image"] > 0
    # Overridden dimensions are not the paper's model, so its numbers are not put next to them.
    assert stats["paper_gflops"] is None
    environment = results["environment"]
    assert environment["device"] == "cpu" and environment["torch"] == torch.__version__
    assert "fast paths: linear inference=" in environment["cpu_fast_paths"]
    assert environment["gemm_fp32_gflops_per_second"] > 0 and environment["gpu"] == "none available in this run"


def test_gflops_grow_faster_than_pixels_on_dense_sizes():
    # Attention FLOPs grow with (H*W)^2 / R^2: four times the pixels must cost more than four times the FLOPs.
    _, config, _ = paired_models("pvt-tiny", **TINY)
    small, large = (forward_gflops("backbone", config, size, size) for size in (64, 128))
    assert large > 4 * small


def test_flop_count_matches_the_paper_for_pvt_tiny():
    stats = model_statistics("pvt-tiny", BenchmarkSettings())
    assert stats["gmacs_per_image"] == pytest.approx(PAPER_GFLOPS["pvt-tiny"], abs=0.05)
    assert stats["paper_gflops"] == PAPER_GFLOPS["pvt-tiny"] and stats["parameters_m"] == pytest.approx(13.2, rel=0.005)


def test_variants_built_from_one_config_keep_their_own_attention():
    _, config, state_dict = paired_models("pvt-tiny", **TINY)
    eager, sdpa = our_classifier(config, state_dict, "eager"), our_classifier(config, state_dict, "sdpa")
    assert (eager.config._attn_implementation, sdpa.config._attn_implementation) == ("eager", "sdpa")


def test_peak_memory_counts_what_a_function_allocates():
    def allocate_then_free():
        first = torch.ones(1024, 1024)  # 4 MiB
        second = torch.ones(2048, 1024)  # 8 MiB
        del first, second
        return torch.ones(256, 1024)  # 1 MiB, after the peak

    assert peak_memory_bytes(allocate_then_free, "cpu") == pytest.approx(12 * 2**20, rel=0.01)


def test_unknown_mode_is_rejected():
    with pytest.raises(ValueError, match="Unknown modes"):
        run_benchmark(BenchmarkSettings(modes=["turbo"]))


def test_results_go_under_outputs_and_help_shows_the_defaults(capsys):
    settings, args = parse_args([])
    assert args.json == Path("outputs/benchmark/benchmark.json")
    with pytest.raises(SystemExit):
        parse_args(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for shown in ("(default: 7)", "(default: ['pvt-small'])", "(default: outputs/benchmark/benchmark.json)"):
        assert shown in help_text, shown


def test_background_load_starts_and_stops_its_processes():
    with background_load(2, max_seconds=60) as workers:
        assert len(workers) == 2 and all(worker.poll() is None for worker in workers)
    assert all(worker.poll() is not None for worker in workers)


def test_background_load_stops_itself_at_its_time_cap():
    with background_load(1, max_seconds=0.2) as (worker,):
        worker.wait(timeout=30)
        assert worker.returncode == 0


def test_background_load_is_stopped_when_the_benchmark_fails():
    with pytest.raises(RuntimeError), background_load(1, max_seconds=60) as (worker,):
        raise RuntimeError("benchmark crashed")
    assert worker.poll() is not None


def test_bf16_modes_are_skipped_where_bf16_is_emulated(monkeypatch):
    no_bf16 = CpuCapabilities("GenuineIntel", "Xeon", "x86_64", frozenset({"avx2", "avx512f"}), "AVX512", True)
    monkeypatch.setattr(benchmark, "detect_cpu_capabilities", lambda: no_bf16)
    settings = BenchmarkSettings(
        presets=["pvt-tiny"], config_overrides=TINY, tasks=[], modes=["eager", "bf16"], measure_gemm_peak=False
    )
    results = run_benchmark(settings, progress=lambda _: None)
    assert list(results["modes"]) == ["eager"] and "no native bf16" in results["notes"][0]


def test_modes_per_task_and_size():
    modes = ["native", "eager", "checkpointed", "int8", "int8-static"]
    assert benchmark._modes_for("inference", modes, 224, 224, (224, 224)) == ["native", "eager", *modes[3:]]
    assert benchmark._modes_for("inference", modes, 256, 224, (224, 224)) == ["eager", *modes[3:]]
    assert benchmark._modes_for("training", modes, 224, 224, (224, 224)) == ["native", "eager", "checkpointed"]
    assert benchmark._modes_for("backbone", modes, 512, 512, (224, 224)) == ["native", "eager", "int8-static"]
    assert benchmark._modes_for("backbone", modes, 512, 683, (224, 224)) == ["eager", "int8-static"]
    assert benchmark._modes_for("segmentation", modes, 512, 683, (224, 224)) == ["eager", "int8-static"]
    assert benchmark._modes_for("segmentation-training", modes, 512, 512, (224, 224)) == ["eager", "checkpointed"]


def test_each_variant_times_in_its_own_process_and_reports_its_errors():
    setting = Setting("pvt-tiny", "inference", 1, 64, 64, TINY, "cpu", None, 0)
    with VariantProcesses(["eager", "native"]) as variants:
        processes = list(variants.processes.values())
        assert len({process.pid for process in processes} | {os.getpid()}) == 3
        outputs, _, fast_paths = variants.request("eager", "build", setting)
        assert outputs.shape == (1, TINY["num_labels"]) and variants.request("eager", "step") > 0
        assert fast_paths.startswith("fast paths: linear inference=")
        with pytest.raises(ValueError, match="^The native variant failed: KeyError: .*pvt-huge"):
            variants.request("native", "build", dataclasses.replace(setting, preset="pvt-huge"))
    assert not any(process.is_alive() for process in processes)


def test_an_unusable_device_is_one_clear_error():
    with pytest.raises(ValueError, match="--device cuda:99 is not usable here .*use --device cpu"):
        run_benchmark(BenchmarkSettings(presets=["pvt-tiny"], device="cuda:99"), progress=lambda _: None)


def test_memory_measurement_prints_no_profiler_lines(tmp_path):
    """torch.profiler's C++ core (kineto) prints `USDT: … profiler_start` lines unless told otherwise, once per
    process: a fresh interpreter, as each benchmarked variant's process is."""
    code = (
        "import torch\n"
        "from modeling_pvt.speed.benchmark.timing import peak_memory_bytes\n"
        "print(peak_memory_bytes(lambda: torch.ones(1000).sum(), 'cpu'))\n"
    )
    env = {key: value for key, value in os.environ.items() if key != "KINETO_LOG_LEVEL"}
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert int(result.stdout.split()[-1]) >= 4000
    assert "USDT" not in result.stderr and "profiler_start" not in result.stderr, result.stderr


def test_the_table_says_1_thread_and_1_busy_process():
    results = {
        "environment": {
            "cpu": "a CPU", "torch_threads": 1, "gpu": "none", "background_load_processes": 1,
            "omp_wait_policy": "PASSIVE", "cpu_fast_paths": None, "attention_of_other_modes": "sdpa",
            "segmentation_model": "PvtForSemanticSegmentation",
        },
        "measurements": [], "models": {}, "agreement": [], "modes": {}, "notes": [],
    }  # fmt: skip
    assert "CPU: a CPU; 1 thread; GPU: none; background load: 1 busy process;" in format_table(results)
    results["environment"].update(torch_threads=2, background_load_processes=3)
    assert "2 threads; GPU: none; background load: 3 busy processes;" in format_table(results)


def test_detection_tasks_build_time_and_count_the_retinanet():
    from modeling_pvt.speed.benchmark.timing import setting_models_and_inputs

    setting = Setting("pvt-tiny", "detection-training", 2, 64, 96, TINY, "cpu", None, 0)
    native, config, state_dict, pixel_values, labels = setting_models_and_inputs(setting)
    assert len(labels) == 2 and all((image["boxes"][:, 2:] <= torch.tensor([96, 64])).all() for image in labels)
    runner = build_runner("eager", "detection-training", native, config, state_dict, pixel_values, labels, "cpu")
    runner.step()
    inference = build_runner("sdpa", "detection", native, config, state_dict, pixel_values, None, "cpu")
    # 9 anchors on P3..P7 of a 64x96 input: 8x12, 4x6, 2x3, then the stride-2 convs' 1x2 and 1x1.
    assert inference.outputs().shape[:2] == (2, 9 * (96 + 24 + 6 + 2 + 1))
    assert forward_gflops("detection", config, 64, 96) > forward_gflops("backbone", config, 64, 96)
    with pytest.raises(ValueError, match="no PVT model for detection"):
        build_runner("native", "detection", native, config, state_dict, pixel_values, None, "cpu")
