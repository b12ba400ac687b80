"""GPU samplers without GPUs: a fake ``pynvml`` and ``amdsmi`` (monkeypatched module
objects), fake ``nvidia-smi`` / ``amd-smi`` / ``rocm-smi`` executables, and absent ones."""

from __future__ import annotations

import os
import shutil
import stat
import sys
import types
from pathlib import Path

import pytest

from infermeter.telemetry import amd as amd_mod
from infermeter.telemetry.amd import AmdSmiCliSampler, AmdSmiLibSampler, RocmSmiSampler
from infermeter.telemetry.base import MIB
from infermeter.telemetry.gpu import open_gpu_samplers
from infermeter.telemetry.nvidia import NvidiaSmiSampler, NvmlSampler
from infermeter.telemetry.session import TelemetrySession

FIX = Path(__file__).resolve().parents[2] / "fixtures" / "telemetry"
GIB = 1024**3
RESERVED = 480 * MIB


class NVMLError(Exception):
    pass


def fake_pynvml(*, v2: bool = True, v2_call_fails: bool = False, energy: bool = True,
                procs: tuple = ((4242, 30 * GIB), (7, None))) -> types.ModuleType:
    """An NVML with one 80 GiB GPU holding 30 GiB for a process plus 480 MiB reserved."""
    nv = types.ModuleType("pynvml")
    nv.calls = []
    nv.NVMLError = NVMLError
    total, used_v2 = 80 * GIB, 30 * GIB

    class Mem:
        def __init__(self, **kw):
            self.__dict__.update(kw)

    def get_memory_info(handle, version=None):
        nv.calls.append(("memory", version))
        if version is None:  # v1: used counts the reserved memory
            return Mem(total=total, free=total - used_v2 - RESERVED, used=used_v2 + RESERVED)
        if v2_call_fails:
            raise NVMLError("Function Not Found")
        assert version == nv.nvmlMemory_v2
        return Mem(version=version, total=total, reserved=RESERVED, free=total - used_v2 - RESERVED, used=used_v2)

    nv.nvmlInit = lambda: nv.calls.append(("init",))
    nv.nvmlShutdown = lambda: nv.calls.append(("shutdown",))
    nv.nvmlDeviceGetCount = lambda: 1
    nv.nvmlSystemGetDriverVersion = lambda: "550.90.07"
    nv.nvmlDeviceGetHandleByIndex = lambda i: f"handle{i}"
    nv.nvmlDeviceGetName = lambda h: b"NVIDIA H100 80GB HBM3"  # bytes in some versions
    nv.nvmlDeviceGetUUID = lambda h: "GPU-0000"
    nv.nvmlDeviceGetMemoryInfo = get_memory_info
    nv.nvmlDeviceGetUtilizationRates = lambda h: Mem(gpu=87, memory=55)
    nv.nvmlDeviceGetPowerUsage = lambda h: 612345  # mW

    def energy_fn(h):
        if not energy:
            raise NVMLError("Not Supported")
        return 123_456_789  # mJ

    nv.nvmlDeviceGetTotalEnergyConsumption = energy_fn
    nv.nvmlDeviceGetComputeRunningProcesses = lambda h: [Mem(pid=p, usedGpuMemory=m) for p, m in procs]
    if v2:
        nv.nvmlMemory_v2 = 0x02000028
    return nv


def test_nvml_uses_the_v2_memory_structure(monkeypatch):
    nv = fake_pynvml()
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    s = NvmlSampler()
    avail = s.probe()
    assert avail.available, avail.reason
    (sample,) = s.sample()
    assert ("memory", nv.nvmlMemory_v2) in nv.calls
    assert sample["mem_api"] == "nvml:v2"
    assert sample["mem_used_bytes"] == 30 * GIB  # not v1's used, which adds the 480 MiB reserved
    assert sample["mem_reserved_bytes"] == RESERVED
    assert sample["mem_total_bytes"] == 80 * GIB
    assert sample["name"] == "NVIDIA H100 80GB HBM3"
    assert sample["util_pct"] == 87.0 and sample["mem_util_pct"] == 55.0
    assert sample["power_w"] == pytest.approx(612.345)
    assert sample["energy_j"] == pytest.approx(123456.789)
    assert sample["processes"] == [{"pid": 4242, "used_bytes": 30 * GIB}, {"pid": 7, "used_bytes": None}]
    assert avail.detail["driver"] == "550.90.07"
    s.close()
    assert ("shutdown",) in nv.calls


