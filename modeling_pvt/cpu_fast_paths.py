"""Which CPU fast paths this machine gets, chosen at run time from what the CPU can do natively.

The choices differ by CPU kind: oneDNN's linear kernel fuses bias and GELU into the GEMM and wins for inference on
x86 CPUs with AVX2/AVX-512, but for training (forward + input gradient in oneDNN, weight gradient in MKL) the winner
varies between CPU generations, so there a short measurement decides, once per process and thread count. bfloat16
is only offered where the CPU computes it natively (AVX512_BF16 or AMX): elsewhere oneDNN emulates it and it runs
slower than fp32. Where bf16 is not native, static int8 on oneDNN (`modeling_pvt.quantization.quantize_onednn`,
calibrated on sample images) is the recommended fast inference path, with or without int8 dot products (VNNI).
The libraries' ISA caps (`ONEDNN_MAX_CPU_ISA`, `MKL_ENABLE_INSTRUCTIONS`, `ATEN_CPU_CAPABILITY`) count as the CPU's
limits: under them a newer CPU computes like an older one, which is also how other CPU kinds are measured on one.

Hub remote code (imported by `modeling_pvt.py`): only the standard library and torch.
"""

import functools
import os
import platform
import time
from dataclasses import dataclass

import torch

ONEDNN, ATEN = "onednn", "aten"
# Where a measurement decides, oneDNN must win clearly. The GEMM-only measurement understates what oneDNN costs in a
# whole training step: on a 2-core Xeon (family 6, model 207) the two were within 10% there, yet whole steps ran at
# 0.92x native with oneDNN and 1.14x with ATen, and a busy moment during the measurement once favoured oneDNN by 5%.
ONEDNN_MARGIN = 0.85
# Which linear backend to use regardless of the CPU: "onednn" or "aten" (for A/B measurements and bug reports).
OVERRIDE_VARIABLE = "PVT_LINEAR_BACKEND"
# The variables that cap each library's instruction set, per library (oneDNN's older name is DNNL_).
ISA_CAP_VARIABLES = (
    ("oneDNN", ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")),
    ("MKL", ("MKL_ENABLE_INSTRUCTIONS",)),
    ("ATen", ("ATEN_CPU_CAPABILITY",)),
)
# oneDNN ISA levels below the first with int8 dot products (VNNI) and below the first with bf16 arithmetic.
ONEDNN_ISAS_WITHOUT_VNNI = frozenset({"SSE41", "AVX", "AVX2", "AVX512_CORE"})
ONEDNN_ISAS_WITHOUT_BF16 = ONEDNN_ISAS_WITHOUT_VNNI | {"AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE_VNNI"}


@dataclass(frozen=True)
class CpuCapabilities:
    vendor: str
    model_name: str
    architecture: str
    flags: frozenset[str]
    # torch.backends.cpu.get_cpu_capability(): the vector ISA ATen's kernels were dispatched to ("AVX512", "AVX2").
    torch_capability: str
    has_onednn_linear: bool
    # ((library, ISA), ...) for each library whose instruction set is capped in this process's environment.
    isa_caps: tuple[tuple[str, str], ...] = ()

    @property
    def is_x86(self) -> bool:
        return self.architecture in ("x86_64", "amd64", "i686")

    @property
    def onednn_isa_cap(self) -> str:
        return dict(self.isa_caps).get("oneDNN", "").upper()

    @property
    def native_bf16(self) -> bool:
        # aarch64 lists BF16 instructions as "bf16" among its Features.
        has_bf16 = bool(self.flags & {"avx512_bf16", "amx_bf16", "bf16"})
        return has_bf16 and self.onednn_isa_cap not in ONEDNN_ISAS_WITHOUT_BF16

    @property
    def int8_dot_product(self) -> bool:
        has_dot_products = bool(self.flags & {"avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm"})
        return has_dot_products and self.onednn_isa_cap not in ONEDNN_ISAS_WITHOUT_VNNI

    def summary(self) -> str:
        features = [flag for flag in ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16",
                                      "amx_int8", "asimddp", "bf16") if flag in self.flags]  # fmt: skip
        caps = "".join(f"; {library} capped at {isa}" for library, isa in self.isa_caps)
        return f"{self.model_name} ({self.vendor}; {', '.join(features) or 'no AVX2/AVX-512/VNNI/bf16'}{caps})"


