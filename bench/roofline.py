"""Roofline accounting shared by the benches: what this CPU can do (probes), and, for one stage
of the pipeline, how close a measured run came to it.

A stage did `flops` of arithmetic and had to move at least `bytes` through memory in `seconds`.
Its bound is the slower of the two at the machine's measured limits: flops / matmul peak (of the
precision the stage ran in) or bytes / memory bandwidth; `fraction` is that bound's time over the
measured time (1.0 = on the roofline). Arithmetic is counted from the parameters a token passes
through (2 FLOP per weight forward, 6 forward and backward) plus attention where it is not
negligible (decoding over a growing context); `bytes` is the weights each pass streams and, when
decoding, the key/value cache each token reads.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from critcore.hardware import cpu_info, matmul_peak, memory_bandwidth, native_bf16, rate  # noqa: E402


def quantize_int8(model, skip: tuple[str, ...] = ()):
    """`model` with every Linear layer but those named in `skip` replaced by torch's dynamic int8
    Linear (int8 weights, each input quantized on the fly; fbgemm on x86: AVX2 and up), in place.
    critcore does not offer it: SmolLM2-135M's texts fall into loops (bench/critique_quality.py)."""
    import warnings

    import torch

    with warnings.catch_warnings():  # torch.ao.quantization's notice that torchao will take it over
        warnings.simplefilter("ignore")
        names = {name for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and name not in skip}
        return torch.ao.quantization.quantize_dynamic(model, names, dtype=torch.qint8, inplace=True)


def int8_peak(n: int = 1024, seconds: float = 2.0) -> float:
    """The FLOP/s of torch's dynamic int8 Linear (n x n) on n rows of float32 input, which it
    quantizes on the fly: the compute bound of the int8 engines."""
    import torch

    layer = quantize_int8(torch.nn.Sequential(torch.nn.Linear(n, n, bias=False)))
    x = torch.randn(n, n)
    return rate(lambda: layer(x), 2 * n**3, seconds)


def probes(seconds: float = 2.0, precisions: tuple[str, ...] = ("float32", "bfloat16")) -> dict:
    """The CPU, its matmul peak per precision (GFLOP/s) and its memory read bandwidth (GB/s),
    measured now on the threads torch uses. bf16 on a CPU without it natively is probed briefly on
    a small matrix: it only has to show how slow emulation is."""
    peaks = {}
    for p in precisions:
        emulated = p == "bfloat16" and not native_bf16()
        if p == "qint8":
            peaks[p] = round(int8_peak(seconds=seconds) / 1e9, 1)
        else:
            peaks[p] = round(matmul_peak(p, n=256 if emulated else 1024,
                                         seconds=min(seconds, 0.5) if emulated else seconds) / 1e9, 1)
    return {"cpu": cpu_info(), "matmul_peak_gflops": peaks,
            "memory_gb_s": round(memory_bandwidth(seconds=seconds) / 1e9, 2), "loadavg": list(os.getloadavg())}


def machine_line(machine: dict) -> str:
    """The probes in one line: the CPU, its flags, the instruction-set caps in force, the peaks and
    the memory bandwidth."""
    cpu = machine["cpu"]
    caps = "; capped: " + " ".join(f"{k}={v}" for k, v in cpu["isa_caps"].items()) if cpu["isa_caps"] else ""
    peaks = ", ".join(f"{k} {v:.0f}" for k, v in machine["matmul_peak_gflops"].items())
    return (f"{cpu['model']} ({', '.join(cpu['flags'])}{caps}): matmul peak GFLOP/s {peaks}; "
            f"memory {machine['memory_gb_s']:.1f} GB/s")


def stage(name: str, *, seconds: float, flops: float, bytes_: float, peak_gflops: float, memory_gb_s: float,
          throughput: float, unit: str, precision: str, **extra) -> dict:
    """One row of the roofline table."""
    compute_s, memory_s = flops / (peak_gflops * 1e9), bytes_ / (memory_gb_s * 1e9)
    bound = "compute" if compute_s >= memory_s else "memory"
    return {"stage": name, "precision": precision, "throughput": round(throughput, 2), "unit": unit,
            "seconds": round(seconds, 3), "gflops": round(flops / 1e9, 2), "gbytes": round(bytes_ / 1e9, 3),
            "achieved_gflops_s": round(flops / seconds / 1e9, 1),
            "intensity_flop_per_byte": round(flops / bytes_, 1),
            "ridge_flop_per_byte": round(peak_gflops / memory_gb_s, 1), "bound": bound,
            "bound_value": f"{peak_gflops} GFLOP/s" if bound == "compute" else f"{memory_gb_s} GB/s",
            "fraction": round(max(compute_s, memory_s) / seconds, 3), **extra}


def table(rows: list[dict]) -> str:
    """The rows as a plain-text table."""
    lines = [f"{'stage':<44}{'throughput':>20}{'GFLOP/s':>9}{'bound':>22}{'fraction':>10}"]
    for r in rows:
        what = f"{r['stage']} ({r['engine']} b{r['batch']})" if "engine" in r else f"{r['stage']} ({r['precision']})"
        lines.append(f"{what:<44}{r['throughput']:>11.2f} {r['unit']:<8}{r['achieved_gflops_s']:>9.1f}"
                     f"{r['bound'] + ' ' + r['bound_value']:>22}{r['fraction']:>10.1%}"
                     + (f"  (peer {r['peer']}: {r['peer_fraction']:.1%})" if "peer" in r else ""))
    return "\n".join(lines)
