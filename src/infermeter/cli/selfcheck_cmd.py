"""``infermeter selfcheck``: measure this client's own accuracy and capacity on this machine."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from infermeter.cli.app import app


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:+.1f}%"


@app.command("selfcheck")
def selfcheck(
    full: Annotated[bool, typer.Option("--full", help="The whole grid: C in 1,16,64,256,1024 x ITL in 20,5,1 ms, 256 tokens")] = False,
    server_cpu: Annotated[Optional[int], typer.Option("--server-cpu", help="Core for the test server (default: the first allowed)")] = None,
    client_cpu: Annotated[Optional[int], typer.Option("--client-cpu", help="Core for the client (default: another allowed core)")] = None,
    ttft_ms: Annotated[float, typer.Option("--ttft-ms", help="Injected time to first token")] = 50.0,
    output_len: Annotated[Optional[int], typer.Option("--output-len", help="Tokens per response (default 64; --full 256)")] = None,
    json_out: Annotated[Optional[str], typer.Option("--json", help="Also write every point and the envelope to this JSON file")] = None,
    grid_text: Annotated[Optional[str], typer.Option("--grid", help="Points to run instead, as C:ITL_MS pairs, e.g. 1:5,64:1")] = None,
) -> None:
    """Run a grid of concurrency x ITL against the in-tree test server and compare with its ground truth.

    Prints reported vs true TTFT/ITL per point, then the envelope: the largest
    load measured within 1 % and within 5 % error, and tokens/s capacity.
    """
    from infermeter.load.eventloop import use_uvloop
    from infermeter.runner import selfcheck as sc

    console = Console(highlight=False)
    if not console.is_terminal:
        console = Console(highlight=False, width=200)
    grid = sc.parse_grid(grid_text) if grid_text else (sc.FULL_GRID if full else sc.SHORT_GRID)
    out_len = output_len or (256 if full else 64)
    s_cpu, c_cpu = sc.pick_cpus(server_cpu, client_cpu)
    console.print(f"selfcheck: test server on core {s_cpu}, client on core {c_cpu}; injected TTFT {ttft_ms:g} ms, "
                  f"{out_len} tokens per response; load average {os.getloadavg()[0]:.2f}")
    if s_cpu is None or c_cpu is None or s_cpu == c_cpu:
        console.print("[yellow]warning:[/yellow] server and client share cores: errors include the server's "
                      "competition for the CPU")
    use_uvloop()

    table = Table(show_header=True, box=None, pad_edge=False)
    for col in ("C", "ITL", "TTFT ms rep/true", "err", "p99 TTFT rep/true", "err", "ITL ms rep/true", "err",
                "vs injected TTFT/ITL", "tok/s", "CPU s", "lag ms", "bound"):
        table.add_column(col, justify="right")

    def show(p: sc.PointResult) -> None:
        console.print(f"  C={p.concurrency:<5} ITL={p.itl_ms:g} ms: TTFT {_f(p.mean_ttft_ms)} ms "
                      f"(true {_f(p.truth_mean_ttft_ms)}), ITL {_f(p.mean_itl_ms, 3)} ms, "
                      f"{p.output_tok_s:,.0f} tok/s", highlight=False)
        table.add_row(str(p.concurrency), f"{p.itl_ms:g}",
                      f"{_f(p.mean_ttft_ms)}/{_f(p.truth_mean_ttft_ms)}", _pct(p.ttft_error),
                      f"{_f(p.p99_ttft_ms)}/{_f(p.truth_p99_ttft_ms)}", _pct(p.p99_ttft_error),
                      f"{_f(p.mean_itl_ms, 3)}/{_f(p.truth_mean_itl_ms, 3)}", _pct(p.itl_error),
                      f"{_pct(p.ttft_vs_injected)}/{_pct(p.itl_vs_injected)}", f"{p.output_tok_s:,.0f}",
                      f"{p.client_cpu_s:.2f}", f"{p.loop_lag_mean_ms:.3f}", "YES" if p.client_bound else "no")

    points = sc.run_grid(grid, ttft_ms=ttft_ms, output_len=out_len, full=full, server_cpu=s_cpu,
                         client_cpu=c_cpu, on_point=show)
    console.print(table)
    env = sc.envelope(points)
    console.print("errors: reported minus true (server-stamped) value, relative; 'vs injected' includes "
                  "the server falling behind its schedule")
    for itl, entry in env["by_itl"].items():
        parts = []
        for key, label in (("within_1pct", "1%"), ("within_5pct", "5%")):
            e = entry[key]
            parts.append(f"within {label}: " + (f"C={e['concurrency']} ({e['output_tok_s']:,.0f} tok/s)" if e
                                                else "none of the loads measured"))
        console.print(f"envelope at ITL {itl:g} ms: " + "; ".join(parts))
    if points:
        console.print(f"capacity: {env['max_output_tok_s']:,.0f} tok/s seen (C={env['max_at']['concurrency']}, "
                      f"ITL {env['max_at']['itl_ms']:g} ms); {env['tokens_per_client_cpu_s']:,.0f} tokens per "
                      f"client CPU second there (one core's worth)")
    console.print(f"load average now: {os.getloadavg()[0]:.2f} (other work on these cores inflates every error)")
    if json_out:
        Path(json_out).write_text(json.dumps(sc.to_json(points), indent=2, default=str))
        console.print(f"written: {json_out}")


def _f(x: float | None, digits: int = 2) -> str:
    return "-" if x is None else f"{x:.{digits}f}"
