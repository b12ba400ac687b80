"""NVIDIA GPUs: NVML through ``nvidia-ml-py`` (module ``pynvml``), ``nvidia-smi`` as fallback.

NVML (~13 µs a call) is the sampler; ``nvidia-smi`` starts a process per sample (~24 ms)
and is used only when the library is missing.

Memory uses the v2 structure (``nvmlDeviceGetMemoryInfo(h, version=nvmlMemory_v2)``):
its ``used`` leaves out the memory the driver reserves (``reserved``, ~480 MiB on an
80 GB card), which v1's ``used`` counts, so v1 makes an idle GPU look busy and every
engine look that much bigger.  Drivers before R510 and nvidia-ml-py before 11.510 have
no v2: then v1 is used, and each sample says which (``mem_api``: ``nvml:v2`` or ``nvml:v1``).
"""

from __future__ import annotations

import csv
import importlib
import io
import shutil
import subprocess
from typing import Any, Sequence

from infermeter.telemetry.base import MIB, Sampler, SamplerUnavailable, to_bytes, to_float

NVIDIA_SMI_QUERY = ("index", "name", "memory.used", "memory.total", "utilization.gpu", "power.draw")


def _text(value: Any) -> str:
    return value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)


class NvmlSampler(Sampler):
    name = "nvml"
    kind = "gpu"

    def __init__(self, gpus: Sequence[int] | None = None, *, processes: bool = True) -> None:
        self.gpus = list(gpus) if gpus is not None else None
        self.processes = processes
        self._nv: Any = None
        self._devices: list[dict[str, Any]] = []
        self.driver: str | None = None

    def open(self) -> None:
        try:
            nv = importlib.import_module("pynvml")
        except Exception as exc:  # ImportError, or a broken install
            raise SamplerUnavailable(f"nvidia-ml-py is not installed ({type(exc).__name__}: {exc}); "
                                     f"pip install nvidia-ml-py") from None
        try:
            nv.nvmlInit()
        except Exception as exc:  # NVMLError_LibraryNotFound, _DriverNotLoaded, ...
            raise SamplerUnavailable(f"NVML did not initialise: {exc}") from None
        self._nv = nv
        try:
            count = int(nv.nvmlDeviceGetCount())
            if count == 0:
                raise SamplerUnavailable("NVML sees no NVIDIA GPU")
            try:
                self.driver = _text(nv.nvmlSystemGetDriverVersion())
            except Exception:
                self.driver = None
            indices = self.gpus if self.gpus is not None else list(range(count))
            for i in indices:
                if not 0 <= i < count:
                    raise SamplerUnavailable(f"GPU {i} does not exist (NVML sees {count})")
                h = nv.nvmlDeviceGetHandleByIndex(i)
                dev: dict[str, Any] = {"index": i, "handle": h, "name": self._try(nv.nvmlDeviceGetName, h),
                                       "uuid": self._try(nv.nvmlDeviceGetUUID, h)}
                dev["mem_api"] = self._memory_api(h)
                # features a device lacks answer NOT_SUPPORTED every time: find out once
                dev["power"] = self._try(nv.nvmlDeviceGetPowerUsage, h) is not None
                dev["energy"] = self._try(nv.nvmlDeviceGetTotalEnergyConsumption, h) is not None
                dev["util"] = self._try(nv.nvmlDeviceGetUtilizationRates, h) is not None
                dev["procs"] = self.processes and self._try(nv.nvmlDeviceGetComputeRunningProcesses, h) is not None
                self._devices.append(dev)
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _try(fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception:
            return None

    def _memory_api(self, handle: Any) -> str:
        nv = self._nv
        version = getattr(nv, "nvmlMemory_v2", None)
        if version is not None:
            try:
                nv.nvmlDeviceGetMemoryInfo(handle, version=version)
                return "nvml:v2"
            except Exception:  # TypeError (old binding) or NVMLError (old driver)
                pass
        return "nvml:v1"

    def sample(self) -> list[dict[str, Any]]:
        nv = self._nv
        out = []
        for dev in self._devices:
            h = dev["handle"]
            s: dict[str, Any] = {"kind": "gpu", "source": self.name, "gpu": dev["index"],
                                 "name": _text(dev["name"]) if dev["name"] is not None else None,
                                 "uuid": _text(dev["uuid"]) if dev["uuid"] is not None else None,
                                 "mem_api": dev["mem_api"]}
            if dev["mem_api"] == "nvml:v2":
                mem = nv.nvmlDeviceGetMemoryInfo(h, version=nv.nvmlMemory_v2)
                s["mem_reserved_bytes"] = int(mem.reserved)
            else:
                mem = nv.nvmlDeviceGetMemoryInfo(h)
            s["mem_used_bytes"] = int(mem.used)
            s["mem_total_bytes"] = int(mem.total)
            s["mem_free_bytes"] = int(mem.free)
            if dev["util"]:
                util = self._try(nv.nvmlDeviceGetUtilizationRates, h)
                if util is not None:
                    s["util_pct"] = float(util.gpu)
                    s["mem_util_pct"] = float(util.memory)
            if dev["power"]:
                mw = self._try(nv.nvmlDeviceGetPowerUsage, h)
                if mw is not None:
                    s["power_w"] = float(mw) / 1000.0
            if dev["energy"]:
                mj = self._try(nv.nvmlDeviceGetTotalEnergyConsumption, h)
                if mj is not None:
                    s["energy_j"] = float(mj) / 1000.0
            if dev["procs"]:
                procs = self._try(nv.nvmlDeviceGetComputeRunningProcesses, h)
                if procs is not None:
                    s["processes"] = [{"pid": int(p.pid),
                                       "used_bytes": (int(p.usedGpuMemory)
                                                      if getattr(p, "usedGpuMemory", None) is not None else None)}
                                      for p in procs]
            out.append(s)
        return out

    def close(self) -> None:
        if self._nv is not None:
            try:
                self._nv.nvmlShutdown()
            except Exception:
                pass
            self._nv = None
        self._devices = []

    def describe(self) -> dict[str, Any]:
        return {"driver": self.driver,
                "gpus": [{"index": d["index"], "name": _text(d["name"]) if d["name"] is not None else None,
                          "mem_api": d["mem_api"], "power": d["power"], "energy": d["energy"],
                          "processes": d["procs"]} for d in self._devices]}


# -- nvidia-smi --------------------------------------------------------------------------

def _column(header: str) -> str:
    """``memory.used [MiB]`` -> ``memory.used``."""
    return header.strip().split(" [", 1)[0].strip().lower()


def parse_nvidia_smi_csv(text: str, columns: Sequence[str] = NVIDIA_SMI_QUERY) -> list[dict[str, Any]]:
    """GPU samples from ``nvidia-smi --query-gpu=... --format=csv[,noheader][,nounits]``.

    With a header the columns are found by name (``memory.used [MiB]``), so any order and
    extra columns work; without one (``noheader``) they are ``columns``, the query's order.
    Values may carry units (``1234 MiB``, ``70.12 W``, ``45 %``) or be ``[N/A]``."""
    rows = [r for r in csv.reader(io.StringIO(text), skipinitialspace=True) if r and any(c.strip() for c in r)]
    if not rows:
        return []
    first = [_column(c) for c in rows[0]]
    if "memory.used" in first or "index" in first:
        names, rows = first, rows[1:]
    else:
        names = [c.lower() for c in columns]
    out = []
    for row in rows:
        rec = {names[i]: row[i].strip() for i in range(min(len(names), len(row)))}
        used = to_bytes(rec.get("memory.used"), "MiB")
        total = to_bytes(rec.get("memory.total"), "MiB")
        s: dict[str, Any] = {"kind": "gpu", "source": "nvidia-smi", "mem_api": "nvidia-smi"}
        idx = to_float(rec.get("index"))
        s["gpu"] = int(idx) if idx is not None else len(out)
        if rec.get("name"):
            s["name"] = rec["name"]
        if rec.get("uuid"):
            s["uuid"] = rec["uuid"]
        s["mem_used_bytes"] = used
        s["mem_total_bytes"] = total
        free = to_bytes(rec.get("memory.free"), "MiB")  # not total-used: reserved memory lies between
        if free is not None:
            s["mem_free_bytes"] = free
        reserved = to_bytes(rec.get("memory.reserved"), "MiB")
        if reserved is not None:
            s["mem_reserved_bytes"] = reserved
        for key, col in (("util_pct", "utilization.gpu"), ("mem_util_pct", "utilization.memory"),
                         ("power_w", "power.draw")):
            v = to_float(rec.get(col))
            if v is not None:
                s[key] = v
        out.append(s)
    return out


class NvidiaSmiSampler(Sampler):
    name = "nvidia-smi"
    kind = "gpu"
    min_interval = 1.0  # a process per sample (~24 ms): once a second at most

    def __init__(self, gpus: Sequence[int] | None = None, *, binary: str = "nvidia-smi",
                 timeout: float = 10.0) -> None:
        self.gpus = list(gpus) if gpus is not None else None
        self.binary = binary
        self.timeout = timeout
        self.path: str | None = None

    def _argv(self) -> list[str]:
        argv = [self.path or self.binary, f"--query-gpu={','.join(NVIDIA_SMI_QUERY)}",
                "--format=csv,noheader,nounits"]
        if self.gpus is not None:
            argv.append(f"--id={','.join(str(g) for g in self.gpus)}")
        return argv

    def _run(self) -> str:
        try:
            out = subprocess.run(self._argv(), capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SamplerUnavailable(f"{self.binary} failed: {exc}") from None
        if out.returncode != 0:
            reason = (out.stderr or out.stdout or "").strip().splitlines()
            raise SamplerUnavailable(f"{self.binary} exited with status {out.returncode}: "
                                     f"{reason[0][:200] if reason else 'no output'}")
        return out.stdout

    def open(self) -> None:
        self.path = shutil.which(self.binary)
        if self.path is None:
            raise SamplerUnavailable(f"{self.binary} is not on PATH")
        if not parse_nvidia_smi_csv(self._run()):
            raise SamplerUnavailable(f"{self.binary} lists no GPU")

    def sample(self) -> list[dict[str, Any]]:
        return parse_nvidia_smi_csv(self._run())

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "query": ",".join(NVIDIA_SMI_QUERY)}


__all__ = ["NvmlSampler", "NvidiaSmiSampler", "parse_nvidia_smi_csv", "NVIDIA_SMI_QUERY", "MIB"]
