"""``infermeter ls`` / ``show`` (read an experiment store) and ``infermeter import vllm``."""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from infermeter.cli.app import app
from infermeter.errors import UserError, safe_text

import_app = typer.Typer(help="Bring results of other tools into an experiment store.", no_args_is_help=True,
                         rich_markup_mode=None)
app.add_typer(import_app, name="import")

EXIT_IMPORT_PROBLEMS = 5  # something was imported, but some input was not understood


def _fmt(v: Any, spec: str) -> str:
    if v is None:
        return "-"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def _load(row: dict[str, Any]) -> str:
    mode, value = row.get("load_mode"), row.get("load_value")
    if not mode:
        return "?"
    if value is None:
        return f"{mode} ?"
    return f"{mode} {int(value) if float(value).is_integer() else format(value, 'g')}"


def _flags(row: dict[str, Any]) -> str:
    out = []
    if row.get("work_exact") == 0:
        out.append("unequal-work")
    if row.get("client_bound") == 1:
        out.append("client-bound")
    if row.get("stopped_early"):
        out.append("stopped")
    if row.get("source") and row["source"] != "infermeter":
        out.append("imported")
    if row.get("error") and row.get("status") != "failed":
        out.append("note")
    return ",".join(out)


def format_table(rows: list[dict[str, Any]]) -> list[str]:
    cols = [("#", lambda r: str(r.get("seq") or ""), ">"), ("cell", lambda r: r["cell_id"], "<"),
            ("status", lambda r: r.get("status") or "", "<"), ("load", _load, "<"),
            ("ok", lambda r: _fmt(r.get("completed"), "d"), ">"), ("fail", lambda r: _fmt(r.get("failed"), "d"), ">"),
            ("dur s", lambda r: _fmt(r.get("duration"), ".1f"), ">"),
            ("req/s", lambda r: _fmt(r.get("request_throughput"), ".2f"), ">"),
            ("out tok/s", lambda r: _fmt(r.get("output_throughput"), ",.0f"), ">"),
            ("ttft p50", lambda r: _fmt(r.get("median_ttft_ms"), ",.1f"), ">"),
            ("ttft p99", lambda r: _fmt(r.get("p99_ttft_ms"), ",.1f"), ">"),
            ("tpot p50", lambda r: _fmt(r.get("median_tpot_ms"), ",.2f"), ">"),
            ("tok/s/GPU", lambda r: _fmt(r.get("output_throughput_per_gpu"), ",.0f"), ">"),
            ("J/tok", lambda r: _fmt(r.get("energy_per_output_token_j"), ".3g"), ">"),
            ("$/Mtok", lambda r: _fmt(r.get("usd_per_million_output_tokens"), ",.3g"), ">"),
            ("flags", _flags, "<")]
    table = [[c[0] for c in cols]] + [[safe_text(c[1](r)) for c in cols] for r in rows]
    widths = [max(len(line[i]) for line in table) for i in range(len(cols))]
    out = []
    for line in table:
        cells = [f"{v:{align}{w}}" for v, (_, _, align), w in zip(line, cols, widths)]
        out.append("  ".join(cells).rstrip())
    return out


