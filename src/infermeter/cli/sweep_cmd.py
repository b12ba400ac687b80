"""``infermeter sweep`` (run an experiment spec or a recipe) and ``infermeter recipes``."""

from __future__ import annotations

import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape

from infermeter.cli.app import app
from infermeter.cli.signals import raise_keyboard_interrupt
from infermeter.errors import UserError, safe_text
from infermeter.secrets import redact_url
from infermeter.load.eventloop import use_uvloop

if TYPE_CHECKING:  # the experiments package is imported when a command runs, not at start-up
    from infermeter.experiments.cells import Cell, Estimator
    from infermeter.experiments.spec import ExperimentSpec

Opt = typer.Option

EXIT_OK = 0
EXIT_INCOMPLETE = 5  # some cells failed or were left pending (target unreachable)
EXIT_INTERRUPTED = 130

recipes_app = typer.Typer(help="Built-in experiments (spec files you can run, copy and edit).",
                          invoke_without_command=True, rich_markup_mode=None)
app.add_typer(recipes_app, name="recipes")


def load_experiment(spec_file: str | None, recipe: str | None, targets: list[str], model: str | None,
                    tokenizer: str | None, output_dir: str | None, sets: list[str] | None = None) -> ExperimentSpec:
    from infermeter.experiments.recipes import apply_overrides, load_recipe
    from infermeter.experiments.specfile import parse_yaml, spec_from_data

    if spec_file and recipe:
        raise UserError("give a spec file or --recipe, not both", "e.g. infermeter sweep my.yaml")
    if recipe:
        return load_recipe(recipe, targets=targets, model=model, tokenizer=tokenizer, output_dir=output_dir,
                           sets=sets)
    if not spec_file:
        raise UserError("no experiment given", "pass a spec file (infermeter sweep my.yaml) or --recipe NAME "
                                               "(see 'infermeter recipes')")
    path = Path(spec_file)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UserError(f"spec file {spec_file!r} does not exist",
                        "give the path of a YAML experiment spec (or --recipe NAME)") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"cannot read spec file {spec_file!r}: {exc}", "give a readable UTF-8 YAML file") from None
    data = parse_yaml(text, spec_file)
    if not isinstance(data, dict):
        raise UserError(f"{spec_file}: the spec must be a YAML mapping (name:, targets:, workloads:, load: ...)",
                        "see docs/experiments.md")
    apply_overrides(data, targets=targets, model=model, tokenizer=tokenizer, output_dir=output_dir, sets=sets)
    return spec_from_data(data, spec_file, text if not sets else None)


@app.command("sweep", no_args_is_help=False)
def sweep(
    spec_file: Annotated[Optional[str], typer.Argument(help="Experiment spec (YAML); see docs/experiments.md")] = None,
    recipe: Annotated[Optional[str], Opt("--recipe", help="Run a built-in experiment instead (see 'infermeter recipes')")] = None,
    target: Annotated[list[str], Opt("--target", help="NAME=URL[,backend=B][,model=M][,tokenizer=T][,endpoint=E], or NAME=launch:PROFILE,model=M[,SETTING=V] (a server infermeter starts) (repeatable); replaces the spec's targets")] = [],
    set_: Annotated[list[str], Opt("--set", help="PATH=VALUE: replace one key of the spec, e.g. load.burst=[1,2,4] (VALUE is YAML; repeatable)")] = [],
    model: Annotated[Optional[str], Opt("--model", help="Model for URL targets that name none")] = None,
    tokenizer: Annotated[Optional[str], Opt("--tokenizer", help="Tokenizer for URL targets that name none")] = None,
    output_dir: Annotated[Optional[str], Opt("--output-dir", help="Store folder (default: the spec's output_dir, else results/NAME)")] = None,
    resume: Annotated[bool, Opt("--resume", help="Continue the experiment in its folder: finished cells are kept, unfinished ones run again")] = False,
    only: Annotated[Optional[str], Opt("--only", help="Run only this target's cells")] = None,
    dry_run: Annotated[bool, Opt("--dry-run", help="Print the cells in run order and the estimated duration; run nothing")] = False,
    disable_tqdm: Annotated[bool, Opt("--disable-tqdm", help="No live progress display")] = False,
    progress_interval: Annotated[Optional[float], Opt("--progress-interval", metavar="SECONDS", help="Write a plain key=value progress line of the running cell to stderr every SECONDS")] = None,
) -> None:
    """Run an experiment: every target x workload x load point x repeat, one run per cell, resumable."""
    if progress_interval is not None and not 0 < progress_interval < float("inf"):
        raise UserError(f"--progress-interval {progress_interval:g} is not a positive number of seconds",
                        "pass e.g. --progress-interval 10")
    spec = load_experiment(spec_file, recipe, target, model, tokenizer, output_dir, set_)
    if dry_run:
        print_plan(spec, only)
        return
    code = run(spec, resume=resume, only=only, progress=not disable_tqdm, progress_interval=progress_interval)
    if code:
        raise typer.Exit(code)


