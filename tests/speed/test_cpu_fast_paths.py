"""The per-machine choice of CPU fast paths, decided from mocked CPU capabilities and mocked measurements, and
fast_linear following it."""

import dataclasses

import pytest
import torch

from modeling_pvt import cpu_fast_paths
from modeling_pvt.cpu_fast_paths import (
    ATEN,
    ONEDNN,
    CpuCapabilities,
    choose_fast_paths,
    isa_caps_from,
    read_cpuinfo,
)
from modeling_pvt.modeling_pvt import fast_linear

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz
flags\t\t: fpu sse2 avx avx2 fma avx512f avx512bw avx512_vnni
processor\t: 1
vendor_id\t: GenuineIntel
"""
ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 243.75
Features\t: fp asimd asimddp bf16 i8mm
CPU implementer\t: 0x41
"""


def capabilities(
    vendor="GenuineIntel", flags=("avx2", "avx512f"), torch_capability="AVX512", onednn=True, arch="x86_64", caps=()
):
    return CpuCapabilities(vendor, "test CPU", arch, frozenset(flags), torch_capability, onednn, caps)


def never_measured():
    raise AssertionError("the capabilities alone decide here; nothing should be measured")


def equal_times():
    return {ONEDNN: 1.0, ATEN: 1.0}


def test_reads_x86_and_arm_cpuinfo():
    assert read_cpuinfo(X86_CPUINFO) == (
        "GenuineIntel",
        "Intel(R) Xeon(R) Gold 6248 CPU @ 2.50GHz [family 6, model 85]",
        frozenset({"fpu", "sse2", "avx", "avx2", "fma", "avx512f", "avx512bw", "avx512_vnni"}),
    )
    vendor, _, flags = read_cpuinfo(ARM_CPUINFO)
    assert vendor == "0x41" and {"bf16", "asimddp"} <= flags


def test_xeon_without_bf16_gets_int8_and_a_measured_training_backend():
    xeon = capabilities(flags=("avx2", "avx512f", "avx512_vnni"))
    paths = choose_fast_paths(xeon, lambda: {ONEDNN: 1.0, ATEN: 2.0})
    assert (paths.inference_linear, paths.training_linear, paths.bf16, paths.int8) == (ONEDNN, ONEDNN, False, True)
    assert paths.training_reason.startswith("measured")
    assert choose_fast_paths(xeon, lambda: {ONEDNN: 2.0, ATEN: 1.0}).training_linear == ATEN


def test_only_a_clear_win_goes_to_the_private_op():
    assert choose_fast_paths(capabilities(), lambda: {ONEDNN: 0.9, ATEN: 1.0}).training_linear == ATEN
    assert choose_fast_paths(capabilities(), lambda: {ONEDNN: 0.8, ATEN: 1.0}).training_linear == ONEDNN


def test_native_bf16_only_with_avx512_bf16_or_amx():
    assert not choose_fast_paths(capabilities(flags=("avx512f", "avx512bw")), lambda: {ONEDNN: 1, ATEN: 1}).bf16
    for flag in ("avx512_bf16", "amx_bf16"):
        paths = choose_fast_paths(capabilities(flags=("avx512f", "avx512_vnni", flag)), lambda: {ONEDNN: 1, ATEN: 1})
        # Where bf16 is native it is the faster low-precision path, so int8 is not the recommendation there.
        assert paths.bf16 and not paths.int8


def test_isa_caps_are_read_from_the_environment():
    environment = {"DNNL_MAX_CPU_ISA": "avx2", "MKL_ENABLE_INSTRUCTIONS": "AVX2", "ATEN_CPU_CAPABILITY": ""}
    assert isa_caps_from(environment) == (("oneDNN", "AVX2"), ("MKL", "AVX2"))
    # The current name wins over the older one.
    assert isa_caps_from({"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_VNNI", "DNNL_MAX_CPU_ISA": "AVX2"}) == (
        ("oneDNN", "AVX512_CORE_VNNI"),
    )
    assert isa_caps_from({}) == ()


