"""Import results of ``vllm bench serve`` / ``benchmark_serving.py`` into an experiment store.

Two inputs, told apart by their first character:

* result JSON files (``--save-result``; ``--append-result`` puts several objects in one
  file, one after another): the object is kept as the cell's result.json, with an
  ``infermeter.imported`` section added;
* console output holding one or more ``===== Serving Benchmark Result =====`` blocks
  (any log): each complete block becomes a cell.  Lines printed before a block by
  vLLM (``Namespace(...)``, ``Traffic request rate:``, ``Burstiness factor:``,
  ``Maximum request concurrency:``) say what the load was.

Nothing is guessed: a line inside a block that is not one of vLLM's known lines, a
value that is not a number, a block without its closing ``=====`` line or without
``Successful requests:`` and ``Benchmark duration (s):`` is reported as
``FILE:LINE: what was not understood``; incomplete blocks are not imported.
The labels are those vLLM prints (vllm/benchmarks/serve.py and the older
benchmarks/benchmark_serving.py), matched without regard to case.
"""


from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from infermeter.errors import UserError
from infermeter.experiments.import_log import _REQUIRED, ImportedRun, Problem, parse_vllm_log
from infermeter.experiments.store import Store
from infermeter.storage.files import write_json_atomic

__all__ = ["ImportedRun", "Problem", "import_vllm", "load_of", "parse_vllm_file", "parse_vllm_json", "parse_vllm_log"]

IMPORT_SCHEMA_VERSION = 1


# ----------------------------------------------------------------------------- JSON results

_JSON_NUMERIC = {"duration", "completed", "failed", "total_input_tokens", "total_output_tokens",
                 "request_throughput", "request_goodput", "output_throughput", "total_token_throughput",
                 "input_throughput", "max_output_tokens_per_s", "max_concurrent_requests", "rtfx", "num_prompts",
                 "burstiness", "input_sequence_throughput", "total_input_sequences"}
_JSON_KNOWN = {"date", "endpoint_type", "backend", "label", "model_id", "tokenizer_id", "num_prompts",
               "request_rate", "burstiness", "max_concurrency", "ramp_up_strategy", "ramp_up_start_rps",
               "ramp_up_end_rps", "input_lens", "output_lens", "ttfts", "itls", "latencies", "start_times",
               "queue_times", "generated_texts", "errors", "rps_change_events", "infermeter",
               *_JSON_NUMERIC}
_JSON_METRIC = re.compile(r"^(mean|median|std|p\d+(?:\.\d+)?)_[a-z0-9_]+_ms$")
_JSON_PREFIXES = ("spec_decode_", "probe_", "diffusion_")


def parse_vllm_json(text: str, file: str) -> tuple[list[ImportedRun], list[Problem]]:
    runs: list[ImportedRun] = []
    problems: list[Problem] = []
    decoder = json.JSONDecoder()
    pos = 0
    k = 0
    while True:
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos >= len(text):
            break
        line = text.count("\n", 0, pos) + 1
        try:
            obj, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            problems.append(Problem(file, exc.lineno, f"not valid JSON ({exc.msg}); the rest of the file is "
                                                      "not imported"))
            break
        k += 1
        chunk = text[pos:end]
        pos = end
        if not isinstance(obj, dict):
            problems.append(Problem(file, line, f"a JSON {type(obj).__name__}, not a vllm bench serve result "
                                                "object (a .pytorch.json file?); not imported"))
            continue
        run, obj_problems = _run_from_json(obj, file, line, chunk)
        problems.extend(obj_problems)
        if run is not None:
            runs.append(run)
    return runs, problems


def _key_line(chunk: str, key: str, first_line: int) -> int:
    at = chunk.find(f'"{key}"')
    return first_line + (chunk.count("\n", 0, at) if at >= 0 else 0)