@dataclass(frozen=True)
class FastPaths:
    inference_linear: str
    training_linear: str
    bf16: bool
    int8: bool
    # Why the training backend was chosen: "capabilities", "measured (oneDNN x.x ms, ATen y.y ms)" or "override".
    training_reason: str


def read_cpuinfo(text: str | None = None) -> tuple[str, str, frozenset[str]]:
    """(vendor, model name, flags) from /proc/cpuinfo (x86 `flags`, aarch64 `Features`); empty where unavailable."""
    if text is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            text = ""
    fields = {}
    for line in text.splitlines():
        key, separator, value = line.partition(":")
        if separator and key.strip() not in fields:
            fields[key.strip()] = value.strip()
    vendor = fields.get("vendor_id") or fields.get("CPU implementer", "")
    model_name = fields.get("model name") or fields.get("Model name") or platform.processor() or platform.machine()
    if "cpu family" in fields and "model" in fields:
        # Virtual machines often show a generic name ("Intel(R) Xeon(R) Processor"); the model number tells apart
        # generations with different fast paths.
        model_name += f" [family {fields['cpu family']}, model {fields['model']}]"
    return vendor, model_name, frozenset((fields.get("flags") or fields.get("Features", "")).split())


@functools.cache
def detect_cpu_capabilities() -> CpuCapabilities:
    vendor, model_name, flags = read_cpuinfo()
    return CpuCapabilities(
        vendor=vendor,
        model_name=model_name,
        architecture=platform.machine().lower(),
        flags=flags,
        torch_capability=torch.backends.cpu.get_cpu_capability(),
        has_onednn_linear=torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise"),
        isa_caps=isa_caps_from(os.environ),
    )


def isa_caps_from(environment) -> tuple[tuple[str, str], ...]:
    caps = []
    for library, variables in ISA_CAP_VARIABLES:
        isa = next((environment[name] for name in variables if environment.get(name)), None)
        if isa:
            caps.append((library, isa.upper()))
    return tuple(caps)


def inference_linear_backend(capabilities: CpuCapabilities) -> str:
    if not capabilities.has_onednn_linear:
        return ATEN
    # Fusing bias and GELU saves whole passes over the activations on any vector ISA; measured 1.46x native on an
    # AVX-512 Xeon (1.03x without it) and faster on AMD EPYC. Without AVX2, oneDNN has no tuned kernels to offer.
    return ONEDNN if capabilities.is_x86 and capabilities.torch_capability in ("AVX2", "AVX512") else ATEN


def training_linear_backend(capabilities: CpuCapabilities, measure) -> tuple[str, str]:
    """(backend, reason). `measure()` -> {"onednn": seconds, "aten": seconds} is only called when the capabilities
    do not decide: the input-gradient GEMM is about 2x faster in oneDNN on AMD EPYC, but on Intel Xeons the two
    libraries are close and the order changes between generations."""
    if inference_linear_backend(capabilities) == ATEN:
        return ATEN, "capabilities"
    if capabilities.vendor == "AuthenticAMD":
        return ONEDNN, "capabilities"
    seconds = measure()
    backend = ONEDNN if seconds[ONEDNN] <= ONEDNN_MARGIN * seconds[ATEN] else ATEN
    return backend, f"measured (oneDNN {seconds[ONEDNN] * 1e3:.1f} ms, ATen {seconds[ATEN] * 1e3:.1f} ms)"


def check_override(override: str, capabilities: CpuCapabilities) -> str:
    if override not in (ONEDNN, ATEN):
        raise ValueError(f"{OVERRIDE_VARIABLE}={override!r} is not a linear backend; use {ONEDNN!r} or {ATEN!r}.")
    if override == ONEDNN and not capabilities.has_onednn_linear:
        raise ValueError(f"{OVERRIDE_VARIABLE}=onednn, but this PyTorch has no oneDNN linear kernel; unset it.")
    return override


def choose_fast_paths(capabilities: CpuCapabilities, measure, override: str | None = None) -> FastPaths:
    if override:
        check_override(override, capabilities)
        inference, (training, reason) = override, (override, "override")
    else:
        inference, (training, reason) = (
            inference_linear_backend(capabilities),
            training_linear_backend(capabilities, measure),
        )
    return FastPaths(
        inference_linear=inference,
        training_linear=training,
        bf16=capabilities.native_bf16,
        # Static int8 beat fp32 with and without VNNI (PVT-Small on oneDNN capped to AVX2: 1.61x native against
        # 1.23x for fp32) where oneDNN has vector kernels; elsewhere only where the CPU has int8 dot products. Read
        # from the capabilities: forcing the fp32 linear backend says nothing about the int8 kernels.
        int8=not capabilities.native_bf16
        and (capabilities.int8_dot_product or inference_linear_backend(capabilities) == ONEDNN),
        training_reason=reason,
    )


