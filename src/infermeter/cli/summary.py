"""The summary printed at the end of a run.

A compact block in the shape ``vllm bench serve`` users know: a 40-column
label, then the value, about 50 columns in all, so it reads the same in an
80-column terminal as in a wide one.  The validity label comes last, with
one line saying why the result is VALID or what makes it INVALID.
"""

from __future__ import annotations

import textwrap

from rich.console import Console
from rich.markup import escape

from infermeter.core.notices import message
from infermeter.errors import safe_text
from infermeter.metrics.stats import pct_label

WIDTH = 50  # the block's width; labels take LABEL columns, values follow after one space
LABEL = 40
NAMES = {"ttft": "Time to First Token", "tpot": "Time per Output Token (excl. 1st token)",
         "itl": "Inter-token Latency", "e2el": "End-to-end Latency"}


def _num(value: object, fmt: str) -> str:
    """A number, or "—" for a statistic that has no value (null: no samples)."""
    return "—" if value is None else format(value, fmt)


def _safe(text: object) -> str:
    """Text from a server or a spec: no control sequences, no rich markup."""
    return escape(safe_text(text))


def rule(title: str = "", char: str = "-") -> str:
    """A WIDTH-wide line with ``title`` centred in it."""
    return f" {title} ".center(WIDTH, char) if title else char * WIDTH


def summary_lines(result: dict) -> list[str]:
    """The summary as plain lines (no markup), in print order."""
    im = result["infermeter"]
    lines = [rule("Serving Benchmark Result", "=")]

    def row(name: str, value: object) -> None:
        lines.append(f"{name:<{LABEL}} {safe_text(value)}")

    target = im["target"]
    lines.append(f"Target  {safe_text(target['backend'])} @ {safe_text(target['base_url'])}"
                 f"{safe_text(target['endpoint'])}")
    lines.append(f"Model   {safe_text(result['model_id'])}")
    lines.append(f"Load    {safe_text(im['load']['description'])}")
    lines.append(rule())
    row("Successful requests", result["completed"])
    row("Failed requests", result["failed"])
    row("Benchmark duration (s)", f"{result['duration']:.2f}")
    row("Total input tokens", result["total_input_tokens"])
    row("Total generated tokens", result["total_output_tokens"])
    ol = im["output_len_stats"]
    row("Output tokens per request (min/mean/max)",
        f"{_num(ol['min'], '')} / {_num(ol['mean'], '.1f')} / {_num(ol['max'], '')}")
    row("Request throughput (req/s)", _num(result['request_throughput'], '.2f'))
    if result.get("request_goodput") is not None:
        row("Request goodput (req/s)", _num(result['request_goodput'], '.2f'))
    row("Output token throughput (tok/s)", _num(result['output_throughput'], '.2f'))
    row("Total token throughput (tok/s)", _num(result['total_token_throughput'], '.2f'))
    counts = im["sample_counts"]
    for metric in im["percentile_metrics"] if result["completed"] else []:  # no success: no latency
        lines.append(rule(f"{NAMES[metric]} (n={counts[metric]})"))
        row(f"Mean {metric.upper()} (ms)", _num(result[f'mean_{metric}_ms'], '.2f'))
        row(f"Median {metric.upper()} (ms)", _num(result[f'median_{metric}_ms'], '.2f'))
        unsupported = set(im["unsupported_percentiles"].get(metric, []))
        for p in im["percentiles"]:
            label = pct_label(p)
            value = result[f'p{label}_{metric}_ms']
            row(f"P{label} {metric.upper()} (ms)",
                f"n/a (n = {counts[metric]})" if label in unsupported or value is None else f"{value:.2f}")
    efficiency_lines(im.get("efficiency"), lines)
    client = im["client"]
    lines.append(rule("Client"))
    row("Client CPU (% of a core)", f"{100 * client['cpu_utilization']:.0f}")
    row("Event-loop lag mean / p99 (ms)", f"{client['loop_lag_mean_ms']:.3f} / {client['loop_lag_p99_ms']:.3f}")
    bound = client.get("client_error_bound_pct") or {}
    figures = " / ".join("—" if bound.get(k) is None else f"{bound[k]:.1f}" for k in ("ttft", "itl"))
    row("Client error bound TTFT / ITL (%)", figures + (f" (tolerance {client['client_error_tolerance_pct']:g})"
                                                      if client.get("client_error_tolerance_pct") else ""))
    row("Client-bound", "YES" if client["client_bound"] else "no")
    placement = placement_of(result)
    if placement:
        row("Cores (engine / client)", placement_text(placement))
    validity = im.get("validity")  # docs/validity.md
    if validity:
        lines.append(rule(char="="))
        row("Validity", validity["label"])
        lines.append(f"({validity_reason(result)})")
    else:
        lines.append(rule(char="="))
    return lines


