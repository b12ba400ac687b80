"""``infermeter run``: one benchmark run.  Flags shared with ``vllm bench serve``
keep vLLM's names and meanings, so existing command lines work."""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape

from infermeter.cli.app import app
from infermeter.cli.engine_progress import EngineProgress
from infermeter.cli.progress import live_progress
from infermeter.cli.signals import raise_keyboard_interrupt
from infermeter.cli.summary import print_summary
from infermeter.errors import safe_text
from infermeter.load.eventloop import use_uvloop
from infermeter.runner.spec import RunSpec, runspec_from_flags


@app.command("run", no_args_is_help=False, add_help_option=False,
             context_settings={"allow_extra_args": True, "ignore_unknown_options": True,
                               "allow_interspersed_args": False},
             help="Benchmark one server (or the embedded llama-server); vLLM's 'bench serve' options "
                  "(see 'infermeter run --help').")
def run(ctx: typer.Context) -> None:
    """Parsed by argparse from vLLM's own option definitions (cli/options.py), so a
    ``vllm bench serve`` command line means here what it means there."""
    from infermeter.cli.options import build_parser, parse_run_args

    args = list(ctx.args)
    if "-h" in args or "--help" in args:
        print(build_parser().format_help())
        return
    fields, settings = parse_run_args(args)
    spec = runspec_from_flags(fields)
    execute(spec, json_summary=settings["json_summary"], settings=settings)


def execute(spec: RunSpec, *, json_summary: bool = False, settings: dict | None = None) -> None:
    from infermeter.runner.execute import execute_run

    # A pipe or file gets wide lines rather than rich's 80-column default.
    console = Console(stderr=False, highlight=False, width=None if sys.stdout.isatty() else 120)
    err = Console(stderr=True, highlight=False)

    def log(msg: str) -> None:  # messages may quote the server (model names): no markup, no escapes
        err.print(f"[dim]{escape(safe_text(msg))}[/dim]", markup=True, highlight=False)

    engine_progress = EngineProgress(err)

    use_uvloop()
    # SIGTERM outside the load (preflight, engine start) unwinds like Ctrl-C: servers
    # are stopped, one line is printed, exit 130.  During the load the runner's own
    # handler stops it gracefully and saves a partial result.
    try:
        previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        report = execute_run(
            spec, argv=["infermeter", *sys.argv[1:]],
            progress=_progress(err, spec),
            engine_progress=engine_progress, log=log,
        )
    except KeyboardInterrupt:  # outside the load (typer would turn it into a silent exit 130)
        print("infermeter: interrupted", file=sys.stderr)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    if json_summary:
        keys = {k: v for k, v in report.result.items() if k not in ("input_lens", "output_lens", "ttfts", "itls", "errors", "infermeter")}
        print(json.dumps(keys, indent=2))
    else:
        shown = str(report.result_path) if report.result_saved else f"{report.result_path} (NOT WRITTEN)"
        print_summary(console, report.result, shown, str(report.records_path))
    if report.server_log:
        console.print(f"Server log: {report.server_log}")
    write_error = report.write_error
    if settings is not None:
        name = spec.output.result_filename or report.result_path.name  # the asked-for name, as vLLM writes it
        try:
            _vllm_result_file(report, name, settings, console)
        except OSError as exc:  # disk full, read-only: said below, after what was measured
            from infermeter.storage.names import storage_error

            write_error = write_error or storage_error(exc, Path(settings["result_dir"]) / name)
    if write_error is not None:  # the summary above is whole; the disk could not take it all
        console.file.flush()
        print(f"infermeter: error: {safe_text(write_error)}", file=sys.stderr)
        raise typer.Exit(write_error.exit_code)
    code = exit_code_for(report.result)
    if code:
        raise typer.Exit(code)


def _progress(err: Console, spec: RunSpec):
    """The live view on a terminal (unless --disable-tqdm) and --progress-interval's lines."""
    o = spec.output
    if not o.progress and o.progress_interval is None:
        return None
    return live_progress(err, live=o.progress, interval=o.progress_interval)


EXIT_OK = 0
EXIT_REQUEST_ERRORS = 5  # the run finished; some requests failed
EXIT_STOPPED = 6  # a stop rule (--max-errors, --max-error-rate) ended the run early
EXIT_STORAGE = 9  # a result file could not be written (disk full): the summary is printed (errors.StorageError)
EXIT_INTERRUPTED = 130  # Ctrl-C / SIGTERM: completed requests and a partial result are saved


def exit_code_for(result: dict) -> int:
    stopped = result["infermeter"].get("stopped_early")
    if stopped:
        return EXIT_INTERRUPTED if stopped.startswith(("interrupted", "terminated")) else EXIT_STOPPED
    if result.get("failed") or result["infermeter"].get("incomplete"):  # a worker's share missing
        return EXIT_REQUEST_ERRORS
    return EXIT_OK


def _vllm_result_file(report, name: str, settings: dict, console: Console) -> None:
    """vLLM's --save-result / --append-result: where the result JSON goes."""
    if settings["append_result"]:
        # vLLM opens the file for appending and writes a newline before each result after the first
        target = Path(settings["result_dir"]) / name
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "a+", encoding="utf-8") as out:
            if out.tell() != 0:
                out.write("\n")
            json.dump(report.result, out)
        console.print(f"Result appended to: {escape(safe_text(target))}")
    elif not settings["save_result"]:
        console.print("[dim]The result was not saved to --result-dir (pass --save-result, as with vLLM); "
                      "it is kept above, out of the working directory.[/dim]")
