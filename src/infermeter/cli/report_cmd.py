"""``infermeter report`` (HTML + Markdown + PNG charts from experiment stores) and
``infermeter compare`` (two runs side by side on the console).  See docs/reports.md."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from infermeter.cli.app import app
from infermeter.errors import safe_text


@app.command("report")
def report(
    directories: Annotated[list[str], typer.Argument(help="Experiment folders (sweep output_dir or import target); "
                                                         "several are merged into one report")],
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for report.html, summary.md and the charts' "
                                                               "PNG files (created)")],
    title: Annotated[Optional[str], typer.Option("--title", help="The report's title")] = None,
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Add the verdicts of 'infermeter compare' "
                                                                       "against this saved baseline NAME (or result "
                                                                       "file / experiment folder)")] = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Baselines folder (default "
                                                                 "$INFERMETER_BASELINES, else "
                                                                 "./.infermeter/baselines)")] = None,
    at: Annotated[Optional[list[str]], typer.Option("--at", help="Draw latency distributions and timelines at "
                                                                 "this load: [WORKLOAD:]MODE=VALUE, e.g. burst=64 "
                                                                 "(repeatable; default: the largest load of each "
                                                                 "workload that every target ran)")] = None,
    cell: Annotated[Optional[list[str]], typer.Option("--cell", help="Draw the distributions and timeline of this "
                                                                     "cell id (repeatable)")] = None,
) -> None:
    """Compare backends side by side: a self-contained HTML report, every chart as PNG, and summary.md."""
    from rich.console import Console

    from infermeter.reports.build import build_report

    tables, lines = _baseline_section(baseline, store, directories) if baseline else (None, None)
    files = build_report(directories, output, title=title, baseline=tables, baseline_lines=lines, at=at,
                         cell_ids=cell)
    console = Console(highlight=False, soft_wrap=True)
    console.print(f"report: {safe_text(files.html)} ({files.cells} cells, {len(files.targets)} targets, "
                  f"{len(files.charts)} charts)", markup=False)
    console.print(f"summary: {safe_text(files.markdown)}", markup=False)
    for p in files.charts:
        console.print(f"chart: {safe_text(p)} (and .svg)", markup=False)
    if files.skipped:
        console.print(f"left out {len(files.skipped)} cells without a result (pending or failed)", markup=False)


def _baseline_section(baseline: str, store: str | None, directories: list[str]) -> tuple[list, list[str]]:
    """The verdict tables of the report's folders (B) against a baseline (A): a saved
    baseline's name, else a result file or experiment folder."""
    from pathlib import Path

    from infermeter.experiments import baselines
    from infermeter.reports.compare_report import build, summary_lines, tables

    if Path(baseline).exists():
        name_a, path_a = baseline, Path(baseline)
    else:
        name_a, path_a = f"baseline {baseline}", baselines.path_of(baseline, store)
    runs_b = [r for d in directories for r in _side(d)]
    report = build(_side(str(path_a)), runs_b, name_a, ", ".join(directories))
    return tables(report), summary_lines(report)


def _side(path: str) -> list:
    from infermeter.reports.compare_sides import load_runs

    return load_runs(path)


