"""AMD GPUs: the ``amdsmi`` Python library, ``amd-smi`` and ``rocm-smi`` as fallbacks.

``amdsmi`` needs ROCm's ``libamd_smi.so`` and can fail to import in many ways without it
(ImportError, OSError, KeyError from its loader): any exception means "not available".

Output shapes handled (fixtures under tests/fixtures/telemetry/):

* ``rocm-smi --showmeminfo vram [--showuse --showpower] --json``: ``{"card0": {"VRAM Total
  Memory (B)": "68702699520", "VRAM Total Used Memory (B)": "11927552", ...}}``: strings,
  in bytes; other top-level keys (``"system"``) are skipped.  ``--csv``: a ``device``
  column, then columns named as the JSON keys.
* ``amd-smi metric --json``: a list of ``{"gpu": 0, "usage": {"gfx_activity": {"value":
  42, "unit": "%"}}, "power": {"socket_power": {...}}, "mem_usage": {"total_vram":
  {"value": 196592, "unit": "MB"}, "used_vram": {...}}, "energy": {...}}``; from ROCm 7
  (amd-smi 26) the list is wrapped: ``{"gpu_data": [...]}``.  Any value may be
  ``"N/A"``.  amd-smi's ``MB`` are MiB.  ``--csv``: one row per GPU, column names that
  differ between versions, found by name.
"""

from __future__ import annotations

import csv
import importlib
import io
import json
import re
import shutil
import subprocess
from typing import Any, Sequence

from infermeter.telemetry.base import MIB, Sampler, SamplerUnavailable, to_bytes, to_float, to_joules


def _card_index(key: str, fallback: int) -> int:
    m = re.search(r"(\d+)\s*$", str(key))
    return int(m.group(1)) if m else fallback


def _pick(rec: dict[str, Any], *patterns: str) -> Any:
    """The value of the first key matching one of the regex patterns (case-insensitive)."""
    for pat in patterns:
        rx = re.compile(pat, re.I)
        for k, v in rec.items():
            if rx.search(str(k)):
                return v
    return None


def _rocm_smi_sample(key: str, rec: dict[str, Any], idx: int) -> dict[str, Any]:
    s: dict[str, Any] = {"kind": "gpu", "source": "rocm-smi", "mem_api": "rocm-smi:vram",
                         "gpu": _card_index(key, idx)}
    s["mem_total_bytes"] = to_bytes(_pick(rec, r"^vram total memory"), "B")
    s["mem_used_bytes"] = to_bytes(_pick(rec, r"^vram total used memory"), "B")
    util = to_float(_pick(rec, r"^gpu use \(%\)"))
    if util is not None:
        s["util_pct"] = util
    power = to_float(_pick(rec, r"current socket graphics package power", r"socket power",
                           r"average graphics package power", r"package power"))
    if power is not None:
        s["power_w"] = power
    name = _pick(rec, r"^card series", r"^card model")
    if name:
        s["name"] = str(name)
    return s


def parse_rocm_smi_json(text: str | dict) -> list[dict[str, Any]]:
    data = json.loads(text) if isinstance(text, str) else text
    out = []
    for i, (key, rec) in enumerate(data.items()):
        if not isinstance(rec, dict) or not str(key).lower().startswith("card"):
            continue
        s = _rocm_smi_sample(key, rec, i)
        if s["mem_used_bytes"] is not None or s["mem_total_bytes"] is not None:
            out.append(s)
    return out


def parse_rocm_smi_csv(text: str) -> list[dict[str, Any]]:
    rows = list(csv.DictReader(io.StringIO(text.strip())))
    out = []
    for i, row in enumerate(rows):
        key = row.get("device") or row.get("Device") or f"card{i}"
        if not str(key).lower().startswith("card"):
            continue
        out.append(_rocm_smi_sample(key, row, i))
    return out


def _section(entry: dict[str, Any], name: str) -> dict[str, Any]:
    sec = entry.get(name)
    return sec if isinstance(sec, dict) else {}


