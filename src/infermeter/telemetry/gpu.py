"""Pick the GPU samplers that work here: NVML, else nvidia-smi; amdsmi, else amd-smi,
else rocm-smi.  What does not work is reported with its reason, never raised."""

from __future__ import annotations

from typing import Sequence

from infermeter.telemetry.amd import AmdSmiCliSampler, AmdSmiLibSampler, RocmSmiSampler
from infermeter.telemetry.base import Availability, Sampler
from infermeter.telemetry.nvidia import NvidiaSmiSampler, NvmlSampler

GPU_CHOICES = ("auto", "none", "nvml", "nvidia-smi", "amdsmi", "amd-smi", "rocm-smi")


def _one(name: str, gpus: Sequence[int] | None) -> Sampler:
    if name == "nvml":
        return NvmlSampler(gpus)
    if name == "nvidia-smi":
        return NvidiaSmiSampler(gpus)
    if name == "amdsmi":
        return AmdSmiLibSampler(gpus)
    if name == "amd-smi":
        return AmdSmiCliSampler(gpus)
    if name == "rocm-smi":
        return RocmSmiSampler(gpus)
    if name.startswith("dcgm:") or name.startswith("dcgm="):
        from infermeter.telemetry.dcgm import DcgmExporterSampler

        return DcgmExporterSampler(name[5:], gpus)
    if name.startswith("agent:") or name.startswith("agent="):
        from infermeter.telemetry.agent import RemoteAgentSampler

        return RemoteAgentSampler(name[6:])
    raise ValueError(f"unknown GPU sampler {name!r}; choose from {', '.join(GPU_CHOICES)}, "
                     f"dcgm:URL or agent:URL")


def open_gpu_samplers(choice: str = "auto", gpus: Sequence[int] | None = None
                      ) -> tuple[list[Sampler], list[Availability]]:
    """(open samplers, what was tried).  ``choice`` is ``auto``, ``none``, one sampler
    name, ``dcgm:URL``, ``agent:URL``, or several joined by commas."""
    choice = (choice or "auto").strip()
    if choice == "none":
        return [], [Availability("gpu", False, "GPU sampling turned off")]
    chains: list[list[str]]
    if choice == "auto":
        chains = [["nvml", "nvidia-smi"], ["amdsmi", "amd-smi", "rocm-smi"]]
    else:
        chains = [[c.strip()] for c in choice.split(",") if c.strip()]
    opened: list[Sampler] = []
    tried: list[Availability] = []
    for chain in chains:
        for name in chain:
            sampler = _one(name, gpus)
            avail = sampler.probe()
            tried.append(avail)
            if avail.available:
                opened.append(sampler)
                break
    return opened, tried
