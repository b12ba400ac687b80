"""A soak run at a fixed request rate: is the schedule held, is memory flat, are there GC pauses?

Starts the in-tree test server (pinned to the first core; TTFT and ITL injected, short outputs,
no per-request log), then runs ``infermeter run`` in a child process pinned to the other core:
Poisson arrivals at ``--rate`` requests/s for ``--duration`` seconds (``--duration``: nothing is
sent after it, requests in flight get a grace).  Once a second it reads the client's VmRSS from
/proc (every process of it: ``--workers`` starts children).  It reports:

* time from the client process's start to its first request sent (from the records);
* the schedule: requests sent per minute against rate x 60, and the achieved send rate;
* memory: RSS in the first minute and the last, its slope over the run (MiB per hour), the peak;
* the client's longest garbage-collector pause in the window and its event-loop lag;
* the latency percentiles (exact, from the records) and those of the run's live histograms.

``--scale-out`` runs the same soak twice more, split across ``--workers 2`` and across two shard
processes (``--shard k/2`` with one ``--start-at``) merged with ``infermeter merge``, and compares
each one's percentiles with the single process's: the merged live histograms against the exact
percentiles of the pooled records (they must agree within the histograms' stated error), and the
runs against each other.

    python benchmarks/soak.py                                   # 60 s at 1,000 req/s (the default)
    python benchmarks/soak.py --rate 1000 --duration 3600       # the full one-hour soak
    python benchmarks/soak.py --duration 60 --scale-out --json soak.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from memory_soak import tree_rss_kib  # noqa: E402  (the same /proc reading)

PERCENTILES = (50, 90, 99)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())", *args]


def run_args(a, srv, tok_dir: Path, out: Path, name: str, *extra: str) -> list[str]:
    return cli("run", "--backend", "vllm", "--base-url", srv.base_url, "--model", "test-model",
               "--tokenizer", str(tok_dir), "--dataset-name", "random", "--random-input-len", str(a.input_len),
               "--random-output-len", str(a.output_len), "--ignore-eos", "--request-rate", str(a.rate),
               "--duration", str(a.duration), "--disable-tqdm", "--no-telemetry", "--save-result",
               "--result-dir", str(out), "--result-filename", name, "--progress-interval", str(a.progress_interval),
               "--metric-percentiles", ",".join(map(str, PERCENTILES)), "--percentile-metrics", "ttft,tpot,itl,e2el",
               *extra)


def watch(procs: list[subprocess.Popen], interval: float, log: Path) -> list[tuple[float, int]]:
    """(seconds since start, RSS KiB of every process and its children) until all end; their
    stderr (the --progress-interval lines) goes to ``log``."""
    t0 = time.monotonic()
    samples = []
    while any(p.poll() is None for p in procs):
        rss = sum(tree_rss_kib(p.pid) for p in procs if p.poll() is None)
        samples.append((round(time.monotonic() - t0, 2), rss))
        time.sleep(interval)
    for p in procs:
        _, err = p.communicate()
        with log.open("ab") as f:
            f.write(err)
        if p.returncode not in (0, 5):
            sys.exit(f"the client failed (exit {p.returncode}):\n{err.decode(errors='replace')[-3000:]}")
    return samples


def schedule(records: Path, duration: float, start_epoch: float) -> dict:
    """Sends against the schedule, per window (60 s; a quarter of a shorter run), in one streaming
    pass over the records: each window's requests sent against those scheduled in it (Poisson
    counts vary by themselves: the schedule, not rate x window, is what must be held), and the
    send lag (sent - scheduled)."""
    import numpy as np
    import orjson

    from infermeter.core.samplecolumn import SampleColumn

    win = 60.0 if duration >= 240 else duration / 4
    sent_n: dict[int, int] = {}
    sched_n: dict[int, int] = {}
    first = None
    with SampleColumn() as lag, records.open("rb") as f:
        for line in f:
            rec = orjson.loads(line)
            sent, due = rec.get("sent"), rec.get("scheduled")
            if rec.get("warmup") or sent is None or due is None:
                continue
            first = sent if first is None or sent < first else first
            sent_n[int(sent // win)] = sent_n.get(int(sent // win), 0) + 1
            sched_n[int(due // win)] = sched_n.get(int(due // win), 0) + 1
            lag.append(sent - due)
        whole = range(int(duration // win))
        off = [abs(sent_n.get(w, 0) - sched_n.get(w, 0)) / sched_n[w] for w in whole if sched_n.get(w)]
        p99, worst = (lag.percentile([99], 1e3)[0], lag.max() * 1e3) if len(lag) else (None, None)
    return {"first_send_epoch": None if first is None else start_epoch + first, "window_s": win,
            "sent_per_window": [sent_n.get(w, 0) for w in whole],
            "scheduled_per_window": [sched_n.get(w, 0) for w in whole],
            "worst_window_off_pct": None if not off else round(100 * float(np.max(off)), 3),
            "send_lag_p99_ms": p99, "send_lag_max_ms": worst}


def rss_report(samples: list[tuple[float, int]], duration: float, first_send_s: float | None) -> dict:
    import numpy as np

    t0 = first_send_s or 0.0
    during = [(t, r) for t, r in samples if t0 <= t <= t0 + duration]
    first_min = [r for t, r in during if t < t0 + 60]
    last_min = [r for t, r in during if t >= t0 + duration - 60]
    slope = None
    if len(during) > 10:
        ts, rs = np.array([t for t, _ in during]), np.array([r for _, r in during]) / 1024
        slope = float(np.polyfit(ts, rs, 1)[0] * 3600)
    mib = lambda xs: round(max(xs) / 1024, 1) if xs else None  # noqa: E731
    return {"first_minute_max_mib": mib(first_min), "last_minute_max_mib": mib(last_min),
            "slope_mib_per_hour": None if slope is None else round(slope, 1),
            "peak_mib": mib([r for _, r in samples]), "peak_during_mib": mib([r for _, r in during])}


def summarise(result: dict, records: Path, started_epoch: float, samples, a) -> dict:
    from infermeter.core.livestats import LatencySnapshot

    im = result["infermeter"]
    sched = schedule(records, a.duration, im["start_epoch"])
    first_s = None if sched["first_send_epoch"] is None else sched["first_send_epoch"] - started_epoch
    client = im["client"]
    live = LatencySnapshot.from_dict(im["histograms"]) if im.get("histograms") else None
    pct = {}
    for name in ("ttft", "itl", "e2el"):
        for p in PERCENTILES:
            exact = result.get(f"p{p}_{name}_ms", im["metrics_ms"].get(f"p{p}_{name}_ms"))
            approx = None if live is None else getattr(live, name).percentile(p)
            pct[f"p{p}_{name}_ms"] = {"exact": exact, "histogram": None if approx is None else approx * 1e3}
    return {
        "completed": result["completed"], "failed": result["failed"], "duration_s": result["duration"],
        "sent_rate": im["rates"]["sent_rate"], "target_rate": a.rate,
        "sent_rate_off_pct": round(100 * (im["rates"]["sent_rate"] / a.rate - 1), 3) if im["rates"]["sent_rate"] else None,
        "first_request_s": None if first_s is None else round(first_s, 3),
        "startup": im.get("startup"),  # the client's own account of its phases (runner/startup.py)
        "prompt_wait_s": client.get("prompt_wait_s"),
        "schedule": sched, "rss": rss_report(samples, a.duration, first_s),
        "gc_pause_max_ms": client.get("gc_pause_max_ms"), "gc_collections": client.get("gc_collections"),
        "loop_lag_p99_ms": client.get("loop_lag_p99_ms"), "dispatch_lag_p99_ms": client.get("dispatch_lag_p99_ms"),
        "validity": im["validity"]["label"], "percentiles": pct,
        "histogram_rel_error": None if live is None else live.rel_error,
    }


def within_bound(summary: dict) -> bool | None:
    """Do the live histograms' percentiles agree with the exact ones within their stated error?"""
    bound = summary["histogram_rel_error"]
    if bound is None:
        return None
    return all(v["histogram"] is not None and v["exact"] is not None
               and abs(v["histogram"] - v["exact"]) <= bound * v["exact"] + 1e-6
               for v in summary["percentiles"].values())


