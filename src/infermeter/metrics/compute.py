"""Benchmark metrics from request records, with vLLM's definitions and key names.

* TTFT: first content-carrying event minus send time.
* ITL: gaps between consecutive content-carrying events (chunks), as vLLM.
* TPOT: (E2EL - TTFT) / (output tokens - 1), for requests with > 1 token
  that arrived in at least two content events (a whole answer in one event,
  as without streaming, times no token after the first: no TPOT).
* E2EL: last byte minus send time.
* Throughputs divide by the measured window: first send to last end.
* Output tokens: the server's ``usage`` count; the client tokenizer's count
  where the server gave none; what was actually received where the server's
  count disagrees with it (``received``, from ``metrics.tokens.crosscheck_counts``).

A statistic with no samples is None (null), never 0 (docs/results.md).  A
percentile that its sample cannot support (``stats.min_samples_for``) is None
too, and ``unsupported_percentiles`` says which and ``sample_counts`` why.
"""

from __future__ import annotations

import math

from collections import Counter
from dataclasses import dataclass
from typing import Iterable, Mapping, Sequence


from infermeter.errors import FieldError
from infermeter.core.samplecolumn import SampleColumn
from infermeter.metrics.stats import describe, min_samples_for, pct_label
from infermeter.core.records import RequestRecord

METRICS = ("ttft", "tpot", "itl", "e2el")
DEFAULT_PERCENTILES = (50.0, 90.0, 95.0, 99.0)


@dataclass(frozen=True)
class GoodputSLO:
    """Per-request limits in milliseconds; a request is 'good' when it meets all."""

    limits_ms: dict[str, float]

    @classmethod
    def parse(cls, items: Sequence[str]) -> "GoodputSLO":
        limits: dict[str, float] = {}
        for item in items:
            for part in item.replace(",", " ").split():
                name, sep, value = part.partition(":")
                if not sep:
                    raise FieldError("output.goodput", part, "{output.goodput} {value!r} is not NAME:MS",
                                     "write e.g. {output.goodput} ttft:500 tpot:50 (milliseconds)")
                if name not in ("ttft", "tpot", "e2el"):
                    raise FieldError("output.goodput", part, "{output.goodput} metric {name!r} is not supported",
                                     "use ttft, tpot or e2el", name=name)
                try:
                    limit = float(value)
                except ValueError:
                    raise FieldError("output.goodput", part, "{output.goodput} {value!r}: {limit!r} is not a number",
                                     "give milliseconds, e.g. ttft:500", limit=value) from None
                if not limit > 0:
                    raise FieldError("output.goodput", part, "{output.goodput} {value!r} must be positive",
                                     "give milliseconds > 0")
                limits[name] = limit
        return cls(limits)

    def met(self, rec: RequestRecord, unjudged: Counter | None = None, out_tokens: int | None = None) -> bool:
        """Did ``rec`` meet every limit?  A limit that cannot be judged for it (TPOT of an
        answer that came in one event, as without streaming) is left out, and counted
        in ``unjudged``; a one-token answer has no TPOT and meets it, as in vLLM."""
        for name, limit in self.limits_ms.items():
            if name == "tpot":
                n = rec.output_tokens if out_tokens is None else out_tokens
                if n < 2:
                    continue
                value = tpot_of(rec, n)
                if value is None:
                    if unjudged is not None:
                        unjudged[name] += 1
                    continue
            else:
                value = getattr(rec, name)
            if value is None:
                return False
            if value * 1e3 > limit:
                return False
        return True


def tpot_of(rec: RequestRecord, out_tokens: int | None = None) -> float | None:
    """(E2EL - TTFT) / (n - 1), or None: fewer than 2 tokens, or fewer than 2 content events
    (the tokens after the first were not timed: a whole answer at once)."""
    n = rec.output_tokens if out_tokens is None else out_tokens
    if n < 2 or len(rec.token_times) < 2:
        return None
    ttft, e2el = rec.ttft, rec.e2el
    if ttft is None or e2el is None:
        return None
    return (e2el - ttft) / (n - 1)


