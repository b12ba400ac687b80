"""``infermeter shards``: render the dstack task that runs one load as N client shards."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from infermeter.cli.app import app


@app.command("shards", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def shards(
    ctx: typer.Context,
    nodes: Annotated[int, typer.Option("--nodes", help="Client machines (shards)")] = 2,
    start_at: Annotated[Optional[float], typer.Option("--start-at", help="Wall-clock epoch all shards start at")] = None,
    start_in: Annotated[float, typer.Option("--start-in", help="Seconds from now, when --start-at is not given")] = 300.0,
    name: Annotated[str, typer.Option("--name")] = "infermeter-load",
    image: Annotated[str, typer.Option("--image")] = "python:3.11-slim-bookworm",
    install: Annotated[str, typer.Option("--install", help="What each node pip-installs")] = "infermeter",
    cpu: Annotated[str, typer.Option("--cpu", help="dstack CPU range per node")] = "8..",
    env: Annotated[list[str], typer.Option("--env", help="Environment variable NAME passed through (repeatable)")] = [],
) -> None:
    """Print a multi-node dstack task running `infermeter run ARGS...` as --nodes shards.

    Example: infermeter shards --nodes 4 -- --base-url http://10.0.0.5:8000 --model M --request-rate 200
    """
    from infermeter.servers.loadtask import render_load_task

    print(render_load_task(list(ctx.args), nodes, start_at=start_at, start_in_s=start_in, name=name,
                           image=image, install=install, cpu=cpu, env_names=env), end="")
