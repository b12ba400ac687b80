"""``infermeter baseline save|ls|rm``: named runs to compare later runs against
(``infermeter compare --baseline NAME``; docs/ci.md)."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from infermeter.cli.app import app
from infermeter.errors import safe_text

baseline_app = typer.Typer(help="Saved baselines for 'infermeter compare --baseline NAME'.", no_args_is_help=True,
                           rich_markup_mode=None)
app.add_typer(baseline_app, name="baseline")

StoreOpt = Annotated[Optional[str], typer.Option("--store", help="Baselines folder (default $INFERMETER_BASELINES, "
                                                                 "else ./.infermeter/baselines)")]


@baseline_app.command("save")
def save(
    name: Annotated[str, typer.Argument(help="The baseline's name (letters, digits, . _ -)")],
    source: Annotated[str, typer.Argument(help="A result JSON file, a cell folder or an experiment folder")],
    store: StoreOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Replace a baseline of that name")] = False,
) -> None:
    """Save a run (its result, records and cell definition) as baseline NAME."""
    from infermeter.experiments import baselines

    meta = baselines.save(name, source, store, force=force)
    where = baselines.root_of(store) / name
    print(f"baseline {safe_text(name)}: {len(meta['cells'])} cell(s) from {safe_text(source)} saved in "
          f"{safe_text(where)}")


@baseline_app.command("ls")
def ls(store: StoreOpt = None) -> None:
    """The saved baselines: name, cells, when saved, from what."""
    from infermeter.experiments import baselines

    found = baselines.names(store)
    if not found:
        print(f"no baseline in {safe_text(baselines.root_of(store))}")
        return
    for n in found:
        meta = baselines.info(n, store)
        print(f"{safe_text(n)}  {len(meta.get('cells') or [])} cell(s)  saved {safe_text(meta.get('saved_iso'))}  "
              f"from {safe_text(meta.get('source'))}")


@baseline_app.command("rm")
def rm(name: Annotated[str, typer.Argument(help="The baseline to delete")], store: StoreOpt = None) -> None:
    """Delete baseline NAME."""
    from infermeter.experiments import baselines

    baselines.remove(name, store)
    print(f"baseline {safe_text(name)} deleted")
