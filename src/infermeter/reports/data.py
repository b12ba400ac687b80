"""Loading experiment stores (and single result files) into report cells.

A *cell* here is one run result with its coordinates (target, workload, load mode and
value, repeat).  A *point* is the cells of one target at the same coordinates (the
repeats), reduced to mean and 95 % confidence interval per metric.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from infermeter.core.notices import message
from infermeter.errors import UserError
from infermeter.metrics.efficiency import FIGURES, figures_of

# metric key -> (label, unit, higher_is_better)
METRICS: dict[str, tuple[str, str, bool]] = {
    "output_throughput": ("output throughput", "tok/s", True),
    "total_token_throughput": ("total token throughput", "tok/s", True),
    "request_throughput": ("request throughput", "req/s", True),
    "sent_rate": ("requests sent per second", "req/s", True),
    "completion_rate": ("requests completed per second", "req/s", True),
    "completed": ("successful requests", "", True),
    "failed": ("failed requests", "", False),
    "error_rate": ("error rate", "%", False),
    "success_pct": ("successful requests", "% of sent", True),
    "mean_ttft_ms": ("mean TTFT", "ms", False),
    "median_ttft_ms": ("median TTFT", "ms", False),
    "p99_ttft_ms": ("p99 TTFT", "ms", False),
    "mean_tpot_ms": ("mean TPOT", "ms", False),
    "p99_tpot_ms": ("p99 TPOT", "ms", False),
    "mean_itl_ms": ("mean ITL", "ms", False),
    "p99_itl_ms": ("p99 ITL", "ms", False),
    "mean_e2el_ms": ("mean E2E latency", "ms", False),
    "p99_e2el_ms": ("p99 E2E latency", "ms", False),
    "duration": ("duration", "s", False),
    "output_tokens_per_request": ("output tokens per request", "tok", True),
    **FIGURES,  # per GPU, energy and cost: result["infermeter"]["efficiency"] (docs/cost.md)
}

LOAD_LABELS = {"burst": "requests sent at once (burst size)", "concurrency": "requests in flight (concurrency)",
               "rate": "offered rate (req/s)", "steps": "stepped rate (highest step, req/s)"}

# two-sided 95 % Student t critical values, df = 1..30 (beyond: the normal 1.96)
_T975 = [12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042]


def t_critical(df: int) -> float:
    if df < 1:
        return float("nan")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def mean_ci(values: Iterable[float | None]) -> tuple[float | None, float | None, int]:
    """(mean, half-width of the 95 % CI or None with fewer than 2 values, n)."""
    vals = [float(v) for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)
            and math.isfinite(v)]
    n = len(vals)
    if n == 0:
        return None, None, 0
    m = sum(vals) / n
    if n < 2:
        return m, None, n
    var = sum((v - m) ** 2 for v in vals) / (n - 1)
    return m, t_critical(n - 1) * math.sqrt(var / n), n


def _num(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


@dataclass
class Cell:
    cell_id: str
    target: str
    workload: str
    load_mode: str | None
    load_value: float | None
    repeat: int
    backend: str | None = None
    model: str | None = None
    dataset: str | None = None
    input_len: int | None = None
    output_len: int | None = None
    experiment: str = ""
    source: str = "infermeter"
    metrics: dict[str, float | None] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)  # unequal-work, client-bound, errors, stopped-early, imported
    error_messages: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    stopped_early: str | None = None
    # GPU MiB, when telemetry has them: "loaded" (the launched server, before any request), "ready"
    # (before this cell's traffic), "peak"
    memory_mib: dict[str, float] = field(default_factory=dict)
    # where the per-request records and the telemetry series lie (names inside ``folder``), when known
    folder: Path | None = None
    records_file: str | None = None
    telemetry_file: str | None = None

    @property
    def unequal_work(self) -> bool:
        return "unequal work" in self.flags


@dataclass
class Point:
    """One target's cells at the same coordinates (its repeats)."""

    target: str
    workload: str
    load_mode: str | None
    load_value: float | None
    input_len: int | None
    cells: list[Cell]

    def stat(self, key: str) -> tuple[float | None, float | None, int]:
        return mean_ci(c.metrics.get(key) for c in self.cells)

    def mean(self, key: str) -> float | None:
        return self.stat(key)[0]

    @property
    def flags(self) -> list[str]:
        out: list[str] = []
        for c in self.cells:
            out.extend(f for f in c.flags if f not in out)
        return out


