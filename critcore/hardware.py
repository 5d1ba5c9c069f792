"""What this machine computes fast: bf16 support, and the matmul peak that MFU is measured against."""
from __future__ import annotations

import time
from functools import lru_cache
from pathlib import Path


@lru_cache(maxsize=1)
def native_bf16() -> bool:
    """Whether this CPU has bf16 instructions (AVX512-BF16 or AMX-BF16), where bf16 matmuls run
    about twice as fast as fp32; elsewhere bf16 is emulated and slower."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def use_bf16(device_type: str) -> bool:
    """bf16 by default: on a GPU, and on a CPU with native bf16."""
    return device_type == "cuda" or (device_type == "cpu" and native_bf16())


def matmul_peak(dtype: str = "float32", n: int = 1024, seconds: float = 2.0, device: str = "cpu") -> float:
    """The FLOP/s of square matmuls of size n in `dtype`, on the threads torch uses now: the peak
    that MFU figures divide by."""
    import torch

    a = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
    b = torch.randn(n, n, dtype=getattr(torch, dtype), device=device)
    a @ b  # warm-up
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        a @ b
        count += 1
    if device != "cpu":
        torch.cuda.synchronize()
    return 2 * n**3 * count / (time.perf_counter() - start)
