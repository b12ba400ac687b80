"""Scrape an existing NVIDIA DCGM exporter (``dcgm-exporter``, default port 9400).

Prometheus text, one series per GPU (labels ``gpu``, ``UUID``, ``modelName``,
``Hostname``, ...; MIG instances add ``GPU_I_ID``):

``DCGM_FI_DEV_FB_USED`` / ``_FB_FREE`` / ``_FB_RESERVED`` (MiB), ``DCGM_FI_DEV_GPU_UTIL``
(%), ``DCGM_FI_DEV_MEM_COPY_UTIL`` (%), ``DCGM_FI_DEV_POWER_USAGE`` (W),
``DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION`` (mJ since boot; a counter without ``_total``,
which prometheus_client's parser renames ``..._total``: prom.Exposition finds both).
"""

from __future__ import annotations

from typing import Any, Sequence

from infermeter.telemetry import prom
from infermeter.secrets import redact_url
from infermeter.telemetry.base import MIB, Sampler, SamplerUnavailable, http_get

FIELDS = {
    "fb_used": "DCGM_FI_DEV_FB_USED",
    "fb_free": "DCGM_FI_DEV_FB_FREE",
    "fb_reserved": "DCGM_FI_DEV_FB_RESERVED",
    "util": "DCGM_FI_DEV_GPU_UTIL",
    "mem_util": "DCGM_FI_DEV_MEM_COPY_UTIL",
    "power": "DCGM_FI_DEV_POWER_USAGE",
    "energy": "DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION",
}


def parse_dcgm(text: str) -> list[dict[str, Any]]:
    expo = prom.parse(text, FIELDS.values())
    per_gpu: dict[tuple[str, str], dict[str, Any]] = {}
    for key, metric in FIELDS.items():
        _, rows = expo.find([metric])
        for labels, value in rows:
            ident = (labels.get("gpu", "0"), labels.get("GPU_I_ID", ""))
            rec = per_gpu.setdefault(ident, {"labels": labels})
            rec[key] = value
    out = []
    for (gpu, instance), rec in sorted(per_gpu.items(), key=lambda kv: (int(kv[0][0]) if kv[0][0].isdigit() else 0,
                                                                         kv[0][1])):
        labels = rec["labels"]
        s: dict[str, Any] = {"kind": "gpu", "source": "dcgm", "mem_api": "dcgm:fb",
                             "gpu": int(gpu) if gpu.isdigit() else gpu,
                             "name": labels.get("modelName"), "uuid": labels.get("UUID")}
        if instance:
            s["mig_instance"] = instance
        if labels.get("Hostname"):
            s["host"] = labels["Hostname"]
        used, free, reserved = rec.get("fb_used"), rec.get("fb_free"), rec.get("fb_reserved")
        s["mem_used_bytes"] = int(used * MIB) if used is not None else None
        if free is not None:
            s["mem_free_bytes"] = int(free * MIB)
        if reserved is not None:
            s["mem_reserved_bytes"] = int(reserved * MIB)
        s["mem_total_bytes"] = (int((used + free + (reserved or 0.0)) * MIB)
                                if used is not None and free is not None else None)
        if rec.get("util") is not None:
            s["util_pct"] = rec["util"]
        if rec.get("mem_util") is not None:
            s["mem_util_pct"] = rec["mem_util"]
        if rec.get("power") is not None:
            s["power_w"] = rec["power"]
        if rec.get("energy") is not None:
            s["energy_j"] = rec["energy"] / 1000.0
        out.append(s)
    return out


class DcgmExporterSampler(Sampler):
    name = "dcgm-exporter"
    kind = "gpu"
    min_interval = 0.1

    def __init__(self, url: str, gpus: Sequence[int] | None = None, *, timeout: float = 2.0) -> None:
        url = url.rstrip("/")
        if not url.startswith(("http://", "https://")):
            url = "http://" + url
        self.url = url if url.endswith("/metrics") else url + "/metrics"
        self.shown_url = redact_url(self.url)
        self.gpus = list(gpus) if gpus is not None else None
        self.timeout = timeout

    def _get(self) -> list[dict[str, Any]]:
        status, body = http_get(self.url, self.timeout)
        if status != 200:
            raise SamplerUnavailable(f"GET {self.shown_url} " + (f"answered HTTP {status}" if status else "did not answer"))
        samples = parse_dcgm(body.decode("utf-8", errors="replace"))
        return samples if self.gpus is None else [s for s in samples if s.get("gpu") in self.gpus]

    def open(self) -> None:
        if not self._get():
            raise SamplerUnavailable(f"{self.shown_url} exports no DCGM_FI_DEV_FB_USED series")

    def sample(self) -> list[dict[str, Any]]:
        return self._get()

    def describe(self) -> dict[str, Any]:
        return {"url": self.shown_url}
