"""``infermeter lint FILE...``: check dstack task/service files that launch inference servers.

One line per finding (``FILE:LINE: error|warning: KEY: problem — fix``); exit status 1
when any file has an error, 0 otherwise.  See infermeter.servers.lint for the checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from infermeter.cli.app import app
from infermeter.errors import safe_text


@app.command("lint")
def lint(
    files: Annotated[list[Path], typer.Argument(help="dstack configuration files (.dstack.yml)")],
    no_dstack: Annotated[bool, typer.Option("--no-dstack", help="Skip dstack's own configuration models")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Errors only")] = False,
) -> None:
    """Check dstack task/service files that launch inference servers."""
    from infermeter.servers.dstack_schema import dstack_version
    from infermeter.servers.lint import has_errors, lint_file

    err = Console(stderr=True, highlight=False)
    errors = warnings = 0
    if not no_dstack and dstack_version() is None:
        err.print(escape("note: the dstack package is not installed: dstack's own validation is skipped "
                         "(pip install 'infermeter[dstack]')"))
    failed = False
    for path in files:
        findings = lint_file(path, use_dstack=not no_dstack)
        failed = failed or has_errors(findings)
        for finding in findings:
            if finding.severity == "error":
                errors += 1
            else:
                warnings += 1
                if quiet:
                    continue
            print(safe_text(finding.format()))
    err.print(f"{len(files)} file(s): {errors} error(s), {warnings} warning(s)")
    if failed:
        raise typer.Exit(1)
