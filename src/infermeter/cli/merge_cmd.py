"""``infermeter merge``: combine the shards of one run into one result."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.console import Console

from infermeter.cli.app import app


@app.command("merge")
def merge(
    inputs: Annotated[list[str], typer.Argument(help="Result JSON files of the shards, or folders holding them")],
    output: Annotated[str, typer.Option("-o", "--output", help="The merged result JSON to write")],
    json_summary: Annotated[bool, typer.Option("--json", help="Print the merged metrics as JSON instead of a table")] = False,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Replace an existing output and its records")] = False,
) -> None:
    """Merge shard results (their per-request records) into one result of the same form.

    Percentiles come from the pooled samples; throughput divides by the common
    window, earliest send to latest end on the wall clock.
    """
    from infermeter.cli.run_cmd import exit_code_for
    from infermeter.cli.summary import print_summary
    from infermeter.metrics.merge import merge_files

    from pathlib import Path

    from infermeter.errors import UserError
    from infermeter.storage.names import sibling

    out = Path(output)
    taken = [p for p in (out, sibling(out, ".records.jsonl")) if p.exists()]
    if taken and not overwrite:
        raise UserError(f"{taken[0]} is already there", "choose another --output, or pass --overwrite to replace it")
    result, records_path = merge_files(inputs, output)
    if json_summary:
        skip = ("input_lens", "output_lens", "ttfts", "itls", "errors", "infermeter")
        print(json.dumps({k: v for k, v in result.items() if k not in skip}, indent=2))
    else:
        print_summary(Console(highlight=False), result, output, str(records_path))
    code = exit_code_for(result)
    if code:
        raise typer.Exit(code)
