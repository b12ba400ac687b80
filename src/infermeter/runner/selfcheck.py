"""How far can this client be trusted on this machine?  Measure it against ground truth.

The in-tree test server (pinned to one core) streams with injected TTFT and
ITL and records, per request, when it wrote the first and the last token
(``/stats?requests=1``; ``time.time()`` and ``perf_counter()`` of the same
host as the client).  ``infermeter`` (pinned to another core) runs a grid of
concurrency x ITL against it; each point compares what the client reported
with what the server did:

* TTFT truth = server's first-token write minus the client's send.  The
  client's error is how late it stamped the first token: its mean TTFT minus
  the mean truth (means of sums need no request-by-request matching).  The
  p99 pairs requests by send order (client) and arrival order (server).
* ITL truth = the server's (last write - first write) / (tokens - 1), summed
  over requests; the client's error is its summed gaps against that.
* The injected TTFT/ITL are shown too: a server that falls behind its own
  schedule (``ttft_lateness``) is the server's fault, not the client's.

The envelope is the largest load, per ITL, at which every error stays within
1 % and within 5 %, and the client's throughput capacity (tokens per CPU
second of the client process, and the most tokens per second seen).
"""

from __future__ import annotations

import math
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

SHORT_GRID = [(c, itl) for itl in (5.0, 1.0) for c in (1, 16, 64, 256)]
FULL_GRID = [(c, itl) for itl in (20.0, 5.0, 1.0) for c in (1, 16, 64, 256, 1024)]


@dataclass
class PointResult:
    concurrency: int
    itl_ms: float  # injected
    ttft_ms: float  # injected
    output_len: int
    requests: int
    completed: int
    failed: int
    mean_ttft_ms: float | None  # reported by the client (None: no request succeeded)
    p99_ttft_ms: float | None  # None: too few samples for a p99
    mean_itl_ms: float | None
    truth_mean_ttft_ms: float | None  # server's first write minus the client's send
    truth_p99_ttft_ms: float | None
    truth_mean_itl_ms: float | None  # server's write gaps
    ttft_error: float | None  # (reported - truth) / truth
    p99_ttft_error: float | None
    itl_error: float | None
    joined_by: str | None  # how client and server records were paired for the p99
    ttft_vs_injected: float | None  # (reported - injected) / injected; None without a reported value
    itl_vs_injected: float | None
    server_ttft_lateness_ms: float | None  # how far behind its own schedule the server wrote
    output_tok_s: float
    client_cpu_s: float
    client_cpu_util: float
    loop_lag_mean_ms: float
    loop_lag_p99_ms: float
    client_bound: bool
    duration_s: float
    load_avg: float = field(default_factory=lambda: os.getloadavg()[0])

    @property
    def worst_error(self) -> float | None:
        errs = [abs(e) for e in (self.ttft_error, self.p99_ttft_error, self.itl_error) if e is not None]
        return max(errs) if errs and self.failed == 0 else None

    @property
    def tokens_per_cpu_s(self) -> float:
        return self.output_tok_s * self.duration_s / self.client_cpu_s if self.client_cpu_s > 0 else math.inf


def parse_grid(text: str) -> list[tuple[int, float]]:
    from infermeter.errors import UserError

    points = []
    for part in text.replace(" ", "").split(","):
        c, sep, itl = part.partition(":")
        try:
            point = (int(c), float(itl))
        except ValueError:
            raise UserError(f"--grid {part!r} is not C:ITL_MS", "write e.g. --grid 1:5,64:1") from None
        if not sep or point[0] < 1 or point[1] < 0:
            raise UserError(f"--grid {part!r} is not C:ITL_MS", "write e.g. --grid 1:5,64:1")
        points.append(point)
    return points


