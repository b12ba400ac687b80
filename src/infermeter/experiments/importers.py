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
from infermeter.experiments.store import Store
from infermeter.storage.files import write_json_atomic

IMPORT_SCHEMA_VERSION = 1


@dataclass
class Problem:
    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


@dataclass
class ImportedRun:
    file: str
    line: int  # where the block / object starts
    kind: str  # vllm-json | vllm-log
    result: dict[str, Any]  # vLLM's keys
    context: dict[str, Any] = field(default_factory=dict)  # run arguments known from the input
    notes: list[str] = field(default_factory=list)
    sha: str = ""


# ----------------------------------------------------------------------------- console blocks

_HEADER = re.compile(r"^(?P<prefix>.*?)=+\s*Serving Benchmark Result\s*=+\s*$")
_END = re.compile(r"^={10,}\s*$")
_SECTION = re.compile(r"^-{3,}(?P<title>.*?)-{3,}\s*$")
_LABEL = re.compile(r"^(?P<label>[^:]+:)(?:\s+(?P<value>\S+))?\s*$")
_METRIC = re.compile(r"^(?P<stat>mean|median|std|p(?P<p>\d+(?:\.\d+)?)) (?P<name>.+) \(ms\):$", re.I)

_SCALARS: dict[str, tuple[str, type]] = {
    "successful requests:": ("completed", int),
    "failed requests:": ("failed", int),
    "maximum request concurrency:": ("max_concurrency", int),
    "request rate configured (rps):": ("request_rate", float),
    "benchmark duration (s):": ("duration", float),
    "total input tokens:": ("total_input_tokens", int),
    "total generated tokens:": ("total_output_tokens", int),
    "request throughput (req/s):": ("request_throughput", float),
    "request goodput (req/s):": ("request_goodput", float),
    "input token throughput (tok/s):": ("input_throughput", float),
    "output token throughput (tok/s):": ("output_throughput", float),
    "peak output token throughput (tok/s):": ("max_output_tokens_per_s", float),
    "peak concurrent requests:": ("max_concurrent_requests", float),
    "total token throughput (tok/s):": ("total_token_throughput", float),
    "rtfx (inverse real-time factor):": ("rtfx", float),
    "input throughput (inputs/s):": ("input_sequence_throughput", float),
    # speculative decoding
    "acceptance rate (%):": ("spec_decode_acceptance_rate", float),
    "acceptance length:": ("spec_decode_acceptance_length", float),
    "drafts:": ("spec_decode_num_drafts", int),
    "draft tokens:": ("spec_decode_draft_tokens", int),
    "accepted tokens:": ("spec_decode_accepted_tokens", int),
    # probe requests
    "probe requests completed:": ("probe_completed", int),
    "probe requests failed:": ("probe_failed", int),
    "median probe e2el (ms):": ("probe_median_e2el_ms", float),
    "p99 probe e2el (ms):": ("probe_p99_e2el_ms", float),
    "max probe e2el (ms):": ("probe_max_e2el_ms", float),
    # diffusion decoding
    "committed throughput (tok/s):": ("diffusion_committed_throughput", float),
    "denoising steps per canvas:": ("diffusion_steps_per_canvas", float),
    "committed per denoising step:": ("diffusion_committed_per_step", float),
    "committed tokens:": ("diffusion_committed_tokens", int),
    "denoising steps:": ("diffusion_denoising_steps", int),
    "canvas positions evaluated:": ("diffusion_canvas_positions", int),
}
_METRIC_NAMES = {"ttft": "ttft", "tpot": "tpot", "itl": "itl", "e2el": "e2el",
                 "client queue time": "client_queue_time",
                 "e2el incl. client queue": "e2el_including_client_queue"}
_SECTIONS = {"time to first token", "time per output token (excl. 1st token)", "inter-token latency",
             "end-to-end latency", "client-side queueing", "queue-inclusive end-to-end latency",
             "speculative decoding", "probe requests", "diffusion decoding"}
_REQUIRED = ("completed", "duration")