def print_plan(spec: ExperimentSpec, only: str | None = None) -> None:
    from infermeter.experiments.cells import Estimator, build_plan, format_duration
    from infermeter.experiments.store import Store
    from infermeter.experiments.sweep import changed_cells

    cells = build_plan(spec)
    if only is not None:
        if only not in spec.targets:
            raise UserError(f"--only {only!r} is not a target of experiment {spec.name}",
                            f"use one of: {', '.join(spec.targets)}")
        cells = [c for c in cells if c.target == only]
    store = Store(spec.resolved_output_dir)
    status: dict[str, dict[str, Any]] = {}
    estimator = Estimator(spec)
    if store.exists():
        for row in store.rows():
            status[row["cell_id"]] = row
    for c in cells:
        row = status.get(c.cell_id)
        if row and row["status"] == "done" and row["started"] and row["finished"]:
            estimator.observe(c, row["finished"] - row["started"])
    changed = set(changed_cells(store, cells)) if store.exists() else set()
    for cid in changed:  # run with other settings: not "done" under these
        status[cid] = {**status[cid], "status": "changed"} if cid in status else {"status": "changed"}
    todo = [c for c in cells if (status.get(c.cell_id) or {}).get("status") not in ("done", "changed")]
    where = f"{store.root} ({'exists: run with --resume to continue it' if store.exists() else 'new'})"
    p = print
    p(f"experiment {spec.name}: {len(cells)} cells -> {safe_text(where)}")
    for name, t in spec.targets.items():
        if only is not None and name != only:
            continue
        if t.kind == "url":
            what = f"{redact_url(str(t.url))} ({t.backend_name}{', model ' + t.model if t.model else ''})"
        elif t.kind == "embedded":
            assert t.embedded is not None
            what = f"embedded engine, model {t.embedded.model}, {t.embedded.parallel} slots"
        else:
            from infermeter.experiments.serverlimits import launch_settings

            assert t.launch is not None
            fitted, _notes = launch_settings(spec, name)
            what = (f"launch {t.launch.profile} ({fitted.get('model')}), max_model_len "
                    f"{fitted.get('max_model_len', 'default')}, max_batch {fitted.get('max_batch', 'default')}")
        p(f"  target {name}: {safe_text(what)}; estimate basis {estimator.basis(name)}")
    header = f"  {'#':>4}  {'cell':<44} {'load':<18} {'prompts':>7}  {'in/out tok':>11}  {'status':<8} {'est.':>7}"
    p(header.rstrip())
    for c in cells:
        st = (status.get(c.cell_id) or {}).get("status", "extra" if c.extra else "pending")
        lens = f"{c.input_len if c.input_len is not None else '?'}/{c.output_len if c.output_len is not None else '?'}"
        est = "-" if st in ("done", "changed") else format_duration(estimator.seconds(c))
        p(f"  {c.seq:>4}  {c.cell_id:<44} {c.load_label:<18} {c.num_prompts:>7}  {lens:>11}  {st:<8} {est:>7}")
    p(f"total: {len(todo)} of {len(cells)} cells to run, estimated {format_duration(estimator.total(todo))}")
    if changed:
        names = [c.cell_id for c in cells if c.cell_id in changed]
        p(f"settings changed: {len(names)} finished cell(s) were run with other settings than the spec now "
          f"gives: {_list(names)}. A resume refuses them: restore the spec (see {safe_text(str(store.spec_path))}), "
          f"or choose a new output_dir, where all {len(cells)} cells run")
    if store.exists():
        p(f"a resume would run: {_list([c.cell_id for c in todo]) if todo else 'nothing'}"
          + (" (once the changed cells are dealt with)" if changed else ""))
    if any(c.extra for c in todo):
        budget = f", within repeat_budget_s {spec.repeat_budget_s:g} per point" if spec.repeat_budget_s else ""
        p(f"extra: repeats of small load points that run only until the point has min_samples "
          f"{spec.min_samples} requests{budget}")
    p("estimate: per cell 2 s + prompts x input_len / input tok/s + prompts x output_len / output tok/s "
      "(a rate cell takes at least prompts / rate; + 5 s per embedded engine start), scaled per target by "
      "measured / estimated time of its finished cells (docs/experiments.md)")