@pytest.mark.parametrize("kind", ["binding-without-v2", "driver-without-v2"])
def test_nvml_falls_back_to_v1_and_says_so(monkeypatch, kind):
    nv = fake_pynvml(v2=kind != "binding-without-v2", v2_call_fails=kind == "driver-without-v2", energy=False)
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    s = NvmlSampler()
    assert s.probe().available
    (sample,) = s.sample()
    assert sample["mem_api"] == "nvml:v1"
    assert sample["mem_used_bytes"] == 30 * GIB + RESERVED
    assert "mem_reserved_bytes" not in sample
    assert "energy_j" not in sample  # NOT_SUPPORTED once: never asked again
    assert s.describe()["gpus"][0]["energy"] is False


def test_nvml_absent_or_broken_is_not_available(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import raises ImportError
    a = NvmlSampler().probe()
    assert not a.available and "nvidia-ml-py" in a.reason
    nv = fake_pynvml()

    def no_driver():
        raise NVMLError("Driver Not Loaded")

    nv.nvmlInit = no_driver
    monkeypatch.setitem(sys.modules, "pynvml", nv)
    a = NvmlSampler().probe()
    assert not a.available and "Driver Not Loaded" in a.reason
    nv2 = fake_pynvml()
    nv2.nvmlDeviceGetCount = lambda: 0
    monkeypatch.setitem(sys.modules, "pynvml", nv2)
    a = NvmlSampler().probe()
    assert not a.available and "no NVIDIA GPU" in a.reason


def test_amdsmi_that_fails_to_import_any_way_is_not_available(monkeypatch):
    def boom(name):
        raise OSError("libamd_smi.so: cannot open shared object file")

    monkeypatch.setattr(amd_mod.importlib, "import_module", boom)
    a = AmdSmiLibSampler().probe()
    assert not a.available and "libamd_smi.so" in a.reason


def test_amdsmi_library(monkeypatch):
    lib = types.ModuleType("amdsmi")
    lib.AmdSmiInitFlags = types.SimpleNamespace(INIT_AMD_GPUS=2)
    lib.AmdSmiMemoryType = types.SimpleNamespace(VRAM=0)
    lib.amdsmi_init = lambda flags=None: None
    lib.amdsmi_shut_down = lambda: None
    lib.amdsmi_get_processor_handles = lambda: ["h0"]
    lib.amdsmi_get_gpu_asic_info = lambda h: {"market_name": "AMD Instinct MI300X"}
    lib.amdsmi_get_gpu_memory_usage = lambda h, t: 150 * GIB
    lib.amdsmi_get_gpu_memory_total = lambda h, t: 192 * GIB
    lib.amdsmi_get_gpu_activity = lambda h: {"gfx_activity": 91, "umc_activity": 40, "mm_activity": "N/A"}
    lib.amdsmi_get_power_info = lambda h: {"current_socket_power": "N/A", "average_socket_power": 640}
    lib.amdsmi_get_energy_count = lambda h: {"power": 2_000_000, "counter_resolution": 15.3, "timestamp": 1}
    lib.amdsmi_get_gpu_process_list = lambda h: [{"pid": 99, "memory_usage": {"vram_mem": 140 * GIB}}]
    monkeypatch.setitem(sys.modules, "amdsmi", lib)
    s = AmdSmiLibSampler()
    assert s.probe().available
    (g,) = s.sample()
    assert g["mem_used_bytes"] == 150 * GIB and g["mem_total_bytes"] == 192 * GIB
    assert g["mem_api"] == "amdsmi:memory_usage"
    assert g["util_pct"] == 91.0 and g["power_w"] == 640.0
    assert g["energy_j"] == pytest.approx(2_000_000 * 15.3 / 1e6)
    assert g["processes"] == [{"pid": 99, "used_bytes": 140 * GIB}]


CAT = shutil.which("cat") or "/bin/cat"  # PATH holds only the fake tools in these tests


def _script(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def test_cli_samplers_with_fake_tools(tmp_path, monkeypatch):
    _script(tmp_path, "nvidia-smi", f'{CAT} "{FIX / "nvidia_smi_noheader.csv"}"\n')
    _script(tmp_path, "rocm-smi", f'{CAT} "{FIX / "rocm_smi_full.json"}"\n')
    # an amd-smi that refuses the narrow flags (older versions): the sampler falls back to "metric --json"
    _script(tmp_path, "amd-smi", f'if [ "$2" = "--json" ]; then {CAT} "{FIX / "amd_smi_metric_gpu_data.json"}"; '
                                 f'else echo "unrecognized arguments" >&2; exit 2; fi\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    nv = NvidiaSmiSampler()
    assert nv.probe().available
    assert [s["mem_used_bytes"] for s in nv.sample()] == [71234 * MIB, 4 * MIB]
    assert nv.min_interval >= 1.0  # ~24 ms a call: never sampled fast
    rocm = RocmSmiSampler(gpus=[1])
    assert rocm.probe().available
    assert [s["gpu"] for s in rocm.sample()] == [1]
    amd = AmdSmiCliSampler()
    assert amd.probe().available
    assert amd.argv == ["metric", "--json"]
    assert amd.sample()[0]["mem_used_bytes"] == 250000 * MIB


def test_a_cli_that_fails_is_not_available(tmp_path, monkeypatch):
    _script(tmp_path, "nvidia-smi", 'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA '
                                    'driver." ; exit 9\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    a = NvidiaSmiSampler().probe()
    assert not a.available and "status 9" in a.reason and "couldn't communicate" in a.reason


def test_nothing_here_degrades_to_reasons(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no tools
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    opened, tried = open_gpu_samplers("auto")
    assert opened == []
    assert [a.name for a in tried] == ["nvml", "nvidia-smi", "amdsmi", "amd-smi", "rocm-smi"]
    assert all(not a.available and a.reason for a in tried)
    with TelemetrySession(gpu="auto") as tel:
        tel.mark_phase("ready")
        summary = tel.stop(path=tmp_path / "t.telemetry.jsonl")
    assert summary["series_file"] is None and not (tmp_path / "t.telemetry.jsonl").exists()  # nothing sampled
    assert summary["gpu"]["available"] is False
    assert "nvidia-smi is not on PATH" in summary["gpu"]["reason"]
    assert summary["server"]["samples"] == 0
    assert open_gpu_samplers("none")[0] == []
    with pytest.raises(ValueError):
        open_gpu_samplers("bogus")


def test_auto_prefers_nvml_over_nvidia_smi(tmp_path, monkeypatch):
    _script(tmp_path, "nvidia-smi", "exit 1\n")
    monkeypatch.setenv("PATH", str(tmp_path) + os.pathsep + os.environ.get("PATH", ""))
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml())
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    opened, tried = open_gpu_samplers("auto")
    assert [s.name for s in opened] == ["nvml"]
    assert "nvidia-smi" not in [a.name for a in tried]  # never tried: NVML works
    for s in opened:
        s.close()


def test_probe_cli_reports_each_sampler_and_its_cost(tmp_path, monkeypatch, capsys):
    import json

    from infermeter.cli.main import main

    _script(tmp_path, "nvidia-smi", f'{CAT} "{FIX / "nvidia_smi_noheader.csv"}"\n')
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setitem(sys.modules, "pynvml", None)
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    assert main(["telemetry", "probe", "--samples", "2", "--json"]) == 0
    report = {e["name"]: e for e in json.loads(capsys.readouterr().out)}
    assert report["nvml"]["available"] is False and "nvidia-ml-py" in report["nvml"]["reason"]
    smi = report["nvidia-smi"]
    assert smi["available"] and smi["sample_cost_us"]["n"] == 2 and smi["sample_cost_us"]["median"] > 0
    assert smi["sample"][0]["mem_used_bytes"] == 71234 * MIB
    assert report["amdsmi"]["available"] is False  # the AMD chain is tried too (a host may have both)
    assert main(["telemetry", "probe", "--gpu", "bogus"]) == 2
    assert "unknown GPU sampler 'bogus'" in capsys.readouterr().err
