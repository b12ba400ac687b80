"""The client's stated error bound against the error its lag actually caused.

Every run states ``client_error_bound_pct`` (TTFT: mean event-loop lag / mean
TTFT; ITL: mean difference of two lags / mean ITL) and is INVALID past the
tolerance (docs/validity.md).  This measures, against ground truth, what the
lag actually did.  The in-tree test server (pinned to one core, request ids
recorded) streams with injected TTFT and ITL; ``infermeter run`` is pinned to
another core and made busy two ways:

* ``burn B:E``: a busy loop of B ms every E ms inside the client's event loop
  (``INFERMETER_TEST_BURN``), a client doing too much work;
* ``hog``: a second process spinning on the client's core (a busy host).

Per point: the stated bounds; the TTFT error (mean and p99, client vs the
server's first-token write, joined by request id); the mean-ITL error (client
gaps vs the server's write span); and the client's p50/p99 ITL against the
injected ITL (which also holds the server's own jitter: an upper bound on what
the client did to single gaps).

    python benchmarks/client_error_bound.py [--slow] [--requests 120] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
from pathlib import Path

import numpy as np

POINTS = [  # (label, burn "busy:every" or None, hog, itl_ms, ttft_ms, concurrency)
    ("idle", None, False, 5.0, 20.0, 16),
    ("hog", None, True, 5.0, 20.0, 16),
    ("burn 0.5:10", "0.5:10", False, 5.0, 20.0, 16),
    ("burn 1:5", "1:5", False, 5.0, 20.0, 16),
    ("burn 2:5", "2:5", False, 5.0, 20.0, 16),
    ("idle", None, False, 1.0, 20.0, 16),
    ("burn 0.5:10", "0.5:10", False, 1.0, 20.0, 16),
    ("burn 1:5", "1:5", False, 1.0, 20.0, 16),
]
SLOW_POINTS = [  # longer latencies: the same lag is a smaller share of them (bounds of 1-10 %)
    ("idle", None, False, 20.0, 200.0, 8),
    ("hog", None, True, 20.0, 200.0, 8),
    ("burn 0.5:10", "0.5:10", False, 20.0, 200.0, 8),
    ("burn 1:5", "1:5", False, 20.0, 200.0, 8),
    ("idle", None, False, 10.0, 100.0, 8),
    ("burn 1:5", "1:5", False, 10.0, 100.0, 8),
]


def _hog(cpu: int, stop) -> None:
    os.sched_setaffinity(0, {cpu})
    while not stop.is_set():
        for _ in range(100_000):
            pass


def point(srv, tokenizer_dir: str, label: str, burn: str | None, hog: bool, itl: float, ttft: float, conc: int,
          requests: int, out_dir: Path, client_cpu: int) -> dict:
    from infermeter.runner.execute import execute_run
    from infermeter.runner.selfcheck import truth_from
    from infermeter.runner.spec import RunSpec
    from infermeter.storage.files import read_records

    srv.reset_stats()
    if burn:
        os.environ["INFERMETER_TEST_BURN"] = burn
    stop = mp.Event()
    hogger = mp.Process(target=_hog, args=(client_cpu, stop), daemon=True) if hog else None
    if hogger:
        hogger.start()
    try:
        report = execute_run(RunSpec.from_flat(dict(
            backend="vllm", base_url=srv.base_url, model="test-model", tokenizer=tokenizer_dir,
            dataset_name="random", random_input_len=16, random_output_len=32, ignore_eos=True,
            num_prompts=requests, max_concurrency=conc, result_dir=str(out_dir),
            result_filename=f"{label.replace(' ', '_').replace(':', '-')}-itl{itl:g}.json", progress=False)))
    finally:
        os.environ.pop("INFERMETER_TEST_BURN", None)
        if hogger:
            stop.set()
            hogger.join(5)
    r = report.result
    records = [x for x in read_records(report.records_path) if not x.warmup]
    truth = truth_from(r, records, srv.stats(requests=True).get("requests", []))
    gaps = np.array([g * 1e3 for x in records if x.ok for g in x.itls])
    bound = r["infermeter"]["client"].get("client_error_bound_pct") or {}
    pct = lambda v: None if v is None else 100.0 * v  # noqa: E731
    return {
        "client": label, "itl_ms": itl, "ttft_ms": ttft, "concurrency": conc, "requests": requests,
        "lag_mean_ms": r["infermeter"]["client"]["loop_lag_mean_ms"],
        "bound_ttft_pct": bound.get("ttft"), "bound_itl_pct": bound.get("itl"),
        "ttft_error_pct": pct(truth["ttft_error"]), "p99_ttft_error_pct": pct(truth["p99_ttft_error"]),
        "mean_itl_error_pct": pct(truth["itl_error"]),
        "p50_itl_vs_injected_pct": 100.0 * (float(np.percentile(gaps, 50)) - itl) / itl if gaps.size else None,
        "p99_itl_vs_injected_pct": 100.0 * (float(np.percentile(gaps, 99)) - itl) / itl if gaps.size else None,
        "validity": r["infermeter"]["validity"]["label"],
        "load_avg": os.getloadavg()[0],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=120)
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--slow", action="store_true", help="the points with 100-200 ms TTFT and 10-20 ms ITL")
    args = ap.parse_args()
    from infermeter.embedded.models import ensure_tokenizer
    from infermeter.runner.selfcheck import pick_cpus
    from infermeter.testserver.helper import run_test_server

    tokenizer_dir = str(ensure_tokenizer()[0])
    server_cpu, client_cpu = pick_cpus(None, None)
    os.environ["INFERMETER_REQUEST_ID_HEADER"] = "X-Request-Id"
    rows = []
    with tempfile.TemporaryDirectory(prefix="im-bound-") as tmp:
        if client_cpu is not None:
            os.sched_setaffinity(0, {client_cpu})
        by_itl: dict[tuple[float, float], list] = {}
        for p in SLOW_POINTS if args.slow else POINTS:
            by_itl.setdefault((p[3], p[4]), []).append(p)
        for (itl, ttft), pts in by_itl.items():
            with run_test_server(ttft_ms=ttft, itl_ms=itl, cpu=server_cpu, stats_keep_requests=args.requests + 64) as srv:
                for label, burn, hog, _, _, conc in pts:
                    row = point(srv, tokenizer_dir, label, burn, hog, itl, ttft, conc, args.requests, Path(tmp),
                                client_cpu if client_cpu is not None else 0)
                    rows.append(row)
                    f = lambda v: "-" if v is None else f"{v:6.2f}"  # noqa: E731
                    print(f"{row['client']:12} ITL {itl:g} ms  lag {row['lag_mean_ms']:.3f} ms | bound TTFT "
                          f"{f(row['bound_ttft_pct'])}% ITL {f(row['bound_itl_pct'])}% | TTFT err mean "
                          f"{f(row['ttft_error_pct'])}% p99 {f(row['p99_ttft_error_pct'])}% | ITL err mean "
                          f"{f(row['mean_itl_error_pct'])}% p50 {f(row['p50_itl_vs_injected_pct'])}% p99 "
                          f"{f(row['p99_itl_vs_injected_pct'])}% | {row['validity']} | load {row['load_avg']:.1f}",
                          flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
