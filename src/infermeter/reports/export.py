"""``infermeter export``: every request of a run or an experiment as one table.

One row per request (warm-up requests included, marked by ``warmup``), every
cell of an experiment, each row with its cell's ``cell_id``, ``target``,
``workload`` and load columns.  The types are fixed (``COLUMNS``), so a
column that no request filled (``error`` in a clean run) is still text, and
every export of every run has the same columns: Parquet (needs pyarrow, the
``parquet`` extra) or CSV (empty fields for no value).

The token arrival times stay in the ``.records.jsonl`` files.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import orjson

from infermeter.core.records import RequestRecord
from infermeter.errors import UserError
from infermeter.storage.files import read_records

FORMATS = ("parquet", "csv")

# (column, type): str | int | float | bool.  Cell columns first, then the request's.
CELL_COLUMNS: list[tuple[str, str]] = [
    ("cell_id", "str"), ("target", "str"), ("backend", "str"), ("model", "str"), ("workload", "str"),
    ("dataset", "str"), ("load_mode", "str"), ("load_value", "float"), ("load", "str"), ("repeat", "int"),
    ("cell_status", "str"),
]
REQUEST_COLUMNS: list[tuple[str, str]] = [
    ("index", "int"), ("warmup", "bool"), ("ok", "bool"), ("status", "int"), ("error", "str"),
    ("error_detail", "str"), ("retry_after", "str"), ("finish_reason", "str"),
    ("input_len", "int"), ("requested_output_len", "int"), ("output_tokens", "int"),
    ("output_tokens_server", "int"), ("prompt_tokens_server", "int"), ("output_tokens_client", "int"),
    ("output_events", "int"), ("ttft_ms", "float"), ("tpot_ms", "float"), ("e2el_ms", "float"),
    ("itl_mean_ms", "float"), ("itl_max_ms", "float"), ("scheduled", "float"), ("queued", "float"),
    ("sent", "float"), ("headers", "float"), ("first_token", "float"), ("end", "float"), ("anomalies", "str"),
]
COLUMNS = CELL_COLUMNS + REQUEST_COLUMNS
TEXT_COLUMNS = {name for name, kind in COLUMNS if kind == "str"}


@dataclass
class Source:
    """One run's records and the cell columns its rows carry."""

    records: Path
    cell: dict[str, Any]


def _load_columns(load: dict) -> tuple[str, float | None]:
    mode = str(load.get("mode") or "")
    if mode == "concurrency":
        value = load.get("max_concurrency")
    elif mode == "rate":
        value = load.get("request_rate")
    else:
        value = load.get("num_requests")
    try:
        return mode, float(value) if value is not None else None
    except (TypeError, ValueError):  # "inf"
        return mode, math.inf


def run_source(result_path: Path) -> Source:
    """A run's result JSON (or its .records.jsonl): the records and what the result says of them."""
    result_path = Path(result_path)
    if result_path.name.endswith(".records.jsonl"):
        records = result_path
        result_path = result_path.with_name(result_path.name[: -len(".records.jsonl")] + ".json")
        result = _read_result(result_path) if result_path.is_file() else {}
    else:
        result = _read_result(result_path)
        name = (result.get("infermeter") or {}).get("records_file")
        if not name:
            raise UserError(f"{str(result_path)!r} names no per-request records file",
                            "export a result written by infermeter run (it keeps a .records.jsonl beside it)")
        records = result_path.with_name(Path(str(name)).name)
    if not records.is_file():
        raise UserError(f"the per-request records {str(records)!r} are missing",
                        "keep the .records.jsonl file next to its result JSON")
    im = result.get("infermeter") or {}
    target = im.get("target") or {}
    mode, value = _load_columns(im.get("load") or {})
    workload = im.get("workload") or {}
    cell = {"cell_id": im.get("cell_id") or "", "target": target.get("name") or result.get("label")
            or result.get("backend") or "", "backend": result.get("backend") or "",
            "model": result.get("model_id") or "", "workload": workload.get("dataset_name") or "",
            "dataset": workload.get("dataset_name") or "", "load_mode": mode, "load_value": value,
            "load": (im.get("load") or {}).get("description") or "", "repeat": None, "cell_status": ""}
    return Source(records, cell)


def _read_result(path: Path) -> dict:
    try:
        data = orjson.loads(Path(path).read_bytes())
    except OSError as exc:
        raise UserError(f"cannot read {str(path)!r}: {exc.strerror or exc}",
                        "give a run's result JSON or an experiment folder") from None
    except orjson.JSONDecodeError:
        raise UserError(f"{str(path)!r} is not JSON", "give a run's result JSON or an experiment folder") from None
    if not isinstance(data, dict):
        raise UserError(f"{str(path)!r} is not a result JSON", "give a run's result JSON or an experiment folder")
    return data


