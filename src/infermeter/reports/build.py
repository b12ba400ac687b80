"""``build_report``: experiment folders in, report.html + summary.md + chart PNGs out."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from infermeter.errors import UserError
from infermeter.reports.data import Cell, load_experiments, targets_of


@dataclass
class ReportFiles:
    html: Path
    markdown: Path
    charts: list[Path] = field(default_factory=list)
    cells: int = 0
    targets: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def build_report(dirs: list[str | Path], out: str | Path, *, title: str | None = None,
                 baseline: list | None = None, baseline_lines: list[str] | None = None,
                 at: list[str] | None = None, cell_ids: list[str] | None = None) -> ReportFiles:
    """``baseline``/``baseline_lines``: verdict tables and lines against a baseline
    (reports/compare_report.py), shown in their own section of the HTML report.  ``at`` / ``cell_ids``:
    the loads and cells whose distributions and timelines are drawn (default: the largest load of each
    workload and load mode that every target ran with per-request records)."""
    from infermeter.reports.charts import build_charts
    from infermeter.reports.efficiency_charts import efficiency_charts
    from infermeter.reports.html import render_html
    from infermeter.reports.markdown import render_markdown
    from infermeter.reports.samples import focus_of
    from infermeter.reports.tables import all_cells_table, comparison_tables, targets_table

    exps = load_experiments(dirs)
    cells: list[Cell] = [c for e in exps for c in e.cells]
    skipped = [f"{e.name}: {s}" for e in exps for s in e.skipped]
    if not cells:
        raise UserError(f"no finished cell in {', '.join(repr(str(d)) for d in dirs)}",
                        "run the sweep (or import results) first; 'infermeter ls DIR' shows the cells")
    focus = focus_of(cells, at, cell_ids)  # a bad --at / --cell stops before anything is written
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    names = ", ".join(e.name for e in exps)
    title = title or f"Benchmark report: {names}"
    targets = targets_of(cells)
    intro = [f"Experiments: {names} ({len(cells)} finished cells, {len(targets)} targets: {', '.join(targets)}).",
             "TTFT: time to first token; TPOT: time per output token after the first; ITL: gap between streamed "
             "chunks. Load: 'burst N' sends N requests at once; 'concurrency C' keeps C requests in flight; "
             "'rate R' offers R requests per second."]
    warnings = []
    if skipped:
        warnings.append(f"{len(skipped)} cells have no result and are left out: " + ", ".join(skipped[:10])
                        + (" ..." if len(skipped) > 10 else ""))
    for flag, what in (("unequal work", "did unequal work (outputs shorter or longer than asked)"),
                       ("client-bound", "were client-bound (the client may have limited the numbers)"),
                       ("stopped early", "stopped early"), ("errors", "had failed requests")):
        n = sum(1 for c in cells if flag in c.flags)
        if n:
            warnings.append(f"{n} cells {what}: see the flags column.")
    charts = build_charts(cells, focus=focus) + efficiency_charts(cells)
    comps = comparison_tables(cells)
    tt = targets_table(cells)
    errors = [(c.cell_id or c.target, c.error_messages) for c in cells if c.error_messages]
    cell_warnings = [(c.cell_id or c.target, c.warnings) for c in cells if c.warnings]
    files = ReportFiles(html=out / "report.html", markdown=out / "summary.md", cells=len(cells), targets=targets,
                        skipped=skipped)
    for ch in charts:
        p = out / f"{ch.id}.png"
        p.write_bytes(ch.png)
        (out / f"{ch.id}.svg").write_bytes(ch.svg)
        files.charts.append(p)
    files.html.write_text(render_html(title=title, intro=intro, warnings=warnings, charts=charts, targets=tt,
                                      comparisons=comps, all_cells=all_cells_table(cells), errors=errors,
                                      cell_warnings=cell_warnings, baseline=baseline,
                                      baseline_lines=baseline_lines), encoding="utf-8")
    files.markdown.write_text(render_markdown(title=title, intro=intro, warnings=warnings, charts=charts, targets=tt,
                                              comparisons=comps), encoding="utf-8")
    return files
