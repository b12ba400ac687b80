"""The hourly price dstack pays for a run: the offer each of its jobs was provisioned on.

``dstack run get NAME --json`` prints dstack's ``Run`` model; each job's latest submission
holds ``job_provisioning_data`` (``JobProvisioningData``): ``price`` (dollars per hour for
the instance, the offer dstack chose), ``backend``, ``region`` and ``instance_type``
(``name``, ``resources.gpus``).  The document is read through dstack's own models
(``dstack._internal.core.models.runs.Run``) when the ``dstack`` package is installed; a
document they refuse is no price, with dstack's message.  A run of several jobs (nodes,
replicas) costs the sum of their offers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from infermeter.errors import safe_text


@dataclass
class DstackOffer:
    run: str
    price_per_hour: float | None  # the whole run: every job's instance
    gpus: int | None
    jobs: list[dict[str, Any]] = field(default_factory=list)  # per job: price, backend, region, instance, gpus
    read_with: str = "dstack models"
    reason: str | None = None  # why there is no price

    def detail(self) -> dict[str, Any]:
        return {"dstack_run": self.run, "dstack_jobs": self.jobs, "read_with": self.read_with}


def _jobs_from_models(doc: dict[str, Any]) -> list[dict[str, Any]]:
    from dstack._internal.core.models.runs import Run  # type: ignore[import-not-found]

    run = Run.model_validate(doc)
    subs = [job.job_submissions[-1] for job in run.jobs if job.job_submissions]
    if not subs and run.latest_job_submission is not None:
        subs = [run.latest_job_submission]
    out = []
    for sub in subs:
        data = sub.job_provisioning_data
        if data is None:
            continue
        itype = data.instance_type
        out.append({"price_per_hour": float(data.price), "backend": str(getattr(data.backend, "value", data.backend)),
                    "region": data.region, "instance": itype.name, "gpus": len(itype.resources.gpus),
                    "gpu_name": itype.resources.gpus[0].name if itype.resources.gpus else None})
    return out


def offer_of(doc: dict[str, Any], name: str = "") -> DstackOffer:
    """The price of a ``dstack run get --json`` document (dstack's ``Run``)."""
    run_name = str(((doc.get("run_spec") or {}).get("run_name")) or name)
    try:
        jobs = _jobs_from_models(doc)
    except ImportError:
        return DstackOffer(run_name, None, None, reason="the dstack package is not installed: its models read the "
                                                        "price (pip install 'infermeter[dstack]')")
    except Exception as exc:  # pydantic's ValidationError, or a shape dstack's models do not expect
        return DstackOffer(run_name, None, None,
                           reason=f"dstack's Run model refused 'dstack run get {run_name}': {safe_text(exc, 200)}")
    if not jobs:
        return DstackOffer(run_name, None, None, reason=f"dstack run {run_name} is not provisioned yet: no offer price")
    return DstackOffer(run_name, sum(j["price_per_hour"] for j in jobs), sum(j["gpus"] for j in jobs), jobs)
