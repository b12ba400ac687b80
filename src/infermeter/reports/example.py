"""A synthetic experiment store with plausible numbers: the documentation's example report
and the tests' fixtures.  Every number here is made up (a simple batching model plus noise);
nothing was measured."""

from __future__ import annotations

import math
import random
import re
from pathlib import Path
from typing import Any

from infermeter.reports.example_records import write_samples
from infermeter.storage.files import write_json_atomic

# per target: decode ms/token at batch 1, batch knee, prefill tok/s, max batch, memory after load / peak (MiB)
_PROFILES: dict[str, dict[str, float]] = {
    "vllm": {"t0": 7.0, "knee": 64, "prefill": 42000, "max_batch": 256, "ready": 71200, "peak": 72600, "cap": 24},
    "sglang": {"t0": 6.6, "knee": 80, "prefill": 46000, "max_batch": 256, "ready": 70400, "peak": 71300, "cap": 26},
    "tgi": {"t0": 8.1, "knee": 48, "prefill": 31000, "max_batch": 128, "ready": 66100, "peak": 75800, "cap": 16},
}

SHORT_BURSTS = [2 ** i for i in range(12)]  # 1 .. 2048
LONG_BURSTS = [2 ** i for i in range(9)]  # 1 .. 256
SINGLE_LENGTHS = [16384, 32768, 65536, 131072]
RATES = [1, 2, 4, 8, 16, 32, 64]
RECORDED_BURST, RECORDED_RATE = 64, 8  # the cells with records and telemetry


def _profile(name: str, i: int) -> dict[str, float]:
    if name in _PROFILES:
        return _PROFILES[name]
    rnd = random.Random(sum(map(ord, name)) + i)
    return {"t0": rnd.uniform(6, 10), "knee": rnd.choice([32, 48, 64, 96]), "prefill": rnd.uniform(25000, 50000),
            "max_batch": rnd.choice([128, 256]), "ready": rnd.uniform(60000, 72000), "peak": 0,
            "cap": rnd.uniform(12, 28)}


def _burst_result(p: dict[str, float], n: int, in_len: int, out_len: int, rnd: random.Random) -> dict[str, Any]:
    noise = lambda: rnd.gauss(1.0, 0.025)  # noqa: E731
    mb = p["max_batch"]
    waves = math.ceil(n / mb)
    batch = min(n, mb)
    tpot = p["t0"] * (1 + (batch / p["knee"]) ** 0.85) * noise()
    prefill_s = batch * in_len / p["prefill"]
    ttft_first = (0.012 + prefill_s) * 1000 * noise()
    wave_s = ttft_first / 1000 + out_len * tpot / 1000
    duration = waves * wave_s
    mean_ttft = ttft_first * (0.55 + 0.45 / batch) + (waves - 1) / 2 * wave_s * 1000
    p99_ttft = ttft_first + (waves - 1) * wave_s * 1000
    return _result(n, n, in_len, out_len, duration, mean_ttft, p99_ttft, tpot, rnd)


def _result(n: int, completed: int, in_len: int, out_len: int, duration: float, mean_ttft: float,
            p99_ttft: float, tpot: float, rnd: random.Random) -> dict[str, Any]:
    total_in, total_out = completed * in_len, completed * out_len
    r: dict[str, Any] = {
        "num_prompts": n, "completed": completed, "failed": n - completed, "duration": duration,
        "total_input_tokens": total_in, "total_output_tokens": total_out,
        "request_throughput": completed / duration, "output_throughput": total_out / duration,
        "total_token_throughput": (total_in + total_out) / duration,
    }
    itl = tpot * 0.985
    for m, mean, p99 in (("ttft", mean_ttft, max(p99_ttft, mean_ttft)), ("tpot", tpot, tpot * 1.12),
                         ("itl", itl, itl * 1.9), ("e2el", mean_ttft + out_len * tpot, p99_ttft + out_len * tpot * 1.1)):
        r[f"mean_{m}_ms"], r[f"median_{m}_ms"], r[f"p99_{m}_ms"] = mean, mean * rnd.uniform(0.9, 0.99), p99
    return r


