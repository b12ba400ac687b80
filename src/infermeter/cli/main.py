"""The ``infermeter`` command.

Every user mistake ends as one line on stderr, ``infermeter: error: PROBLEM — FIX``,
and a documented exit code (docs/cli.md); never a traceback.
"""

from __future__ import annotations

import os
import sys
import warnings

import typer
from pydantic import ValidationError
from typer._click import exceptions as click_exc  # typer vendors click

# Command modules register themselves on import.
from infermeter.cli import (  # noqa: F401  # noqa: F401  (client fidelity: shards, self-check)  # noqa: F401  (experiments: sweep, recipes, ls, show, import)  # noqa: F401  (servers under test: serve, lint)
    baseline_cmd,  # noqa: F401  (saved baselines for compare)
    capacity_cmd,  # noqa: F401  (SLO capacity search)
    engine_cmd,
    export_cmd,  # noqa: F401  (requests as Parquet / CSV)
    lint_cmd,
    merge_cmd,
    report_cmd,  # noqa: F401  (reports: report, compare)
    run_cmd,
    selfcheck_cmd,
    serve_cmd,
    shards_cmd,
    store_cmd,
    sweep_cmd,
    telemetry_cmd,  # noqa: F401  (GPU and server telemetry)
)
from infermeter.cli.app import app
from infermeter.errors import FieldError, UserError, safe_text, user_error_from_validation

EXIT_USAGE = 2


def warning_line(message, category, filename, lineno, file=None, line=None) -> None:
    """A Python warning as one line, like every other message (no source path, no code line)."""
    print(f"infermeter: warning: {safe_text(message, 500)}", file=sys.stderr if file is None else file)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        with warnings.catch_warnings():
            if not os.environ.get("INFERMETER_DEBUG"):
                warnings.showwarning = warning_line
            # Without standalone mode click *returns* the code of a typer.Exit raised by a command.
            rc = app(args=args, prog_name="infermeter", standalone_mode=False)
    except typer.Exit as exc:
        return int(exc.exit_code or 0)
    except typer.Abort:
        print("infermeter: aborted", file=sys.stderr)
        return 130
    except click_exc.NoArgsIsHelpError as exc:
        print(exc.format_message())
        return 0
    except click_exc.ClickException as exc:
        hint = "see 'infermeter --help'"
        ctx = getattr(exc, "ctx", None)
        if ctx is not None and ctx.command_path:
            hint = f"see '{ctx.command_path} --help'"
        message = exc.format_message().replace("\n", " ")
        print(f"infermeter: error: {safe_text(message)} — {hint}", file=sys.stderr)
        return EXIT_USAGE
    except FieldError as exc:  # a setting named by its field path: named here by its flag
        from infermeter.cli.options import worded_for_cli

        err = worded_for_cli(exc)
        print(f"infermeter: error: {safe_text(err)}", file=sys.stderr)
        return err.exit_code
    except UserError as exc:  # messages may quote a server: safe_text keeps them one inert line
        print(f"infermeter: error: {safe_text(exc)}", file=sys.stderr)
        return exc.exit_code
    except ValidationError as exc:  # another settings model refused a value (a RunSpec raises FieldErrors)
        err = user_error_from_validation(exc)
        print(f"infermeter: error: {safe_text(err)}", file=sys.stderr)
        return err.exit_code
    except BrokenPipeError:  # output piped into e.g. head
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except KeyboardInterrupt:
        print("infermeter: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # a bug: say so in one line, traceback on request
        if os.environ.get("INFERMETER_DEBUG"):
            raise
        print(f"infermeter: internal error: {type(exc).__name__}: {safe_text(exc, 300)} — this is a bug; rerun with "
              f"INFERMETER_DEBUG=1 for the traceback and report it", file=sys.stderr)
        return 1
    return rc if isinstance(rc, int) and not isinstance(rc, bool) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