@app.command("ls")
def ls(
    directory: Annotated[str, typer.Argument(help="Experiment folder (a sweep's output_dir or an import target)")],
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Recreate index.sqlite from the JSON files first")] = False,
    status: Annotated[Optional[str], typer.Option("--status", help="Only cells with this status: pending, running, done, failed")] = None,
    points: Annotated[bool, typer.Option("--points", help="Only the load points with repeats: means with 95 % CIs over their runs")] = False,
) -> None:
    """A table of the experiment's cells, in run order; then, for points run more than once, means over the runs."""
    from infermeter.experiments.repeats import point_summaries, summary_table
    from infermeter.experiments.store import STATUSES, Store

    store = Store(directory).require()
    if status is not None and status not in STATUSES:
        raise UserError(f"--status {status!r} is not a cell status", f"use one of: {', '.join(STATUSES)}")
    if rebuild:
        n = store.rebuild_index()
        print(f"index rebuilt from the JSON files: {n} cells", file=sys.stderr)
    rows = store.rows()
    meta = store.experiment_row()
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    if status is not None:
        rows = [r for r in rows if r["status"] == status]
    summary = ", ".join(f"{counts[s]} {s}" for s in STATUSES if counts.get(s))
    print(f"experiment {safe_text(meta.get('name') or store.root.name)} ({safe_text(meta.get('kind') or '?')}): "
          f"{sum(counts.values())} cells ({summary or 'none'})")
    summaries = point_summaries(rows)
    if not points:
        for line in format_table(rows):
            print(line)
    if summaries:
        print(f"{'' if points else chr(10)}repeated points: mean ± 95 % CI half-width over the runs (Student t)")
        for line in summary_table(summaries):
            print(line)
    if counts.get("running") and not store.is_locked():
        print("note: no sweep is running here; 'running' cells were killed mid-run and run again on --resume",
              file=sys.stderr)


HEADLINE = [
    ("completed", "Successful requests", "d"), ("failed", "Failed requests", "d"),
    ("duration", "Benchmark duration (s)", ".2f"), ("total_input_tokens", "Total input tokens", "d"),
    ("total_output_tokens", "Total generated tokens", "d"),
    ("request_throughput", "Request throughput (req/s)", ".2f"),
    ("output_throughput", "Output token throughput (tok/s)", ".2f"),
    ("total_token_throughput", "Total token throughput (tok/s)", ".2f"),
]


@app.command("show")
def show(
    directory: Annotated[str, typer.Argument(help="Experiment folder")],
    cell_id: Annotated[Optional[str], typer.Argument(help="Cell id (or a unique prefix); without it, the experiment")] = None,
) -> None:
    """One cell's headline numbers (or, without CELL_ID, the experiment's summary)."""
    from infermeter.experiments.store import METRICS, STATS, Store

    store = Store(directory).require()
    rows = store.rows()
    if cell_id is None:
        meta = store.experiment_row()
        print(f"experiment: {safe_text(meta.get('name'))} ({safe_text(meta.get('kind'))})")
        print(f"folder: {store.root}")
        targets = sorted({r['target'] for r in rows if r.get('target')})
        print(f"targets: {', '.join(targets) or '-'}")
        for s in ("pending", "running", "done", "failed"):
            n = sum(1 for r in rows if r["status"] == s)
            if n:
                print(f"{s}: {n}")
        done = [r for r in rows if r["status"] == "done" and r.get("output_throughput") is not None]
        if done:
            best = max(done, key=lambda r: r["output_throughput"])
            print(f"highest output throughput: {best['output_throughput']:,.1f} tok/s ({best['cell_id']})")
        sweeps = store.sweeps()
        if sweeps and sweeps[-1].get("efficiency") is not None:
            last = sweeps[-1]
            print(f"last sweep: {last.get('cells_run')} cells, measured {last.get('measured_s'):.1f} s of "
                  f"{last.get('wall_s'):.1f} s wall (efficiency {last['efficiency'] * 100:.1f} %)")
        _print_points(rows)
        return
    matches = [r for r in rows if r["cell_id"] == cell_id] or [r for r in rows if r["cell_id"].startswith(cell_id)]
    if not matches:
        raise UserError(f"no cell {cell_id!r} in {str(store.root)!r}", f"see 'infermeter ls {store.root}'")
    if len(matches) > 1 and _one_point(matches):  # the runs of one load point: their means and intervals
        _print_points(matches)
        return
    if len(matches) > 1:
        raise UserError(f"{cell_id!r} matches {len(matches)} cells ({', '.join(r['cell_id'] for r in matches[:3])}, ...)",
                        "give more of the cell id")
    r = matches[0]
    w = 40
    print(f"{'cell:':<{w}} {r['cell_id']}")
    print(f"{'status:':<{w}} {r['status']}" + (f" (attempt {r['attempt']})" if r.get("attempt") else ""))
    print(f"{'target:':<{w}} {safe_text(r.get('target'))} ({safe_text(r.get('backend'))}, model {safe_text(r.get('model'))})")
    print(f"{'workload:':<{w}} {safe_text(r.get('workload'))} ({safe_text(r.get('dataset'))}, "
          f"{_fmt(r.get('input_len'), 'd')} in / {_fmt(r.get('output_len'), 'd')} out tokens)")
    print(f"{'load:':<{w}} {_load(r)}, {_fmt(r.get('num_prompts'), 'd')} prompts, repeat {_fmt(r.get('repeat'), 'd')}")
    for key, label, spec in HEADLINE:
        print(f"{label + ':':<{w}} {_fmt(r.get(key), spec)}")
    for m in METRICS:
        for s in STATS:
            key = f"{s}_{m}_ms"
            label = f"{'P99' if s == 'p99' else s.capitalize()} {m.upper()} (ms):"
            print(f"{label:<{w}} {_fmt(r.get(key), '.2f')}")
    work = {1: "yes", 0: "NO"}.get(r.get("work_exact"), "-")  # type: ignore[arg-type]
    bound = {1: "YES", 0: "no"}.get(r.get("client_bound"), "-")  # type: ignore[arg-type]
    print(f"{'equal work (exact output lengths):':<{w}} {work}")
    print(f"{'client-bound:':<{w}} {bound}")
    if r.get("stopped_early"):
        print(f"{'stopped early:':<{w}} {safe_text(r['stopped_early'])}")
    if r.get("error"):
        print(f"{'error:':<{w}} {safe_text(r['error'], 500)}")
    if r.get("source_file"):
        print(f"{'imported from:':<{w}} {safe_text(r['source_file'])} ({r.get('source')})")
    for key in ("result_path", "records_path"):
        if r.get(key):
            print(f"{key.replace('_', ' ') + ':':<{w}} {store.root / r[key]}")


