"""Per-request records and telemetry series of the cells a report looks at closely.

The distributions and timelines need more than a result's summary: each cell's records JSONL
(``infermeter.records_file``) and telemetry JSONL (``infermeter.telemetry.series_file``), read
only for the *focus*: one load per workload and load mode (by default the largest that every
target ran with records), or the loads and cells the user names (``--at``, ``--cell``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from infermeter.core.records import RequestRecord
from infermeter.errors import UserError
from infermeter.reports.data import Cell, fmt_load, single_prompt_workloads

AT_FORMAT = "[WORKLOAD:]MODE=VALUE, e.g. burst=64, rate=8 or short:concurrency=16"


@dataclass
class Focus:
    """The cells of one load that the close-up charts show: per target, its repeats there."""

    workload: str
    mode: str | None
    value: float | None
    cells: dict[str, list[Cell]] = field(default_factory=dict)
    only_cell: str | None = None  # chosen with --cell: that cell alone

    @property
    def label(self) -> str:
        where = f"{self.workload}, {fmt_load(self.mode, self.value)}"
        return f"cell {self.only_cell} ({where})" if self.only_cell else where


def parse_at(text: str) -> tuple[str | None, str, float]:
    m = re.fullmatch(r"\s*(?:([^:=]+):)?\s*(burst|concurrency|rate|steps)\s*=\s*([0-9.]+)\s*", text)
    try:
        value = float(m.group(3)) if m else None
    except ValueError:
        value = None
    if m is None or value is None:
        raise UserError(f"--at {text!r} is not a load", f"write {AT_FORMAT}")
    return (m.group(1).strip() if m.group(1) else None), m.group(2), value


def has_records(cell: Cell) -> bool:
    return bool(cell.folder and cell.records_file and (cell.folder / cell.records_file).is_file())


def focus_of(cells: list[Cell], at: list[str] | None = None, cell_ids: list[str] | None = None) -> list[Focus]:
    """The loads (and cells) to show closely.  A named load or cell without records is a UserError."""
    out: list[Focus] = []
    for cid in cell_ids or []:
        c = next((c for c in cells if c.cell_id == cid), None)
        if c is None:
            raise UserError(f"--cell {cid!r} is not a finished cell of the report",
                            "'infermeter ls DIR' lists the cells and their ids")
        if not has_records(c):
            raise UserError(f"--cell {cid!r} has no per-request records file", "choose a cell run by infermeter")
        out.append(Focus(c.workload, c.load_mode, c.load_value, {c.target: [c]}, only_cell=cid))
    for text in at or []:
        workload, mode, value = parse_at(text)
        found = [f for f in _groups(cells).values() if f.mode == mode and (workload is None or f.workload == workload)]
        found = [_at(f, value) for f in found]
        found = [f for f in found if f.cells]
        if not found:
            raise UserError(f"--at {text!r}: no cell with per-request records at that load",
                            "the 'Every cell' table of the report lists the loads")
        out += found
    if cell_ids or at:
        return out
    return [f for f in (_default(g) for g in _groups(cells).values()) if f is not None]


def _groups(cells: list[Cell]) -> dict[tuple, Focus]:
    """(workload, mode) -> every cell with records, by target (single-prompt workloads left out)."""
    singles = single_prompt_workloads(cells)
    groups: dict[tuple, Focus] = {}
    for c in cells:
        if c.workload in singles or not has_records(c):
            continue
        g = groups.setdefault((c.workload, c.load_mode), Focus(c.workload, c.load_mode, None))
        g.cells.setdefault(c.target, []).append(c)
    return groups


def _at(group: Focus, value: float) -> Focus:
    return Focus(group.workload, group.mode, value,
                 {t: [c for c in cs if c.load_value == value] for t, cs in group.cells.items()
                  if any(c.load_value == value for c in cs)})


def _default(group: Focus) -> Focus | None:
    """The largest load that the most targets ran with records."""
    values = {c.load_value for cs in group.cells.values() for c in cs if c.load_value is not None}
    if not values:
        return None
    best = max(values, key=lambda v: (sum(any(c.load_value == v for c in cs) for cs in group.cells.values()), v))
    return _at(group, best)


def read_records(cell: Cell) -> list[RequestRecord]:
    """The measured requests of a cell (warm-up left out); [] when its file is gone or unreadable."""
    from infermeter.storage.files import read_records as read

    if not has_records(cell):
        return []
    try:
        return [r for r in read(cell.folder / cell.records_file) if not r.warmup]  # type: ignore[operator]
    except (OSError, ValueError, TypeError):
        return []


def read_telemetry(cell: Cell) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
    """(meta, samples) of a cell's telemetry series; (None, []) when it has none."""
    from infermeter.telemetry import read_series

    if cell.folder is None:
        return None, []
    name = cell.telemetry_file
    if name is None and cell.records_file:  # the result names it only when something was sampled
        name = cell.records_file.replace(".records.jsonl", ".telemetry.jsonl")
    path = cell.folder / name if name else None
    if path is None or not path.is_file():
        return None, []
    try:
        return read_series(path)
    except OSError:
        return None, []
