"""``infermeter engine``: build the embedded llama-server and make its models ahead of time."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from infermeter.cli.app import engine_app


@engine_app.command("build")
def build() -> None:
    """Build llama-server from the pinned llama.cpp sources (once; cached)."""
    from infermeter.embedded.build import ensure_llama_server

    from infermeter.cli.engine_progress import EngineProgress

    path = ensure_llama_server(EngineProgress(Console(stderr=True), dim=False))
    Console().print(f"llama-server: {path}")


@engine_app.command("model")
def model(name: Annotated[str, typer.Argument(help="tiny, 1b or gemma3-270m")] = "tiny") -> None:
    """Generate (or find) a model for the embedded engine and print its files."""
    from infermeter.embedded.models import ensure_model

    files = ensure_model(name)
    Console().print(f"{files.model_id}: {files.gguf} (tokenizer: {files.tokenizer_dir})")