def one(a, srv, tok_dir, out: Path, name: str, cpus: set[int] | None, *extra: str) -> dict:
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    started = time.time()
    proc = subprocess.Popen(run_args(a, srv, tok_dir, out, name, *extra), env=env(), preexec_fn=pre,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    samples = watch([proc], a.interval, out / f"{name}.progress.log")
    result = json.loads((out / name).read_text())
    return summarise(result, out / result["infermeter"]["records_file"], started, samples, a)


def shards(a, srv, tok_dir, out: Path, cpus: set[int] | None) -> dict:
    pre = (lambda: os.sched_setaffinity(0, cpus)) if cpus else None
    started = time.time()
    start_at = started + 15.0  # both prepare first, then start together
    procs = [subprocess.Popen(run_args(a, srv, tok_dir, out, f"shard{k}.json", "--shard", f"{k}/2",
                                       "--start-at", f"{start_at:.3f}"),
                              env=env(), preexec_fn=pre, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for k in (0, 1)]
    samples = watch(procs, a.interval, out / "shards.progress.log")
    subprocess.run(cli("merge", str(out / "shard0.json"), str(out / "shard1.json"), "-o", str(out / "merged.json")),
                   env=env(), check=True, stdout=subprocess.DEVNULL)
    result = json.loads((out / "merged.json").read_text())
    s = summarise(result, out / result["infermeter"]["records_file"], started, samples, a)
    s["first_request_s"] = None  # the shards waited for --start-at on purpose
    return s


def env() -> dict:
    return dict(os.environ, PYTHONPATH=str(ROOT / "src"))


def table(runs: dict[str, dict]) -> str:
    rows = ["| run | sent rate (target) | worst window vs schedule | send lag p99 / max | first request | "
            "RSS 1st min / last min / peak | slope | GC max | p50 / p99 TTFT ms | p99 ITL ms | histograms within bound |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, s in runs.items():
        r, p = s["rss"], s["percentiles"]
        rows.append(
            f"| {name} | {s['sent_rate']:.1f} ({s['target_rate']:g}) | {s['schedule']['worst_window_off_pct']} % | "
            f"{_ms(s['schedule']['send_lag_p99_ms'])} / {_ms(s['schedule']['send_lag_max_ms'])} ms | "
            f"{s['first_request_s']} s | {r['first_minute_max_mib']} / {r['last_minute_max_mib']} / {r['peak_mib']} MiB | "
            f"{r['slope_mib_per_hour']} MiB/h | {s['gc_pause_max_ms'] and round(s['gc_pause_max_ms'], 2)} ms | "
            f"{p['p50_ttft_ms']['exact']:.2f} / {p['p99_ttft_ms']['exact']:.2f} | {p['p99_itl_ms']['exact']:.3f} | "
            f"{within_bound(s)} |")
    return "\n".join(rows)


def _ms(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=1000.0)
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--ttft-ms", type=float, default=10.0)
    ap.add_argument("--itl-ms", type=float, default=2.0)
    ap.add_argument("--input-len", type=int, default=16)
    ap.add_argument("--output-len", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0, help="RSS sampling interval, seconds")
    ap.add_argument("--progress-interval", type=float, default=60.0)
    ap.add_argument("--scale-out", action="store_true", help="also --workers 2 and two merged shards")
    ap.add_argument("--keep", help="keep the results in this folder (default: a temporary one)")
    ap.add_argument("--json", help="write every figure here")
    a = ap.parse_args()

    from infermeter.embedded.tokenizer import ensure_tokenizer
    from infermeter.testserver.helper import run_test_server

    tok_dir = ensure_tokenizer()[0]
    cores = sorted(os.sched_getaffinity(0))
    client = set(cores[1:]) or None
    runs: dict[str, dict] = {}
    with (tempfile.TemporaryDirectory() as tmpd,
          run_test_server(ttft_ms=a.ttft_ms, itl_ms=a.itl_ms, stats_keep_requests=0, cpu=cores[0]) as srv):
        out = Path(a.keep or tmpd)
        out.mkdir(parents=True, exist_ok=True)
        runs["one process"] = one(a, srv, tok_dir, out, "single.json", client)
        if a.scale_out:
            runs["--workers 2"] = one(a, srv, tok_dir, out, "workers.json", client, "--workers", "2")
            runs["2 shards + merge"] = shards(a, srv, tok_dir, out, client)
    print(table(runs))
    if a.scale_out:
        base = runs["one process"]["percentiles"]
        for name in ("--workers 2", "2 shards + merge"):
            diffs = {k: round(100 * (v["exact"] / base[k]["exact"] - 1), 2) for k, v in runs[name]["percentiles"].items()
                     if v["exact"] and base[k]["exact"]}
            print(f"{name}: exact percentiles against one process's, % off: {diffs}")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