# ---------------------------------------------------------------------- reading results
def metrics_of(result: dict[str, Any]) -> dict[str, float | None]:
    out: dict[str, float | None] = {k: _num(result.get(k)) for k in METRICS if k in result}
    rates = (result.get("infermeter") or {}).get("rates") or {}
    for k in ("sent_rate", "completion_rate"):
        out[k] = _num(rates.get(k))
    for k in METRICS:
        out.setdefault(k, _num(result.get(k)))
    completed, failed = out.get("completed"), out.get("failed")
    if failed is None and completed is not None:
        n = _num(result.get("num_prompts"))
        if n is not None and n >= completed:
            failed = n - completed
            out["failed"] = failed
    if completed is not None:
        total = completed + (failed or 0)
        out["error_rate"] = 100.0 * (failed or 0) / total if total else None
        out["success_pct"] = 100.0 * completed / total if total else None
    tot_out = _num(result.get("total_output_tokens"))
    out["output_tokens_per_request"] = tot_out / completed if tot_out is not None and completed else None
    out.update(figures_of(result))
    for key in unsupported_keys(result):
        if key in out:
            out[key] = None
    return out


def unsupported_keys(result: dict[str, Any]) -> list[str]:
    """Percentile keys the samples cannot support (a p99 of 40 requests is their maximum): those
    the run named (``infermeter.unsupported_percentiles``), else, for results that do not say
    (imported, older), the p99 of per-request metrics of fewer requests than a p99 needs."""
    from infermeter.metrics.stats import min_samples_for

    im = result.get("infermeter") or {}
    named = im.get("unsupported_percentiles")
    if isinstance(named, dict):
        return [f"p{p}_{m}_ms" for m, ps in named.items() if isinstance(ps, list) for p in ps]
    n = _num(result.get("completed"))
    if n is None or n >= min_samples_for(99):
        return []
    return [f"p99_{m}_ms" for m in ("ttft", "tpot", "e2el")]


def error_messages_of(result: dict[str, Any], limit: int = 5) -> list[str]:
    msgs: list[str] = []
    errs = result.get("errors")
    if isinstance(errs, list):
        for e in errs:
            if isinstance(e, str) and e.strip() and e.strip() not in msgs:
                msgs.append(e.strip()[:300])
                if len(msgs) >= limit:
                    break
    by_class = (result.get("infermeter") or {}).get("errors_by_class")
    if isinstance(by_class, dict) and by_class and not msgs:
        msgs = [f"{k}: {v}" for k, v in sorted(by_class.items())][:limit]
    return msgs


_MIB = {"mib": 1.0, "mb": 1.0, "gib": 1024.0, "gb": 1024.0, "bytes": 1 / 1048576, "b": 1 / 1048576}


def _sum_phases(gpus: dict[str, Any]) -> dict[str, float]:
    """MiB after load and at peak, summed over the GPUs that have each phase."""
    found: dict[str, float] = {}
    for phase in ("ready", "peak"):
        vals = [_num((g.get(phase) or {}).get("mem_used_bytes")) for g in gpus.values() if isinstance(g, dict)
                and isinstance(g.get(phase), dict)]
        vals = [v for v in vals if v is not None]
        if vals:
            found[phase] = sum(vals) / 1048576
    return found


def memory_of(result: dict[str, Any]) -> dict[str, float]:
    """GPU memory after load ('ready') and at peak, in MiB, from ``infermeter.telemetry.summary``
    (looked for defensively: the telemetry section may be absent or shaped differently)."""
    tel = (result.get("infermeter") or {}).get("telemetry")
    found: dict[str, float] = {}
    # what a run writes (docs/telemetry.md): telemetry.gpu.devices.<gpu>.{ready,peak}.mem_used_bytes
    devices = ((tel.get("gpu") or {}).get("devices") if isinstance(tel, dict) else None)
    if isinstance(devices, dict) and devices:
        summed = _sum_phases(devices)
        if summed:
            return summed
    summary = tel.get("summary") if isinstance(tel, dict) else None
    if not isinstance(summary, dict):
        return {}

    def unit_of(key: str) -> float | None:
        k = key.lower()
        for suffix, factor in _MIB.items():
            if k.endswith("_" + suffix):
                return factor
        return None

    # flat keys such as memory_ready_mib / memory_peak_mib / peak_memory_gib
    for key, v in summary.items():
        val, factor, k = _num(v), unit_of(str(key)), str(key).lower()
        if val is None or factor is None or "mem" not in k:
            continue
        if "ready" in k or "after_load" in k or "loaded" in k:
            found.setdefault("ready", val * factor)
        elif "peak" in k or "max" in k:
            found.setdefault("peak", val * factor)
    if found:
        return found
    # per-GPU entries: {gpus: {key: {ready: {mem_used_bytes}, peak: {mem_used_bytes}}}} (summed over GPUs)
    gpus = summary.get("gpus")
    if isinstance(gpus, dict):
        found.update(_sum_phases(gpus))
    return found


