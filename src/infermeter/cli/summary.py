"""The summary table printed at the end of a run."""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infermeter.core.notices import message
from infermeter.errors import safe_text
from infermeter.metrics.stats import pct_label


def _num(value: object, fmt: str) -> str:
    """A number, or "—" for a statistic that has no value (null: no samples)."""
    return "—" if value is None else format(value, fmt)


def _safe(text: object) -> str:
    """Text from a server or a spec: no control sequences, no rich markup."""
    return escape(safe_text(text))


def print_summary(console: Console, result: dict, result_path: str, records_path: str) -> None:
    im = result["infermeter"]
    load = im["load"]
    table = Table(title="infermeter — Serving Benchmark Result", show_header=False, title_justify="left",
                  box=None, pad_edge=False)
    table.add_column("metric", style="bold")
    table.add_column("value", justify="right")

    def row(name: str, value: object) -> None:
        table.add_row(name, _safe(value))

    row("Target", f"{im['target']['backend']} @ {im['target']['base_url']}{im['target']['endpoint']}")
    row("Model", result["model_id"])
    row("Load", load["description"])
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
    names = {"ttft": "Time to First Token", "tpot": "Time per Output Token (excl. 1st token)",
             "itl": "Inter-token Latency", "e2el": "End-to-end Latency"}
    counts = im["sample_counts"]
    for metric in im["percentile_metrics"] if result["completed"] else []:  # no success: no latency
        table.add_row(f"[dim]— {names[metric]} (n={counts[metric]}) —[/dim]", "")
        row(f"Mean {metric.upper()} (ms)", _num(result[f'mean_{metric}_ms'], '.2f'))
        row(f"Median {metric.upper()} (ms)", _num(result[f'median_{metric}_ms'], '.2f'))
        unsupported = set(im["unsupported_percentiles"].get(metric, []))
        for p in im["percentiles"]:
            label = pct_label(p)
            value = result[f'p{label}_{metric}_ms']
            row(f"P{label} {metric.upper()} (ms)",
                f"n/a (n = {counts[metric]})" if label in unsupported or value is None else f"{value:.2f}")
    client = im["client"]
    table.add_row("[dim]— Client —[/dim]", "")
    row("Client CPU (% of a core)", f"{100 * client['cpu_utilization']:.0f}")
    row("Event-loop lag mean / p99 (ms)", f"{client['loop_lag_mean_ms']:.3f} / {client['loop_lag_p99_ms']:.3f}")
    bound = client.get("client_error_bound_pct") or {}
    figures = " / ".join("—" if bound.get(k) is None else f"{bound[k]:.1f}" for k in ("ttft", "itl"))
    row("Client error bound TTFT / ITL (%)", figures + (f" (tolerance {client['client_error_tolerance_pct']:g})"
                                                      if client.get("client_error_tolerance_pct") else ""))
    row("Client-bound", "YES" if client["client_bound"] else "no")
    validity = im.get("validity")  # docs/validity.md
    if validity:
        reasons = [message(r) for r in validity["reasons"]]
        row("Validity", validity["label"] + (f" ({'; '.join(reasons)})" if reasons else ""))
    console.print(table)
    for w in im["warnings"]:
        console.print(f"[bold yellow]warning:[/bold yellow] {_safe(message(w))}")
    console.print(f"Results: {_safe(result_path)}")
    console.print(f"Per-request records: {_safe(records_path)}")
