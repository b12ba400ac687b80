"""The ``infermeter`` typer application that every command module registers on.

It holds no commands itself: ``cli/main.py`` imports the command modules (each
adds its commands here) and runs the application.
"""

from __future__ import annotations

import typer

app = typer.Typer(
    name="infermeter",
    help="Benchmark LLM inference servers: launch, drive, measure, sweep, report.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)

engine_app = typer.Typer(help="The embedded engine (llama.cpp's llama-server) and its generated models.",
                         no_args_is_help=True, rich_markup_mode=None)
app.add_typer(engine_app, name="engine")