# Lines vLLM prints before the block.
_CTX_RATE = re.compile(r"Traffic request rate:\s*(\S+)")
_CTX_BURST = re.compile(r"Burstiness factor:\s*(\S+)")
_CTX_CONC = re.compile(r"Maximum request concurrency:\s*(\S+)\s*$")
_CTX_NAMESPACE = re.compile(r"Namespace\((?P<args>.*)\)\s*$")
_NS_ITEM = re.compile(r"(?:^|,\s*)(?P<key>[a-z_][a-z0-9_]*)=(?P<value>'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|[^,()\[\]{}]*)")
_NS_KEYS = {"backend", "model", "tokenizer", "endpoint", "label", "dataset_name", "num_prompts", "request_rate",
            "burstiness", "max_concurrency", "seed", "ignore_eos", "num_warmups", "random_input_len",
            "random_output_len", "random_prefix_len", "random_range_ratio", "sonnet_input_len",
            "sonnet_output_len", "sonnet_prefix_len", "sharegpt_output_len", "input_len", "output_len",
            "percentile_metrics", "metric_percentiles", "served_model_name", "base_url", "host", "port"}


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    if text == "None":
        return None
    if text in ("True", "False"):
        return text == "True"
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _number(text: str, kind: type) -> Any:
    value = float(text)  # ValueError for non-numbers
    if kind is int:
        if not value.is_integer():
            raise ValueError(text)
        return int(value)
    return value


def parse_vllm_log(text: str, file: str) -> tuple[list[ImportedRun], list[Problem]]:
    runs: list[ImportedRun] = []
    problems: list[Problem] = []
    lines = text.splitlines()
    ctx: dict[str, Any] = {}
    i = 0
    while i < len(lines):
        raw = lines[i]
        m = _HEADER.match(raw)
        if not m:
            _context_line(raw, ctx)
            i += 1
            continue
        start = i + 1  # 1-based line of the header
        run, i, block_problems = _parse_block(lines, i, m.group("prefix"), file, ctx)
        problems.extend(block_problems)
        if run is not None:
            run.line = start
            runs.append(run)
        ctx = {}
    return runs, problems


def _context_line(raw: str, ctx: dict[str, Any]) -> None:
    m = _CTX_NAMESPACE.search(raw)
    if m:
        args = {}
        for item in _NS_ITEM.finditer(m.group("args")):
            if item.group("key") in _NS_KEYS:
                args[item.group("key")] = _literal(item.group("value"))
        ctx["args"] = args
        return
    m = _CTX_RATE.search(raw)
    if m:
        value = _literal(m.group(1))
        if isinstance(value, (int, float)):
            ctx["request_rate"] = float(value)
        elif str(value).lower() == "inf":
            ctx["request_rate"] = math.inf
        return
    m = _CTX_BURST.search(raw)
    if m:
        value = _literal(m.group(1))
        if isinstance(value, (int, float)):
            ctx["burstiness"] = float(value)
        return
    m = _CTX_CONC.search(raw)
    if m:
        value = _literal(m.group(1))
        if value is None or isinstance(value, int):
            ctx["max_concurrency"] = value


def _parse_block(lines: list[str], i: int, prefix: str, file: str,
                 ctx: dict[str, Any]) -> tuple[ImportedRun | None, int, list[Problem]]:
    problems: list[Problem] = []
    start = i
    values: dict[str, Any] = {}
    seen_line: dict[str, int] = {}
    positions: dict[int, float] = {}
    section: str | None = None
    unknown_section = False
    body: list[str] = [lines[i]]
    i += 1
    closed = False
    while i < len(lines):
        raw = lines[i]
        if _HEADER.match(raw):
            break  # the next block starts: this one never closed
        line = raw[len(prefix):] if prefix and raw.startswith(prefix) else raw
        body.append(line)
        stripped = line.strip()
        n = i + 1
        i += 1
        if _END.match(stripped):
            closed = True
            break
        if not stripped:
            continue
        sm = _SECTION.match(stripped)
        if sm:
            section = sm.group("title").strip()
            unknown_section = section.lower() not in _SECTIONS
            if unknown_section:
                problems.append(Problem(file, n, f"section {section!r} is not one vLLM prints; its lines "
                                                 "are not imported"))
            continue
        if unknown_section:
            problems.append(Problem(file, n, f"{stripped!r} not understood (in section {section!r})"))
            continue
        lm = _LABEL.match(stripped)
        if not lm:
            problems.append(Problem(file, n, f"{stripped!r} not understood (no 'Label: value')"))
            continue
        label, value = lm.group("label"), lm.group("value")
        key_label = " ".join(label.lower().split())
        if key_label == "per-position acceptance (%):" and value is None:
            continue
        pm = re.match(r"^position (\d+):$", key_label)
        if pm and value is not None and section and section.lower() == "speculative decoding":
            try:
                positions[int(pm.group(1))] = _number(value, float) / 100.0
            except ValueError:
                problems.append(Problem(file, n, f"value {value!r} of {label!r} is not a number"))
            continue
        target: tuple[str, type] | None = _SCALARS.get(key_label)
        if target is None:
            mm = _METRIC.match(" ".join(label.split()))
            if mm and mm.group("name").lower() in _METRIC_NAMES:
                metric = _METRIC_NAMES[mm.group("name").lower()]
                stat = mm.group("stat").lower()
                if mm.group("p"):
                    p = float(mm.group("p"))
                    stat = f"p{int(p) if p.is_integer() else mm.group('p')}"
                target = (f"{stat}_{metric}_ms", float)
        if target is None:
            problems.append(Problem(file, n, f"label {label!r} is not one vLLM prints; line not imported"))
            continue
        if value is None:
            problems.append(Problem(file, n, f"{label!r} has no value"))
            continue
        key, kind = target
        if key in seen_line:
            problems.append(Problem(file, n, f"{label!r} appears again (first on line {seen_line[key]}); "
                                             "this one is ignored"))
            continue
        try:
            values[key] = _number(value, kind)
        except ValueError:
            problems.append(Problem(file, n, f"value {value!r} of {label!r} is not "
                                             f"{'a whole number' if kind is int else 'a number'}"))
            continue
        seen_line[key] = n
    header_line = start + 1
    if not closed:
        where = f"the next block starts on line {i + 1}" if i < len(lines) else "the input ends"
        problems.append(Problem(file, header_line, f"result block has no closing '=====' line ({where}); "
                                                   "not imported"))
        return None, i, problems
    missing = [k for k in _REQUIRED if k not in values]
    if missing:
        names = {"completed": "Successful requests:", "duration": "Benchmark duration (s):"}
        problems.append(Problem(file, header_line, "result block lacks " + " and ".join(repr(names[k]) for k in missing)
                                + "; not imported"))
        return None, i, problems
    if positions:
        values["spec_decode_per_position_acceptance_rates"] = [positions[k] for k in sorted(positions)]
    run = _run_from_log(file, header_line, values, ctx)
    run.sha = hashlib.sha256("\n".join(body).encode()).hexdigest()
    return run, i, problems