@app.command("compare")
def compare(
    runs: Annotated[list[str], typer.Argument(help="A B: two result JSON files, cell folders or experiment folders "
                                                   "(cells paired by target, workload and load); with --baseline "
                                                   "only B", metavar="A B")],
    baseline: Annotated[Optional[str], typer.Option("--baseline", help="Side A is this saved baseline "
                                                                        "('infermeter baseline save NAME ...')")] = None,
    store: Annotated[Optional[str], typer.Option("--store", help="Baselines folder (default $INFERMETER_BASELINES, "
                                                                 "else ./.infermeter/baselines)")] = None,
    fail_if: Annotated[Optional[list[str]], typer.Option("--fail-if", help="Exit 7 when B crosses this threshold "
                                                                            "significantly, e.g. 'p99_ttft_ms>+5%' or "
                                                                            "'output_throughput<-3%' (repeatable)")] = None,
    fail_on_no_verdict: Annotated[bool, typer.Option("--fail-on-no-verdict", help="Exit 8 when a --fail-if metric "
                                                                                   "gets no verdict (INVALID side, "
                                                                                   "unequal work, no samples)")] = False,
    metric: Annotated[Optional[list[str]], typer.Option("--metric", help="Compare these result keys only "
                                                                          "(repeatable; default: throughput and mean, "
                                                                          "median, p99 of TTFT, TPOT, ITL, E2EL)")] = None,
    markdown: Annotated[Optional[str], typer.Option("--markdown", help="Also write the verdicts as Markdown here "
                                                                       "(e.g. \"$GITHUB_STEP_SUMMARY\")")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison as JSON instead of tables")] = False,
    confidence: Annotated[float, typer.Option("--confidence", help="Confidence level of the intervals and "
                                                                   "tests")] = 0.95,
    resamples: Annotated[int, typer.Option("--resamples", help="Bootstrap resamples (fewer for very large "
                                                               "samples: the work is bounded)")] = 1000,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the bootstrap (same inputs, same verdicts)")] = 0,
    blocks: Annotated[int, typer.Option("--blocks", help="Blocks of consecutive requests per run that the bootstrap "
                                                         "resamples (0: single requests, as if independent)")] = 20,
) -> None:
    """Is B better, worse, or not significantly different from A?  Statistical verdicts per metric on the
    per-request records; with --fail-if, an exit code for CI (docs/ci.md)."""
    import json

    from rich.console import Console

    from infermeter.errors import UserError
    from infermeter.experiments import baselines
    from infermeter.reports.compare_report import build, print_console, to_markdown
    from infermeter.reports.gate import parse_fail_if

    if not 0.5 <= confidence < 1.0:
        raise UserError(f"--confidence {confidence:g} is outside 0.5-0.999", "use e.g. --confidence 0.95")
    if not 0 <= blocks <= 1000:
        raise UserError(f"--blocks {blocks} is outside 0-1000", "use the default 20 (0: single requests)")
    if resamples < 100:
        raise UserError(f"--resamples {resamples} is too few for a 95 % interval", "use 1000 (at least 100)")
    thresholds = [parse_fail_if(e) for e in fail_if or []]
    if baseline is not None:
        if len(runs) != 1:
            raise UserError(f"--baseline takes one run to compare with it, got {len(runs)}",
                            "infermeter compare --baseline NAME RESULT|DIR")
        name_a, path_a, name_b = f"baseline {baseline}", baselines.path_of(baseline, store), runs[0]
    else:
        if len(runs) != 2:
            raise UserError(f"compare takes two runs (A B), got {len(runs)}",
                            "infermeter compare A B, or infermeter compare --baseline NAME B")
        name_a, path_a, name_b = runs[0], runs[0], runs[1]
    for key in metric or []:
        from infermeter.reports.compare import parse_key

        parse_key(key)
    report = build(_side(str(path_a)), _side(name_b), name_a, name_b, keys=list(metric) if metric else None,
                   thresholds=thresholds, confidence=confidence, resamples=resamples, seed=seed,
                   fail_on_no_verdict=fail_on_no_verdict, blocks=blocks)
    if markdown:
        from pathlib import Path

        try:
            Path(markdown).write_text(to_markdown(report), encoding="utf-8")
        except OSError as exc:
            raise UserError(f"cannot write --markdown {markdown!r} ({exc.strerror})", "give a writable file") from None
    if as_json:
        print(json.dumps(report.to_dict(), indent=2, allow_nan=False, default=str))
    else:
        console = Console(highlight=False, soft_wrap=True, width=max(Console().width, 120))
        print_console(report, console)
    if report.exit_code:
        raise typer.Exit(report.exit_code)
