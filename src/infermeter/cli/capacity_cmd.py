"""``infermeter capacity``: the largest load that meets every SLO (docs/validity.md)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from infermeter.cli.app import app
from infermeter.errors import safe_text
from infermeter.metrics.validity import ValidityOptions
from infermeter.runner.capacity import parse_slos, search_capacity
from infermeter.runner.spec import RunSpec
from infermeter.secrets import parse_headers

Opt = typer.Option


@app.command("capacity", no_args_is_help=False)
def capacity(
    slo: Annotated[str, Opt("--slo", help="SLOs in ms, e.g. 'ttft_p99<=6000,tpot_p99<=175', or a preset: mlperf-llama3.1-405b, mlperf-llama3.1-405b-interactive")],
    base_url: Annotated[Optional[str], Opt("--base-url", help="Server root, e.g. http://127.0.0.1:8000")] = None,
    backend: Annotated[str, Opt("--backend")] = "vllm",
    endpoint: Annotated[Optional[str], Opt("--endpoint")] = None,
    model: Annotated[Optional[str], Opt("--model")] = None,
    tokenizer: Annotated[Optional[str], Opt("--tokenizer")] = None,
    dataset_name: Annotated[str, Opt("--dataset-name")] = "random",
    dataset_path: Annotated[Optional[str], Opt("--dataset-path")] = None,
    random_input_len: Annotated[int, Opt("--random-input-len")] = 1024,
    random_output_len: Annotated[int, Opt("--random-output-len")] = 128,
    random_range_ratio: Annotated[float, Opt("--random-range-ratio")] = 0.0,
    sharegpt_output_len: Annotated[Optional[int], Opt("--sharegpt-output-len")] = None,
    ignore_eos: Annotated[bool, Opt("--ignore-eos")] = False,
    num_prompts: Annotated[int, Opt("--num-prompts", help="Requests per probe run")] = 500,
    arrival: Annotated[Optional[str], Opt("--arrival", help="poisson, gamma or constant (rate runs)")] = None,
    burstiness: Annotated[float, Opt("--burstiness")] = 1.0,
    max_concurrency: Annotated[Optional[int], Opt("--max-concurrency", help="Cap for rate runs")] = None,
    warmup_requests: Annotated[int, Opt("--warmup-requests")] = 0,
    header: Annotated[list[str], Opt("--header", "-H")] = [],
    seed: Annotated[int, Opt("--seed")] = 0,
    vary: Annotated[str, Opt("--vary", help="rate or concurrency")] = "rate",
    low: Annotated[float, Opt("--low", help="Lowest load tried")] = 1.0,
    high: Annotated[float, Opt("--high", help="Highest load tried")] = 64.0,
    confidence: Annotated[float, Opt("--confidence", help="Early-stopping confidence of each SLO claim")] = 0.99,
    max_runs: Annotated[int, Opt("--max-runs")] = 10,
    tolerance: Annotated[float, Opt("--tolerance", help="Stop when the bracket is narrower than this fraction")] = 0.02,
    max_error_rate: Annotated[float, Opt("--max-error-rate", help="Failed fraction that invalidates a run")] = 0.01,
    result_dir: Annotated[str, Opt("--result-dir")] = "results/capacity",
    json_out: Annotated[bool, Opt("--json", help="Print the search result as JSON")] = False,
) -> None:
    """Find the largest request rate (or concurrency) meeting every SLO, by bisection over runs."""
    slos = parse_slos(slo)
    spec = RunSpec.from_flat(dict(
        backend=backend, base_url=base_url, endpoint=endpoint, model=model, tokenizer=tokenizer,
        headers=parse_headers(header), dataset_name=dataset_name, dataset_path=dataset_path,
        random_input_len=random_input_len, random_output_len=random_output_len,
        random_range_ratio=random_range_ratio, sharegpt_output_len=sharegpt_output_len, ignore_eos=ignore_eos,
        num_prompts=num_prompts, request_rate=math.inf if vary == "concurrency" else max(low, 1e-9),
        arrival=arrival, burstiness=burstiness, max_concurrency=max_concurrency if vary == "rate" else None,
        warmup_requests=warmup_requests, seed=seed, result_dir=result_dir, progress=False,
    ))
    err = Console(stderr=True, highlight=False)
    out = search_capacity(spec, slos, vary=vary, low=low, high=high, confidence=confidence, max_runs=max_runs,
                          rel_tol=tolerance, validity=ValidityOptions(max_error_rate=max_error_rate),
                          log=lambda m: err.print(f"[dim]{escape(safe_text(m))}[/dim]"))
    from infermeter.storage.names import write_new

    written = write_new(Path(result_dir), "capacity.json", json.dumps(out, indent=2).encode())  # never replaces
    if json_out:
        print(json.dumps(out, indent=2))
        return
    print_capacity(Console(highlight=False), out)
    err.print(f"written: {escape(str(written))}")


def print_capacity(console: Console, out: dict) -> None:
    unit = "req/s" if out["vary"] == "rate" else "concurrency"
    table = Table(title=f"infermeter — SLO capacity ({', '.join(out['slos'])}; {100 * out['confidence']:g}% confidence)",
                  title_justify="left")
    table.add_column(unit, justify="right")
    table.add_column("achieved req/s", justify="right")
    for s in out["slos"]:
        table.add_column(s, justify="right")
    table.add_column("SLOs")
    table.add_column("validity")
    if out["vary"] == "rate":
        table.add_column("warm-up / steady / cool-down (s)", justify="right")
        table.add_column("stable")
    for p in out["curve"]:
        tput = p["request_throughput"]
        cells = [f"{p['load']:g}", "—" if tput is None else f"{tput:.2f}"]
        cells += ["-" if c["value_ms"] is None else f"{c['value_ms']:.1f} ({c['over_limit']}/{c['n']} over)"
                  for c in p["slos"]]
        outcome = p.get("outcome") or ("pass" if p["passed"] else "fail")
        cells += [{"pass": "pass", "fail": "FAIL"}.get(outcome, outcome), p["validity"]]
        if out["vary"] == "rate":
            st = p["steady_state"]
            if st.get("checked"):
                cells += [f"{st['warmup_s']:.2f} / {st['steady_s']:.2f} / {st['cooldown_s']:.2f}",
                          "yes" if st["stable"] else "no (queue grows)"]
            else:
                cells += ["-", "-"]
        table.add_row(*(escape(safe_text(c)) for c in cells))
    console.print(table)
    status, cap = out["status"], out["capacity"]
    if status == "below-low":
        why = "; ".join(r["message"] for r in out.get("low_blocking") or [])
        console.print(f"Capacity: below {out['first_failing']:g} {unit} (the lowest load tried failed"
                      + (f": {escape(safe_text(why))}" if why else "") + ")")
    elif status == "unproven-low":
        low = out["curve"][0] if out["curve"] else {}
        need = ", ".join(f"{c['slo']} needs {c['min_samples']} samples with none over, had {c['n']} "
                         f"({c['over_limit']} over)" for c in low.get("slos", []) if c.get("status") == "unproven")
        console.print(f"Capacity: not proven at the lowest load, {out['first_failing']:g} {unit}: it met every SLO "
                      f"on its samples, too few to support the claim at {100 * out['confidence']:g}% confidence "
                      f"({escape(safe_text(need))}); raise --num-prompts or lower --confidence")
    elif status == "at-least-high":
        console.print(f"Capacity: at least {cap:g} {unit} (the highest load tried passed)")
    else:
        console.print(f"Capacity: {cap:g} {unit} (first failing: {out['first_failing']:g}; "
                      f"{out['runs']} runs; answer run {out['answer_validity']})")
    for r in out.get("answer_reasons") or []:  # findings that bear on none of the SLOs
        console.print(f"  beside the answer ({r['code']}, bears on no SLO here): {escape(safe_text(r['message']))}")