def loaded_memory(root: Path) -> dict[str, float]:
    """Per target, the GPU MiB its launched server held once loaded, before any request: the
    sweep's launch records (``servers/TARGET-EPOCH.json``); the largest when it started more than once."""
    out: dict[str, float] = {}
    for path in sorted((root / "servers").glob("*.json")):
        try:
            start = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(start, dict) or not isinstance(start.get("target"), str):
            continue
        devices = ((start.get("telemetry") or {}).get("gpu") or {}).get("devices")
        mib = _sum_phases(devices).get("ready") if isinstance(devices, dict) else None
        if mib is not None:
            out[start["target"]] = max(out.get(start["target"], 0.0), mib)
    return out


def flags_of(result: dict[str, Any], metrics: dict[str, float | None], source: str) -> list[str]:
    im = result.get("infermeter") or {}
    flags = []
    work = im.get("work") or {}
    if isinstance(work, dict) and work.get("exact") is False:
        flags.append("unequal work")
    client = im.get("client") or {}
    if isinstance(client, dict) and client.get("client_bound") is True:
        flags.append("client-bound")
    if (metrics.get("failed") or 0) > 0:
        flags.append("errors")
    if im.get("stopped_early"):
        flags.append("stopped early")
    if source != "infermeter" or im.get("imported"):
        flags.append("imported")
    return flags


def cell_from_result(result: dict[str, Any], definition: dict[str, Any] | None = None, *,
                     cell_id: str = "", experiment: str = "") -> Cell:
    d = definition or {}
    im = result.get("infermeter") or {}
    meta_target = result.get("experiment_target")
    load = im.get("load") or {}
    mode = d.get("load_mode") or load.get("mode")
    value = d.get("load_value")
    if value is None:
        value = _load_value(result, mode, load)
    settings_target = (d.get("settings") or {}).get("target") or {}
    source = d.get("source") or ("infermeter" if not im.get("imported") else "vllm-json")
    metrics = metrics_of(result)
    target = d.get("target") or meta_target or result.get("label") or result.get("backend") or "run"
    return Cell(
        cell_id=d.get("cell_id") or cell_id, target=str(target),
        workload=str(d.get("workload") or result.get("experiment_workload") or "default"),
        load_mode=mode, load_value=value, repeat=int(d.get("repeat") or 0),
        backend=result.get("backend") or settings_target.get("backend"),
        model=result.get("model_id") or settings_target.get("model"), dataset=d.get("dataset"),
        input_len=d.get("input_len"), output_len=d.get("output_len"), experiment=experiment, source=source,
        metrics=metrics, flags=flags_of(result, metrics, source), error_messages=error_messages_of(result),
        warnings=[message(w) for w in (im.get("warnings") or []) if w],  # notice dicts (older: strings)
        stopped_early=im.get("stopped_early") if isinstance(im.get("stopped_early"), str) else None,
        memory_mib=memory_of(result), records_file=_name(im.get("records_file")),
        telemetry_file=_name((im.get("telemetry") or {}).get("series_file")
                             if isinstance(im.get("telemetry"), dict) else None))


def _name(v: Any) -> str | None:
    return Path(v).name if isinstance(v, str) and v else None


def _load_value(result: dict[str, Any], mode: str | None, load: dict[str, Any]) -> float | None:
    for key in ("value", "burst", "concurrency", "rate", "request_rate"):
        v = _num(load.get(key))
        if v is not None:
            return v
    if mode == "concurrency":
        return _num(result.get("max_concurrency"))
    if mode == "rate":
        return _num(result.get("request_rate"))
    if mode == "burst":
        return _num(result.get("num_prompts"))
    return None


@dataclass
class Experiment:
    name: str
    root: Path
    cells: list[Cell]
    skipped: list[str]  # cells without a usable result (pending, failed)


def load_experiment(root: str | Path) -> Experiment:
    from infermeter.experiments.store import Store

    store = Store(root).require()
    meta = store.read_meta()
    name = str(meta.get("name") or Path(root).name)
    rows = store.rows()
    cells, skipped = [], []
    for row in rows:
        cid = row["cell_id"]
        result = store.read_result(cid) if row.get("status") == "done" else None
        if result is None:
            skipped.append(f"{cid} ({row.get('status')})")
            continue
        definition = store.read_cell(cid) or {}
        definition = {**{k: row.get(k) for k in ("cell_id", "target", "workload", "dataset", "input_len",
                                                 "output_len", "load_mode", "load_value", "repeat", "source")},
                      **{k: v for k, v in definition.items() if v is not None}}
        _add_rates(result, store.cell_dir(cid))
        cells.append(cell_from_result(result, definition, experiment=name))
        cells[-1].folder = store.cell_dir(cid)
    loaded = loaded_memory(Path(root))
    for c in cells:
        if c.target in loaded:
            c.memory_mib["loaded"] = loaded[c.target]
    return Experiment(name=name, root=Path(root), cells=cells, skipped=skipped)


