"""Per-run telemetry summary from the sampled series (pure functions: testable on
synthetic series).

GPU, per device: memory when ``ready`` (the last sample before traffic: the number a
screenshot would show), the ``idle`` baseline, the peak (with its time and phase), and
over the measured window: mean utilization, mean power, energy (energy.py: the driver's
energy counter when it has one, else power integrated over time, n/a with the reason
where samples are missing) and energy per output token.

Server: over the window, peak KV usage, mean running batch, mean/max queue depth,
counter deltas (preemptions, tokens, prefix-cache hits), and the server's own latency
histograms' deltas (mean and approximate quantiles) beside the client's numbers.
Counter deltas span the last scrape at or before the window's start to the first scrape
at or after its end (``bracket``); at 1 Hz that is up to a second more on each side.
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

from infermeter.core.samplecolumn import SampleColumn
from infermeter.telemetry.energy import window_energy
from infermeter.telemetry.phases import LOAD, READY
from infermeter.telemetry.prom import Histogram

QUANTILES = (0.5, 0.9, 0.99)


def _round(v: float | None, nd: int = 3) -> float | None:
    return None if v is None else round(v, nd)


def _mean(values: Iterable[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return sum(vals) / len(vals) if vals else None


def _rel(t: float | None, origin: float | None) -> float | None:
    return None if t is None or origin is None else round(t - origin, 6)


def _gpu_key(s: dict[str, Any]) -> str:
    host = s.get("host") or ""
    inst = s.get("mig_instance")
    key = f"{s.get('gpu')}" + (f"/{inst}" if inst else "")
    return f"{host}:{key}" if host else key


def _process_mem(s: dict[str, Any], pid: int | None) -> int | None:
    if pid is None:
        return None
    for p in s.get("processes") or []:
        if p.get("pid") == pid:
            return p.get("used_bytes")
    return None


def summarize_gpus(samples: Sequence[dict[str, Any]], *, window: tuple[float, float] | None,
                   origin: float | None, server_pid: int | None = None,
                   intervals: dict[str, float] | None = None) -> dict[str, Any]:
    """Per GPU: memory by phase and, over ``window``, utilization, power and energy
    (energy.py; ``intervals``: each sampler's interval by its name, for the gap rule)."""
    by_gpu: dict[str, list[dict[str, Any]]] = {}
    for s in samples:
        if s.get("kind") == "gpu":
            by_gpu.setdefault(_gpu_key(s), []).append(s)
    gpus: dict[str, Any] = {}
    for key, series in sorted(by_gpu.items()):
        series.sort(key=lambda s: s["t"])
        mem = [s for s in series if s.get("mem_used_bytes") is not None]
        g: dict[str, Any] = {
            "name": next((s.get("name") for s in reversed(series) if s.get("name")), None),
            "source": series[-1].get("source"),
            "mem_api": series[-1].get("mem_api"),
            "mem_total_bytes": next((s.get("mem_total_bytes") for s in reversed(series)
                                     if s.get("mem_total_bytes")), None),
            "samples": len(series),
        }
        idle = [s for s in mem if s.get("phase") == "idle"]
        if idle:
            g["idle_mem_used_bytes"] = idle[-1]["mem_used_bytes"]
        ready = [s for s in mem if s.get("phase") == READY]
        if ready:
            last = ready[-1]
            g["ready"] = {"mem_used_bytes": last["mem_used_bytes"], "t_rel": _rel(last["t"], origin),
                          "max_mem_used_bytes": max(s["mem_used_bytes"] for s in ready),
                          "server_process_mem_bytes": _process_mem(last, server_pid)}
            if g["mem_total_bytes"]:
                g["ready"]["mem_used_fraction"] = _round(last["mem_used_bytes"] / g["mem_total_bytes"], 4)
        if mem:
            peak = max(mem, key=lambda s: s["mem_used_bytes"])
            g["peak"] = {"mem_used_bytes": peak["mem_used_bytes"], "t_rel": _rel(peak["t"], origin),
                         "phase": peak.get("phase"),
                         "server_process_mem_bytes": _process_mem(peak, server_pid)}
            if g["mem_total_bytes"]:
                g["peak"]["mem_used_fraction"] = _round(peak["mem_used_bytes"] / g["mem_total_bytes"], 4)
        if window is not None:
            start, end = window
            inside = [s for s in series if start <= s["t"] <= end]
            energy_pts = [(s["t"], s["energy_j"]) for s in series if s.get("energy_j") is not None]
            power_pts = [(s["t"], s["power_w"]) for s in series if s.get("power_w") is not None]
            interval = (intervals or {}).get(str(series[-1].get("source")))
            energy = window_energy(energy_pts, power_pts, start, end, interval=interval)
            in_mem = [s["mem_used_bytes"] for s in inside if s.get("mem_used_bytes") is not None]
            g["window"] = {
                "samples": len(inside),
                "mean_util_pct": _round(_mean(s.get("util_pct") for s in inside), 2),
                "max_util_pct": max((s["util_pct"] for s in inside if s.get("util_pct") is not None), default=None),
                "mean_power_w": _round(_mean(s.get("power_w") for s in inside), 2),
                "max_power_w": max((s["power_w"] for s in inside if s.get("power_w") is not None), default=None),
                "peak_mem_used_bytes": max(in_mem, default=None),
                "energy_j": _round(energy.joules, 3),
                "energy_method": energy.method,
            }
            if energy.reason:  # why it is n/a, or why the counter was passed over
                g["window"]["energy_note" if energy.method else "energy_na"] = energy.reason
        gpus[key] = g
    return gpus


def _bracket(series: Sequence[dict[str, Any]], start: float, end: float
             ) -> tuple[dict[str, Any] | None, dict[str, Any] | None, bool]:
    """(last scrape at/before start, first at/after end, exact): falls back to the
    first/last scrape inside the window when the window is not bracketed."""
    if not series:
        return None, None, False
    # a scrape reads the server somewhere between its start (t) and its answer
    before = [s for s in series if s["t"] + (s.get("scrape_ms") or 0.0) / 1e3 <= start]
    after = [s for s in series if s["t"] >= end]
    a = before[-1] if before else series[0]
    b = after[0] if after else series[-1]
    return a, b, bool(before and after)


def _delta(a: dict[str, Any], b: dict[str, Any], key: str) -> float | None:
    va, vb = a.get(key), b.get(key)
    if va is None or vb is None:
        return None
    return vb - va if vb >= va else vb  # a reset (server restart) counts from zero


def _quantiles_ms(h: Histogram) -> dict[str, Any]:
    out: dict[str, Any] = {"count": int(h.count), "mean_ms": _round(h.mean * 1e3 if h.mean is not None else None)}
    for q in QUANTILES:
        v = h.quantile(q)
        out[f"p{int(q * 100)}_ms"] = _round(v * 1e3 if v is not None else None)
    return out


def _client_ms(values: Sequence[float] | SampleColumn) -> dict[str, Any] | None:
    if not len(values):
        return None
    col = values if isinstance(values, SampleColumn) else _column(values)
    out = {"count": len(col), "mean_ms": _round(col.mean() * 1e3)}
    for q, v in zip(QUANTILES, col.percentile([q * 100 for q in QUANTILES])):
        out[f"p{int(q * 100)}_ms"] = _round(v * 1e3)
    return out


def _column(values: Iterable[float]) -> SampleColumn:
    col = SampleColumn()
    col.extend(values)
    return col


def summarize_server(samples: Sequence[dict[str, Any]], *, window: tuple[float, float] | None,
                     origin: float | None, client: dict[str, Sequence[float]] | None = None) -> dict[str, Any]:
    series = sorted((s for s in samples if s.get("kind") == "server"), key=lambda s: s["t"])
    out: dict[str, Any] = {"samples": len(series)}
    if not series:
        return out
    out["backend"] = series[-1].get("backend")
    mean_scrape = _mean(s.get("scrape_ms") for s in series)
    out["mean_scrape_ms"] = _round(mean_scrape)
    out["mean_parse_ms"] = _round(_mean(s.get("parse_ms") for s in series))
    if window is None:
        return out
    start, end = window
    inside = [s for s in series if start <= s["t"] <= end]
    w: dict[str, Any] = {"samples": len(inside)}
    kv = [s["kv_usage"] for s in inside if s.get("kv_usage") is not None]
    w["peak_kv_usage"] = _round(max(kv), 4) if kv else None
    w["mean_kv_usage"] = _round(_mean(kv), 4)
    running = [s["running"] for s in inside if s.get("running") is not None]
    waiting = [s["waiting"] for s in inside if s.get("waiting") is not None]
    w["mean_running"] = _round(_mean(running), 3)
    w["max_running"] = max(running) if running else None
    w["mean_waiting"] = _round(_mean(waiting), 3)
    w["max_waiting"] = max(waiting) if waiting else None
    if running:
        top = max((s for s in inside if s.get("running") is not None), key=lambda s: s["running"])
        w["max_running_t_rel"] = _rel(top["t"], origin)
    a, b, exact = _bracket(series, start, end)
    if a is not None and b is not None:
        w["bracket"] = {"start_t_rel": _rel(a["t"], origin), "end_t_rel": _rel(b["t"], origin), "exact": exact}
        for key in ("preemptions", "prompt_tokens", "generation_tokens", "requests", "prefix_queries",
                    "prefix_hits", "n_decode"):
            d = _delta(a, b, key)
            if d is not None:
                w[key] = d
        if w.get("prefix_queries"):
            w["prefix_hit_rate"] = _round(w.get("prefix_hits", 0.0) / w["prefix_queries"], 4)
        else:
            rates = [s["prefix_hit_rate"] for s in inside if s.get("prefix_hit_rate") is not None]
            if rates:
                w["prefix_hit_rate"] = _round(rates[-1], 4)  # the server's own running rate
        latency: dict[str, Any] = {}
        with_hist = [s for s in series if s.get("hist")]
        ha, hb, hexact = _bracket(with_hist, start, end)
        if hb is not None:
            w["hist_bracket"] = {"start_t_rel": _rel(ha["t"], origin) if ha else None,
                                 "end_t_rel": _rel(hb["t"], origin), "exact": hexact}
        for key in ("ttft", "itl", "e2e", "queue"):
            after = (hb or {}).get("hist", {}).get(key)
            if after is None:
                continue
            before = (ha or {}).get("hist", {}).get(key) if ha is not hb else None
            h = Histogram.from_json(after).delta(Histogram.from_json(before) if before else None)
            entry: dict[str, Any] = {"server": _quantiles_ms(h)}
            if client and client.get(key) is not None and len(client[key]):
                entry["client"] = _client_ms(client[key])
            latency[key] = entry
        for key, values in (client or {}).items():  # the client's own, where the server exports nothing
            if key not in latency and len(values):
                latency[key] = {"server": None, "client": _client_ms(values)}
        if latency:
            w["latency"] = latency
    out["window"] = w
    return out


def window_inputs(records: Iterable[Any], start_epoch: float
                  ) -> tuple[tuple[float, float], int, dict[str, SampleColumn]]:
    """``window_of``, ``output_tokens_of`` and ``client_latencies`` in one pass over the records."""
    last: float | None = None
    tokens = 0

    def measured() -> Iterable[Any]:
        nonlocal last, tokens
        for r in records:
            end = getattr(r, "end", None)
            if end is not None and math.isfinite(end) and (last is None or end > last):
                last = end
            if getattr(r, "ok", False):
                tokens += r.output_tokens
            yield r

    latencies = client_latencies(measured())
    return (start_epoch, start_epoch + (last if last is not None else 0.0)), tokens, latencies


def client_latencies(records: Iterable[Any]) -> dict[str, SampleColumn]:
    """Client TTFT / ITL / E2E (seconds) of the measured, successful records, as columns (which
    spill to disk past their memory bound: a long run's ITLs are tens of millions of values)."""
    ttft, itl, e2e = SampleColumn(), SampleColumn(), SampleColumn()
    for r in records:
        if not getattr(r, "ok", False) or getattr(r, "warmup", False):
            continue
        if r.ttft is not None:
            ttft.append(r.ttft)
        if r.e2el is not None:
            e2e.append(r.e2el)
        times = getattr(r, "token_times", None)
        if times and len(times) > 1:
            itl.extend([b - a for a, b in zip(times, times[1:])])
    return {"ttft": ttft, "itl": itl, "e2e": e2e}


def window_of(records: Iterable[Any], start_epoch: float) -> tuple[float, float]:
    """The measured window on the wall clock: the origin to the last answer."""
    last = None
    for r in records:
        end = getattr(r, "end", None)
        if end is not None and math.isfinite(end) and (last is None or end > last):
            last = end
    return start_epoch, start_epoch + (last if last is not None else 0.0)


def output_tokens_of(records: Iterable[Any]) -> int:
    return sum(r.output_tokens for r in records if getattr(r, "ok", False))


__all__ = ["summarize_gpus", "summarize_server", "window_energy", "client_latencies", "window_inputs", "window_of",
           "output_tokens_of", "LOAD", "READY"]
