"""The two sides of ``infermeter compare``: their runs, grouped by coordinates, their
per-request samples and their provenance (reports/compare.py judges them)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from infermeter.errors import UserError
from infermeter.reports.data import Cell, cell_from_result, fmt_load

FAMILIES = ("ttft", "tpot", "itl", "e2el")


# ---------------------------------------------------------------------- runs and groups
@dataclass
class Run:
    cell: Cell
    result: dict[str, Any]
    folder: Path | None  # where the records file lies


@dataclass
class Group:
    key: tuple
    runs: list[Run]

    @property
    def cells(self) -> list[Cell]:
        return [r.cell for r in self.runs]

    @property
    def name(self) -> str:
        c = self.runs[0].cell
        return f"{c.target} · {c.workload} · {fmt_load(c.load_mode, c.load_value)}"


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(path)!r} is not a readable {what} ({exc})", "give a run's result JSON") from None
    if not isinstance(data, dict):
        raise UserError(f"{str(path)!r} holds no {what} object", "give a run's result JSON")
    return data


def load_runs(path: str | Path) -> list[Run]:
    """The runs of a result file, a cell folder or an experiment folder (its finished cells)."""
    p = Path(path)
    if p.is_file():
        result = _read_json(p, "result")
        return [Run(cell_from_result(result, cell_id=p.stem), result, p.parent)]
    if p.is_dir() and (p / "result.json").is_file():
        result = _read_json(p / "result.json", "result")
        definition = None
        if (p / "cell.json").is_file():
            try:
                definition = json.loads((p / "cell.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                definition = None
        return [Run(cell_from_result(result, definition, cell_id=p.name), result, p)]
    if p.is_dir():
        from infermeter.experiments.store import Store

        store = Store(p).require()
        name = str(store.read_meta().get("name") or p.name)
        runs = []
        for row in store.rows():
            cid = row["cell_id"]
            result = store.read_result(cid) if row.get("status") == "done" else None
            if result is None:
                continue
            definition = {**{k: row.get(k) for k in ("cell_id", "target", "workload", "dataset", "input_len",
                                                     "output_len", "load_mode", "load_value", "repeat", "source")},
                          **{k: v for k, v in (store.read_cell(cid) or {}).items() if v is not None}}
            runs.append(Run(cell_from_result(result, definition, experiment=name), result, store.cell_dir(cid)))
        if not runs:
            raise UserError(f"{str(p)!r} holds no finished cell", "run the sweep first ('infermeter ls DIR')")
        return runs
    raise UserError(f"{str(path)!r} is not a result file, cell folder or experiment folder",
                    "give a result JSON, a cell folder (cells/<id>), an experiment folder or --baseline NAME")


def group_runs(runs: list[Run], with_target: bool = True) -> dict[tuple, Group]:
    groups: dict[tuple, Group] = {}
    for r in runs:
        c = r.cell
        key = ((c.target,) if with_target else ()) + (c.workload, c.load_mode, c.load_value)
        groups.setdefault(key, Group(key, [])).runs.append(r)
    return groups


def pair_groups(runs_a: list[Run], runs_b: list[Run]) -> tuple[list[tuple[Group, Group]], list[str]]:
    """Groups of A and B at the same coordinates; and what could not be paired."""
    ga, gb = group_runs(runs_a), group_runs(runs_b)
    if len(ga) == 1 and len(gb) == 1:
        return [(next(iter(ga.values())), next(iter(gb.values())))], []
    if not set(ga) & set(gb):  # other target names: pair by workload and load alone
        ta = {c.cell.target for c in runs_a}
        tb = {c.cell.target for c in runs_b}
        if len(ta) == 1 and len(tb) == 1:
            ga, gb = group_runs(runs_a, False), group_runs(runs_b, False)
    pairs = [(ga[k], gb[k]) for k in ga if k in gb]
    unpaired = [f"only in A: {g.name}" for k, g in ga.items() if k not in gb]
    unpaired += [f"only in B: {g.name}" for k, g in gb.items() if k not in ga]
    if not pairs:
        raise UserError("A and B have no cells at the same target, workload and load",
                        "compare runs of the same workload and load (see 'infermeter ls DIR')")
    return pairs, unpaired


# ---------------------------------------------------------------------- per-request samples
BLOCKS = 20  # per run: the bootstrap resamples blocks of consecutive requests (by send time)


@dataclass
class Samples:
    values: dict[str, np.ndarray]  # family -> ms values
    owners: dict[str, np.ndarray]  # family -> the request each value belongs to
    source: str  # "records" or "result arrays"
    runs: list["Samples"] = field(default_factory=list)  # each run's own samples (a pooled group's parts)
    blocks: dict[str, np.ndarray] = field(default_factory=dict)  # family -> the time block of each value

    def per_request(self, family: str) -> np.ndarray:
        """One value per request (ITL: the request's mean gap), for the rank test."""
        v = self.values.get(family)
        if v is None or family != "itl" or v.size == 0:
            return v if v is not None else np.empty(0)
        _, inv = np.unique(self.owners[family], return_inverse=True)
        return np.bincount(inv, weights=v) / np.bincount(inv)

    def request_blocks(self, family: str) -> np.ndarray:
        """The time block of each value of ``per_request(family)``."""
        b = self.blocks.get(family, np.empty(0, dtype=np.int64))
        if family != "itl" or b.size == 0:
            return b
        uniq, first = np.unique(self.owners[family], return_index=True)
        return b[first]


def run_samples(run: Run, blocks: int = BLOCKS) -> Samples:
    """Per-request samples in ms: the records file (measured requests, warm-up excluded) when it
    is there, else the result's vLLM arrays (TTFT and ITL only: they hold no per-request E2EL).
    Each value also gets its request's time block: the requests in send order cut into
    ``blocks`` runs of consecutive requests (requests close in time share the machine's state,
    so they are not independent evidence)."""
    im = run.result.get("infermeter") or {}
    rf = im.get("records_file")
    path = run.folder / Path(str(rf)).name if rf and run.folder is not None else None
    vals: dict[str, list[float]] = {f: [] for f in FAMILIES}
    owners: dict[str, list[int]] = {f: [] for f in FAMILIES}
    sent: dict[int, float] = {}
    if path is not None and path.is_file():
        from infermeter.storage.files import read_records

        for pos, r in enumerate(read_records(path)):
            if not r.ok or r.warmup:
                continue
            sent[pos] = r.sent if r.sent is not None else float(pos)
            for fam, v in (("ttft", r.ttft), ("tpot", r.tpot), ("e2el", r.e2el)):
                if v is not None:
                    vals[fam].append(v * 1e3)
                    owners[fam].append(pos)
            gaps = r.itls
            vals["itl"].extend(g * 1e3 for g in gaps)
            owners["itl"].extend([pos] * len(gaps))
        source = "records"
    else:
        ttfts, itls, errors = run.result.get("ttfts"), run.result.get("itls"), run.result.get("errors") or []
        if not isinstance(ttfts, list):
            return Samples({}, {}, "none")
        for pos, t in enumerate(ttfts):  # vLLM keeps the dataset's order: the send order
            if pos < len(errors) and errors[pos] or not isinstance(t, (int, float)):
                continue
            sent[pos] = float(pos)
            vals["ttft"].append(float(t) * 1e3)
            owners["ttft"].append(pos)
            gaps = itls[pos] if isinstance(itls, list) and pos < len(itls) and isinstance(itls[pos], list) else []
            vals["itl"].extend(float(g) * 1e3 for g in gaps)
            owners["itl"].extend([pos] * len(gaps))
        vals.pop("tpot"), vals.pop("e2el")
        source = "result arrays"
    order = sorted(sent, key=lambda p: (sent[p], p))
    block_of = {p: i * blocks // max(len(order), 1) for i, p in enumerate(order)}
    return Samples({f: np.asarray(v, dtype=float) for f, v in vals.items()},
                   {f: np.asarray(owners[f], dtype=np.int64) for f in vals}, source,
                   blocks={f: np.asarray([block_of[p] for p in owners[f]], dtype=np.int64) for f in vals})


def group_samples(group: Group, blocks: int = BLOCKS) -> Samples:
    """The repeats' samples pooled (requests and blocks kept apart per run)."""
    parts = [run_samples(r, blocks) for r in group.runs]
    fams = [f for f in FAMILIES if all(f in p.values for p in parts)]
    values, owners, blk = {}, {}, {}
    for f in fams:
        values[f] = np.concatenate([p.values[f] for p in parts])
        owners[f] = np.concatenate([p.owners[f] + i * (1 << 40) for i, p in enumerate(parts)])
        blk[f] = np.concatenate([p.blocks[f] + i * blocks for i, p in enumerate(parts)])
    sources = sorted({p.source for p in parts})
    return Samples(values, owners, "+".join(sources), parts, blk)


# ---------------------------------------------------------------------- provenance
def provenance_of(run: Run) -> dict[str, str]:
    """What ran, for the side-by-side provenance table: engine and version, its flags, GPU."""
    r = run.result
    im = r.get("infermeter") or {}
    target = im.get("target") or {}
    engine = target.get("embedded_engine") or {}
    prov = im.get("provenance") or {}
    gpu = _gpu_of(r)

    def text(v: Any) -> str:
        if v is None or v == "" or v == []:
            return "unknown"
        if isinstance(v, list):
            return " ".join(str(x) for x in v)
        return str(v)

    return {
        "backend": text(r.get("backend") or target.get("backend")),
        "model": text(r.get("model_id")),
        "engine": text(engine.get("engine") or target.get("backend")),
        "engine version": text(target.get("server_version") or engine.get("version")),
        "engine flags": text(engine.get("command") or _server_args(target)),
        "GPU": gpu,
        "infermeter": text(prov.get("infermeter_version")),
        "command": text(prov.get("command")),
        "host": text(prov.get("host")),
        "date": text(r.get("date")),
    }


def _server_args(target: dict[str, Any]) -> Any:
    info = target.get("server_info")
    return info.get("args") or info.get("cmdline") if isinstance(info, dict) else None


def _gpu_of(result: dict[str, Any]) -> str:
    tel = (result.get("infermeter") or {}).get("telemetry") or {}
    devices = ((tel.get("gpu") or {}).get("devices") if isinstance(tel, dict) else None) or {}
    names = sorted({str(d.get("name")) for d in devices.values() if isinstance(d, dict) and d.get("name")})
    if names:
        return f"{len(devices)}x {', '.join(names)}"
    for key in ("gpu", "GPU", "hardware"):
        if isinstance(result.get(key), str) and result[key]:
            return result[key]
    return "unknown"
