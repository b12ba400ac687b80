"""``infermeter export``: a run's or an experiment's requests as one Parquet or CSV table."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from infermeter.cli.app import app
from infermeter.errors import safe_text


@app.command("export")
def export(
    source: Annotated[str, typer.Argument(help="A run's result JSON (or its .records.jsonl), or an experiment folder")],
    output: Annotated[str, typer.Option("-o", "--output", help="The file to write")],
    fmt: Annotated[str, typer.Option("--format", help="parquet or csv")] = "parquet",
) -> None:
    """One row per request (warm-up rows marked), every cell, with its target, workload and load columns."""
    from infermeter.reports.export import export as write

    rows, runs, skipped = write(source, fmt, output)
    for note in skipped:
        print(f"skipped {safe_text(note)}", file=sys.stderr)
    print(f"wrote {rows} requests of {runs} run{'s' if runs != 1 else ''} to {safe_text(output)}")