def truth_from(result: dict, records: Sequence, server_requests: Sequence[dict]) -> dict:
    """Ground-truth TTFT/ITL for one run from the server's per-request records."""
    epoch0 = float(result["infermeter"]["start_epoch"])
    ok = [r for r in records if r.ok and not r.warmup and r.sent is not None and r.first_token is not None]
    srv = [s for s in server_requests if s.get("first_write_epoch") is not None and s.get("tokens_sent")]
    out: dict = {"truth_mean_ttft_ms": None, "truth_p99_ttft_ms": None, "truth_mean_itl_ms": None,
                 "ttft_error": None, "p99_ttft_error": None, "itl_error": None, "joined_by": None}
    if not ok or len(srv) != len(ok):
        return out
    sent = np.sort(np.array([epoch0 + r.sent for r in ok]))
    first = np.array([epoch0 + r.first_token for r in ok])
    s_first = np.array([s["first_write_epoch"] for s in sorted(srv, key=lambda s: s["arrival_epoch"])])
    truth = (s_first.mean() - sent.mean()) * 1e3
    reported = (first.mean() - sent.mean()) * 1e3
    out["truth_mean_ttft_ms"] = truth
    out["ttft_error"] = (reported - truth) / truth if truth > 0 else None
    client_ttft = np.array([(r.first_token - r.sent) * 1e3 for r in ok])
    by_id = {s.get("client_request_id"): s for s in srv}
    if all(f"im-{r.index}" in by_id for r in ok):  # tagged requests: join one by one
        paired = np.array([(by_id[f"im-{r.index}"]["first_write_epoch"] - (epoch0 + r.sent)) * 1e3 for r in ok])
        out["joined_by"] = "request id"
    else:  # send order ~ arrival order
        paired = (s_first - sent) * 1e3
        out["joined_by"] = "order"
    out["truth_p99_ttft_ms"] = float(np.percentile(paired, 99))
    if out["truth_p99_ttft_ms"] > 0:
        out["p99_ttft_error"] = (float(np.percentile(client_ttft, 99)) - out["truth_p99_ttft_ms"]) / out["truth_p99_ttft_ms"]
    s_span = sum(s["last_write_epoch"] - s["first_write_epoch"] for s in srv if s["tokens_sent"] > 1)
    s_gaps = sum(s["tokens_sent"] - 1 for s in srv if s["tokens_sent"] > 1)
    c_span = sum(r.token_times[-1] - r.token_times[0] for r in ok if len(r.token_times) > 1)
    c_gaps = sum(len(r.token_times) - 1 for r in ok if len(r.token_times) > 1)
    if s_gaps and c_gaps and s_span > 0:
        out["truth_mean_itl_ms"] = s_span / s_gaps * 1e3
        out["itl_error"] = (c_span / c_gaps - s_span / s_gaps) / (s_span / s_gaps)
    return out


def _vs(reported: float | None, injected: float) -> float | None:
    """(reported - injected) / injected; None when nothing was reported, NaN with nothing injected."""
    if reported is None:
        return None
    return (reported - injected) / injected if injected else math.nan


def run_point(server, tokenizer_dir: str, concurrency: int, itl_ms: float, ttft_ms: float, output_len: int,
              requests: int, result_dir: Path) -> PointResult:
    """One grid point: reset the server's stats, run infermeter, compare with the server's records."""
    from infermeter.runner.execute import execute_run
    from infermeter.runner.spec import RunSpec
    from infermeter.storage.files import read_records

    server.reset_stats()
    report = execute_run(RunSpec.from_flat(dict(
        backend="vllm", base_url=server.base_url, model="test-model", tokenizer=tokenizer_dir,
        dataset_name="random", random_input_len=16, random_output_len=output_len, ignore_eos=True,
        num_prompts=requests, max_concurrency=concurrency, result_dir=str(result_dir),
        result_filename=f"c{concurrency}-itl{itl_ms:g}.json", if_exists="next", progress=False,
        request_id_header="X-Request-Id")))  # the test server records it: an exact join with its truth
    r = report.result
    records = list(read_records(report.records_path))
    stats = server.stats(requests=True)
    truth = truth_from(r, records, stats.get("requests", []))
    client = r["infermeter"]["client"]
    return PointResult(
        concurrency=concurrency, itl_ms=itl_ms, ttft_ms=ttft_ms, output_len=output_len, requests=requests,
        completed=r["completed"], failed=r["failed"], mean_ttft_ms=r["mean_ttft_ms"], p99_ttft_ms=r["p99_ttft_ms"],
        mean_itl_ms=r["mean_itl_ms"], **truth,
        ttft_vs_injected=_vs(r["mean_ttft_ms"], ttft_ms), itl_vs_injected=_vs(r["mean_itl_ms"], itl_ms),
        server_ttft_lateness_ms=(stats.get("ttft_lateness_ms") or {}).get("mean"),
        output_tok_s=r["output_throughput"], client_cpu_s=client["cpu_seconds"],
        client_cpu_util=client["cpu_utilization"], loop_lag_mean_ms=client["loop_lag_mean_ms"],
        loop_lag_p99_ms=client["loop_lag_p99_ms"], client_bound=client["client_bound"], duration_s=r["duration"],
    )


