"""The benchmark runs end to end on a tiny config and writes complete, consistent JSON. Speed itself is measured by
scripts/benchmark.py, never asserted here."""

import json
from pathlib import Path

import pytest
import torch

from modeling_pvt.benchmarking import (
    PAPER_GFLOPS,
    BenchmarkSettings,
    model_statistics,
    main,
    our_classifier,
    paired_models,
    parse_args,
    peak_memory_bytes,
    run_benchmark,
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
    "compile_seconds",
}  # fmt: skip


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    folder = tmp_path_factory.mktemp("benchmark")
    main([
        "--presets", "pvt-tiny", "--config-overrides", json.dumps(TINY),
        "--tasks", "inference", "training", "backbone", "--modes", "native", "eager", "bf16", "checkpointed",
        "--batch-sizes", "2", "--resolutions", "64", "96x64", "--backbone-resolutions", "128x96",
        "--repeats", "2", "--warmup", "1", "--json", str(folder / "bench.json"), "--plot", str(folder / "bench.png"),
    ])  # fmt: skip
    assert (folder / "bench.png").stat().st_size > 0
    return json.loads((folder / "bench.json").read_text())


def test_json_has_every_setting_and_mode(results):
    rows = {(row["task"], row["mode"], row["height"], row["width"]) for row in results["measurements"]}
    expected = {("inference", mode, 64, 64) for mode in ("native", "eager", "bf16")}
    expected |= {("training", mode, 64, 64) for mode in ("native", "eager", "bf16", "checkpointed")}
    # The native model cannot run at any size but its own, nor as a backbone.
    expected |= {("inference", mode, 96, 64) for mode in ("eager", "bf16")}
    expected |= {("training", mode, 96, 64) for mode in ("eager", "bf16", "checkpointed")}
    expected |= {("backbone", mode, 128, 96) for mode in ("eager", "bf16")}
    assert rows == expected
    for row in results["measurements"]:
        assert set(row) == MEASUREMENT_FIELDS
        assert len(row["repeat_seconds"]) == 2 and row["median_seconds"] > 0 and row["peak_memory_mb"] > 0
        assert row["images_per_second"] == pytest.approx(row["batch_size"] / row["median_seconds"])
        native_ran = (row["height"], row["width"]) == (64, 64) and row["task"] != "backbone"
        assert (row["speedup_vs_native"] is not None) == native_ran


def test_fp32_paths_match_and_bf16_is_close(results):
    for row in results["measurements"]:
        limit = 0.05 if row["mode"] == "bf16" else 1e-4
        assert row["max_abs_diff_vs_fp32_eager"] <= limit, row


def test_model_statistics_and_environment(results):
    stats = results["models"]["pvt-tiny"]
    assert stats["gflops_per_image"] == pytest.approx(2 * stats["gmacs_per_image"]) and stats["gmacs_per_image"] > 0
    # Overridden dimensions are not the paper's model, so its numbers are not put next to them.
    assert stats["paper_gflops"] is None
    assert results["environment"]["device"] == "cpu" and results["environment"]["torch"] == torch.__version__


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
