"""``infermeter shards``: render the dstack task that runs one load as N client shards."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from infermeter.cli.app import app


@app.command("shards", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def shards(
    ctx: typer.Context,
    nodes: Annotated[int, typer.Option("--nodes", help="Client machines (shards)")] = 2,
    submit: Annotated[bool, typer.Option("--submit", help="Submit the task with dstack, follow it, "
                                         "fetch and print the merged result")] = False,
    output: Annotated[Optional[str], typer.Option("-o", "--output", help="With --submit: where the merged "
                                                  "result JSON goes (default NAME.merged.json)")] = None,
    name: Annotated[str, typer.Option("--name")] = "infermeter-load",
    image: Annotated[str, typer.Option("--image")] = "python:3.11-slim-bookworm",
    install: Annotated[str, typer.Option("--install", help="What each node pip-installs")] = "infermeter",
    cpu: Annotated[str, typer.Option("--cpu", help="dstack CPU range per node")] = "8..",
    user: Annotated[Optional[str], typer.Option("--user", help="The image user the commands run as")] = None,
    env: Annotated[list[str], typer.Option("--env", help="Environment variable NAME passed through (repeatable)")] = [],
) -> None:
    """Print (or --submit) a multi-node dstack task running `infermeter run ARGS...` as --nodes shards.

    Example: infermeter shards --nodes 4 --submit -- --base-url http://10.0.0.5:8000 --model M --request-rate 200
    """
    from infermeter.servers.loadtask import render_load_task

    kw = dict(name=name, image=image, install=install, cpu=cpu, env_names=env, user=user)
    if not submit:
        print(render_load_task(list(ctx.args), nodes, **kw), end="")
        return
    import sys

    from rich.console import Console

    from infermeter.cli.summary import print_summary
    from infermeter.errors import safe_text
    from infermeter.runner.scaleout import submit_load
    from infermeter.storage.files import write_json_atomic

    result = submit_load(list(ctx.args), nodes, log=lambda m: print(f"infermeter: {safe_text(m)}", file=sys.stderr),
                         **kw)
    out = output or f"{name}.merged.json"
    write_json_atomic(Path(out), result)
    print_summary(Console(highlight=False), result, out, "on the master node: /results/"
                  + str(result["infermeter"].get("records_file")))
    if result["infermeter"].get("incomplete"):
        raise typer.Exit(EXIT_INCOMPLETE)


EXIT_INCOMPLETE = 5  # a node's share is missing from the merged result (as a sweep's missing cells)


@app.command("node", add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "allow_interspersed_args": False},
             help="One node of a multi-node dstack task (rendered by 'infermeter shards'): 'infermeter run' "
                  "arguments; rank 0 gathers and merges every node's result.")
def node(ctx: typer.Context) -> None:
    """Reads DSTACK_MASTER_NODE_IP, DSTACK_NODE_RANK, DSTACK_NODES_NUM (and INFERMETER_BARRIER_PORT)."""
    import sys

    from rich.console import Console

    from infermeter.cli.options import parse_run_args
    from infermeter.cli.run_cmd import exit_code_for
    from infermeter.cli.summary import print_summary
    from infermeter.errors import safe_text
    from infermeter.load.eventloop import use_uvloop
    from infermeter.runner.nodes import print_result_block, run_cluster
    from infermeter.runner.spec import runspec_from_flags

    fields, _settings = parse_run_args(list(ctx.args))
    spec = runspec_from_flags(fields)
    use_uvloop()
    merged = run_cluster(spec, argv=["infermeter", *sys.argv[1:]],
                         log=lambda m: print(f"infermeter: {safe_text(m)}", file=sys.stderr, flush=True))
    if merged is None:  # not the master: its files are with the master now
        return
    result, path, records_path = merged
    print_summary(Console(highlight=False, width=120), result, str(path), str(records_path))
    print_result_block(result)
    if result["infermeter"].get("incomplete"):
        raise typer.Exit(EXIT_INCOMPLETE)
    code = exit_code_for(result)
    if code:
        raise typer.Exit(code)