@pytest.mark.parametrize(
    ("cap", "bf16", "vnni"),
    [
        ("", True, True),
        ("AVX512_CORE_AMX", True, True),
        ("AVX512_CORE_BF16", True, True),
        # A Cascade Lake's oneDNN: VNNI but no bf16 arithmetic (bf16 would be emulated).
        ("AVX512_CORE_VNNI", False, True),
        ("AVX2_VNNI", False, True),
        # A Skylake's or Haswell's: neither.
        ("AVX512_CORE", False, False),
        ("AVX2", False, False),
    ],
)
def test_a_capped_onednn_counts_as_the_older_cpu(cap, bf16, vnni):
    emerald_rapids = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    cpu = capabilities(flags=emerald_rapids, caps=isa_caps_from({"ONEDNN_MAX_CPU_ISA": cap}))
    paths = choose_fast_paths(cpu, lambda: {ONEDNN: 1, ATEN: 1})
    assert (cpu.native_bf16, cpu.int8_dot_product, paths.bf16) == (bf16, vnni, bf16)
    # Static int8 is the fast path wherever bf16 is not native, with 8-bit weights on VNNI and 7-bit without.
    assert paths.int8 == (not bf16)
    assert (f"oneDNN capped at {cap}" in cpu.summary()) == bool(cap)


def test_int8_is_recommended_without_vnni_only_where_onednn_runs():
    avx2 = capabilities(flags=("avx2",), torch_capability="AVX2")
    assert choose_fast_paths(avx2, equal_times).int8
    # Forcing the fp32 linear backend leaves the int8 recommendation to the CPU.
    assert choose_fast_paths(avx2, never_measured, override=ATEN).int8
    arm = capabilities(vendor="0x41", flags=("asimd",), torch_capability="DEFAULT", arch="aarch64")
    assert not choose_fast_paths(arm, never_measured).int8
    assert choose_fast_paths(dataclasses.replace(arm, flags=frozenset({"asimd", "asimddp"})), never_measured).int8


def test_amd_epyc_trains_on_onednn_without_measuring():
    epyc = capabilities(vendor="AuthenticAMD", flags=("avx2", "avx512f", "avx512_bf16"))
    paths = choose_fast_paths(epyc, never_measured)
    assert (paths.inference_linear, paths.training_linear, paths.training_reason) == (ONEDNN, ONEDNN, "capabilities")


def test_without_onednn_or_vector_units_everything_uses_aten():
    for cpu in (capabilities(onednn=False), capabilities(torch_capability="DEFAULT", flags=())):
        paths = choose_fast_paths(cpu, never_measured)
        assert (paths.inference_linear, paths.training_linear) == (ATEN, ATEN)
    arm = capabilities(vendor="0x41", flags=("asimd", "bf16"), torch_capability="DEFAULT", arch="aarch64")
    assert choose_fast_paths(arm, never_measured).inference_linear == ATEN


def test_override_wins_and_is_checked():
    paths = choose_fast_paths(capabilities(), never_measured, override=ATEN)
    assert (paths.inference_linear, paths.training_linear, paths.training_reason) == (ATEN, ATEN, "override")
    with pytest.raises(ValueError, match="not a linear backend"):
        choose_fast_paths(capabilities(), never_measured, override="mkl")
    with pytest.raises(ValueError, match="no oneDNN"):
        choose_fast_paths(capabilities(onednn=False), never_measured, override=ONEDNN)


def test_measurement_times_both_backends():
    seconds = cpu_fast_paths.measure_training_linears(mlps=((64, 8, 4), (16, 16, 2)), repeats=1)
    assert set(seconds) == {ONEDNN, ATEN} and all(0 < value < 60 for value in seconds.values())


def test_description_names_the_cpu_and_the_choice(monkeypatch, request):
    monkeypatch.setattr(cpu_fast_paths, "detect_cpu_capabilities", lambda: capabilities(flags=("avx512_vnni",)))
    monkeypatch.setenv(cpu_fast_paths.OVERRIDE_VARIABLE, ATEN)
    # Choices cached earlier in this process were made for the real CPU, and this one must not outlive the test.
    cpu_fast_paths._fast_paths.cache_clear()
    request.addfinalizer(cpu_fast_paths._fast_paths.cache_clear)
    text = cpu_fast_paths.describe_cpu_fast_paths()
    assert len(text.splitlines()) == 2 and "test CPU" in text and "avx512_vnni" in text
    assert "training=aten [override]" in text and "bf16 not native" in text and "int8" in text


@pytest.mark.parametrize("backend, node", [(ATEN, "AddmmBackward0"), (ONEDNN, "_OneDnnLinearFunctionBackward")])
def test_fast_linear_follows_the_chosen_training_backend(monkeypatch, backend, node):
    monkeypatch.setenv(cpu_fast_paths.OVERRIDE_VARIABLE, backend)
    linear = torch.nn.Linear(8, 16)
    output = fast_linear(torch.randn(2, 5, 8, requires_grad=True), linear)
    names = []
    function = output.grad_fn
    while function is not None:
        names.append(type(function).__name__)
        function = function.next_functions[0][0] if function.next_functions else None
    assert node in names, names