def _run_from_json(obj: dict[str, Any], file: str, line: int, chunk: str) -> tuple[ImportedRun | None, list[Problem]]:
    problems: list[Problem] = []
    if "infermeter" in obj:
        problems.append(Problem(file, line, "this is an infermeter result, not a vLLM one; copy its folder "
                                            "into the store instead; not imported"))
        return None, problems
    missing = [k for k in _REQUIRED if not _is_number(obj.get(k))]
    if missing:
        problems.append(Problem(file, line, f"object lacks numeric {' and '.join(repr(k) for k in missing)}; "
                                            "not a vllm bench serve result; not imported"))
        return None, problems
    result = dict(obj)
    for key, value in obj.items():
        numeric = key in _JSON_NUMERIC or _JSON_METRIC.match(key)
        if numeric and value is not None and not _is_number(value):
            problems.append(Problem(file, _key_line(chunk, key, line),
                                    f"{key!r} is {value!r}, not a number; left out"))
            result.pop(key)
        elif not numeric and key not in _JSON_KNOWN and not key.startswith(_JSON_PREFIXES) \
                and not isinstance(value, str):
            problems.append(Problem(file, _key_line(chunk, key, line),
                                    f"key {key!r} is not one vLLM writes (and not --metadata text); kept as is"))
    rate = obj.get("request_rate")
    if rate is not None and not (_is_number(rate) or rate == "inf"):
        problems.append(Problem(file, _key_line(chunk, "request_rate", line), f"request_rate {rate!r} is neither "
                                                                              "a number nor 'inf'; left out"))
        result["request_rate"] = None
    run = ImportedRun(file=file, line=line, kind="vllm-json", result=result,
                      sha=hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest())
    return run, problems


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def parse_vllm_file(path: str | Path) -> tuple[list[ImportedRun], list[Problem]]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        return [], [Problem(str(p), 0, f"cannot read: {exc.strerror or exc}")]
    first = text.lstrip()[:1]
    if first in ("{", "["):
        return parse_vllm_json(text, str(p))
    runs, problems = parse_vllm_log(text, str(p))
    if not runs and not problems:
        problems.append(Problem(str(p), 1, "no '===== Serving Benchmark Result =====' block and not a JSON "
                                           "result; nothing imported"))
    return runs, problems


# ----------------------------------------------------------------------------- into the store

@dataclass
class ImportReport:
    store: Store
    imported: list[str] = field(default_factory=list)
    duplicates: list[tuple[str, str]] = field(default_factory=list)  # (source, existing cell id)
    problems: list[Problem] = field(default_factory=list)