def parse_amd_smi_metric_json(text: str | list | dict) -> list[dict[str, Any]]:
    """Samples from ``amd-smi metric --json``: a bare list (before ROCm 7) or
    ``{"gpu_data": [...]}`` (ROCm 7 / amd-smi 26 on)."""
    data = json.loads(text) if isinstance(text, str) else text
    if isinstance(data, dict):
        data = data.get("gpu_data", [data] if "gpu" in data else [])
    out = []
    for i, entry in enumerate(data or []):
        if not isinstance(entry, dict):
            continue
        gpu = to_float(entry.get("gpu"))
        s: dict[str, Any] = {"kind": "gpu", "source": "amd-smi", "mem_api": "amd-smi:mem_usage",
                             "gpu": int(gpu) if gpu is not None else i}
        mem = _section(entry, "mem_usage")
        s["mem_total_bytes"] = to_bytes(mem.get("total_vram"), "MB")
        s["mem_used_bytes"] = to_bytes(mem.get("used_vram"), "MB")
        free = to_bytes(mem.get("free_vram"), "MB")
        if free is not None:
            s["mem_free_bytes"] = free
        usage = _section(entry, "usage")
        for key, field in (("util_pct", "gfx_activity"), ("mem_util_pct", "umc_activity")):
            v = to_float(usage.get(field))
            if v is not None:
                s[key] = v
        power = _section(entry, "power")
        w = to_float(power.get("socket_power") or power.get("current_socket_power")
                     or power.get("average_socket_power"))
        if w is not None:
            s["power_w"] = w
        energy = _section(entry, "energy")
        j = to_joules(energy.get("total_energy_consumption"), "J")
        if j is not None:
            s["energy_j"] = j
        out.append(s)
    return out


_CSV_COLUMNS = {
    "mem_used_bytes": ("used_vram", "vram_used", "mem_usage_used_vram"),
    "mem_total_bytes": ("total_vram", "vram_total", "mem_usage_total_vram"),
    "mem_free_bytes": ("free_vram", "vram_free", "mem_usage_free_vram"),
    "util_pct": ("gfx_activity", "gfx_usage", "gfx_util", "usage_gfx_activity"),
    "mem_util_pct": ("umc_activity", "mem_activity", "usage_umc_activity"),
    "power_w": ("socket_power", "current_socket_power", "average_socket_power", "power_socket_power"),
    "energy_j": ("total_energy_consumption", "energy_total_energy_consumption", "energy"),
}


def parse_amd_smi_metric_csv(text: str) -> list[dict[str, Any]]:
    """Samples from ``amd-smi metric --csv``: columns found by name (they differ between
    versions); memory in MB (MiB), power in W, energy in J."""
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    # some versions print a title line above the header: start at the line naming "gpu"
    start = next((i for i, ln in enumerate(lines) if re.match(r"^\s*gpu\s*,", ln, re.I)), 0)
    out = []
    for i, row in enumerate(csv.DictReader(io.StringIO("\n".join(lines[start:])))):
        norm = {str(k).strip().lower(): v for k, v in row.items() if k is not None}
        gpu = to_float(norm.get("gpu"))
        s: dict[str, Any] = {"kind": "gpu", "source": "amd-smi", "mem_api": "amd-smi:mem_usage",
                             "gpu": int(gpu) if gpu is not None else i}
        for key, names in _CSV_COLUMNS.items():
            raw = next((norm[n] for n in names if norm.get(n) not in (None, "")), None)
            if key.endswith("_bytes"):
                val: Any = to_bytes(raw, "MB")
            elif key == "energy_j":
                val = to_joules(raw, "J")
            else:
                val = to_float(raw)
            if val is not None or key in ("mem_used_bytes", "mem_total_bytes"):
                s[key] = val
        out.append(s)
    return out


