"""A run's warnings as notices (``core.notices.Notice``): one per finding, deduplicated, each with a code.

``run_warnings`` is what the summary prints under the table and what the
result keeps in ``infermeter.warnings`` (as notice dicts); ``merge`` rebuilds
the same from pooled records.  Codes (docs/validity.md, "Codes"):

``unequal-work``, ``server-count-mismatch``, ``ignore-eos-unsupported``,
``output-length-not-fixed``, ``requests-failed``, ``no-success``,
``stopped-early``, ``too-few-samples``, ``not-streamed``, ``goodput-unjudged``,
``client-bound``, ``client-cpu-busy``, ``sends-late``.
"""

from __future__ import annotations

from typing import Any, Sequence

from infermeter.core.notices import Notice, dedupe
from infermeter.core.outcome import ClientStats
from infermeter.metrics.stats import min_samples_for

#: Warnings that ``merge`` recomputes from the pooled records (the rest are carried over once).
RECOMPUTED = frozenset({"unequal-work", "server-count-mismatch", "requests-failed", "no-success",
                        "too-few-samples", "not-streamed", "goodput-unjudged", "client-bound",
                        "client-cpu-busy", "sends-late"})


def metric_warnings(metrics: dict, client: ClientStats, *, rate_mode: bool,
                    first_error: tuple[str, str] | None = None) -> list[Notice]:
    """The warnings that follow from a run's metrics and its client's account of itself."""
    out: list[Notice] = []
    work = metrics["work"]
    if work.get("warning"):
        out.append(Notice("unequal-work", "UNEQUAL WORK: " + work["warning"],
                          {k: work.get(k) for k in ("requests_checked", "shorter_than_asked", "longer_than_asked",
                                                    "produced_output_tokens", "requested_output_tokens")}))
    check = work.get("token_count_crosscheck") or {}
    if check.get("mismatched"):
        out.append(Notice("server-count-mismatch",
                          f"SERVER TOKEN COUNTS WRONG: {check['mismatched']} of {check['checked']} requests received "
                          f"another number of tokens than the server's usage says ({check.get('server_output_tokens')} "
                          f"counted, {check.get('used_output_tokens')} used): the counts received are used",
                          {k: check.get(k) for k in ("checked", "mismatched", "server_output_tokens",
                                                     "used_output_tokens", "examples")}))
    failed, completed = int(metrics["failed"]), int(metrics["completed"])
    if failed:
        by_class = dict(metrics["errors_by_class"])
        classes = ", ".join(f"{k} {v}" for k, v in sorted(by_class.items()))
        example = f"; first: {first_error[0]}: {first_error[1][:200]}" if first_error else ""
        code = "no-success" if not completed else "requests-failed"
        out.append(Notice(code, f"{failed} of {failed + completed} requests failed ({classes}){example}"
                          + (": no latency was measured" if not completed else ""),
                          {"failed": failed, "total": failed + completed, "errors_by_class": by_class}))
    counts = metrics["sample_counts"]
    short = {name: ps for name, ps in metrics["unsupported_percentiles"].items() if ps}
    if short:  # one line for every metric, not one each
        need = {p: min_samples_for(float(p)) for ps in short.values() for p in ps}
        out.append(Notice(
            "too-few-samples", "too few samples, shown as n/a: "
            + "; ".join(f"{name} p{', p'.join(ps)} (n = {counts[name]})" for name, ps in short.items())
            + " (" + ", ".join(f"p{p} needs {k}" for p, k in sorted(need.items(), key=lambda kv: kv[1])) + ")",
            {"metrics": {name: {"percentiles": list(ps), "n": counts[name]} for name, ps in short.items()},
             "needed": need}))
    untimed = int(metrics.get("untimed_requests") or 0)
    if untimed:
        out.append(Notice("not-streamed", f"{untimed} answers came whole (one event: no streaming): TPOT and ITL "
                          "are not measured for them (absent, not 0)", {"requests": untimed}))
    unjudged = {k: v for k, v in (metrics.get("goodput_unjudged") or {}).items() if v}
    if unjudged:
        out.append(Notice("goodput-unjudged", "goodput: " + ", ".join(
            f"the {k} SLO could not be judged for {v} requests and was left out" for k, v in unjudged.items()),
            {"unjudged": unjudged}))
    if client.client_bound:
        out.append(Notice("client-bound", "CLIENT-BOUND: " + "; ".join(client.reasons),
                          {"error_bound_pct": client.client_error_bound_pct,
                           "tolerance_pct": client.client_error_tolerance_pct}))
    if client.cpu_busy:
        out.append(Notice("client-cpu-busy", f"the client process used {100 * client.cpu_utilization:.0f}% of a core",
                          {"cpu_utilization": client.cpu_utilization}))
    if client.prompt_waits:
        out.append(Notice("prompt-wait", f"{client.prompt_waits} sends waited {client.prompt_wait_s or 0:.3f} s in all "
                          "for their prompt to be built: the client could not build prompts as fast as it sent them",
                          {"waits": client.prompt_waits, "wait_s": client.prompt_wait_s}))
    if rate_mode and client.dispatch_lag_p99_ms and client.dispatch_lag_p99_ms > 1.0:
        out.append(Notice("sends-late", f"sends ran late: p99 dispatch lag {client.dispatch_lag_p99_ms:.2f} ms",
                          {"dispatch_lag_p99_ms": client.dispatch_lag_p99_ms}))
    return out


def run_warnings(metrics: dict, client: ClientStats, *, rate_mode: bool, stopped_early: str | None,
                 ignore_eos: bool, ignore_eos_method: str | None, length_checked: bool,
                 first_error: tuple[str, str] | None = None) -> list[Notice]:
    """Every warning of one run, deduplicated.  ``ignore_eos_method``: how the backend fixes the
    output length, when ``--ignore-eos`` was asked and the backend cannot honour it as such."""
    out = metric_warnings(metrics, client, rate_mode=rate_mode, first_error=first_error)
    head = [n for n in out if n.code in ("unequal-work", "server-count-mismatch")]
    rest = [n for n in out if n not in head]
    extra: list[Notice] = []
    if ignore_eos and ignore_eos_method:
        extra.append(Notice("ignore-eos-unsupported", f"--ignore-eos: {ignore_eos_method}",
                            {"method": ignore_eos_method}))
    if not ignore_eos and length_checked:
        extra.append(Notice("output-length-not-fixed",
                            "output length not fixed (no --ignore-eos): servers may stop at EOS, so runs against "
                            "different servers may not do equal work"))
    if stopped_early:
        extra.append(Notice("stopped-early", f"stopped early: {stopped_early}", {"why": stopped_early}))
    return dedupe(head + extra + rest)


def as_dicts(notices: Sequence[Notice]) -> list[dict[str, Any]]:
    return [n.to_dict() for n in notices]
