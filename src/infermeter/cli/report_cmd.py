"""``infermeter report`` (HTML + Markdown + PNG charts from experiment stores) and
``infermeter compare`` (two runs side by side on the console).  See docs/reports.md."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from infermeter.cli.app import app
from infermeter.errors import safe_text


@app.command("report")
def report(
    directories: Annotated[list[str], typer.Argument(help="Experiment folders (sweep output_dir or import target); "
                                                         "several are merged into one report")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for report.html, summary.md and the charts' "
                                                               "PNG files (created)")],
    title: Annotated[Optional[str], typer.Option("--title", help="The report's title")] = None,
) -> None:
    """Compare backends side by side: a self-contained HTML report, every chart as PNG, and summary.md."""
    from rich.console import Console

    from infermeter.reports.build import build_report

    files = build_report(directories, output, title=title)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"report: {safe_text(files.html)} ({files.cells} cells, {len(files.targets)} targets, "
                  f"{len(files.charts)} charts)", markup=False)
    console.print(f"summary: {safe_text(files.markdown)}", markup=False)
    for p in files.charts:
        console.print(f"chart: {safe_text(p)}", markup=False)
    if files.skipped:
        console.print(f"left out {len(files.skipped)} cells without a result (pending or failed)", markup=False)


@app.command("compare")
def compare(
    run_a: Annotated[str, typer.Argument(help="Run A: a result JSON file or a store's cell folder")],
    run_b: Annotated[str, typer.Argument(help="Run B: a result JSON file or a store's cell folder")],
) -> None:
    """Two runs' headline metrics: absolute and relative deltas (B - A) and the better side."""
    from rich.console import Console

    from infermeter.reports.compare import render
    from infermeter.reports.data import fmt_load, load_run

    a, b = load_run(run_a), load_run(run_b)
    table, warnings = render(a, b, run_a, run_b)
    console = Console(highlight=False, soft_wrap=True, width=max(Console().width, 100))
    for n, path, c in (("A", run_a, a), ("B", run_b, b)):
        console.print(f"{n}: {safe_text(path)}  [{safe_text(c.target)}, {fmt_load(c.load_mode, c.load_value)}]",
                      markup=False)
    console.print(table)
    for w in warnings:
        console.print(f"warning: {safe_text(w)}", markup=False)