def pick_cpus(server_cpu: int | None, client_cpu: int | None) -> tuple[int | None, int | None]:
    """Two different cores of those this process may use (None: no pinning possible)."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) < 2:
        return server_cpu, client_cpu
    server_cpu = allowed[0] if server_cpu is None else server_cpu
    if client_cpu is None:
        client_cpu = next(c for c in allowed if c != server_cpu)
    return server_cpu, client_cpu


def requests_for(concurrency: int, full: bool) -> int:
    return max(concurrency * (4 if full else 2), 32 if full else 16)


def run_grid(grid: Iterable[tuple[int, float]], *, ttft_ms: float = 50.0, output_len: int = 64, full: bool = False,
             server_cpu: int | None = None, client_cpu: int | None = None, tokenizer_dir: str | None = None,
             result_dir: Path | None = None, on_point: Callable[[PointResult], None] = lambda p: None
             ) -> list[PointResult]:
    from infermeter.testserver.helper import run_test_server

    if tokenizer_dir is None:
        from infermeter.embedded.tokenizer import ensure_tokenizer

        tokenizer_dir = str(ensure_tokenizer()[0])
    server_cpu, client_cpu = pick_cpus(server_cpu, client_cpu)
    tmp = None
    if result_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="infermeter-selfcheck-")
        result_dir = Path(tmp.name)
    old_affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    results: list[PointResult] = []
    by_itl: dict[float, list[int]] = {}
    for c, itl in grid:
        by_itl.setdefault(itl, []).append(c)
    try:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        for itl, concs in by_itl.items():
            keep = max(requests_for(c, full) for c in concs) + 16
            with run_test_server(ttft_ms=ttft_ms, itl_ms=itl, cpu=server_cpu, stats_keep_requests=keep) as srv:
                for c in concs:
                    point = run_point(srv, tokenizer_dir, c, itl, ttft_ms, output_len, requests_for(c, full),
                                      result_dir)
                    results.append(point)
                    on_point(point)
    finally:
        if old_affinity is not None:
            os.sched_setaffinity(0, old_affinity)
        if tmp is not None:
            tmp.cleanup()
    return results


def envelope(points: Sequence[PointResult]) -> dict:
    """Per ITL, the largest concurrency up to which every load measured stayed within 1 % (5 %)."""
    out: dict = {"by_itl": {}}
    for itl in sorted({p.itl_ms for p in points}, reverse=True):
        row = sorted((p for p in points if p.itl_ms == itl), key=lambda p: p.concurrency)
        entry = {}
        for limit, name in ((0.01, "within_1pct"), (0.05, "within_5pct")):
            best = None
            for p in row:  # contiguous from the lightest load: one miss ends the envelope
                if p.worst_error is None or p.worst_error > limit:
                    break
                best = p
            entry[name] = None if best is None else {"concurrency": best.concurrency,
                                                     "output_tok_s": best.output_tok_s}
        out["by_itl"][itl] = entry
    if points:
        busiest = max(points, key=lambda p: p.output_tok_s)
        out["max_output_tok_s"] = busiest.output_tok_s
        out["max_at"] = {"concurrency": busiest.concurrency, "itl_ms": busiest.itl_ms}
        out["tokens_per_client_cpu_s"] = busiest.tokens_per_cpu_s
    return out


def to_json(points: Sequence[PointResult]) -> dict:
    return {"points": [dict(asdict(p), worst_error=p.worst_error, tokens_per_cpu_s=p.tokens_per_cpu_s)
                       for p in points],
            "envelope": envelope(points), "time": time.time(), "load_avg": os.getloadavg()}
