"""Per-request records and telemetry series for a few cells of the synthetic example store, so
that its report has distributions and timelines.  Every number is made up from the cell's
synthetic summary (a batching model plus noise); nothing was measured."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson

from infermeter.core.records import RequestRecord
from infermeter.storage.files import RecordWriter, write_bytes_atomic

RECORDS = "result.records.jsonl"
SERIES = "result.telemetry.jsonl"
EVENT_TOKENS = 4  # tokens per streamed event


def synthetic_records(result: dict[str, Any], mode: str, value: float, rnd: random.Random) -> list[RequestRecord]:
    n, out_len = int(result["num_prompts"]), int(result["total_output_tokens"] / max(result["completed"], 1))
    in_len = int(result["total_input_tokens"] / max(result["completed"], 1))
    mean_ttft, tpot = result["mean_ttft_ms"] / 1000, result["mean_tpot_ms"] / 1000
    failed = set(rnd.sample(range(n), int(result.get("failed") or 0)))
    t, out = 0.0, []
    for i in range(n):
        sent = rnd.uniform(0, 0.004) if mode == "burst" else t
        t += rnd.expovariate(value) if mode == "rate" else 0.0
        ttft = mean_ttft * rnd.gammavariate(4.0, 0.25)
        rec = RequestRecord(index=i, warmup=False, scheduled=sent, input_len=in_len, requested_output_len=out_len,
                            queued=sent, sent=sent)
        if i in failed:
            rec.end, rec.status, rec.error = sent + 0.002, 429, "http_429"
            out.append(rec)
            continue
        first = sent + ttft
        times = [first]
        for _ in range(out_len // EVENT_TOKENS - 1):
            times.append(times[-1] + EVENT_TOKENS * tpot * rnd.gammavariate(9.0, 1 / 9))
        rec.headers, rec.first_token, rec.end, rec.token_times = first - 0.001, first, times[-1], times
        rec.status, rec.ok, rec.output_tokens_server = 200, True, out_len
        rec.output_events, rec.finish_reason = len(times), "length"
        out.append(rec)
    return out


def synthetic_series(records: list[RequestRecord], profile: dict[str, float], origin: float, *,
                     kv: bool, rnd: random.Random) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    end = max((r.end for r in records if r.end is not None), default=1.0)
    spans = [("ready", -3.0, -1.0), ("warmup", -1.0, 0.0), ("load", 0.0, end), ("cooldown", end, end + 2.0)]
    phases = [{"name": name, "start": origin + a, "end": origin + b, "start_rel": a, "end_rel": b}
              for name, a, b in spans]
    gib = 2 ** 30
    ready, peak = profile["ready"] * 2 ** 20, max(profile["peak"], profile["ready"] * 1.01) * 2 ** 20
    samples, t = [], -3.0
    step = max(0.25, (end + 5) / 200)
    while t <= end + 2.0:
        phase = next(name for name, a, b in spans if a <= t <= b)
        in_flight = sum(1 for r in records if r.sent is not None and r.sent <= t < (r.end or 0))
        running = min(in_flight, profile["max_batch"])
        use = min(1.0, running / profile["max_batch"]) * 0.92
        server: dict[str, Any] = {"kind": "server", "t": origin + t, "t_rel": round(t, 3), "phase": phase,
                                  "running": running, "waiting": in_flight - running}
        if kv:
            server["kv_usage"] = round(use, 4)
        samples.append(server)
        samples.append({"kind": "gpu", "gpu": 0, "t": origin + t, "t_rel": round(t, 3), "phase": phase,
                        "mem_used_bytes": int(ready + (peak - ready) * use), "mem_total_bytes": 80 * gib,
                        "power_w": round(95 + 560 * min(1.0, running / profile["knee"]) * rnd.gauss(1, 0.03), 1)})
        t += step
    meta = {"kind": "meta", "schema": 1, "origin_epoch": origin,
            "window": {"start_epoch": origin, "end_epoch": origin + end, "duration_s": end}, "phases": phases}
    return meta, samples


def write_samples(folder: Path, result: dict[str, Any], profile: dict[str, float], mode: str, value: float,
                  rnd: random.Random, *, kv: bool) -> None:
    """Write the cell's records and telemetry series beside its result and name them in it."""
    records = synthetic_records(result, mode, value, rnd)
    folder.mkdir(parents=True, exist_ok=True)
    with RecordWriter(folder / RECORDS) as writer:
        for r in records:
            writer(r)
    meta, samples = synthetic_series(records, profile, 1.767e9, kv=kv, rnd=rnd)
    write_bytes_atomic(folder / SERIES, [orjson.dumps(x) + b"\n" for x in [meta, *samples]])
    im = result["infermeter"]
    im["records_file"] = RECORDS
    im["telemetry"] = {**(im.get("telemetry") or {}), "series_file": SERIES}
