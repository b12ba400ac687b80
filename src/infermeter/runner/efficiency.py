"""The run's ``efficiency`` block: its price and GPU count from the run's settings (or the
dstack run that serves it), the arithmetic in metrics/efficiency.py (docs/cost.md)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from infermeter.errors import UserError

from infermeter.runner.spec import RunSpec
from infermeter.metrics.efficiency import GpuCount, Price, choose_gpu_count, efficiency, telemetry_gpus


def stated_price(spec: RunSpec) -> Price | None:
    """``--gpu-price`` / a sweep target's ``gpu_price`` (None when none was given)."""
    cost = spec.cost
    if cost.gpu_price is None:
        return None
    source = "spec" if spec.output.cell_id else "--gpu-price"
    return Price(float(cost.gpu_price), cost.gpu_price_per, source)


def dstack_price(spec: RunSpec, read: Callable[..., Any] | None = None) -> tuple[Price | None, GpuCount]:
    """The offer price of ``--dstack-run [PROJECT/]NAME`` (per node: the instances it runs on)."""
    name = spec.cost.dstack_run
    if not name:
        return None, GpuCount(None)
    project, _, run = name.rpartition("/")
    offer = (read or read_offer)(run, project or None)
    if offer.price_per_hour is None:
        return Price(None, source="dstack", detail=offer.detail(), reason=offer.reason), GpuCount(None)
    price = Price(offer.price_per_hour, "node", "dstack", offer.detail())
    return price, GpuCount(offer.gpus, "dstack offer")


def read_offer(name: str, project: str | None = None) -> Any:
    """``dstack run get NAME --json`` through the CLI, its price read by dstack's models
    (servers/dstack_price.py); a failure is an offer with no price and the reason: the run
    is never stopped by it."""
    from infermeter.servers.dstack import DstackRun
    from infermeter.servers.dstack_price import DstackOffer, offer_of

    try:
        state = DstackRun(Path.cwd() / ".dstack.yml", name=name, project=project, timeout=60.0).get()
    except UserError as exc:
        return DstackOffer(name, None, None, reason=f"dstack run {name}: {exc.problem}")
    return offer_of(state.raw, name)


def efficiency_for(result: dict[str, Any], spec: RunSpec, *, read_dstack: Callable[..., Any] | None = None
                   ) -> dict[str, Any]:
    """The efficiency block of ``result`` (its telemetry already in place)."""
    telemetry = (result.get("infermeter") or {}).get("telemetry")
    price = stated_price(spec)
    offer_gpus = GpuCount(None)
    if price is None:
        price, offer_gpus = dstack_price(spec, read_dstack)
    gpus = choose_gpu_count(GpuCount(spec.cost.gpu_count, "--gpu-count"),
                            GpuCount(spec.cost.launch_gpu_count, "launch profile"),
                            offer_gpus, GpuCount(telemetry_gpus(telemetry), "telemetry"))
    return efficiency(result, telemetry, price, gpus)