def write_example_store(root: str | Path, targets: list[str] | tuple[str, ...] = ("vllm", "sglang", "tgi"), *,
                        repeats: int = 3, seed: int = 0, name: str = "synthetic-example",
                        quick: bool = False, workloads: tuple[str, ...] = ("short", "long", "single", "rate"),
                        memory: bool = True, records: bool = True) -> Path:
    """Write a store of synthetic results for ``targets``: sonnet-like short prompts (bursts 1..2048,
    ``repeats`` repeats), 10k-token prompts (bursts 1..256), single prompts of 16k..128k tokens
    (3 repeats) and Poisson rates 1..64 req/s.  ``quick`` keeps a few cells per workload.  ``records``:
    per-request records and telemetry series for the cells of burst 64 and rate 8."""
    from infermeter.experiments.store import Store

    root = Path(root)
    rnd = random.Random(seed)
    store = Store(root)
    store.write_meta(name, "sweep", "SYNTHETIC example data — not a measurement")
    short_b = ([1, 8, 64] if quick else SHORT_BURSTS) if "short" in workloads else []
    long_b = ([1, 128] if quick else LONG_BURSTS) if "long" in workloads else []
    singles = (SINGLE_LENGTHS[:2] if quick else SINGLE_LENGTHS) if "single" in workloads else []
    rates = ([1, 8, 64] if quick else RATES) if "rate" in workloads else []
    seq = 0

    def put(target: str, workload: str, dataset: str, in_len: int, out_len: int, mode: str, value: float,
            rep: int, result: dict[str, Any], backend: str, extra: dict[str, Any],
            samples: dict[str, float] | None = None) -> None:
        nonlocal seq
        seq += 1
        v = int(value) if float(value).is_integer() else value
        cid = f"{re.sub(r'[^A-Za-z0-9_-]+', '_', target)}.{workload}.{mode}-{v}.r{rep}"
        result = {"date": "20260101-000000", "backend": backend, "model_id": "meta-llama/Llama-3.1-8B-Instruct",
                  "request_rate": value if mode == "rate" else "inf", "burstiness": 1.0,
                  "max_concurrency": value if mode == "concurrency" else None, **result,
                  "experiment": name, "experiment_cell": cid, "experiment_target": target,
                  "experiment_workload": workload, "experiment_repeat": rep}
        im: dict[str, Any] = {"schema_version": 1, "load": {"mode": mode, "value": value},
                              "work": {"exact": True}, "client": {"client_bound": False}, "stopped_early": None,
                              "warnings": [], "errors_by_class": {}}
        im.update(extra)
        result["infermeter"] = im
        if samples is not None:  # records and telemetry: the report's distributions and timelines
            write_samples(store.cell_dir(cid), result, samples, mode, value, random.Random(seq),
                          kv=backend != "tgi")
        definition = {"cell_id": cid, "seq": seq, "target": target, "workload": workload, "dataset": dataset,
                      "input_len": in_len, "output_len": out_len, "load_mode": mode, "load_value": value,
                      "num_prompts": result["num_prompts"], "repeat": rep, "fingerprint": f"synthetic{seq}",
                      "settings": {"target": {"backend": backend, "model": result["model_id"]}},
                      "status": "done", "attempt": 1, "started": 1.767e9 + seq, "finished": 1.767e9 + seq + 1,
                      "error": None, "source": "infermeter"}
        write_json_atomic(store.cell_dir(cid) / "result.json", result)
        write_json_atomic(store.cell_dir(cid) / "cell.json", definition)

    for ti, target in enumerate(targets):
        p = _profile(target, ti)
        backend = target if target in _PROFILES else "openai"
        mem = {"telemetry": {"summary": {"gpus": {"0": {
            "name": "NVIDIA H100 80GB HBM3", "mem_total_bytes": 81559 * 1048576,
            "ready": {"mem_used_bytes": int(p["ready"] * 1048576)},
            "peak": {"mem_used_bytes": int(max(p["peak"], p["ready"] * 1.01) * 1048576)}}}}}} if memory else {}
        for rep in range(repeats):
            for b in short_b:
                r = _burst_result(p, b, 80, 128, rnd)
                extra = dict(mem)
                if target == "tgi" and b == short_b[-1] and b >= 64:
                    r["total_output_tokens"] = int(r["total_output_tokens"] * 0.93)
                    r["output_throughput"] *= 0.93
                    extra["work"] = {"exact": False, "shorter": 143}
                    extra["warnings"] = ["143 requests produced fewer output tokens than asked (ignore_eos not honoured?)"]
                if target == "sglang" and b == short_b[-1] and b >= 64:
                    extra["client"] = {"client_bound": True, "reasons": ["event-loop lag p99 41 ms"]}
                put(target, "short", "sonnet", 80, 128, "burst", b, rep, r, backend, extra,
                    p if b == RECORDED_BURST and records else None)
        for b in long_b:
            r = _burst_result(p, b, 10000, 128, rnd)
            extra = dict(mem)
            if target == "tgi" and b >= 128:
                failed = b // 8
                r["completed"] -= failed
                r["failed"] = failed
                r["errors"] = ["" for _ in range(r["completed"])] + [
                    "HTTP 503: <html><body><h1>503 Service Unavailable</h1> queue full</body></html>"] * failed
                r["total_output_tokens"] = r["completed"] * 128
                r["output_throughput"] = r["total_output_tokens"] / r["duration"]
                r["request_throughput"] = r["completed"] / r["duration"]
                r["total_input_tokens"] = r["completed"] * 10000
                r["total_token_throughput"] = (r["total_input_tokens"] + r["total_output_tokens"]) / r["duration"]
                extra["errors_by_class"] = {"http_5xx": failed}
            put(target, "long", "random", 10000, 128, "burst", b, 0, r, backend, extra)
        for rep in range(3):
            for n_in in singles:
                slow = 1 + (n_in / 131072) ** 1.3 * 1.8  # attention cost grows with the prompt
                r = _burst_result({**p, "prefill": p["prefill"] / slow}, 1, n_in, 128, rnd)
                put(target, f"in{n_in // 1024}k", "random", n_in, 128, "burst", 1, rep, r, backend, dict(mem))
        for rate in rates:
            cap = p["cap"]
            n = int(rate * 120)
            achieved = min(rate, cap) * rnd.gauss(1, 0.01)
            over = rate > cap
            failed = int(n * (1 - cap / rate) * 0.3) if over and target == "tgi" else 0
            duration = (n - failed) / achieved
            base_ttft = 35 * (1 + 0.04 * rate) * rnd.gauss(1, 0.03)
            mean_ttft = base_ttft * (1 + (rate / cap) ** 4) if not over else base_ttft + 1000 * (n / achieved - 120) / 2
            tpot = p["t0"] * (1 + (min(rate, cap) * 2.2 / p["knee"]) ** 0.85)
            r = _result(n, n - failed, 80, 128, duration, mean_ttft, mean_ttft * 2.4, tpot, rnd)
            extra = dict(mem)
            extra["rates"] = {"sent_rate": rate * rnd.gauss(1, 0.01), "completion_rate": achieved}
            if failed:
                r["errors"] = ["HTTP 429: Model is overloaded"] * failed
                extra["errors_by_class"] = {"http_429": failed}
                extra["stopped_early"] = None
            put(target, "short-rate", "sonnet", 80, 128, "rate", rate, 0, r, backend, extra,
                p if rate == RECORDED_RATE and records else None)
    store.rebuild_index()
    return root
