"""Cost of the live statistics: ``Counters.observe`` per request and ``LogHistogram.add_array``
per value (folds included), and, where installed, the per-value add of ddsketch and
hdrhistogram for comparison (core/histogram.py says why neither is used).

    python benchmarks/live_stats.py [--requests 200000]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from infermeter.core.histogram import LogHistogram  # noqa: E402
from infermeter.core.outcome import Counters  # noqa: E402
from infermeter.core.records import RequestRecord  # noqa: E402


def records(n: int, tokens: int) -> list[RequestRecord]:
    out = []
    for i in range(n):
        times = [0.1 + 0.01 * j + 1e-4 * (i % 7) for j in range(tokens)]
        out.append(RequestRecord(index=i, warmup=False, scheduled=0.0, input_len=10, requested_output_len=tokens,
                                 sent=0.0, first_token=times[0], end=times[-1], token_times=times, ok=True))
    return out


def observe_us(recs: list[RequestRecord], repeats: int = 3) -> float:
    best = float("inf")
    for _ in range(repeats):
        c = Counters()
        observe = c.observe
        t = time.perf_counter()
        for r in recs:
            observe(r)
        c.snapshot()  # the last fold
        best = min(best, (time.perf_counter() - t) / len(recs) * 1e6)
    return best


def add_array_ns(values: np.ndarray, batch: int) -> float:
    h = LogHistogram()
    t = time.perf_counter()
    for i in range(0, values.size, batch):
        h.add_array(values[i:i + batch])
    return (time.perf_counter() - t) / values.size * 1e9


def packages_ns(values: np.ndarray) -> dict[str, float]:
    out = {}
    try:
        from ddsketch import DDSketch

        s, t = DDSketch(0.01), time.perf_counter()
        for v in values.tolist():
            s.add(v)
        out["ddsketch DDSketch.add"] = (time.perf_counter() - t) / values.size * 1e9
    except ImportError:
        pass
    try:
        from hdrh.histogram import HdrHistogram

        h, us = HdrHistogram(1, 3_600_000_000, 2), (values * 1e6).astype(np.int64).tolist()
        t = time.perf_counter()
        for v in us:
            h.record_value(v)
        out["hdrhistogram record_value (us)"] = (time.perf_counter() - t) / values.size * 1e9
    except ImportError:
        pass
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=200_000)
    args = ap.parse_args()
    for tokens in (8, 64):
        print(f"Counters.observe, {tokens} token times: {observe_us(records(args.requests, tokens)):.2f} us/request "
              "(folds included)")
    values = np.random.default_rng(0).lognormal(-3, 1, 1_000_000)
    for batch in (512, 4096, 65536):
        print(f"LogHistogram.add_array, batches of {batch}: {add_array_ns(values, batch):.1f} ns/value")
    for name, ns in packages_ns(values[:200_000]).items():
        print(f"{name}: {ns:.0f} ns/value")


if __name__ == "__main__":
    main()
