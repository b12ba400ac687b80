"""Saved baselines: named copies of runs to compare later runs against (``compare --baseline NAME``).

::

    BASELINES/                 --store, else $INFERMETER_BASELINES, else ./.infermeter/baselines
      NAME/                    an experiment store (experiment.json kind "baseline", cells/<id>/...)
        baseline.json          name, when saved, from what, and the cells it holds

A baseline is an experiment store, so ``infermeter ls`` and ``infermeter report`` read it
too.  Each cell keeps its result.json, its records file (the per-request samples the
statistical comparison needs) and cell.json.  A save is written into a temporary folder
beside its place and renamed into place whole: a reader sees the old baseline or the new
one, never half of one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from infermeter.errors import UserError
from infermeter.experiments.store import Store
from infermeter.storage.files import write_json_atomic

ENV = "INFERMETER_BASELINES"
DEFAULT_ROOT = Path(".infermeter") / "baselines"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def root_of(store: str | Path | None = None) -> Path:
    if store:
        return Path(store)
    return Path(os.environ[ENV]) if os.environ.get(ENV) else DEFAULT_ROOT


def check_name(name: str) -> str:
    if not _NAME.match(name or ""):
        raise UserError(f"baseline name {name!r} is not allowed",
                        "use letters, digits, '.', '_' and '-' (up to 100, starting with a letter or digit)")
    return name


def names(store: str | Path | None = None) -> list[str]:
    root = root_of(store)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and (p / "baseline.json").is_file())


def path_of(name: str, store: str | Path | None = None) -> Path:
    """The folder of a saved baseline; a one-line error naming the saved ones when it is missing."""
    check_name(name)
    root = root_of(store)
    p = root / name
    if not (p / "baseline.json").is_file():
        have = names(store)
        raise UserError(f"no baseline {name!r} in {str(root)!r}" + (f" (saved: {', '.join(have)})" if have else ""),
                        f"save one first: infermeter baseline save {name} RESULT|DIR (or give --store / ${ENV})")
    return p


def info(name: str, store: str | Path | None = None) -> dict[str, Any]:
    return json.loads((path_of(name, store) / "baseline.json").read_text(encoding="utf-8"))


def _copy_cell(result_path: Path, dest: Path, definition: dict[str, Any]) -> None:
    """result.json, its records file and cell.json of one run into ``dest`` (a fresh folder)."""
    dest.mkdir(parents=True)
    result = json.loads(result_path.read_text(encoding="utf-8"))
    shutil.copyfile(result_path, dest / "result.json")
    rf = (result.get("infermeter") or {}).get("records_file") if isinstance(result, dict) else None
    if rf:
        rec = result_path.parent / Path(str(rf)).name
        if rec.is_file():
            shutil.copyfile(rec, dest / Path(str(rf)).name)
    write_json_atomic(dest / "cell.json", {**definition, "status": "done"})


def _sources(source: Path) -> list[tuple[Path | None, Path, dict[str, Any]]]:
    """(cell folder, result file, cell definition) of each run to save."""
    if source.is_file():
        cid = re.sub(r"[^A-Za-z0-9._-]", "_", source.stem) or "run"
        return [(None, source, {"cell_id": cid, "source": "infermeter"})]
    if source.is_dir() and (source / "result.json").is_file():
        cell = {}
        if (source / "cell.json").is_file():
            try:
                cell = json.loads((source / "cell.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                cell = {}
        return [(source, source / "result.json", {**cell, "cell_id": cell.get("cell_id") or source.name})]
    if source.is_dir():
        store = Store(source).require()
        out = []
        for row in store.rows():
            cid = row["cell_id"]
            if row.get("status") == "done" and (store.cell_dir(cid) / "result.json").is_file():
                out.append((store.cell_dir(cid), store.cell_dir(cid) / "result.json",
                            {**row_definition(row), **(store.read_cell(cid) or {})}))
        if not out:
            raise UserError(f"{str(source)!r} holds no finished cell", "run the sweep first ('infermeter ls DIR')")
        return out
    raise UserError(f"{str(source)!r} is not a result file, cell folder or experiment folder",
                    "give a run's result JSON, a cell folder (cells/<id>) or an experiment folder")


def row_definition(row: dict[str, Any]) -> dict[str, Any]:
    keys = ("cell_id", "target", "workload", "dataset", "input_len", "output_len", "load_mode", "load_value",
            "repeat", "source")
    return {k: row.get(k) for k in keys if row.get(k) is not None}


def save(name: str, source: str | Path, store: str | Path | None = None, *, force: bool = False) -> dict[str, Any]:
    """Copy the runs of ``source`` (a result file, a cell folder or an experiment folder) into
    the baseline ``name``; an existing one is replaced only with ``force``."""
    check_name(name)
    src = Path(source)
    runs = _sources(src)
    for _, result_path, _ in runs:
        try:
            data = json.loads(result_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise UserError(f"{str(result_path)!r} is not a readable result JSON ({exc})",
                            "give a run's result JSON") from None
        if not isinstance(data, dict):
            raise UserError(f"{str(result_path)!r} holds no result object", "give a run's result JSON")
    root = root_of(store)
    dest = root / name
    if dest.exists() and not force:
        raise UserError(f"baseline {name!r} exists in {str(root)!r}", "pass --force to replace it, or choose a new name")
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=root))
    try:
        cells = []
        for _, result_path, definition in runs:
            cid = definition["cell_id"]
            _copy_cell(result_path, tmp / "cells" / cid, definition)
            cells.append(cid)
        st = Store(tmp)
        st.write_meta(name, "baseline", description=f"baseline saved from {src}")
        meta = {"name": name, "saved": time.time(), "saved_iso": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "source": str(src.resolve()), "cells": cells}
        write_json_atomic(tmp / "baseline.json", meta)
        st.rebuild_index()
        old = None
        if dest.exists():
            old = root / f".{name}.old-{os.getpid()}-{int(time.time() * 1000)}"
            os.replace(dest, old)
        os.replace(tmp, dest)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return meta


def remove(name: str, store: str | Path | None = None) -> None:
    p = path_of(name, store)
    gone = p.with_name(f".{name}.rm-{os.getpid()}")
    os.replace(p, gone)
    shutil.rmtree(gone, ignore_errors=True)