def _one_point(rows: list[dict[str, Any]]) -> bool:
    from infermeter.experiments.repeats import point_of

    return len({point_of(r) for r in rows}) == 1 and point_of(rows[0]) is not None


def _print_points(rows: list[dict[str, Any]]) -> None:
    from infermeter.experiments.repeats import point_summaries, summary_table

    summaries = point_summaries(rows)
    if summaries:
        print("repeated points: mean ± 95 % CI half-width over the runs (Student t)")
        for line in summary_table(summaries):
            print(line)


@import_app.command("vllm")
def import_vllm_cmd(
    files: Annotated[list[str], typer.Argument(help="vllm bench serve result JSON files and/or console logs")],
    into: Annotated[str, typer.Option("--into", help="Experiment folder to add the runs to (created if missing)")],
    target: Annotated[Optional[str], typer.Option("--target", help="Target name for the imported cells (default: the result's label or backend)")] = None,
    workload: Annotated[Optional[str], typer.Option("--workload", help="Workload name (default: the dataset name, when known)")] = None,
    load: Annotated[Optional[str], typer.Option("--load", help="The load of runs whose input does not say it: burst (size from each run's request count), concurrency:N or rate:R")] = None,
) -> None:
    """Import vllm bench serve / benchmark_serving.py results (JSON files or console summaries)."""
    from infermeter.experiments.importers import import_vllm

    report = import_vllm(files, into, target=target, workload=workload, load=load)
    for p in report.problems:
        print(safe_text(str(p), 400), file=sys.stderr)
    for source, existing in report.duplicates:
        print(f"{safe_text(source)}: already imported as {existing}; skipped", file=sys.stderr)
    print(f"imported {len(report.imported)} run(s) into {report.store.root}"
          + (f": {', '.join(report.imported)}" if report.imported else "")
          + (f"; {len(report.problems)} problem(s) reported above" if report.problems else ""))
    if not report.imported and not report.duplicates:
        raise UserError("nothing was imported", "give vllm bench serve result JSON files or logs holding "
                                                "'Serving Benchmark Result' blocks")
    if report.problems:
        raise typer.Exit(EXIT_IMPORT_PROBLEMS)