def _run_from_log(file: str, line: int, values: dict[str, Any], ctx: dict[str, Any]) -> ImportedRun:
    args = dict(ctx.get("args") or {})
    result: dict[str, Any] = {
        "date": None,
        "backend": args.get("backend"),
        "label": args.get("label"),
        "model_id": args.get("model"),
        "tokenizer_id": args.get("tokenizer") or args.get("model"),
        "num_prompts": args.get("num_prompts"),
    }
    notes: list[str] = []
    rate = values.pop("request_rate", None)
    if rate is None:
        rate = ctx.get("request_rate", args.get("request_rate"))
    if isinstance(rate, str) and rate.lower() == "inf":
        rate = math.inf
    result["request_rate"] = None if rate is None else ("inf" if math.isinf(float(rate)) else float(rate))
    result["burstiness"] = ctx.get("burstiness", args.get("burstiness"))
    if "max_concurrency" in values:
        result["max_concurrency"] = values.pop("max_concurrency")
    elif "max_concurrency" in ctx:
        result["max_concurrency"] = ctx["max_concurrency"]
    elif "max_concurrency" in (ctx.get("args") or {}):
        result["max_concurrency"] = args["max_concurrency"]
    else:
        result["max_concurrency"] = None
        notes.append("concurrency cap not stated (no 'Maximum request concurrency:' line)")
    if result["num_prompts"] is None and "failed" in values:
        result["num_prompts"] = values["completed"] + values["failed"]
    if result["request_rate"] is None:
        notes.append("request rate not stated (no 'Traffic request rate:' or 'Request rate configured' line)")
    result.update(values)
    return ImportedRun(file=file, line=line, kind="vllm-log", result=result, context=args, notes=notes)


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


def import_vllm(files: list[str | Path], into: str | Path, *, target: str | None = None,
                workload: str | None = None) -> ImportReport:
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
            _write_cell(store, cid, next_seq, run, target, workload)
            known[run.sha] = cid
            report.imported.append(cid)
        store.rebuild_index()
    return report


def _write_cell(store: Store, cid: str, seq: int, run: ImportedRun, target: str | None,
                workload: str | None) -> None:
    result = dict(run.result)
    mode, value = load_of(result)
    dataset, in_len, out_len = _lengths(run)
    backend = result.get("backend") or result.get("endpoint_type")
    tname = _safe(target or result.get("label") or backend or "imported")
    wname = _safe(workload or dataset or "imported")
    finished = _epoch(result.get("date"))
    duration = result.get("duration") if _is_number(result.get("duration")) else None
    started = finished - duration if finished is not None and duration is not None else None
    result["infermeter"] = {
        "schema_version": 1,
        "imported": {"format": run.kind, "file": str(Path(run.file).resolve()), "line": run.line,
                     "sha256": run.sha, "notes": run.notes, "arguments": run.context,
                     "import_schema_version": IMPORT_SCHEMA_VERSION},
        "load": {"mode": mode, "value": value},
        "warnings": list(run.notes),
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
