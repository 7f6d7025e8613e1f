"""The fine-tuning scripts train in bf16 by default where the CPU runs it natively and in fp32 elsewhere; --bf16
true/false decides either way, and the run's header says which and why (CPU capabilities mocked)."""

import pytest

from modeling_pvt.cpu_fast_paths import CpuCapabilities
from modeling_pvt.tasks.classification.task import ImageClassificationTask
from modeling_pvt.tasks.segmentation.task import SemanticSegmentationTask
from modeling_pvt.training import arguments
from modeling_pvt.training.arguments import parse_arguments
from modeling_pvt.training.loop import _precision

AMX = CpuCapabilities("GenuineIntel", "Xeon", "x86_64", frozenset({"avx512f", "avx512_bf16", "amx_bf16"}), "AVX512", True)
AVX2 = CpuCapabilities("AuthenticAMD", "EPYC", "x86_64", frozenset({"avx2"}), "AVX2", True)


@pytest.fixture
def cpu(monkeypatch):
    def use(capabilities):
        monkeypatch.setattr(arguments, "detect_cpu_capabilities", lambda: capabilities)
        monkeypatch.setattr(arguments.torch.accelerator, "is_available", lambda: False)

    return use


@pytest.mark.parametrize("task", [ImageClassificationTask(), SemanticSegmentationTask()], ids=["digits", "grid"])
def test_bf16_is_the_default_only_where_native(cpu, task, tmp_path):
    cpu(AMX)
    training_args = parse_arguments(["--output_dir", str(tmp_path)], task)[2]
    assert training_args.bf16 and training_args.use_cpu
    assert "default: this CPU runs bf16 natively" in _precision(training_args)
    cpu(AVX2)
    training_args = parse_arguments(["--output_dir", str(tmp_path)], task)[2]
    assert not training_args.bf16
    assert _precision(training_args).startswith("fp32 (default: this CPU has no native bf16")


def test_the_flag_decides_either_way(cpu, tmp_path):
    task = ImageClassificationTask()
    cpu(AMX)
    opted_out = parse_arguments(["--output_dir", str(tmp_path), "--bf16", "false"], task)[2]
    assert not opted_out.bf16 and _precision(opted_out) == "fp32 (--bf16 false)"
    cpu(AVX2)
    forced = parse_arguments(["--output_dir", str(tmp_path), "--bf16", "true"], task)[2]
    assert forced.bf16 and "emulated on this CPU, slower than fp32" in _precision(forced)
    fp16 = parse_arguments(["--output_dir", str(tmp_path), "--fp16", "true", "--use_cpu", "true"], task)
    assert not fp16[2].bf16
