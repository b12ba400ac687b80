"""Console output of ``vllm bench serve`` / ``benchmark_serving.py``: ``Serving Benchmark Result``
blocks and the context lines printed before them (experiments/importers.py stores them).

Context lines vLLM prints (``Namespace(...)``, ``Traffic request rate:``,
``Burstiness factor:``, ``Maximum request concurrency:``) say what the load was.
Hand-kept logs such as the TGI-vs-vLLM write-up's raw files carry their own
context lines before a series of blocks: ``num_prompts: 1, 2, 4, ...`` (or
``num_prompt:1``) and ``seq_length: 80`` (or a list); the i-th block after them
takes the i-th value of each list (a single value applies to all of them), and a
lone word such as ``vllm`` names the server.  Nothing is guessed beyond that:
a block whose values disagree with its context is reported.
"""

from __future__ import annotations

import hashlib
import math
import re
from dataclasses import dataclass, field
from typing import Any

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


# Hand-kept context lines (the write-up's raw logs): a series of blocks follows them.
_SERIES = re.compile(r"^\s*(?P<key>num_prompts?|seq_length)\s*:\s*(?P<values>\d[\d,\s]*)$", re.I)
_NAME = re.compile(r"^\s*(?P<name>[A-Za-z][A-Za-z0-9._-]{0,40})\s*$")


class _Series:
    """Context lines that describe the blocks after them, one list value per block."""

    def __init__(self) -> None:
        self.values: dict[str, list[int]] = {}
        self.line: dict[str, int] = {}
        self.used = 0
        self.name: str | None = None

    def line_seen(self, raw: str, n: int) -> bool:
        m = _SERIES.match(raw)
        if m:
            if self.used:  # a new series starts
                self.values, self.line, self.used = {}, {}, 0
            key = "num_prompts" if m.group("key").lower().startswith("num_prompt") else "seq_length"
            self.values[key] = [int(v) for v in re.split(r"[,\s]+", m.group("values").strip()) if v]
            self.line[key] = n
            return True
        m = _NAME.match(raw)
        if m and not raw.strip().lower().startswith(("namespace", "traffic", "burstiness", "maximum")):
            self.name = m.group("name")
            return True
        return False

    def take(self, file: str, header_line: int, problems: list[Problem]) -> dict[str, Any]:
        """This block's values (the i-th of each list; a single value applies to every block)."""
        out: dict[str, Any] = {}
        k = self.used
        self.used += 1
        for key, values in self.values.items():
            if len(values) == 1:
                out[key] = values[0]
            elif k < len(values):
                out[key] = values[k]
            else:
                problems.append(Problem(file, header_line, f"block {k + 1} after the '{key}:' line (line "
                                                           f"{self.line[key]}) has no value there ({len(values)} "
                                                           "listed); its " + key + " is unknown"))
        if self.name:
            out["name"] = self.name
        return out


def parse_vllm_log(text: str, file: str) -> tuple[list[ImportedRun], list[Problem]]:
    runs: list[ImportedRun] = []
    problems: list[Problem] = []
    lines = text.splitlines()
    ctx: dict[str, Any] = {}
    series = _Series()
    i = 0
    while i < len(lines):
        raw = lines[i]
        m = _HEADER.match(raw)
        if not m:
            if not series.line_seen(raw, i + 1):
                _context_line(raw, ctx)
            i += 1
            continue
        start = i + 1  # 1-based line of the header
        ctx["series"] = series.take(file, start, problems)
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
    series = ctx.get("series") or {}
    if series.get("num_prompts") is not None and result["num_prompts"] is None:
        result["num_prompts"] = series["num_prompts"]
        sent = values["completed"] + (values.get("failed") or 0)
        if sent != series["num_prompts"]:
            notes.append(f"the context line says num_prompts {series['num_prompts']}, the block counts {sent} "
                         "requests")
    if result["num_prompts"] is None and "failed" in values:
        result["num_prompts"] = values["completed"] + values["failed"]
    if series.get("seq_length") is not None:
        args["seq_length"] = series["seq_length"]
    if series.get("name"):
        args["server_name"] = series["name"]
    if result["request_rate"] is None:
        notes.append("request rate not stated (no 'Traffic request rate:' or 'Request rate configured' line)")
    result.update(values)
    return ImportedRun(file=file, line=line, kind="vllm-log", result=result, context=args, notes=notes)


