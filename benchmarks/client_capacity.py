"""Client capacity: streamed tokens per second per client core, scaling over worker processes, open-loop pacing.

Three measurements against the in-tree test server, every process pinned to
its own core:

(a) one client core: ``infermeter run`` pinned to one core, closed loop of C
    streams (default 256) against a server with ITL 1 ms (TTFT 0 ms, so the
    demand is C / ITL = 256k tok/s);
(b) ``--workers N`` for N in 1, 2, 4, 8: worker i pinned to client core i
    (``INFERMETER_WORKER_CPUS``), C x N streams, so each worker carries the
    load of (a).  Scaling = tok/s(N) / (N x tok/s(1));
(c) open loop: Poisson and constant arrivals at 2000 req/s for ~10 s with
    short outputs (8 tokens): achieved arrival rate against the target and
    against the schedule itself, and the send lag (each request's send minus
    its scheduled time, from the records file).

The first cores hold the client(s); the rest hold test-server processes that
share one port (``--shared-port``, SO_REUSEPORT: the kernel spreads the
connections over them).  tok/s is counted by the servers: the tokens they
wrote (``/stats`` of each, by its own port), over their window from the first
request's arrival to the last token's write.  Server CPU is read from /proc;
when a server process was near a full core, the point was server-bound and
says so.  Client CPU is what the run measured over its window (all workers).

    python benchmarks/client_capacity.py --budget-s 150 --out capacity.json
    python benchmarks/client_capacity.py --client-src /tmp/im-head/src ...   # an earlier client, same servers

Points that do not fit the cores (N clients need N + 1) or the time left are
skipped and listed as such.  The JSON holds every number; the Markdown table
is printed last.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if (ROOT / "src" / "infermeter").is_dir():
    sys.path.insert(0, str(ROOT / "src"))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)

SERVER_BOUND_CPU = 0.9  # a server process this busy (of one core) may have limited the point


def proc_cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Servers:
    """Test-server processes, one per core, sharing one port."""

    def __init__(self, cores: list[int], keep: int, **cfg) -> None:
        from infermeter.testserver.helper import run_test_server

        self.port = free_port()
        with concurrent.futures.ThreadPoolExecutor(len(cores)) as pool:
            futures = [pool.submit(run_test_server, cpu=c, shared_port=self.port, stats_keep_requests=keep, **cfg)
                       for c in cores]
        self.handles = [f.result() for f in futures if f.exception() is None]
        failed = [f.exception() for f in futures if f.exception() is not None]
        if failed:
            self.stop()
            raise RuntimeError(f"{len(failed)} test server(s) did not start: {str(failed[0])[:200]}")
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.cores = cores

    def reset(self) -> None:
        for h in self.handles:
            h.reset_stats()
        self._cpu0 = [proc_cpu_s(h.pid) for h in self.handles]

    def measure(self) -> dict:
        cpu = [proc_cpu_s(h.pid) - c0 for h, c0 in zip(self.handles, self._cpu0)]
        stats = [h.stats(requests=True) for h in self.handles]
        reqs = [r for s in stats for r in s.get("requests", []) if r.get("last_write_epoch") is not None]
        tokens = sum(s["tokens_sent"] for s in stats)
        window = (max(r["last_write_epoch"] for r in reqs) - min(r["arrival_epoch"] for r in reqs)) if reqs else 0.0
        return {"server_tokens": tokens, "server_window_s": window,
                "tok_s": tokens / window if window > 0 else float("nan"),
                "server_requests": sum(s["count"] for s in stats),
                "server_requests_per_process": [s["count"] for s in stats],
                # of one core over the window (the servers idle outside it)
                "server_cpu_s": cpu, "server_cpu_max": max(cpu) / window if window > 0 else float("nan"),
                "server_ttft_lateness_ms_mean": float(np.mean([s["ttft_lateness_ms"]["mean"] or 0.0
                                                               for s in stats]))}

    def stop(self) -> None:
        for h in self.handles:
            h.stop()


CLIENT_SRC: str | None = None  # --client-src: run the client from another source tree


def run_client(base_url: str, cores: list[int], workers: int, tok_dir: str, tmp: Path, name: str,
               extra: list[str], timeout_s: float) -> dict:
    """``infermeter run`` pinned to ``cores`` (worker i on cores[i]); returns its result JSON."""
    cmd = [sys.executable, "-m", "infermeter", "run", "--backend", "vllm", "--base-url", base_url,
           "--model", "test-model", "--tokenizer", tok_dir, "--dataset-name", "random",
           "--random-input-len", "16", "--ignore-eos", "--disable-tqdm", "--no-telemetry",
           "--save-result", "--result-dir", str(tmp), "--result-filename", f"{name}.json", *extra]
    env = dict(os.environ)
    if CLIENT_SRC:
        env["PYTHONPATH"] = CLIENT_SRC
    if workers > 1:
        cmd += ["--workers", str(workers)]
        env["INFERMETER_WORKER_CPUS"] = ",".join(map(str, cores))
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True, preexec_fn=lambda: os.sched_setaffinity(0, set(cores)))
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its workers
        proc.communicate()
        raise RuntimeError(f"stopped after {timeout_s:.0f} s: the budget ran out") from None
    if proc.returncode not in (0, 5):  # 5: finished with warnings
        tail = (err or out).strip().splitlines()[-3:]
        raise RuntimeError(f"infermeter run exited {proc.returncode}: {' | '.join(tail)}")
    result = json.loads((tmp / f"{name}.json").read_text())
    result["_path"] = str(tmp / f"{name}.json")
    return result


def capacity_point(n_workers: int, client_cores: list[int], server_cores: list[int], args, tok_dir: str,
                   tmp: Path, seconds: float, timeout_s: float) -> dict:
    c = args.concurrency * n_workers
    per_request_s = (args.ttft_ms + args.output_len * args.itl_ms) / 1e3
    n = max(c, int(c * max(1.0, seconds / per_request_s)))
    srv = Servers(server_cores, keep=n + 64, ttft_ms=args.ttft_ms, itl_ms=args.itl_ms)
    try:
        srv.reset()
        res = run_client(srv.base_url, client_cores, n_workers, tok_dir, tmp, f"cap-w{n_workers}",
                         ["--random-output-len", str(args.output_len), "--num-prompts", str(n),
                          "--max-concurrency", str(c)], timeout_s)
        out = srv.measure()
    finally:
        srv.stop()
    client = res["infermeter"]["client"]
    out.update(workers=n_workers, client_cores=client_cores, server_cores=server_cores, concurrency=c,
               requests=n, completed=res["completed"], client_output_tok_s=res["output_throughput"],
               client_cpu_s=client["cpu_seconds"], client_wall_s=client["wall_seconds"],
               client_bound=client.get("client_bound"),
               demand_tok_s=c * args.output_len / per_request_s)
    out["client_cpu_us_per_token"] = out["client_cpu_s"] / out["server_tokens"] * 1e6 if out["server_tokens"] else None
    out["server_bound"] = out["server_cpu_max"] >= SERVER_BOUND_CPU
    return out


def open_loop_point(arrival: str, client_core: int, server_cores: list[int], args, tok_dir: str, tmp: Path,
                    seconds: float, timeout_s: float) -> dict:
    from infermeter.storage.files import read_records

    n = max(10, int(args.rate * seconds))
    srv = Servers(server_cores, keep=n + 64, ttft_ms=0.0, itl_ms=args.itl_ms)
    try:
        srv.reset()
        res = run_client(srv.base_url, [client_core], 1, tok_dir, tmp, f"open-{arrival}",
                         ["--random-output-len", str(args.open_output_len), "--num-prompts", str(n),
                          "--request-rate", str(args.rate), "--arrival", arrival], timeout_s)
        served = srv.measure()
    finally:
        srv.stop()
    path = Path(res["_path"]).parent / res["infermeter"]["records_file"]
    recs = [r for r in read_records(path) if not r.warmup]
    sched = np.array([r.scheduled for r in recs if r.sent is not None and r.scheduled is not None])
    sent = np.array([r.sent for r in recs if r.sent is not None and r.scheduled is not None])
    lag_ms = (sent - sched) * 1e3
    span = lambda a: float(a.max() - a.min()) if len(a) > 1 else float("nan")  # noqa: E731
    achieved = (len(sent) - 1) / span(sent)
    scheduled = (len(sched) - 1) / span(sched)
    client = res["infermeter"]["client"]
    return {"arrival": arrival, "target_rate": args.rate, "requests": n, "completed": res["completed"],
            "scheduled_rate": scheduled, "achieved_rate": achieved,
            "achieved_vs_target": achieved / args.rate - 1, "achieved_vs_schedule": achieved / scheduled - 1,
            "send_lag_ms": {"mean": float(lag_ms.mean()), "p50": float(np.percentile(lag_ms, 50)),
                            "p99": float(np.percentile(lag_ms, 99)), "max": float(lag_ms.max())},
            "dispatch_lag_p99_ms": client.get("dispatch_lag_p99_ms"), "client_cpu_s": client["cpu_seconds"],
            "loop_lag_p50_ms": client.get("loop_lag_p50_ms"), "gc_pause_total_ms": client.get("gc_pause_total_ms"),
            "gc_pause_max_ms": client.get("gc_pause_max_ms"),
            "client_bound": client.get("client_bound"), "server_cpu_max": served["server_cpu_max"],
            "client_core": client_core, "server_cores": server_cores}


class Budget:
    def __init__(self, seconds: float) -> None:
        self.end = time.monotonic() + seconds
        self.overhead = 8.0  # per point beyond its run time (servers, prompts, start-up); learned as we go

    def left(self) -> float:
        return self.end - time.monotonic()

    def fit(self, want_s: float, floor_s: float) -> float | None:
        """Run seconds that fit what is left (None: not even ``floor_s``)."""
        room = self.left() - self.overhead
        if room >= want_s:
            return want_s
        return room if room >= floor_s else None

    def learn(self, took_s: float, ran_s: float) -> None:
        self.overhead = max(self.overhead * 0.5, took_s - ran_s)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget-s", type=float, default=150.0, help="finish within this many seconds (150)")
    ap.add_argument("--out", help="write every number to this JSON file")
    ap.add_argument("--cores", help="cores to use, e.g. 0-15 or 2,3,4 (default: all this process may use)")
    ap.add_argument("--workers", default="1,2,4,8", help="worker counts for (b) (1,2,4,8)")
    ap.add_argument("--concurrency", type=int, default=256, help="streams per client core (256)")
    ap.add_argument("--itl-ms", type=float, default=1.0)
    ap.add_argument("--ttft-ms", type=float, default=0.0)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--seconds", type=float, default=4.0, help="length of each capacity point (4)")
    ap.add_argument("--rate", type=float, default=2000.0, help="open-loop arrival rate, req/s (2000)")
    ap.add_argument("--open-seconds", type=float, default=10.0, help="length of each open-loop point (10)")
    ap.add_argument("--open-output-len", type=int, default=8)
    ap.add_argument("--client-src", help="run the client from this src/ folder (e.g. an earlier commit's, from "
                                         "git archive) against this tree's test server")
    args = ap.parse_args()
    global CLIENT_SRC
    CLIENT_SRC = args.client_src
    try:
        cores = parse_cores(args.cores) if args.cores else sorted(os.sched_getaffinity(0))
        counts = [int(x) for x in args.workers.split(",") if x]
    except ValueError:
        print(f"client_capacity: --cores {args.cores!r} / --workers {args.workers!r}: expected core numbers "
              "like 0-15 or 2,3,4 and worker counts like 1,2,4,8", file=sys.stderr)
        return 2
    if len(cores) < 2:
        print(f"client_capacity: needs at least 2 cores (one client, one server), has {cores}", file=sys.stderr)
        return 2

    budget = Budget(args.budget_s)
    from infermeter.embedded.tokenizer import ensure_tokenizer

    tok_dir = str(ensure_tokenizer()[0])
    info = {"cores": cores, "cpu_count": os.cpu_count(), "python": sys.version.split()[0],
            "load_avg_start": os.getloadavg(), "args": vars(args), "started_epoch": time.time()}
    print(f"# {len(cores)} cores {cores}; load average {info['load_avg_start']}; budget {args.budget_s:g} s",
          flush=True)
    capacity, open_loop, skipped = [], [], []
    with tempfile.TemporaryDirectory(prefix="client-capacity-") as tmpdir:
        tmp = Path(tmpdir)
        for n in counts:
            if n + 1 > len(cores):
                skipped.append(f"workers={n}: needs {n + 1} cores, has {len(cores)}")
                continue
            seconds = budget.fit(args.seconds, min(args.seconds, 1.5))
            if seconds is None:
                skipped.append(f"workers={n}: only {budget.left():.0f} s of the budget left")
                continue
            t0 = time.monotonic()
            try:
                row = capacity_point(n, cores[:n], cores[n:], args, tok_dir, tmp, seconds, budget.left() - 2)
            except RuntimeError as exc:
                skipped.append(f"workers={n}: {exc}")
                continue
            budget.learn(time.monotonic() - t0, row["server_window_s"])
            row["load_avg"] = os.getloadavg()[0]
            capacity.append(row)
            print(json.dumps(_short(row)), flush=True)
        for arrival in ("poisson", "constant"):
            seconds = budget.fit(args.open_seconds, min(args.open_seconds, 2.0))
            if seconds is None:
                skipped.append(f"open loop {arrival}: only {budget.left():.0f} s of the budget left")
                continue
            t0 = time.monotonic()
            server_cores = cores[1:3] if len(cores) > 2 else cores[1:]
            try:
                row = open_loop_point(arrival, cores[0], server_cores, args, tok_dir, tmp, seconds,
                                      budget.left() - 2)
            except RuntimeError as exc:
                skipped.append(f"open loop {arrival}: {exc}")
                continue
            budget.learn(time.monotonic() - t0, seconds)
            row["load_avg"] = os.getloadavg()[0]
            open_loop.append(row)
            print(json.dumps(_short(row)), flush=True)
    one_core = next((r["tok_s"] for r in capacity if r["workers"] == 1), None)
    for r in capacity:
        r["per_client_core_tok_s"] = r["tok_s"] / r["workers"]
        r["scaling_vs_one_core"] = r["tok_s"] / (r["workers"] * one_core) if one_core else None
    info["elapsed_s"] = args.budget_s - budget.left()
    if args.out:
        Path(args.out).write_text(json.dumps({**info, "capacity": capacity, "open_loop": open_loop,
                                              "skipped": skipped}, indent=2))
    print()
    print(render(capacity, open_loop, skipped, args, info))
    return 0


def parse_cores(text: str) -> list[int]:
    out: set[int] = set()
    for part in text.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return sorted(out)


def _short(row: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()
            if k not in ("server_cpu_s", "server_requests_per_process")}


def render(capacity: list[dict], open_loop: list[dict], skipped: list[str], args, info: dict) -> str:
    lines = [f"C = {args.concurrency} streams per client core, ITL {args.itl_ms:g} ms, TTFT {args.ttft_ms:g} ms, "
             f"{args.output_len} tokens; tok/s counted by the servers; {len(info['cores'])} cores, "
             f"{info['elapsed_s']:.0f} s.", "",
             "| workers | server procs | tok/s | per client core | x one core | client CPU µs/tok | "
             "max server CPU | bound | load avg |",
             "|---:|---:|---:|---:|---:|---:|---:|---|---:|"]
    for r in capacity:
        bound = "server" if r["server_bound"] else ("client" if r["client_bound"] else "-")
        scaling = f"{r['scaling_vs_one_core']:.2f}" if r["scaling_vs_one_core"] else "-"
        lines.append(f"| {r['workers']} | {len(r['server_cores'])} | {r['tok_s']:,.0f} | "
                     f"{r['per_client_core_tok_s']:,.0f} | {scaling} | {r['client_cpu_us_per_token']:.2f} | "
                     f"{r['server_cpu_max']:.0%} | {bound} | {r['load_avg']:.2f} |")
    if open_loop:
        lines += ["", "| open loop | target req/s | scheduled | achieved | vs target | vs schedule | "
                      "send lag p50 / p99 / max ms | loop lag p50 ms | GC pauses ms (max) | client CPU s | completed |",
                  "|---|---:|---:|---:|---:|---:|---|---:|---|---:|---:|"]
        for r in open_loop:
            lag = r["send_lag_ms"]
            lines.append(f"| {r['arrival']} | {r['target_rate']:g} | {r['scheduled_rate']:,.1f} | "
                         f"{r['achieved_rate']:,.1f} | {r['achieved_vs_target']:+.2%} | "
                         f"{r['achieved_vs_schedule']:+.2%} | {lag['p50']:.3f} / {lag['p99']:.3f} / "
                         f"{lag['max']:.2f} | {r['loop_lag_p50_ms'] or 0:.3f} | {r['gc_pause_total_ms'] or 0:.0f} "
                         f"({r['gc_pause_max_ms'] or 0:.0f}) | {r['client_cpu_s']:.2f} | "
                         f"{r['completed']}/{r['requests']} |")
    for s in skipped:
        lines.append(f"\nskipped: {s}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