def _safe(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-")
    return (s or "x")[:48]


def load_of(result: dict[str, Any]) -> tuple[str | None, float | None]:
    """(load_mode, load_value) of a vLLM result; None where it does not say."""
    rate = result.get("request_rate")
    conc = result.get("max_concurrency")
    if rate is None:
        return (None, None)
    finite = _is_number(rate) and math.isfinite(float(rate))
    if finite:
        return "rate", float(rate)
    if _is_number(conc):
        return "concurrency", float(conc)
    n = result.get("num_prompts")
    return ("burst", float(n)) if _is_number(n) else ("burst", None)


def _lengths(run: ImportedRun) -> tuple[str | None, int | None, int | None]:
    args = run.context
    dataset = args.get("dataset_name")
    in_len = out_len = None
    if dataset == "random":
        in_len = args.get("random_input_len") or args.get("input_len")
        if isinstance(in_len, int) and isinstance(args.get("random_prefix_len"), int):
            in_len += args["random_prefix_len"]
        out_len = args.get("random_output_len") or args.get("output_len")
    elif dataset == "sonnet":
        in_len, out_len = args.get("sonnet_input_len"), args.get("sonnet_output_len")
    if isinstance(args.get("seq_length"), int):  # the log's own context line
        in_len = args["seq_length"]
    elif in_len is None and run.result.get("completed") == 1 and not run.result.get("failed") \
            and isinstance(run.result.get("total_input_tokens"), int):
        in_len = run.result["total_input_tokens"]  # one request: its prompt's length
    for key, lens in (("in", run.result.get("input_lens")), ("out", run.result.get("output_lens"))):
        if isinstance(lens, list) and lens and all(isinstance(x, int) for x in lens) and len(set(lens)) == 1:
            if key == "in" and in_len is None:
                in_len = lens[0]
            if key == "out" and out_len is None:
                out_len = lens[0]
    return dataset, (in_len if isinstance(in_len, int) else None), (out_len if isinstance(out_len, int) else None)


def _epoch(date: Any) -> float | None:
    if not isinstance(date, str):
        return None
    try:
        return datetime.strptime(date, "%Y%m%d-%H%M%S").timestamp()
    except ValueError:
        return None


LOADS = ("burst", "concurrency:N", "rate:R")


def parse_load(text: str | None) -> tuple[str, float | None] | None:
    """``--load``: what a log does not say about its load.  ``burst`` (the burst size is each
    block's request count), ``concurrency:N`` or ``rate:R``."""
    if text is None:
        return None
    mode, _, value = text.partition(":")
    mode = mode.strip().lower()
    if mode == "burst" and not value:
        return "burst", None
    if mode in ("concurrency", "rate") and value:
        try:
            v = float(value)
        except ValueError:
            v = math.nan
        if v > 0 and math.isfinite(v):
            return mode, v
    raise UserError(f"--load {text!r} is not a load", "use burst, concurrency:N or rate:R (requests/s)")


def import_vllm(files: list[str | Path], into: str | Path, *, target: str | None = None,
                workload: str | None = None, load: str | None = None) -> ImportReport:
    """Import result JSON files and console logs into the store at ``into``.

    ``load`` states the load of runs whose input does not say it (see :func:`parse_load`).
    A run whose load stays unknown is a cell of its own workload (named after its source
    line), so that no report pools it with other runs as if they were repeats."""
    stated = parse_load(load)
    store = Store(into)
    report = ImportReport(store=store)
    parsed: list[ImportedRun] = []
    for f in files:
        if not Path(f).is_file():
            raise UserError(f"{str(f)!r} is not a file", "give vllm bench serve result JSON files or console logs")
        runs, problems = parse_vllm_file(f)
        parsed.extend(runs)
        report.problems.extend(problems)
    if not parsed:
        return report
    with store.lock():
        store.write_meta(Path(into).name or "imported", "imported")
        known: dict[str, str] = {}
        next_seq = 0
        if store.cells_dir.is_dir():
            for d in store.cells_dir.iterdir():
                cell = store.read_cell(d.name) if d.is_dir() else None
                if cell:
                    if cell.get("source_sha"):
                        known[cell["source_sha"]] = d.name
                    next_seq = max(next_seq, int(cell.get("seq") or 0))
        next_seq = max(next_seq, len(store.read_plan()))
        counters: dict[str, int] = {}
        for run in parsed:
            if run.sha in known:
                report.duplicates.append((f"{run.file}:{run.line}", known[run.sha]))
                continue
            stem = _safe(Path(run.file).stem)
            counters[stem] = counters.get(stem, 0) + 1
            base = f"imported.{stem}.{counters[stem]}"
            cid, n = base, 1
            while store.cell_dir(cid).exists():
                n += 1
                cid = f"{base}-{n}"
            next_seq += 1
            _write_cell(store, cid, next_seq, run, target, workload, stated)
            known[run.sha] = cid
            report.imported.append(cid)
        store.rebuild_index()
    return report


def _write_cell(store: Store, cid: str, seq: int, run: ImportedRun, target: str | None,
                workload: str | None, stated: tuple[str, float | None] | None = None) -> None:
    result = dict(run.result)
    mode, value = load_of(result)
    notes = list(run.notes)
    if (mode is None or value is None) and stated is not None:
        mode, value = stated
        if mode == "burst":
            n = result.get("num_prompts")
            if not _is_number(n) and _is_number(result.get("completed")):
                n = result["completed"] + (result.get("failed") or 0)
            value = float(n) if _is_number(n) else None
            if not _is_number(result.get("num_prompts")) and value is not None:
                result["num_prompts"] = int(value)
            result["request_rate"] = "inf"
        notes.append(f"load stated at import (--load): {mode}" + (f" {value:g}" if value is not None else ""))
    dataset, in_len, out_len = _lengths(run)
    backend = result.get("backend") or result.get("endpoint_type")
    tname = _safe(target or result.get("label") or backend or run.context.get("server_name") or "imported")
    base = workload or (f"in{in_len}" if "seq_length" in run.context or (dataset is None and in_len) else None)
    wname = _safe(base or dataset or "imported")
    if mode is None or value is None:  # unknown load: never pooled with other runs as repeats
        wname = _safe(f"{wname}-{Path(run.file).stem}-line{run.line}")
        notes.append("load unknown (the input does not say it; pass --load): this run is kept apart")
    finished = _epoch(result.get("date"))
    duration = result.get("duration") if _is_number(result.get("duration")) else None
    started = finished - duration if finished is not None and duration is not None else None
    result["infermeter"] = {
        "schema_version": 1,
        "imported": {"format": run.kind, "file": str(Path(run.file).resolve()), "line": run.line,
                     "sha256": run.sha, "notes": notes, "arguments": run.context,
                     "import_schema_version": IMPORT_SCHEMA_VERSION},
        "load": {"mode": mode, "value": value},
        "warnings": notes,
    }
    definition = {
        "cell_id": cid, "seq": seq, "target": tname, "workload": wname, "dataset": dataset, "input_len": in_len,
        "output_len": out_len, "load_mode": mode, "load_value": value,
        "num_prompts": result.get("num_prompts") if _is_number(result.get("num_prompts")) else None,
        "repeat": 0, "fingerprint": run.sha[:16],
        "settings": {"target": {"kind": "imported", "backend": backend, "model": result.get("model_id")},
                     "run": run.context},
        "status": "done", "attempt": 1, "started": started, "finished": finished, "error": None,
        "source": run.kind, "source_file": f"{run.file}:{run.line}", "source_sha": run.sha,
    }
    write_json_atomic(store.cell_dir(cid) / "result.json", result)
    write_json_atomic(store.cell_dir(cid) / "cell.json", definition)