class _CliSampler(Sampler):
    kind = "gpu"
    min_interval = 1.0
    binary = ""

    def __init__(self, gpus: Sequence[int] | None = None, *, timeout: float = 15.0) -> None:
        self.gpus = list(gpus) if gpus is not None else None
        self.timeout = timeout
        self.path: str | None = None
        self.argv: list[str] = []

    def _exec(self, argv: list[str]) -> tuple[int, str, str]:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=self.timeout, check=False)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise SamplerUnavailable(f"{self.binary} failed: {exc}") from None
        return out.returncode, out.stdout, out.stderr

    def _select(self, samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return samples if self.gpus is None else [s for s in samples if s.get("gpu") in self.gpus]

    def _parse(self, text: str) -> list[dict[str, Any]]:  # pragma: no cover - interface
        raise NotImplementedError

    def _candidates(self) -> list[list[str]]:  # pragma: no cover - interface
        raise NotImplementedError

    def open(self) -> None:
        self.path = shutil.which(self.binary)
        if self.path is None:
            raise SamplerUnavailable(f"{self.binary} is not on PATH")
        last = "no output"
        for argv in self._candidates():
            rc, out, err = self._exec([self.path, *argv])
            if rc == 0:
                try:
                    if self._parse(out):
                        self.argv = argv
                        return
                    last = "lists no GPU"
                except (ValueError, TypeError, AttributeError) as exc:
                    last = f"unreadable output ({type(exc).__name__}: {exc})"
            else:
                lines = (err or out or "").strip().splitlines()
                last = f"exited with status {rc}: {lines[0][:200] if lines else 'no output'}"
        raise SamplerUnavailable(f"{self.binary} {last}")

    def sample(self) -> list[dict[str, Any]]:
        assert self.path is not None
        rc, out, err = self._exec([self.path, *self.argv])
        if rc != 0:
            raise RuntimeError(f"{self.binary} exited with status {rc}: {(err or out)[:200]}")
        return self._select(self._parse(out))

    def describe(self) -> dict[str, Any]:
        return {"path": self.path, "argv": self.argv}


class RocmSmiSampler(_CliSampler):
    name = "rocm-smi"
    binary = "rocm-smi"

    def _candidates(self) -> list[list[str]]:
        return [["--showmeminfo", "vram", "--showuse", "--showpower", "--json"],
                ["--showmeminfo", "vram", "--json"]]

    def _parse(self, text: str) -> list[dict[str, Any]]:
        return parse_rocm_smi_json(text)


class AmdSmiCliSampler(_CliSampler):
    name = "amd-smi"
    binary = "amd-smi"

    def _candidates(self) -> list[list[str]]:
        return [["metric", "--usage", "--power", "--mem-usage", "--energy", "--json"],
                ["metric", "--usage", "--power", "--mem-usage", "--json"],
                ["metric", "--json"]]

    def _parse(self, text: str) -> list[dict[str, Any]]:
        # watch-mode and warning lines may precede the JSON
        start = min((i for i in (text.find("["), text.find("{")) if i >= 0), default=0)
        return parse_amd_smi_metric_json(text[start:])


class AmdSmiLibSampler(Sampler):
    """The ``amdsmi`` Python library (ROCm 6+): memory in bytes, activity, power, energy."""

    name = "amdsmi"
    kind = "gpu"

    def __init__(self, gpus: Sequence[int] | None = None, *, processes: bool = True) -> None:
        self.gpus = list(gpus) if gpus is not None else None
        self.processes = processes
        self._lib: Any = None
        self._handles: list[tuple[int, Any, str | None]] = []

    def open(self) -> None:
        try:
            lib = importlib.import_module("amdsmi")
        except BaseException as exc:  # noqa: BLE001 - needs libamd_smi.so; fails every way without it
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            raise SamplerUnavailable(f"amdsmi does not import ({type(exc).__name__}: {exc}); it needs ROCm's "
                                     f"libamd_smi.so") from None
        try:
            flags = getattr(getattr(lib, "AmdSmiInitFlags", None), "INIT_AMD_GPUS", None)
            lib.amdsmi_init(flags) if flags is not None else lib.amdsmi_init()
        except Exception as exc:
            raise SamplerUnavailable(f"amdsmi did not initialise: {exc}") from None
        self._lib = lib
        try:
            handles = list(lib.amdsmi_get_processor_handles())
            if not handles:
                raise SamplerUnavailable("amdsmi sees no AMD GPU")
            for i, h in enumerate(handles):
                if self.gpus is not None and i not in self.gpus:
                    continue
                name = None
                try:
                    name = lib.amdsmi_get_gpu_asic_info(h).get("market_name")
                except Exception:
                    pass
                self._handles.append((i, h, name))
        except BaseException:
            self.close()
            raise

    def _memory(self, h: Any) -> tuple[int | None, int | None, str]:
        lib = self._lib
        mtype = getattr(getattr(lib, "AmdSmiMemoryType", None), "VRAM", None)
        if mtype is not None and hasattr(lib, "amdsmi_get_gpu_memory_usage"):
            try:
                used = int(lib.amdsmi_get_gpu_memory_usage(h, mtype))
                total = int(lib.amdsmi_get_gpu_memory_total(h, mtype))
                return used, total, "amdsmi:memory_usage"
            except Exception:
                pass
        vram = lib.amdsmi_get_gpu_vram_usage(h)  # MB
        return (to_bytes(vram.get("vram_used"), "MB"), to_bytes(vram.get("vram_total"), "MB"),
                "amdsmi:vram_usage")

    def sample(self) -> list[dict[str, Any]]:
        lib = self._lib
        out = []
        for i, h, name in self._handles:
            used, total, api = self._memory(h)
            s: dict[str, Any] = {"kind": "gpu", "source": self.name, "gpu": i, "name": name,
                                 "mem_api": api, "mem_used_bytes": used, "mem_total_bytes": total}
            try:
                act = lib.amdsmi_get_gpu_activity(h)
                for key, field in (("util_pct", "gfx_activity"), ("mem_util_pct", "umc_activity")):
                    v = to_float(act.get(field))
                    if v is not None:
                        s[key] = v
            except Exception:
                pass
            try:
                p = lib.amdsmi_get_power_info(h)
                w = next((to_float(p.get(k)) for k in ("current_socket_power", "socket_power",
                                                        "average_socket_power")
                          if to_float(p.get(k)) is not None), None)
                if w is not None:
                    s["power_w"] = w
            except Exception:
                pass
            try:
                e = lib.amdsmi_get_energy_count(h)
                acc = to_float(e.get("energy_accumulator", e.get("power")))
                res = to_float(e.get("counter_resolution"))  # microjoules per count
                if acc is not None and res is not None:
                    s["energy_j"] = acc * res / 1e6
            except Exception:
                pass
            if self.processes:
                try:
                    procs = []
                    for p in lib.amdsmi_get_gpu_process_list(h):
                        if isinstance(p, dict) and "pid" in p:
                            mem = (p.get("memory_usage") or {}).get("vram_mem", p.get("mem"))
                            procs.append({"pid": int(p["pid"]), "used_bytes": to_bytes(mem, "B")})
                    s["processes"] = procs
                except Exception:
                    pass
            out.append(s)
        return out

    def close(self) -> None:
        if self._lib is not None:
            try:
                self._lib.amdsmi_shut_down()
            except Exception:
                pass
            self._lib = None
        self._handles = []

    def describe(self) -> dict[str, Any]:
        return {"gpus": [{"index": i, "name": n} for i, _, n in self._handles]}


__all__ = ["AmdSmiLibSampler", "AmdSmiCliSampler", "RocmSmiSampler", "parse_rocm_smi_json",
           "parse_rocm_smi_csv", "parse_amd_smi_metric_json", "parse_amd_smi_metric_csv", "MIB"]