def parse_percentiles(text: str) -> list[float]:
    try:
        values = [float(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise FieldError("output.metric_percentiles", text, "{output.metric_percentiles} {value!r} is not a list "
                         "of numbers", "write e.g. {output.metric_percentiles} 50,90,99") from None
    if not values or any(not 0 < v < 100 for v in values):
        raise FieldError("output.metric_percentiles", text, "{output.metric_percentiles} {value!r} must be numbers "
                         "between 0 and 100", "write e.g. {output.metric_percentiles} 50,90,99")
    return values


def parse_metric_names(text: str) -> list[str]:
    names = [x for x in text.replace(" ", "").split(",") if x]
    bad = [x for x in names if x not in METRICS]
    if bad or not names:
        raise FieldError("output.percentile_metrics", text, "{output.percentile_metrics} {value!r} names unknown "
                         "metrics {bad}", "choose from {known}", bad=bad, known=",".join(METRICS))
    return names


def compute(
    records: Sequence[RequestRecord],
    duration: float,
    percentiles: Sequence[float] = DEFAULT_PERCENTILES,
    goodput: GoodputSLO | None = None,
    received: Mapping[int, int] | None = None,
) -> dict:
    """Every aggregate of one run, keyed as vLLM keys them (plus extras).

    ``received``: output tokens actually received, by request index, for the
    requests whose server count was found wrong (they replace it everywhere).

    One pass over ``records``, keeping no record: the samples go to
    ``SampleColumn``s (flat floats, spilled to disk past their memory bound),
    so neither a long run's records (a RecordStore rebuilds each on access)
    nor its samples are ever all in memory at once; the statistics of a
    spilled column are still exact (core/samplecolumn.py)."""
    n_ok = n_failed = n_cut = 0
    dur = duration if duration > 0 else float("nan")
    out_lens = _LengthTally()
    total_in = 0
    samples = {name: SampleColumn() for name in METRICS}
    errors: Counter = Counter()
    good = 0
    unjudged: Counter = Counter()
    received = received or {}
    untimed = 0  # successful multi-token answers that came in one content event (no TPOT, no ITL)
    work = _WorkTally()
    sends = Span()  # every request's send: the arrival rate the client achieved
    ends = Span()  # every successful request's end: the rate the server finished them
    for r in records:
        sends.add(r.sent)
        if not r.ok and r.error == "cut_off":  # a --duration run's end: counted apart, not a failure
            n_cut += 1
            continue
        if not r.ok:
            n_failed += 1
            if r.error:
                errors[r.error] += 1
            continue
        n_ok += 1
        ends.add(r.end)
        n_out = received.get(r.index, r.output_tokens)
        out_lens.add(n_out)
        total_in += r.input_len
        for name in ("ttft", "e2el"):
            value = getattr(r, name)
            if value is not None:
                samples[name].append(value)
        tpot = tpot_of(r, n_out)
        if tpot is not None:
            samples["tpot"].append(tpot)
        elif n_out >= 2 and len(r.token_times) < 2:
            untimed += 1
        if len(r.token_times) > 1:
            samples["itl"].extend(r.itls)
        if goodput is not None and goodput.met(r, unjudged, n_out):
            good += 1
        work.add(r, n_out, r.index in received)
    total_in = int(total_in)
    total_out = out_lens.total
    # A rate over the measured window: 0 is a measured zero (nothing completed in a window
    # that had a length); no window at all (nothing sent, or nothing ended) has no rate.
    timed = duration > 0 and not math.isnan(dur)
    m: dict = {
        "completed": n_ok,
        "failed": n_failed,
        "cut_off": n_cut,
        "duration": duration,
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": n_ok / dur if timed else None,
        "output_throughput": total_out / dur if timed else None,
        "total_token_throughput": (total_in + total_out) / dur if timed else None,
        "sent_rate": sends.rate(),
        "completion_rate": ends.rate(),
    }
    if goodput is not None:
        m["request_goodput"] = good / dur if timed else None
        m["goodput_fraction"] = good / n_ok if n_ok else None  # no request: no fraction
        m["goodput_unjudged"] = dict(unjudged)  # per SLO: requests it could not be judged for
        m["goodput"] = {"slo_ms": dict(goodput.limits_ms), "fraction_met": m["goodput_fraction"],
                        "unjudged": dict(unjudged)}
    counts: dict[str, int] = {}
    unsupported: dict[str, list[str]] = {}
    for name in METRICS:
        with samples[name] as column:
            d = describe(column, percentiles)
        counts[name] = d["count"]
        m[f"mean_{name}_ms"] = d["mean"]
        m[f"median_{name}_ms"] = d["median"]
        m[f"std_{name}_ms"] = d["std"]
        unsupported[name] = [pct_label(p) for p in percentiles if 0 < counts[name] < min_samples_for(p)]
        for p in percentiles:
            label = pct_label(p)
            # a percentile the sample cannot support is no number (it would only be the maximum)
            m[f"p{label}_{name}_ms"] = None if label in unsupported[name] else d[f"p{label}"]
    m["sample_counts"] = counts
    m["unsupported_percentiles"] = unsupported
    m["untimed_requests"] = untimed
    m["errors_by_class"] = dict(errors)
    m["output_len_stats"] = out_lens.result()
    m["work"] = work.result()
    return m


class Span:
    """Count, first and last of a series of times: its rate is (count - 1) / (last - first),
    the events per second between the first and the last (None with fewer than two)."""

    __slots__ = ("n", "first", "last")

    def __init__(self) -> None:
        self.n = 0
        self.first = math.inf
        self.last = -math.inf

    def add(self, t: float | None) -> None:
        if t is not None:
            self.n += 1
            self.first = min(self.first, t)
            self.last = max(self.last, t)

    def rate(self) -> float | None:
        span = self.last - self.first
        return (self.n - 1) / span if self.n >= 2 and span > 0 else None


def achieved_rates(records: Iterable[RequestRecord]) -> dict[str, float | None]:
    """``sent_rate`` and ``completion_rate`` of measured (not warm-up) records, as ``compute`` has them."""
    sends, ends = Span(), Span()
    for r in records:
        if getattr(r, "warmup", False):
            continue
        sends.add(r.sent)
        if r.ok:
            ends.add(r.end)
    return {"sent_rate": sends.rate(), "completion_rate": ends.rate()}


class _LengthTally:
    """min / mean / max of the output lengths, one at a time (keeps none)."""

    def __init__(self) -> None:
        self.n = self.total = 0
        self.lo: int | None = None
        self.hi: int | None = None

    def add(self, value: int) -> None:
        self.n += 1
        self.total += value
        self.lo = value if self.lo is None or value < self.lo else self.lo
        self.hi = value if self.hi is None or value > self.hi else self.hi

    def result(self) -> dict:
        if not self.n:
            return {"min": None, "mean": None, "max": None}
        return {"min": int(self.lo), "mean": self.total / self.n, "max": int(self.hi)}  # type: ignore[arg-type]


def equal_work(ok: Iterable[RequestRecord]) -> dict:
    """Did each request produce the tokens asked for? (server usage first)"""
    tally = _WorkTally()
    for r in ok:
        tally.add(r)
    return tally.result()


class _WorkTally:
    """equal_work's counts, one successful record at a time (keeps none)."""

    def __init__(self) -> None:
        self.asked = self.short = self.long = self.requested = self.produced = 0
        self.sources: Counter = Counter()

    def add(self, r: RequestRecord, out: int | None = None, corrected: bool = False) -> None:
        out = r.output_tokens if out is None else out
        if r.requested_output_len is not None:
            self.asked += 1
            self.requested += r.requested_output_len
            self.produced += out
            if out < r.requested_output_len:
                self.short += 1
            elif out > r.requested_output_len:
                self.long += 1
        self.sources["received" if corrected else "server" if r.output_tokens_server is not None else
                     ("tokenizer" if r.output_tokens_client is not None else "events")] += 1

    def result(self) -> dict:
        exact = not self.short and not self.long
        warning = None
        if self.asked and not exact:
            warning = (f"{self.short + self.long} of {self.asked} requests did not produce the output length "
                       f"asked for ({self.produced} tokens produced, {self.requested} asked): throughput and "
                       f"latency are not comparable with runs that did equal work")
        return {
            "requests_checked": self.asked,
            "requested_output_tokens": self.requested,
            "produced_output_tokens": self.produced,
            "shorter_than_asked": self.short,
            "longer_than_asked": self.long,
            "exact": exact,
            "count_source": dict(self.sources),
            "warning": warning,
        }
