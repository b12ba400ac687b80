"""What every telemetry source has in common: the sampler interface, "not available"
as a result (never an error), small value helpers, and a proxy-free HTTP GET.

A sample is a flat JSON-able dict.  Every sample carries ``kind`` (``"gpu"`` or
``"server"``) and ``source`` (the sampler's name); the session adds ``t`` (wall-clock
epoch), ``t_rel`` (seconds from the run's origin) and ``phase``.

GPU sample fields (absent or None when the source does not know them):

``gpu`` index, ``name``, ``uuid``, ``mem_used_bytes``, ``mem_total_bytes``,
``mem_free_bytes``, ``mem_reserved_bytes`` (NVML v2 only), ``mem_api`` (which call or
tool measured memory, e.g. ``"nvml:v2"``), ``util_pct``, ``mem_util_pct``, ``power_w``,
``energy_j`` (a cumulative counter: joules since the driver loaded), ``processes``
(``[{"pid", "used_bytes"}]``).
"""

from __future__ import annotations

import math
import re
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

# Loopback scrapes must never go through an HTTP proxy from the environment, and a
# remote scrape goes where the benchmark's own requests go: straight to the target.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))

MIB = 1024 * 1024


class SamplerUnavailable(Exception):
    """This source cannot sample here (no GPU, no library, no tool, nothing listening).

    Raised by ``Sampler.open``; the session records the reason and goes on without it."""


@dataclass
class Availability:
    name: str
    available: bool
    reason: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "available": self.available}
        if self.reason:
            out["reason"] = self.reason
        if self.detail:
            out.update(self.detail)
        return out


class Sampler:
    """One telemetry source.  ``open()`` either succeeds or raises SamplerUnavailable;
    ``sample()`` returns zero or more sample dicts and may raise on a transient failure
    (the session counts it and keeps sampling)."""

    name = "sampler"
    kind = "gpu"
    #: the shortest sensible interval between samples (a CLI costs tens of ms a call)
    min_interval = 0.0
    #: set by the loop before ``sample()``: this sample was asked for (a phase change,
    #: the end), not just due; a sampler may record more detail for it
    forced = False

    def open(self) -> None:  # pragma: no cover - trivial default
        return None

    def sample(self) -> list[dict[str, Any]]:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {}

    def probe(self) -> Availability:
        """Open it and say whether it works; leaves it open when it does."""
        try:
            self.open()
        except SamplerUnavailable as exc:
            return Availability(self.name, False, str(exc))
        except Exception as exc:  # a broken library is "not available", with the reason
            return Availability(self.name, False, f"{type(exc).__name__}: {exc}")
        return Availability(self.name, True, None, self.describe())


def http_get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    """(status, body); status 0 when nothing answered."""
    try:
        with _OPENER.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read() if exc.fp is not None else b""
    except (urllib.error.URLError, OSError, TimeoutError, ValueError):
        return 0, b""


_NUM = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_NA = {"", "n/a", "[n/a]", "na", "none", "null", "not supported", "[not supported]", "unknown",
       "[unknown error]", "-"}


def to_float(value: Any) -> float | None:
    """A number from whatever a tool printed: 12, "12", "12.5 W", "[N/A]", {"value": 12}."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, dict):
        return to_float(value.get("value"))
    if isinstance(value, (int, float)):
        f = float(value)
        return f if math.isfinite(f) else None
    text = str(value).strip()
    if text.lower() in _NA:
        return None
    m = _NUM.search(text)
    if m is None:
        return None
    f = float(m.group(0))
    return f if math.isfinite(f) else None


_BYTE_UNITS = {"b": 1, "kb": 1000, "mb": 1000**2, "gb": 1000**3, "kib": 1024, "mib": MIB, "gib": 1024**3}


def to_bytes(value: Any, default_unit: str = "B", *, mb_is_mib: bool = True) -> int | None:
    """Bytes from a value with a unit.  ``{"value": 16368, "unit": "MB"}`` from amd-smi
    means MiB (it divides by 1024*1024), as nvidia-smi's ``MiB`` does: ``mb_is_mib``."""
    unit = default_unit
    if isinstance(value, dict):
        unit = str(value.get("unit") or default_unit)
        value = value.get("value")
    elif isinstance(value, str):
        m = re.search(r"([KMG]i?B|B)\s*$", value.strip(), re.I)
        if m:
            unit = m.group(1)
    number = to_float(value)
    if number is None:
        return None
    key = unit.strip().lower()
    if mb_is_mib and key in ("kb", "mb", "gb"):
        key = key[0] + "ib"
    return int(round(number * _BYTE_UNITS.get(key, 1)))


def to_joules(value: Any, default_unit: str = "J") -> float | None:
    unit = default_unit
    if isinstance(value, dict):
        unit = str(value.get("unit") or default_unit)
        value = value.get("value")
    number = to_float(value)
    if number is None:
        return None
    scale = {"j": 1.0, "mj": 1e-3, "uj": 1e-6, "µj": 1e-6, "kj": 1e3}.get(unit.strip().lower(), 1.0)
    return number * scale
