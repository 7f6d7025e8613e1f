"""The benchmark's table and plot."""

from pathlib import Path

from ...cli import count_of


def _number(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _scientific(value) -> str:
    return "–" if value is None else f"{value:.1e}"


def _other_fast_paths(results: dict) -> list[str]:
    """Variants whose process ran other fast paths than this one reports: forced modes, or another outcome of the
    training backend's measurement."""
    chosen = (results["environment"]["cpu_fast_paths"] or "").splitlines()[-1:]
    return sorted({
        f"{row['mode']} ({row['task']}) ran with: {row['fast_paths']}"
        for row in results["measurements"]
        if row["fast_paths"] and row["mode"] != "native" and [row["fast_paths"]] != chosen
    })  # fmt: skip


def format_table(results: dict) -> str:
    """Markdown tables: model statistics, then one row per measured variant."""
    environment = results["environment"]
    peak = environment.get("gemm_fp32_gflops_per_second")
    lines = [
        f"CPU: {environment['cpu']}; {count_of(environment['torch_threads'], 'thread')}; GPU: {environment['gpu']}; "
        f"background load: {count_of(environment['background_load_processes'], 'busy process', 'busy processes')}; "
        f"OMP_WAIT_POLICY: {environment['omp_wait_policy']}",
        *([environment["cpu_fast_paths"].splitlines()[-1]] if environment["cpu_fast_paths"] else []),
        *_other_fast_paths(results),
        *([f"Measured GEMM peak (fp32 {environment['gemm_size']}³ matmul): {peak:.0f} GFLOP/s"] if peak else []),
        *results["notes"],
        "",
        "| preset | params (M) | paper params (M) | GFLOPs (MACs) at 224² | paper GFLOPs |",
        "|---|---|---|---|---|",
    ]
    for preset, stats in results["models"].items():
        lines.append(
            f"| {preset} | {stats['parameters_m']:.1f} | {_number(stats['paper_parameters_m'], 1)} | "
            f"{stats['gmacs_per_image']:.3g} | {_number(stats['paper_gflops'], 1)} |"
        )
    lines += [
        "",
        (
            "| preset | task | mode | batch | size | img/s | ms/img | × native | × native (best) | × our eager "
            "| peak MB/img | max abs Δ vs fp32 eager | GFLOP/s |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["measurements"]:
        lines.append(
            f"| {row['preset']} | {row['task']} | {row['mode']} | {row['batch_size']} | {row['height']}×{row['width']} | "
            f"{row['images_per_second']:.2f} | {row['seconds_per_image'] * 1e3:.1f} | {_number(row['speedup_vs_native'])} | "
            f"{_number(row['best_speedup_vs_native'])} | "
            f"{_number(row['speedup_vs_eager'])} | {_number(row['peak_memory_mb_per_image'], 1)} | "
            f"{_scientific(row['max_abs_diff_vs_fp32_eager'])} | "
            f"{_number(row['achieved_gflops_per_second'], 1)} |"
        )
    for agreement in results["agreement"]:
        errors = agreement["max_probability_error_vs_fp32_eager"]
        shares = ", ".join(
            f"{mode} {share:.1%} (max |Δp| {errors[mode]:.1e})"
            for mode, share in agreement["agreement_with_fp32_eager"].items()
        )
        lines += [
            "",
            (
                f"Top-1 agreement with fp32 eager, {agreement['model']}, {agreement['eval_images']} held-out digits "
                f"(fp32 eager accuracy {agreement['fp32_eager_accuracy']:.1%}; int8-static calibrated on "
                f"{agreement['calibration_images']} training images): {shares}"
            ),
        ]
    lines += ["", "Modes: " + "; ".join(f"{mode} = {text}" for mode, text in results["modes"].items())]
    lines += [f"Attention of bf16/compile/checkpointed: {environment['attention_of_other_modes']}."]
    lines += [
        f"Dense tasks: {environment['segmentation_model']} for segmentation, "
        f"{environment.get('detection_model', 'PvtForObjectDetection')} for detection; native rows of the backbone task are "
        "transformers.PvtModel built for that (square) size, compared by time only. GFLOP/s: FlopCounterMode "
        "forward FLOPs (x3 for training) per second."
    ]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [row for row in results["measurements"] if row["task"] != "backbone"]
    labels = [f"{row['preset']}\n{row['task']}\nb{row['batch_size']} {row['height']}" for row in rows]
    figure, axis = plt.subplots(figsize=(max(6, len(rows) * 0.75), 4.5))
    axis.bar(range(len(rows)), [row["images_per_second"] for row in rows])
    axis.set_xticks(range(len(rows)), [f"{row['mode']}\n{label}" for row, label in zip(rows, labels)], fontsize=6)
    axis.set_ylabel("images / second")
    environment = results["environment"]
    # A throughput figure means nothing without the machine it came from.
    machine = environment["cpu"] if environment["device"] == "cpu" else environment["gpu"]
    threads = count_of(environment["torch_threads"], "thread")
    axis.set_title(f"PVT throughput: {machine}, {threads}", fontsize=8, wrap=True)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path