class ConsoleEvents:
    """The sweep's progress on stderr: one line per cell, the cell's live bar, the experiment's ETA."""

    def __init__(self, err: Console) -> None:
        self.err = err
        self._logged: set[str] = set()
        self._skipped: set[tuple] = set()

    def planned(self, todo: list[Cell], done: int, estimator: Estimator) -> None:
        from infermeter.experiments.cells import format_duration

        self.err.print(f"{len(todo)} cells to run ({done} already done), estimated "
                       f"{format_duration(estimator.total(todo))}")

    def target_start(self, target: str, kind: str, cells: int) -> None:
        self.err.print(f"[bold]target {escape(target)}[/bold] ({kind}): {cells} cells")

    def target_skipped(self, target: str, reason: str) -> None:
        self.err.print(f"[yellow]target {escape(target)} skipped: {escape(safe_text(reason, 300))}[/yellow]")

    def cell_start(self, index: int, total: int, cell: Cell, eta_s: float) -> None:
        from infermeter.experiments.cells import format_duration

        self.err.print(f"[{index}/{total}] {cell.cell_id}  {cell.load_label}, {cell.num_prompts} prompts"
                       f"  — experiment ETA {format_duration(eta_s)}", markup=False)

    def cell_end(self, cell: Cell, row: dict[str, Any], wall_s: float) -> None:
        self.err.print("  " + cell_summary(row) + f"  ({wall_s:.1f}s)", markup=False)

    def cell_failed(self, cell: Cell, error: str) -> None:
        self.err.print(f"  FAILED: {safe_text(error, 300)}", markup=False, style="red")

    def cell_skipped(self, cell: Cell, reason: str) -> None:
        if cell.point not in self._skipped:  # once per point: the rest of its extra repeats go the same way
            self._skipped.add(cell.point)
            self.err.print(f"[dim]{escape(cell.cell_id)} and the point's further repeats: "
                           f"{escape(safe_text(reason))}[/dim]")

    def log(self, message: str) -> None:
        # Each cell's run repeats some lines (the tokenizer it loads): each is shown once.
        if message in self._logged:
            return
        self._logged.add(message)
        self.err.print(f"[dim]{escape(safe_text(message))}[/dim]")


