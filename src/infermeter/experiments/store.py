"""The results store: one folder per experiment.

::

    DIR/
      experiment.json        name, kind (sweep | imported), created, store schema version
      spec.yaml              the spec as run (resolved; credentials in headers and URLs redacted)
      plan.json              every planned cell, in run order (pending ones included)
      sweeps.jsonl           one line per sweep run here: wall and measured time, efficiency
      index.sqlite           derived index (tables experiment, cells, schema_version)
      cells/<cell_id>/
        cell.json            the cell's definition, status, start/finish times, attempt
        result.json          the run result (docs/results.md), written atomically at the end
        result.records.jsonl one line per finished request, appended as requests finish
        server.log           the part of the embedded server's log written during the cell
        .partial-<n>/        files of an attempt that was killed or interrupted, set aside

The JSON files are the source of truth: ``rebuild_index`` recreates index.sqlite
from them alone.  A cell counts as done only when cell.json says so *and* its
result.json exists (result.json is renamed into place whole, so it is complete or
absent).  A sweep holds an exclusive lock on ``DIR/.lock`` while it runs.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from infermeter.errors import UserError
from infermeter.metrics.efficiency import FIGURES, figures_of
from infermeter.storage.files import write_json_atomic

STORE_SCHEMA_VERSION = 1
STATUSES = ("pending", "running", "done", "failed")
METRICS = ("ttft", "tpot", "itl", "e2el")
STATS = ("mean", "median", "p99")

# The cells table: (column, SQL type).  Headline metrics use the result JSON's key names.
CELL_COLUMNS: list[tuple[str, str]] = [
    ("cell_id", "TEXT PRIMARY KEY"), ("seq", "INTEGER"), ("target", "TEXT"), ("backend", "TEXT"),
    ("model", "TEXT"), ("workload", "TEXT"), ("dataset", "TEXT"), ("input_len", "INTEGER"),
    ("output_len", "INTEGER"), ("load_mode", "TEXT"), ("load_value", "REAL"), ("num_prompts", "INTEGER"),
    ("repeat", "INTEGER"), ("status", "TEXT"), ("attempt", "INTEGER"), ("started", "REAL"),
    ("finished", "REAL"), ("result_path", "TEXT"), ("records_path", "TEXT"), ("source", "TEXT"),
    ("source_file", "TEXT"), ("error", "TEXT"), ("stopped_early", "TEXT"), ("fingerprint", "TEXT"),
    ("completed", "INTEGER"), ("failed", "INTEGER"), ("duration", "REAL"), ("total_input_tokens", "INTEGER"),
    ("total_output_tokens", "INTEGER"), ("request_throughput", "REAL"), ("output_throughput", "REAL"),
    ("total_token_throughput", "REAL"),
    *[(f"{s}_{m}_ms", "REAL") for m in METRICS for s in STATS],
    ("work_exact", "INTEGER"), ("client_bound", "INTEGER"), ("warnings", "INTEGER"),
    *[(k, "REAL") for k in FIGURES],  # per GPU, energy and cost (metrics/efficiency.py; None: n/a)
]
CELL_COLUMN_NAMES = [c for c, _ in CELL_COLUMNS]
EXPERIMENT_COLUMNS = ["name", "kind", "description", "output_dir", "created", "updated", "infermeter_version",
                      "store_schema_version"]


def _now() -> float:
    return time.time()


def read_json(path: Path) -> Any:
    with open(path, "rb") as fh:
        return json.loads(fh.read())


class Store:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.cells_dir = self.root / "cells"
        self.index_path = self.root / "index.sqlite"
        self.spec_path = self.root / "spec.yaml"
        self.plan_path = self.root / "plan.json"
        self.meta_path = self.root / "experiment.json"

    # ------------------------------------------------------------------ basics
    def exists(self) -> bool:
        return self.meta_path.exists() or self.plan_path.exists() or self.cells_dir.exists()

    def require(self) -> "Store":
        if not self.root.is_dir():
            raise UserError(f"{str(self.root)!r} is not a folder", "give an experiment folder (a sweep's output_dir)")
        if not self.exists():
            raise UserError(f"{str(self.root)!r} holds no experiment (no experiment.json, plan.json or cells/)",
                            "give the output_dir of a sweep or an 'infermeter import --into' folder")
        return self

    def cell_dir(self, cell_id: str) -> Path:
        return self.cells_dir / cell_id

    def rel(self, path: Path | None) -> str | None:
        if path is None:
            return None
        try:
            return str(Path(path).resolve().relative_to(self.root.resolve()))
        except ValueError:
            return str(path)

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Exclusive for the sweep's lifetime: a second sweep on the same folder is refused."""
        self.root.mkdir(parents=True, exist_ok=True)
        fh = open(self.root / ".lock", "a+b")
        try:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise UserError(f"another infermeter process is writing to {str(self.root)!r}",
                                "wait for it to finish (or stop it), then run again") from None
            yield
        finally:
            fh.close()

    def is_locked(self) -> bool:
        path = self.root / ".lock"
        if not path.exists():
            return False
        with open(path, "a+b") as fh:
            try:
                fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
            return False

    # ------------------------------------------------------------------ experiment-level files
    def read_meta(self) -> dict[str, Any]:
        if self.meta_path.exists():
            try:
                return read_json(self.meta_path)
            except (OSError, ValueError):
                pass
        return {"name": self.root.name, "kind": "unknown"}

    def write_meta(self, name: str, kind: str, description: str = "") -> dict[str, Any]:
        from infermeter import __version__

        meta = self.read_meta() if self.meta_path.exists() else {}
        now = _now()
        meta.update({"name": meta.get("name") or name, "kind": meta.get("kind") or kind,
                     "description": description or meta.get("description", ""),
                     "created": meta.get("created") or now, "updated": now,
                     "infermeter_version": __version__, "store_schema_version": STORE_SCHEMA_VERSION})
        if meta["kind"] != kind and kind not in meta["kind"].split("+"):
            meta["kind"] = f"{meta['kind']}+{kind}"
        write_json_atomic(self.meta_path, meta)
        return meta

    def write_spec(self, resolved: dict[str, Any]) -> None:
        import yaml

        text = "# The experiment spec as run (defaults filled in; credentials in headers and URLs redacted).\n"
        text += yaml.safe_dump(resolved, sort_keys=False, allow_unicode=True)
        _write_text_atomic(self.spec_path, text)

    def read_plan(self) -> list[dict[str, Any]]:
        if not self.plan_path.exists():
            return []
        try:
            data = read_json(self.plan_path)
        except (OSError, ValueError):
            return []
        return list(data.get("cells", [])) if isinstance(data, dict) else []

    def write_plan(self, definitions: list[dict[str, Any]]) -> None:
        """The cells the spec plans, in run order.  Cells of an earlier, different plan that ran
        keep their folders (and so their rows in the index); unrun ones are no longer listed."""
        write_json_atomic(self.plan_path, {"store_schema_version": STORE_SCHEMA_VERSION, "cells": definitions})

    def record_sweep(self, summary: dict[str, Any]) -> None:
        """Append one sweep's summary (cells run, wall / measured seconds, efficiency) to sweeps.jsonl."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "sweeps.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps({"finished": _now(), **summary}, sort_keys=True) + "\n")

    def sweeps(self) -> list[dict[str, Any]]:
        """The summaries of the sweeps run here, oldest first."""
        try:
            lines = (self.root / "sweeps.jsonl").read_text(encoding="utf-8").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    # ------------------------------------------------------------------ cell files
    def read_cell(self, cell_id: str) -> dict[str, Any] | None:
        path = self.cell_dir(cell_id) / "cell.json"
        try:
            return read_json(path)
        except (OSError, ValueError):
            return None

    def read_result(self, cell_id: str) -> dict[str, Any] | None:
        path = self.cell_dir(cell_id) / "result.json"
        try:
            return read_json(path)
        except (OSError, ValueError):
            return None

    def file_state(self, cell_id: str) -> str:
        """What the files say: absent, done, failed, or partial (started, never finished)."""
        d = self.cell_dir(cell_id)
        if not d.is_dir() or not any(p for p in d.iterdir() if not p.name.startswith(".partial-")):
            return "absent"
        cell = self.read_cell(cell_id) or {}
        result = self.read_result(cell_id)
        if result is not None and not _interrupted(result):
            return "done"
        if cell.get("status") == "failed" and result is None:
            return "failed"
        return "partial"

    def set_aside(self, cell_id: str) -> Path | None:
        """Move the cell's files (not earlier set-aside attempts) into ``.partial-<n>/``."""
        d = self.cell_dir(cell_id)
        if not d.is_dir():
            return None
        entries = [p for p in d.iterdir() if not p.name.startswith(".partial-")]
        if not entries:
            return None
        taken = [int(p.name.split("-", 1)[1]) for p in d.glob(".partial-*") if p.name.split("-", 1)[1].isdigit()]
        dest = d / f".partial-{max(taken, default=0) + 1}"
        dest.mkdir()
        for p in entries:
            os.replace(p, dest / p.name)
        _fsync_dir(d)
        return dest

    def attempts(self, cell_id: str) -> int:
        return len(list(self.cell_dir(cell_id).glob(".partial-*")))

    def begin_cell(self, definition: dict[str, Any]) -> dict[str, Any]:
        cid = definition["cell_id"]
        record = {**definition, "status": "running", "started": _now(), "finished": None,
                  "attempt": self.attempts(cid) + 1, "error": None, "source": "infermeter"}
        write_json_atomic(self.cell_dir(cid) / "cell.json", record)
        self.upsert(row_from_files(self, record, None))
        return record

    def finish_cell(self, record: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        record = {**record, "status": "done", "finished": _now()}
        write_json_atomic(self.cell_dir(record["cell_id"]) / "cell.json", record)
        row = row_from_files(self, record, result)
        self.upsert(row)
        return row

    def fail_cell(self, record: dict[str, Any], error: str) -> dict[str, Any]:
        record = {**record, "status": "failed", "finished": _now(), "error": error}
        write_json_atomic(self.cell_dir(record["cell_id"]) / "cell.json", record)
        row = row_from_files(self, record, None)
        self.upsert(row)
        return row

    def mark_pending(self, definition: dict[str, Any], note: str | None = None) -> None:
        row = row_from_definition(definition)
        row["error"] = note
        self.upsert(row)

    # ------------------------------------------------------------------ index
    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.index_path, timeout=30)
        conn.row_factory = sqlite3.Row
        return conn

    def upsert(self, row: dict[str, Any]) -> None:
        if not self.index_path.exists():
            self.rebuild_index()
        with contextlib.closing(self.connect()) as conn, conn:
            _upsert(conn, row)
            conn.execute("UPDATE experiment SET updated = ?", (_now(),))

    def index_ok(self) -> bool:
        if not self.index_path.exists():
            return False
        try:
            with contextlib.closing(self.connect()) as conn:
                v = conn.execute("SELECT version FROM schema_version").fetchone()
                cols = {r[1] for r in conn.execute("PRAGMA table_info(cells)")}
            return bool(v) and v[0] == STORE_SCHEMA_VERSION and set(CELL_COLUMN_NAMES) <= cols
        except sqlite3.Error:
            return False

    def rows(self, *, rebuild_if_needed: bool = True) -> list[dict[str, Any]]:
        if rebuild_if_needed and not self.index_ok():
            self.rebuild_index()
        with contextlib.closing(self.connect()) as conn:
            return [dict(r) for r in conn.execute("SELECT * FROM cells ORDER BY seq, cell_id")]

    def experiment_row(self) -> dict[str, Any]:
        if not self.index_ok():
            self.rebuild_index()
        with contextlib.closing(self.connect()) as conn:
            r = conn.execute("SELECT * FROM experiment").fetchone()
            return dict(r) if r else {}

    def rebuild_index(self) -> int:
        """Recreate index.sqlite from plan.json and cells/*/ (written beside, then renamed over)."""
        self.root.mkdir(parents=True, exist_ok=True)
        rows: dict[str, dict[str, Any]] = {}
        for d in self.read_plan():
            rows[d["cell_id"]] = row_from_definition(d)
        next_seq = max((r["seq"] or 0 for r in rows.values()), default=0)
        if self.cells_dir.is_dir():
            for d in sorted(self.cells_dir.iterdir()):
                if not d.is_dir() or d.name.startswith("."):
                    continue
                cell = self.read_cell(d.name)
                if cell is None:
                    continue
                state = self.file_state(d.name)
                result = self.read_result(d.name) if state == "done" else None
                record = dict(cell)
                if state == "done":
                    record["status"] = "done"
                elif state == "partial":
                    record["status"] = "running" if cell.get("status") == "running" else "pending"
                if d.name in rows:
                    record["seq"] = rows[d.name]["seq"]
                elif not record.get("seq"):
                    next_seq += 1
                    record["seq"] = next_seq
                rows[d.name] = row_from_files(self, record, result)
        fd, tmp = tempfile.mkstemp(prefix=".index.", suffix=".sqlite.tmp", dir=self.root)
        os.close(fd)
        try:
            conn = sqlite3.connect(tmp)
            with contextlib.closing(conn), conn:
                _create_tables(conn)
                meta = self.read_meta()
                conn.execute(f"INSERT INTO experiment ({', '.join(EXPERIMENT_COLUMNS)}) VALUES "
                             f"({', '.join('?' for _ in EXPERIMENT_COLUMNS)})",
                             (meta.get("name"), meta.get("kind"), meta.get("description", ""),
                              str(self.root.resolve()), meta.get("created"), meta.get("updated"),
                              meta.get("infermeter_version"), STORE_SCHEMA_VERSION))
                for row in rows.values():
                    _upsert(conn, row)
            os.replace(tmp, self.index_path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        return len(rows)


def _interrupted(result: dict[str, Any]) -> bool:
    stopped = ((result.get("infermeter") or {}).get("stopped_early") or "")
    return stopped.startswith(("interrupted", "terminated"))


def _create_tables(conn: sqlite3.Connection) -> None:
    conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
    conn.execute("DELETE FROM schema_version")
    conn.execute("INSERT INTO schema_version (version) VALUES (?)", (STORE_SCHEMA_VERSION,))
    conn.execute("CREATE TABLE IF NOT EXISTS experiment (name TEXT, kind TEXT, description TEXT, output_dir TEXT, "
                 "created REAL, updated REAL, infermeter_version TEXT, store_schema_version INTEGER)")
    cols = ", ".join(f'"{c}" {t}' for c, t in CELL_COLUMNS)
    conn.execute(f"CREATE TABLE IF NOT EXISTS cells ({cols})")
    conn.execute("CREATE INDEX IF NOT EXISTS cells_by_target ON cells (target, workload, load_mode, load_value)")


def _upsert(conn: sqlite3.Connection, row: dict[str, Any]) -> None:
    cols = CELL_COLUMN_NAMES
    values = [_sql_value(row.get(c)) for c in cols]
    quoted = ", ".join(f'"{c}"' for c in cols)
    conn.execute(f"INSERT OR REPLACE INTO cells ({quoted}) VALUES ({', '.join('?' for _ in cols)})", values)


def _sql_value(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    if isinstance(v, (dict, list)):
        return json.dumps(v)
    return v


def row_from_definition(d: dict[str, Any]) -> dict[str, Any]:
    t = (d.get("settings") or {}).get("target") or {}
    return {
        "cell_id": d["cell_id"], "seq": d.get("seq"), "target": d.get("target"), "backend": t.get("backend"),
        "model": t.get("model") or (t.get("engine") or {}).get("model"), "workload": d.get("workload"),
        "dataset": d.get("dataset"), "input_len": d.get("input_len"), "output_len": d.get("output_len"),
        "load_mode": d.get("load_mode"), "load_value": d.get("load_value"), "num_prompts": d.get("num_prompts"),
        "repeat": d.get("repeat"), "status": "pending", "fingerprint": d.get("fingerprint"),
        "source": d.get("source", "infermeter"),
    }


def row_from_files(store: Store, record: dict[str, Any], result: dict[str, Any] | None) -> dict[str, Any]:
    row = row_from_definition(record)
    row.update(status=record.get("status", "pending"), attempt=record.get("attempt"),
               started=record.get("started"), finished=record.get("finished"), error=record.get("error"),
               source=record.get("source", "infermeter"), source_file=record.get("source_file"))
    if result is not None:
        row.update(headline(result))
        cid = record["cell_id"]
        row["result_path"] = store.rel(store.cell_dir(cid) / "result.json")
        rec_name = (result.get("infermeter") or {}).get("records_file")
        if rec_name and (store.cell_dir(cid) / rec_name).exists():
            row["records_path"] = store.rel(store.cell_dir(cid) / rec_name)
        row["backend"] = result.get("backend") or row["backend"]
        row["model"] = result.get("model_id") or row["model"]
    return row


def headline(result: dict[str, Any]) -> dict[str, Any]:
    """The index's metric columns from a result JSON (ours or an imported vLLM one)."""
    im = result.get("infermeter") or {}
    out: dict[str, Any] = {}
    for key in ("completed", "failed", "duration", "total_input_tokens", "total_output_tokens",
                "request_throughput", "output_throughput", "total_token_throughput"):
        out[key] = _number(result.get(key))
    for m in METRICS:
        for s in STATS:
            out[f"{s}_{m}_ms"] = _number(result.get(f"{s}_{m}_ms"))
    work = im.get("work") or {}
    out["work_exact"] = work.get("exact") if isinstance(work.get("exact"), bool) else None
    client = im.get("client") or {}
    out["client_bound"] = client.get("client_bound") if isinstance(client.get("client_bound"), bool) else None
    out["stopped_early"] = im.get("stopped_early")
    out["warnings"] = len(im.get("warnings") or [])
    out.update(figures_of(result))
    return out


def _number(v: Any) -> Any:
    if isinstance(v, bool):
        return None
    if isinstance(v, (int, float)):
        return v
    return None


def _write_text_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def copy_file(src: Path, dest: Path, offset: int = 0) -> None:
    """Copy ``src`` from byte ``offset`` (a server log's slice written during one cell)."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(src, "rb") as fin, open(dest, "wb") as fout:
        fin.seek(offset)
        shutil.copyfileobj(fin, fout)