def load_experiments(roots: list[str | Path]) -> list[Experiment]:
    exps = [load_experiment(r) for r in roots]
    # the same target name in two experiments is two series unless it is the same experiment
    owners: dict[str, set[str]] = {}
    for e in exps:
        for c in e.cells:
            owners.setdefault(c.target, set()).add(str(e.root.resolve()))
    clashing = {t for t, roots in owners.items() if len(roots) > 1 and _same_coords_clash(exps, t)}
    for e in exps:
        for c in e.cells:
            if c.target in clashing:
                c.target = f"{e.name}/{c.target}"
    return exps


def _same_coords_clash(exps: list[Experiment], target: str) -> bool:
    """True when two experiments hold cells of ``target`` at the same coordinates (then they are
    kept apart by experiment name); otherwise the experiments complement each other."""
    seen: dict[tuple, str] = {}
    for e in exps:
        for c in e.cells:
            if c.target != target:
                continue
            key = (c.workload, c.load_mode, c.load_value, c.repeat)
            if key in seen and seen[key] != str(e.root.resolve()):
                return True
            seen[key] = str(e.root.resolve())
    return False


def load_run(path: str | Path) -> Cell:
    """One run: a result JSON file, or a store's cell folder (holding result.json)."""
    p = Path(path)
    definition = None
    if p.is_dir():
        if not (p / "result.json").is_file():
            raise UserError(f"{str(p)!r} holds no result.json", "give a result JSON file or a cell folder")
        cell_json = p / "cell.json"
        if cell_json.is_file():
            try:
                definition = json.loads(cell_json.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                definition = None
        p = p / "result.json"
    if not p.is_file():
        raise UserError(f"{str(path)!r} is not a file or cell folder", "give a result JSON file or a cell folder")
    try:
        result = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise UserError(f"{str(path)!r} is not a result JSON file ({exc})", "give a run's result JSON") from None
    if not isinstance(result, dict):
        raise UserError(f"{str(path)!r} holds no result object", "give a run's result JSON")
    _add_rates(result, p.parent)
    cell = cell_from_result(result, definition, cell_id=p.parent.name if definition else p.stem)
    cell.folder = p.parent
    return cell


def _add_rates(result: dict[str, Any], folder: Path) -> None:
    """A result written before ``infermeter.rates`` existed: derive them from its records file."""
    im = result.get("infermeter")
    if not isinstance(im, dict) or im.get("rates") or not im.get("records_file"):
        return
    path = folder / Path(str(im["records_file"])).name
    if path.is_file():
        from infermeter.metrics.compute import achieved_rates
        from infermeter.storage.files import read_records

        try:
            im["rates"] = achieved_rates(read_records(path))
        except OSError:
            pass


# ---------------------------------------------------------------------- grouping
def targets_of(cells: Iterable[Cell]) -> list[str]:
    """Targets in first-seen order (the first is the baseline of ratio columns)."""
    out: list[str] = []
    for c in cells:
        if c.target not in out:
            out.append(c.target)
    return out


def points_of(cells: Iterable[Cell]) -> list[Point]:
    groups: dict[tuple, list[Cell]] = {}
    for c in cells:
        groups.setdefault((c.target, c.workload, c.load_mode, c.load_value), []).append(c)
    return [Point(target=k[0], workload=k[1], load_mode=k[2], load_value=k[3],
                  input_len=next((c.input_len for c in v if c.input_len is not None), None), cells=v)
            for k, v in groups.items()]


def single_prompt_workloads(cells: list[Cell]) -> set[str]:
    """Workloads whose every cell sends one request at a time (burst 1): the prompt-length study."""
    by_w: dict[str, list[Cell]] = {}
    for c in cells:
        by_w.setdefault(c.workload, []).append(c)
    return {w for w, cs in by_w.items()
            if all(c.load_mode == "burst" and c.load_value == 1 for c in cs) and cs[0].input_len is not None}


def fmt_load(mode: str | None, value: float | None) -> str:
    if mode is None:
        return "?"
    if value is None:
        return f"{mode} ?"
    v = int(value) if float(value).is_integer() else f"{value:g}"
    return f"{mode} {v}"