def efficiency_lines(eff: dict | None, lines: list[str]) -> None:
    """Per GPU, energy and cost (docs/cost.md): a figure, or n/a with its reason on the next line."""
    if not eff:
        return
    lines.append(rule("Energy and cost"))
    reasons = eff.get("reasons") or {}
    keys = ("output_throughput_per_gpu", "energy_per_output_token_j", "usd_per_million_output_tokens")
    if all(eff.get(k) is None for k in keys):  # nothing to show (e.g. a CPU machine, no price): one line
        lines.append(f"{'Per GPU, energy, cost':<{LABEL}} n/a")
        parts: list[str] = []
        for group in ("per_gpu", "energy", "cost"):
            part = _short(reasons.get(group) or "not measured")
            if not any(part in earlier for earlier in parts):  # "no GPU telemetry" said once
                parts.append(part)
        why = "; ".join(parts)
        lines.extend(textwrap.wrap(f"({safe_text(why)})", 78, initial_indent="  ", subsequent_indent="   "))
        return

    def row(name: str, value: object, fmt: str, note: str, group: str) -> None:
        if value is None:
            lines.append(f"{name:<{LABEL}} n/a")
            why = f"({safe_text(_short(reasons.get(group) or 'not measured'))})"
            lines.extend(textwrap.wrap(why, 78, initial_indent="  ", subsequent_indent="   "))
        else:
            lines.append(f"{name:<{LABEL}} {format(value, fmt)}" + (f" ({safe_text(note)})" if note else ""))

    gpus = f"{eff['gpu_count']} GPU{'s' if eff.get('gpu_count') != 1 else ''}, {eff.get('gpu_count_source')}"
    row("Output tok/s per GPU", eff.get("output_throughput_per_gpu"), ",.2f", gpus, "per_gpu")
    row("Energy per output token (J)", eff.get("energy_per_output_token_j"), ".4g",
        eff.get("energy_method") or "", "energy")
    if eff.get("mean_power_w") is not None:
        row("Mean GPU power (W)", eff["mean_power_w"], ",.1f", "", "energy")
    price = eff.get("price") or {}
    basis = (f"${price['per_hour']:g}/{'GPU' if price.get('per') == 'gpu' else 'node'}-hour, {price.get('source')}"
             if price else "")
    row("Cost per million output tokens ($)", eff.get("usd_per_million_output_tokens"), ",.4g", basis, "cost")


def _short(reason: str) -> str:
    """A reason's first clause for the terminal (the result JSON keeps it whole)."""
    return reason.split(" (", 1)[0] if len(reason) > 90 else reason


def placement_of(result: dict) -> dict | None:
    """Where the embedded engine and the client ran (embedded/placement.py), if recorded."""
    engine = (result["infermeter"].get("target") or {}).get("embedded_engine") or {}
    return engine.get("placement")


def placement_text(placement: dict) -> str:
    def cores(cpus: list[int] | None) -> str:
        return "any" if not cpus else ",".join(str(c) for c in cpus)

    return f"{cores(placement.get('engine_cpus'))} / {cores(placement.get('client_cpus'))}"


def validity_reason(result: dict) -> str:
    """One line: what makes the result INVALID, or why it is VALID."""
    im = result["infermeter"]
    validity = im["validity"]
    if validity["label"] != "VALID":
        return "; ".join(message(r) for r in validity["reasons"]) or "see the result's validity section"
    parts = []
    work = im.get("work") or {}
    if work.get("requests_checked") and work.get("exact"):
        parts.append("equal work: every request produced the output length asked")
    failed = int(result.get("failed") or 0)
    parts.append("no request failed" if not failed else f"{failed} failed, within the error-rate limit")
    client = im.get("client") or {}
    bound = validity.get("client_error_bound_pct") or client.get("client_error_bound_pct") or {}
    tol = client.get("client_error_tolerance_pct")
    shown = [f"{k.upper()} {bound[k]:.1f}%" for k in ("ttft", "itl") if bound.get(k) is not None]
    if shown:
        parts.append(f"the client's possible error ({', '.join(shown)}) is within the tolerance"
                     + (f" of {tol:g}%" if tol else ""))
    placement = placement_of(result)
    if placement and placement.get("pinned"):
        parts.append(f"engine and client on their own cores ({placement_text(placement)})")
    return "; ".join(parts)


def print_summary(console: Console, result: dict, result_path: str, records_path: str) -> None:
    for line in summary_lines(result):
        console.print(line, markup=False, highlight=False, emoji=False)
    for w in result["infermeter"]["warnings"]:
        console.print(f"[bold yellow]warning:[/bold yellow] {_safe(message(w))}")
    console.print(f"Results: {_safe(result_path)}")
    console.print(f"Per-request records: {_safe(records_path)}")
