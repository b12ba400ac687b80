"""Client overhead: how close do clients get to the truth, and at what CPU cost?

The in-tree test server runs pinned to one core with injected TTFT/ITL and
records, per request, when it wrote the first and last token.  Each client
runs pinned to another core, on the same points (concurrency C x ITL), in
the same run.  For every point the table shows what the client reported
against the injected values and against the server-stamped truth, the output
tokens per second it saw, and the CPU seconds its process used in the
measured window (and per token).

Clients:

* ``infermeter``: ``infermeter run`` (fast protocol-level transport; with
  ``--aiohttp`` also the aiohttp fallback transport, ``--transport aiohttp``).
* ``minimal-aiohttp``: a minimal aiohttp streaming loop written for this
  benchmark in the style of vLLM's ``benchmark_serving.py`` (clock started
  before ``session.post``, ``async for`` over the response lines, one
  ``json.loads`` per event, plain asyncio loop).  It stands in for a peer
  client installed from PyPI; see BENCHMARKS.md for why.
* ``guidellm`` (``--guidellm PATH``, the ``guidellm`` executable of a
  separate venv, e.g. ``python -m venv /tmp/peer && /tmp/peer/bin/pip install
  guidellm``): its per-request wall-clock timings against the same truth; its
  CPU is its whole process tree's, sampled from /proc over its request window.
* ``infermeter-before`` (``--before SRC``): an earlier infermeter, e.g. the
  last commit exported with ``git archive HEAD src | tar -x -C /tmp/im-head``.

Truth: TTFT = server's first-token write - client's send (mean over requests;
sums need no request matching), ITL = server's (last - first write)/(tokens - 1).

    python benchmarks/client_overhead.py            # reduced grid, ~2 min
    python benchmarks/client_overhead.py --full     # C 1..1024 x ITL 20,5,1 ms
    python benchmarks/client_overhead.py --write    # also update BENCHMARKS.md

The machine's cores may be shared with other work: the load average is
recorded next to every point.
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

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

REDUCED = [(c, itl) for itl in (5.0, 1.0) for c in (1, 16, 256)]
FULL = [(c, itl) for itl in (20.0, 5.0, 1.0) for c in (1, 16, 64, 256, 1024)]

# ---------------------------------------------------------------------------
# The minimal aiohttp client (a child process: python client_overhead.py --peer ...)
PEER = r'''
import asyncio, json, sys, time, os
import aiohttp

async def main(url, concurrency, n, out_len, prompt):
    sem = asyncio.Semaphore(concurrency)
    recs = []
    conn = aiohttp.TCPConnector(limit=concurrency)
    timeout = aiohttp.ClientTimeout(total=3600)
    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        async def one(i):
            async with sem:
                body = {"model": "test-model", "prompt": prompt, "max_tokens": out_len, "ignore_eos": True,
                        "stream": True, "stream_options": {"include_usage": True}}
                st = time.perf_counter()
                wall0 = time.time()
                times = []
                async with session.post(url + "/v1/completions", json=body,
                                        headers={"X-Request-Id": f"peer-{i}"}) as resp:
                    async for line in resp.content:
                        line = line.strip()
                        if not line:
                            continue
                        data = line.decode().removeprefix("data: ")
                        if data == "[DONE]":
                            continue
                        obj = json.loads(data)
                        if obj.get("choices") and obj["choices"][0].get("text"):
                            times.append(time.perf_counter())
                recs.append({"id": f"peer-{i}", "sent_epoch": wall0, "st": st, "times": times})
        cpu0, t0 = time.process_time(), time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    # convert perf times to wall clock relative to each request's send
    out = []
    for r in recs:
        out.append({"id": r["id"], "sent_epoch": r["sent_epoch"],
                    "token_epochs": [r["sent_epoch"] + (t - r["st"]) for t in r["times"]]})
    json.dump({"records": out, "cpu_s": cpu, "wall_s": wall}, sys.stdout)

url, c, n, out_len = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
asyncio.run(main(url, c, n, out_len, " ".join(["word"] * 16)))
'''


def pinned(cpu: int | None):
    if cpu is None:
        return None
    return lambda: os.sched_setaffinity(0, {cpu})


def load_avg() -> float:
    return os.getloadavg()[0]


def summarize(sent, token_epochs, server, ttft_ms, itl_ms, cpu_s, wall_s) -> dict:
    """Reported vs injected vs server truth, from wall-clock times of sends and token arrivals."""
    ok = [(s, t) for s, t in zip(sent, token_epochs) if t]
    s_arr = np.array([s for s, _ in ok])
    first = np.array([t[0] for _, t in ok])
    ttft = (first - s_arr) * 1e3
    c_span = sum(t[-1] - t[0] for _, t in ok if len(t) > 1)
    c_gaps = sum(len(t) - 1 for _, t in ok if len(t) > 1)
    srv = [r for r in server if r.get("first_write_epoch") is not None and r.get("tokens_sent")]
    tokens = sum(len(t) for _, t in ok)
    window = max(t[-1] for _, t in ok) - min(s_arr)
    out = {
        "completed": len(ok),
        "mean_ttft_ms": float(ttft.mean()), "p99_ttft_ms": float(np.percentile(ttft, 99)),
        "mean_itl_ms": c_span / c_gaps * 1e3 if c_gaps else float("nan"),
        "tok_s": tokens / window if window > 0 else float("nan"),
        "cpu_s": cpu_s, "cpu_us_per_token": cpu_s / tokens * 1e6 if tokens else float("nan"),
        "wall_s": wall_s,
    }
    if len(srv) == len(ok):
        truth = (np.mean([r["first_write_epoch"] for r in srv]) - s_arr.mean()) * 1e3
        s_span = sum(r["last_write_epoch"] - r["first_write_epoch"] for r in srv if r["tokens_sent"] > 1)
        s_gaps = sum(r["tokens_sent"] - 1 for r in srv if r["tokens_sent"] > 1)
        out["true_ttft_ms"] = float(truth)
        out["ttft_err"] = (out["mean_ttft_ms"] - truth) / truth
        out["true_itl_ms"] = s_span / s_gaps * 1e3 if s_gaps else float("nan")
        out["itl_err"] = (out["mean_itl_ms"] - out["true_itl_ms"]) / out["true_itl_ms"] if s_gaps else float("nan")
    out["ttft_vs_injected"] = (out["mean_ttft_ms"] - ttft_ms) / ttft_ms
    out["itl_vs_injected"] = (out["mean_itl_ms"] - itl_ms) / itl_ms if itl_ms else float("nan")
    return out


def run_infermeter(srv, c, n, out_len, cpu, tok_dir, tmp: Path, transport: str, src: Path | None = None) -> dict:
    from infermeter.storage.files import read_records

    name = f"im-{transport}-c{c}-itl{srv.config.itl_ms:g}" + ("-before" if src else "")
    env = dict(os.environ, INFERMETER_TRANSPORT=transport, PYTHONPATH=str(src or ROOT / "src"))
    cmd = [sys.executable, "-c", "import sys; from infermeter.cli.main import main; sys.exit(main())",
           "run", "--backend", "vllm", "--base-url", srv.base_url, "--model", "test-model", "--tokenizer",
           str(tok_dir), "--dataset-name", "random", "--random-input-len", "16", "--random-output-len",
           str(out_len), "--ignore-eos", "--num-prompts", str(n), "--max-concurrency", str(c), "--disable-tqdm",
           "--save-result", "--result-dir", str(tmp), "--result-filename", f"{name}.json"]
    if src is None:  # this tree names its transport on the command line (an earlier tree read the environment)
        cmd += ["--transport", transport]
    proc = subprocess.run(cmd, env=env, preexec_fn=pinned(cpu), capture_output=True, text=True)
    if proc.returncode not in (0, 5):
        raise RuntimeError(f"infermeter failed: {proc.stderr[-2000:]}")
    result = json.loads((tmp / f"{name}.json").read_text())
    epoch0 = result["infermeter"]["start_epoch"]
    recs = [r for r in read_records(tmp / result["infermeter"]["records_file"]) if r.ok and not r.warmup]
    sent = [epoch0 + r.sent for r in recs]
    toks = [[epoch0 + t for t in r.token_times] for r in recs]
    client = result["infermeter"]["client"]
    out = summarize(sent, toks, srv.stats(requests=True).get("requests", []), srv.config.ttft_ms,
                    srv.config.itl_ms, client["cpu_seconds"], client["wall_seconds"])
    out["reported_by_client"] = {"mean_ttft_ms": result["mean_ttft_ms"], "mean_itl_ms": result["mean_itl_ms"],
                                 "output_throughput": result["output_throughput"],
                                 "client_bound": client["client_bound"],
                                 "loop_lag_mean_ms": client["loop_lag_mean_ms"]}
    return out


def run_peer(srv, c, n, out_len, cpu) -> dict:
    proc = subprocess.run([sys.executable, "-c", PEER, srv.base_url, str(c), str(n), str(out_len)],
                          preexec_fn=pinned(cpu), capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"peer client failed: {proc.stderr[-2000:]}")
    data = json.loads(proc.stdout)
    recs = data["records"]
    return summarize([r["sent_epoch"] for r in recs], [r["token_epochs"] for r in recs],
                     srv.stats(requests=True).get("requests", []), srv.config.ttft_ms, srv.config.itl_ms,
                     data["cpu_s"], data["wall_s"])


def _tree_cpu_s(root: int) -> float:
    """CPU seconds (user + system) of ``root`` and its live descendants, from /proc."""
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(name)] = int(fields[1])
        times[int(name)] = (int(fields[11]) + int(fields[12])) / tick
    keep, frontier = {root}, [root]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier and p not in keep]
        keep.update(kids)
        frontier = kids
    return sum(times.get(p, 0.0) for p in keep)


def run_guidellm(exe, srv, c, n, out_len, cpu, tmp: Path) -> dict:
    """guidellm from PyPI, same point; CPU of its process tree sampled over its request window."""
    out = tmp / f"guidellm-c{c}.json"
    cmd = [exe, "run", "--backend", f"kind=openai_http,target={srv.base_url},model=test-model,"
           "request_format=/v1/completions,validate_backend=false",
           "--profile", f"kind=concurrent,streams={c}", "--constraint", f"kind=max_requests,count={n}",
           "--data", f"kind=synthetic_text,prompt_tokens=16,output_tokens={out_len}",
           "--tokenizer", f"kind=huggingface_auto,model={TOKENIZER_DIR}",
           "--output", f"kind=json,path={out}", "--disable-console"]
    proc = subprocess.Popen(cmd, preexec_fn=pinned(cpu), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)
    samples = []
    while proc.poll() is None:
        samples.append((time.time(), _tree_cpu_s(proc.pid)))
        time.sleep(0.1)
    err = proc.stderr.read()
    if proc.returncode != 0 or not out.exists():
        raise RuntimeError(f"guidellm failed: {err[-1500:]}")
    data = json.loads(out.read_text())
    reqs = data["benchmarks"][0]["requests"]["successful"]
    sent, toks = [], []
    for r in reqs:
        t = r["info"]["timings"]
        k = t.get("token_iterations") or 0
        first, last = t["first_token_iteration"], t["last_token_iteration"]
        sent.append(t["request_start"])
        # guidellm keeps first and last token times and the count: spread the rest evenly (means unaffected)
        toks.append(list(np.linspace(first, last, k)) if k > 1 else [first])
    t0, t1 = min(sent), max(r["info"]["timings"]["request_end"] for r in reqs)
    wall = np.array([w for w, _ in samples])
    cpu_series = np.array([x for _, x in samples])
    cpu_s = float(np.interp(t1, wall, cpu_series) - np.interp(t0, wall, cpu_series)) if len(samples) > 1 else float("nan")
    res = summarize(sent, toks, srv.stats(requests=True).get("requests", []), srv.config.ttft_ms,
                    srv.config.itl_ms, cpu_s, t1 - t0)
    m = data["benchmarks"][0]["metrics"]
    res["reported_by_client"] = {"mean_ttft_ms": m["time_to_first_token_ms"]["successful"]["mean"],
                                 "mean_itl_ms": m["inter_token_latency_ms"]["successful"]["mean"]}
    return res


TOKENIZER_DIR = ""


def requests_for(c: int, itl: float, out_len: int, full: bool) -> int:
    per_request_s = 0.05 + out_len * itl / 1e3
    waves = 3 if full else 2
    return max(c * waves, min(32 if full else 8, int(8 / per_request_s) + 1))


def fmt_pct(x) -> str:
    return "-" if x is None or x != x else f"{100 * x:+.1f}%"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="the whole grid C 1,16,64,256,1024 x ITL 20,5,1 ms")
    ap.add_argument("--ttft-ms", type=float, default=50.0)
    ap.add_argument("--output-len", type=int, default=256)
    ap.add_argument("--server-cpu", type=int, default=0)
    ap.add_argument("--client-cpu", type=int, default=1)
    ap.add_argument("--aiohttp", action="store_true", help="also run infermeter with its aiohttp fallback transport")
    ap.add_argument("--no-peer", action="store_true", help="skip the minimal aiohttp peer client")
    ap.add_argument("--grid", help="points as C:ITL_MS pairs, e.g. 16:5,256:1")
    ap.add_argument("--guidellm", help="path of a guidellm executable (its own venv) to compare with")
    ap.add_argument("--before", help="src/ folder of an earlier infermeter (e.g. git archive HEAD src) to "
                                     "run as 'infermeter-before'")
    ap.add_argument("--json", help="write all numbers to this file")
    ap.add_argument("--write", action="store_true", help="update the '## Client overhead' section of BENCHMARKS.md")
    args = ap.parse_args()

    from infermeter.embedded.tokenizer import ensure_tokenizer
    from infermeter.testserver.helper import run_test_server

    if args.grid:
        grid = [(int(a), float(b)) for a, b in (p.split(":") for p in args.grid.split(","))]
    else:
        grid = FULL if args.full else REDUCED
    clients = (["infermeter"] + (["infermeter-before"] if args.before else [])
               + (["infermeter-aiohttp"] if args.aiohttp else [])
               + ([] if args.no_peer else ["minimal-aiohttp"]) + (["guidellm"] if args.guidellm else []))
    tok_dir = ensure_tokenizer()[0]
    global TOKENIZER_DIR
    TOKENIZER_DIR = str(tok_dir)
    rows = []
    started = time.time()
    print(f"# load average at start: {os.getloadavg()}; {os.cpu_count()} CPUs; server on core {args.server_cpu}, "
          f"clients on core {args.client_cpu}", flush=True)
    with tempfile.TemporaryDirectory(prefix="client-overhead-") as tmpdir:
        tmp = Path(tmpdir)
        by_itl: dict[float, list[int]] = {}
        for c, itl in grid:
            by_itl.setdefault(itl, []).append(c)
        for itl, concs in by_itl.items():
            keep = max(requests_for(c, itl, args.output_len, args.full) for c in concs) + 64
            with run_test_server(ttft_ms=args.ttft_ms, itl_ms=itl, cpu=args.server_cpu,
                                 stats_keep_requests=keep) as srv:
                for c in concs:
                    n = requests_for(c, itl, args.output_len, args.full)
                    for client in clients:
                        srv.reset_stats()
                        la = load_avg()
                        try:
                            if client == "minimal-aiohttp":
                                res = run_peer(srv, c, n, args.output_len, args.client_cpu)
                            elif client == "guidellm":
                                res = run_guidellm(args.guidellm, srv, c, n, args.output_len, args.client_cpu, tmp)
                            else:
                                transport = "aiohttp" if client.endswith("aiohttp") else "fast"
                                src = Path(args.before) if client == "infermeter-before" else None
                                res = run_infermeter(srv, c, n, args.output_len, args.client_cpu, tok_dir, tmp,
                                                     transport, src)
                        except RuntimeError as exc:
                            res = {"error": str(exc)}
                        res.update(client=client, concurrency=c, itl_ms=itl, requests=n, load_avg=la)
                        rows.append(res)
                        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v)
                                          for k, v in res.items() if k != "reported_by_client"}), flush=True)
    table = render(rows, args)
    print()
    print(table)
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "args": vars(args), "started": started}, indent=2))
    if args.write:
        write_section(table)
    return 0


def render(rows, args) -> str:
    lines = [
        f"Injected TTFT {args.ttft_ms:g} ms, {args.output_len} output tokens per request; test server pinned to "
        f"core {args.server_cpu}, each client pinned to core {args.client_cpu}. "
        "err = reported minus server-stamped truth; vs inj. = reported minus injected (includes the server "
        "falling behind). CPU = the client's CPU seconds in its measured window.",
        "",
        "| client | C | ITL ms | TTFT ms rep (true) | TTFT err | p99 TTFT ms | TTFT vs inj. | ITL ms rep (true) | "
        "ITL err | tok/s | CPU s | CPU µs/token | load avg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['client']} | {r['concurrency']} | {r['itl_ms']:g} | failed: {r['error'][:60]} |"
                         + " |" * 9)
            continue
        lines.append(
            f"| {r['client']} | {r['concurrency']} | {r['itl_ms']:g} | {r['mean_ttft_ms']:.2f} "
            f"({r.get('true_ttft_ms', float('nan')):.2f}) | {fmt_pct(r.get('ttft_err'))} | {r['p99_ttft_ms']:.1f} | "
            f"{fmt_pct(r['ttft_vs_injected'])} | {r['mean_itl_ms']:.3f} ({r.get('true_itl_ms', float('nan')):.3f}) | "
            f"{fmt_pct(r.get('itl_err'))} | {r['tok_s']:,.0f} | {r['cpu_s']:.2f} | {r['cpu_us_per_token']:.1f} | "
            f"{r['load_avg']:.2f} |")
    return "\n".join(lines)


def write_section(table: str) -> None:
    """Add this run, dated, at the end of the '## Client overhead' section of BENCHMARKS.md."""
    path = ROOT / "BENCHMARKS.md"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    marker = "## Client overhead"
    cmd = ("python benchmarks/client_overhead.py " + " ".join(sys.argv[1:])).strip()
    run = (f"### Run {time.strftime('%Y-%m-%d %H:%M')}\n\n`{cmd}` (load average at the end: "
           f"{os.getloadavg()[0]:.2f})\n\n{table}\n")
    if marker not in text:
        text = text.rstrip("\n") + f"\n\n{marker}\n\n{run}"
    else:
        head, _, rest = text.partition(marker)
        nxt = rest.find("\n## ")
        body, tail = (rest, "") if nxt < 0 else (rest[:nxt + 1], rest[nxt + 1:])
        text = head + marker + body.rstrip("\n") + "\n\n" + run + ("\n" + tail if tail else "")
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