def experiment_sources(folder: Path) -> tuple[list[Source], list[str]]:
    """Every cell of an experiment that has per-request records; and a note for each that has none."""
    from infermeter.experiments.store import Store

    store = Store(folder).require()
    sources, skipped = [], []
    for row in store.rows():
        rel = row.get("records_path")
        path = store.root / rel if rel else None
        if path is None or not path.is_file():
            if row["status"] in ("done", "failed"):
                skipped.append(f"{row['cell_id']}: no per-request records"
                               + (" (imported)" if row.get("source") else ""))
            continue
        desc = row.get("load_mode") or ""
        if row.get("load_value") is not None:
            desc = f"{desc} {row['load_value']:g}"
        sources.append(Source(path, {
            "cell_id": row["cell_id"], "target": row.get("target") or "", "backend": row.get("backend") or "",
            "model": row.get("model") or "", "workload": row.get("workload") or "",
            "dataset": row.get("dataset") or "", "load_mode": row.get("load_mode") or "",
            "load_value": row.get("load_value"), "load": desc, "repeat": row.get("repeat"),
            "cell_status": row.get("status") or ""}))
    return sources, skipped


def sources_for(path: str | Path) -> tuple[list[Source], list[str]]:
    p = Path(path)
    if p.is_dir():
        return experiment_sources(p)
    if not p.exists():
        raise UserError(f"{str(p)!r} does not exist", "give a run's result JSON or an experiment folder")
    return [run_source(p)], []


def request_row(rec: RequestRecord) -> dict[str, Any]:
    itls = rec.itls
    row = {name: getattr(rec, name) for name, _ in REQUEST_COLUMNS
           if name not in ("output_tokens", "ttft_ms", "tpot_ms", "e2el_ms", "itl_mean_ms", "itl_max_ms", "anomalies")}
    ms = lambda s: None if s is None else s * 1e3  # noqa: E731
    row.update(output_tokens=rec.output_tokens, ttft_ms=ms(rec.ttft), tpot_ms=ms(rec.tpot), e2el_ms=ms(rec.e2el),
               itl_mean_ms=ms(sum(itls) / len(itls)) if itls else None, itl_max_ms=ms(max(itls)) if itls else None,
               anomalies="; ".join(rec.anomalies))
    return row


def rows(sources: list[Source]) -> Iterator[dict[str, Any]]:
    for src in sources:
        for rec in read_records(src.records):
            row = dict(src.cell)
            row.update(request_row(rec))
            yield row


def _clean(row: dict[str, Any]) -> dict[str, Any]:
    """Text columns never null ("" instead); numbers that are not finite become null."""
    out = {}
    for name, kind in COLUMNS:
        v = row.get(name)
        if kind == "str":
            v = "" if v is None else str(v)
        elif kind == "float" and v is not None and not math.isfinite(float(v)):
            v = None
        out[name] = v
    return out


def write_csv(out: Path, table: Iterator[dict[str, Any]]) -> int:
    n = 0
    with open(out, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=[c for c, _ in COLUMNS])
        writer.writeheader()
        for row in table:
            writer.writerow({k: ("" if v is None else v) for k, v in _clean(row).items()})
            n += 1
    return n


def write_parquet(out: Path, table: Iterator[dict[str, Any]]) -> int:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise UserError("Parquet export needs pyarrow, which is not installed",
                        "pip install 'infermeter[parquet]', or use --format csv") from None
    types = {"str": pa.string(), "int": pa.int64(), "float": pa.float64(), "bool": pa.bool_()}
    schema = pa.schema([(name, types[kind]) for name, kind in COLUMNS])
    data = [_clean(r) for r in table]
    pq.write_table(pa.Table.from_pylist(data, schema=schema), out)
    return len(data)


def export(path: str | Path, fmt: str, out: str | Path) -> tuple[int, int, list[str]]:
    """Write ``path``'s requests to ``out``; returns (rows, runs, skipped-cell notes)."""
    if fmt not in FORMATS:
        raise UserError(f"--format {fmt!r} is not one of {', '.join(FORMATS)}", "pass --format parquet or --format csv")
    sources, skipped = sources_for(path)
    if not sources:
        raise UserError(f"{str(path)!r} has no run with per-request records",
                        "run the sweep first; imported results carry no per-request records")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    n = (write_parquet if fmt == "parquet" else write_csv)(out, rows(sources))
    return n, len(sources), skipped
