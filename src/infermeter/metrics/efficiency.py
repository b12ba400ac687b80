"""Energy, cost and per-GPU throughput of one run: ``result["infermeter"]["efficiency"]``
(docs/cost.md).

Pure arithmetic on what the run already measured (the result's token counts and
throughput, the telemetry summary's window energy) and what the user stated (a price, a
GPU count).  A figure whose input is missing is None and its group says why in
``reasons`` (``energy``, ``cost``, ``per_gpu``): never a guess.

    energy_per_output_token_j   = energy_j / total_output_tokens
    energy_per_request_j        = energy_j / completed
    output_tokens_per_joule     = total_output_tokens / energy_j
    mean_power_w                = energy_j / window_s
    node $/h                    = price x gpu_count (price per GPU) or price (per node)
    usd_per_million_output_tokens = node $/h / 3600 / output_throughput x 1e6
    usd_per_million_total_tokens  = node $/h / 3600 / total_token_throughput x 1e6
    output_throughput_per_gpu   = output_throughput / gpu_count
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

PRICE_BASES = ("gpu", "node")


@dataclass
class Price:
    """An hourly price and where it came from; ``per_hour`` None: no price (``reason`` says why)."""

    per_hour: float | None
    per: str | None = None  # "gpu" or "node"
    source: str | None = None  # "--gpu-price", "spec", "dstack"
    detail: dict[str, Any] = field(default_factory=dict)  # e.g. the dstack run, backend, region, GPUs
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"per_hour": self.per_hour, "per": self.per, "source": self.source, **self.detail}


@dataclass
class GpuCount:
    count: int | None
    source: str | None = None  # "--gpu-count", "launch profile", "dstack", "telemetry"


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def _round(v: float | None, digits: int = 6) -> float | None:
    return None if v is None else float(f"{v:.{digits}g}")


def choose_gpu_count(*candidates: GpuCount) -> GpuCount:
    """The first candidate that knows a positive count (callers list them by precedence)."""
    for c in candidates:
        if c.count is not None and c.count > 0:
            return c
    return GpuCount(None, None)


def telemetry_gpus(telemetry: dict[str, Any] | None) -> int | None:
    """How many GPUs the telemetry sampled (None: none, or telemetry off)."""
    devices = ((telemetry or {}).get("gpu") or {}).get("devices")
    return len(devices) if isinstance(devices, dict) and devices else None


def _energy(telemetry: dict[str, Any] | None) -> tuple[float | None, str | None, str | None]:
    """(joules, method, reason it is n/a) from the telemetry summary."""
    if not telemetry or telemetry.get("enabled") is False:
        return None, None, "telemetry was off (--no-telemetry)"
    gpu = telemetry.get("gpu") or {}
    if not gpu.get("available"):
        return None, None, f"no GPU telemetry ({gpu.get('reason') or 'no GPU sampler'})"
    if not telemetry.get("window"):
        return None, None, "no measured window"
    joules = _num(gpu.get("window_energy_j"))
    if joules is None:
        return None, None, gpu.get("energy_na") or "the GPU sampler gave no energy for the window"
    return joules, gpu.get("energy_method"), None


def efficiency(result: dict[str, Any], telemetry: dict[str, Any] | None, price: Price | None,
               gpus: GpuCount) -> dict[str, Any]:
    """The ``efficiency`` block of a result (figures, methods, sources and n/a reasons)."""
    out_tokens = _num(result.get("total_output_tokens"))
    completed = _num(result.get("completed"))
    out_tps = _num(result.get("output_throughput"))
    total_tps = _num(result.get("total_token_throughput"))
    reasons: dict[str, str] = {}
    block: dict[str, Any] = {"output_throughput": out_tps, "total_token_throughput": total_tps,
                             "total_output_tokens": out_tokens, "completed": completed}

    # -- per GPU
    block["gpu_count"], block["gpu_count_source"] = gpus.count, gpus.source
    block["output_throughput_per_gpu"] = None
    if gpus.count is None:
        reasons["per_gpu"] = "GPU count unknown: no GPU telemetry or launch profile; give --gpu-count"
    elif out_tps is None:
        reasons["per_gpu"] = "no output throughput"
    else:
        block["output_throughput_per_gpu"] = _round(out_tps / gpus.count)

    # -- energy
    joules, method, why = _energy(telemetry)
    window_s = _num(((telemetry or {}).get("window") or {}).get("duration_s"))
    sampled = telemetry_gpus(telemetry)
    block.update(energy_j=_round(joules), energy_method=method, energy_gpus=sampled, window_s=window_s,
                 mean_power_w=None, energy_per_output_token_j=None, energy_per_request_j=None,
                 output_tokens_per_joule=None)
    if joules is None:
        reasons["energy"] = why or "no energy"
    elif joules <= 0:
        reasons["energy"] = f"the energy over the window is {joules:g} J (counter not advancing?)"
        block["energy_j"] = None
    else:
        if window_s:
            block["mean_power_w"] = _round(joules / window_s)
        if out_tokens:
            block["energy_per_output_token_j"] = _round(joules / out_tokens)
            block["output_tokens_per_joule"] = _round(out_tokens / joules)
        else:
            reasons["energy"] = "no output tokens: no energy per token"
        if completed:
            block["energy_per_request_j"] = _round(joules / completed)
        if sampled is not None and gpus.count is not None and sampled != gpus.count:
            block["energy_note"] = (f"energy is summed over the {sampled} GPUs sampled; the GPU count is "
                                    f"{gpus.count} ({gpus.source})")

    # -- cost
    block["price"] = price.to_dict() if price is not None and price.per_hour is not None else None
    block["node_usd_per_hour"] = None
    block["usd_per_million_output_tokens"] = block["usd_per_million_total_tokens"] = None
    if price is None or price.per_hour is None:
        reasons["cost"] = (price.reason if price is not None and price.reason else
                           "no price: give --gpu-price PER_HOUR --gpu-price-per gpu|node, or --dstack-run NAME")
    elif price.per == "gpu" and gpus.count is None:
        reasons["cost"] = "the price is per GPU and the GPU count is unknown; give --gpu-count"
    else:
        node = price.per_hour * (gpus.count if price.per == "gpu" else 1)  # type: ignore[operator]
        block["node_usd_per_hour"] = _round(node)
        if not out_tps:
            reasons["cost"] = "no output throughput: no cost per token"
        else:
            block["usd_per_million_output_tokens"] = _round(node / 3600.0 / out_tps * 1e6)
            if total_tps:
                block["usd_per_million_total_tokens"] = _round(node / 3600.0 / total_tps * 1e6)
    block["reasons"] = reasons
    return block


# The figures other tools read (compare, reports, the store), with how they are judged.
FIGURES: dict[str, tuple[str, str, bool]] = {
    "output_throughput_per_gpu": ("output throughput per GPU", "tok/s/GPU", True),
    "energy_per_output_token_j": ("energy per output token", "J/tok", False),
    "output_tokens_per_joule": ("output tokens per joule", "tok/J", True),
    "energy_per_request_j": ("energy per request", "J/req", False),
    "mean_power_w": ("mean GPU power", "W", False),
    "usd_per_million_output_tokens": ("cost per million output tokens", "$/Mtok", False),
    "usd_per_million_total_tokens": ("cost per million total tokens", "$/Mtok", False),
}


def figures_of(result: dict[str, Any]) -> dict[str, float | None]:
    """The FIGURES of a result (None where n/a or where the result has no efficiency block)."""
    block = (result.get("infermeter") or {}).get("efficiency") or {}
    return {k: _num(block.get(k)) for k in FIGURES}
