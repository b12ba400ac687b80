"""``infermeter telemetry``: what can be sampled here, a remote-host agent, one scrape."""

from __future__ import annotations

import json
import signal
import threading
import time
from typing import Annotated, Any

import typer
from rich.console import Console

from infermeter.cli.app import app
from infermeter.errors import UserError

telemetry_app = typer.Typer(help="GPU and server telemetry: probe samplers, run the remote agent, scrape /metrics.",
                            no_args_is_help=True, rich_markup_mode=None)
app.add_typer(telemetry_app, name="telemetry")

GpuOpt = Annotated[str, typer.Option("--gpu", help="auto, none, nvml, nvidia-smi, amdsmi, amd-smi, rocm-smi, "
                                                    "dcgm:URL or agent:URL (comma-separated for several)")]
GpusOpt = Annotated[str | None, typer.Option("--gpus", help="GPU indices to sample, e.g. 0,1 (default: all)")]


def _indices(gpus: str | None) -> list[int] | None:
    if not gpus:
        return None
    try:
        return [int(x) for x in gpus.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"--gpus {gpus!r} is not a list of GPU indices", "write it as 0,1,2") from None


def _open(gpu: str, gpus: str | None):
    from infermeter.telemetry.gpu import open_gpu_samplers

    try:
        return open_gpu_samplers(gpu, _indices(gpus))
    except ValueError as exc:
        raise UserError(str(exc), "see 'infermeter telemetry probe --help'") from None


def _brief(s: dict[str, Any]) -> str:
    parts = []
    if s.get("kind") == "gpu":
        parts.append(f"gpu {s.get('gpu')}")
        if s.get("mem_used_bytes") is not None:
            total = s.get("mem_total_bytes")
            parts.append(f"mem {s['mem_used_bytes'] / 2**20:.0f}"
                         + (f"/{total / 2**20:.0f}" if total else "") + f" MiB ({s.get('mem_api')})")
        for key, unit in (("util_pct", "%"), ("power_w", " W"), ("energy_j", " J")):
            if s.get(key) is not None:
                parts.append(f"{key.split('_')[0]} {s[key]:g}{unit}")
    else:
        for key in ("running", "waiting", "kv_usage", "generation_tokens"):
            if s.get(key) is not None:
                parts.append(f"{key} {s[key]:g}")
    return ", ".join(parts)


@telemetry_app.command("probe")
def probe(
    gpu: GpuOpt = "auto",
    gpus: GpusOpt = None,
    metrics: Annotated[str | None, typer.Option("--metrics", help="Also scrape this server (base URL or /metrics URL)")] = None,
    backend: Annotated[str | None, typer.Option("--backend", help="The server's backend (default: recognised from its names)")] = None,
    samples: Annotated[int, typer.Option("--samples", min=1, max=10000, help="Samples per sampler to time")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Which telemetry samplers work on this host, what one sample says, and what a sample costs."""
    from infermeter.telemetry.server_metrics import ServerMetricsSampler

    opened, tried = _open(gpu, gpus)
    if metrics:
        sm = ServerMetricsSampler(metrics, backend)
        avail = sm.probe()
        tried.append(avail)
        if avail.available:
            opened.append(sm)
    report: list[dict[str, Any]] = []
    by_name = {s.name: s for s in opened}
    for a in tried:
        entry = a.to_dict()
        sampler = by_name.get(a.name)
        if sampler is not None:
            costs = []
            last: list[dict[str, Any]] = []
            for _ in range(samples):
                t0 = time.perf_counter()
                last = sampler.sample()
                costs.append(time.perf_counter() - t0)
            costs.sort()
            entry["sample_cost_us"] = {"median": round(costs[len(costs) // 2] * 1e6, 1),
                                       "max": round(costs[-1] * 1e6, 1), "n": len(costs)}
            entry["sample"] = last
            entry.update(sampler.describe())
            sampler.close()
        report.append(entry)
    if as_json:
        print(json.dumps(report, indent=2, default=str))
        return
    out = Console(highlight=False, soft_wrap=True)
    for e in report:
        if not e["available"]:
            out.print(f"{e['name']:16} not available: {e.get('reason')}")
            continue
        cost = e["sample_cost_us"]
        out.print(f"{e['name']:16} available; a sample costs {cost['median']:g} µs (median of {cost['n']}, "
                  f"max {cost['max']:g} µs)")
        for s in e.get("sample") or []:
            out.print(f"{'':16}   {_brief(s)}")


@telemetry_app.command("agent")
def agent(
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to serve on (0: any free port)")] = 9555,
    host: Annotated[str, typer.Option("--host", help="Address to bind; 0.0.0.0 to accept remote clients "
                                                     "(no authentication: trusted networks or SSH tunnels only)")] = "127.0.0.1",
    interval: Annotated[float, typer.Option("--interval", min=0.01, help="Seconds between samples")] = 0.5,
    gpu: GpuOpt = "auto",
    gpus: GpusOpt = None,
    duration: Annotated[float | None, typer.Option("--duration", help="Stop after this many seconds (default: until Ctrl-C)")] = None,
) -> None:
    """Sample this host's GPUs and serve the samples over HTTP (GET /info, GET /samples?since=T)
    for a benchmark running elsewhere (--gpu agent:http://HOST:PORT there)."""
    from infermeter.telemetry.agent import TelemetryAgent

    opened, tried = _open(gpu, gpus)
    err = Console(stderr=True, highlight=False)
    for a in tried:
        if not a.available:
            err.print(f"telemetry agent: {a.name} not available: {a.reason}")
    if not opened:
        err.print("telemetry agent: no GPU sampler works here; serving anyway (/info says why)")
    try:
        server = TelemetryAgent(opened, tried, host=host, port=port, interval=interval)
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", "pick another --port") from None
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
    with server:
        print(f"listening on {server.url}", flush=True)
        try:
            stop.wait(duration)
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)


@telemetry_app.command("scrape")
def scrape(
    url: Annotated[str, typer.Argument(help="The server's base URL or its /metrics URL")],
    backend: Annotated[str | None, typer.Option("--backend", help="vllm, tgi, sglang or llama.cpp (default: recognised)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Scrape a server's /metrics once and print the common series infermeter records."""
    from infermeter.telemetry.server_metrics import ServerMetricsSampler

    sampler = ServerMetricsSampler(url, backend)
    avail = sampler.probe()
    if not avail.available:
        raise UserError(f"cannot use {sampler.shown_url}: {avail.reason}", "check the URL and that the server exports metrics")
    sample = sampler.sample()[0]
    sampler.resolve_histograms(sample)
    if as_json:
        print(json.dumps({"sample": sample, **sampler.describe()}, indent=2))
        return
    out = Console(highlight=False)
    out.print(f"{sampler.shown_url} ({sample['backend']})")
    for key, value in sample.items():
        if key in ("kind", "source", "backend", "hist"):
            continue
        out.print(f"  {key:22} {value:g}" if isinstance(value, (int, float)) else f"  {key:22} {value}")
    for key, h in (sample.get("hist") or {}).items():
        mean = h["sum"] / h["count"] if h["count"] else None
        out.print(f"  {key + ' histogram':22} count {h['count']:g}" + (f", mean {mean * 1e3:.2f} ms" if mean else ""))
    for key, name in sorted(sampler.matched.items()):
        out.print(f"  {key:22} <- {name}", style="dim")