def cell_summary(row: dict[str, Any]) -> str:
    def f(key: str, fmt: str) -> str:
        v = row.get(key)
        return format(v, fmt) if isinstance(v, (int, float)) else "-"

    parts = [f"{f('completed', 'd')} ok, {f('failed', 'd')} failed",
             f"{f('output_throughput', ',.0f')} output tok/s",
             f"TTFT p99 {f('p99_ttft_ms', ',.1f')} ms", f"TPOT median {f('median_tpot_ms', ',.2f')} ms"]
    flags = []
    if row.get("work_exact") == 0:
        flags.append("UNEQUAL WORK")
    if row.get("client_bound") == 1:
        flags.append("CLIENT-BOUND")
    if row.get("stopped_early"):
        flags.append(f"stopped early: {row['stopped_early']}")
    return ", ".join(parts) + (f"  [{'; '.join(flags)}]" if flags else "")


def run(spec: ExperimentSpec, *, resume: bool = False, only: str | None = None, progress: bool = True,
        progress_interval: float | None = None) -> int:
    from infermeter.cli.engine_progress import EngineProgress
    from infermeter.cli.progress import live_progress
    from infermeter.experiments.cells import format_duration
    from infermeter.experiments.sweep import run_sweep

    err = Console(stderr=True, highlight=False, soft_wrap=True)
    events = ConsoleEvents(err)

    engine_progress = EngineProgress(err)

    use_uvloop()
    try:
        previous = signal.signal(signal.SIGTERM, raise_keyboard_interrupt)
    except ValueError:  # not the main thread
        previous = None
    try:
        outcome = run_sweep(spec, resume=resume, only=only, events=events,  # type: ignore[arg-type]
                            progress=live_progress(err, live=progress, interval=progress_interval)
                            if progress or progress_interval is not None else None,
                            engine_progress=engine_progress,
                            argv=["infermeter", *sys.argv[1:]])
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    done_now = len(outcome.done)
    print(f"experiment {spec.name}: {done_now} cells run now, {outcome.done_before} done before, "
          f"{len(outcome.failed)} failed, {len(outcome.skipped)} left pending "
          f"in {format_duration(outcome.wall_s)} -> {outcome.store.root}")
    print(efficiency_line(outcome))
    print(f"see: infermeter ls {outcome.store.root}")
    if outcome.interrupted:
        print("interrupted: finished cells are kept; 'infermeter sweep ... --resume' runs the rest "
                  "(the interrupted cell from scratch)")
        return EXIT_INTERRUPTED
    return EXIT_OK if outcome.complete else EXIT_INCOMPLETE


def efficiency_line(outcome: Any) -> str:
    """How much of the sweep's wall time was measurement (docs/experiments.md, "Efficiency")."""
    from infermeter.experiments.cells import format_duration

    eff = outcome.efficiency
    parts = [f"measured {outcome.measured_s:.1f} s of {outcome.wall_s:.1f} s wall",
             f"efficiency {eff * 100:.1f} %" if eff is not None else "efficiency -",
             f"server starts {outcome.server_start_s:.1f} s", f"warm-ups in {outcome.warmups} cell(s)"]
    if outcome.not_run:
        parts.append(f"{len(outcome.not_run)} extra repeat(s) not needed or over budget")
    return "sweep: " + ", ".join(parts) + f" ({format_duration(outcome.wall_s)})"


@recipes_app.callback()
def recipes(ctx: typer.Context) -> None:
    """List the built-in experiments."""
    if ctx.invoked_subcommand is not None:
        return
    from infermeter.experiments.recipes import list_recipes

    for name, description in list_recipes():
        print(f"{name:<12} {safe_text(description)}")
    print("run one: infermeter sweep --recipe NAME [--target NAME=URL ...] [--model M --tokenizer T] "
              "[--dry-run]; copy one: infermeter recipes show NAME > my.yaml")


@recipes_app.command("show")
def recipes_show(name: Annotated[str, typer.Argument(help="Recipe name")]) -> None:
    """Print a recipe's YAML (copy it, edit it, run it with 'infermeter sweep FILE')."""
    from infermeter.experiments.recipes import recipe_text

    sys.stdout.write(recipe_text(name))


def _list(ids: list[str], most: int = 12) -> str:
    shown = ", ".join(ids[:most])
    return shown + (f", ... ({len(ids)} in all)" if len(ids) > most else "")
