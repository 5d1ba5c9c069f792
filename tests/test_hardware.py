"""What critcore reads of the CPU it runs on: its model and flags, the probes roofline figures
divide by, the precision local critics default to, and the profile study projections use."""
import pytest
import torch

from critcore import hardware


def test_cpu_info_names_the_cpu_and_agrees_with_native_bf16():
    info = hardware.cpu_info()
    assert info["model"] and info["cores"] >= 1
    assert set(info["flags"]) <= set(hardware.SIMD_FLAGS)
    assert info["isa_caps"] == hardware.isa_caps()
    assert info["native_bf16"] == hardware.native_bf16()
    if not info["isa_caps"]:  # uncapped, the flags decide (capped: the test below)
        assert info["native_bf16"] == bool({"avx512_bf16", "amx_bf16"} & set(info["flags"]))


CAPPED = """
import json
from critcore import hardware
print(json.dumps(hardware.cpu_info()))
"""


@pytest.mark.parametrize("cap, native", [("AVX2", False), ("avx512_core_vnni", False), ("AVX512_CORE_BF16", None),
                                         ("ALL", None)])
def test_an_isa_cap_below_bf16_turns_native_bf16_off_and_is_recorded(cap, native):
    """Capped below AVX512_CORE_BF16, oneDNN emulates bf16 on any CPU (0.9 GFLOP/s measured on a
    native-bf16 EPYC under ONEDNN_MAX_CPU_ISA=AVX2), so critcore must pick fp32 there; at or above
    it, the flags decide. The caps a measurement ran under are part of its record."""
    import json
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in hardware.ISA_CAPS} | {"ONEDNN_MAX_CPU_ISA": cap}
    info = json.loads(subprocess.run([sys.executable, "-c", CAPPED], env=env, capture_output=True, text=True,
                                     check=True).stdout)
    assert info["isa_caps"] == {"ONEDNN_MAX_CPU_ISA": cap}
    flags_say = bool({"avx512_bf16", "amx_bf16"} & set(info["flags"]))  # a cap does not change the flags
    assert info["native_bf16"] == (flags_say if native is None else native)


AMX = "avx2 fma avx512f avx512_bf16 amx_tile amx_bf16"


@pytest.mark.parametrize("flags, cap, kind", [
    ("avx2 fma", None, "fp32"),
    ("avx2 fma avx512f avx512_bf16", None, "native-bf16"),
    (AMX, None, "native-bf16-amx"),
    (AMX, "avx512_core_amx", "native-bf16-amx"),
    (AMX, "AVX512_CORE_BF16", "native-bf16"),  # capped below AMX: AVX512-BF16 does the bf16 matmuls
    (AMX, "AVX2", "fp32"),
])
def test_cpu_kind_files_figures_by_what_runs_the_bf16_matmuls(monkeypatch, flags, cap, kind):
    """Figures of an AMX CPU are not filed with those of a CPU with AVX512-BF16 alone, nor those of
    either under a cap with an AVX2 CPU's (bench/run_quiet.sh writes outputs/results/bench/<kind>/)."""
    for name in hardware.ISA_CAPS:
        monkeypatch.delenv(name, raising=False)
    if cap:
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", cap)
    monkeypatch.setattr(hardware, "_cpuinfo", lambda: {"flags": flags})
    hardware.native_bf16.cache_clear()
    try:
        assert hardware.cpu_kind() == kind
    finally:
        hardware.native_bf16.cache_clear()


def test_probes_measure_something():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert hardware.memory_bandwidth(mib=64, seconds=0.05) > 1e8  # bytes/s: any machine reads 100 MB/s
        assert hardware.matmul_peak("float32", n=128, seconds=0.05) > 1e7
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------- local critics


def test_local_critic_precision_follows_the_cpu_and_explicit_options_win(monkeypatch):
    from critcore.llm import local

    for native, default in ((True, "bfloat16"), (False, "float32")):
        monkeypatch.setattr(local, "use_bf16", lambda device, native=native: native)
        assert local.LocalBackend("smollm2").dtype == default
        pinned = local.LocalBackend("smollm2", dtype="float32")
        assert pinned.dtype == "float32" and pinned.params["dtype"] == "float32"  # a pinned params file keeps its keys


def test_batches_are_longest_first_and_cover_every_text():
    from critcore.llm import LocalBackend

    b = LocalBackend("smollm2", batch_size=2)
    batches = b.batches([3, 9, 1, 7, 5])
    assert batches == [[1, 3], [4, 0], [2]]


# ---------------------------------------------------------------- study projections


def test_projection_takes_the_profile_of_the_cpu_kind_and_scales_by_the_peak(monkeypatch, shared_data, tmp_path):
    from critcore import config, hardware as hw
    from critcore.studies import budget
    from critcore.studies.runner import _find_params

    monkeypatch.setenv("CRITCORE_CACHE", str(tmp_path))  # an empty critique cache: every critique counts
    path = _find_params("params/rq1_cpu.yaml")
    raw = config.read_yaml(path)
    cfg = config.resolve(config.schema_for(raw), raw, where=str(path))
    for native, kind in ((True, "native-bf16"), (False, "fp32")):
        monkeypatch.setattr(hw, "native_bf16", lambda native=native: native)
        assert budget.profile_kind() == kind
    profile = budget.PROFILES["fp32"]
    one = {x.step: x.seconds for x in budget.project(cfg, profile, 1.0)}
    two = {x.step: x.seconds for x in budget.project(cfg, profile, 2.0)}
    assert set(one) >= {"critiques smollm2", "critiques gemma3-270m", "train minilm", "score minilm"}
    assert all(two[k] == pytest.approx(one[k] / 2) for k in one)  # twice the peak, half the time
    slower = {x.step: x.seconds for x in budget.project(cfg, budget.PROFILES["native-bf16"], 1.0)}
    assert one["critiques smollm2"] > slower["critiques smollm2"]  # fp32 critiques here, bf16 there
    text = budget.projection_text(cfg)
    assert "'fp32' profile" in text and "GFLOP/s" in text and "total" in text


REUSE = """
import resource, sys, torch
from critcore.hardware import reuse_freed_memory
applied = reuse_freed_memory() if sys.argv[1] == "on" else None
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(16 * 2**20)  # 64 MiB: over glibc's largest mmap threshold
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(applied, sum(faults[-10:]))
"""


def test_reuse_freed_memory_saves_the_page_faults_of_large_tensors():
    """Without it, every 64 MiB tensor faults in its 16K fresh pages; with it, the heap grows for
    the first few (how many depends on where torch's aligned blocks land: 1 to 7 seen) and then
    serves the freed blocks again: the last 10 of 30 fault in less than one block's pages."""
    import subprocess
    import sys

    def faults(mode: str) -> tuple[str, int]:
        out = subprocess.run([sys.executable, "-c", REUSE, mode], capture_output=True, text=True, check=True).stdout
        applied, n = out.split()
        return applied, int(n)

    applied, on = faults("on")
    if applied != "True":
        pytest.skip("not glibc: mallopt is not there")
    _, off = faults("off")
    assert off > 10 * 16_000 and on < 16_000, (on, off)