# (rows, features, ratio) of the four stages' MLPs (C -> ratio*C -> C) in a PVT-Small training step at batch 2, 224²:
# one stage alone misleads, as the winner differs between the thin early stages and the wide late ones.
MEASURED_MLPS = ((6272, 64, 8), (1568, 128, 8), (392, 320, 4), (100, 512, 4))


def measure_training_linears(mlps=MEASURED_MLPS, repeats: int = 5) -> dict[str, float]:
    """Seconds of one training step's GEMMs for the MLPs (rows, features, ratio) on each backend, best of `repeats`,
    the two backends interleaved. oneDNN: forward (bias fused) and input gradient in oneDNN, weight gradient in MKL,
    as `_OneDnnLinearFunction` runs them; ATen: what autograd runs for `F.linear` (addmm, mm, mm)."""
    generator = torch.Generator().manual_seed(0)
    tensors = [
        (torch.randn(rows, n_in, generator=generator), torch.randn(n_out, n_in, generator=generator),
         torch.randn(n_out, generator=generator), torch.randn(rows, n_out, generator=generator))
        for rows, features, ratio in mlps
        for n_in, n_out in ((features, ratio * features), (ratio * features, features))
    ]  # fmt: skip
    linear_pointwise = torch.ops.mkldnn._linear_pointwise

    def onednn():
        for inputs, weight, bias, grad in tensors:
            linear_pointwise(inputs, weight, bias, "none", [], "")
            linear_pointwise(grad, weight.t().contiguous(), None, "none", [], "")
            grad.t().mm(inputs), grad.sum(0)

    def aten():
        for inputs, weight, bias, grad in tensors:
            torch.addmm(bias, inputs, weight.t())
            grad.mm(weight)
            grad.t().mm(inputs), grad.sum(0)

    best = {ONEDNN: float("inf"), ATEN: float("inf")}
    with torch.no_grad():
        for round_index in range(repeats + 1):
            for name, step in ((ONEDNN, onednn), (ATEN, aten)):
                started = time.perf_counter()
                step()
                # Round 0 only warms up the caches and oneDNN's kernel cache.
                if round_index:
                    best[name] = min(best[name], time.perf_counter() - started)
    return best


@functools.cache
def _fast_paths(num_threads: int, override: str | None) -> FastPaths:
    return choose_fast_paths(detect_cpu_capabilities(), measure_training_linears, override)


def cpu_fast_paths() -> FastPaths:
    """This machine's choice, measured at most once per thread count (the GEMM that wins can change with it)."""
    return _fast_paths(torch.get_num_threads(), os.environ.get(OVERRIDE_VARIABLE) or None)


def cpu_inference_linear_backend() -> str:
    """The inference choice alone: it needs no measurement, so inference never pays for one."""
    return _inference_backend(os.environ.get(OVERRIDE_VARIABLE) or None)


@functools.cache
def _inference_backend(override: str | None) -> str:
    capabilities = detect_cpu_capabilities()
    return check_override(override, capabilities) if override else inference_linear_backend(capabilities)


def describe_cpu_fast_paths() -> str:
    """Two lines for logs: the CPU and what was chosen on it."""
    capabilities, paths = detect_cpu_capabilities(), cpu_fast_paths()
    bf16 = "bf16 native (use it)" if paths.bf16 else "bf16 not native (emulated, slower than fp32: not used)"
    int8 = "; int8 recommended for inference (static, oneDNN: modeling_pvt.speed.quantization.quantize_onednn)" if paths.int8 else ""
    # Read by OpenMP when torch was imported; spinning waits collapse under contention (scripts set PASSIVE).
    waiting = os.environ.get("OMP_WAIT_POLICY", "unset: spinning, slow on a busy machine").lower()
    threads = torch.get_num_threads()
    return (
        f"CPU: {capabilities.summary()}, {threads} thread{'' if threads == 1 else 's'}, OpenMP wait policy {waiting}\n"
        f"fast paths: linear inference={paths.inference_linear}, training={paths.training_linear} "
        f"[{paths.training_reason}]; {bf16}{int8}"
    )
