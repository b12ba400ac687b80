"""Telemetry: GPU memory, utilization, power and energy, and the server's own metrics,
sampled through every run and labelled with the phase they belong to (docs/telemetry.md).

Modules, one concern each:

* ``base``           sampler interface, "not available" results, value/unit helpers
* ``nvidia``         NVML (nvidia-ml-py, memory v2) and the nvidia-smi fallback
* ``amd``            amdsmi, and the amd-smi / rocm-smi fallbacks
* ``dcgm``           scraping an existing DCGM exporter
* ``agent``          the remote-host agent (HTTP) and the sampler that pulls from it
* ``gpu``            choosing the GPU samplers that work here
* ``prom``           Prometheus text: robust lookups, histogram deltas and quantiles
* ``backends``       /metrics read through each backend's metric map (infermeter.backends), renames
* ``server_metrics`` scraping a server's /metrics
* ``loop``           one background thread per source
* ``phases``         idle / loading / ready / warmup / load / cooldown, and the peak
* ``summary``        the per-run summary
* ``session``        ``TelemetrySession``, the hook the run calls
"""

from infermeter.telemetry.base import Availability, Sampler, SamplerUnavailable
from infermeter.telemetry.phases import COOLDOWN, IDLE, LOAD, LOADING, PHASES, READY, WARMUP
from infermeter.telemetry.session import TelemetrySession, read_series

__all__ = ["TelemetrySession", "read_series", "Sampler", "SamplerUnavailable", "Availability",
           "IDLE", "LOADING", "READY", "WARMUP", "LOAD", "COOLDOWN", "PHASES"]
