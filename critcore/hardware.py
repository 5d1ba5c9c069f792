"""What this machine computes fast: the CPU, bf16 support, and the probes that roofline figures
divide by (the matmul peak of a precision, and the memory bandwidth)."""
from __future__ import annotations

import os
import platform
import time
from functools import lru_cache
from pathlib import Path

# The instruction-set flags that decide matmul speed, as /proc/cpuinfo names them.
SIMD_FLAGS = ("sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
              "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8", "amx_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields of /proc/cpuinfo ({} where there is none)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.split("\n\n")[0].splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields.setdefault(key.strip(), value.strip())
    return fields


# The variables that cap the instruction set of torch's own kernels, of MKL (its fp32 matmuls), of
# oneDNN (its bf16 matmuls) and of CTranslate2, as a user sets them to run as an older CPU would.
ISA_CAPS = ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA",
            "CT2_FORCE_CPU_ISA")
# oneDNN's levels below AVX512_CORE_BF16: capped at one of them, it emulates bf16 whatever the CPU has
# (measured here under ONEDNN_MAX_CPU_ISA=AVX2: 0.9 GFLOP/s in bf16, as on an AVX2 CPU).
_ONEDNN_WITHOUT_BF16 = {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI"}


def isa_caps() -> dict[str, str]:
    """The instruction-set caps set in this process's environment ({} where none is)."""
    return {name: os.environ[name] for name in ISA_CAPS if os.environ.get(name)}


def _onednn_cap() -> str:
    """oneDNN's instruction-set cap in force ("ALL" where none is set)."""
    caps = isa_caps()
    return caps.get("ONEDNN_MAX_CPU_ISA", caps.get("DNNL_MAX_CPU_ISA", "ALL")).upper()


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16), where bf16 matmuls run
    about twice as fast as fp32, and oneDNN is not capped below them; elsewhere bf16 is emulated
    (measured on an AVX2 CPU: 1 GFLOP/s against 173 in fp32)."""
    flags = set(_cpuinfo().get("flags", "").split())
    return ("avx512_bf16" in flags or "amx_bf16" in flags) and _onednn_cap() not in _ONEDNN_WITHOUT_BF16


def cpu_kind() -> str:
    """The kind of CPU that speed figures are filed under (outputs/results/bench/<kind>/): "fp32"
    where bf16 is emulated; "native-bf16-amx" where AMX runs the bf16 matmuls (762 GFLOP/s against
    250 in fp32 on a 2-core Intel Xeon, 2026-12-05) and oneDNN is not capped below it; else
    "native-bf16" (AVX512-BF16 alone: 422 against 195 on this project's first machine)."""
    if not native_bf16():
        return "fp32"
    cap = _onednn_cap()
    amx = "amx_bf16" in _cpuinfo().get("flags", "").split() and (cap in ("ALL", "DEFAULT") or "AMX" in cap)
    return "native-bf16-amx" if amx else "native-bf16"


def use_bf16(device_type: str) -> bool:
    """bf16 by default: on a GPU, and on a CPU with native bf16."""
    return device_type == "cuda" or (device_type == "cpu" and native_bf16())


def cpu_info() -> dict:
    """The CPU a measurement ran on: model, cores, its SIMD flags, the instruction-set caps in force,
    and whether bf16 is native."""
    info = _cpuinfo()
    flags = set(info.get("flags", "").split())
    return {"model": info.get("model name", platform.processor() or platform.machine()), "cores": os.cpu_count(),
            "flags": [f for f in SIMD_FLAGS if f in flags], "isa_caps": isa_caps(), "native_bf16": native_bf16()}


def matmul_peak(dtype: str = "float32", n: int = 1024, seconds: float = 2.0, device: str = "cpu") -> float:
    """The FLOP/s of square matmuls of size n in `dtype`, on the threads torch uses now: the peak
    that MFU figures divide by."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
    return rate(lambda: a @ b, 2 * n**3, seconds, device)


def rate(run, per_call: float, seconds: float, device: str = "cpu") -> float:
    """per_call (FLOPs, bytes) x the calls of `run` per second, over `seconds` after a warm-up call."""
    run()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        run()
        count += 1
    if device != "cpu":
        import torch

        torch.cuda.synchronize()
    return per_call * count / (time.perf_counter() - start)


def memory_bandwidth(mib: int = 512, seconds: float = 2.0) -> float:
    """The bytes/s at which the threads torch uses now read a float32 tensor of `mib` MiB, far
    larger than any cache (a sum over it): the bound of a step that streams the weights, such as
    decoding one token."""
    import torch

    x = torch.ones(mib * 2**20 // 4, dtype=torch.float32)
    return rate(x.sum, x.numel() * 4, seconds)


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


@lru_cache(maxsize=1)
def reuse_freed_memory() -> bool:
    """Have glibc serve tensors of up to 1 GiB from its heap, and keep what is freed there, where
    it would map fresh pages for every block over its mmap threshold (at most 32 MiB by default)
    and unmap them when freed. A forward pass's activations are such blocks, and each new page is
    a page fault and a page of zeros: MiniLM scoring 414 sequences at batch 32 took 1.5M page faults
    and 5.7 s of system time (11% of its CPU time) without this, 20K and 0.4 s with it; its training
    0.39M and 1.3 s (2%) against 0.12M and 0.6 s. The process then keeps its peak memory until it
    exits. Once per process; True where applied (Linux with glibc)."""
    import ctypes

    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc
        return False
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
